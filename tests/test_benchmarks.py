import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from physalign.benchmarks.generate import video_name
from physalign.benchmarks.scoring import PROTOCOLS, SCORERS, bootstrap_mean_ci, summarize
from physalign.benchmarks.suites import SuiteError, SuitePrompt, load_suite
from physalign.cli import app
from physalign.eval.stats import bootstrap_ci
from physalign.judges.base import PLAUSIBILITY_QUESTION, Judge
from physalign.video import read_video

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"
TINY_MODEL = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32],
                  frames=4, resolution=16)
WORLD_CAPTIONS = ["a small red rubber ball is dropped from high up under normal gravity, on a black background",
                  "a large blue steel block is thrown fast to the right and hits a wall under low gravity, on a gray background",
                  "a small green wood ball is rolled slowly to the left under normal gravity, on a white background"]

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def videophy_csv(path: Path) -> Path:
    header = "video_url,caption,states_of_matter,source,complexity,majority_sa,majority_pc\n"
    rows = [f"http://v/1.mp4,\"{WORLD_CAPTIONS[0]}\",solid_solid,lavie,0,1,0",
            f"http://v/2.mp4,\"{WORLD_CAPTIONS[1]}\",solid_fluid,lavie,1,0,0",
            f"http://v/3.mp4,\"{WORLD_CAPTIONS[0]}\",solid_solid,pika,0,1,1",  # the same caption, another generator
            f"http://v/4.mp4,\"{WORLD_CAPTIONS[2]}\",fluid_fluid,pika,1,1,1"]
    return write(path, header + "\n".join(rows) + "\n")


def videophy2_csv(path: Path) -> Path:
    long = " ".join(["a small red rubber ball is dropped from high up"] * 6)  # 60 words: too long for the tiny model
    return write(path, "caption,upsampled_caption,action,category,is_hard\n"
                       f"\"{WORLD_CAPTIONS[0]}\",\"{long}\",dropping,Object Interactions,1\n"
                       f"\"{WORLD_CAPTIONS[1]}\",\"a blue block,\nthrown fast\",throwing,Sports,no\n"  # a quoted newline
                       f"\"{WORLD_CAPTIONS[2]}\",,rolling,Object Interactions,false\n")


def phygenbench_json(path: Path) -> Path:
    entries = [{"caption": WORLD_CAPTIONS[0], "physical_laws": "the ball falls faster and faster", "sub_category": "Gravity",
                "main_category": "Force"},
               {"caption": WORLD_CAPTIONS[1], "physical_laws": "the block stops at the wall", "sub_category": "Collision",
                "main_category": "Force"},
               {"caption": WORLD_CAPTIONS[2], "physical_laws": "a shadow appears", "sub_category": "Direct Radiation",
                "main_category": "Light", "singleimage_question": []}]
    return write(path, json.dumps(entries, indent=4))


# ---------------------------------------------------------------------------------------------- suites


def test_videophy_merges_the_videos_of_a_caption(tmp_path):
    prompts = load_suite("videophy", videophy_csv(tmp_path / "vp.csv"))
    assert [p.prompt for p in prompts] == WORLD_CAPTIONS
    assert [p.categories["states_of_matter"] for p in prompts] == ["solid_solid", "solid_fluid", "fluid_fluid"]
    assert [p.line for p in prompts] == [2, 3, 5]
    assert prompts[0].id.startswith("0001-") and len(prompts[0].id) == 13
    assert prompts[0] == SuitePrompt.from_dict(json.loads(json.dumps(prompts[0].to_dict())))


def test_videophy2_optional_columns_and_multiline_fields(tmp_path):
    prompts = load_suite("videophy2", videophy2_csv(tmp_path / "vp2.csv"))
    assert [p.is_hard for p in prompts] == [True, False, False]
    assert [p.categories["category"] for p in prompts] == ["Object Interactions", "Sports", "Object Interactions"]
    assert prompts[1].upsampled == "a blue block,\nthrown fast" and prompts[2].upsampled is None
    assert [p.line for p in prompts] == [2, 3, 5]  # the second record spans lines 3-4
    plain = load_suite("videophy2", write(tmp_path / "plain.csv", f"caption,upsampled_caption\n\"{WORLD_CAPTIONS[0]}\",x\n"))
    assert plain[0].is_hard is None and plain[0].categories == {}


def test_phygenbench_reads_its_prompts_json(tmp_path):
    prompts = load_suite("phygenbench", phygenbench_json(tmp_path / "prompts.json"))
    assert [p.categories["main_category"] for p in prompts] == ["Force", "Force", "Light"]
    assert prompts[2].physical_law == "a shadow appears" and prompts[0].line == 2


@pytest.mark.parametrize("suite, text, where, words", [
    ("videophy", "caption,states_of_matter\na,solid_solid\nb,gas_gas\n", ":3:2:", "gas_gas"),
    ("videophy", "caption,states_of_matter\na,solid_solid\na,fluid_fluid\n", ":3:2:", "line 2"),
    ("videophy", "caption,complexity\na,1\n", ":1:", "states_of_matter"),
    ("videophy", "caption,states_of_matter\n,solid_solid\n", ":2:1:", "caption: empty"),
    ("videophy2", "caption,upsampled_caption,is_hard\na,b,1\nc,d,maybe\n", ":3:3:", "is_hard"),
    ("videophy2", "caption,upsampled_caption\na,b\nc,d,e\n", ":3:", "3 fields"),
    ("videophy2", "caption,upsampled_caption\na,b\na,c\n", ":3:1:", "repeated from line 2"),
    ("phygenbench", '[\n  {"caption": "a", "physical_laws": "l", "sub_category": "s", "main_category": "m"},\n'
                    '  {"caption": "b", "sub_category": "s", "main_category": "m"}\n]', ":3:3:", "'physical_laws'"),
    ("phygenbench", '[\n  {"caption": "a",\n   "physical_laws": "l" "x"}\n]', ":3:25:", "invalid JSON"),
    ("phygenbench", '{"caption": "a"}', ":1:1:", "JSON list"),
    ("phygenbench", '[\n  "just a string"\n]', ":2:3:", "expected an object"),
    ("phygenbench", "[]", "", "no prompts"),
])
def test_bad_files_are_named_by_line_and_column(tmp_path, suite, text, where, words):
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(SuiteError) as err:
        load_suite(suite, path)
    assert str(err.value).startswith(f"{path}{where}") and words in str(err.value), str(err.value)


def test_undecodable_bytes_are_located(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"caption,states_of_matter\ncaf\xe9,solid_solid\n")
    with pytest.raises(SuiteError, match=r"latin1.csv:2:4: not UTF-8"):
        load_suite("videophy", path)


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="the shared benchmark files are not on this machine")
def test_the_papers_own_files_load():
    videophy = load_suite("videophy", BENCHMARKS / "videophy_reference.csv")
    counts = {s: sum(p.categories["states_of_matter"] == s for p in videophy) for s in ("solid_solid", "solid_fluid", "fluid_fluid")}
    assert len(videophy) == 344 and counts == {"solid_solid": 143, "solid_fluid": 146, "fluid_fluid": 55}
    assert len(load_suite("videophy2", BENCHMARKS / "videophy2.csv")) == 590
    assert all(p.upsampled for p in load_suite("videophy2", BENCHMARKS / "videophy2_upsampled.csv"))


# -------------------------------------------------------------------------------------- generate-suite


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from physalign.models.world import WorldVideoModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model"
    WorldVideoModel.from_config(TINY_MODEL).save_pretrained(path)
    return path


def generate(*args: str):
    return runner.invoke(app, ["generate-suite", "--steps", "2", "--batch-size", "2", *args])


def test_generate_suite_resumes_without_resampling(tmp_path, tiny_model):
    file, out = phygenbench_json(tmp_path / "prompts.json"), tmp_path / "out"
    args = ["--suite", "phygenbench", "--file", str(file), "--checkpoint", str(tiny_model), "--out", str(out), "--seeds", "0,1"]
    first = generate(*args)
    assert first.exit_code == 0, first.output
    assert "sampled 6 videos, kept 0" in first.output
    prompts = load_suite("phygenbench", file)
    names = [video_name(p.id, s) for p in prompts for s in (0, 1)]
    assert sorted(str(p.relative_to(out)) for p in out.glob("videos/*.mp4")) == sorted(names)
    stamps = {n: (out / n).stat().st_mtime_ns for n in names}
    removed = read_video(out / names[3])
    (out / names[3]).unlink()
    again = generate(*args)
    assert again.exit_code == 0 and "sampled 1 videos, kept 5" in again.output, again.output
    assert all((out / n).stat().st_mtime_ns == stamps[n] for n in names if n != names[3])
    redone = read_video(out / names[3]).astype(int)  # the same noise (seed, caption), in a batch of one this time
    assert np.abs(redone - removed).max() <= 1 and np.mean(redone != removed) < 0.01
    manifest = json.loads((out / "manifest.json").read_text())
    assert [v["video"] for v in manifest["videos"]] == names and manifest["settings"]["steps"] == 2
    other = generate(*args, "--guidance", "2")
    assert other.exit_code == 2 and "guidance: 4.0 there, 2.0 now" in other.output


def test_long_prompts_error_or_are_truncated(tmp_path, tiny_model):
    file = videophy2_csv(tmp_path / "vp2.csv")
    args = ["--suite", "videophy2", "--file", str(file), "--checkpoint", str(tiny_model), "--upsampled", "--limit", "1"]
    refused = generate(*args, "--out", str(tmp_path / "a"))
    assert refused.exit_code == 2 and "--truncate" in refused.output and not (tmp_path / "a" / "manifest.json").exists()
    cut = generate(*args, "--out", str(tmp_path / "b"), "--truncate")
    assert cut.exit_code == 0, cut.output
    row = json.loads((tmp_path / "b" / "manifest.json").read_text())["prompts"][0]
    assert row["truncated"] and row["prompt"] == WORLD_CAPTIONS[0]
    assert len(row["sampled_prompt"].split()) == 31  # 31 words + </s> = max_text_tokens 32


def test_score_suite_runs_on_a_generated_folder(tmp_path, tiny_model):
    from physalign.judges.world import JudgeSizes, WorldJudgeNet, build_question_tokenizer, save_world_judge

    out = tmp_path / "out"
    made = generate("--suite", "videophy", "--file", str(videophy_csv(tmp_path / "vp.csv")), "--checkpoint",
                    str(tiny_model), "--out", str(out))
    assert made.exit_code == 0, made.output
    torch.manual_seed(0)
    tokenizer = build_question_tokenizer(WORLD_CAPTIONS + [PLAUSIBILITY_QUESTION, "does the video show"], 48)
    sizes = JudgeSizes(channels=(8, 16), strides=((1, 2, 2), (2, 2, 2)), width=16, heads=2, layers=1, mlp_ratio=2,
                       frames=4, resolution=16, vocab_size=len(tokenizer))
    save_world_judge(WorldJudgeNet(sizes).eval(), tokenizer, tmp_path / "judge")
    (out / video_name(load_suite("videophy", tmp_path / "vp.csv")[2].id, 0)).unlink()
    scored = runner.invoke(app, ["score-suite", "--videos", str(out), "--judge", str(tmp_path / "judge"), "--judge-kind", "world"])
    assert scored.exit_code == 0, scored.output
    summary = json.loads((out / "score.json").read_text())["summary"]
    assert summary["n"] == 2 and len(summary["errors"]) == 1
    assert set(summary["groups"]["states_of_matter"]) == {"solid_solid", "solid_fluid"}
    assert "| states_of_matter=solid_solid | 1 |" in (out / "score.md").read_text()
    judge = json.loads((out / "score.json").read_text())["judge"]
    assert judge["protocol"] == "world" and judge["comparable"] is False
    assert "**Not comparable with the published videophy scores**" in scored.output
    refused = runner.invoke(app, ["score-suite", "--videos", str(out), "--judge", str(tmp_path / "judge"),
                                  "--judge-kind", "world", "--protocol", "benchmark"])
    assert refused.exit_code == 2 and "cannot be asked with protocol 'benchmark'" in refused.output
    by_file = runner.invoke(app, ["score-suite", "--videos", str(out / "videos"), "--suite", "videophy", "--file",
                                  str(tmp_path / "vp.csv"), "--judge", str(tmp_path / "judge"), "--judge-kind", "world",
                                  "--out", str(tmp_path / "again")])
    assert by_file.exit_code == 0, by_file.output
    again = json.loads((tmp_path / "again" / "score.json").read_text())
    assert again["summary"]["n"] == 2 and "no video of prompt" in again["summary"]["errors"][0]["error"]
    assert [v.get("sa_prob") for v in again["videos"]] == [v.get("sa_prob") for v in json.loads((out / "score.json").read_text())["videos"]]


# ---------------------------------------------------------------------------------------------- scoring


class TableJudge(Judge):
    """Answers from tables keyed by the video's first and last frame values (frame 0 = the clip's index)."""

    def __init__(self, answers: dict, ratings: dict):
        self.answers, self.ratings = answers, ratings  # {(kind, key): P(yes)}, {(kind, key): 5 probabilities}

    @staticmethod
    def kind(question: str) -> str:
        if question == PLAUSIBILITY_QUESTION:
            return "physics"
        return "caption" if question.startswith("does the video entail") else "law"

    @staticmethod
    def key(video: torch.Tensor) -> tuple[int, int]:
        return int(round((video[0, 0, 0, 0].item() + 1) * 10)), int(round((video[0, -1, 0, 0].item() + 1) * 10))

    def answer_logits(self, videos, questions):
        p = torch.tensor([self.answers[(self.kind(q), self.key(v))] for v, q in zip(videos, questions)], dtype=torch.float64)
        return torch.stack([p.log(), (1 - p).log()], 1)

    def rating_logits(self, videos, questions):
        return torch.tensor([self.ratings[(self.kind(q), self.key(v))] for v, q in zip(videos, questions)],
                            dtype=torch.float64).add(1e-12).log()


def clips(first_last: list[tuple[int, int]]) -> torch.Tensor:
    """(B, 3, 4, 4, 4) videos whose first and last frames hold the values (k / 10 - 1)."""
    v = torch.zeros(len(first_last), 3, 4, 4, 4)
    for i, (a, b) in enumerate(first_last):
        v[i, :, :-1], v[i, :, -1] = a / 10 - 1, b / 10 - 1
    return v


def run_scorer(suite: str, judge: Judge, prompts: list[SuitePrompt], keys: list[tuple[int, int]]) -> dict:
    scores = SCORERS[suite](judge, clips(keys), prompts, PROTOCOLS[suite]["llava"])
    results = [{"video": f"v{i}.mp4", "id": p.id, **s} for i, (p, s) in enumerate(zip(prompts, scores))]
    return summarize(suite, results, {p.id: p for p in prompts})


RATES = {"videophy": ("sa", "pc", "joint"), "videophy2": ("sa", "pc", "joint"),
         "phygenbench": ("score", "phenomenon", "order", "natural")}


def means(block: dict, suite: str) -> dict:
    return {m: round(block[m]["mean"], 6) for m in RATES[suite]}


def test_videophy_pass_rates_and_state_tables():
    states = ["solid_solid", "solid_solid", "solid_fluid", "fluid_fluid"]
    prompts = [SuitePrompt(f"{i}", f"caption {i}", {"states_of_matter": s}) for i, s in enumerate(states)]
    sa, pc = [0.9, 0.6, 0.5, 0.2], [0.8, 0.3, 0.5, 0.7]  # 0.5 passes (>=): equal logits give exactly 0.5
    keys = [(i, i) for i in range(4)]
    answers = {("caption", k): s for k, s in zip(keys, sa)} | {("physics", k): c for k, c in zip(keys, pc)}
    summary = run_scorer("videophy", TableJudge(answers, {}), prompts, keys)
    assert means(summary["overall"], "videophy") == {"sa": 0.75, "pc": 0.75, "joint": 0.5}
    groups = {s: means(m, "videophy") for s, m in summary["groups"]["states_of_matter"].items()}
    assert groups == {"solid_solid": {"sa": 1.0, "pc": 0.5, "joint": 0.5}, "solid_fluid": {"sa": 1.0, "pc": 1.0, "joint": 1.0},
                      "fluid_fluid": {"sa": 0.0, "pc": 1.0, "joint": 0.0}}
    lo, hi = summary["overall"]["sa"]["lo"], summary["overall"]["sa"]["hi"]
    assert (lo, hi) == bootstrap_ci([1, 1, 1, 0])[1:]


def test_videophy2_argmax_ratings_categories_and_hard_subset():
    prompts = [SuitePrompt("a", "c a", {"category": "Sports"}, is_hard=True),
               SuitePrompt("b", "c b", {"category": "Sports"}, is_hard=False),
               SuitePrompt("c", "c c", {"category": "Objects"}, is_hard=True)]
    keys = [(0, 0), (1, 1), (2, 2)]
    four, five, three = [0, 0, 0.1, 0.6, 0.3], [0.3, 0, 0, 0, 0.7], [0, 0, 0.5, 0.1, 0.4]
    # "b"'s PC: argmax 5 passes though its expected rating 0.3 + 3.5 = 3.8 would not
    ratings = {("caption", keys[0]): four, ("physics", keys[0]): three,
               ("caption", keys[1]): four, ("physics", keys[1]): five,
               ("caption", keys[2]): three, ("physics", keys[2]): four}
    summary = run_scorer("videophy2", TableJudge({}, ratings), prompts, keys)
    assert means(summary["overall"], "videophy2") == {"sa": round(2 / 3, 6), "pc": round(2 / 3, 6), "joint": round(1 / 3, 6)}
    assert means(summary["groups"]["category"]["Sports"], "videophy2") == {"sa": 1.0, "pc": 0.5, "joint": 0.5}
    assert means(summary["groups"]["subset"]["hard"], "videophy2") == {"sa": 0.5, "pc": 0.5, "joint": 0.0}
    assert means(summary["groups"]["subset"]["not hard"], "videophy2") == {"sa": 1.0, "pc": 1.0, "joint": 1.0}
    scores = SCORERS["videophy2"](TableJudge({}, ratings), clips(keys), prompts, PROTOCOLS["videophy2"]["llava"])
    assert [s["pc_rating"] for s in scores] == [3, 5, 4] and math.isclose(scores[1]["pc_expected"], 3.8)


def test_phygenbench_points_and_categories():
    prompts = [SuitePrompt("a", "c a", {"main_category": "Force", "sub_category": "Gravity"}, physical_law="falls"),
               SuitePrompt("b", "c b", {"main_category": "Force", "sub_category": "Elasticity"}, physical_law="bounces"),
               SuitePrompt("c", "c c", {"main_category": "Light", "sub_category": "Shadow"}, physical_law="a shadow")]
    keys = [(1, 2), (3, 4), (5, 5)]  # the third clip's first and last frames agree: reversing it changes nothing
    answers = {("law", (1, 2)): 0.9, ("law", (2, 1)): 0.2, ("physics", (1, 2)): 0.8,  # 3 points
               ("law", (3, 4)): 0.3, ("law", (4, 3)): 0.6, ("physics", (3, 4)): 0.7,  # natural only: 1
               ("law", (5, 5)): 0.7, ("physics", (5, 5)): 0.1}  # phenomenon, and order by the tie: 2
    scores = SCORERS["phygenbench"](TableJudge(answers, {}), clips(keys), prompts, PROTOCOLS["phygenbench"]["llava"])
    assert [s["score"] for s in scores] == [3, 1, 2]
    summary = run_scorer("phygenbench", TableJudge(answers, {}), prompts, keys)
    assert means(summary["overall"], "phygenbench") == {"score": round(6 / 9, 6), "phenomenon": round(2 / 3, 6),
                                                       "order": round(2 / 3, 6), "natural": round(2 / 3, 6)}
    assert summary["groups"]["main_category"]["Force"]["score"]["mean"] == pytest.approx(4 / 6)
    assert summary["groups"]["main_category"]["Light"]["score"]["mean"] == pytest.approx(2 / 3)


def test_bootstrap_mean_ci():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, 200) / 3
    mean, lo, hi = bootstrap_mean_ci(scores)
    se = scores.std() / np.sqrt(len(scores))
    assert mean == pytest.approx(scores.mean()) and lo < mean < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert bootstrap_mean_ci([2 / 3] * 5) == pytest.approx((2 / 3,) * 3)
    assert all(math.isnan(v) for v in bootstrap_mean_ci([]))

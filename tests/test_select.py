"""Data selection: each light criterion separates what it should, the selection rule against a plain
reference, reasons for the dropped, the pool's degradations are what its labels say, the CLI end to end."""

import json
import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from physalign.cli import app
from physalign.eval.score import evaluate_video
from physalign.judges.base import PLAUSIBILITY_QUESTION, Judge, prompt_question
from physalign.select.criteria import flicker, light_criteria, motion, sharpness
from physalign.select.pool import CAPTION_FIELDS, DEGRADATIONS, assign_labels, blur, build_pool, hold_frame, noise
from physalign.select.rank import CRITERIA, FLICKER_FLOOR, SelectConfig, select
from physalign.select.run import read_pool, run
from physalign.video import read_video
from physalign.world.corrupt import applicable
from physalign.world.dataset import ManifestError, make_example
from physalign.world.scene import Scene, SceneError, prompt_to_scene

pytestmark = pytest.mark.usefixtures("one_thread")
THROW = "a large red rubber ball is thrown fast to the right under normal gravity, on a gray background"
ONE_EACH = {d: 1.0 for d in DEGRADATIONS}


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    scene = prompt_to_scene(THROW)
    return make_example(scene, 0, 16, 32)[0]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """Two candidates of each degradation."""
    return build_pool(tmp_path_factory.mktemp("pool"), 2 * len(DEGRADATIONS), seed=7, mix=ONE_EACH, progress=False)


# -- light criteria -----------------------------------------------------------------------------------


def test_motion_is_the_fraction_of_changing_pixels():
    video = np.zeros((4, 10, 10, 3), np.uint8)
    for t in range(4):
        video[t, 4:6, 2 * t : 2 * t + 2] = 255  # a 2 x 2 square, 2 pixels to the right each frame
    assert motion(video) == pytest.approx(8 / 100)  # it leaves 4 pixels and covers 4 new ones per pair
    assert motion(np.repeat(video[:1], 4, axis=0)) == 0.0


def test_static_clip_has_less_motion_than_a_moving_one(clip):
    assert motion(clip) > 0.005
    assert motion(hold_frame(clip, random.Random(0))) == 0.0


def test_blur_lowers_sharpness(clip):
    assert sharpness(np.zeros_like(clip)) == 0.0
    assert sharpness(blur(clip, sigma=1.0)) < 0.2 * sharpness(clip)
    assert sharpness(blur(clip, sigma=1.0)) < sharpness(blur(clip, sigma=0.5)) < sharpness(clip)


def test_flicker_ignores_motion_but_not_flicker(clip):
    assert flicker(clip) == 0.0  # the ball moves, the background does not change
    bright = clip.astype(int)
    bright[1::2] += 20  # every other frame brighter: global flicker
    assert flicker(np.clip(bright, 0, 255).astype(np.uint8)) == pytest.approx(20 / 255, abs=1e-3)
    assert flicker(noise(clip, random.Random(0), sigma=0.02)) < flicker(noise(clip, random.Random(0), sigma=0.06))


def test_light_criteria_need_a_video():
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        light_criteria(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="at least 2 frames"):
        light_criteria(np.zeros((1, 8, 8, 3), np.uint8))


# -- the selection rule ------------------------------------------------------------------------------


def reference_select(values: dict, config: SelectConfig):
    """The rule of physalign.select.rank written plainly, one candidate at a time."""
    names = [c for c in CRITERIA if c in values]
    n = len(next(iter(values.values())))
    readable = [all(math.isfinite(values[c][i]) for c in names) for i in range(n)]
    refs = {}
    for c in names:
        if c in ("plausibility", "text"):
            continue
        pool = [values[c][i] for i in range(n) if readable[i]]
        if c in config.references:
            refs[c] = config.references[c]
        elif c == "flicker":
            refs[c] = max(float(np.quantile(pool, 1 - config.quantile)), FLICKER_FLOOR)
        else:
            refs[c] = float(np.quantile(pool, config.quantile))
    scores, good = [], []
    for i in range(n):
        g = {}
        for c in names:
            v = values[c][i]
            if c not in refs:
                g[c] = min(max(v, 0.0), 1.0)
            elif c == "flicker":
                g[c] = 1.0 if v == 0 else min(refs[c] / v, 1.0)
            else:
                g[c] = min(v / refs[c], 1.0)
        w = sum(config.weights.get(c, 0) for c in names)
        scores.append(sum(config.weights.get(c, 0) * g[c] for c in names) / w)
        good.append(g)
    passing = []
    for i in range(n):
        ok = readable[i]
        for c, t in config.thresholds.items():
            if c in names and readable[i] and ((values[c][i] > t) if c == "flicker" else (values[c][i] < t)):
                ok = False
        if ok:
            passing.append(i)
    passing.sort(key=lambda i: (-scores[i], i))
    kept = set(passing[: int(math.floor(config.keep * n + 0.5))])
    return scores, kept, readable, good


def hand_made(n: int = 41, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    values = {"plausibility": rng.uniform(0, 1, n), "text": rng.uniform(0, 1, n), "motion": rng.uniform(0, 0.05, n),
              "sharpness": rng.uniform(0.001, 0.1, n), "flicker": np.where(rng.uniform(size=n) < 0.6, 0.0, rng.uniform(0, 0.1, n))}
    values["motion"][[3, 9]] = 0.0  # static
    values["text"][[5, 6]] = values["text"][[7, 8]]  # some exact ties
    for c in values:
        values[c][[11, 30]] = np.nan  # unreadable
    return values


@pytest.mark.parametrize("config", [
    SelectConfig(),
    SelectConfig(keep=0.3, weights={"plausibility": 2, "text": 0.5, "motion": 1, "sharpness": 0, "flicker": 1},
                 thresholds={"motion": 0.004, "flicker": 0.05, "plausibility": 0.2}, references={"sharpness": 0.04}),
    SelectConfig(keep=0.9, quantile=0.5, thresholds={"text": 0.5}),  # thresholds leave fewer than keep
])
def test_selection_matches_the_plain_rule(config):
    values = hand_made()
    selection = select(values, config)
    scores, kept, readable, good = reference_select(values, config)
    np.testing.assert_allclose(selection.score[readable], np.array(scores)[readable], rtol=1e-12)
    assert np.isnan(selection.score[~np.array(readable)]).all()
    assert set(np.flatnonzero(selection.kept)) == kept
    assert len(kept) <= math.floor(config.keep * 41 + 0.5)
    for c in values:
        np.testing.assert_allclose(selection.goodness[c][readable], [g[c] for g, r in zip(good, readable) if r])


def test_selection_without_judge_criteria_uses_what_ran():
    values = {c: v for c, v in hand_made().items() if c not in ("plausibility", "text")}
    selection = select(values, SelectConfig())
    assert selection.criteria == ("motion", "sharpness", "flicker")
    assert selection.kept.sum() == 21  # round half up
    with pytest.raises(ValueError, match="no criterion that ran"):
        select(values, SelectConfig(weights={"plausibility": 1.0}))


def test_config_is_checked():
    with pytest.raises(ValueError, match="keep"):
        SelectConfig(keep=1.5)
    with pytest.raises(ValueError, match="unknown criteria"):
        SelectConfig(weights={"beauty": 1.0})
    with pytest.raises(ValueError, match="weights must be >= 0"):
        SelectConfig(weights={"motion": -1.0})


def test_reasons_name_thresholds_and_the_weakest_criterion():
    nan = math.nan
    values = {  # candidate: 0 good, 1 static, 2 flickers and is static, 3 unreadable, 4 blurry, 5 implausible
        "plausibility": np.array([0.9, 0.9, 0.9, nan, 0.9, 0.3]),
        "motion": np.array([0.02, 0.0, 0.0, nan, 0.02, 0.02]),
        "sharpness": np.array([0.05, 0.05, 0.05, nan, 0.005, 0.05]),
        "flicker": np.array([0.0, 0.0, 0.2, nan, 0.0, 0.0]),
    }
    config = SelectConfig(keep=0.2, thresholds={"motion": 0.002, "flicker": 0.1},
                          references={"motion": 0.01, "sharpness": 0.02, "flicker": 0.005})
    selection = select(values, config)
    assert selection.kept.tolist() == [True, False, False, False, False, False]
    assert selection.reasons == [[], ["motion below threshold"], ["motion below threshold", "flicker above threshold"],
                                 ["unreadable"], ["below the cut, weakest: sharpness"],
                                 ["below the cut, weakest: plausibility"]]


# -- the pool -----------------------------------------------------------------------------------------


def test_labels_follow_the_mix_and_the_seed():
    labels = assign_labels(10, {"none": 0.5, "blur": 0.25, "static": 0.25}, seed=1)
    assert sorted(labels) == sorted(["none"] * 5 + ["blur"] * 3 + ["static"] * 2) or \
        sorted(labels) == sorted(["none"] * 5 + ["blur"] * 2 + ["static"] * 3)
    assert labels == assign_labels(10, {"none": 0.5, "blur": 0.25, "static": 0.25}, seed=1)
    assert len(assign_labels(400, {"none": 1, "noise": 1, "blur": 1}, seed=0)) == 400
    with pytest.raises(ValueError, match="mix"):
        assign_labels(10, {"none": 1, "sepia": 1}, seed=0)


def _clean(line: dict, scene: Scene | None = None):
    scene = scene or Scene.from_dict(line["scene"])
    return make_example(scene, line["seed"], 16, 32)


def test_pool_degradations_are_what_the_labels_say(pool):
    rows = read_pool(pool)
    assert sorted(r["degradation"] for r in rows) == sorted(DEGRADATIONS * 2)
    for row in rows:
        video, label = read_video(pool.parent / row["video"]), row["degradation"]
        clean, rollout = _clean(row)
        scene = Scene.from_dict(row["scene"])
        if label == "none":
            np.testing.assert_array_equal(video, clean)
            assert evaluate_video(video, scene).joint
        elif label == "noise":
            unclipped = (clean > 50) & (clean < 205)  # 3 sigma from both ends of the range
            residual = (video.astype(int) - clean)[unclipped]
            assert abs(residual.mean()) < 1.5 and 13 < residual.std() < 18  # sigma 0.06 x 255 = 15.3
        elif label == "blur":
            np.testing.assert_array_equal(video, blur(clean))
        elif label == "static":
            assert any((video == frame).all() for frame in clean) and (video == video[0]).all()
        elif label == "dropped_frames":
            _assert_frames_cut(video, clean)
        elif label == "wrong_caption":
            _assert_caption_wrong(video, row)
        elif label == "physics":
            assert row["corruption"] in applicable(scene, rollout)
            assert not (video == clean).all() and not evaluate_video(video, scene).joint


def _assert_frames_cut(video: np.ndarray, clean: np.ndarray) -> None:
    """Frames 0..s-1, then s+k.., then the last frame held k times, 3 <= k <= 5."""
    order = [next(j for j in range(len(clean)) if (clean[j] == frame).all()) for frame in video]
    jumps = [b - a for a, b in zip(order, order[1:]) if b - a != 1]
    assert jumps[0] in (4, 5, 6) and all(j == 0 for j in jumps[1:]), order
    assert order[0] == 0 and order[-1] == len(clean) - 1 and len(jumps) == jumps[0]


def _assert_caption_wrong(video: np.ndarray, row: dict) -> None:
    """The video is the clean render of the line's scene with exactly one of kind, colour, background changed."""
    scene = Scene.from_dict(row["scene"])
    assert not evaluate_video(video, scene).sa
    matches = []
    for field, values in CAPTION_FIELDS.items():
        for value in values:
            try:
                shown = replace(scene, **{field: value})
            except SceneError:
                continue
            if value != getattr(scene, field) and (make_example(shown, row["seed"], 16, 32)[0] == video).all():
                matches.append(field)
    assert len(matches) == 1, matches


def test_pool_is_deterministic(pool, tmp_path):
    again = build_pool(tmp_path, 2 * len(DEGRADATIONS), seed=7, mix=ONE_EACH, progress=False)
    assert again.read_text() == pool.read_text()
    for row in read_pool(again)[:4]:
        np.testing.assert_array_equal(read_video(again.parent / row["video"]), read_video(pool.parent / row["video"]))
    other = build_pool(tmp_path / "other", 2 * len(DEGRADATIONS), seed=8, mix=ONE_EACH, progress=False)
    assert other.read_text() != pool.read_text()


# -- a judge, the outputs, the CLI --------------------------------------------------------------------


class BrightnessJudge(Judge):
    """Says yes to plausibility in proportion to motion, to a prompt in proportion to brightness; records
    its calls."""

    def __init__(self):
        self.calls = []

    def answer_logits(self, videos, questions):
        self.calls.append(list(questions))
        moving = (videos[:, :, 1:] - videos[:, :, :-1]).abs().mean((1, 2, 3, 4)) * 100
        bright = videos.mean((1, 2, 3, 4)) * 10
        plausibility = torch.tensor([q == PLAUSIBILITY_QUESTION for q in questions])
        yes = torch.where(plausibility, moving, bright)
        return torch.stack([yes, torch.zeros_like(yes)], 1)

    def rating_logits(self, videos, questions):
        return torch.zeros(len(videos), 5)


def test_run_with_a_judge_batches_and_writes(pool, tmp_path):
    judge = BrightnessJudge()
    selection = run(pool, tmp_path / "out", SelectConfig(), judge, batch_size=5, progress=False)
    rows = read_pool(pool)
    assert selection.criteria == CRITERIA
    assert [len(c) for c in judge.calls] == [5, 5, 5, 5, 4, 4]  # 14 videos, both questions per batch
    assert judge.calls[1] == [prompt_question(r["prompt"]) for r in rows[:5]]
    scores = [json.loads(line) for line in (tmp_path / "out/scores.jsonl").read_text().splitlines()]
    static = [s for s in scores if s["degradation"] == "static"]
    assert all(s["criteria"]["plausibility"] == pytest.approx(0.5) for s in static)  # no motion: logit 0
    assert "plausibility" in (tmp_path / "out/report.md").read_text()


def test_cli_end_to_end(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["select-pool", "--out", str(tmp_path / "pool"), "--n", "14", "--seed", "3"])
    assert result.exit_code == 0, result.output
    (tmp_path / "pool/videos/pool_00002.mp4").write_bytes(b"not a video")
    out = tmp_path / "runs/sel"
    result = runner.invoke(app, ["select", "--manifest", str(tmp_path / "pool/manifest.jsonl"), "--out", str(out),
                                 "--keep", "0.5", "--weights", "sharpness=1", "--thresholds", "motion=0.001"])
    assert result.exit_code == 0, result.output
    assert "precision" in result.output
    selected = [json.loads(line) for line in (out / "selected.jsonl").read_text().splitlines()]
    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(selected) == 7 and len(scores) == 14 and sum(s["kept"] for s in scores) == 7
    assert all(read_video(out / line["video"]).shape == (16, 32, 32, 3) for line in selected)  # relative to OUT
    assert scores[2]["reasons"] == ["unreadable"] and "cannot decode" in scores[2]["error"]
    assert all(s["reasons"] for s in scores if not s["kept"])
    report = (out / "report.md").read_text()
    assert "Precision" in report and "1 unreadable videos" in report and "no judge" in report
    summary = json.loads((out / "summary.json").read_text())  # the report's figures as data
    assert summary["kept"] == 7 and summary["unreadable"] == 1 and summary["not_run"] == ["plausibility", "text"]
    assert summary["precision"] == pytest.approx(sum(s["kept"] and s["degradation"] == "none" for s in scores) / 7)
    assert sum(d["candidates"] for d in summary["by_degradation"].values()) == 14
    assert f"**Precision {summary['precision']:.3f}**" in report and "none" in summary["left_out"]


def test_bad_manifest_lines_are_named(tmp_path, pool):
    lines = pool.read_text().splitlines()
    bad = json.loads(lines[1])
    del bad["prompt"]
    (tmp_path / "missing.jsonl").write_text("\n".join([lines[0], json.dumps(bad)] + lines[2:]) + "\n")
    wrong = json.loads(lines[2])
    wrong["degradation"] = "sepia"
    (tmp_path / "label.jsonl").write_text("\n".join(lines[:2] + ["", json.dumps(wrong)]) + "\n")
    with pytest.raises(ManifestError, match=r"missing.jsonl:2: missing field 'prompt'"):
        read_pool(tmp_path / "missing.jsonl")
    with pytest.raises(ManifestError, match=r"label.jsonl:4: field 'degradation' must be one of"):
        read_pool(tmp_path / "label.jsonl")
    result = CliRunner().invoke(app, ["select", "--manifest", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "missing.jsonl:2" in result.output
    result = CliRunner().invoke(app, ["select", "--manifest", str(pool), "--out", str(tmp_path / "o"), "--weights", "motion"])
    assert result.exit_code == 2 and "expected name=value" in result.output

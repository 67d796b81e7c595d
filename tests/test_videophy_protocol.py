"""VideoPhy's and VideoPhy-2's protocols pinned on small cases worked out by hand from the benchmarks' code
(``Hritikbansal/videophy``: utils/constants.py, videocon/.../entailment_inference.py, VIDEOPHY2/template.py,
VIDEOPHY2/inference.py)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from physalign.benchmarks.scoring import (PROTOCOLS, SCORERS, choose_protocol, describe_judge, markdown, summarize)
from physalign.benchmarks.generate import video_name
from physalign.benchmarks.suites import SuitePrompt, load_suite
from physalign.cli import app
from physalign.judges import load_judge
from physalign.judges.base import Conversation, Judge
from physalign.judges.official import (VIDEOPHY2_CONVERSATION, VIDEOPHY_CONVERSATION, parse_rating)
from physalign.judges.vlm import VLMJudge
from physalign.video import write_mp4


pytestmark = pytest.mark.usefixtures("one_thread")

# The benchmarks' prompts for the caption "A ball falls.", written out by hand from the reference files.
VIDEOPHY_SA = ('The following is a conversation between a curious human and AI assistant. The assistant gives helpful, '
               "detailed, and polite answers to the user's questions.\nHuman: <|video|>\n"
               'Human: Does this video entail the description: "A ball falls."?\nAI: ')
VIDEOPHY_PC = ('The following is a conversation between a curious human and AI assistant. The assistant gives helpful, '
               "detailed, and polite answers to the user's questions.\nHuman: <|video|>\n"
               'Human: Does this video follow the physical laws?\nAI: ')
VIDEOPHY2_SA = ('The following is a conversation between a curious human and an AI assistant. The assistant gives '
                "helpful, detailed, and polite answers to the user's questions.\nHuman: <|video|>\n"
                'Human: Does this video match the description: "A ball falls."? Please rate the video on a scale from '
                '1 to 5, where 5 indicates a perfect match and 1 indicates no relevance.\nAI: ')
VIDEOPHY2_PC = ('The following is a conversation between a curious human and an AI assistant. The assistant gives '
                "helpful, detailed, and polite answers to the user's questions.\nHuman: <|video|>\n"
                'Human: Does this video adhere to the physical laws? Rate the video on a scale from 1 to 5, where 5 '
                'means full compliance and 1 means significant violations.\nAI: ')


class ScriptedJudge(Judge):
    """Answers from tables keyed by (video index, the whole prompt it is asked: its conversation with the
    question and the benchmarks' ``<|video|>`` placeholder). ``logits``: (yes, no) pairs; ``replies``: text."""

    def __init__(self, logits: dict, replies: dict, conversation: Conversation | None = None):
        self.logits, self.replies, self.conversation, self.asked = logits, replies, conversation, []

    def with_conversation(self, conversation):
        judge = ScriptedJudge(self.logits, self.replies, conversation)
        judge.asked = self.asked
        return judge

    def prompts(self, videos, questions, template):
        texts = [template.format(video="<|video|>", question=q) for q in questions]
        self.asked += texts
        return list(zip(videos[:, 0, 0, 0, 0].round().long().tolist(), texts))

    def answer_logits(self, videos, questions):
        return torch.tensor([self.logits[k] for k in self.prompts(videos, questions, self.conversation.answer)])

    def rating_logits(self, videos, questions):
        raise AssertionError("the benchmark protocol reads replies, not rating logits")

    def rating_replies(self, videos, questions, max_new_tokens=256):
        return [self.replies[k] for k in self.prompts(videos, questions, self.conversation.rating)]


def indexed(n: int) -> torch.Tensor:
    """(n, 3, 2, 4, 4) videos whose values are their index (what ScriptedJudge keys on)."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(n, 3, 2, 4, 4)


def prompts(n: int, **fields) -> list[SuitePrompt]:
    return [SuitePrompt(f"p{i}", "A ball falls.", dict(fields)) for i in range(n)]


# ------------------------------------------------------------------------------------------ the prompts


def test_the_benchmarks_prompts_verbatim():
    videophy, videophy2 = PROTOCOLS["videophy"]["benchmark"], PROTOCOLS["videophy2"]["benchmark"]
    fill = lambda template, q: template.format(video="<|video|>", question=q)  # noqa: E731
    assert fill(VIDEOPHY_CONVERSATION.answer, videophy.caption("A ball falls.")) == VIDEOPHY_SA
    assert fill(VIDEOPHY_CONVERSATION.answer, videophy.physics) == VIDEOPHY_PC
    assert fill(VIDEOPHY2_CONVERSATION.rating, videophy2.caption("A ball falls.")) == VIDEOPHY2_SA
    assert fill(VIDEOPHY2_CONVERSATION.rating, videophy2.physics) == VIDEOPHY2_PC


# ------------------------------------------------------------------------------------------ VideoPhy


def test_videophy_benchmark_score_is_the_yes_no_ratio_of_the_benchmark_prompt():
    """Video 0: SA logits (ln 3, 0) -> 3 / (3 + 1) = 0.75, PC (0, ln 4) -> 1 / 5 = 0.2.
    Video 1: SA (0, 0) -> 0.5 (passes: >=), PC (ln 9, 0) -> 0.9.
    At 0.5: SA 2/2, PC 1/2, Joint 1/2; mean P(yes) SA 0.625, PC 0.55. At 0.8: SA 0/2, PC 1/2, Joint 0."""
    logits = {(0, VIDEOPHY_SA): (math.log(3), 0.0), (0, VIDEOPHY_PC): (0.0, math.log(4)),
              (1, VIDEOPHY_SA): (0.0, 0.0), (1, VIDEOPHY_PC): (math.log(9), 0.0)}
    judge, ps = ScriptedJudge(logits, {}), prompts(2, states_of_matter="solid_solid")
    scores = SCORERS["videophy"](judge, indexed(2), ps, PROTOCOLS["videophy"]["benchmark"])
    assert sorted(set(judge.asked)) == sorted([VIDEOPHY_SA, VIDEOPHY_PC])
    assert [round(s["sa_prob"], 6) for s in scores] == [0.75, 0.5]
    assert [round(s["pc_prob"], 6) for s in scores] == [0.2, 0.9]
    summary = summarize("videophy", [{"video": f"v{i}", "id": p.id, **s} for i, (p, s) in enumerate(zip(ps, scores))],
                        {p.id: p for p in ps})
    assert {m: round(summary["overall"][m]["mean"], 6) for m in ("sa", "pc", "joint", "sa_prob", "pc_prob")} == \
        {"sa": 1.0, "pc": 0.5, "joint": 0.5, "sa_prob": 0.625, "pc_prob": 0.55}
    strict = SCORERS["videophy"](judge, indexed(2), ps, choose_protocol("videophy", "vlm", "benchmark", pass_prob=0.8))
    assert [(s["sa"], s["pc"], s["joint"]) for s in strict] == [(False, False, False), (False, True, False)]


# ---------------------------------------------------------------------------------------- VideoPhy-2


@pytest.mark.parametrize("reply, rating", [
    ("4", 4),
    ("Five.", 5),                 # the word, lower-cased
    ("4 out of 5", 4),            # "4" comes before "5" in the search order
    ("5/5", 5),
    ("10", 0),                    # "0" is searched before "1"
    ("I'd say 3; someone else 4", 1),  # "one" in "someone" is found before any digit
    ("Three", 3),
    ("two or three", 2),          # "two" is searched before "three"
    ("", 0), ("no idea", 0),      # nothing parses: 0
    ("9", 0), ("seven", 0),       # out of range
    ("\u0663", 3),                # an Arabic-Indic three: no key matches, its digits read 3
])
def test_parse_rating_as_videophy2_inference(reply, rating):
    assert parse_rating(reply) == rating


def test_videophy2_benchmark_ratings_are_parsed_from_the_replies():
    """Video 0: SA "4" -> 4, PC "Someone would say 5" -> 1: SA only. Video 1: SA "five" -> 5, PC "4 out of 5" -> 4:
    joint. Video 2: SA "I cannot tell" -> 0, PC "10" -> 0: nothing. SA 2/3, PC 1/3, Joint 1/3."""
    replies = {(0, VIDEOPHY2_SA): "4", (0, VIDEOPHY2_PC): "Someone would say 5",
               (1, VIDEOPHY2_SA): "five", (1, VIDEOPHY2_PC): "4 out of 5",
               (2, VIDEOPHY2_SA): "I cannot tell", (2, VIDEOPHY2_PC): "10"}
    judge, ps = ScriptedJudge({}, replies), prompts(3)
    scores = SCORERS["videophy2"](judge, indexed(3), ps, PROTOCOLS["videophy2"]["benchmark"])
    assert sorted(set(judge.asked)) == sorted([VIDEOPHY2_SA, VIDEOPHY2_PC])
    assert [(s["sa_rating"], s["pc_rating"]) for s in scores] == [(4, 1), (5, 4), (0, 0)]
    assert [(s["sa"], s["pc"], s["joint"]) for s in scores] == [(True, False, False), (True, True, True), (False, False, False)]
    assert scores[0]["pc_reply"] == "Someone would say 5"
    summary = summarize("videophy2", [{"video": f"v{i}", "id": p.id, **s} for i, (p, s) in enumerate(zip(ps, scores))],
                        {p.id: p for p in ps})
    assert [round(summary["overall"][m]["mean"], 6) for m in ("sa", "pc", "joint")] == [round(2 / 3, 6), round(1 / 3, 6), round(1 / 3, 6)]


def test_videophy2_tables_say_when_the_file_has_no_category_or_hard_flag():
    bare = prompts(2)  # the shipped videophy2.csv: caption and upsampled_caption only
    rows = [{"video": f"v{i}", "id": p.id, "sa": True, "pc": False, "joint": False} for i, p in enumerate(bare)]
    summary = summarize("videophy2", rows, {p.id: p for p in bare})
    assert summary["groups"] == {}
    assert set(summary["absent"]) == {"category", "subset"} and "no `is_hard` column" in summary["absent"]["subset"]
    judge = describe_judge("videophy2", "judges/llava", "vlm", PROTOCOLS["videophy2"]["benchmark"])
    text = markdown(summary, judge)
    assert "- category: no `category` column" in text and "no subset table" in text
    partial = [SuitePrompt("a", "c", {"category": "Sports"}, is_hard=True), SuitePrompt("b", "c", {})]
    rows = [{"video": f"v{i}", "id": p.id, "sa": True, "pc": True, "joint": True} for i, p in enumerate(partial)]
    summary = summarize("videophy2", rows, {p.id: p for p in partial})
    assert summary["groups"]["category"]["Sports"]["n"] == 1
    assert summary["absent"]["category"] == "1 of 2 videos have no `category` value and are in no category row"


# ------------------------------------------------------------------------------ judge and protocol choice


def test_every_report_names_its_judge_and_is_not_comparable():
    for suite, kind, name in (("videophy", "vlm", "benchmark"), ("videophy2", "vlm", "llava"), ("phygenbench", "world", "world")):
        judge = describe_judge(suite, "J", kind, choose_protocol(suite, kind, name))
        assert judge["comparable"] is False and judge["protocol"] == name
        summary = summarize(suite, [], {})
        text = markdown(summary, judge)
        assert f"scored by `J` ({judge['model']}, protocol `{name}`)" in text
        assert f"**Not comparable with the published {suite} scores**" in text
    assert "not by VideoCon-Physics (videophysics/videocon_physics)" in describe_judge(
        "videophy", "J", "vlm", PROTOCOLS["videophy"]["benchmark"])["why"]


def test_choose_protocol_defaults_and_refusals():
    assert choose_protocol("videophy", "vlm").name == "benchmark"
    assert choose_protocol("videophy2", "world").name == "world"
    assert choose_protocol("phygenbench", "vlm").name == "llava"  # no benchmark protocol for PhyGenBench
    assert choose_protocol("videophy", "vlm", pass_prob=0.7).pass_prob == 0.7
    with pytest.raises(ValueError, match="phygenbench has no protocol 'benchmark'"):
        choose_protocol("phygenbench", "vlm", "benchmark")
    with pytest.raises(ValueError, match="cannot be asked with protocol 'benchmark'"):
        choose_protocol("videophy", "world", "benchmark")
    with pytest.raises(ValueError, match=r"pass_prob must be in \(0, 1\)"):
        choose_protocol("videophy", "vlm", pass_prob=1.5)


def test_official_judges_are_refused_with_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mplug-owl"}))
    for load in (load_judge, VLMJudge.from_pretrained):
        with pytest.raises(ValueError, match="mPLUG-Owl-Video .* cannot load this judge; run the benchmark's own"):
            load(tmp_path)


# ------------------------------------------------------------------------------ a real VLM in the protocols


def test_vlm_asked_in_the_benchmark_template(vlm):
    """yes_prob in VideoPhy's conversation = the two-way softmax of the model's last logits on that exact text."""
    torch.manual_seed(2)
    videos = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    judge = vlm.with_conversation(VIDEOPHY_CONVERSATION)
    question = PROTOCOLS["videophy"]["benchmark"].caption("A ball falls.")
    pixels = vlm.pixel_values(videos)
    text = VIDEOPHY_SA.replace("<|video|>", vlm.video_token * vlm.video_tokens(pixels))
    ids = torch.tensor([vlm.tokenizer(text).input_ids])
    logits = vlm.model(input_ids=ids, pixel_values_videos=pixels).logits[0, -1]
    yes, no = logits[vlm.answer_ids]
    torch.testing.assert_close(judge.yes_prob(videos, [question])[0], yes.exp() / (yes.exp() + no.exp()),
                               atol=1e-5, rtol=1e-5)
    assert vlm.conversation is not judge.conversation and judge.model is vlm.model


def test_vlm_rating_replies_are_greedy(vlm):
    """Batched replies (left-padded) = a plain greedy loop over each video alone, in VideoPhy-2's template."""
    torch.manual_seed(3)
    videos = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    judge = vlm.with_conversation(VIDEOPHY2_CONVERSATION)
    questions = [PROTOCOLS["videophy2"]["benchmark"].physics, PROTOCOLS["videophy2"]["benchmark"].caption("a ball")]
    replies = judge.rating_replies(videos, questions, max_new_tokens=3)
    for i, question in enumerate(questions):
        pixels = vlm.pixel_values(videos[i : i + 1])
        ids, _ = vlm.prompt_ids([question], VIDEOPHY2_CONVERSATION.rating, vlm.video_tokens(pixels))
        new = []
        for _ in range(3):
            token = vlm.model(input_ids=ids, pixel_values_videos=pixels).logits[0, -1].argmax().item()
            new.append(token)
            if token == vlm.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
        assert replies[i] == vlm.tokenizer.decode(new, skip_special_tokens=True)


def test_the_world_judge_has_no_conversation_or_replies():
    from physalign.judges.world import load_world_judge

    judge = load_world_judge(Path(__file__).resolve().parents[1] / "checkpoints/judge")
    with pytest.raises(NotImplementedError, match="own wording"):
        judge.with_conversation(VIDEOPHY_CONVERSATION)
    with pytest.raises(NotImplementedError, match="no text decoder"):
        judge.rating_replies(torch.zeros(1, 3, 16, 32, 32), ["q"])


def test_score_suite_videophy2_benchmark_protocol_end_to_end(tmp_path, vlm_folder):
    """score-suite with a VLM: the benchmark protocol by default, replies parsed, the judge named, and the
    shipped file's missing columns reported."""
    file = tmp_path / "vp2.csv"
    file.write_text('caption,upsampled_caption\n"A ball falls.",\n"A cup tips over.",\n')
    rng = np.random.default_rng(0)
    for p in load_suite("videophy2", file):
        write_mp4(tmp_path / "videos" / video_name(p.id, 0), rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8))
    result = CliRunner().invoke(app, ["score-suite", "--videos", str(tmp_path / "videos"), "--suite", "videophy2",
                                      "--file", str(file), "--judge", str(vlm_folder), "--frames", "4",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out" / "score.json").read_text())
    assert written["judge"]["protocol"] == "benchmark" and written["judge"]["comparable"] is False
    assert all(v["sa_rating"] == parse_rating(v["sa_reply"]) for v in written["videos"])
    assert "protocol `benchmark`" in result.output and "no `category` column" in result.output

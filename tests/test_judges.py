import json
from pathlib import Path

import numpy as np
import pytest
import torch

from physalign.judges.base import PLAUSIBILITY_QUESTION, Judge, fact_question, prompt_question
from physalign.judges.data import (PLAUSIBILITY_RATING, build_split, mismatches, prompt_rating, rename,
                                   visibly_different)
from physalign.judges.train import (answer_items, gaussian_blur, load_judge_config, question_words, train_judge)
from physalign.judges.vlm import ANSWER_TEMPLATE, VLMJudge
from physalign.judges.world import (JudgeSizes, WorldJudge, WorldJudgeNet, build_question_tokenizer,
                                    encode_questions, load_world_judge, save_world_judge)
from physalign.models.interface import to_model_range
from physalign.train.config import ConfigError
from physalign.world import scene as grammar

from _tiny_models import CLIP_MEAN, CLIP_STD

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(channels=(8, 16), strides=((1, 2, 2), (2, 2, 2)), width=16, heads=2, layers=1, mlp_ratio=2)

pytestmark = pytest.mark.usefixtures("one_thread")


class FixedJudge(Judge):
    """Returns the logits it was built with."""

    def __init__(self, answers: torch.Tensor, ratings: torch.Tensor):
        self.answers, self.ratings = answers, ratings

    def answer_logits(self, videos, questions):
        return self.answers

    def rating_logits(self, videos, questions):
        return self.ratings


@pytest.fixture(scope="module")
def data():
    return build_split("train", 12, seed=3)


@pytest.fixture(scope="module")
def tiny_judge(data) -> WorldJudge:
    torch.manual_seed(0)
    tokenizer = build_question_tokenizer(question_words(data), JudgeSizes().max_words)
    return WorldJudge(WorldJudgeNet(JudgeSizes(**TINY, vocab_size=len(tokenizer))).eval(), tokenizer)


def videos_of(data, rows) -> torch.Tensor:
    return to_model_range(data.videos[list(rows)])


# ------------------------------------------------------------------------------------------------ base


def test_yes_prob_rating_and_expected_rating_against_plain_formulas():
    torch.manual_seed(0)
    answers, ratings = torch.randn(3, 2), torch.randn(3, 5)
    judge, videos = FixedJudge(answers, ratings), torch.zeros(3, 3, 2, 4, 4)
    yes, no = answers[:, 0].exp(), answers[:, 1].exp()
    torch.testing.assert_close(judge.yes_prob(videos, ["q"] * 3), yes / (yes + no))
    p = judge.rating(videos, ["q"] * 3)
    torch.testing.assert_close(p.sum(-1), torch.ones(3))
    torch.testing.assert_close(p, ratings.exp() / ratings.exp().sum(-1, keepdim=True))
    expected = sum(k * p[:, k - 1] for k in range(1, 6))
    torch.testing.assert_close(judge.expected_rating(videos, ["q"] * 3), expected)


def test_shape_errors_say_what_came_in():
    judge = FixedJudge(torch.zeros(2, 2), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\). Got \(2, 3, 4, 4\)"):
        judge.yes_prob(torch.zeros(2, 3, 4, 4), ["q", "q"])
    with pytest.raises(ValueError, match="got 1 questions for 2 videos"):
        judge.rating(torch.zeros(2, 3, 2, 4, 4), ["q"])


def test_question_builders():
    assert fact_question("the red ball bounces off the floor.") == "is it true that the red ball bounces off the floor?"
    assert prompt_question("a red ball ") == "does the video show a red ball?"


# ----------------------------------------------------------------------------------------------- data


def test_data_answers_are_consistent(data):
    by_row = {r.clean: r for r in data.scenes}
    for item in data.items:
        record = by_row.get(item.video)
        if item.kind == "fact" and record is not None:
            fact = item.question[len("is it true that "):-1]
            assert (fact in record.facts) == item.yes
        if item.kind == "plausibility":
            assert item.yes == (item.video in by_row)
            assert item.rating == (5 if item.yes else PLAUSIBILITY_RATING[
                "appearance" if item.tag in ("vanish", "color_change", "size_change") else "physical"])
        if item.kind == "prompt":
            assert item.yes == (item.tag == "own")
    kinds = {item.kind for item in data.items}
    assert kinds == {"fact", "plausibility", "prompt"}


def test_build_split_is_deterministic():
    a, b = build_split("val", 4, seed=11), build_split("val", 4, seed=11)
    assert a.items == b.items and np.array_equal(a.videos, b.videos)
    assert build_split("val", 4, seed=12).items != a.items


def test_rename_and_ratings():
    source = grammar.prompt_to_scene("a small green rubber ball rolls fast to the right and collides with a red ball "
                                     "under normal gravity, on a black background")
    target = grammar.prompt_to_scene("a small red clay ball rolls fast to the right and collides with a green ball "
                                     "under normal gravity, on a black background")
    assert rename("the green ball sets the red ball moving to the right", source, target) == \
        "the red ball sets the green ball moving to the right"
    assert mismatches(source, target) == 3  # colour, material, second ball's colour
    assert prompt_rating(target, target) == 5 and prompt_rating(source, target) == 2
    video = np.zeros((2, 8, 8, 3), np.uint8)
    moved = video.copy()
    moved[1, :2, :2] = 255
    assert visibly_different(video, moved) and not visibly_different(video, video)


def test_gaussian_blur_against_a_plain_reference():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 2, 9, 9)
    sigma = torch.tensor([0.0, 0.7])
    out = gaussian_blur(x, sigma)
    torch.testing.assert_close(out[0], x[0], atol=1e-6, rtol=0)
    k = torch.exp(-0.5 * (torch.arange(-2, 3.0) / 0.7) ** 2)
    k = k / k.sum()
    padded = torch.nn.functional.pad(x[1].reshape(6, 1, 9, 9), (2, 2, 2, 2), mode="replicate")[:, 0]  # (6, 13, 13)
    ref = sum(k[i] * k[j] * padded[:, i : i + 9, j : j + 9] for i in range(5) for j in range(5))
    torch.testing.assert_close(out[1].reshape(6, 9, 9), ref, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ world judge


def test_world_judge_gradients_reach_the_video(data, tiny_judge):
    videos = videos_of(data, [0, 1]).requires_grad_(True)
    questions = [PLAUSIBILITY_QUESTION, fact_question(data.scenes[0].facts[0])]
    p = tiny_judge.yes_prob(videos, questions)
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    (p.sum() + tiny_judge.expected_rating(videos, questions).sum()).backward()
    assert videos.grad is not None and torch.isfinite(videos.grad).all() and videos.grad.abs().sum() > 0


def test_shared_video_encoding_equals_one_video_per_question(data, tiny_judge):
    net, rows = tiny_judge.net, [0, 1, 2]
    videos = videos_of(data, rows)
    questions = [PLAUSIBILITY_QUESTION, prompt_question("a red ball"), fact_question("the red ball comes to rest")]
    index = torch.tensor([2, 0, 0])
    ids, padding = encode_questions(tiny_judge.tokenizer, questions, net.sizes.max_words)
    shared = net.answer(net.encode_video(videos), ids, padding, index)
    plain = net(videos[index], ids, padding)
    for a, b in zip(shared, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_world_judge_rejects_other_video_shapes(tiny_judge):
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 32, 32\)"):
        tiny_judge.yes_prob(torch.zeros(1, 3, 8, 32, 32), [PLAUSIBILITY_QUESTION])


def test_save_load_round_trip_and_frozen(tmp_path, data, tiny_judge):
    save_world_judge(tiny_judge.net, tiny_judge.tokenizer, tmp_path / "judge")
    loaded = load_world_judge(tmp_path / "judge")
    assert not loaded.net.training and not any(p.requires_grad for p in loaded.net.parameters())
    videos = videos_of(data, [0, 1]).requires_grad_(True)
    questions = [PLAUSIBILITY_QUESTION, prompt_question(grammar.scene_to_prompt(data.scenes[0].scene))]
    torch.testing.assert_close(loaded.answer_logits(videos, questions), tiny_judge.answer_logits(videos, questions))
    loaded.yes_prob(videos, questions).sum().backward()
    assert videos.grad.abs().sum() > 0


def test_load_refuses_anything_but_safetensors(tmp_path, tiny_judge):
    folder = tmp_path / "judge"
    save_world_judge(tiny_judge.net, tiny_judge.tokenizer, folder)
    torch.save(tiny_judge.net.state_dict(), folder / "model.safetensors")  # a pickle under the right name
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_world_judge(folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"safetensors weights only \(found \['pytorch_model.bin'\]"):
        load_world_judge(folder)


def test_train_judge_end_to_end(tmp_path):
    cfg = load_judge_config(ROOT / "configs/judge.yaml", ["train_scenes=6", "heldout_scenes=3", "steps=2",
                            "autoencoder=''", "scenes_per_step=2", f"sizes={json.dumps(TINY)}"])
    out = train_judge(cfg, tmp_path / "judge", tmp_path / "run", progress=False, command="test")
    record = json.loads((out / "judge.json").read_text())
    assert set(record["heldout"]) == {"rendered", "blurred_sigma_0.8"}
    assert set(record["heldout"]["rendered"]) == {"fact", "plausibility", "prompt"}
    assert len((tmp_path / "run/log.jsonl").read_text().splitlines()) == 2
    load_world_judge(out)
    with pytest.raises(ConfigError, match="unknown key 'stepz'"):
        load_judge_config(None, ["stepz=3"])


def test_shipped_judge_beats_chance_on_fresh_videos():
    """Fresh val scenes (a seed the shipped judge's data did not use): clean vs corrupted and true vs false facts."""
    judge = load_world_judge(ROOT / "checkpoints/judge")
    fresh = build_split("val", 40, seed=2027)
    items = [item for item in fresh.items if item.kind in ("plausibility", "fact")
             and item.tag not in ("wrong_gravity",)]
    p_yes, _ = answer_items(judge.net, judge.tokenizer, to_model_range(fresh.videos), items)
    for kind, floor in (("plausibility", 0.8), ("fact", 0.7)):
        rows = [i for i, item in enumerate(items) if item.kind == kind]
        yes = [i for i in rows if items[i].yes]
        no = [i for i in rows if not items[i].yes]
        balanced = ((p_yes[yes] >= 0.5).mean() + (p_yes[no] < 0.5).mean()) / 2
        assert balanced >= floor, f"{kind}: balanced accuracy {balanced:.3f} < {floor} on {len(rows)} questions"


# ------------------------------------------------------------------------------------------------ VLM

def test_vlm_shapes_and_probabilities(vlm):
    videos = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    questions = [PLAUSIBILITY_QUESTION, fact_question("the red ball bounces")]
    p, rating = vlm.yes_prob(videos, questions), vlm.rating(videos, questions)
    assert p.shape == (2,) and ((p > 0) & (p < 1)).all()
    assert rating.shape == (2, 5) and ((rating > 0) & (rating < 1)).all()
    torch.testing.assert_close(rating.sum(-1), torch.ones(2))
    assert not vlm.model.training and not any(q.requires_grad for q in vlm.model.parameters())


def test_vlm_yes_prob_is_the_two_way_softmax_of_the_models_logits(vlm):
    """Batched (left-padded: the questions differ in length) against each video alone through the model."""
    torch.manual_seed(1)
    videos = torch.rand(2, 3, 16, 32, 32) * 2 - 1
    questions = [PLAUSIBILITY_QUESTION, fact_question("the red ball bounces")]
    batched = vlm.yes_prob(videos, questions)
    yes, no = vlm.tokenizer.convert_tokens_to_ids(["Yes", "No"])
    for i, question in enumerate(questions):
        pixels = vlm.pixel_values(videos[i : i + 1])
        ids, _ = vlm.prompt_ids([question], ANSWER_TEMPLATE, vlm.video_tokens(pixels))
        logits = vlm.model(input_ids=ids, pixel_values_videos=pixels).logits[0, -1]
        manual = logits[yes].exp() / (logits[yes].exp() + logits[no].exp())
        torch.testing.assert_close(batched[i], manual, atol=1e-5, rtol=1e-5)


def test_vlm_gradient_reaches_the_video(vlm):
    videos = (torch.rand(1, 3, 16, 32, 32) * 2 - 1).requires_grad_(True)
    (vlm.yes_prob(videos, [PLAUSIBILITY_QUESTION]) + vlm.expected_rating(videos, [PLAUSIBILITY_QUESTION])).sum().backward()
    assert torch.isfinite(videos.grad).all() and videos.grad.abs().sum() > 0


def test_vlm_pixels_follow_the_processor_settings(vlm):
    """Without the resize, the pixels are the centre crop of (video + 1) / 2, normalised: a plain numpy reference."""
    settings = dict(vlm.processor, do_resize=False)
    judge = VLMJudge(vlm.model, vlm.tokenizer, settings, frames=None)
    videos = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    ref = ((videos.numpy()[0].transpose(1, 0, 2, 3) + 1) / 2)[:, :, 2:30, 2:30]  # (T, 3, 28, 28)
    ref = (ref - np.array(CLIP_MEAN)[:, None, None]) / np.array(CLIP_STD)[:, None, None]
    np.testing.assert_allclose(judge.pixel_values(videos)[0].numpy(), ref, atol=1e-5)


def test_vlm_folder_without_config_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        VLMJudge.from_pretrained(tmp_path)


def test_load_judge_picks_the_kind_by_the_folder(vlm_folder, tmp_path):
    from physalign.judges import load_judge

    assert isinstance(load_judge(ROOT / "checkpoints/judge"), WorldJudge)
    assert isinstance(load_judge(vlm_folder), VLMJudge)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type 'llama' is not a judge physalign reads"):
        load_judge(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_judge(tmp_path / "nowhere")

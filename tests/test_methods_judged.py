"""DiffPhy on a tiny model with a toy judge: its judged terms against a plain recomputation, gradients through
the judge into the LoRA adapter, failed facts injected through the branch, a plain exported model."""

import json
from pathlib import Path

import pytest
import torch

import physalign.train.methods.diffphy as diffphy
from physalign.judges.base import PLAUSIBILITY_QUESTION, Judge, fact_question, prompt_question
from physalign.models.interface import load_model
from physalign.models.lora import has_lora
from physalign.train.config import load_config
from physalign.train.loop import build_run, train
from physalign.train.methods.fm import sample_t
from physalign.world.dataset import generate

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


class ToyJudge(Judge):
    """Answers from the video's mean colour and a per-question weight: differentiable, question-dependent."""

    def __init__(self, says_no: bool = False):
        self.says_no = says_no

    def _weight(self, q: str) -> float:
        return (sum(map(ord, q)) % 7) / 7.0 - 0.5

    def answer_logits(self, videos, questions):
        m = videos.mean(dim=(1, 2, 3, 4))  # (B,)
        w = torch.tensor([self._weight(q) for q in questions], dtype=videos.dtype)
        yes = 3 * w * m + 0.2 - (10.0 if self.says_no else 0.0)
        return torch.stack([yes, -yes], 1)

    def rating_logits(self, videos, questions):
        m = videos.mean(dim=(1, 2, 3, 4))
        w = torch.tensor([self._weight(q) for q in questions], dtype=videos.dtype)
        return torch.stack([k * w * m for k in range(5)], 1)


@pytest.fixture(scope="module")
def post(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("post"), 6, "train", 0, frames=4, resolution=16, counterfactuals=True, progress=False)


def build(post, tmp, monkeypatch, judge=None, *more):
    monkeypatch.setattr(diffphy, "load_judge", lambda path: judge or ToyJudge())
    cfg = load_config(CONFIGS / "methods" / "diffphy.yaml", [
        'model.init=""', f"model.sizes={json.dumps(TINY)}", f"data.manifest={post}", f"data.cache_dir={tmp / 'cache'}",
        "train.batch_size=4", "train.log_every=1", "optim.warmup_steps=1", "method.lora_rank=4", "method.lora_alpha=4",
        "method.inject_blocks=[0, 1]", "method.judge_fraction=0.5", "method.max_facts=10", "method.cfg_dropout=0.0", *more])
    return cfg, *build_run(cfg)


def test_judged_terms_match_a_plain_recomputation(post, tmp_path, monkeypatch):
    _, state, data = build(post, tmp_path, monkeypatch, None, "method.beta=0.7")
    model, method, judge = state.model, state.method, ToyJudge()
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    batch = data.batch(torch.tensor([0, 1, 2, 3]))
    torch.manual_seed(3)
    terms = method(model, batch)
    torch.manual_seed(3)
    x0 = batch["latents"]
    eps, t = torch.randn_like(x0), sample_t(4, "logit_normal")
    t[:2] = 0.5 * torch.rand(2)
    assert bool((t[:2] < 0.5).all())
    x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
    with torch.no_grad():
        v = model(x_t, t, model.encode_text(batch["prompts"]))[0]
        fm = (v - (eps - x0)).pow(2).mean()
        videos = model.decode(x_t[:2] - t[:2].view(-1, 1, 1, 1, 1) * v[:2])
        phen = com = sem = 0.0
        for j in range(2):
            row = batch["rows"][j]
            facts = method.facts[batch["index"][j].item()]
            assert facts and all(isinstance(f, str) for f in facts)  # the world reasoner's expected phenomena
            for f in facts:
                phen += (judge.yes_prob(videos[j : j + 1], [fact_question(f)])[0] - 1) ** 2 / 2
            com += (judge.expected_rating(videos[j : j + 1], [PLAUSIBILITY_QUESTION])[0] / 5 - 1) ** 2 / 2
            sem += (judge.expected_rating(videos[j : j + 1], [prompt_question(row["prompt"])])[0] / 5 - 1) ** 2 / 2
    for name, expected in (("fm", fm), ("phen", phen), ("com", com), ("sem", sem)):
        assert terms[name].item() == pytest.approx(float(expected), rel=1e-4), name
    assert terms["loss"].item() == pytest.approx(float(fm + 0.7 * (phen + com + sem)), rel=1e-4)
    terms["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads) and any(g.abs().sum() > 0 for g in grads.values())


def test_failed_facts_are_injected_through_the_branch(post, tmp_path, monkeypatch):
    _, state, data = build(post, tmp_path, monkeypatch, ToyJudge(says_no=True), "method.branch_off=0.0")
    method, model = state.method, state.model
    batch = data.batch(torch.tensor([0, 1, 2, 3]))
    first = method(model, batch)
    assert first["branch_frac"].item() == 0.0 and first["failed_frac"].item() == 1.0
    assert set(method.failed) == {0, 1} and method.failed[0] == method.facts[0]  # the judged rows' facts all failed
    second = method(model, batch)
    assert second["branch_frac"].item() == pytest.approx(0.5)  # rows 0 and 1 of the four got the branch
    second["loss"].backward()
    assert method.branch.out.weight.grad.abs().sum() > 0  # the zero-initialised output projection learns
    _, off_state, off_data = build(post, tmp_path, monkeypatch, ToyJudge(says_no=True), "method.branch_off=1.0")
    off_state.method(off_state.model, batch)
    assert off_state.method(off_state.model, batch)["branch_frac"].item() == 0.0


def test_training_exports_a_plain_model_and_checks_its_options(post, tmp_path, monkeypatch):
    cfg, _, _ = build(post, tmp_path, monkeypatch, None, "train.steps=2")
    out = train(cfg, tmp_path / "run", progress=False)
    assert not has_lora(load_model(out).backbone)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all({"fm", "phen", "com", "sem", "fact_p", "failed_frac", "branch_frac"} <= set(r) for r in log)
    with pytest.raises(ValueError, match="inject_blocks \\[5\\] out of range for 2"):
        build(post, tmp_path, monkeypatch, None, "method.inject_blocks=[5]")
    with pytest.raises(ValueError, match="0 < t_max <= 1"):
        build(post, tmp_path, monkeypatch, None, "method.t_max=0")


def test_a_resumed_run_keeps_the_failed_facts_and_continues_exactly(post, tmp_path, monkeypatch):
    more = ("method.branch_off=0.5", "train.save_every=2", "train.tensorboard=false",
            "optim.schedule=constant")  # the cosine of a 2-step run is not the first half of a 4-step one's
    judge = ToyJudge(says_no=True)  # every fact fails: the memory decides which rows get the branch
    straight, *_ = build(post, tmp_path, monkeypatch, judge, "train.steps=4", *more)
    train(straight, tmp_path / "straight", progress=False)
    first, *_ = build(post, tmp_path, monkeypatch, judge, "train.steps=2", *more)
    train(first, tmp_path / "split", progress=False)
    meta = json.loads((tmp_path / "split" / "checkpoints" / "step_000002" / "state.json").read_text())
    assert meta["method_ranks"][0]["failed"]  # the memory is in the checkpoint
    train(straight, tmp_path / "split", resume=True, progress=False)
    a, b = load_model(tmp_path / "straight" / "model").state_dict(), load_model(tmp_path / "split" / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert [r["branch_frac"] for r in log] == [json.loads(line)["branch_frac"] for line in
                                             (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]

"""PhysHPO on a tiny model: its levels against a plain re-computation, LoRA-only gradients, corrupted losers,
level ablation, and an exported model without the adapter."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from physalign.models.interface import load_model
from physalign.models.lora import has_lora, lora_disabled, lora_folder
from physalign.train.config import load_config
from physalign.train.data import corrupted_latents, encoded_videos
from physalign.train.loop import build_model, build_run, train
from physalign.train.methods.fm import sample_t
from physalign.world.dataset import generate, manifest_rows

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=8, resolution=16)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def post(tmp_path_factory) -> Path:
    """Six 8-frame 16x16 world videos with their counterfactuals (8 frames leave room for a corruption)."""
    return generate(tmp_path_factory.mktemp("post"), 6, "train", 0, frames=8, resolution=16, counterfactuals=True, progress=False)


def config(post: Path, tmp: Path, *more):
    return load_config(CONFIGS / "methods" / "physhpo.yaml", [
        'model.init=""', f"model.sizes={json.dumps(TINY)}", f"data.manifest={post}", f"data.cache_dir={tmp / 'cache'}",
        "train.batch_size=4", "train.log_every=1", "optim.warmup_steps=1", "method.lora_rank=4", "method.lora_alpha=4",
        *more])


def move_adapter(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def plain_level(e: torch.Tensor, level: str) -> torch.Tensor:
    if level == "state":
        e = e[:, :, [0, e.shape[2] - 1]]
    if level == "motion":
        e = e[:, :, 1:] - e[:, :, :-1]
    return torch.stack([x.pow(2).mean() for x in e])


def test_levels_match_a_plain_recomputation(post, tmp_path):
    state, data = build_run(config(post, tmp_path, "method.beta=3.0"))
    model, method = state.model, state.method
    batch = data.batch(torch.tensor([0, 1, 2, 3]))
    zero = method(model, batch)  # the adapter starts as the identity: model = reference, no preference yet
    for level in ("instance", "state", "motion", "semantic"):
        assert zero[f"{level}_loss"].item() == pytest.approx(math.log(2), abs=1e-6)
    move_adapter(model)
    torch.manual_seed(5)
    terms = method(model, batch)
    torch.manual_seed(5)
    x_w = batch["latents"]
    eps, t = torch.randn_like(x_w), sample_t(4, "logit_normal")
    x_l = method.losers[batch["index"]]
    wrong = [method.wrong_prompts[i] for i in batch["index"].tolist()]

    def error(x0, prompts, reference=False):
        x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
        with torch.no_grad():
            if reference:
                with lora_disabled(model.backbone):
                    return model(x_t, t, model.encode_text(prompts))[0] - (eps - x0)
            return model(x_t, t, model.encode_text(prompts))[0] - (eps - x0)

    ew, el, es = error(x_w, batch["prompts"]), error(x_l, batch["prompts"]), error(x_w, wrong)
    rw, rl, rs = (error(x, p, reference=True) for x, p in ((x_w, batch["prompts"]), (x_l, batch["prompts"]), (x_w, wrong)))
    total = 0.0
    for level, (lose, ref_lose) in {"instance": (el, rl), "state": (el, rl), "motion": (el, rl), "semantic": (es, rs)}.items():
        delta = (plain_level(ew, level) - plain_level(rw, level)) - (plain_level(lose, level) - plain_level(ref_lose, level))
        expected = torch.log1p(torch.exp(1.5 * delta)).mean()  # -log sigmoid(-beta/2 delta), beta = 3
        assert terms[f"{level}_loss"].item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)
        assert terms[f"{level}_accuracy"].item() == pytest.approx((delta < 0).float().mean().item())
        total += expected.item()
    assert terms["loss"].item() == pytest.approx(total, rel=1e-4)


def test_only_the_adapter_trains_and_levels_switch_off(post, tmp_path):
    state, data = build_run(config(post, tmp_path, "method.state_weight=0", "method.semantic_weight=0"))
    move_adapter(state.model)
    terms = state.method(state.model, data.batch(torch.tensor([0, 1, 2, 3])))
    assert not any(k.startswith(("state_", "semantic_")) for k in terms) and "motion_margin" in terms
    terms["loss"].backward()
    grads = {n: p.grad for n, p in state.model.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads) and any(g.abs().sum() > 0 for g in grads.values())
    assert not any(p.requires_grad for p in state.model.text_encoder.parameters())
    with pytest.raises(ValueError, match="one of them > 0"):
        build_run(config(post, tmp_path, *(f"method.{lv}_weight=0" for lv in ("instance", "state", "motion", "semantic"))))


def test_losers_are_corrupted_copies_of_the_winners(post, tmp_path):
    cfg = config(post, tmp_path)
    state, data = build_run(cfg)
    losers, kinds = corrupted_latents(cfg.data, state.model, data.rows, seed=0)
    assert losers.shape == data.latents.shape and len(kinds) == len(data.rows)
    differs = (losers - data.latents).flatten(1).abs().amax(1)
    assert bool((differs > 1e-3).all()), differs  # every loser is changed somewhere
    again, kinds2 = corrupted_latents(cfg.data, state.model, data.rows, seed=0)  # the cached copy
    assert torch.equal(again, losers) and kinds2 == kinds
    rows = manifest_rows(post, "train")
    fresh, _ = encoded_videos(post, rows, state.model, tmp_path / "other_cache")
    assert torch.allclose(fresh, data.latents)  # the re-simulated winners are the manifest's clips
    assert np.isin(kinds, ["teleport", "freeze_midair", "pass_through_floor", "gain_energy", "gravity_upward",
                           "wrong_gravity", "vanish", "color_change", "size_change"]).all()


def test_a_lora_run_from_a_model_folder_checkpoints_the_adapter_alone_and_resumes_exactly(post, tmp_path):
    init = tmp_path / "init"
    build_model(config(post, tmp_path).model).save_pretrained(init)
    more = (f"model.init={init}", "model.sizes={}", "train.save_every=2", "train.keep_checkpoints=0", "optim.lr=0.01",
            "optim.schedule=constant")  # the cosine of a 2-step run is not the first half of a 4-step one's
    straight = train(config(post, tmp_path, *more, "train.steps=4"), tmp_path / "straight", progress=False)
    train(config(post, tmp_path, *more, "train.steps=2"), tmp_path / "split", progress=False)
    resumed = train(config(post, tmp_path, *more, "train.steps=4"), tmp_path / "split", resume=True, progress=False)
    a, b = load_model(straight).state_dict(), load_model(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt = tmp_path / "split" / "checkpoints" / "step_000002"
    trained = load_file(str(ckpt / "trained.safetensors"))
    assert not (ckpt / "model").exists() and trained and all("lora_" in k for k in trained)  # the base is not copied
    assert json.loads((ckpt / "base.json").read_text())["lora"]["rank"] == 4


def test_training_exports_a_plain_model(post, tmp_path):
    cfg = config(post, tmp_path, "train.steps=3", "optim.lr=0.01")
    out = train(cfg, tmp_path / "run", progress=False)
    assert not lora_folder(out / "transformer").exists()
    exported = load_model(out)
    assert not has_lora(exported.backbone)
    start, _ = build_run(config(post, tmp_path))
    a, b = exported.backbone.state_dict(), {k.replace(".base_layer.", "."): v for k, v in start.model.backbone.state_dict().items() if "lora_" not in k}
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)  # the merged adapter moved weights
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all({"instance_margin", "state_accuracy", "motion_loss", "semantic_loss", "fm"} <= set(r) for r in log)

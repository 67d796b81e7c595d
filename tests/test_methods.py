"""Post-training method plugins on a tiny model: their terms combine as documented, gradients reach only the
trainable parts, and their data (counterfactuals, partitions) is the right one."""

import json
from pathlib import Path

import pytest
import torch

from physalign.objectives import contrastive_fm_loss
from physalign.train.config import load_config
from physalign.train.data import LatentData, counterfactual_latents, partition_ids
from physalign.train.loop import build_run, train
from physalign.train.methods import build_method
from physalign.world.dataset import generate

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def post(tmp_path_factory) -> Path:
    """Six 4-frame 16x16 world videos with their counterfactuals."""
    return generate(tmp_path_factory.mktemp("post"), 6, "train", 0, frames=4, resolution=16, counterfactuals=True, progress=False)


def config(post: Path, tmp: Path, method: str, *more):
    return load_config(CONFIGS / "methods" / "sft.yaml", [
        f"train.method={method}", 'model.init=""', f"model.sizes={json.dumps(TINY)}", f"data.manifest={post}",
        f"data.cache_dir={tmp / 'cache'}", "train.batch_size=4", "train.log_every=1", "optim.warmup_steps=1", *more])


def spy(monkeypatch, module, name: str) -> dict:
    """Wrap ``module.name`` so the returned dict's "out" holds its latest result."""
    seen, real = {}, getattr(module, name)

    def wrapper(*args, **kw):
        seen["out"] = real(*args, **kw)
        return seen["out"]

    monkeypatch.setattr(module, name, wrapper)
    return seen


def step_terms(post, tmp, method, *more, seed=0):
    cfg = config(post, tmp, method, *more)
    state, data = build_run(cfg)
    torch.manual_seed(seed)
    batch = data.batch(torch.tensor([0, 1, 2, 3]))
    terms = state.method(state.model, batch)
    return state, data, batch, terms


def test_sft_is_flow_matching_under_the_same_randomness(post, tmp_path):
    _, _, _, fm = step_terms(post, tmp_path, "fm")
    _, _, _, sft = step_terms(post, tmp_path, "sft")
    assert torch.equal(fm["loss"], sft["loss"])


def test_dfm_loss_is_fm_minus_weight_times_negative(post, tmp_path):
    state, _, batch, terms = step_terms(post, tmp_path, "dfm", "method.weight=0.3")
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["fm"]) - 0.3 * float(terms["neg"]), rel=1e-5)
    assert float(terms["neg_frac"]) == 1.0 and float(terms["neg"]) != pytest.approx(float(terms["fm"]))
    terms["loss"].backward()
    assert all(p.grad is None for p in state.model.vae.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in state.model.transformer.parameters())
    _, _, _, zero = step_terms(post, tmp_path, "dfm", "method.weight=0.0")
    _, _, _, fm = step_terms(post, tmp_path, "fm")
    assert float(zero["loss"].detach()) == pytest.approx(float(fm["loss"].detach()), rel=1e-6)  # λ = 0 is flow matching


def test_dfm_matches_the_objective_with_its_drawn_negatives(post, tmp_path, monkeypatch):
    import physalign.train.methods.dfm as dfm

    drawn = spy(monkeypatch, dfm, "exclusive_negatives")
    captured = spy(monkeypatch, dfm, "noisy_velocity")
    _, _, batch, terms = step_terms(post, tmp_path, "dfm", "method.weight=0.05")
    v, eps, _, _ = captured["out"]
    x0, j = batch["latents"], drawn["out"]
    assert (j != torch.arange(4)).all()  # never the anchor itself
    want = contrastive_fm_loss(v, x0, eps, x0[j], eps[j], weight=0.05)
    assert torch.allclose(terms["loss"], want)


def test_partitions_and_counterfactual_latents(post, tmp_path):
    cfg = config(post, tmp_path, "direct")
    state, data = build_run(cfg)
    rows = data.rows
    ids = partition_ids(rows, ["kind", "color"])
    for a in range(len(rows)):
        for b in range(len(rows)):
            same = (rows[a]["scene"]["kind"], rows[a]["scene"]["color"]) == (rows[b]["scene"]["kind"], rows[b]["scene"]["color"])
            assert (ids[a] == ids[b]) == same
    with pytest.raises(ValueError, match=r"partition keys \['shape'\] are not scene fields"):
        partition_ids(rows, ["shape"])
    cf = counterfactual_latents(cfg.data, state.model, rows)
    assert cf.shape == data.latents.shape and not torch.allclose(cf, data.latents)
    plain = LatentData(data.latents, [{k: v for k, v in r.items() if k != "perturbed"} for r in rows], cfg.data)
    with pytest.raises(ValueError, match="has no 'perturbed' field.*--counterfactuals"):
        counterfactual_latents(cfg.data, state.model, plain.rows)


def test_direct_terms_combine_and_micro_uses_the_counterfactual(post, tmp_path):
    state, data, batch, terms = step_terms(post, tmp_path, "direct", "method.macro_weight=0.1", "method.micro_weight=0.2",
                                           "method.reg_weight=0.5", "method.reg_fraction=0.5", "method.cfg_dropout=0.0")
    want = float(terms["fm"]) - 0.1 * float(terms["macro"]) - 0.2 * float(terms["micro"]) + 0.5 * float(terms["reg"])
    assert float(terms["loss"].detach()) == pytest.approx(want, rel=1e-5)
    assert {"aligned_frac", "aligned_macro", "aligned_micro", "macro_frac", "micro_frac"} <= set(terms)
    assert state.method.frozen is not None and not any(p.requires_grad for p in state.method.frozen.parameters())
    assert not any(n.startswith("_frozen") for n, _ in state.method.named_parameters())  # not trained or saved
    # With the anchor's own latents as "counterfactual", the micro target is u itself: micro == fm.
    state.method.micro_x0 = data.latents.clone()
    torch.manual_seed(0)
    again = state.method(state.model, batch)
    assert float(again["micro"]) == pytest.approx(float(again["fm"]), rel=1e-5)
    terms["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in state.model.transformer.parameters())


def test_direct_config_errors_and_short_training_run(post, tmp_path):
    with pytest.raises(ValueError, match="macro_weight \\+ micro_weight must be < 1"):
        build_method("direct", {"macro_weight": 0.6, "micro_weight": 0.5})
    with pytest.raises(ValueError, match="micro must be one of"):
        build_method("direct", {"micro": "llm"})
    cfg = config(post, tmp_path, "direct", "train.steps=2", "train.save_every=2")
    train(cfg, tmp_path / "run", progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1] and {"macro", "micro", "reg", "aligned_frac"} <= set(log[0])
    _, _, _, ref_terms = step_terms(post, tmp_path, "direct", "method.micro=reference", "method.reg_weight=0.0")
    assert float(ref_terms["micro_frac"]) > 0  # the frozen model under the perturbed prompt is the negative


# -- representation alignment (REPA, TRD, TSA, M-TSA) -------------------------------------------------


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> Path:
    from transformers import VideoMAEModel

    from physalign.teacher.model import save_teacher, teacher_config

    torch.manual_seed(0)
    cfg = teacher_config({"image_size": 16, "num_frames": 4, "patch_size": 4, "tubelet_size": 2, "hidden_size": 32,
                          "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64})
    path = tmp_path_factory.mktemp("teacher") / "t"
    save_teacher(VideoMAEModel(cfg), path)
    return path


@pytest.mark.parametrize("method", ["repa", "trd", "tsa", "mtsa"])
def test_alignment_methods_add_their_objective_on_projected_features(post, tmp_path, tiny_teacher, method, monkeypatch):
    import physalign.train.methods.align as align_mod
    from physalign.objectives import motion_mask, repa_loss, trd_loss, tsa_loss
    from physalign.teacher.cache import cache_teacher_features
    from physalign.teacher.model import load_teacher
    from physalign.train.data import pixel_videos

    captured = spy(monkeypatch, align_mod, "noisy_velocity")
    state, data, batch, terms = step_terms(post, tmp_path, method, f"method.teacher={tiny_teacher}", "method.block=1",
                                           "method.projector_dim=16", "method.weight=0.3")
    m = state.method
    _, _, _, feats = captured["out"]
    student = m.projector(feats[1])
    teacher_rows = cache_teacher_features(load_teacher(tiny_teacher), post, tmp_path / "cache", -1, rows=data.rows)
    teacher = teacher_rows.select(batch["rows"])
    assert student.shape[:4] == teacher.shape[:4] == (4, 2, 4, 4)  # the teacher's grid: 4/2 frames, 16/4 patches
    mask = motion_mask(pixel_videos(data.section, data.rows)[batch["index"]], (2, 4, 4), 0.2)
    want = {"repa": lambda: repa_loss(student, teacher), "trd": lambda: trd_loss(student, teacher, margin=0.1),
            "tsa": lambda: tsa_loss(student, teacher, tau=0.1),
            "mtsa": lambda: tsa_loss(student, teacher, tau=0.1, query_mask=mask)}[method]()
    assert float(terms[method]) == pytest.approx(float(want.detach()), rel=1e-4, abs=1e-6)
    assert float(terms["loss"].detach()) == pytest.approx(float(terms["fm"]) + 0.3 * float(terms[method]), rel=1e-5)
    terms["loss"].backward()
    assert all(p.grad is not None for p in m.projector.parameters())  # the projector trains with the model
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in state.model.transformer.parameters())


def test_alignment_projector_is_checkpointed_and_bad_teacher_path_is_named(post, tmp_path, tiny_teacher):
    from safetensors.torch import load_file

    cfg = config(post, tmp_path, "tsa", f"method.teacher={tiny_teacher}", "method.block=1", "method.projector_dim=16",
                 "train.steps=2", "train.save_every=2")
    train(cfg, tmp_path / "run", progress=False)
    saved = load_file(tmp_path / "run" / "checkpoints" / "step_000002" / "method.safetensors")
    assert any(k.startswith("projector.") for k in saved)
    with pytest.raises(FileNotFoundError, match="nowhere: not a teacher folder"):
        build_run(config(post, tmp_path, "repa", f"method.teacher={tmp_path / 'nowhere'}"))

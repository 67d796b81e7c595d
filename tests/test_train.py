import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from physalign.cli import app
from physalign.models.interface import load_model
from physalign.objectives import flow_matching_loss, interpolate
from physalign.train import checkpoint as ckpt_mod
from physalign.train import data as data_mod
from physalign.train.config import ConfigError, load_config, save_config
from physalign.train.data import latent_data, object_mask
from physalign.train.loop import TrainingError, build_model, lr_factor, train
from physalign.train.methods import METHODS, Method, build_method, register
from physalign.video import write_mp4
from physalign.world import spec
from physalign.world.dataset import load_manifest
from physalign.world.scene import sample_scene, scene_to_prompt

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


pytestmark = pytest.mark.usefixtures("one_thread")


def write_world(root: Path, n: int = 6) -> Path:
    """A manifest of n synthetic 4-frame 16x16 clips: a square of the scene's colour moving on its background."""
    lines = []
    for i in range(n):
        scene = sample_scene(random.Random(i))
        video = np.empty((4, 16, 16, 3), np.uint8)
        video[:] = spec.BACKGROUNDS[scene.background]
        video[:, 12:] = spec.STRUCTURE_COLOR  # a floor
        for f in range(4):
            video[f, 3 + 2 * f : 7 + 2 * f, 2 + f : 6 + f] = spec.OBJECT_COLORS[scene.color]
        write_mp4(root / f"videos/{i}.mp4", video)
        lines.append({"video": f"videos/{i}.mp4", "prompt": scene_to_prompt(scene), "scene": scene.to_dict(),
                      "phenomena": [], "split": "train", "ood": False})
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("world"))


def overrides(world: Path, tmp: Path, *more: str) -> list[str]:
    return [f"data.manifest={world}", f"data.cache_dir={tmp / 'cache'}", f"model.sizes={json.dumps(TINY)}",
            "train.batch_size=4", "train.log_every=1", "optim.warmup_steps=1", *more]


def log_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# -- config ----------------------------------------------------------------------------------------


def test_config_loads_yaml_applies_overrides_and_names_bad_keys(tmp_path):
    for path in sorted((CONFIGS / "base").glob("*.yaml")):  # the base recipe's configs parse and build their methods
        cfg = load_config(path)
        build_method(cfg.train.method, cfg.method)
    cfg = load_config(CONFIGS / "base" / "base.yaml", ["train.steps=7", "optim.lr=1e-3", "model.trainable=[vae]", "method.cfg_dropout=0.2"])
    assert (cfg.train.steps, cfg.optim.lr, cfg.model.trainable, cfg.method["cfg_dropout"]) == (7, 1e-3, ["vae"], 0.2)
    with pytest.raises(ConfigError, match=r"unknown key 'train.stepz'; train has \['batch_size'.*'steps'"):
        load_config(None, ["train.stepz=3"])
    with pytest.raises(ConfigError, match="train.steps must be int, got 'many'"):
        load_config(None, ["train.steps=many"])
    with pytest.raises(ConfigError, match=r"optim.betas\[1\] must be float"):
        load_config(None, ["optim.betas=[0.9, fast]"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.steps"])
    bad = tmp_path / "c.yaml"
    bad.write_text("trian:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown sections \['trian'\]; allowed: \['model'"):
        load_config(bad)
    bad.write_text("train:\n  steps: [3\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML"):
        load_config(bad)


def test_overrides_keep_strings_strings(tmp_path):
    """YAML 1.1 reads `no` as False and `2024` as an int; a string field keeps the text as typed."""
    cfg = load_config(None, ["train.mixed_precision=no", "train.wandb_project=2024", "model.init=", "data.split=off"])
    assert (cfg.train.mixed_precision, cfg.train.wandb_project, cfg.model.init, cfg.data.split) == ("no", "2024", "", "off")
    assert load_config(None, ['train.wandb_project="quoted name"']).train.wandb_project == "quoted name"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n  shard_optimizer: true\n")
    cfg = load_config(path)
    assert (cfg.train.mixed_precision, cfg.train.shard_optimizer) == ("no", True)
    with pytest.raises(ConfigError, match="train.shard_optimizer must be bool, got 'yes'"):  # only true/false are booleans
        load_config(None, ["train.shard_optimizer=yes"])
    with pytest.raises(ConfigError, match="train.steps must be int, got 'no'"):  # typed fields still checked
        load_config(None, ["train.steps=no"])
    saved = tmp_path / "saved.yaml"
    save_config(load_config(None, ["train.mixed_precision=no"]), saved)
    assert load_config(saved).train.mixed_precision == "no"


def test_the_global_batch_is_one_thing():
    """train.batch_size is the global batch, split over the processes; train.batch_size_per_process, when set,
    gives each process's share and the global batch follows from the number of processes."""
    from physalign.train.config import global_batch

    assert global_batch(load_config(None, ["train.batch_size=8"]).train, 4) == 8
    assert global_batch(load_config(None, ["train.batch_size_per_process=2"]).train, 8) == 16
    with pytest.raises(ConfigError, match="train.batch_size 2 is the global batch and must be divisible by the number "
                                          "of processes 8; or set train.batch_size_per_process"):
        global_batch(load_config(None, ["train.batch_size=2"]).train, 8)
    with pytest.raises(ConfigError, match="train.batch_size must be >= 1"):
        global_batch(load_config(None, ["train.batch_size=0"]).train, 1)


def test_methods_are_plugins_with_checked_parameters():
    assert {"fm", "autoencoder"} <= set(METHODS)
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; available: \[.*'fm'"):
        build_method("nope", {})
    with pytest.raises(ConfigError, match=r"unknown keys \['cfg_drop'\] for method 'fm'; allowed: \['cfg_dropout', 't_schedule', 'per_sample_noise'\]"):
        build_method("fm", {"cfg_drop": 0.1})
    with pytest.raises(ConfigError, match="method.cfg_dropout must be float"):
        build_method("fm", {"cfg_dropout": "often"})


# -- objective and method --------------------------------------------------------------------------


def test_flow_matching_loss_matches_a_plain_reference_with_gradients():
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4)
    v = torch.randn(3, 4, 2, 4, 4, requires_grad=True)
    loss = flow_matching_loss(v, x0, eps)
    ref = sum(((v[i] - (eps[i] - x0[i])) ** 2).sum() for i in range(3)) / v.numel()
    (g,), (g_ref,) = torch.autograd.grad(loss, v), torch.autograd.grad(ref, v)
    assert torch.allclose(loss, ref) and torch.allclose(g, g_ref)
    assert not torch.allclose(flow_matching_loss(v, x0, -eps), ref)
    t = torch.tensor([0.0, 0.5, 1.0])
    xt = interpolate(x0, eps, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], eps[2]) and torch.allclose(xt[1], (x0[1] + eps[1]) / 2)
    with pytest.raises(ValueError, match="t must have shape"):
        interpolate(x0, eps, torch.rand(2))


def test_fm_method_is_plain_flow_matching_on_the_model(tmp_path):
    torch.manual_seed(0)
    model = build_model(load_config(None, [f"model.sizes={json.dumps(TINY)}"]).model)
    method = build_method("fm", {"cfg_dropout": 0.5, "t_schedule": "uniform"})
    prompts = [scene_to_prompt(sample_scene(random.Random(i))) for i in range(4)]
    x0 = torch.randn(4, 4, 4, 8, 8)
    torch.manual_seed(1)
    terms = method(model, {"latents": x0, "prompts": prompts})
    torch.manual_seed(1)  # the same draws, in the method's order: noise, times, prompt dropout
    eps, t, keep = torch.randn_like(x0), torch.rand(4), torch.rand(4) >= 0.5
    text = model.encode_text([p if k else "" for p, k in zip(prompts, keep.tolist())])
    v = model.transformer((1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps, timestep=1000 * t,
                          encoder_hidden_states=text.hidden, return_dict=False)[0]
    assert set(terms) == {"loss", "fm"}
    assert torch.allclose(terms["loss"], ((v - (eps - x0)) ** 2).mean())


# -- data ------------------------------------------------------------------------------------------


def test_object_mask_marks_objects_not_background_or_structure():
    frame = np.zeros((1, 4, 4, 3), np.uint8)
    frame[0, 0, 0] = spec.STRUCTURE_COLOR
    frame[0, 1, 1] = spec.OBJECT_COLORS["red"]
    frame[0, 2, 2] = (10, 10, 10)  # within tolerance of the black background
    mask = object_mask(frame, np.array([spec.BACKGROUNDS["black"]]))
    assert mask[0].sum() == 1 and mask[0, 1, 1]
    assert object_mask(frame, np.array([spec.OBJECT_COLORS["red"]]))[0].sum() == 14  # on red, the black pixels are objects


def test_latents_are_cached_by_manifest_and_autoencoder(world, tmp_path, monkeypatch):
    cfg = load_config(None, overrides(world, tmp_path))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    first = latent_data(cfg.data, model)
    assert first.latents.shape == (6, 4, 4, 8, 8) and first.rows == load_manifest(world)
    monkeypatch.setattr(data_mod, "read_videos", lambda *a: pytest.fail("decoded again despite the cache"))
    again = latent_data(cfg.data, model)
    assert torch.equal(again.latents, first.latents) and again.rows == first.rows
    with torch.no_grad():
        model.vae.decoder.conv_out.bias += 1  # decoder only: encode unchanged, but the key covers all weights
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        latent_data(cfg.data, model)


# -- the loop --------------------------------------------------------------------------------------


def test_tiny_flow_matching_run_lowers_the_loss(world, tmp_path):
    cfg = load_config(None, overrides(world, tmp_path, "train.steps=40", "train.save_every=40", "optim.lr=2e-3",
                                      "method.t_schedule=uniform"))
    model_dir = train(cfg, tmp_path / "run", progress=False)
    losses = [r["loss"] for r in log_of(tmp_path / "run")]
    assert len(losses) == 40 and all("fm" in r and "grad_norm" in r for r in log_of(tmp_path / "run"))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5]), losses
    assert load_model(model_dir).cfg.frames == 4


def test_lr_schedules_against_a_plain_reference():
    warmup, steps = 4, 20
    for step in range(steps):
        ramp = (step + 1) / warmup
        plain_cos = ramp if ramp < 1 else 0.5 * (1 + np.cos(np.pi * (step + 1 - warmup) / (steps - warmup)))
        assert lr_factor("constant", warmup, steps)(step) == pytest.approx(min(1.0, ramp))
        assert lr_factor("cosine", warmup, steps)(step) == pytest.approx(plain_cos)
    assert lr_factor("cosine", warmup, steps)(steps - 1) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(TrainingError, match=r"optim.schedule must be one of \['constant', 'cosine'\]. Got 'linear'"):
        lr_factor("linear", warmup, steps)


def test_resume_continues_exactly(world, tmp_path):
    cfg = overrides(world, tmp_path, "train.save_every=2", "optim.ema_decay=0.5", "train.keep_checkpoints=0", "optim.warmup_steps=8")
    straight = train(load_config(None, cfg + ["train.steps=4"]), tmp_path / "straight", progress=False)
    train(load_config(None, cfg + ["train.steps=2"]), tmp_path / "split", progress=False)
    with (tmp_path / "split" / "log.jsonl").open("a") as log:  # a record the killed run wrote after its checkpoint
        log.write(json.dumps({"step": 2, "loss": 9.0}) + "\n")
    resumed = train(load_config(None, cfg + ["train.steps=4"]), tmp_path / "split", resume=True, progress=False)
    a, b = load_model(straight).state_dict(), load_model(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # EMA weights, exported
    for name in ("optimizer", "ema", "method"):
        x, y = (ckpt_mod.load_file(str(r / "checkpoints/step_000004" / f"{name}.safetensors")) for r in (tmp_path / "straight", tmp_path / "split"))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(log_of(tmp_path / "split")) == strip(log_of(tmp_path / "straight"))
    a2 = load_model(tmp_path / "split" / "checkpoints/step_000002/model").state_dict()
    assert not all(torch.equal(a[k], a2[k]) for k in a)  # the test can fail: weights moved after the resume
    with pytest.raises(TrainingError, match="already holds a run"):
        train(load_config(None, cfg + ["train.steps=4"]), tmp_path / "split", progress=False)
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(load_config(None, cfg), tmp_path / "empty", resume=True, progress=False)


def test_a_run_from_a_model_folder_checkpoints_only_what_it_trains(world, tmp_path):
    """With model.init a checkpoint holds the trained tensors and a fingerprinted reference to the folder, not
    the frozen parts; it resumes exactly, exports whole, and refuses a base that changed. (A LoRA run:
    tests/test_methods_preference.py.)"""
    init = tmp_path / "init"
    build_model(load_config(None, [f"model.sizes={json.dumps(TINY)}"]).model).save_pretrained(init)
    cfg = [a for a in overrides(world, tmp_path, "train.save_every=2", "optim.ema_decay=0.5", "train.keep_checkpoints=0",
                                f"model.init={init}", "model.trainable=[transformer]") if "model.sizes" not in a]
    straight = train(load_config(None, cfg + ["train.steps=4"]), tmp_path / "straight", progress=False)
    train(load_config(None, cfg + ["train.steps=2"]), tmp_path / "split", progress=False)
    resumed = train(load_config(None, cfg + ["train.steps=4"]), tmp_path / "split", resume=True, progress=False)
    a, b = load_model(straight).state_dict(), load_model(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ckpt = tmp_path / "split" / "checkpoints" / "step_000002"
    assert not (ckpt / "model").exists() and json.loads((ckpt / "base.json").read_text())["init"] == str(init)
    trained = ckpt_mod.load_file(str(ckpt / "trained.safetensors"))
    assert trained and all(k.startswith("transformer.") for k in trained)
    whole = ckpt_mod.export_checkpoint(ckpt, tmp_path / "exported", ema=False)
    exported, base = load_model(whole).state_dict(), load_model(init).state_dict()
    assert all(torch.equal(exported[k], base[k]) for k in base if not k.startswith("transformer."))  # frozen parts
    assert all(torch.equal(exported[k], trained[k]) for k in trained)
    assert any(not torch.equal(exported[k], base[k]) for k in base if k.startswith("transformer."))
    sampled = CliRunner().invoke(app, ["sample", "--checkpoint", str(ckpt), "--prompt", scene_to_prompt(sample_scene(random.Random(0))),
                                       "--out", str(tmp_path / "samples"), "--steps", "2"])
    assert sampled.exit_code == 0, sampled.output
    (init / "vae" / "note.txt").write_text("retrained")  # another base under the same path
    with pytest.raises(TrainingError, match="has changed since"):
        train(load_config(None, cfg + ["train.steps=6"]), tmp_path / "split", resume=True, progress=False)


def test_an_interrupted_checkpoint_never_breaks_latest(world, tmp_path, monkeypatch):
    cfg = load_config(None, overrides(world, tmp_path, "train.steps=4", "train.save_every=2"))
    calls = {"n": 0}
    real = ckpt_mod.save_file

    def dies_on_the_second_checkpoint(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # step 4's optimizer file (4 files per checkpoint): its model is already written
            raise KeyboardInterrupt
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod, "save_file", dies_on_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False)
    latest = ckpt_mod.latest_checkpoint(tmp_path / "run")
    assert latest.name == "step_000002" and load_model(latest / "model") is not None
    assert list((tmp_path / "run" / "checkpoints").glob(".tmp_*"))  # the half-written one, never renamed
    monkeypatch.setattr(ckpt_mod, "save_file", real)
    train(cfg, tmp_path / "run", resume=True, progress=False)
    assert ckpt_mod.latest_checkpoint(tmp_path / "run").name == "step_000004"
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp_*"))


@register("test_nan")
class NotFinite(Method):
    """Flow matching whose loss is NaN on the steps in ``bad``."""

    def __init__(self, bad: list[int] = ()):
        super().__init__()
        self.bad, self.inner = set(bad), build_method("fm", {})

    def forward(self, model, batch):
        terms = self.inner(model, batch)
        if batch["step"] in self.bad:
            terms["loss"] = terms["loss"] * float("nan")
        return terms


def test_non_finite_steps_are_skipped_then_stop_the_run(world, tmp_path):
    cfg = load_config(None, overrides(world, tmp_path, "train.method=test_nan", "method.bad=[1]", "train.steps=3",
                                      "train.log_every=10", "train.save_every=10", "optim.lr=1e-2"))
    train(cfg, tmp_path / "run", progress=False)
    log = log_of(tmp_path / "run")
    assert [r["step"] for r in log] == [0, 1, 2] and log[1]["skipped"] == 1.0 and math.isnan(log[1]["loss"])
    assert "skipped" not in log[0] and "skipped" not in log[2]
    cfg = load_config(None, overrides(world, tmp_path, "train.method=test_nan", "method.bad=[0, 1, 2]", "train.steps=5",
                                      "train.max_bad_steps=3"))
    with pytest.raises(TrainingError, match=r"step 2: 3 non-finite steps in a row \(train.max_bad_steps = 3\)"):
        train(cfg, tmp_path / "run2", progress=False)
    assert [r.get("skipped") for r in log_of(tmp_path / "run2")] == [1.0, 1.0, 1.0]  # each reported with its terms


def test_a_skipped_step_changes_no_weight(world, tmp_path):
    from physalign.train.loop import build_run, train_step

    cfg = load_config(None, overrides(world, tmp_path, "train.method=test_nan", "method.bad=[0]"))
    state, data = build_run(cfg)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    batch = data.batch(torch.arange(4)) | {"step": 0, "seed": 0}
    values = train_step(state, batch, 1.0, 0)
    assert values["skipped"] == 1.0 and all(torch.equal(before[k], v) for k, v in state.model.state_dict().items())
    values = train_step(state, batch | {"step": 1}, 1.0, 1)
    assert "skipped" not in values and not all(torch.equal(before[k], v) for k, v in state.model.state_dict().items())


def test_tensorboard_gets_every_logged_term(world, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(load_config(None, overrides(world, tmp_path, "train.steps=2")), tmp_path / "run", progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"terms/loss", "terms/fm", "terms/grad_norm", "terms/lr"} <= tags
    assert [e.value for e in events.Scalars("terms/fm")] == pytest.approx([r["fm"] for r in log_of(tmp_path / "run")])


class FakeWandb:
    """Stands in for the wandb package (not a dependency): records what the logger hands it."""

    def __init__(self):
        self.inits, self.logged, self.finished = [], [], 0
        self.util = type("util", (), {"generate_id": staticmethod(lambda: "abc123")})

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self

    def log(self, scalars, step):
        self.logged.append((step, scalars))

    def finish(self):
        self.finished += 1


def test_wandb_gets_every_logged_term_and_a_resumed_run_keeps_its_id(world, tmp_path, monkeypatch):
    import sys

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    more = ("train.wandb_project=physics", "train.tensorboard=false", "train.save_every=2")
    train(load_config(None, overrides(world, tmp_path, "train.steps=2", *more)), tmp_path / "run", progress=False)
    assert fake.inits[0]["project"] == "physics" and fake.inits[0]["id"] == "abc123"
    assert fake.inits[0]["config"]["train"]["steps"] == 2 and fake.finished == 1
    assert [(step, v["terms/fm"]) for step, v in fake.logged] == [(r["step"], r["fm"]) for r in log_of(tmp_path / "run")]
    fake.util.generate_id = staticmethod(lambda: "other")
    train(load_config(None, overrides(world, tmp_path, "train.steps=3", *more)), tmp_path / "run", resume=True,
          progress=False)
    assert fake.inits[1]["id"] == "abc123" and fake.inits[1]["resume"] == "allow" and fake.logged[-1][0] == 2
    monkeypatch.setitem(sys.modules, "wandb", None)  # not installed: import fails
    with pytest.raises(TrainingError, match="wandb is not installed: pip install wandb"):
        train(load_config(None, overrides(world, tmp_path, "train.steps=1", *more)), tmp_path / "new", progress=False)


def test_autoencoder_method_trains_the_vae_and_measures_the_latent_scale(world, tmp_path):
    cfg = load_config(None, overrides(world, tmp_path, "train.method=autoencoder", "model.trainable=[vae]",
                                      "train.steps=3", "train.save_every=3", "optim.lr=1e-3"))
    torch.manual_seed(0)
    start = build_model(cfg.model)
    out = train(cfg, tmp_path / "ae", progress=False)
    model = load_model(out)
    assert set(log_of(tmp_path / "ae")[0]) >= {"loss", "recon", "kl", "grad_norm"}
    a, b = start.state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("transformer."))  # only the VAE trained
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("vae."))
    frames = data_mod.frame_data(cfg.data, model)
    with torch.no_grad():
        z = model.vae.encode(frames.batch(torch.arange(len(frames)))["pixels"]).latent_dist.mean
    assert model.cfg.scaling_factor == pytest.approx(1 / z.std().item(), rel=1e-5)


def test_decoder_stage_keeps_the_encoder_and_its_latent_scale(world, tmp_path):
    """Stage three of the base recipe: L1 on the decoder alone; the latent space the flow model learned stays."""
    start_cfg = load_config(None, overrides(world, tmp_path, "train.method=autoencoder", "model.trainable=[vae]",
                                            "train.steps=1", "train.save_every=1"))
    first = train(start_cfg, tmp_path / "ae", progress=False)
    cfg = load_config(CONFIGS / "base" / "base_decoder.yaml", overrides(world, tmp_path, f"model.init={first}", "train.steps=2",
                                                               "train.save_every=2", "optim.lr=1e-3", "model.sizes={}"))
    out = train(cfg, tmp_path / "dec", progress=False)
    a, b = load_model(first), load_model(out)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("vae.decoder."))
    assert not all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith("vae.decoder."))
    assert b.cfg.scaling_factor == a.cfg.scaling_factor


def test_autoencoder_l1_term_matches_a_plain_weighted_mean(world, tmp_path):
    from physalign.train.methods.autoencoder import Autoencoder

    torch.manual_seed(0)
    cfg = load_config(None, overrides(world, tmp_path))
    model = build_model(cfg.model)
    method = Autoencoder(object_weight=5.0, kl_weight=0.0, recon="l1")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    mask = torch.zeros(2, 32, 32, dtype=torch.bool)
    mask[:, 4:9, 10:15] = True
    torch.manual_seed(1)
    got = method(model, {"pixels": x, "object_mask": mask})["recon"]
    torch.manual_seed(1)
    recon = model.vae.decode(model.vae.encode(x).latent_dist.sample()).sample
    total = 0.0
    for i in range(2):
        for r in range(32):
            for c in range(32):
                w = 5.0 if mask[i, r, c] else 1.0
                total += w * float((recon[i, :, r, c] - x[i, :, r, c]).abs().mean())
    assert float(got) == pytest.approx(total / (2 * 32 * 32), rel=1e-5)
    with pytest.raises(ValueError, match="method.recon must be 'l1' or 'l2'"):
        Autoencoder(recon="l3")


# -- command line ----------------------------------------------------------------------------------


def test_cli_train_then_sample_from_the_run(world, tmp_path):
    runner = CliRunner()
    sets = [a for o in overrides(world, tmp_path, "train.steps=2", "train.save_every=1") for a in ("--set", o)]
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), *sets])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), "--resume", "--set", "train.steps=3"])
    assert res.exit_code == 0, res.output  # the run's own config, extended by one step
    assert [r["step"] for r in log_of(tmp_path / "run")] == [0, 1, 2]
    res = runner.invoke(app, ["sample", "--checkpoint", str(tmp_path / "run"), "--manifest", str(world), "--limit", "2",
                              "--steps", "2", "--samples-per-prompt", "2", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    rows, source = load_manifest(tmp_path / "s" / "manifest.jsonl"), load_manifest(world)
    assert len(rows) == 4 and all((tmp_path / "s" / r["video"]).is_file() for r in rows)
    assert [(r["prompt"], r["scene"], r["ood"]) for r in rows] == [(s["prompt"], s["scene"], s["ood"]) for s in source[:2] for _ in range(2)]
    res = runner.invoke(app, ["train", "--set", "train.nope=1"])
    assert res.exit_code == 2 and "train.nope" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path / "run"), *sets])
    assert res.exit_code == 1 and "already holds a run" in res.output


def test_cli_train_autoencoder_runs_the_shared_loop(world, tmp_path):
    sets = [a for o in overrides(world, tmp_path, "train.steps=2") for a in ("--set", o)]
    res = CliRunner().invoke(app, ["train-autoencoder", "--config", str(CONFIGS / "base" / "autoencoder.yaml"), "--run",
                                   str(tmp_path / "run"), "--out", str(tmp_path / "ae"), *sets])
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "ae").cfg.scaling_factor != 1.0
    assert [r["step"] for r in log_of(tmp_path / "run")] == [0, 1] and "recon" in log_of(tmp_path / "run")[0]


def test_export_of_a_checkpoint_carries_its_ema_weights(world, tmp_path):
    cfg = overrides(world, tmp_path, "train.save_every=2", "optim.ema_decay=0.5", "train.keep_checkpoints=0", "train.steps=4")
    final = train(load_config(None, cfg), tmp_path / "run", progress=False)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    a, b = load_model(final).state_dict(), load_model(tmp_path / "exported").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # latest checkpoint + EMA = the run's own export
    raw = load_model(tmp_path / "run" / "checkpoints" / "step_000004" / "model").state_dict()
    assert not all(torch.equal(a[k], raw[k]) for k in a)  # EMA differs from the raw weights
    train(load_config(None, overrides(world, tmp_path, "train.steps=2", "train.save_every=2")), tmp_path / "plain", progress=False)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "plain"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "kept no EMA" in result.output


def test_validation_videos_at_intervals_leave_the_run_unchanged(world, tmp_path):
    cfg = overrides(world, tmp_path, "train.steps=4", "train.save_every=4", "train.validation_steps=2")
    train(load_config(None, cfg + ["train.validate_every=2"]), tmp_path / "val", progress=False)
    for step in ("step_000002", "step_000004"):
        folder = tmp_path / "val" / "validation" / step
        assert {p.name for p in folder.iterdir()} == {"00.mp4", "01.mp4", "02.mp4", "03.mp4", "all.gif", "prompts.txt"}
    assert (tmp_path / "val" / "validation" / "step_000002" / "prompts.txt").read_text().splitlines()[0] == load_manifest(world)[0]["prompt"]
    train(load_config(None, cfg), tmp_path / "plain", progress=False)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    assert strip(log_of(tmp_path / "val")) == strip(log_of(tmp_path / "plain"))  # validating drew no training noise


def test_a_config_starts_from_its_defaults_file(tmp_path):
    (tmp_path / "shared.yaml").write_text("optim:\n  lr: 0.002\n  schedule: cosine\ntrain:\n  steps: 50\n")
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "one.yaml").write_text("defaults: ../shared.yaml\ntrain:\n  steps: 7\n")
    cfg = load_config(tmp_path / "methods" / "one.yaml", ["optim.lr=0.003"])
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.train.steps) == (0.003, "cosine", 7)  # file over defaults, overrides last
    (tmp_path / "loop.yaml").write_text("defaults: loop.yaml\n")
    with pytest.raises(ConfigError, match="comes back to itself"):
        load_config(tmp_path / "loop.yaml")
    (tmp_path / "lost.yaml").write_text("defaults: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere.yaml: no such config file \(the defaults of"):
        load_config(tmp_path / "lost.yaml")


def test_the_method_configs_share_the_post_training_recipe():
    """Every shipped method config starts from configs/post_training.yaml: warm-up, cosine decay and an EMA
    export with a warm-up, as the base was trained (its last stage: configs/base/base_v4.yaml)."""
    for path in sorted((CONFIGS / "methods").glob("*.yaml")):
        assert path.read_text().count("defaults: configs/post_training.yaml") == 1, path
        o = load_config(path).optim
        assert (o.schedule, o.ema_decay, o.ema_warmup, o.warmup_steps) == ("cosine", 0.99, True, 20), path


def test_ema_warmup_against_a_plain_reference():
    from physalign.train.ema import EMA

    p = torch.nn.Parameter(torch.zeros(3))
    ema = EMA({"p": p}, 0.99, warmup=True)
    want = torch.zeros(3)
    for n in range(40):
        with torch.no_grad():
            p.add_(1.0)
        d = min(0.99, (1 + n) / (10 + n))
        want = d * want + (1 - d) * p.detach()
        ema.update()
    assert torch.allclose(ema.shadow["p"], want)
    state = ema.state_dict()
    again = EMA({"p": p}, 0.99, warmup=True)
    again.load_state_dict(state)
    assert again.updates == 40 and again.current_decay() == ema.current_decay()
    with pytest.raises(KeyError, match="update count"):
        again.load_state_dict({"p": state["p"]})


def test_a_run_with_ema_warmup_resumes_exactly(world, tmp_path):
    cfg = overrides(world, tmp_path, "train.save_every=2", "optim.ema_decay=0.99", "optim.ema_warmup=true",
                    "train.keep_checkpoints=0")
    straight = train(load_config(None, cfg + ["train.steps=4"]), tmp_path / "straight", progress=False)
    train(load_config(None, cfg + ["train.steps=2"]), tmp_path / "split", progress=False)
    resumed = train(load_config(None, cfg + ["train.steps=4"]), tmp_path / "split", resume=True, progress=False)
    a, b = load_model(straight).state_dict(), load_model(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

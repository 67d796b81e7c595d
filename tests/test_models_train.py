import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from physalign.cli import app
from physalign.models.world import WorldModelConfig, WorldVideoModel
from physalign.objectives import flow_matching_loss, interpolate
from physalign.sample import sample
from physalign.train.config import ConfigError, load_config
from physalign.train.loop import train
from physalign.world.dataset import generate

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WorldVideoModel(WorldModelConfig(**TINY))


def test_shapes_grid_and_taps(model):
    video = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    z = model.encode(video)
    assert tuple(z.shape[1:]) == model.latent_shape((3, 4, 16, 16)) == (4, 4, 8, 8)
    assert model.token_grid(z.shape[1:]) == (4, 4, 4)  # patch (1, 2, 2)
    v, feats = model(z, torch.rand(2), model.encode_text(["a small red rubber ball", ""]), taps=(0, 1))
    assert v.shape == z.shape
    assert feats[1].shape == (2, 4, 4, 4, 32)  # (B, F, H, W, C), C = heads x head_dim
    assert model.decode(z).shape == video.shape
    with pytest.raises(IndexError, match="2 blocks"):
        model(z, torch.rand(2), model.encode_text(["a", "b"]), taps=(5,))


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    loaded = WorldVideoModel.from_pretrained(tmp_path / "m")
    z, t = torch.randn(1, 4, 4, 8, 8), torch.tensor([0.3])
    with torch.no_grad():
        a = model(z, t, model.encode_text(["a red ball"]))[0]
        b = loaded(z, t, loaded.encode_text(["a red ball"]))[0]
    assert torch.allclose(a, b, atol=1e-5)  # same weights; attention kernels may differ in rounding
    assert all(p.suffix != ".bin" for p in (tmp_path / "m").rglob("*"))
    with pytest.raises(FileNotFoundError, match="not a physalign model folder"):
        WorldVideoModel.from_pretrained(tmp_path)


def test_flow_matching_loss_matches_reference_with_gradients():
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4)
    v = torch.randn(3, 4, 2, 4, 4, requires_grad=True)
    loss = flow_matching_loss(v, x0, eps)
    ref = sum(((v[i] - (eps[i] - x0[i])) ** 2).sum() for i in range(3)) / v.numel()
    (g,) = torch.autograd.grad(loss, v)
    (g_ref,) = torch.autograd.grad(ref, v)
    assert torch.allclose(loss, ref) and torch.allclose(g, g_ref)
    t = torch.tensor([0.0, 0.5, 1.0])
    xt = interpolate(x0, eps, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], eps[2])
    with pytest.raises(ValueError, match="t must have shape"):
        interpolate(x0, eps, torch.rand(2))


def test_sampler_is_deterministic(model):
    prompts = ["a small red rubber ball is dropped from high up under normal gravity, on a black background"] * 2
    a = sample(model, prompts, steps=2, guidance=2.0, seed=5, progress=False)
    b = sample(model, prompts, steps=2, guidance=2.0, seed=5, progress=False)
    assert a.shape == (2, 4, 16, 16, 3) and a.dtype == np.uint8 and np.array_equal(a, b)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'train.stepz'"):
        load_config(None, ["train.stepz=3"])
    with pytest.raises(ConfigError, match="train.steps must be int"):
        load_config(None, ["train.steps=many"])
    bad = tmp_path / "c.yaml"
    bad.write_text("trian:\n  steps: 3\n")
    with pytest.raises(ConfigError, match="c.yaml: unknown sections \\['trian'\\]"):
        load_config(bad)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate(root, 8, "train", seed=0, frames=4, resolution=16, progress=False)
    return root


def _cfg(world, tmp, steps):
    return load_config(None, [
        f"data.manifest={world / 'manifest.jsonl'}", f"data.cache_dir={tmp / 'cache'}", f"train.steps={steps}",
        "train.batch_size=4", "train.save_every=2", "train.log_every=1", "optim.warmup_steps=1",
        f"model.sizes={json.dumps(TINY)}",
    ])


def test_training_lowers_the_loss_and_resumes_exactly(world, tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(world, tmp_path, 4)
    full = train(cfg, tmp_path / "full", progress=False)
    half_cfg = _cfg(world, tmp_path, 2)
    train(half_cfg, tmp_path / "split", progress=False)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a = WorldVideoModel.from_pretrained(full).state_dict()
    b = WorldVideoModel.from_pretrained(tmp_path / "split" / "model").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(l) for l in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1, 2, 3] and all("fm" in r for r in log)


def test_cli_train_and_sample(world, tmp_path):
    runner = CliRunner()
    args = ["train", "--out", str(tmp_path / "run"), "--set", f"data.manifest={world / 'manifest.jsonl'}",
            "--set", f"data.cache_dir={tmp_path / 'c'}", "--set", "train.steps=1", "--set", "train.batch_size=2",
            "--set", f"model.sizes={json.dumps(TINY)}"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["sample", "--checkpoint", str(tmp_path / "run" / "model"), "--manifest",
                              str(world / "manifest.jsonl"), "--limit", "2", "--steps", "2", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 2 and (tmp_path / "s" / json.loads(lines[0])["video"]).is_file()
    res = runner.invoke(app, ["train", "--set", "train.nope=1"])
    assert res.exit_code == 2 and "train.nope" in res.output

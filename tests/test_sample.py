import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from physalign.cli import app
from physalign.models.interface import TextEmbedding
import math

from physalign.models.sampling import SOLVERS, evaluations, sample, sample_latents
from physalign.models.times import FlowTimes
from physalign.models.world import WorldModelConfig, WorldVideoModel
from physalign.world.dataset import load_manifest
from physalign.world.scene import prompt_to_scene

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)
PROMPTS = [
    "a small red rubber ball is dropped from high up under normal gravity, on a black background",
    "a large blue steel block slides fast to the left and hits a wall under low gravity, on a gray background",
    "a small green wood ball is thrown slowly to the right under normal gravity, on a navy background",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WorldVideoModel(WorldModelConfig(**TINY))


class ConstantVelocity:
    """v = cond for real prompts, uncond for the empty prompt: Euler must land on noise - v exactly."""

    def __init__(self, cond: float, uncond: float, times=FlowTimes()):
        self.cond, self.uncond, self.times, self.seen = cond, uncond, times, []

    def encode_text(self, prompts):
        flags = torch.tensor([p != "" for p in prompts])
        return TextEmbedding(flags[:, None, None].float(), flags[:, None])

    def __call__(self, x, t, text):
        self.seen.append(t[0].item())
        return torch.where(text.mask[:, :1, None, None, None], self.cond, self.uncond).expand_as(x), {}


def test_euler_integration_with_guidance_against_the_closed_form():
    noise = torch.randn(2, 4, 3, 2, 2)
    stub = ConstantVelocity(cond=0.5, uncond=-1.0)
    x0 = sample_latents(stub, ["a", "b"], noise, steps=4, guidance=3.0)
    assert torch.allclose(x0, noise - (-1.0 + 3.0 * (0.5 - -1.0)))  # v = uncond + g (cond - uncond)
    assert stub.seen == [1.0, 0.75, 0.5, 0.25]
    stub = ConstantVelocity(cond=0.5, uncond=-1.0)
    assert torch.allclose(sample_latents(stub, ["a", "b"], noise, steps=3, guidance=1.0), noise - 0.5)  # no guidance
    with pytest.raises(ValueError, match="3 prompts for 2 noise"):
        sample_latents(stub, ["a", "b", "c"], noise)


def test_the_sampler_steps_on_the_models_time_grid():
    """A shifted model (Wan's flow_shift) is integrated on its shifted grid: still exact for a constant velocity."""
    noise = torch.randn(2, 4, 3, 2, 2)
    stub = ConstantVelocity(cond=0.5, uncond=-1.0, times=FlowTimes(3.0, "uniform"))
    assert torch.allclose(sample_latents(stub, ["a", "b"], noise, steps=4, guidance=1.0), noise - 0.5)
    assert stub.seen == pytest.approx([1.0, 0.9, 0.75, 0.5])  # 3u / (1 + 2u) at u = 1, 0.75, 0.5, 0.25


def test_sampler_is_deterministic_from_the_seed_and_shaped_like_the_model(model):
    a = sample(model, PROMPTS, steps=2, guidance=2.0, seed=5, batch_size=2, progress=False)
    b = sample(model, PROMPTS, steps=2, guidance=2.0, seed=5, batch_size=2, progress=False)
    c = sample(model, PROMPTS, steps=2, guidance=2.0, seed=6, batch_size=2, progress=False)
    assert a.shape == (3, 4, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    one_by_one = sample(model, PROMPTS, steps=2, guidance=2.0, seed=5, batch_size=1, progress=False)
    assert np.abs(one_by_one.astype(int) - a).max() <= 1  # noise per video does not depend on the batching
    assert sample(model, [], progress=False).shape == (0, 4, 16, 16, 3)


def test_cli_sample_from_prompts_writes_an_evaluable_manifest(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    runner = CliRunner()
    args = ["sample", "--checkpoint", str(tmp_path / "m"), "--steps", "2", "--out", str(tmp_path / "s")]
    res = runner.invoke(app, [*args, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--seed", "3"])
    assert res.exit_code == 0, res.output
    rows = load_manifest(tmp_path / "s" / "manifest.jsonl")  # the evaluator's reader accepts it
    assert [r["scene"] for r in rows] == [prompt_to_scene(p).to_dict() for p in PROMPTS[:2]]
    assert [r["prompt"] for r in rows] == PROMPTS[:2] and all((tmp_path / "s" / r["video"]).is_file() for r in rows)
    res = runner.invoke(app, [*args, "--prompt", "a small purple ball"])
    assert res.exit_code == 2 and "purple" in res.output
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--manifest or at least one --prompt" in res.output
    res = runner.invoke(app, ["sample", "--checkpoint", str(tmp_path), "--prompt", PROMPTS[0], "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no model here" in res.output
    json.loads((tmp_path / "m" / "physalign_model.json").read_text())  # still intact
    res = runner.invoke(app, [*args, "--prompt", PROMPTS[0], "--solver", "rk4"])
    assert res.exit_code == 2 and "--solver must be one of euler, heun, dpm++2m" in res.output


def test_a_part_of_the_prompts_gets_the_noise_the_whole_list_gives_it(model):
    whole = sample(model, PROMPTS, steps=2, guidance=2.0, seed=5, batch_size=1, progress=False)
    part = sample(model, PROMPTS[1:], steps=2, guidance=2.0, seed=5, batch_size=1, progress=False, first=1)
    assert np.array_equal(part, whole[1:])


def test_cli_sample_in_shards_writes_the_manifest_one_sampling_writes(model, tmp_path):
    """Two shards of one --out (run one after the other here) give the unsharded manifest; the first alone
    writes only its part."""
    model.save_pretrained(tmp_path / "m")
    runner = CliRunner()
    prompts = [a for p in PROMPTS for a in ("--prompt", p)]
    args = ["sample", "--checkpoint", str(tmp_path / "m"), "--steps", "2", "--seed", "3", *prompts, "--samples-per-prompt", "2"]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "whole")]).exit_code == 0
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "sharded"), "--shard", "0/2"])
    assert res.exit_code == 0 and "wrote 2 videos (shard 0/2" in res.output, res.output
    assert not (tmp_path / "sharded" / "manifest.jsonl").exists()
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "sharded"), "--shard", "1/2"])
    assert res.exit_code == 0 and "wrote 4 videos and" in res.output, res.output
    whole = (tmp_path / "whole" / "manifest.jsonl").read_text()
    assert (tmp_path / "sharded" / "manifest.jsonl").read_text() == whole
    assert all((tmp_path / "sharded" / r["video"]).is_file() for r in load_manifest(tmp_path / "sharded" / "manifest.jsonl"))
    for bad in ("2/2", "1", "a/b"):
        res = runner.invoke(app, [*args, "--out", str(tmp_path / "x"), "--shard", bad])
        assert res.exit_code == 2 and "--shard is K/N" in res.output


def test_cli_sample_passes_its_solver_to_the_sampler(model, tmp_path, monkeypatch):
    """``physalign sample --solver dpm++2m`` samples with that solver (the untrained tiny model's videos are the
    same uint8 under every solver, so the call is checked)."""
    import physalign.models.sample_folder as sample_folder

    seen = []
    real = sample_folder.sample
    monkeypatch.setattr(sample_folder, "sample", lambda *a, **k: seen.append(k["solver"]) or real(*a, **k))
    model.save_pretrained(tmp_path / "m")
    args = ["sample", "--checkpoint", str(tmp_path / "m"), "--steps", "3", "--out", str(tmp_path / "s"),
            "--prompt", PROMPTS[0], "--solver", "dpm++2m"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert seen == ["dpm++2m"]


def _field(x, t):
    """A non-linear velocity field for the solvers' checks."""
    return torch.sin(3 * t) * x + 0.3 * torch.tanh(x) - t


@pytest.mark.parametrize("steps", [4, 9, 20])
def test_dpm_solver_2m_equals_diffusers_multistep_scheduler(steps):
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++", solver_order=2,
                                            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=1.0,
                                            final_sigmas_type="zero")
    scheduler.set_timesteps(steps)
    noise = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    x = noise.clone()
    for i, t in enumerate(scheduler.timesteps):
        x = scheduler.step(_field(x, scheduler.sigmas[i]), t, x).prev_sample
    ours = SOLVERS["dpm++2m"](_field, noise.clone(), scheduler.sigmas.float())
    assert torch.allclose(ours, x, atol=1e-5)
    assert not torch.allclose(ours, SOLVERS["euler"](_field, noise.clone(), scheduler.sigmas.float()), atol=1e-3)


def test_heun_equals_diffusers_flow_heun_scheduler():
    from diffusers import FlowMatchHeunDiscreteScheduler

    scheduler = FlowMatchHeunDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    scheduler.set_timesteps(6)
    noise = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1))
    x = noise.clone()
    for t in scheduler.timesteps:  # the scheduler lists each time twice: Euler's point, then the correction
        x = scheduler.step(_field(x, t / 1000), t, x).prev_sample
    grid = torch.tensor(sorted(set(scheduler.sigmas.tolist()), reverse=True))  # 1, ..., 0.001, 0
    assert torch.allclose(SOLVERS["heun"](_field, noise.clone(), grid), x, atol=1e-5)


@pytest.mark.parametrize("solver,order", [("euler", 1), ("heun", 2)])
def test_solver_order_on_a_linear_flow(solver, order):
    """dx/dt = a x from t = 1 to t = 0 has x(0) = x(1) e^{-a}: halving the step divides the error by ~2^order.
    (DPM-Solver++'s order holds for a smooth data prediction in log-SNR, not here: it is checked against
    diffusers above.)"""
    a, x1 = 1.5, torch.ones(1, dtype=torch.float64)
    errors = [abs(float(SOLVERS[solver](lambda x, t: a * x, x1, torch.linspace(1, 0, n + 1, dtype=torch.float64)))
                  - math.exp(-a)) for n in (16, 32, 64)]
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(r - order) < 0.2 for r in rates), rates


def test_unknown_solver_names_the_known_ones(model):
    with pytest.raises(ValueError, match="dpm\\+\\+2m"):
        sample(model, PROMPTS[:1], steps=2, progress=False, solver="rk4")
    assert evaluations("heun", 8) == 15 and evaluations("dpm++2m", 8) == 8

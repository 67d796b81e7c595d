"""Sampling: integration of the learned velocity from noise (t = 1) to data (t = 0).

The probability-flow ODE of rectified flow, ``dx/dt = v(x, t)`` with ``x_t = (1 - t) x0 + t eps``, is solved on
the grid ``model.times.grid(N)`` (:mod:`physalign.models.times`: evenly spaced for the world model, shifted for
Wan 2.1, CogVideoX's scheduler timesteps), t_0 = 1 > t_1 > ... > t_N = 0, by one of :data:`SOLVERS`:

- ``euler``: ``x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)``; N model evaluations, first order.
- ``heun``: Euler's step, then the trapezoid ``x_{i+1} = x_i + h (v(x_i, t_i) + v(x~, t_{i+1})) / 2`` on its
  end point x~ (Karras et al. 2022, alg. 1; the last step to t = 0 stays Euler); 2N - 1 evaluations, second order.
- ``dpm++2m``: DPM-Solver++(2M) (Lu et al. 2022, alg. 2) in rectified-flow form, one evaluation per step,
  second order from the second step on. With ``alpha_t = 1 - t``, ``sigma_t = t``, the data prediction
  ``D_i = x_i - t_i v(x_i, t_i)`` and ``lambda_t = log(alpha_t / sigma_t)``, ``h_i = lambda_{t_{i+1}} - lambda_{t_i}``:

      x_{i+1} = (t_{i+1} / t_i) x_i - (1 - t_{i+1}) (e^{-h_i} - 1) (D_i + (D_i - D_{i-1}) / (2 r_i)),
      r_i = h_{i-1} / h_i,

  first order (the ``D_{i-1}`` term dropped) at the first step and at the last, to t = 0, where it returns
  ``D`` (as diffusers' ``DPMSolverMultistepScheduler`` with ``final_sigmas_type="zero"``, which
  tests/test_sample.py checks it against). From t = 1 (lambda = -inf) its first step is Euler's.

Classifier-free guidance: ``v = v_uncond + g (v_cond - v_uncond)`` (the empty prompt is the unconditional one;
g = 1 skips the unconditional pass), both branches in one batched forward. Works with any :class:`VideoModel`;
writing the samples as a world data folder is :mod:`physalign.models.sample_folder`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from physalign.models.interface import TextEmbedding, VideoModel, to_uint8

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (B, C, T, H, W), scalar t) -> v, x's shape


def guided_velocity(model: VideoModel, x: torch.Tensor, t: torch.Tensor, text: TextEmbedding, guidance: float) -> torch.Tensor:
    """v (B, C, T, H, W) at scalar time ``t``; ``text`` holds B conditional then B unconditional rows when
    guidance != 1 (one batched pass for both)."""
    if guidance == 1.0:
        return model(x, t.expand(len(x)), text)[0]
    v = model(torch.cat([x, x]), t.expand(2 * len(x)), text)[0]  # (2B, C, T, H, W)
    cond, uncond = v.chunk(2)
    return uncond + guidance * (cond - uncond)


def euler(velocity: Velocity, x: torch.Tensor, ts: torch.Tensor, step=lambda: None) -> torch.Tensor:
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * velocity(x, t)
        step()
    return x


def heun(velocity: Velocity, x: torch.Tensor, ts: torch.Tensor, step=lambda: None) -> torch.Tensor:
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = velocity(x, t)
        end = x + (t_next - t) * v
        x = end if t_next <= 0 else x + (t_next - t) * 0.5 * (v + velocity(end, t_next))
        step()
    return x


def _log_snr(t: torch.Tensor) -> float:
    """lambda_t = log((1 - t) / t): -inf at t = 1 (noise), +inf at t = 0 (data)."""
    t = float(t)
    return -math.inf if t >= 1 else math.inf if t <= 0 else math.log((1 - t) / t)


def dpmpp_2m(velocity: Velocity, x: torch.Tensor, ts: torch.Tensor, step=lambda: None) -> torch.Tensor:
    previous = None  # (D_{i-1}, h_{i-1})
    for t, t_next in zip(ts[:-1], ts[1:]):
        d = x - t * velocity(x, t)  # the data prediction D_i
        if t_next <= 0:
            x = d  # sigma = 0: the last step returns the data prediction (first order)
        else:
            h = _log_snr(t_next) - _log_snr(t)
            if previous is not None and math.isfinite(previous[1]):
                d_prev, h_prev = previous
                d_used = d + (d - d_prev) * (h / (2 * h_prev))  # D + (D - D_prev) / (2 r), r = h_prev / h
            else:
                d_used = d
            x = (t_next / t) * x - (1 - t_next) * math.expm1(-h) * d_used
            previous = (d, h)
        step()
    return x


SOLVERS = {"euler": euler, "heun": heun, "dpm++2m": dpmpp_2m}


def check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; available: {sorted(SOLVERS)}")


def evaluations(solver: str, steps: int) -> int:
    """Model evaluations (each one batched forward) of ``steps`` steps of ``solver``."""
    check_solver(solver)
    return 2 * steps - 1 if solver == "heun" else steps


@torch.no_grad()
def sample_latents(model: VideoModel, prompts: Sequence[str], noise: torch.Tensor, steps: int = 30,
                   guidance: float = 1.0, bar: tqdm | None = None, solver: str = "euler") -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (``noise``, (B, C, T, H, W)) to t = 0 with ``solver``; returns x0 of the
    same shape."""
    check_solver(solver)
    if len(prompts) != len(noise):
        raise ValueError(f"got {len(prompts)} prompts for {len(noise)} noise tensors")
    text = model.encode_text(list(prompts))
    if guidance != 1.0:
        text = TextEmbedding.cat([text, model.encode_text([""] * len(prompts))])
    ts = model.times.grid(steps).to(noise.device)
    return SOLVERS[solver](lambda x, t: guided_velocity(model, x, t, text, guidance), noise, ts,
                           (lambda: bar.update(1)) if bar is not None else (lambda: None))


@torch.no_grad()
def sample(
    model: VideoModel,
    prompts: Sequence[str],
    steps: int = 30,
    guidance: float = 4.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    solver: str = "euler",
    first: int = 0,
) -> np.ndarray:
    """Videos for ``prompts`` as uint8 (B, T, H, W, 3) of ``model.video_shape``, deterministic from ``seed``.

    All noise is drawn up front from one generator, so video i depends on (seed, i) and not on batch_size.
    ``prompts`` may be a part of a longer list that starts at position ``first``: video i then gets the noise
    of position first + i, as it would in the whole list (shards of one sampling, :func:`sample_to_folder`).
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1. Got steps={steps}, batch_size={batch_size}.")
    check_solver(solver)
    model.eval()
    device = next(model.parameters()).device
    shape = model.latent_shape(model.video_shape)
    if first < 0:
        raise ValueError(f"first must be >= 0. Got {first}.")
    noise = torch.randn((first + len(prompts), *shape), generator=torch.Generator().manual_seed(seed))[first:].to(device)
    out = []
    batches = range(0, len(prompts), batch_size)
    with tqdm(total=len(batches) * steps, desc=f"sample ({solver})", unit="step", disable=not progress) as bar:
        for i in batches:
            x0 = sample_latents(model, prompts[i : i + batch_size], noise[i : i + batch_size], steps, guidance, bar, solver)
            out.append(to_uint8(model.decode(x0)))
    return np.concatenate(out) if out else np.zeros((0, *model.video_shape[1:], 3), np.uint8)

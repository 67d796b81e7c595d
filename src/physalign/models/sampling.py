"""Sampling: Euler integration of the learned velocity from noise (t = 1) to data (t = 0).

    x_{t'} = x_t + (t' - t) v(x_t, t),   t = 1 = t_0 > t_1 > ... > t_N = 0 on the model's grid,

the grid ``model.times.grid(N)`` (:mod:`physalign.models.times`: evenly spaced for the world model, shifted
for Wan 2.1, CogVideoX's scheduler timesteps),
with classifier-free guidance ``v = v_uncond + g (v_cond - v_uncond)`` (the empty prompt is the
unconditional one; g = 1 skips the unconditional pass). Works with any :class:`VideoModel`; writing the
samples as a world data folder is :mod:`physalign.models.sample_folder`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from physalign.models.interface import TextEmbedding, VideoModel, to_uint8


def guided_velocity(model: VideoModel, x: torch.Tensor, t: torch.Tensor, text: TextEmbedding, guidance: float) -> torch.Tensor:
    """v (B, C, T, H, W) at scalar time ``t``; ``text`` holds B conditional then B unconditional rows when
    guidance != 1 (one batched pass for both)."""
    if guidance == 1.0:
        return model(x, t.expand(len(x)), text)[0]
    v = model(torch.cat([x, x]), t.expand(2 * len(x)), text)[0]  # (2B, C, T, H, W)
    cond, uncond = v.chunk(2)
    return uncond + guidance * (cond - uncond)


@torch.no_grad()
def sample_latents(model: VideoModel, prompts: Sequence[str], noise: torch.Tensor, steps: int = 30,
                   guidance: float = 1.0, bar: tqdm | None = None) -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (``noise``, (B, C, T, H, W)) to t = 0; returns x0 of the same shape."""
    if len(prompts) != len(noise):
        raise ValueError(f"got {len(prompts)} prompts for {len(noise)} noise tensors")
    text = model.encode_text(list(prompts))
    if guidance != 1.0:
        text = TextEmbedding.cat([text, model.encode_text([""] * len(prompts))])
    x, ts = noise, model.times.grid(steps).to(noise.device)
    for t, t_next in zip(ts[:-1], ts[1:]):
        x = x + (t_next - t) * guided_velocity(model, x, t, text, guidance)
        if bar is not None:
            bar.update(1)
    return x


@torch.no_grad()
def sample(
    model: VideoModel,
    prompts: Sequence[str],
    steps: int = 30,
    guidance: float = 4.0,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Videos for ``prompts`` as uint8 (B, T, H, W, 3) of ``model.video_shape``, deterministic from ``seed``.

    All noise is drawn up front from one generator, so video i depends on (seed, i) and not on batch_size.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1. Got steps={steps}, batch_size={batch_size}.")
    model.eval()
    device = next(model.parameters()).device
    shape = model.latent_shape(model.video_shape)
    noise = torch.randn((len(prompts), *shape), generator=torch.Generator().manual_seed(seed)).to(device)
    out = []
    batches = range(0, len(prompts), batch_size)
    with tqdm(total=len(batches) * steps, desc="sample", unit="step", disable=not progress) as bar:
        for i in batches:
            x0 = sample_latents(model, prompts[i : i + batch_size], noise[i : i + batch_size], steps, guidance, bar)
            out.append(to_uint8(model.decode(x0)))
    return np.concatenate(out) if out else np.zeros((0, *model.video_shape[1:], 3), np.uint8)

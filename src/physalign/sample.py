"""Sampling: Euler integration of the learned velocity from noise (t = 1) to data (t = 0), with
classifier-free guidance ``v = v_uncond + g (v_cond - v_uncond)``."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from physalign.models.interface import TextEmbedding, VideoModel
from physalign.train.data import to_uint8


@torch.no_grad()
def sample_latents(model: VideoModel, prompts: Sequence[str], steps: int, guidance: float, noise: torch.Tensor) -> torch.Tensor:
    """Integrate dx/dt = v from t = 1 (``noise``, (B, C, T, H, W)) to t = 0; returns x0."""
    text = model.encode_text(list(prompts))
    if guidance != 1.0:
        text = TextEmbedding.cat([text, model.encode_text([""] * len(prompts))])
    x, ts = noise, torch.linspace(1.0, 0.0, steps + 1)
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = _velocity(model, x, t, text, guidance)
        x = x + (t_next - t) * v
    return x


def _velocity(model, x: torch.Tensor, t: torch.Tensor, text: TextEmbedding, guidance: float) -> torch.Tensor:
    if guidance == 1.0:
        return model(x, t.expand(len(x)), text)[0]
    v = model(torch.cat([x, x]), t.expand(2 * len(x)), text)[0]
    cond, uncond = v.chunk(2)
    return uncond + guidance * (cond - uncond)


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
    """Videos for ``prompts`` as uint8 (B, T, H, W, 3), deterministic from ``seed``."""
    model.eval()
    cfg = model.cfg
    shape = model.latent_shape((3, cfg.frames, cfg.resolution, cfg.resolution))
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(prompts), *shape), generator=gen)
    out = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="sample", disable=not progress):
        x0 = sample_latents(model, prompts[i : i + batch_size], steps, guidance, noise[i : i + batch_size])
        out.append(to_uint8(model.decode(x0)))
    return np.concatenate(out)

"""Rectified flow (docs/methods.md notation).

    x_t = (1 - t) x0 + t eps,   u = eps - x0,   L_FM = mean ||v - u||^2

``x0``, ``eps``, ``v``: (B, C, T, H, W); ``t``: (B,) in [0, 1], t = 1 is pure noise.
"""

from __future__ import annotations

import torch


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps, with t (B,) broadcast over the remaining dimensions."""
    if t.shape != x0.shape[:1]:
        raise ValueError(f"t must have shape [batch] = {list(x0.shape[:1])}. Got {list(t.shape)}.")
    tb = t.reshape(-1, *([1] * (x0.dim() - 1)))
    return (1 - tb) * x0 + tb * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """u = eps - x0: the constant velocity of the straight path from x0 to eps."""
    return eps - x0


def flow_matching_loss(v: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """L_FM = mean over all elements of (v - (eps - x0))^2. Shapes of v, x0, eps must match."""
    if not (v.shape == x0.shape == eps.shape):
        raise ValueError(f"v, x0, eps must share a shape. Got {list(v.shape)}, {list(x0.shape)}, {list(eps.shape)}.")
    return (v - velocity_target(x0, eps)).pow(2).mean()

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


def contrastive_fm_loss(v: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, neg_x0: torch.Tensor,
                        neg_eps: torch.Tensor, weight: float = 0.05, valid: torch.Tensor | None = None) -> torch.Tensor:
    """ΔFM (contrastive flow matching, Stoica et al. 2025):

        L = mean (v - u)^2 - weight * 1/B Σ_i valid_i mean_i (v_i - u~_i)^2,   u = eps - x0,   u~ = neg_eps - neg_x0

    The negative is another sample's full target (its own video and its own noise); which sample is the
    caller's choice (e.g. ``exclusive_negatives``). All five tensors: (B, C, T, H, W), one shape.
    ``valid`` (B,) bool drops the negative term of samples that have none (default: all have one, and the
    term is the plain mean over all elements). ``weight`` = 0 gives ``flow_matching_loss``; at ``weight`` >= 1
    the loss is unbounded below.
    """
    shapes = [list(x.shape) for x in (v, x0, eps, neg_x0, neg_eps)]
    if any(s != shapes[0] for s in shapes):
        raise ValueError(f"v, x0, eps, neg_x0, neg_eps must share a shape. Got {', '.join(map(str, shapes))}.")
    if valid is not None and (valid.shape != v.shape[:1] or valid.dtype != torch.bool):
        raise ValueError(f"valid must be a bool tensor of shape [batch] = {list(v.shape[:1])}. Got {valid.dtype} "
                         f"{list(valid.shape)}.")
    per_sample = (v - velocity_target(neg_x0, neg_eps)).pow(2).flatten(1).mean(1)  # (B,)
    negative = per_sample.mean() if valid is None else (per_sample * valid).sum() / len(v)
    return flow_matching_loss(v, x0, eps) - weight * negative

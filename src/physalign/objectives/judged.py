"""DiffPhy's judge-based terms (docs/methods.md, section DiffPhy).

At a time t the model's clean-clip prediction is x0_hat = x_t - t v (rectified flow: x_t = (1 - t) x0 + t eps,
v ≈ eps - x0). Decoded and shown to a multimodal judge, it is scored by

    L_phen = Σ_i (E(l_i) - 1)^2          E(l_i): the judge's P(yes) that phenomenon fact i holds
    L_com  = (E(s_com) / τ - 1)^2        E(s_com): the expected 1-5 rating of physical commonsense
    L_sem  = (E(s_sem) / τ - 1)^2        E(s_sem): the expected 1-5 rating of prompt consistency

each averaged over the batch; τ = 5 [ours] makes a perfect rating cost 0.
"""

from __future__ import annotations

import torch


def predicted_x0(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0_hat = x_t - t v, with t (B,) broadcast over (C, T, H, W)."""
    if t.shape != x_t.shape[:1] or v.shape != x_t.shape:
        raise ValueError(f"x_t and v must share a shape and t be (B,). Got {list(x_t.shape)}, {list(v.shape)}, {list(t.shape)}.")
    return x_t - t.reshape(-1, *([1] * (x_t.dim() - 1))) * v


def phenomena_loss(fact_probs: torch.Tensor, fact_mask: torch.Tensor) -> torch.Tensor:
    """L_phen: fact_probs (B, K) = P(yes) per fact, fact_mask (B, K) bool = the fact exists (videos have
    different numbers of facts). Returns mean_b Σ_k mask (p - 1)^2; a video with no fact adds 0."""
    if fact_probs.shape != fact_mask.shape:
        raise ValueError(f"fact_probs and fact_mask must share a shape. Got {list(fact_probs.shape)}, {list(fact_mask.shape)}.")
    return ((fact_probs - 1.0).pow(2) * fact_mask).sum(1).mean()


def rating_loss(expected_rating: torch.Tensor, tau: float = 5.0) -> torch.Tensor:
    """L_com or L_sem: mean_b (E(s) / τ - 1)^2 for expected ratings (B,) in [1, 5]."""
    if tau <= 0:
        raise ValueError(f"tau must be positive. Got {tau}.")
    return (expected_rating / tau - 1.0).pow(2).mean()

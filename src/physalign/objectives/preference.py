"""Flow-DPO (Diffusion-DPO in velocity space) and PhysHPO's hierarchical levels.

For a preference pair (winner w, loser l) noised with the *same* eps and t, with e = v - u the velocity error
of the trained model and e_ref that of the frozen reference:

    Δ = (m(e_w) - m(e_ref,w)) - (m(e_l) - m(e_ref,l)),     L = -log σ(-β/2 · Δ),   β = 100

where m is a per-sample mean square. The implicit reward margin is -β/2 · Δ; accuracy is the fraction of
pairs with Δ < 0 (the model prefers the winner more than the reference does).

PhysHPO's levels differ only in m (docs/methods.md, section PhysHPO; our formulation):

- ``instance``: m(e) = mean over (C, T, H, W), the whole clip;
- ``state``: the mean over the boundary latent frames only (first and last: the anchors);
- ``motion``: the mean square of e's temporal differences e[:, :, 1:] - e[:, :, :-1] (dynamics, not appearance);
- ``semantic``: the instance m, but the pair is one video under its prompt (w) and under a mismatched or
  physics-perturbed prompt (l): the caller supplies those errors.

Errors are (B, C, T, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def instance_mse(err: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B,): mean square over the whole clip."""
    return err.pow(2).flatten(1).mean(1)


def state_mse(err: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B,): mean square over the first and the last latent frames."""
    return err[:, :, [0, -1]].pow(2).flatten(1).mean(1)


def motion_mse(err: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B,): mean square of the error's frame-to-frame differences (needs T >= 2)."""
    if err.shape[2] < 2:
        raise ValueError(f"the motion level needs at least 2 latent frames. Got T = {err.shape[2]}.")
    return (err[:, :, 1:] - err[:, :, :-1]).pow(2).flatten(1).mean(1)


LEVEL_MSE = {"instance": instance_mse, "state": state_mse, "motion": motion_mse, "semantic": instance_mse}


def flow_dpo_loss(err_w: torch.Tensor, err_l: torch.Tensor, ref_err_w: torch.Tensor, ref_err_l: torch.Tensor,
                  beta: float = 100.0, level: str = "instance") -> dict[str, torch.Tensor]:
    """Flow-DPO on one level. The four errors: (B, C, T, H, W), one shape; the reference's carry no gradient.

    Returns {"loss": mean_i -log σ(-β/2 Δ_i), "margin": mean -β/2 Δ (detached), "accuracy": mean [Δ < 0]}.
    """
    if not (err_w.shape == err_l.shape == ref_err_w.shape == ref_err_l.shape):
        raise ValueError(f"the four velocity errors must share a shape. Got {[list(e.shape) for e in (err_w, err_l, ref_err_w, ref_err_l)]}.")
    if level not in LEVEL_MSE:
        raise ValueError(f"level must be one of {sorted(LEVEL_MSE)}. Got {level!r}.")
    m = LEVEL_MSE[level]
    delta = (m(err_w) - m(ref_err_w.detach())) - (m(err_l) - m(ref_err_l.detach()))  # (B,)
    logits = -0.5 * beta * delta
    return {"loss": -F.logsigmoid(logits).mean(), "margin": logits.detach().mean(),
            "accuracy": (delta.detach() < 0).float().mean()}

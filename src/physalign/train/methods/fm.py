"""Plain flow matching (rectified flow): the base model's objective and the SFT baseline."""

from __future__ import annotations

import torch

from physalign.objectives import flow_matching_loss, interpolate
from physalign.train.methods import register


def sample_t(batch: int, schedule: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training times (B,) in (0, 1): "uniform" or "logit_normal" (sigmoid of a standard normal)."""
    if schedule == "uniform":
        return torch.rand(batch, generator=generator)
    if schedule == "logit_normal":
        return torch.sigmoid(torch.randn(batch, generator=generator))
    raise ValueError(f"t schedule must be 'uniform' or 'logit_normal'. Got {schedule!r}.")


def drop_prompts(prompts: list[str], p: float) -> list[str]:
    """Replace each prompt by "" with probability p (classifier-free guidance training)."""
    keep = torch.rand(len(prompts)) >= p
    return [q if k else "" for q, k in zip(prompts, keep.tolist())]


@register("fm")
class FlowMatching:
    """L = L_FM on the batch's latents. Batch: {"latents": (B, C, T, H, W), "prompts": list[str]}."""

    def __init__(self, cfg_dropout: float = 0.1, t_schedule: str = "logit_normal"):
        self.cfg_dropout, self.t_schedule = cfg_dropout, t_schedule

    def __call__(self, model, batch: dict) -> dict[str, torch.Tensor]:
        x0 = batch["latents"]
        eps = torch.randn_like(x0)
        t = sample_t(x0.shape[0], self.t_schedule).to(x0.device)
        text = model.encode_text(drop_prompts(batch["prompts"], self.cfg_dropout))
        v, _ = model(interpolate(x0, eps, t), t, text)
        loss = flow_matching_loss(v, x0, eps)
        return {"loss": loss, "fm": loss.detach()}

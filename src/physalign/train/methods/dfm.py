"""ΔFM, contrastive flow matching (Stoica et al. 2025), a baseline of DiReCT.

    L = ||v - u||^2 - λ ||v - u~||^2,   u = eps - x0,   u~ = eps_j - x0_j

with j another sample of the batch (its own video and its own noise), drawn uniformly with j != i; λ = 0.05
(the paper's). ``partition_keys`` makes it the class-conditional variant: j only from a different partition
(scenes differing in those fields), as DiReCT's macro negatives.
"""

from __future__ import annotations

import torch

from physalign.objectives import contrastive_fm_loss, exclusive_negatives
from physalign.train.methods import Method, register
from physalign.train.methods.fm import check_schedule, noisy_velocity


@register("dfm")
class ContrastiveFlowMatching(Method):
    """Batch: {"latents": (B, C, T, H, W), "prompts", "index"}. Terms: loss, fm, neg (||v - u~||^2)."""

    def __init__(self, weight: float = 0.05, partition_keys: list[str] = (), cfg_dropout: float = 0.1,
                 t_schedule: str = "model"):
        super().__init__()
        check_schedule("dfm", cfg_dropout, t_schedule)
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"method dfm: weight must be in [0, 1) (at 1 the loss is unbounded below). Got {weight}.")
        self.weight, self.partition_keys = weight, list(partition_keys)
        self.cfg_dropout, self.t_schedule = cfg_dropout, t_schedule
        self.groups = None

    def setup(self, model, data) -> None:
        self.groups = data.partition_ids(self.partition_keys) if self.partition_keys else None

    def forward(self, model, batch: dict) -> dict[str, torch.Tensor]:
        x0 = batch["latents"]
        v, eps, _, _ = noisy_velocity(model, x0, batch["prompts"], self.cfg_dropout, self.t_schedule, batch=batch)
        groups = self.groups[batch["index"]] if self.groups is not None else torch.arange(len(x0))  # any other sample
        j = exclusive_negatives(groups)
        valid, k = j >= 0, j.clamp_min(0)  # a sample with no partner of another partition gets no negative term
        loss = contrastive_fm_loss(v, x0, eps, x0[k], eps[k], weight=self.weight, valid=valid)
        with torch.no_grad():
            fm = (v - (eps - x0)).pow(2).mean()
            neg = (v - (eps[k] - x0[k])).pow(2).mean()
        return {"loss": loss, "fm": fm, "neg": neg, "neg_frac": valid.float().mean()}

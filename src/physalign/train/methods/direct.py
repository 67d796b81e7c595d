"""DiReCT: contrastive flow matching with disentangled negatives (docs/methods.md, section DiReCT; the
paper's equations are not public, so this is our formulation, every weight configurable):

    L = L_FM - λ_macro C(v, u_macro) - λ_micro C(v, u_micro) + λ_vel D(v, v_ref),   C(v, w) = mean ||v - w||^2

- macro negatives: another sample's target, only from a different semantic partition (``partition_keys``:
  scene fields in the world, where the semantic attributes are known; ``[caption]`` for real clips);
- micro hard negatives along one physics axis: ``micro: counterfactual`` (the world's simulated
  counterfactual video under the same noise, ``u_micro = eps - x0^-``) or ``micro: reference`` (the frozen
  starting model's velocity under the perturbed prompt, for data without a simulator: real clips with a
  ``perturbed_prompts`` manifest column);
- D: the velocity-space regulariser against the frozen starting model on the same inputs (MMD by default),
  estimated on ``reg_fraction`` of the batch [ours]: it is distributional, so a subset estimates it, and
  the frozen forward then costs a fraction of a step (the paper claims no extra training time).

Logged: every term, the fraction of samples meeting the alignment condition <u - v, v - w> >= 0, and with
``gate`` the fraction whose contrastive term was kept.
"""

from __future__ import annotations

import copy

import torch

from physalign.objectives import direct_loss, interpolate, velocity_regularizer
from physalign.objectives.direct import REGULARIZERS
from physalign.train.methods import Method, register
from physalign.train.methods.fm import check_schedule, drop_prompts, encode_prompts, sample_t

MICRO = ("counterfactual", "reference", "none")


@register("direct")
class DiReCT(Method):
    """Batch: {"latents": (B, C, T, H, W), "prompts", "rows", "index"}."""

    def __init__(self, macro_weight: float = 0.05, micro_weight: float = 0.05, reg_weight: float = 0.1,
                 reg: str = "mmd", reg_fraction: float = 0.25, gate: bool = False,
                 partition_keys: list[str] = ("kind", "color"), micro: str = "counterfactual",
                 cfg_dropout: float = 0.1, t_schedule: str = "model"):
        super().__init__()
        check_schedule("direct", cfg_dropout, t_schedule)
        if micro not in MICRO or reg not in REGULARIZERS or not 0.0 < reg_fraction <= 1.0:
            raise ValueError(f"method direct: micro must be one of {MICRO}, reg one of {REGULARIZERS}, "
                             f"0 < reg_fraction <= 1. Got {micro!r}, {reg!r}, {reg_fraction}.")
        if macro_weight + micro_weight >= 1.0:
            raise ValueError(f"method direct: macro_weight + micro_weight must be < 1 (else the loss is unbounded "
                             f"below). Got {macro_weight} + {micro_weight}.")
        self.macro_weight, self.micro_weight, self.reg_weight = macro_weight, micro_weight, reg_weight
        self.reg, self.reg_fraction, self.gate, self.micro = reg, reg_fraction, gate, micro
        self.partition_keys = list(partition_keys)
        self.cfg_dropout, self.t_schedule = cfg_dropout, t_schedule
        self._frozen: list = []  # in a list: the frozen copy is not a sub-module (not trained, not checkpointed)

    def setup(self, model, data) -> None:
        self.groups = data.partition_ids(self.partition_keys)
        self.micro_x0 = data.counterfactual_latents(model) if self.micro == "counterfactual" else None
        if self.micro == "reference":
            self.perturbed = data.perturbed_prompts(required_by="method direct, micro: reference")
        if self.reg_weight > 0 or self.micro == "reference":
            self._frozen = [copy.deepcopy(model).eval().requires_grad_(False)]

    @property
    def frozen(self):
        return self._frozen[0] if self._frozen else None

    def forward(self, model, batch: dict) -> dict[str, torch.Tensor]:
        x0, idx = batch["latents"], batch["index"]
        b = x0.shape[0]
        eps, t = torch.randn_like(x0), sample_t(b, self.t_schedule, times=model.times).to(x0.device)
        prompts = drop_prompts(batch["prompts"], self.cfg_dropout)
        x_t = interpolate(x0, eps, t)
        v, _ = model(x_t, t, encode_prompts(model, prompts, batch))
        micro_x0 = self.micro_x0[idx].to(x0) if self.micro_x0 is not None else None
        micro_v = self._reference_micro(batch, x_t, t) if self.micro == "reference" else None
        kept = torch.tensor([p != "" for p in prompts], device=x0.device)  # no hard negative for a dropped prompt
        terms = direct_loss(v, x0, eps, self.groups[idx].to(x0.device), micro_x0=micro_x0, micro_v=micro_v, micro_valid=kept,
                            macro_weight=self.macro_weight, micro_weight=self.micro_weight, reg_weight=0.0, gate=self.gate)
        if self.reg_weight > 0:
            k = max(2, round(self.reg_fraction * b))  # a distribution needs two samples
            with torch.no_grad():
                v_ref = self.frozen(x_t[:k], t[:k], encode_prompts(self.frozen, prompts[:k], batch))[0]
            reg = velocity_regularizer(v[:k], v_ref, self.reg)
            terms["loss"] = terms["loss"] + self.reg_weight * reg
            terms["reg"] = reg.detach()
        return terms

    @torch.no_grad()
    def _reference_micro(self, batch: dict, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The frozen model's velocity under each sample's perturbed prompt (one physics axis changed)."""
        perturbed = [self.perturbed[i] for i in batch["index"].tolist()]
        return self.frozen(x_t, t, encode_prompts(self.frozen, perturbed, batch))[0]

"""PhysHPO: hierarchical Flow-DPO with real videos as winners (docs/methods.md, section PhysHPO; the paper's
losses are not public, so the levels are our formulation, each weight configurable, 0 switches a level off):

    L = Σ_level w_level · FlowDPO_level + fm_weight · L_FM(winner)

- instance, state, motion: winner = the real clip, loser = a clip of the same prompt that breaks physics
  (``data.loser_latents``: in the world a corrupted re-simulation, ``physalign.world.corrupt``: teleport,
  freeze in mid-air, wrong gravity, ... built once per data set; for precomputed clips the manifest's
  ``loser``/``rejected`` of each pair), both noised with the same eps and t; the levels differ in which part
  of the velocity error they compare (``physalign.objectives.preference``);
- semantic: the winner clip under its own prompt vs under the row's physics-perturbed prompt (the world's
  ``world generate --counterfactuals``, or a manifest's ``perturbed_prompts``; else another row's prompt).

The trained weights are a LoRA adapter on the backbone; the reference is the same backbone with the adapter
disabled (no second model in memory). At the end the adapter is merged, so the exported model is plain.
``fm_weight`` [ours, default 0 as in Flow-DPO] optionally anchors the winner's flow-matching error.
Logged per level: loss, implicit reward margin (-β/2 Δ) and accuracy (Δ < 0).
"""

from __future__ import annotations

import random

import torch

from physalign.models.lora import LoraSpec, add_lora, lora_disabled, merge_lora
from physalign.objectives import flow_dpo_loss, interpolate
from physalign.train.methods import Method, register
from physalign.train.methods.fm import check_schedule, encode_prompts, sample_t

LEVELS = ("instance", "state", "motion", "semantic")


@register("physhpo")
class PhysHPO(Method):
    """Batch: {"latents": (B, C, T, H, W), "prompts", "rows", "index"}."""

    def __init__(self, beta: float = 100.0, instance_weight: float = 1.0, state_weight: float = 1.0,
                 motion_weight: float = 1.0, semantic_weight: float = 1.0, fm_weight: float = 0.0,
                 lora_rank: int = 16, lora_alpha: float = 16.0, loser_group: str = "physical", loser_seed: int = 0,
                 t_schedule: str = "model"):
        super().__init__()
        check_schedule("physhpo", 0.0, t_schedule)
        self.weights = dict(zip(LEVELS, (instance_weight, state_weight, motion_weight, semantic_weight)))
        if beta <= 0 or min(self.weights.values()) < 0 or not any(self.weights.values()):
            raise ValueError(f"method physhpo: beta must be > 0 and the level weights >= 0, one of them > 0. "
                             f"Got beta {beta}, weights {self.weights}.")
        self.beta, self.fm_weight, self.t_schedule = beta, fm_weight, t_schedule
        self.lora = LoraSpec(rank=lora_rank, alpha=lora_alpha)
        self.loser_group, self.loser_seed = loser_group, loser_seed

    def setup(self, model, data) -> None:
        add_lora(model.backbone, self.lora)
        self.losers, self.loser_kinds = data.loser_latents(model, self.loser_seed, self.loser_group)
        self.wrong_prompts = semantic_losers(data.prompts, data.perturbed_prompts(), self.loser_seed)

    def finish(self, model, data) -> None:
        merge_lora(model.backbone)

    def forward(self, model, batch: dict) -> dict[str, torch.Tensor]:
        x_w, idx = batch["latents"], batch["index"]
        x_l = self.losers[idx].to(x_w)
        b = x_w.shape[0]
        eps, t = torch.randn_like(x_w), sample_t(b, self.t_schedule, times=model.times).to(x_w.device)  # shared by each pair
        clips, prompts = [x_w, x_l], batch["prompts"] * 2  # winner, loser under the prompt
        if self.weights["semantic"] > 0:  # and the winner under the prompt it does not match
            clips.append(x_w)
            prompts = prompts + [self.wrong_prompts[i] for i in idx.tolist()]
        x0 = torch.cat(clips)  # (kB, C, T, H, W): one forward pass for every member of every pair
        noise, tt = eps.repeat(len(clips), 1, 1, 1, 1), t.repeat(len(clips))
        x, u, text = interpolate(x0, noise, tt), noise - x0, encode_prompts(model, prompts, batch)
        err = (model(x, tt, text)[0] - u).split(b)  # (w, l[, w under the wrong prompt]), each (B, C, T, H, W)
        with torch.no_grad(), lora_disabled(model.backbone):
            ref = (model(x, tt, text)[0] - u).split(b)
        terms = {}
        for level, weight in self.weights.items():
            if weight > 0:
                pair = (err[0], err[2], ref[0], ref[2]) if level == "semantic" else (err[0], err[1], ref[0], ref[1])
                for name, value in flow_dpo_loss(*pair, beta=self.beta, level=level).items():
                    terms[f"{level}_{name}"] = value
        fm = err[0].pow(2).mean()
        loss = sum(w * terms[f"{lv}_loss"] for lv, w in self.weights.items() if w > 0) + self.fm_weight * fm
        return {"loss": loss, "fm": fm.detach(), **{k: v.detach() for k, v in terms.items()}}


def semantic_losers(prompts: list[str], perturbed: list[str | None], seed: int) -> list[str]:
    """Per row, the prompt its video does not match: its physics-perturbed prompt, or else the prompt of
    another row with a different prompt, drawn from ``seed``."""
    rng = random.Random(seed)
    if None in perturbed and len(set(prompts)) < 2:
        raise ValueError("method physhpo, semantic level: rows without perturbed prompts need at least two distinct prompts")
    out = []
    for prompt, wrong in zip(prompts, perturbed):
        if wrong is not None:
            out.append(wrong)
            continue
        other = rng.choice(prompts)
        while other == prompt:
            other = rng.choice(prompts)
        out.append(other)
    return out

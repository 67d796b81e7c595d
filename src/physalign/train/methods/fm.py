"""Plain flow matching (rectified flow): the base model's objective and the SFT baseline.

    t ~ p(t),  eps ~ N(0, I),  x_t = (1 - t) x0 + t eps,  L_FM = mean ||v_theta(x_t, t, c) - (eps - x0)||^2

p(t) is the model's own training-time distribution (``t_schedule: model``, :mod:`physalign.models.times`:
logit-normal for the world model, shifted uniform for Wan 2.1, CogVideoX's DDPM timesteps), or "uniform" /
"logit_normal" draws mapped by the model (Wan's shift).
with the prompt c replaced by "" with probability ``cfg_dropout`` (so the model also learns the
unconditional velocity that classifier-free guidance needs).
"""

from __future__ import annotations

import torch

from physalign.models.interface import TextEmbedding
from physalign.models.times import DRAWS, FlowTimes, training_times
from physalign.objectives import flow_matching_loss, interpolate
from physalign.train.methods import Method, register

T_SCHEDULES = ("model", *DRAWS)


def sample_t(batch: int, schedule: str, generator: torch.Generator | None = None, times=FlowTimes()) -> torch.Tensor:
    """Training times (B,) in (0, 1) of a model whose times are ``times`` (``model.times``): its own
    distribution for ``schedule`` "model", else "uniform" or "logit_normal" (sigmoid of N(0, 1), SD3's: more
    weight on the middle times) mapped by the model."""
    if schedule not in T_SCHEDULES:
        raise ValueError(f"t_schedule must be one of {T_SCHEDULES}. Got {schedule!r}.")
    return training_times(times, batch, schedule, generator)


def drop_prompts(prompts: list[str], p: float, generator: torch.Generator | None = None) -> list[str]:
    """Replace each prompt by "" with probability p (classifier-free guidance training)."""
    keep = torch.rand(len(prompts), generator=generator) >= p
    return [q if k else "" for q, k in zip(prompts, keep.tolist())]


def encode_prompts(model, prompts: list[str], batch: dict | None = None) -> TextEmbedding:
    """``model.encode_text(prompts)`` (B, L, D), with the embeddings a batch carries taken from it: a
    precomputed source serves ``text_hidden`` / ``text_mask`` (B, L, D) / (B, L) of ``batch["prompts"]`` and
    ``empty_text_hidden`` / ``empty_text_mask`` (1, L, D) / (1, L) of "" (the embeddings are per prompt: every
    model pads text to a fixed length). Other prompts, and every prompt of a world batch, are encoded now."""
    if batch is None or "text_hidden" not in batch:
        return model.encode_text(prompts)
    known = {p: TextEmbedding(batch["text_hidden"][i : i + 1], batch["text_mask"][i : i + 1])
             for i, p in enumerate(batch["prompts"])}
    known[""] = TextEmbedding(batch["empty_text_hidden"], batch["empty_text_mask"])
    fresh = list(dict.fromkeys(p for p in prompts if p not in known))  # e.g. perturbed prompts
    if fresh:
        encoded = model.encode_text(fresh)
        known |= {p: encoded[i : i + 1] for i, p in enumerate(fresh)}
    return TextEmbedding.cat([known[p] for p in prompts])


def noisy_velocity(model, x0: torch.Tensor, prompts: list[str], cfg_dropout: float, t_schedule: str,
                   taps=(), eps: torch.Tensor | None = None, t: torch.Tensor | None = None, batch: dict | None = None):
    """The model's velocity on the rectified-flow path at random times (shared by every method).

    x0: (B, C, T, H, W); prompts dropped to "" with probability ``cfg_dropout``, encoded by
    :func:`encode_prompts` (with ``batch``'s precomputed embeddings, if any).
    Returns (v, eps, t, features): v and eps like x0, t (B,), features {block: (B, F, H, W, D)} for ``taps``.
    """
    eps = torch.randn_like(x0) if eps is None else eps
    t = sample_t(x0.shape[0], t_schedule, times=model.times).to(x0.device) if t is None else t
    text = encode_prompts(model, drop_prompts(prompts, cfg_dropout), batch)
    v, features = model(interpolate(x0, eps, t), t, text, taps=taps)
    return v, eps, t, features


def per_sample_draws(batch: dict, like: torch.Tensor, t_schedule: str, cfg_dropout: float, times=FlowTimes()):
    """eps (like ``like``), t (B,) and prompt-keep flags (B,) drawn per sample from a generator seeded by
    (``batch["seed"]``, ``batch["step"]``, the row index): the same draws however a global batch is split
    across processes, so a multi-process run reproduces a single-process one exactly."""
    eps, t, keep = [], [], []
    for i in batch["index"].tolist():
        g = torch.Generator().manual_seed(hash_seed(batch["seed"], batch["step"], i))
        eps.append(torch.randn(like.shape[1:], generator=g))
        t.append(sample_t(1, t_schedule, g, times))
        keep.append(bool(torch.rand(1, generator=g) >= cfg_dropout))
    return torch.stack(eps).to(like), torch.cat(t).to(like.device), keep


def hash_seed(*parts: int) -> int:
    return int(torch.tensor(parts, dtype=torch.int64).mul(torch.tensor([1_000_003, 10_007, 1])[: len(parts)]).sum()) % (2**62)


def check_schedule(name: str, cfg_dropout: float, t_schedule: str) -> None:
    if t_schedule not in T_SCHEDULES or not 0.0 <= cfg_dropout <= 1.0:
        raise ValueError(f"method {name}: t_schedule must be one of {T_SCHEDULES} and 0 <= cfg_dropout <= 1. "
                         f"Got {t_schedule!r}, {cfg_dropout}.")


@register("fm")
class FlowMatching(Method):
    """L = L_FM on the batch's latents. Batch: {"latents": (B, C, T, H, W), "prompts": list[str]}."""

    def __init__(self, cfg_dropout: float = 0.1, t_schedule: str = "model", per_sample_noise: bool = False):
        super().__init__()
        check_schedule("fm", cfg_dropout, t_schedule)
        self.cfg_dropout, self.t_schedule, self.per_sample_noise = cfg_dropout, t_schedule, per_sample_noise

    def forward(self, model, batch: dict) -> dict[str, torch.Tensor]:
        x0 = batch["latents"]  # (B, C, T, H, W)
        if self.per_sample_noise:  # draws that do not depend on the batch's split over processes
            eps, t, keep = per_sample_draws(batch, x0, self.t_schedule, self.cfg_dropout, model.times)
            prompts = [p if k else "" for p, k in zip(batch["prompts"], keep)]
            v, eps, _, _ = noisy_velocity(model, x0, prompts, 0.0, self.t_schedule, eps=eps, t=t, batch=batch)
        else:
            v, eps, _, _ = noisy_velocity(model, x0, batch["prompts"], self.cfg_dropout, self.t_schedule, batch=batch)
        loss = flow_matching_loss(v, x0, eps)
        return {"loss": loss, "fm": loss.detach()}

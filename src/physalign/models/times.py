"""Each model's training-time distribution and sampling grid, in physalign's rectified-flow time t
(``x_t = (1 - t) x0 + t eps``; t = 1 is noise).

A released model was trained on one distribution of noise levels and is sampled on one grid; post-training
it on another spends its steps where the model never learnt much. ``VideoModel.times`` says which:

- :class:`FlowTimes` (flow models): ``t = shift(u) = s u / (1 + (s - 1) u)`` with ``u`` drawn uniform or
  logit-normal, and the sampling grid ``shift(linspace(1, 0, N + 1))``. Wan 2.1 has ``s`` = the scheduler
  config's ``flow_shift`` (3 at 480p, 5 at 720p) and uniform ``u``, as diffusers' flow-matching trainers
  (``FlowMatchEulerDiscreteScheduler(shift=s)``, uniform index weighting); at s = 3, 43% of the training draws
  and 13 of 50 sampling steps lie above t = 0.8 and t = 0.9, against 20% and 5 unshifted. The world model
  keeps s = 1 and logit-normal ``u`` (SD3's default), as its base was trained.
- :class:`DDPMTimes` (CogVideoX): integer DDPM timesteps k, uniform over the scheduler's K, each at the flow
  time of the same signal-to-noise ratio, ``t_k = b_k / (a_k + b_k)`` (``a_k = sqrt(abar_k)``,
  ``b_k = sqrt(1 - abar_k)``); the sampling grid is the scheduler's own inference timesteps mapped so, then 0.

A method's ``t_schedule`` picks the model's own distribution (``"model"``, the default) or draws ``u`` itself
(``"uniform"``, ``"logit_normal"``), which the model then maps (:meth:`warp`: the shift of a flow model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

DRAWS = ("uniform", "logit_normal")


def shift_times(u: torch.Tensor, shift: float) -> torch.Tensor:
    """``s u / (1 + (s - 1) u)``: the flow shift (SD3, Wan), increasing, fixing 0 and 1; s > 1 moves times
    towards the noise. s = 1 returns ``u`` itself."""
    if shift <= 0:
        raise ValueError(f"flow shift must be > 0. Got {shift}.")
    return u if shift == 1.0 else shift * u / (1 + (shift - 1) * u)


def draw(n: int, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) draws in (0, 1): "uniform", or "logit_normal" = sigmoid of N(0, 1) (weight on the middle times)."""
    if kind == "uniform":
        return torch.rand(n, generator=generator)
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    raise ValueError(f"time draw must be one of {DRAWS}. Got {kind!r}.")


@dataclass(frozen=True)
class FlowTimes:
    """A flow model's times: ``shift(u)``, ``u`` from ``draw``; grid ``shift(linspace(1, 0, N + 1))``."""

    shift: float = 1.0
    draw: str = "logit_normal"

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.warp(draw(n, self.draw, generator))

    def warp(self, u: torch.Tensor) -> torch.Tensor:
        return shift_times(u, self.shift)

    def grid(self, steps: int) -> torch.Tensor:
        """(steps + 1,) times from 1 down to 0."""
        return self.warp(torch.linspace(1.0, 0.0, steps + 1))


def ddpm_flow_times(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The rectified-flow time of each DDPM timestep k: ``t_k = b_k / (a_k + b_k)`` (K,), increasing in k."""
    a, b = alphas_cumprod.double().sqrt(), (1 - alphas_cumprod.double()).sqrt()
    return (b / (a + b)).float()


@dataclass(frozen=True)
class DDPMTimes:
    """A DDPM model's times: k uniform over its K training timesteps, at ``t_k``; the grid is
    ``timesteps(steps)`` (the scheduler's inference timesteps, decreasing) at their ``t_k``, then 0."""

    alphas_cumprod: torch.Tensor  # (K,)
    timesteps: Callable[[int], torch.Tensor]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.randint(len(self.alphas_cumprod), (n,), generator=generator)
        return ddpm_flow_times(self.alphas_cumprod)[k]

    def warp(self, u: torch.Tensor) -> torch.Tensor:
        return u  # the v-to-velocity mapping takes any continuous t

    def grid(self, steps: int) -> torch.Tensor:
        ks = self.timesteps(steps).long()
        return torch.cat([ddpm_flow_times(self.alphas_cumprod)[ks], torch.zeros(1)])


def training_times(times, n: int, schedule: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) training times: the model's own distribution (``schedule`` "model") or ``schedule``'s draws mapped
    by the model (``times.warp``)."""
    return times.sample(n, generator) if schedule == "model" else times.warp(draw(n, schedule, generator))

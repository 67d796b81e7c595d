"""Exponential moving average of the trained parameters: ``shadow <- d * shadow + (1 - d) * param`` after
every optimiser step. The exported model carries the averaged weights; checkpoints keep both."""

from __future__ import annotations

import contextlib

import torch


def trainable_parameters(model: torch.nn.Module, method: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Every trainable parameter of the model and the method, under the names the optimiser, the EMA and the
    checkpoints use: ``model.<name>`` and ``method.<name>``."""
    named = {f"model.{k}": p for k, p in model.named_parameters() if p.requires_grad}
    return named | {f"method.{k}": p for k, p in method.named_parameters() if p.requires_grad}


UPDATES = "_updates"  # the update count, kept with the shadow in a checkpoint when the decay warms up


class EMA:
    """``warmup``: the decay of update ``n`` (from 0) is ``min(decay, (1 + n) / (10 + n))``, so over a run
    of a few hundred steps the average follows the weights rather than the ones the run started from (with
    0.99 from the start, 30 steps would leave 74% of the starting weights in it)."""

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float, warmup: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"optim.ema_decay must be in (0, 1), or 0 for no EMA. Got {decay}.")
        self.params, self.decay, self.warmup, self.updates = params, decay, warmup, 0
        self.shadow = {k: p.detach().clone() for k, p in params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        for k, p in self.params.items():
            self.shadow[k].lerp_(p.detach(), 1.0 - decay)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow) | ({UPDATES: torch.tensor([self.updates], dtype=torch.int64)} if self.warmup else {})

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(tensors))
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {missing[:3]}")
        if self.warmup and UPDATES not in tensors:
            raise KeyError(f"EMA state lacks its update count {UPDATES!r} (saved without optim.ema_warmup)")
        self.updates = int(tensors[UPDATES].item()) if self.warmup else 0
        self.shadow = {k: tensors[k].clone() for k in self.shadow}

    def rebind(self, params: dict[str, torch.nn.Parameter], shadow: dict[str, torch.Tensor]) -> None:
        """Follow the parameters to new tensors (a sharded model made whole), with the shadow to match."""
        self.params = {k: params[k] for k in self.params}
        self.shadow = {k: shadow[k] for k in self.params}

    @contextlib.contextmanager
    def applied(self):
        """Within the block, the parameters hold the EMA weights; restored afterwards."""
        saved = {k: p.detach().clone() for k, p in self.params.items()}
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(self.shadow[k])
        try:
            yield
        finally:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(saved[k])


class NoEMA:
    """Stands in when ``optim.ema_decay`` is 0, so the loop needs no branch."""

    def update(self) -> None:
        pass

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def rebind(self, params: dict, shadow: dict) -> None:
        pass

    @contextlib.contextmanager
    def applied(self):
        yield


def build_ema(params: dict[str, torch.nn.Parameter], decay: float, warmup: bool = False) -> EMA | NoEMA:
    return EMA(params, decay, warmup) if decay else NoEMA()

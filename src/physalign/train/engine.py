"""The training engine: accelerate's process state, seen by the loop through a few branch-free calls.

One process (``physalign train``) or many (``accelerate launch --config_file configs/accelerate/ddp.yaml -m
physalign.cli train ...``) run the same loop:

- the global batch of ``train.batch_size`` rows is drawn the same on every rank (``batch_indices``) and each
  rank takes its contiguous share (:meth:`Engine.shard`), so the data a run sees does not depend on the
  number of processes;
- after ``backward`` every trainable gradient is averaged over the ranks (:meth:`Engine.sync_gradients`):
  with equal shares, the mean of the ranks' mean losses is the global batch's mean loss, so the update is the
  single-process update on the global batch. The reduction is explicit rather than a DDP wrapper, so that
  every method's own trainable parts (projectors, LoRA adapters, the DiffPhy fact branch) and its calls of
  the model outside ``forward`` (``encode_text``, ``decode``) are synchronised the same way;
- logged terms are averaged over the ranks; rank 0 writes logs and checkpoints, each rank's random state
  is gathered into the checkpoint so a resumed multi-process run continues exactly;
- ``train.mixed_precision`` ("no", "bf16", "fp16") runs the forward under accelerate's autocast;
- ``train.shard_optimizer`` shards AdamW's state over the ranks (ZeRO stage 1, ``loop.make_optimizer``); its
  state is gathered onto rank 0 for each checkpoint (:meth:`Engine.consolidate`). FSDP and DeepSpeed
  launches are refused with an error (:func:`refuse_wrapping_launches`): parameters and gradients are not
  sharded.
"""

from __future__ import annotations

import contextlib
import os

import torch
from accelerate import Accelerator

from physalign.train.config import ConfigError


# accelerate's launcher sets these for an FSDP or DeepSpeed config file
WRAPPING_LAUNCHES = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


class Engine:
    def __init__(self, mixed_precision: str = "no"):
        refuse_wrapping_launches()
        self.accelerator = Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch of indices (B,) -> (B / world,)."""
        if len(indices) % self.world:
            raise ValueError(f"train.batch_size {len(indices)} must be divisible by the number of processes {self.world}")
        share = len(indices) // self.world
        return indices[self.rank * share : (self.rank + 1) * share]

    def sync_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average every gradient over the ranks (a parameter without a gradient counts as zero)."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(p).clone()
            offset += g.numel()

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each float averaged over the ranks (keys in the same order on every rank)."""
        if self.world == 1:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return dict(zip(values, (t / self.world).tolist()))

    def gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def consolidate(self, opt: torch.optim.Optimizer) -> None:
        """Gather a sharded optimiser's state onto rank 0, which writes the checkpoint (every rank calls
        this; a plain optimiser holds all its state already)."""
        if hasattr(opt, "consolidate_state_dict"):
            opt.consolidate_state_dict(to=0)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def autocast(self):
        return self.accelerator.autocast() if self.accelerator.mixed_precision != "no" else contextlib.nullcontext()


def refuse_wrapping_launches() -> None:
    """A launch with an FSDP or DeepSpeed accelerate config is refused with what to use instead: the engine
    synchronises gradients itself and never hands the model to ``accelerator.prepare``, so the sharding such a
    config asks for would silently not happen."""
    for var, name in WRAPPING_LAUNCHES.items():
        if os.environ.get(var, "").lower() in ("1", "true", "yes"):
            raise ConfigError(
                f"the accelerate config asks for {name} ({var}={os.environ[var]}), which physalign's engine does not "
                "support: it averages gradients itself and does not wrap the model. Launch with "
                "configs/accelerate/ddp.yaml, and add --set train.shard_optimizer=true to shard AdamW's state over "
                "the processes (ZeRO stage 1)")


class LocalEngine(Engine):
    """One process, full precision, no accelerate state: for callers of ``train_step`` outside ``train``
    (the bench's step timings, tests)."""

    def __init__(self):
        self.accelerator = None

    rank, world, is_main, device = 0, 1, True, torch.device("cpu")

    def barrier(self) -> None:
        pass

    def autocast(self):
        return contextlib.nullcontext()

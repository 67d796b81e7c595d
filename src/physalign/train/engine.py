"""The training engine: accelerate's process state, seen by the loop through a few branch-free calls.

One process (``physalign train``) or many (``accelerate launch --config_file configs/accelerate/ddp.yaml -m
physalign.cli train ...``) run the same loop, on the engine the launch asks for
(:func:`physalign.train.loop.make_engine`):

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
- ``train.shard_optimizer`` shards AdamW's state over the ranks (ZeRO stage 1, ``loop.make_optimizer``);
- an accelerate FSDP config with ``fsdp_version: 2`` (``configs/accelerate/fsdp.yaml``) selects
  :class:`ShardedEngine`: torch's ``fully_shard`` (FSDP2) on every backbone block and on the backbone, so its
  parameters, gradients and AdamW moments are split over the ranks (ZeRO stage 3 for the backbone). Parts
  outside the backbone (text encoder, a method's projector) stay whole and are averaged as above;
- an accelerate DeepSpeed config (``configs/accelerate/deepspeed.yaml``, ZeRO stage 1 or 2) selects the
  DeepSpeed engine of :mod:`physalign.train.zero`, whose :meth:`Engine.update` is DeepSpeed's backward and step;
- whatever is sharded is gathered whole for each checkpoint (:meth:`Engine.gathered`), so a checkpoint is an
  ordinary single-process one: any number of processes, under any engine, can resume it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import warnings

import torch
from accelerate import Accelerator

from physalign.models.parts import retie
from physalign.train.config import ConfigError
from physalign.train.ema import trainable_parameters


def native_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls and convolutions natively (oneDNN's check: avx512_bf16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_emulated_bf16(mixed_precision: str) -> None:
    """bf16 on a CPU without bf16 instructions is emulated: measured 9-30x slower matmuls than fp32 on an AVX2
    CPU (AMD EPYC, docs/speed.md). Say so rather than let a run crawl."""
    if mixed_precision == "bf16" and not torch.cuda.is_available() and not native_bf16():
        warnings.warn(f"train.mixed_precision=bf16 on a CPU without bf16 instructions (torch capability "
                      f"{torch.backends.cpu.get_cpu_capability()}): bf16 is emulated there and much slower than fp32 "
                      "(docs/speed.md); set train.mixed_precision=no", stacklevel=3)


def env_flag(name: str) -> bool:
    """Whether the environment variable ``name`` is set to a true value (accelerate's launcher's flags)."""
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


class Engine:
    """Data parallel with explicit gradient averaging (module docstring)."""

    # every rank must run a forward of a sharded model; a whole model validates on the main process alone
    validates_everywhere = False

    def __init__(self, mixed_precision: str = "no"):
        refuse_wrapping_launches()
        warn_emulated_bf16(mixed_precision)
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
        """Average every gradient over the ranks, in place, one bucket of at most :data:`BUCKET_BYTES` at a time
        (a parameter without a gradient counts as zero): the extra memory is one bucket, not a copy of every
        gradient (DDP's default bucket size)."""
        if self.world == 1 or not params:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

        def average(flat: torch.Tensor) -> None:
            torch.distributed.all_reduce(flat)
            flat /= self.world

        in_buckets([p.grad for p in params], average)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each float averaged over the ranks (keys in the same order on every rank). The tensor lives on the
        engine's device: NCCL has no CPU backend, so a CPU tensor would fail every GPU launch's first step."""
        if self.world == 1:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return dict(zip(values, (t / self.world).tolist()))

    @property
    def reads_weights(self) -> bool:
        """Whether this process reads a model's weights from disk: process 0 only, the others build the model
        empty (:func:`physalign.models.parts.empty_weights`) and receive it in :meth:`share`."""
        return self.is_main

    def share(self, model: torch.nn.Module, empty: bool) -> torch.nn.Module:
        """``model`` on this engine's device, equal to process 0's on every process: a process that built it
        ``empty`` (on the meta device) allocates it there, and every parameter and buffer is broadcast from
        process 0 in buckets of at most :data:`BUCKET_BYTES`. So the weights are read from disk and held in host
        memory by one process, not by each. ``empty`` is False everywhere for a model every process built
        itself (a new model, initialised from the same seed): nothing is sent."""
        if self.world == 1 or not self.any_rank(empty):
            return model.to(self.device)
        if empty:
            model.to_empty(device=self.device)
            retie(model)
        else:
            model.to(self.device)
        def from_first(flat: torch.Tensor) -> None:
            torch.distributed.broadcast(flat.view(torch.uint8) if flat.dtype == torch.bool else flat, src=0)  # gloo: no bool

        with torch.no_grad():
            in_buckets(list(itertools.chain(model.parameters(), model.buffers())), from_first)
        return model

    def any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` holds on some rank (the same answer on every rank)."""
        return self.mean({"flag": float(flag)})["flag"] > 0

    def gather(self, obj) -> list:
        """[obj of rank 0, obj of rank 1, ...] on every rank."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def prepare(self, model) -> None:
        """Make ``model`` ready for this engine, after the method's ``setup`` and before the optimiser is
        built (nothing to do for a whole model)."""

    def wrap(self, state, cfg):
        """``state`` ready for this engine's :meth:`update`, called once a resume has restored it (here: as
        it is; the DeepSpeed engine hands the optimiser to DeepSpeed)."""
        return state

    def update(self, state, loss: torch.Tensor, max_norm: float) -> float:
        """Backward ``loss``, average and clip the gradients to ``max_norm``, step the optimiser; return the
        gradient norm before clipping. A norm that is not finite on some rank steps nothing and is returned as
        ``inf`` on every rank."""
        loss.backward()
        params = optimised_parameters(state.opt)
        self.sync_gradients(params)
        norm = self.clip_gradients(params, max_norm)
        if self.any_rank(not math.isfinite(norm)):
            state.opt.zero_grad(set_to_none=True)
            return math.inf
        state.opt.step()
        return norm

    def load_optimizer(self, opt: torch.optim.Optimizer, whole: dict) -> None:
        """Load a checkpoint's optimiser state (whole tensors, indexed by parameter) into ``opt``."""
        params = optimised_parameters(opt)
        whole = {**whole, "state": {i: {k: self.place(v, params[i] if i < len(params) else None) if torch.is_tensor(v)
                                        else v for k, v in entry.items()} for i, entry in whole["state"].items()}}
        opt.load_state_dict(whole)

    def clip_gradients(self, params: list[torch.nn.Parameter], max_norm: float) -> float:
        """Scale the gradients to a total 2-norm of at most ``max_norm``; return the norm before scaling."""
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def place(self, tensor: torch.Tensor, like: torch.Tensor | None) -> torch.Tensor:
        """A whole tensor read from a checkpoint, laid out as ``like`` (a parameter or its state) is."""
        return tensor

    @contextlib.contextmanager
    def gathered(self, state):
        """Within the block, ``state`` with every sharded part whole, for the main process to write a
        checkpoint (every rank enters it). A ZeRO-1 optimiser's state is gathered onto rank 0."""
        if hasattr(state.opt, "consolidate_state_dict"):
            state.opt.consolidate_state_dict(to=0)
        yield state

    def release(self, state) -> None:
        """After the last step: make the model whole for export (every rank calls it)."""

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def autocast(self):
        return self.accelerator.autocast() if self.accelerator.mixed_precision != "no" else contextlib.nullcontext()


BUCKET_BYTES = 25 * 2**20


def in_buckets(tensors: list[torch.Tensor], collective) -> None:
    """Run ``collective`` (in place) on ``tensors`` flattened into buckets of :data:`BUCKET_BYTES` at most
    (:func:`gradient_buckets`), each bucket's result copied back: one bucket of extra memory at a time."""
    for bucket in gradient_buckets(tensors, BUCKET_BYTES):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        collective(flat)
        for t, part in zip(bucket, flat.split([t.numel() for t in bucket])):
            t.copy_(part.view_as(t))


def gradient_buckets(grads: list[torch.Tensor], limit: int) -> list[list[torch.Tensor]]:
    """``grads`` in order, cut into runs of one dtype and device of at most ``limit`` bytes each (a larger
    gradient is a bucket of its own)."""
    buckets, size = [], 0
    for g in grads:
        nbytes = g.numel() * g.element_size()
        if not buckets or size + nbytes > limit or (g.dtype, g.device) != (buckets[-1][0].dtype, buckets[-1][0].device):
            buckets.append([])
            size = 0
        buckets[-1].append(g)
        size += nbytes
    return buckets


def refuse_wrapping_launches() -> None:
    """An FSDP launch other than FSDP2 is refused with what to use instead: the engine synchronises gradients
    itself and never hands the model to ``accelerator.prepare``, so the sharding FSDP1 asks for would silently
    not happen."""
    if env_flag("ACCELERATE_USE_FSDP") and os.environ.get("FSDP_VERSION", "1") != "2":
        raise ConfigError(
            f"the accelerate config asks for FSDP version {os.environ.get('FSDP_VERSION', '1')}; physalign shards "
            "with FSDP2 only: set fsdp_config.fsdp_version: 2 (as configs/accelerate/fsdp.yaml does)")


def _is_sharded(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _whole(t):
    return t.full_tensor() if torch.is_tensor(t) and _is_sharded(t) else t


def _whole_values(d: dict) -> dict:
    return {k: _whole(v) for k, v in d.items()}


def _whole_on(t, main: bool, dropped=None):
    """A sharded tensor gathered whole (every process takes part), kept on the CPU by the main process and
    dropped at once by the others (which get ``dropped``); anything else as it is."""
    if not (torch.is_tensor(t) and _is_sharded(t)):
        return t
    whole = t.full_tensor()
    return whole.cpu() if main else dropped


class WholeState:
    """Stands in for an optimiser or an EMA in a gathered state: ``state_dict()`` returns the whole one."""

    def __init__(self, state: dict):
        self._state = state

    def state_dict(self) -> dict:
        return self._state


class ShardedEngine(Engine):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) on the backbone's blocks and the backbone: each rank
    holds 1/world of their parameters, gradients (reduce-scattered, i.e. averaged, in backward) and AdamW
    moments, and all-gathers a block's parameters for its forward and backward. ``FSDP_RESHARD_AFTER_FORWARD``
    (accelerate's ``fsdp_reshard_after_forward``, default true) frees them again after the forward; the other
    FSDP options of an accelerate config are not read (the wrapping is fixed: each block, then the backbone).
    On a single process this is the plain engine."""

    validates_everywhere = True

    def prepare(self, model) -> None:
        if self.world == 1:
            return
        from torch.distributed.fsdp import fully_shard

        reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() != "false"
        policy = self.precision_policy()
        for block in model.backbone_blocks:
            fully_shard(block, reshard_after_forward=reshard, mp_policy=policy)
        fully_shard(model.backbone, reshard_after_forward=reshard, mp_policy=policy)
        if self.is_main:
            params = list(model.backbone.parameters())
            mine, total = sum(p.to_local().numel() for p in params), sum(p.numel() for p in params)
            print(f"FSDP2: the backbone's {total:,} parameters sharded over {self.world} processes; rank 0 holds "
                  f"{mine:,} ({mine / total:.0%}), and its gradients and AdamW moments to match; all-gathered in "
                  f"{policy.param_dtype or 'their own dtype'}, gradients reduced in {policy.reduce_dtype or 'theirs'}",
                  flush=True)

    def precision_policy(self):
        """Under bf16 / fp16 autocast the blocks all-gather their parameters in that dtype and reduce-scatter
        gradients in float32: the matmuls read that dtype anyway, and gathering float32 masters would double
        the traffic. Otherwise the parameters' own dtype both ways."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.accelerator.mixed_precision)
        return MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32 if low else None)

    def sync_gradients(self, params: list[torch.nn.Parameter]) -> None:
        super().sync_gradients([p for p in params if not _is_sharded(p)])  # FSDP averaged the sharded ones

    def clip_gradients(self, params: list[torch.nn.Parameter], max_norm: float) -> float:
        """As ``clip_grad_norm_``, over sharded and whole gradients together (torch's own helper cannot mix
        them): the total norm is the root of the sum of both groups' squared norms."""
        grads = [p.grad for p in params if p.grad is not None]
        groups = [[g for g in grads if _is_sharded(g)], [g for g in grads if not _is_sharded(g)]]
        squares = [float(_whole(torch.nn.utils.get_total_norm(g))) ** 2 for g in groups if g]
        total = math.sqrt(sum(squares))
        coef = max_norm / (total + 1e-6)
        if coef < 1:
            with torch.no_grad():
                for g in grads:
                    g.mul_(coef)
        return total

    def place(self, tensor: torch.Tensor, like: torch.Tensor | None) -> torch.Tensor:
        if like is None or not _is_sharded(like) or tensor.shape != like.shape:
            return tensor
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(tensor.to(like.dtype), like.device_mesh, like.placements, src_data_rank=None)

    @contextlib.contextmanager
    def gathered(self, state):
        """Every sharded tensor gathered whole one at a time (a collective) and kept, on the CPU, by the main
        process alone, which writes the checkpoint: the GPU holds one whole tensor at a time, and the other
        processes keep nothing (an empty placeholder, put back on leaving)."""
        main = self.is_main
        opt = state.opt.state_dict()
        opt = {**opt, "state": {i: {k: _whole_on(v, main) for k, v in entry.items()} for i, entry in opt["state"].items()}}
        ema = {k: _whole_on(v, main) for k, v in state.ema.state_dict().items()}
        swapped = _make_whole(state.model, lambda p: _whole_on(p, main, dropped=torch.empty(0)))
        try:
            yield dataclasses.replace(state, opt=WholeState(opt), ema=WholeState(ema))
        finally:
            put_back(swapped)

    def release(self, state) -> None:
        """Swap every sharded parameter for its whole tensor for good and re-point the EMA at them."""
        ema = _whole_values(state.ema.state_dict())
        _make_whole(state.model)
        state.ema.rebind(trainable_parameters(state.model, state.method), ema)


def _make_whole(model: torch.nn.Module, make=lambda p: p.full_tensor()) -> list[tuple[torch.nn.Module, str, torch.nn.Parameter]]:
    """Replace each sharded parameter ``p`` of ``model`` by ``make(p)``, by default its whole tensor (a
    collective: every rank calls it); return (module, name, the sharded parameter) to put back. Modules a
    forward left gathered (one without backward, e.g. validation, under ``reshard_after_forward=False``) are
    resharded first."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return swap_parameters(model, _is_sharded, make)


def swap_parameters(model: torch.nn.Module, which, make) -> list[tuple[torch.nn.Module, str, torch.nn.Parameter]]:
    """Replace each parameter ``p`` of ``model`` with ``which(p)`` by a new parameter holding ``make(p)`` (one
    for a parameter that several modules share, e.g. tied embeddings); return (module, name, the old
    parameter) to put back."""
    swapped, new = [], {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and which(param):
                if id(param) not in new:
                    new[id(param)] = torch.nn.Parameter(make(param), requires_grad=param.requires_grad)
                module._parameters[name] = new[id(param)]
                swapped.append((module, name, param))
    return swapped


def put_back(swapped: list[tuple[torch.nn.Module, str, torch.nn.Parameter]]) -> None:
    """Undo :func:`swap_parameters`."""
    for module, name, param in swapped:
        module._parameters[name] = param


def optimised_parameters(opt: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """The parameters ``opt`` steps, in its state's order."""
    return [p for group in opt.param_groups for p in group["params"]]


class LocalEngine(Engine):
    """One process, no accelerate state: for callers of ``train_step`` outside ``train`` (the bench's step
    timings, tests); ``mixed_precision`` "bf16" / "fp16" runs the forward under torch's CPU autocast, as
    accelerate's does in ``train``."""

    LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, mixed_precision: str = "no"):
        if mixed_precision not in ("no", *self.LOW):
            raise ConfigError(f"train.mixed_precision must be one of no, bf16, fp16. Got {mixed_precision!r}.")
        warn_emulated_bf16(mixed_precision)
        self.accelerator, self.low = None, self.LOW.get(mixed_precision)

    rank, world, is_main, device = 0, 1, True, torch.device("cpu")

    def barrier(self) -> None:
        pass

    def autocast(self):
        return torch.autocast("cpu", dtype=self.low) if self.low else contextlib.nullcontext()

"""DeepSpeed ZeRO (stage 1 or 2) as a training engine: ``accelerate launch --config_file
configs/accelerate/deepspeed.yaml -m physalign.cli train ...``.

The loop's contract is kept (:class:`physalign.train.engine.Engine`): the method's forward runs as in any other
engine, and :meth:`DeepSpeedEngine.update` hands the loss to DeepSpeed's ``backward`` and ``step``. With stage
2, each process keeps the averaged gradients, fp32 master weights and AdamW moments of its 1/world share of
the trainable parameters (``DeepSpeedZeroOptimizer``: the gradients are reduce-scattered in buckets during
backward); with stage 1 only the master weights and moments are split. The model's weights stay whole on every
process (they are all-gathered after each step), so validation runs on the main process alone and the
model is exported as is.

What is taken from the launch's DeepSpeed config (an accelerate config's ``deepspeed_config`` keys, or the
JSON file it names in ``deepspeed_config_file``): the ZeRO stage and the ``zero_optimization`` options
(bucket sizes, ``overlap_comm``, ...). physalign fills in the rest from its own config:
``train_batch_size = train.batch_size`` (the global batch, split evenly: no gradient accumulation),
``gradient_clipping = optim.grad_clip``; the optimiser is the run's own torch AdamW and the learning rate
follows the run's schedule. Refused with an error that says what to do instead: stage 0 (``ddp.yaml``),
stage 3 (``fsdp.yaml``), optimiser or parameter offload, DeepSpeed's own fp16/bf16 (``train.mixed_precision``
runs the forward under autocast with fp32 master weights), and values in the file that contradict the
run's config.

Checkpoints are whole, as with every engine: the AdamW moments are gathered from the shards
(``deepspeed.utils.safe_get_full_optimizer_state``) into the state a single-process AdamW would hold, so any
engine and any number of processes resume them; on resume the whole state is split back into this process's
share (``safe_set_full_optimizer_state``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os

import torch

from physalign.train.config import ConfigError
from physalign.train.ema import trainable_parameters
from physalign.train.engine import Engine, WholeState, put_back, swap_parameters
from physalign.train.rng import restore_rng_state, rng_state

# physalign sets these itself; a DeepSpeed config may leave them out or "auto", or repeat the same value
FILLED = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")


def _import_deepspeed():
    try:
        import deepspeed
    except ImportError:
        raise ConfigError("the accelerate config asks for DeepSpeed, which is not installed: "
                          "pip install 'physalign[deepspeed]'") from None
    return deepspeed


def launch_config() -> dict:
    """The DeepSpeed config an ``accelerate launch`` with a DeepSpeed config file asked for (accelerate's
    launcher passes it in ``ACCELERATE_DEEPSPEED_*`` variables, which ``DeepSpeedPlugin`` reads)."""
    from accelerate.utils import DeepSpeedPlugin

    return copy.deepcopy(DeepSpeedPlugin().deepspeed_config)


def check_supported(launch: dict) -> int:
    """The ZeRO stage of ``launch`` (a DeepSpeed config), or a :class:`ConfigError` for what the engine does not
    support (module docstring)."""
    zero = launch.get("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    if stage not in (1, 2):
        instead = "configs/accelerate/fsdp.yaml (FSDP2)" if stage == 3 else "configs/accelerate/ddp.yaml"
        raise ConfigError(f"deepspeed zero_optimization.stage is {stage}; physalign's DeepSpeed engine runs stages "
                          f"1 and 2 only. For stage {stage} use {instead}")
    for part in ("offload_optimizer", "offload_param"):
        device = (zero.get(part) or {}).get("device", "none")
        if device not in (None, "none"):
            raise ConfigError(f"deepspeed zero_optimization.{part}.device is {device!r}; offload is not supported "
                              "(the optimiser is torch's AdamW, not DeepSpeed's CPU Adam): set it to none")
    for precision in ("fp16", "bf16"):
        if (launch.get(precision) or {}).get("enabled") in (True, "true", "auto"):
            raise ConfigError(f"deepspeed {precision}.enabled: physalign keeps fp32 master weights and runs the "
                              f"forward under autocast; drop {precision} from the DeepSpeed config (or set "
                              f"mixed_precision: 'no' in the accelerate config) and pass "
                              f"--set train.mixed_precision={precision}")
    return stage


def deepspeed_config(launch: dict, batch_size: int, world: int, grad_clip: float, shard_optimizer: bool = False) -> dict:
    """``launch`` (a DeepSpeed config) completed for a run of global batch ``batch_size`` on ``world``
    processes with clipping at ``grad_clip`` (0 = none)."""
    check_supported(launch)
    if shard_optimizer:
        raise ConfigError("train.shard_optimizer=true under DeepSpeed: ZeRO already shards the optimiser state; "
                          "drop train.shard_optimizer")
    if batch_size % world:
        raise ConfigError(f"train.batch_size {batch_size} must be divisible by the number of processes {world}")
    ours = {"train_batch_size": batch_size, "train_micro_batch_size_per_gpu": batch_size // world,
            "gradient_accumulation_steps": 1, "gradient_clipping": float(grad_clip)}
    for key in FILLED:
        given = launch.get(key, "auto")
        if given != "auto" and float(given) != float(ours[key]):
            raise ConfigError(f"deepspeed {key} is {given} but the run's config gives {ours[key]} (from "
                              "train.batch_size / optim.grad_clip): set it to auto in the DeepSpeed config")
    return {**launch, **ours, "zero_allow_untested_optimizer": True, "steps_per_print": launch.get("steps_per_print", 2**31)}


@contextlib.contextmanager
def _hidden(var: str):
    """Within the block, the environment lacks ``var``."""
    saved = os.environ.pop(var, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[var] = saved


class DeepSpeedEngine(Engine):
    """ZeRO stage 1/2 by ``deepspeed.initialize`` over the run's trainable parameters (module docstring)."""

    def __init__(self, mixed_precision: str = "no"):
        self.deepspeed = _import_deepspeed()
        self.launch = launch_config()
        self.stage = check_supported(self.launch)  # refused before anything is built
        # accelerate's own DeepSpeed state expects the model to go through accelerator.prepare; physalign drives
        # DeepSpeed itself, so accelerate sets up the processes as for data parallel
        with _hidden("ACCELERATE_USE_DEEPSPEED"):
            super().__init__(mixed_precision)
        self.ds = None

    def wrap(self, state, cfg):
        """Hand the trainable parameters and the run's AdamW (with a resumed run's whole state) to
        ``deepspeed.initialize``; ``state.opt`` becomes the ZeRO optimiser."""
        config = deepspeed_config(self.launch, cfg.train.batch_size, self.world, cfg.optim.grad_clip,
                                  cfg.train.shard_optimizer)
        self.params = list(trainable_parameters(state.model, state.method).values())
        whole = state.opt.state_dict()  # before ZeRO re-points the optimiser at its flat partitions
        self.groups = whole["param_groups"]
        holder = torch.nn.ModuleDict({"model": state.model, "method": state.method})
        rng = rng_state()  # initialize must not move the random streams (exact resume)
        self.ds, opt, _, _ = self.deepspeed.initialize(model=holder, optimizer=state.opt, model_parameters=self.params,
                                                       config=config, dist_init_required=False)
        restore_rng_state(*rng)
        if whole["state"]:
            self._load_whole(opt, whole)
        if self.is_main:
            print(f"DeepSpeed ZeRO stage {self.stage}: the AdamW state of "
                  f"{sum(p.numel() for p in self.params):,} trainable parameters sharded over {self.world} processes",
                  flush=True)
        return type(state)(state.model, state.method, opt, state.sched, state.ema)

    def update(self, state, loss: torch.Tensor, max_norm: float) -> float:
        """DeepSpeed's backward (gradients reduced into each rank's partition) and step (the global norm,
        clipping at the config's ``gradient_clipping``, i.e. ``max_norm``, AdamW on the partition, all-gather of
        the weights). A non-finite norm makes DeepSpeed skip the step on every rank."""
        self.ds.backward(loss)
        self.ds.step()
        return float(self.ds.get_global_grad_norm()) if self.ds.was_step_applied() else math.inf

    def load_optimizer(self, opt, whole: dict) -> None:
        opt.load_state_dict(whole)  # before wrap: the run's plain AdamW, handed to ZeRO by wrap

    def _load_whole(self, opt, whole: dict) -> None:
        """Split a whole AdamW state (indexed by parameter) into the ZeRO optimiser's partitions."""
        from deepspeed.utils import safe_set_full_optimizer_state

        entries = list(whole["state"].values())
        for flat in opt.single_partition_of_fp32_groups:  # the flat fp32 partition each param group became
            opt.optimizer.state[flat] = {k: torch.zeros_like(flat) if torch.is_tensor(v) and v.dim() else
                                         (v.clone() if torch.is_tensor(v) else v) for k, v in entries[0].items()}
        opt._lazy_init_hp_params_optimizer_state()  # link each parameter to its fragment of that state
        for i, param in enumerate(self.params):
            for key, value in whole["state"].get(i, {}).items():
                if torch.is_tensor(value) and value.dim():
                    safe_set_full_optimizer_state(param, value.to(param.device, torch.float32), key)

    def _whole_optimizer(self, opt) -> dict:
        """The state a single-process AdamW over ``self.params`` would hold (a collective). Only the main
        process, which writes the checkpoint, keeps the gathered moments (a CPU copy of them per process would
        cost 8 x 11.4 GB of host RAM for Wan 1.3B on 8 GPUs); the others hold None in their place."""
        from deepspeed.utils import safe_get_full_optimizer_state

        flat = {k: v for s in opt.optimizer.state.values() for k, v in s.items()}  # {} before the first step
        state = {}
        for i, param in enumerate(self.params if flat else []):
            entry = {k: v.clone() for k, v in flat.items() if torch.is_tensor(v) and not v.dim()}  # "step"
            for key in (k for k, v in flat.items() if torch.is_tensor(v) and v.dim()):
                moment = safe_get_full_optimizer_state(param, key)  # every rank takes part in the gather
                entry[key] = moment.cpu() if self.is_main else None
                del moment
            state[i] = entry
        groups = [{**t, **{k: v for k, v in g.items() if k != "params"}} for t, g in zip(self.groups, opt.param_groups)]
        return {"state": state, "param_groups": groups}

    @contextlib.contextmanager
    def gathered(self, state):
        """``state`` with whole AdamW moments and parameters of their own storage, on the main process (the
        only writer); the other processes copy nothing."""
        whole = self._whole_optimizer(state.opt)
        swapped = _own_storage(state) if self.is_main else []
        try:
            yield type(state)(state.model, state.method, WholeState(whole), state.sched, state.ema)
        finally:
            put_back(swapped)

    def release(self, state) -> None:
        """Give every trainable parameter its own storage for good (ZeRO made them views of one flat buffer,
        which safetensors refuses to save) and re-point the EMA at them."""
        ema = dict(state.ema.state_dict())
        _own_storage(state)
        state.ema.rebind(trainable_parameters(state.model, state.method), ema)


def _own_storage(state) -> list:
    """Swap each trainable parameter of the model and the method for a copy with its own storage; return what
    to put back."""
    both = torch.nn.ModuleDict({"model": state.model, "method": state.method})  # one copy of a shared parameter
    return swap_parameters(both, lambda p: p.requires_grad, lambda p: p.detach().clone())


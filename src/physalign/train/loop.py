"""The training loop: model-agnostic and method-agnostic.

It builds the model, the method and the method's data source from the config, and descends the method's
``"loss"``, logging every term the method returns to ``RUN/log.jsonl``. Run folder::

    RUN/config.yaml  RUN/log.jsonl  RUN/tensorboard/  RUN/checkpoints/{step_XXXXXX/, latest}  RUN/model/ (the final model)
    RUN/lora/ (a LoRA method's adapter in the diffusers pipeline format: ``pipe.load_lora_weights(RUN/lora)``)
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from physalign.models.interface import VideoModel, load_model, model_class
from physalign.models.lora import export_pipeline_lora, has_lora
from physalign.models.parts import empty_weights
from physalign.models.sampling import sample
from physalign.files import atomic_folder
from physalign.train.checkpoint import (has_checkpoints, latest_checkpoint, load_checkpoint_model, restore_training_state,
                                         save_checkpoint)
from physalign.train.config import Config, ModelSection, global_batch, save_config
from physalign.train.data import batch_indices, data_source
from physalign.train.ema import build_ema, trainable_parameters
from physalign.train.engine import Engine, LocalEngine, ShardedEngine, env_flag
from physalign.train.methods import Method, build_method
from physalign.train.rng import restore_rng_state, rng_state
from physalign.train.zero import DeepSpeedEngine
from physalign.video import tile, write_gif, write_mp4


class TrainingError(RuntimeError):
    pass


RANK_SEED_STRIDE = 7919  # rank k > 0 draws its noise from seed + k * this


@dataclass
class TrainState:
    """What a step updates and a checkpoint stores."""

    model: VideoModel
    method: Method
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: object  # EMA or NoEMA


def make_engine(mixed_precision: str = "no") -> Engine:
    """The engine the launch asks for: :class:`~physalign.train.engine.ShardedEngine` under an accelerate FSDP
    config, :class:`~physalign.train.zero.DeepSpeedEngine` under a DeepSpeed one (accelerate's launcher sets
    ``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``), else :class:`~physalign.train.engine.Engine`."""
    if env_flag("ACCELERATE_USE_DEEPSPEED"):
        return DeepSpeedEngine(mixed_precision)
    return ShardedEngine(mixed_precision) if env_flag("ACCELERATE_USE_FSDP") else Engine(mixed_precision)


def build_model(section: ModelSection, ckpt: str | Path | None = None, empty: bool = False) -> VideoModel:
    """The model of checkpoint ``ckpt`` (:func:`~physalign.train.checkpoint.load_checkpoint_model`), else
    ``section.init``, else a new ``section.kind``. With ``empty``, a model read from a folder is built on the
    meta device without reading its weights (:func:`~physalign.models.parts.empty_weights`)."""
    try:
        if ckpt:
            with empty_weights(empty):
                model = load_checkpoint_model(ckpt, section.sizes or None)
        elif section.init:
            with empty_weights(empty):
                model = load_model(section.init, section.sizes)
        else:
            model = model_class(section.kind).from_config(section.sizes)
    except (KeyError, ValueError, FileNotFoundError) as err:
        raise TrainingError(f"model section: {err}") from None
    model.set_trainable(section.trainable)
    return model


def build_state(cfg: Config, model: VideoModel, method: Method) -> TrainState:
    named = trainable_parameters(model, method)
    if not named:
        raise TrainingError(f"nothing to train: model.trainable={cfg.model.trainable} and the method has no parameters")
    o = cfg.optim
    opt = make_optimizer(list(named.values()), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                         shard=cfg.train.shard_optimizer)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(o.schedule, o.warmup_steps, cfg.train.steps))
    return TrainState(model, method, opt, sched, build_ema(named, o.ema_decay, o.ema_warmup))


def make_optimizer(params: list[torch.nn.Parameter], shard: bool = False, **adamw) -> torch.optim.Optimizer:
    """AdamW over ``params``; with ``shard`` in a multi-process run, torch's ``ZeroRedundancyOptimizer``
    around it (ZeRO stage 1): process k keeps the moments of its share of the parameters only (about 1/world
    of AdamW's 2 x fp32 state), steps that share with the all-reduced gradients and broadcasts it, so every
    process ends the step with the same weights as unsharded AdamW."""
    dist = torch.distributed
    if shard and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW, **adamw)
    return torch.optim.AdamW(params, **adamw)


SCHEDULES = ("constant", "cosine")


def lr_factor(schedule: str, warmup: int, steps: int):
    """The learning-rate multiplier at each step: linear warm-up over ``warmup`` steps, then 1
    (``constant``) or ``(1 + cos(pi * p)) / 2`` with ``p`` the fraction of the post-warm-up steps done
    (``cosine``, reaching 0 at ``steps``)."""
    if schedule not in SCHEDULES:
        raise TrainingError(f"optim.schedule must be one of {list(SCHEDULES)}. Got {schedule!r}.")
    warmup = max(1, warmup)

    def factor(step: int) -> float:
        if step + 1 < warmup or schedule == "constant":
            return min(1.0, (step + 1) / warmup)
        done = (step + 1 - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def build_run(cfg: Config, ckpt: str | Path | None = None, engine: Engine | None = None) -> tuple[TrainState, object]:
    """Seed, then build the method, the model (from checkpoint ``ckpt`` or the config, on the ``engine``'s device), the data the
    method asks for, the method's own state (``setup``), the engine's wrapping (``prepare``) and the
    optimiser: everything a step needs. Of several processes only the first reads a model's weights; the
    others build it empty and receive it (:meth:`~physalign.train.engine.Engine.share`), then take the first
    one's random state, so the method's setup draws the same everywhere."""
    seed_everything(cfg.train.seed)
    engine = engine or LocalEngine()
    method = build_method(cfg.train.method, cfg.method)  # first: a config mistake fails before any loading
    load_data = data_source(method.data, cfg.data)
    empty = not engine.reads_weights and bool(ckpt or cfg.model.init)
    model = engine.share(build_model(cfg.model, ckpt, empty), empty)
    if engine.world > 1:
        restore_rng_state(*engine.gather(rng_state())[0])
    data = load_data(cfg.data, model)
    method.setup(model, data)
    method.to(engine.device)
    engine.prepare(model)
    return build_state(cfg, model, method), data


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def train(cfg: Config, run: str | Path, resume: bool = False, progress: bool = True, export: str | Path | None = None) -> Path:
    """Train per ``cfg`` in folder ``run`` (continuing from its latest checkpoint if ``resume``); save the
    final model (EMA weights if enabled) to ``export`` or ``run/model`` and return that folder."""
    run = Path(run)
    if not resume and has_checkpoints(run):
        raise TrainingError(f"{run} already holds a run ({run / 'checkpoints'}): pass --resume or another --out")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    engine = make_engine(cfg.train.mixed_precision)
    ckpt = engine.gather(latest_checkpoint(run) if resume and engine.is_main else None)[0]  # verified once
    if resume and ckpt is None:
        raise TrainingError(f"{run}: nothing to resume (no complete checkpoint in {run / 'checkpoints'})")
    cfg.train.batch_size = global_batch(cfg.train, engine.world)  # the config saved with the run says it
    state, data = build_run(cfg, ckpt if resume else None, engine)
    model, method = state.model, state.method
    if engine.rank:  # every rank built the same model; from here on each draws its own noise
        seed_everything(cfg.train.seed + RANK_SEED_STRIDE * engine.rank)
    start = restore_training_state(ckpt, state, engine) if resume else 0
    state = engine.wrap(state, cfg)
    if engine.is_main:
        run.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run / "config.yaml")
        _trim_log(run / "log.jsonl", start)
    engine.barrier()
    _loop(cfg, run, state, data, start, progress and engine.is_main, engine)
    engine.release(state)
    model.eval()
    if engine.is_main and has_lora(model.backbone):  # before finish, which may merge it
        export_pipeline_lora(model.backbone, model.lora_pipeline, run / "lora")
    method.finish(model, data)
    export = Path(export) if export else run / "model"
    if engine.is_main:
        with state.ema.applied(), atomic_folder(export) as folder:  # a kill mid-export leaves no half folder
            model.save_pretrained(folder)
    engine.barrier()
    return export


def _loop(cfg: Config, run: Path, state: TrainState, data, start: int, progress: bool, engine: Engine) -> None:
    t = cfg.train
    bar = tqdm(range(start, t.steps), initial=start, total=t.steps, desc=t.method, disable=not progress)
    logger = RunLogger(run, start, t.tensorboard and engine.is_main, engine.is_main,
                       t.wandb_project if engine.is_main else "", cfg.to_dict())
    bad = 0  # non-finite steps in a row
    try:
        for step in bar:
            began = time.perf_counter()
            batch = to_device(data.batch(engine.shard(batch_indices(step, t.batch_size, len(data), t.seed))), engine.device)
            batch |= {"step": step, "seed": t.seed}
            terms = engine.mean(train_step(state, batch, cfg.optim.grad_clip, step, engine))
            bad = bad + 1 if terms.get("skipped") else 0
            if step % t.log_every == 0 or step + 1 == t.steps or bad:
                logger.write({"step": step, "lr": state.sched.get_last_lr()[0], **terms, "seconds": time.perf_counter() - began})
                bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})
            if bad:
                tqdm.write(f"step {step}: non-finite terms {terms}; step skipped ({bad} in a row)")
            if bad >= t.max_bad_steps:
                raise TrainingError(f"step {step}: {bad} non-finite steps in a row (train.max_bad_steps = "
                                    f"{t.max_bad_steps}); last terms {terms}; lower optim.lr or check the data")
            validating = t.validate_every and (step + 1) % t.validate_every == 0
            if validating and (engine.is_main or engine.validates_everywhere):
                validate(state, data, run / "validation" / f"step_{step + 1:06d}", t, write=engine.is_main)
            if (step + 1) % t.save_every == 0 or step + 1 == t.steps:
                rngs, extras = engine.gather(rng_state()), engine.gather(state.method.extra_state())
                with engine.gathered(state) as whole:
                    if engine.is_main:
                        save_checkpoint(run, step + 1, whole, cfg, t.keep_checkpoints, rngs, extras, cfg.model.init)
                engine.barrier()
    finally:
        logger.close()


def validate(state: TrainState, data, folder: Path, t, write: bool = True) -> Path:
    """Sample the validation prompts with the current (EMA) weights: one mp4 each and a GIF of all, side by
    side, in ``folder`` (if ``write``: the other ranks of a sharded model sample with the main one). The random
    state is restored afterwards, so validating does not change the run."""
    prompts = t.validation_prompts or data.prompts[:4]
    rng = rng_state()
    with state.ema.applied():
        videos = sample(state.model, prompts, steps=t.validation_steps, guidance=4.0, seed=0, progress=False)
    restore_rng_state(*rng)
    if not write:
        return folder
    for i, video in enumerate(videos):
        write_mp4(folder / f"{i:02d}.mp4", video)
    write_gif(folder / "all.gif", tile([list(videos)]))
    (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return folder


class RunLogger:
    """``RUN/log.jsonl`` (always), TensorBoard scalars in ``RUN/tensorboard`` (``train.tensorboard``) and a
    Weights & Biases run (``train.wandb_project``; its id is kept in ``RUN/wandb_id`` so a resumed run logs
    into the same one), written by the main process only; every term of a record becomes a scalar
    ``terms/<name>``."""

    def __init__(self, run: Path, start: int, tensorboard: bool, main: bool, wandb_project: str = "",
                 config: dict | None = None):
        self.main = main
        self.log = open(run / "log.jsonl", "a") if main else None
        self.board = None
        self.wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(run / "tensorboard"), purge_step=start)
        if wandb_project:
            self.wandb = _wandb_run(run, wandb_project, config or {})

    def write(self, record: dict) -> None:
        if not self.main:
            return
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()
        scalars = {f"terms/{k}": v for k, v in record.items() if k != "step"}
        if self.board is not None:
            for k, v in scalars.items():
                self.board.add_scalar(k, v, record["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        for handle in (self.log, self.board):
            if handle is not None:
                handle.close()
        if self.wandb is not None:
            self.wandb.finish()


def _wandb_run(run: Path, project: str, config: dict):
    try:
        import wandb
    except ImportError:
        raise TrainingError(f"train.wandb_project is {project!r} but wandb is not installed: pip install wandb "
                            "(or set train.wandb_project to empty)") from None
    id_file = run / "wandb_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else wandb.util.generate_id()
    id_file.write_text(run_id)
    return wandb.init(project=project, dir=str(run), id=run_id, resume="allow", name=run.name, config=config)


def train_step(state: TrainState, batch: dict, grad_clip: float, step: int, engine: Engine | None = None) -> dict[str, float]:
    """One optimiser step on the method's "loss"; returns every term as a float, plus "grad_norm". A step
    whose terms or gradient norm are not finite on any rank changes no weight and returns ``skipped = 1``
    with its terms (the loop reports it and stops after ``train.max_bad_steps`` in a row)."""
    engine = engine or LocalEngine()
    state.model.train()
    with engine.autocast():
        terms = state.method(state.model, batch)
    if "loss" not in terms:
        raise TrainingError(f"method {type(state.method).__name__} returned no 'loss' term (got {sorted(terms)})")
    values = {k: float(v.detach()) for k, v in terms.items()}
    state.opt.zero_grad(set_to_none=True)
    if engine.any_rank(not all(math.isfinite(v) for v in values.values())):
        return {**values, "skipped": 1.0}
    values["grad_norm"] = engine.update(state, terms["loss"], grad_clip or math.inf)  # 0 = no clipping
    if not math.isfinite(values["grad_norm"]):  # on some rank: no rank stepped
        return {**values, "skipped": 1.0}
    state.sched.step()
    state.ema.update()
    return values


def _trim_log(path: Path, start: int) -> None:
    """Drop log records at or after ``start`` (left by a run killed after its last checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines(keepends=True) if json.loads(line)["step"] < start]
    path.write_text("".join(kept))

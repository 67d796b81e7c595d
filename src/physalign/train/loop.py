"""The training loop: model-agnostic and method-agnostic.

It builds the model, the method and the method's data source from the config, and descends the method's
``"loss"``, logging every term the method returns to ``RUN/log.jsonl``. Run folder::

    RUN/config.yaml  RUN/log.jsonl  RUN/checkpoints/{step_XXXXXX/, latest}  RUN/model/ (the final model)
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
from physalign.train.checkpoint import latest_checkpoint, restore_training_state, save_checkpoint
from physalign.train.config import Config, ModelSection, save_config
from physalign.train.data import batch_indices, build_data
from physalign.train.ema import build_ema
from physalign.train.methods import Method, build_method


class TrainingError(RuntimeError):
    pass


@dataclass
class TrainState:
    """What a step updates and a checkpoint stores."""

    model: VideoModel
    method: Method
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: object  # EMA or NoEMA


def build_model(section: ModelSection, path: str | Path | None = None) -> VideoModel:
    """The model at ``path`` (a checkpoint's model folder), else ``section.init``, else a new ``section.kind``."""
    source = path or section.init
    try:
        options = None if path else section.sizes  # a checkpoint's folder records its own options
        model = load_model(source, options) if source else model_class(section.kind).from_config(section.sizes)
    except (KeyError, ValueError) as err:
        raise TrainingError(f"model section: {err}") from None
    model.set_trainable(section.trainable)
    return model


def build_state(cfg: Config, model: VideoModel, method: Method) -> TrainState:
    named = {f"model.{k}": p for k, p in model.named_parameters() if p.requires_grad}
    named |= {f"method.{k}": p for k, p in method.named_parameters() if p.requires_grad}
    if not named:
        raise TrainingError(f"nothing to train: model.trainable={cfg.model.trainable} and the method has no parameters")
    o = cfg.optim
    opt = torch.optim.AdamW(list(named.values()), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(o.schedule, o.warmup_steps, cfg.train.steps))
    return TrainState(model, method, opt, sched, build_ema(named, o.ema_decay))


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


def build_run(cfg: Config, model_path: str | Path | None = None) -> tuple[TrainState, object]:
    """Seed, then build the method, the model (from ``model_path`` or the config), the data the method
    asks for, the method's own state (``setup``) and the optimiser: everything a step needs."""
    seed_everything(cfg.train.seed)
    method = build_method(cfg.train.method, cfg.method)  # first: a config mistake fails before any loading
    model = build_model(cfg.model, model_path)
    data = build_data(method.data, cfg.data, model)
    method.setup(model, data)
    return build_state(cfg, model, method), data


def train(cfg: Config, run: str | Path, resume: bool = False, progress: bool = True, export: str | Path | None = None) -> Path:
    """Train per ``cfg`` in folder ``run`` (continuing from its latest checkpoint if ``resume``); save the
    final model (EMA weights if enabled) to ``export`` or ``run/model`` and return that folder."""
    run = Path(run)
    ckpt = latest_checkpoint(run)
    if resume and ckpt is None:
        raise TrainingError(f"{run}: nothing to resume (no checkpoints/latest)")
    if not resume and ckpt is not None:
        raise TrainingError(f"{run} already holds a run (checkpoints/latest = {ckpt.name}): pass --resume or another --out")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    state, data = build_run(cfg, ckpt / "model" if resume else None)
    model, method = state.model, state.method
    start = restore_training_state(ckpt, state) if resume else 0
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    _trim_log(run / "log.jsonl", start)
    _loop(cfg, run, state, data, start, progress)
    model.eval()
    method.finish(model, data)
    export = Path(export) if export else run / "model"
    with state.ema.applied():
        model.save_pretrained(export)
    return export


def _loop(cfg: Config, run: Path, state: TrainState, data, start: int, progress: bool) -> None:
    t = cfg.train
    bar = tqdm(range(start, t.steps), initial=start, total=t.steps, desc=t.method, disable=not progress)
    with open(run / "log.jsonl", "a") as log:
        for step in bar:
            began = time.perf_counter()
            batch = data.batch(batch_indices(step, t.batch_size, len(data), t.seed))
            terms = train_step(state, batch, cfg.optim.grad_clip, step)
            if step % t.log_every == 0 or step + 1 == t.steps:
                record = {"step": step, "lr": state.sched.get_last_lr()[0], **terms, "seconds": time.perf_counter() - began}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})
            if (step + 1) % t.save_every == 0 or step + 1 == t.steps:
                save_checkpoint(run, step + 1, state, cfg, t.keep_checkpoints)


def train_step(state: TrainState, batch: dict, grad_clip: float, step: int) -> dict[str, float]:
    """One optimiser step on the method's "loss"; returns every term as a float, plus "grad_norm".
    A non-finite term stops the run with the step and all terms, before any weight changes."""
    state.model.train()
    terms = state.method(state.model, batch)
    if "loss" not in terms:
        raise TrainingError(f"method {type(state.method).__name__} returned no 'loss' term (got {sorted(terms)})")
    values = {k: float(v.detach()) for k, v in terms.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise TrainingError(f"step {step}: non-finite loss terms {values}; lower optim.lr or check the data")
    state.opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    params = [p for group in state.opt.param_groups for p in group["params"]]
    values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf))  # 0 = no clipping
    if not math.isfinite(values["grad_norm"]):
        raise TrainingError(f"step {step}: non-finite gradient norm; terms {values}")
    state.opt.step()
    state.sched.step()
    state.ema.update()
    return values


def _trim_log(path: Path, start: int) -> None:
    """Drop log records at or after ``start`` (left by a run killed after its last checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines(keepends=True) if json.loads(line)["step"] < start]
    path.write_text("".join(kept))

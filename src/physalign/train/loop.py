"""The training loop: model-agnostic and method-agnostic.

It builds the model and the method from the config, draws batches of cached latents, and descends the
method's ``"loss"``, logging every term the method returns to ``RUN/log.jsonl``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from physalign.models.world import WorldModelConfig, WorldVideoModel
from physalign.train.checkpoint import latest_checkpoint, restore_training_state, save_checkpoint
from physalign.train.config import Config, ModelSection, save_config
from physalign.train.data import batch_indices, cached_latents
from physalign.train.methods import build_method


class TrainingError(RuntimeError):
    pass


def load_model(section: ModelSection, path: str | Path | None = None) -> WorldVideoModel:
    """The model at ``path`` (a checkpoint's model folder), else ``section.init``, else a new one."""
    source = path or section.init
    model = WorldVideoModel.from_pretrained(source) if source else WorldVideoModel(WorldModelConfig(**section.sizes))
    model.set_trainable(section.trainable)
    return model


def _warmup(steps: int):
    return lambda step: min(1.0, (step + 1) / max(1, steps))


def train(cfg: Config, run: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train per ``cfg`` into folder ``run``; returns the final model folder ``run/model``."""
    run = Path(run)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    ckpt = latest_checkpoint(run) if resume else None
    if resume and ckpt is None:
        raise TrainingError(f"{run}: nothing to resume (no checkpoints/latest)")
    model = load_model(cfg.model, ckpt / "model" if ckpt else None)
    method = build_method(cfg.train.method, cfg.method)
    latents, prompts = cached_latents(model, cfg.data.manifest, cfg.data.split, cfg.data.cache_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup(cfg.optim.warmup_steps))
    start = restore_training_state(ckpt, opt, sched) if ckpt else 0
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    _loop(cfg, run, model, method, opt, sched, latents, prompts, start, progress)
    model.save_pretrained(run / "model")
    return run / "model"


def _loop(cfg, run, model, method, opt, sched, latents, prompts, start, progress) -> None:
    bad_in_a_row = 0
    bar = tqdm(range(start, cfg.train.steps), initial=start, total=cfg.train.steps, desc=cfg.train.method, disable=not progress)
    with open(run / "log.jsonl", "a") as log:
        for step in bar:
            idx = batch_indices(step, cfg.train.batch_size, len(prompts), cfg.train.seed)
            batch = {"latents": latents[idx].float(), "prompts": [prompts[i] for i in idx.tolist()]}
            began = time.perf_counter()
            terms = train_step(model, method, batch, opt, sched, cfg.optim.grad_clip)
            bad_in_a_row = 0 if terms is not None else bad_in_a_row + 1
            if bad_in_a_row >= cfg.train.max_bad_steps:
                raise TrainingError(f"stopped at step {step}: {bad_in_a_row} non-finite losses in a row")
            if terms is not None and (step % cfg.train.log_every == 0 or step + 1 == cfg.train.steps):
                record = {"step": step, "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - began, **terms}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})
            if (step + 1) % cfg.train.save_every == 0 or step + 1 == cfg.train.steps:
                save_checkpoint(run, step + 1, model, opt, sched, cfg, cfg.train.keep_checkpoints)


def train_step(model, method, batch: dict, opt, sched, grad_clip: float) -> dict[str, float] | None:
    """One optimiser step on the method's "loss". Returns the logged terms, or None (and no update) if a
    term is not finite — reported with its value."""
    model.train()
    terms = method(model, batch)
    values = {k: float(v.detach()) for k, v in terms.items()}
    if not all(math.isfinite(v) for v in values.values()):
        print(f"non-finite loss terms {values}: step skipped")
        opt.zero_grad(set_to_none=True)
        return None
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    values["grad_norm"] = float(torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip))
    opt.step()
    sched.step()
    return values

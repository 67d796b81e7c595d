"""Pre-training the teacher: VideoMAE masked autoencoding on world videos (``physalign train-teacher``).

As in VideoMAE [paper]: cut the video into tubelet x patch tokens, hide a high ratio of them (90% by
default), encode only the visible ones, let a light decoder reconstruct the hidden tokens' pixels, and
descend the MSE on hidden tokens only (``VideoMAEForPreTraining``'s own loss). *Tube* masking hides the same
spatial positions in every frame, so a hidden patch cannot be copied from the same place a frame earlier;
``random`` masking (per token) is the alternative, configurable.

Run folder (like ``physalign train``)::

    RUN/config.yaml  RUN/log.jsonl  RUN/checkpoints/{step_XXXXXX/, latest}

Checkpoints reuse :mod:`physalign.train.checkpoint` (atomic writes; optimiser, scheduler and random states;
no pickle), with the pre-training model (encoder + decoder) as the checkpoint's model. Masks and batches are
functions of (seed, step), so a resumed run continues exactly. The exported teacher folder holds the encoder
only (:func:`physalign.teacher.model.save_teacher`) plus ``teacher.yaml`` (this config) and ``teacher.json``
(what was trained on, how long, and the figures of :mod:`physalign.teacher.evaluate`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm
from transformers import VideoMAEForPreTraining

from physalign.models.interface import to_model_range
from physalign.teacher.model import save_teacher, teacher_config, teacher_grid, to_teacher_input, video_shape
from physalign.train.checkpoint import has_checkpoints, latest_checkpoint, restore_training_state, save_checkpoint
from physalign.train.config import ConfigError, load_flat_config
from physalign.train.data import batch_indices
from physalign.train.ema import NoEMA
from physalign.train.loop import TrainingError, TrainState, seed_everything
from physalign.train.methods import Method
from physalign.world.dataset import manifest_rows, read_videos

MASKINGS = ("tube", "random")


@dataclass
class TeacherConfig:
    """Everything a pre-training run depends on; saved with every checkpoint and the exported teacher."""

    manifest: str = "data/world/manifest.jsonl"
    split: str = "train"  # manifest lines of this split; "" = every line
    sizes: dict = field(default_factory=dict)  # VideoMAEConfig fields overriding model.TEACHER_SIZES
    masking: str = "tube"  # "tube" (VideoMAE) or "random"
    mask_ratio: float = 0.9  # VideoMAE: 0.9 with tube masking
    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # VideoMAE's
    weight_decay: float = 0.05  # VideoMAE's
    warmup_steps: int = 100  # linear warm-up, then cosine decay to 0 at `steps`
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    seed: int = 0
    threads: int = 1  # torch intra-op threads; 0 = torch's default (the CPU is shared: 1 by default)
    log_every: int = 10
    save_every: int = 200
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.masking not in MASKINGS:
            raise ConfigError(f"masking must be one of {MASKINGS}. Got {self.masking!r}.")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1). Got {self.mask_ratio}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_teacher_config(path: str | Path | None = None, overrides: list[str] = ()) -> TeacherConfig:
    """Read YAML ``path`` (or the defaults when None), then apply ``key=value`` overrides (values as YAML)."""
    return load_flat_config(TeacherConfig, path, overrides)


def mask_tokens(grid: tuple[int, int, int], batch: int, ratio: float, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Bool (B, F*H*W), True = hidden, the same count in every row (VideoMAE needs that). ``tube`` hides
    round(ratio * H * W) spatial positions in all F frames; ``random`` hides round(ratio * F * H * W) tokens."""
    f, h, w = grid
    n = h * w if kind == "tube" else f * h * w
    hidden = min(n - 1, max(1, round(ratio * n)))  # at least one token visible and one hidden
    ranks = torch.rand(batch, n, generator=generator).argsort(dim=1).argsort(dim=1)  # a random permutation per row
    mask = ranks < hidden  # (B, n)
    return mask[:, None, :].expand(batch, f, n).reshape(batch, -1) if kind == "tube" else mask


def step_generator(seed: int, step: int) -> torch.Generator:
    """The masks' random source at ``step``: a function of (seed, step) only, so resuming changes nothing."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def lr_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))


def build_state(cfg: TeacherConfig, model: VideoMAEForPreTraining) -> TrainState:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps))
    return TrainState(model=model, method=Method(), opt=opt, sched=sched, ema=NoEMA())  # no method parameters


def masked_loss(model: VideoMAEForPreTraining, videos: np.ndarray, cfg: TeacherConfig, step: int) -> torch.Tensor:
    """VideoMAE's loss on uint8 videos (B, T, H, W, 3) with the masks of ``step``."""
    pixels = to_teacher_input(to_model_range(videos), model.config)  # (B, T, C, H, W)
    mask = mask_tokens(teacher_grid(model.config), len(videos), cfg.mask_ratio, cfg.masking, step_generator(cfg.seed, step))
    return model(pixels, bool_masked_pos=mask).loss


def load_videos(cfg: TeacherConfig) -> tuple[np.ndarray, list[dict]]:
    """The split's videos, uint8 (N, T, H, W, 3), and their manifest lines."""
    try:
        return read_videos(cfg.manifest, manifest_rows(cfg.manifest, cfg.split))
    except (OSError, ValueError) as err:
        raise TrainingError(str(err)) from None


def pretrain_teacher(cfg: TeacherConfig, run: str | Path, out: str | Path, resume: bool = False,
                     progress: bool = True, command: str = "") -> Path:
    """Pre-train per ``cfg`` in ``run`` (from its latest checkpoint if ``resume``); export the teacher to
    ``out`` and return it. ``command`` (the command line) is recorded in ``out/teacher.json``."""
    began, run = time.perf_counter(), Path(run)
    if not resume and has_checkpoints(run):
        raise TrainingError(f"{run} already holds a run ({run / 'checkpoints'}): pass --resume or another --run")
    ckpt = latest_checkpoint(run) if resume else None
    if resume and ckpt is None:
        raise TrainingError(f"{run}: nothing to resume (no complete checkpoint in {run / 'checkpoints'})")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    model = (VideoMAEForPreTraining.from_pretrained(ckpt / "model", use_safetensors=True) if resume
             else VideoMAEForPreTraining(teacher_config(cfg.sizes)))
    videos, rows = load_videos(cfg)
    channels, *expected = video_shape(model.config)
    if videos.shape[1:] != (*expected, channels):
        raise TrainingError(f"{cfg.manifest}: videos are {videos.shape[1:]} (T, H, W, C); the teacher reads "
                            f"{(*expected, channels)}")
    state = build_state(cfg, model)
    start = restore_training_state(ckpt, state) if resume else 0
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    elapsed = _trim_log(run / "log.jsonl", start)
    elapsed = _loop(cfg, run, state, videos, start, elapsed, progress)
    model.eval()
    save_teacher(model, out)
    (Path(out) / "teacher.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    record = {"command": command, "manifest": cfg.manifest, "split": cfg.split, "videos": len(rows),
              "rows_sha256": hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest(),
              "steps": cfg.steps, "train_seconds": round(elapsed, 1),
              "last_run_wall_seconds": round(time.perf_counter() - began, 1), "threads": torch.get_num_threads(),
              "final_loss": _final_loss(run / "log.jsonl")}
    (Path(out) / "teacher.json").write_text(json.dumps(record, indent=2) + "\n")
    return Path(out)


def _loop(cfg: TeacherConfig, run: Path, state: TrainState, videos: np.ndarray, start: int, elapsed: float,
          progress: bool) -> float:
    """Steps ``start`` .. ``cfg.steps``; returns the training seconds of the whole run (all resumes)."""
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="teacher", disable=not progress)
    with open(run / "log.jsonl", "a") as log:
        for step in bar:
            began = time.perf_counter()
            terms = train_step(state, videos[batch_indices(step, cfg.batch_size, len(videos), cfg.seed).numpy()], cfg, step)
            elapsed += time.perf_counter() - began
            if step % cfg.log_every == 0 or step + 1 == cfg.steps:
                log.write(json.dumps({"step": step, "lr": state.sched.get_last_lr()[0], **terms, "elapsed": elapsed}) + "\n")
                log.flush()
                bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                save_checkpoint(run, step + 1, state, cfg, cfg.keep_checkpoints)
    return elapsed


def train_step(state: TrainState, videos: np.ndarray, cfg: TeacherConfig, step: int) -> dict[str, float]:
    state.model.train()
    loss = masked_loss(state.model, videos, cfg, step)
    if not torch.isfinite(loss):
        raise TrainingError(f"step {step}: non-finite reconstruction loss {float(loss)}; lower lr")
    state.opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip or math.inf)
    state.opt.step()
    state.sched.step()
    return {"loss": float(loss.detach()), "grad_norm": float(norm)}


def _trim_log(path: Path, start: int) -> float:
    """Drop records at or after ``start`` (left by a run killed after its last checkpoint); return the
    training seconds elapsed before ``start``."""
    if not path.is_file():
        return 0.0
    kept = [json.loads(line) for line in path.read_text().splitlines() if json.loads(line)["step"] < start]
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept[-1]["elapsed"] if kept else 0.0


def _final_loss(path: Path, last: int = 10) -> float:
    """Mean loss of the last ``last`` log records (a single batch's loss is noisy)."""
    records = [json.loads(line) for line in path.read_text().splitlines()][-last:]
    return round(sum(r["loss"] for r in records) / len(records), 5)

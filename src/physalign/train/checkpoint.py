"""Checkpoints: model folder, optimiser and scheduler state, step, random state and config.

Layout: ``RUN/checkpoints/step_000100/{model/, optimizer.safetensors, state.json, config.yaml}`` and
``RUN/checkpoints/latest`` (a text file naming the newest complete step). A checkpoint is written to a
temporary folder and renamed into place, and ``latest`` is replaced atomically after it: a kill at any
moment leaves the previous checkpoint intact and ``latest`` pointing at a complete one. No pickle:
tensors go to safetensors, everything else to JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from physalign.train.config import Config, save_config


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run: Path, step: int, model, opt, sched, cfg: Config, keep: int = 2) -> Path:
    root = Path(run) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_", dir=root))
    model.save_pretrained(tmp / "model")
    tensors, meta = _flatten_optimizer(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    meta.update(step=step, scheduler=sched.state_dict())
    (tmp / "state.json").write_text(json.dumps(meta))
    save_config(cfg, tmp / "config.yaml")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_latest(root, final.name)
    _prune(root, keep)
    return final


def _write_latest(root: Path, name: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".latest_")
    with os.fdopen(fd, "w") as f:
        f.write(name)
    os.replace(tmp, root / "latest")


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def latest_checkpoint(run: Path) -> Path | None:
    pointer = Path(run) / "checkpoints" / "latest"
    return pointer.parent / pointer.read_text().strip() if pointer.is_file() else None


def restore_training_state(ckpt: Path, opt, sched) -> int:
    """Load optimiser, scheduler and RNG state from ``ckpt``; return the step it was saved at."""
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    meta = json.loads((ckpt / "state.json").read_text())
    torch.set_rng_state(tensors.pop("rng.torch"))
    opt.load_state_dict(_unflatten_optimizer(tensors, meta))
    sched.load_state_dict(meta["scheduler"])
    return int(meta["step"])

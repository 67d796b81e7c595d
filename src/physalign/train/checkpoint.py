"""Checkpoints: everything needed to continue a run exactly, and nothing pickled.

Layout of ``RUN/checkpoints/step_000100/``:

- the model's trained part. A run that starts from a model folder (``model.init``) saves only what it trains:
  ``trained.safetensors`` (every trainable model parameter, LoRA adapters included, by name) and
  ``base.json`` (``model.init``, a fingerprint of that folder, the LoRA spec if any); a resume rebuilds the
  model from ``model.init`` (refusing a folder whose fingerprint changed) and lays the trained tensors over it.
  The frozen parts (Wan's 11.4 GB UMT5, a 28.6 GB base under LoRA) are never rewritten. A run that builds a
  new model keeps writing the whole ``model/`` folder (``save_pretrained``), which is all there is to rebuild
  its frozen parts from;
- ``optimizer.safetensors`` + the ``optimizer`` entry of ``state.json``: optimiser tensors and its scalars;
- ``method.safetensors``: the method's trainable parameters (empty for ``fm``);
- ``ema.safetensors``: EMA weights (empty without EMA);
- ``rng.safetensors`` + ``state.json``: torch, numpy and python random states, step, scheduler (of every
  process of a multi-process run: ``rng.safetensors`` is rank 0's, ``rng_rank<k>.safetensors`` rank k's),
  and each process's ``method.extra_state()`` (e.g. DiffPhy's memory of failed facts);
- ``config.yaml``: the run's config.

``RUN/checkpoints/latest`` names the newest complete step. A checkpoint is written to a temporary folder
and renamed into place, then ``latest`` is replaced atomically: a kill at any moment leaves ``latest``
naming a complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from physalign.assets import resolve
from physalign.models.interface import load_model
from physalign.models.lora import LoraSpec, add_lora, lora_spec
from physalign.models.parts import building_empty
from physalign.train.config import load_config, save_config
from physalign.train.engine import LocalEngine
from physalign.train.rng import restore_rng_state, rng_state

BASE_FILE, TRAINED_FILE = "base.json", "trained.safetensors"
FINGERPRINT_BYTES = 2**20


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entries in state["state"].items():
        for name, value in entries.items():
            target = tensors if torch.is_tensor(value) else scalars
            target[f"{idx}.{name}"] = value.contiguous() if torch.is_tensor(value) else value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().contiguous() for k, p in module.named_parameters() if p.requires_grad}


def save_checkpoint(run: str | Path, step: int, state, cfg, keep: int = 2, rng_states: list | None = None,
                    method_states: list | None = None, init: str = "") -> Path:
    """Write ``state`` (model, method, opt, sched, ema) at ``step``; keep the newest ``keep`` checkpoints.
    ``rng_states`` and ``method_states``: every rank's :func:`~physalign.train.rng.rng_state` and
    ``method.extra_state()`` in rank order (default: this process's alone). ``init``: the model folder the run
    started from (``model.init``), whose frozen parts the checkpoint then leaves out."""
    root = Path(run) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    if final.exists():
        raise FileExistsError(f"{final}: checkpoint exists; a run never saves the same step twice")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp_", dir=root))
    save_model_part(state.model, init, tmp)
    opt_tensors, opt_meta = _flatten_optimizer(state.opt)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    save_file(trainable_state(state.method), str(tmp / "method.safetensors"))
    save_file({k: v.contiguous() for k, v in state.ema.state_dict().items()}, str(tmp / "ema.safetensors"))
    rng_states = rng_states or [rng_state()]
    for rank, (rng_tensors, _) in enumerate(rng_states):
        save_file(rng_tensors, str(tmp / _rng_file(rank)))
    method_states = method_states or [state.method.extra_state()]
    meta = {"step": step, "optimizer": opt_meta, "scheduler": state.sched.state_dict(),
            "rng": rng_states[0][1], "rng_ranks": [m for _, m in rng_states], "method_ranks": method_states}
    (tmp / "state.json").write_text(json.dumps(meta))
    save_config(cfg, tmp / "config.yaml")
    os.replace(tmp, final)
    _write_latest(root, final.name)
    _prune(root, keep)
    return final


def folder_fingerprint(folder: str | Path) -> str:
    """A quick fingerprint of a model folder: SHA-256 over every file's relative path, size and its first and
    last MiB (a safetensors file starts with its header of names, shapes and dtypes), so a 30 GB base is
    fingerprinted in milliseconds; a replaced or retrained folder changes it."""
    folder, h = Path(folder), hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        h.update(f"{path.relative_to(folder)}:{size}:".encode())
        with path.open("rb") as f:
            h.update(f.read(FINGERPRINT_BYTES))
            if size > FINGERPRINT_BYTES:
                f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                h.update(f.read())
    return h.hexdigest()


def save_model_part(model, init: str, folder: Path) -> None:
    """Into checkpoint ``folder``: the trained parameters and ``base.json`` when the run started from model
    folder ``init``; else the whole model (``model/``)."""
    if not init:
        model.save_pretrained(folder / "model")
        return
    trained = {k: p.detach().contiguous() for k, p in model.named_parameters() if p.requires_grad}
    save_file(trained, str(folder / TRAINED_FILE))
    spec = lora_spec(model.backbone)
    base = {"init": init, "fingerprint": folder_fingerprint(resolve(init)), "lora": spec and dataclasses.asdict(spec)}
    (folder / BASE_FILE).write_text(json.dumps(base, indent=2))


def load_checkpoint_model(ckpt: str | Path, options: dict | None = None):
    """The model of checkpoint ``ckpt``: its ``model/`` folder, or ``model.init`` (from ``base.json``; loaded
    with ``options``, a config's ``model.sizes``) with its LoRA spec and the trained tensors laid over it."""
    ckpt = Path(ckpt)
    if (ckpt / "model").is_dir():
        return load_model(ckpt / "model")
    if not (ckpt / BASE_FILE).is_file():
        raise FileNotFoundError(f"{ckpt}: not a checkpoint (neither model/ nor {BASE_FILE})")
    base = json.loads((ckpt / BASE_FILE).read_text())
    init = resolve(base["init"])
    if not init.is_dir() or folder_fingerprint(init) != base["fingerprint"]:
        raise ValueError(f"{ckpt}: its frozen parts come from model.init {base['init']} ({init}), which "
                         f"{'no longer exists' if not init.is_dir() else 'has changed since (another fingerprint)'}; "
                         "restore that folder to resume or export this checkpoint")
    model = load_model(init, options)
    if base["lora"]:
        add_lora(model.backbone, LoraSpec(**base["lora"]))
    if building_empty():  # another process reads the trained tensors and broadcasts them
        return model
    trained = load_file(str(ckpt / TRAINED_FILE))
    params = dict(model.named_parameters())
    unknown = sorted(set(trained) - set(params))
    if unknown:
        raise KeyError(f"{ckpt}/{TRAINED_FILE}: {len(unknown)} tensors the model built from {base['init']} lacks, "
                       f"e.g. {unknown[:3]}")
    with torch.no_grad():
        for name, tensor in trained.items():
            params[name].copy_(tensor)
    return model


def _write_latest(root: Path, name: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".latest_")
    with os.fdopen(fd, "w") as f:
        f.write(name)
    os.replace(tmp, root / "latest")


def _prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints, and leftovers of interrupted writes."""
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in (steps[:-keep] if keep > 0 else []) + list(root.glob(".tmp_*")):
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run: str | Path) -> Path | None:
    pointer = Path(run) / "checkpoints" / "latest"
    return pointer.parent / pointer.read_text().strip() if pointer.is_file() else None


def _rng_file(rank: int) -> str:
    return "rng.safetensors" if rank == 0 else f"rng_rank{rank}.safetensors"


def restore_training_state(ckpt: Path, state, engine=None) -> int:
    """Load optimiser, scheduler, EMA, method parameters and this process's random states from ``ckpt`` into
    ``state`` (whose model was already loaded by :func:`load_checkpoint_model`); return the step it was saved at.
    ``engine`` (default: one process) lays the whole tensors out as its parameters are (``Engine.place``: a
    sharded run takes its share) and names the process."""
    engine = engine or LocalEngine()
    meta = json.loads((ckpt / "state.json").read_text())
    engine.load_optimizer(state.opt, _unflatten_optimizer(load_file(str(ckpt / "optimizer.safetensors")), meta["optimizer"]))
    state.sched.load_state_dict(meta["scheduler"])
    shadow = load_file(str(ckpt / "ema.safetensors"))
    like = getattr(state.ema, "params", {})
    state.ema.load_state_dict({k: engine.place(v, like.get(k)) for k, v in shadow.items()})
    missing, unexpected = state.method.load_state_dict(load_file(str(ckpt / "method.safetensors")), strict=False)
    if unexpected or set(missing) & set(trainable_state(state.method)):
        raise KeyError(f"{ckpt}/method.safetensors does not fit the method: missing {missing}, unexpected {unexpected}")
    ranks = meta.get("rng_ranks", [meta["rng"]])
    if engine.rank >= len(ranks):
        raise ValueError(f"{ckpt} was saved by {len(ranks)} processes; process {engine.rank} has no random state "
                         "there (resume with the same number of processes)")
    restore_rng_state(load_file(str(ckpt / _rng_file(engine.rank))), ranks[engine.rank])
    method_ranks = meta.get("method_ranks", [])
    state.method.load_extra_state(method_ranks[engine.rank] if engine.rank < len(method_ranks) else {})
    return int(meta["step"])


def checkpoint_model(ckpt: str | Path):
    """The model of checkpoint ``ckpt``, with the options (``model.sizes``) of the config saved beside it."""
    config = Path(ckpt) / "config.yaml"
    return load_checkpoint_model(ckpt, (load_config(config).model.sizes if config.is_file() else None) or None)


def export_checkpoint(ckpt: str | Path, out: str | Path, ema: bool = True) -> Path:
    """Write the model of checkpoint ``ckpt`` to ``out`` (a model folder), with the EMA weights the checkpoint
    holds when ``ema`` (a run's final export does the same; this reads any step of a run)."""
    ckpt = Path(ckpt)
    model = checkpoint_model(ckpt)
    shadow = load_file(str(ckpt / "ema.safetensors")) if ema and (ckpt / "ema.safetensors").is_file() else {}
    if ema and not shadow:
        raise ValueError(f"{ckpt}: the run kept no EMA (optim.ema_decay = 0); export without --ema")
    with torch.no_grad():
        for name, tensor in shadow.items():
            if name.startswith("model."):
                model.get_parameter(name[len("model."):]).copy_(tensor)
    model.save_pretrained(out)
    return Path(out)

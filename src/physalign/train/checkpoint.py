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

A checkpoint is written to a temporary folder, closed by ``manifest.json`` (every file's size and SHA-256, and
whether every saved tensor was finite) and renamed into place; ``RUN/checkpoints/latest`` is then replaced
atomically. A resume trusts what is on disk, not the pointer: it takes the newest checkpoint whose files
match its manifest (:func:`latest_checkpoint`), and names each newer one it skips and why. A checkpoint is
pruned only once a newer one has been written, hashed from disk and found finite; a bad one is
moved aside to ``bad_step_XXXXXX`` (never deleted) when the run saves that step again.
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
from safetensors import SafetensorError
from safetensors.torch import load_file as _load_file
from safetensors.torch import save_file

from physalign.assets import resolve
from physalign.models.interface import load_model
from physalign.models.lora import LoraSpec, add_lora, lora_spec
from physalign.models.parts import building_empty
from physalign.train.config import load_config, save_config
from physalign.train.engine import LocalEngine
from physalign.train.rng import restore_rng_state, rng_state

BASE_FILE, TRAINED_FILE, MANIFEST_FILE = "base.json", "trained.safetensors", "manifest.json"
FINGERPRINT_BYTES = 2**20


class CheckpointError(ValueError):
    """A checkpoint that is incomplete, corrupt or unreadable; the message names the file and what is wrong."""


def load_file(path) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file``, its errors naming the file."""
    try:
        return _load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None


def read_json(path: Path):
    """A checkpoint's JSON file, its errors naming the file."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not a readable JSON file ({err})") from None


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
    if final.exists() and checkpoint_problem(final) is None:
        raise FileExistsError(f"{final}: checkpoint exists; a run never saves the same step twice")
    if final.exists():
        _set_aside(final)  # a bad checkpoint a resume skipped: the run redoes its step
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
    finite = _all_finite(state)
    write_manifest(tmp, finite)  # hashes the files as they were written, read back
    os.replace(tmp, final)
    _write_latest(root, final.name)
    if finite:
        _prune(root, keep)
    else:
        print(f"warning: {final} holds non-finite values; no older checkpoint is deleted", flush=True)
    return final


def _all_finite(state) -> bool:
    """Whether every trained weight, optimiser tensor and EMA shadow of ``state`` is finite."""
    tensors = [p for p in state.model.parameters() if p.requires_grad] + list(state.method.parameters())
    tensors += [v for entry in state.opt.state_dict()["state"].values() for v in entry.values() if torch.is_tensor(v)]
    tensors += list(state.ema.state_dict().values())
    return all(bool(torch.isfinite(t).all()) for t in tensors if torch.is_tensor(t) and t.is_floating_point())


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(folder: Path, finite: bool) -> None:
    """``folder/manifest.json``: every file's size and SHA-256 (and ``finite``), written last."""
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _digest(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
    (folder / MANIFEST_FILE).write_text(json.dumps({"files": files, "finite": finite}, indent=1))


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why checkpoint ``ckpt`` cannot be resumed (naming the file), or None: every file its manifest lists is
    there with that size and SHA-256, and the saved tensors were finite. A checkpoint written before manifests
    existed is accepted when its ``state.json`` reads."""
    manifest = ckpt / MANIFEST_FILE
    if not manifest.is_file():
        if (ckpt / "state.json").is_file() and (ckpt / "optimizer.safetensors").is_file():
            try:
                read_json(ckpt / "state.json")
                return None
            except CheckpointError as err:
                return str(err)
        return f"{ckpt}: incomplete (no {MANIFEST_FILE})"
    try:
        listed = read_json(manifest)
        files, finite = listed["files"], listed["finite"]
    except (CheckpointError, KeyError, TypeError) as err:
        return f"{manifest}: not a checkpoint manifest ({err})"
    for name, want in files.items():
        path = ckpt / name
        if not path.is_file():
            return f"{path}: missing (listed in {MANIFEST_FILE})"
        if path.stat().st_size != want["bytes"]:
            return f"{path}: {path.stat().st_size} bytes, {want['bytes']} written (truncated or changed)"
        if _digest(path) != want["sha256"]:
            return f"{path}: its SHA-256 differs from the one written (the file changed since it was saved)"
    if not finite:
        return f"{ckpt}: holds non-finite weights or optimiser state"
    return None


def _set_aside(ckpt: Path) -> Path:
    """Rename a bad checkpoint to ``bad_<name>`` (numbered if taken), out of the way of resumes and pruning."""
    target, k = ckpt.with_name(f"bad_{ckpt.name}"), 1
    while target.exists():
        target, k = ckpt.with_name(f"bad_{ckpt.name}.{k}"), k + 1
    os.replace(ckpt, target)
    print(f"warning: {ckpt} is bad ({checkpoint_problem(target) or 'see above'}); moved to {target}", flush=True)
    return target


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
    base = read_json(ckpt / BASE_FILE)
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
    """Delete all but the newest ``keep`` checkpoints (called once the newest is known good), and leftovers of
    interrupted writes (``.tmp_*`` folders, ``.latest_*`` files)."""
    steps = _steps(root)
    for old in (steps[:-keep] if keep > 0 else []) + list(root.glob(".tmp_*")):
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(".latest_*"):
        leftover.unlink(missing_ok=True)


def _steps(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("step_*") if p.is_dir() and p.name[5:].isdigit())


def has_checkpoints(run: str | Path) -> bool:
    """Whether ``run`` holds any checkpoint folder, good or not."""
    return bool(_steps(Path(run) / "checkpoints"))


def latest_checkpoint(run: str | Path, report=print) -> Path | None:
    """The newest checkpoint of ``run`` that can be resumed (:func:`checkpoint_problem`), whatever
    ``checkpoints/latest`` says (a kill between a checkpoint's rename and the pointer's update leaves it one
    behind); each newer checkpoint skipped is reported with its problem."""
    for ckpt in reversed(_steps(Path(run) / "checkpoints")):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            return ckpt
        report(f"warning: skipping checkpoint {ckpt.name}: {problem}")
    return None


def _rng_file(rank: int) -> str:
    return "rng.safetensors" if rank == 0 else f"rng_rank{rank}.safetensors"


def restore_training_state(ckpt: Path, state, engine=None) -> int:
    """Load optimiser, scheduler, EMA, method parameters and this process's random states from ``ckpt`` into
    ``state`` (whose model was already loaded by :func:`load_checkpoint_model`); return the step it was saved at.
    ``engine`` (default: one process) lays the whole tensors out as its parameters are (``Engine.place``: a
    sharded run takes its share) and names the process."""
    engine = engine or LocalEngine()
    meta = read_json(ckpt / "state.json")
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

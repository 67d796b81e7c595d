"""Random states as a checkpoint stores them: torch's as a tensor (for ``safetensors``), python's and numpy's as
JSON, so a resumed run, a method's own generator and an engine that must not move the streams restore them
exactly. Imports nothing of physalign: the checkpoint, the engines and the methods all read it.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def python_rng_to_json(state: tuple) -> list:
    """``random.Random.getstate()`` as JSON-able ``[version, [ints...], gauss]``."""
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_rng_from_json(state: list) -> tuple:
    """Inverse of :func:`python_rng_to_json`, ready for ``random.Random.setstate``."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's random states: ``({"torch": uint8 (S,)}, {"python": [...], "numpy": {...}})``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy = {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return {"torch": torch.get_rng_state()}, {"python": python_rng_to_json(random.getstate()), "numpy": numpy}


def restore_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Set torch's, python's and numpy's random states to what :func:`rng_state` returned."""
    torch.set_rng_state(tensors["torch"])
    random.setstate(python_rng_from_json(meta["python"]))
    n = meta["numpy"]
    np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["gauss"]))

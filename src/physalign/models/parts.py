"""Reading a model's parts (diffusers and transformers modules) from their folders, whole or empty.

A multi-process run reads the weights once: process 0 loads them, every other process builds the same modules
on the meta device (structure and dtypes from the folders' configs, no tensor read or allocated) inside
:func:`empty_weights`, and the engine materialises and broadcasts (:meth:`physalign.train.engine.Engine.share`).
Model classes read their parts through :func:`load_part`, so both ways give the same module tree.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from pathlib import Path

import torch

_EMPTY = contextvars.ContextVar("physalign_empty_weights", default=False)


@contextlib.contextmanager
def empty_weights(on: bool = True):
    """Within the block (if ``on``), :func:`load_part` builds modules on the meta device and checkpoint loaders
    skip reading weights (:func:`building_empty` says so)."""
    token = _EMPTY.set(on)
    try:
        yield
    finally:
        _EMPTY.reset(token)


def building_empty() -> bool:
    """Whether the caller is inside :func:`empty_weights`."""
    return _EMPTY.get()


def load_part(cls, folder, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """``cls.from_pretrained(folder)`` (safetensors only, cast to ``dtype``), in eval mode; inside
    :func:`empty_weights` the same module on the meta device from ``folder``'s config alone."""
    check_weights(folder)
    if not building_empty():
        key = "torch_dtype" if hasattr(cls, "load_config") else "dtype"  # diffusers' spelling, transformers'
        return cls.from_pretrained(folder, use_safetensors=True, **({key: dtype} if dtype else {}))
    with torch.device("meta"):
        if hasattr(cls, "load_config"):  # a diffusers ModelMixin
            module = cls.from_config(cls.load_config(folder))
        else:  # a transformers PreTrainedModel
            module = cls(cls.config_class.from_pretrained(folder))
    return (cast(module, dtype) if dtype else module).eval()


PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_weights(folder) -> None:
    """A part folder must hold safetensors weights; one holding only pickled files (``.bin``, ``.pt``, ...) is
    refused, never unpickled, with how to convert it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such model part folder")
    if any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
    if pickled:
        raise ValueError(
            f"{folder}: holds only pickled weights ({', '.join(pickled)}); physalign reads safetensors only and never "
            "unpickles a downloaded file. Convert it where you trust it, e.g. python -c \"import torch; from "
            "safetensors.torch import save_file; save_file(torch.load('X.bin', weights_only=True), "
            "'X.safetensors')\" (named as the library expects: model.safetensors or diffusion_pytorch_model.safetensors)")
    raise FileNotFoundError(f"{folder}: no weights (*.safetensors)")


def cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module.to(dtype)``, keeping the sub-modules its class lists in ``_keep_in_fp32_modules`` in float32, as
    ``from_pretrained(torch_dtype=...)`` does."""
    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ())
    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return module


def retie(module: torch.nn.Module) -> None:
    """Tie again the weights a transformers model shares (``to_empty`` gives each holder its own tensor)."""
    for sub in module.modules():
        if callable(getattr(sub, "tie_weights", None)) and hasattr(sub, "config"):
            sub.tie_weights()

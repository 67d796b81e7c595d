"""Training methods as plugins.

A method turns a batch into named loss terms, ``{"loss": total, "fm": ..., ...}``: the loop descends
``"loss"`` and logs every term. The loop never asks which method it runs; it looks the name up in
:data:`METHODS`. Adding a method is one file in this package::

    @register("mine")
    class Mine(Method):
        def __init__(self, weight: float = 0.5):   # keyword arguments = the config's `method:` section
            super().__init__()
            self.weight = weight

        def forward(self, model, batch):           # model: a VideoModel; batch: see `data` below
            ...
            return {"loss": fm + self.weight * extra, "fm": fm.detach(), "extra": extra.detach()}

Every module of this package is imported on first use, so ``register`` is all it takes.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing

import torch
from torch import nn

from physalign.train.config import ConfigError, coerce


class DataError(ValueError):
    """The data lacks what a method needs (an extra of :mod:`physalign.train.data`, asked for in
    :meth:`Method.setup`); the message names the missing column or feature and its source."""


class Method(nn.Module):
    """Base class of training methods. A method is an ``nn.Module`` so it may own trainable parts (e.g. a
    REPA projector): its parameters that require grad are optimised with the model's and checkpointed.
    Do not store the model being trained as an attribute (its weights would be counted twice)."""

    data: str = "latents"  # the kind of its batches; the config's data.source serves them (physalign.train.data.SOURCES)

    def setup(self, model, data) -> None:
        """Once before the first step (also on resume), e.g. to keep a frozen reference copy of the model, or
        to ask the data for per-clip extras (``data.teacher_features(...)``; see :mod:`physalign.train.data`)."""

    def forward(self, model, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(model, batch)")

    def finish(self, model, data) -> None:
        """Once after the last step, before the model is exported."""

    def extra_state(self) -> dict:
        """What the method keeps besides its parameters that a resumed run needs to continue exactly (JSON
        values: e.g. DiffPhy's memory of failed facts and its random generator); saved per process."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what :meth:`extra_state` returned (after ``setup``)."""


METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def wrap(cls: type[Method]) -> type[Method]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method name {name!r} is taken by {METHODS[name].__qualname__}")
        METHODS[name] = cls
        return cls

    return wrap


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def build_method(name: str, params: dict) -> Method:
    """The method registered as ``name``, constructed with ``params`` (the config's ``method`` section)."""
    _import_all()
    if name not in METHODS:
        raise ConfigError(f"train.method: unknown method {name!r}; available: {sorted(METHODS)}")
    cls = METHODS[name]
    allowed, hints = parameters(cls)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"method section: unknown keys {unknown} for method {name!r}; allowed: {allowed}")
    typed = {k: coerce(v, hints[k], f"method.{k}", f"method {name!r}") if k in hints else v for k, v in params.items()}
    return cls(**typed)


def parameters(cls: type) -> tuple[list[str], dict]:
    """Keyword arguments of ``cls.__init__`` and their type hints, following ``**kw`` up the base classes."""
    names, hints = [], {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass in (Method, nn.Module, object):
            continue
        sig = inspect.signature(klass.__init__)
        hints = typing.get_type_hints(klass.__init__) | hints
        names += [p for p, v in sig.parameters.items() if p != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL) and p not in names]
        if not any(v.kind == v.VAR_KEYWORD for v in sig.parameters.values()):
            break
    return names, hints

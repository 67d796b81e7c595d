"""Training methods as plugins.

A method is a callable ``method(model, batch) -> dict`` of named loss terms, ``"loss"`` being the total
the optimiser descends; every other entry is logged. The loop never asks which method it runs: it looks
the name up here. Adding a method is one file that calls :func:`register`.
"""

from __future__ import annotations

from typing import Callable

METHODS: dict[str, Callable] = {}


def register(name: str):
    def wrap(cls):
        METHODS[name] = cls
        return cls

    return wrap


def build_method(name: str, params: dict):
    from physalign.train.methods import fm  # noqa: F401  (registers)

    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; available: {sorted(METHODS)}")
    try:
        return METHODS[name](**params)
    except TypeError as err:
        raise TypeError(f"method {name!r}: bad parameters {params} ({err})") from None

"""Reasoning about prompts (DiffPhy step 1; DiReCT's and PhysHPO's one-axis prompt variants).

``build_reasoner(kind, **options)`` makes one of three backends of :class:`Reasoner`:

- ``"world"`` (:class:`WorldReasoner`): exact, from the world's grammar and simulator; needs nothing.
- ``"openai"`` (:class:`OpenAIReasoner`): any OpenAI-compatible chat endpoint; ``base_url``, ``model``.
- ``"local"`` (:class:`LocalReasoner`): a transformers causal LM in a local folder; ``path``.

``annotate_manifest`` adds a backend's reasoning to every line of a manifest (the ``physalign reason``
command).
"""

from __future__ import annotations

import importlib

from physalign.reasoning.base import (
    AXES, EndpointError, InvalidAnswer, NoPerturbation, Reasoner, Reasoning, ReasoningError, TransientError,
)

# backend -> (module, class), imported on demand: the world backend must not pay for transformers.
_BACKENDS = {
    "world": ("physalign.reasoning.world", "WorldReasoner"),
    "openai": ("physalign.reasoning.endpoint", "OpenAIReasoner"),
    "local": ("physalign.reasoning.local", "LocalReasoner"),
}
BACKENDS = tuple(_BACKENDS)


def build_reasoner(kind: str, **options) -> Reasoner:
    """The backend ``kind`` (one of ``BACKENDS``) built with ``options`` (its constructor's arguments)."""
    if kind not in _BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}. Got {kind!r}.")
    module, name = _BACKENDS[kind]
    return getattr(importlib.import_module(module), name)(**options)


__all__ = [
    "AXES", "BACKENDS", "EndpointError", "InvalidAnswer", "NoPerturbation", "Reasoner", "Reasoning",
    "ReasoningError", "TransientError", "build_reasoner",
]

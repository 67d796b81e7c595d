"""The reasoning interface: what a prompt's video should show, in words, and its one-axis variants.

DiffPhy asks an LLM to reason about a prompt (physical principles -> which entities act and which are acted
on -> interactions -> resulting phenomena) and keeps three things, a :class:`Reasoning`:

- ``attributes``: the physical attributes, one entry per physics axis of the world (``AXES``: kinematics,
  forces, materials, interactions, magnitudes), each a short phrase, plus ``semantics`` (a dict of what is
  there: object kind, colour, size, background, ...);
- ``enhanced_prompt``: the prompt rewritten with the physics spelled out (what happens);
- ``phenomena``: plain-word facts expected in the video ("the red ball bounces off the floor"), the
  questions a judge is asked (``physalign.judges.base.fact_question``).

``perturb(prompt, axis)`` is the same prompt with exactly one physics axis changed: DiReCT's micro hard
negatives and PhysHPO's semantic pairs. It raises :class:`NoPerturbation` when no other value of the axis
can happen in that scene (a ball launched upward can hit no wall).
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass

from physalign.world.scene import PHYSICS_AXES

AXES = tuple(PHYSICS_AXES)  # ("kinematics", "forces", "materials", "interactions", "magnitudes")


class ReasoningError(RuntimeError):
    """Reasoning about one prompt failed; the message says which prompt and why."""


class InvalidAnswer(ReasoningError):
    """A model's answer is not JSON, or not JSON of the expected shape."""


class EndpointError(ReasoningError):
    """The model could not be reached or refused: timeout, connection error, HTTP error."""


class TransientError(EndpointError):
    """A failure worth retrying: a timeout, a connection error, HTTP 429 or 5xx."""


class NoPerturbation(ReasoningError):
    """No other value of the axis can happen in the prompt's scene."""


@dataclass(frozen=True)
class Reasoning:
    """What a prompt's video should show. ``attributes`` has the keys ``AXES`` + ("semantics",)."""

    attributes: dict
    enhanced_prompt: str
    phenomena: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


class Reasoner(abc.ABC):
    """A backend that reasons about prompts. ``kind`` names it in caches and manifests."""

    kind: str

    @abc.abstractmethod
    def reason(self, prompt: str) -> Reasoning:
        """The physical attributes, enhanced prompt and expected phenomena of ``prompt``."""

    @abc.abstractmethod
    def perturb(self, prompt: str, axis: str) -> str:
        """``prompt`` with physics ``axis`` (one of ``AXES``) changed and nothing else."""


def check_axis(axis: str) -> None:
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}. Got {axis!r}.")

"""The world backend: exact reasoning for prompts of the world's scene grammar, needing no model.

Attributes come from ``prompt_to_scene``; perturbations from ``scene.perturb``; phenomena from the simulator.
A prompt fixes only *ranges* (drop height, speed, gap); the seed places the video inside them, and the
facts of a rollout can depend on where (a rubber ball thrown onto the ramp may or may not roll down it).
So what is guaranteed depends on ``seed``:

- ``seed=S``: the phenomena are exactly ``phenomena(scene, simulate(scene, S, frames))``, i.e. the
  ``phenomena`` field of every manifest line with seed ``S`` (and ``frames`` frames).
- ``seed=None`` (default): the facts that hold at every one of ``PROBES``, the 16 corners of the unit
  cube of initial draws and its centre, i.e. at the extremes of every range the prompt names. Each is a
  fact the simulator records for those placements; for other seeds it is recorded in nearly every case
  (on 1500 random scene-seed pairs, 2 lines missed one fact, both a bouncy ball thrown onto the ramp), not
  always. Two facts that exclude each other ("bounces off the floor", "lands on the floor without
  bouncing") never both appear, since only facts common to all probes are kept.
"""

from __future__ import annotations

import hashlib
import itertools
import random

from physalign.reasoning.base import AXES, NoPerturbation, Reasoner, Reasoning, ReasoningError, check_axis
from physalign.world import scene as grammar
from physalign.world import spec
from physalign.world.phenomena import phenomena
from physalign.world.sim import InitialDraws, simulate

PROBES = tuple(InitialDraws(*c) for c in itertools.product((0.0, 1.0), repeat=4)) + (InitialDraws(0.5, 0.5, 0.5, 0.5),)


class WorldReasoner(Reasoner):
    """Reasoning read off the world's grammar and simulator (see the module docstring for ``seed``).

    ``allow_held_out``: whether ``perturb`` may produce one of ``scene.HELD_OUT_COMBOS`` from a prompt
    that is not one (by default it does not, so train data never shows the test split's combinations).
    """

    kind = "world"

    def __init__(self, seed: int | None = None, frames: int = spec.DEFAULT_FRAMES, allow_held_out: bool = False):
        self.seed, self.frames, self.allow_held_out = seed, frames, allow_held_out

    def reason(self, prompt: str) -> Reasoning:
        scene = parse(prompt)
        facts = self.expected_phenomena(scene)
        return Reasoning(scene_attributes(scene), enhance(prompt, facts), facts)

    def expected_phenomena(self, scene: grammar.Scene) -> list[str]:
        """The rollout's facts with ``seed``; else those common to all ``PROBES``, in the centre probe's order."""
        if self.seed is not None:
            return phenomena(scene, simulate(scene, self.seed, self.frames))
        runs = [phenomena(scene, simulate(scene, 0, self.frames, draws=d)) for d in PROBES]
        return [fact for fact in runs[-1] if all(fact in run for run in runs)]

    def perturb(self, prompt: str, axis: str) -> str:
        """Deterministic in (prompt, axis): the draw is seeded by their hash."""
        check_axis(axis)
        scene = parse(prompt)
        rng = random.Random(hashlib.sha256(f"{axis}\n{prompt}".encode()).digest())
        allowed = self.allow_held_out or scene.is_held_out
        for _ in range(100):
            try:
                other = grammar.perturb(scene, axis, rng)
            except grammar.SceneError as err:
                raise NoPerturbation(str(err)) from None
            if allowed or not other.is_held_out:
                return grammar.scene_to_prompt(other)
        raise NoPerturbation(f"every change of {axis} of {prompt!r} is a held-out combination")


def parse(prompt: str) -> grammar.Scene:
    """``prompt_to_scene`` with its error (which names the words it could not place) as a ReasoningError."""
    try:
        return grammar.prompt_to_scene(prompt)
    except grammar.PromptError as err:
        raise ReasoningError(str(err)) from None


def scene_attributes(scene: grammar.Scene) -> dict:
    """{axis: value for AXES} + {"semantics": {field: value}} (``other_color`` only when there is one)."""
    attributes = {axis: getattr(scene, grammar.PHYSICS_AXES[axis]) for axis in AXES}
    semantics = {f: getattr(scene, f) for f in grammar.SEMANTIC_FIELDS if getattr(scene, f) is not None}
    return {**attributes, "semantics": semantics}


def attributes_scene(attributes: dict) -> grammar.Scene:
    """The inverse of :func:`scene_attributes`. Raises ``SceneError`` naming unknown or missing fields."""
    fields = {grammar.PHYSICS_AXES[a]: v for a, v in attributes.items() if a in grammar.PHYSICS_AXES}
    return grammar.Scene.from_dict({**fields, **attributes.get("semantics", {})}, "attributes")


def enhance(prompt: str, facts: list[str]) -> str:
    """The prompt followed by what happens: "<prompt>. The red ball accelerates downward, bounces off the
    floor and comes to rest." (the facts in the simulator's rule order, not necessarily in time order)."""
    if not facts:
        return prompt
    name = " ".join(facts[0].split()[:3]) + " "  # "the red ball ": said once, for facts that start with it
    rest = [f.removeprefix(name) for f in facts[1:]]
    said = facts[0] if not rest else f"{', '.join([facts[0], *rest[:-1]])} and {rest[-1]}"
    return f"{prompt.rstrip('. ')}. {said[0].upper()}{said[1:]}."

"""What a check is and what it sees.

A check maps a :class:`View` (the prompt's scene, the tracker's observation and the objects' kinematics)
to a :class:`Check`: passed / failed / does not apply (``None``: no second ball to test momentum with, no
bounce within the clip, too little free flight to fit), a measured value and a detail a person can read.
The evaluator knows the prompt's scene but not the simulator's rollout: start positions and speeds are
random per video, so every check tests a law or a fact the prompt states, never a reference trajectory.
The physical checks (PC) live in ``physics.py``, the semantic ones (SA) in ``semantics.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from physalign.eval import motion
from physalign.eval.motion import Body
from physalign.eval.track import Observation
from physalign.world import spec
from physalign.world.scene import Scene


@dataclass
class Check:
    name: str
    group: str  # "PC" or "SA"
    passed: bool | None  # None: does not apply to this scene
    value: float | None = None
    detail: str = ""

    def __post_init__(self) -> None:  # plain Python types, whatever numpy handed in
        self.passed = None if self.passed is None else bool(self.passed)
        self.value = None if self.value is None else float(self.value)

    def to_dict(self) -> dict:
        value = None if self.value is None or not math.isfinite(self.value) else round(self.value, 4)
        return {"name": self.name, "group": self.group, "passed": self.passed, "value": value, "detail": self.detail}


@dataclass(frozen=True)
class View:
    """Everything a check may look at: the scene, the tracker's observation, the derived bodies and the
    video's own centroid noise."""

    scene: Scene
    obs: Observation
    bodies: dict[str, Body]
    noise: motion.Noise  # the centroid noise measured from this video
    memo: dict = field(default_factory=dict, compare=False)  # fits that several checks share, by name

    def once(self, key: str, compute):
        """``compute()``, computed once per view (a fit several checks and the errors read)."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    @property
    def primary(self) -> Body:
        return self.bodies["primary"]

    @property
    def start_window(self) -> tuple[int, int]:
        """The primary's frames from its first sighting to its first impact (``motion.start_window``)."""
        return self.once("start_window", lambda: motion.start_window(self.primary))

    @property
    def g(self) -> float:
        return spec.GRAVITY[self.scene.force]


def unseen(name: str, group: str, who: str) -> Check:
    """The failed check of an object that is never visible."""
    return Check(name, group, False, None, f"{who} never seen")


def view(obs: Observation, scene: Scene) -> View:
    bodies = motion.bodies(obs, scene)
    return View(scene, obs, bodies, motion.measure_noise(bodies))

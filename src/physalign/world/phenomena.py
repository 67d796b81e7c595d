"""Phenomena: plain-word facts about a video, read off the scene and its simulated rollout.

Every fact is true of the rollout it came from (the tests check each against the trajectory), so these
lists can serve as the ground-truth answers DiffPhy's judge is asked about.
"""

from __future__ import annotations

import numpy as np

from physalign.world import spec
from physalign.world.scene import Scene
from physalign.world.sim import ObjectTrack, Rollout

REST_SPEED = 0.5  # units/s: slower than this over the last two frames counts as at rest
MOVE_DISTANCE = 1.0  # units: a net displacement smaller than this is "no motion"


def phenomena(scene: Scene, rollout: Rollout) -> list[str]:
    """Facts about ``rollout``, e.g. ["the red ball accelerates downward", "the red ball bounces off the floor"]."""
    primary = rollout.object("primary")
    name = f"the {primary.color} {primary.kind}"
    facts = _gravity_facts(scene, primary, name) + _motion_facts(primary, name)
    facts += _contact_facts(scene, rollout, name)
    if _at_rest(primary) and _on_support(primary, rollout):
        facts.append(f"{name} comes to rest")
    return facts


def _gravity_facts(scene: Scene, obj: ObjectTrack, name: str) -> list[str]:
    if scene.force == "none":
        still = np.ptp(obj.pos, axis=0).max() < MOVE_DISTANCE
        return [f"{name} floats without falling"] + ([f"{name} stays where it is"] if still else [])
    facts = []
    falls = bool((np.diff(obj.vel[:, 1]) < -1e-6).any())
    if falls:
        facts.append(f"{name} accelerates downward")
        if scene.force == "low":
            facts.append(f"{name} falls slowly")
    if scene.kinematics == "launched_up" and obj.vel[0, 1] > 0:
        facts.append(f"{name} rises, slows down and falls back")
    return facts


def _motion_facts(obj: ObjectTrack, name: str) -> list[str]:
    dx = obj.pos[-1, 0] - obj.pos[0, 0]
    if abs(dx) < MOVE_DISTANCE:
        return []
    return [f"{name} moves to the {'right' if dx > 0 else 'left'}"]


def _contact_facts(scene: Scene, rollout: Rollout, name: str) -> list[str]:
    facts: list[str] = []
    for c in rollout.contacts:
        fact = _describe(c.a, c.b, c.speed_out > REST_SPEED, scene, rollout, name)
        if fact and fact not in facts:
            facts.append(fact)
    return facts


def _describe(a: str, b: str, rebounds: bool, scene: Scene, rollout: Rollout, name: str) -> str | None:
    if a != "primary":
        return None
    if b == "floor":
        return f"{name} bounces off the floor" if rebounds else f"{name} lands on the floor without bouncing"
    if b == "wall":
        return f"{name} hits the wall and bounces back" if rebounds else f"{name} hits the wall and stops"
    if b == "ramp":
        return f"{name} lands on the ramp"
    other = rollout.object("other")
    dx = other.pos[-1, 0] - other.pos[0, 0]
    if abs(dx) < MOVE_DISTANCE:
        return f"{name} collides with the {other.color} ball"
    return f"{name} sets the {other.color} ball moving to the {'right' if dx > 0 else 'left'}"


def _at_rest(obj: ObjectTrack) -> bool:
    return bool(np.abs(obj.vel[-2:]).max() < REST_SPEED)


def _on_support(obj: ObjectTrack, rollout: Rollout) -> bool:
    """Resting on the floor or the ramp (not floating still in zero gravity)."""
    on_floor = obj.pos[-1, 1] - obj.half_size < spec.FLOOR_Y + 0.2
    touched_ramp = any(c.b == "ramp" and c.a == obj.name for c in rollout.contacts)
    return bool(on_floor or touched_ramp)

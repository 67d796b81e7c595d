"""Physically corrupted versions of simulator videos: the evaluator must flag them.

Each corruption edits the rollout's trajectory (or an object's look) and re-renders, so the result is a
clean image of a wrong physics. ``corrupt`` returns None where a kind does not apply to a scene (no
mid-air moment to freeze in zero gravity, no bounce to add energy to...). The same corruptions will serve
later as PhysHPO's losers and the judge's negatives.
"""

from __future__ import annotations

import copy
import random
from typing import Callable

import numpy as np

from physalign.world import spec
from physalign.world.render import render
from physalign.world.scene import Scene
from physalign.world.sim import Rollout, simulate

OFFSCREEN = -1000.0


def _primary(rollout: Rollout) -> Rollout:
    return copy.deepcopy(rollout)


def _air_frames(rollout: Rollout, margin: float = 2.0) -> np.ndarray:
    obj = rollout.objects[0]
    return np.flatnonzero(obj.pos[:, 1] - obj.half_size > spec.FLOOR_Y + margin)


def teleport(scene: Scene, rollout: Rollout, rng: random.Random):
    """From a middle frame on, the object is displaced by more than it could travel in a frame."""
    from physalign.eval.checks import JUMP_SLACK, max_speed

    out = _primary(rollout)
    obj = out.objects[0]
    k = rng.randrange(4, len(obj.pos) - 3)
    jump = max_speed(scene) / spec.FPS + JUMP_SLACK + 1.5
    x = obj.pos[k:, 0]
    room_right = spec.WORLD_SIZE - obj.half_size - x.max()
    room_left = x.min() - obj.half_size
    if max(room_left, room_right) < jump:
        return None
    obj.pos[k:, 0] += jump if room_right >= jump else -jump
    return out


def freeze_midair(scene: Scene, rollout: Rollout, rng: random.Random):
    """The object stops in the air for several frames, then goes on."""
    if spec.GRAVITY[scene.force] == 0:
        return None
    air = [f for f in _air_frames(rollout) if 1 <= f <= len(rollout.times) - 6]
    if not air:
        return None
    out = _primary(rollout)
    k = rng.choice(air)
    out.objects[0].pos[k : k + 5] = out.objects[0].pos[k]
    return out


def vanish(scene: Scene, rollout: Rollout, rng: random.Random):
    """The object disappears for a few frames."""
    out = _primary(rollout)
    k = rng.randrange(2, len(rollout.times) - 4)
    out.objects[0].pos[k : k + 3] = OFFSCREEN
    return out


def pass_through_floor(scene: Scene, rollout: Rollout, rng: random.Random):
    """At the first floor impact the object keeps falling, through the floor."""
    hits = [c for c in rollout.contacts if c.a == "primary" and c.b == "floor" and c.speed_in > 3]
    if not hits:
        return None
    out = _primary(rollout)
    obj, g = out.objects[0], spec.GRAVITY[scene.force]
    k = hits[0].frame - 1
    t = (np.arange(len(obj.pos)) - k) / spec.FPS
    later = t > 0
    obj.pos[later, 0] = obj.pos[k, 0] + obj.vel[k, 0] * t[later]
    obj.pos[later, 1] = obj.pos[k, 1] + obj.vel[k, 1] * t[later] - 0.5 * g * t[later] ** 2
    return out


def gain_energy(scene: Scene, rollout: Rollout, rng: random.Random):
    """The first floor bounce sends the object up faster than it came down."""
    hits = [c for c in rollout.contacts if c.a == "primary" and c.b == "floor" and c.speed_in > 8]
    if not hits or spec.GRAVITY[scene.force] == 0:
        return None
    out = _primary(rollout)
    obj, g, c = out.objects[0], spec.GRAVITY[scene.force], hits[0]
    ground = spec.FLOOR_Y + obj.half_size
    v_up = min(1.4 * c.speed_in, np.sqrt(2 * g * (spec.WORLD_SIZE - 1 - obj.half_size - ground)))
    if v_up < 1.2 * c.speed_in or len(obj.pos) - c.frame < 3:
        return None
    t = np.arange(len(obj.pos)) / spec.FPS - c.time
    after = t > 0
    y = ground + v_up * t - 0.5 * g * t**2
    obj.pos[after, 1] = np.maximum(y[after], ground)
    obj.pos[after, 0] = obj.pos[c.frame - 1, 0] + obj.vel[c.frame - 1, 0] * t[after]
    obj.pos[:, 0] = np.clip(obj.pos[:, 0], obj.half_size, spec.WORLD_SIZE - obj.half_size)
    return out


def gravity_upward(scene: Scene, rollout: Rollout, rng: random.Random):
    """Gravity pulls up: the object accelerates toward the top of the frame (and is held there)."""
    g = spec.GRAVITY[scene.force]
    if g == 0:
        return None
    out = _primary(rollout)
    obj = out.objects[0]
    t = rollout.times
    y = obj.pos[0, 1] + obj.vel[0, 1] * t + 0.5 * g * t**2
    obj.pos[:, 1] = np.clip(y, spec.FLOOR_Y + obj.half_size, spec.WORLD_SIZE - obj.half_size)
    obj.pos[:, 0] = np.clip(obj.pos[0, 0] + obj.vel[0, 0] * t, obj.half_size, spec.WORLD_SIZE - obj.half_size)
    return out


def wrong_gravity(scene: Scene, rollout: Rollout, rng: random.Random, seed: int = 0):
    """The scene simulated under the other non-zero gravity (low <-> normal), shown for the original prompt."""
    if scene.force == "none" or not _air_frames(rollout).size:
        return None
    other = {"normal": "low", "low": "normal"}[scene.force]
    return simulate(Scene(**{**scene.to_dict(), "force": other}), seed, len(rollout.times))


def size_change(scene: Scene, rollout: Rollout, rng: random.Random):
    """The object swells to nearly twice its size part-way through (spliced in by ``corrupt``)."""
    out = _primary(rollout)
    out.objects[0].half_size *= 1.8
    return out


def color_change(scene: Scene, rollout: Rollout, rng: random.Random):
    """The object turns into another colour part-way through (spliced in by ``corrupt``)."""
    out = _primary(rollout)
    used = {scene.color, scene.other_color}
    out.objects[0].color = rng.choice([c for c in spec.OBJECT_COLORS if c not in used])
    return out


CORRUPTIONS: dict[str, Callable] = {
    "teleport": teleport,
    "freeze_midair": freeze_midair,
    "vanish": vanish,
    "pass_through_floor": pass_through_floor,
    "gain_energy": gain_energy,
    "gravity_upward": gravity_upward,
    "wrong_gravity": wrong_gravity,
    "size_change": size_change,
    "color_change": color_change,
}
_SPLICED = {"size_change", "color_change"}  # the clean video up to a middle frame, the changed one after


def corrupt(scene: Scene, rollout: Rollout, kind: str, rng: random.Random, seed: int = 0, resolution: int = 32):
    """A corrupted video (T, H, W, 3) uint8 of ``scene``, or None if ``kind`` does not apply to it."""
    if kind not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {kind!r}; available: {sorted(CORRUPTIONS)}")
    fn = CORRUPTIONS[kind]
    changed = fn(scene, rollout, rng, seed) if kind == "wrong_gravity" else fn(scene, rollout, rng)
    if changed is None:
        return None
    video = render(scene, changed, resolution, resolution)
    if kind in _SPLICED:
        k = rng.randrange(3, len(rollout.times) - 3)
        video = np.concatenate([render(scene, rollout, resolution, resolution)[:k], video[k:]])
    return video

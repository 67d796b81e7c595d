"""Physically corrupted versions of simulator videos, which the evaluator must flag.

Every corruption is a real violation *for that scene*, visible in the clip: a kind's ``candidates`` are the
places (frames, sizes) where it is, found from the rollout's ground truth, and the list is empty where the
kind does not apply (no mid-air moment to freeze in zero gravity, no bounce to add energy to...). Physical
kinds change the primary object's trajectory and re-render it; appearance kinds (vanish, colour, size)
re-render the object differently from some frame on. The same corruptions can serve as hard negatives.

    applicable(scene, rollout)                                    # e.g. ["teleport", "vanish", ...]
    video = corrupt(video, scene, rollout, "teleport", random.Random(0))   # (T, H, W, 3) uint8
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from physalign.world import spec
from physalign.world.render import render
from physalign.world.scene import Scene
from physalign.world.sim import STRUCTURE_FRICTION, Contact, Rollout

AIR_CLEARANCE = 1.0  # units between the object and every surface for it to be "in the air"
# A teleport jumps farther in one frame than any motion of the world allows: a fall from the top of the
# frame under normal gravity reaches sqrt(2 x 60 x 29) ~ 59 units/s, ~5 units per frame.
TELEPORT_MIN = 6.0
FREEZE_FRAMES = 3  # the object stays put for this many frames after the frozen one, then goes on
FREEZE_MIN_SPEED = 9.0  # units/s: stopping dead from this speed (0.75 units per frame) is a visible jolt
VANISH_FRAMES = 3
GAIN = 1.3  # a corrupted bounce leaves 30% faster than it came in
MIN_IMPACT_SPEED = 8.0  # units/s: slower floor contacts are re-touches, not falls
MIN_FALL = 2.0  # units (two pixels): a gained bounce must follow a fall this high to be compared with it
SIZE_FACTOR = 1.6  # half-size after a size change
MIN_VISIBLE_FRAMES = 3  # frames from the onset on in which the violation shows
GRAVITY_CHANGE_FRAMES = 5  # frames in the air that show a wrong gravity
REST_SPEED = 0.5  # units/s: a bounce slower than this ends at rest on the floor
# A whole flight under this share of the scene's gravity: the base model's own error (its fitted over true
# gravity has a median of 0.55 on its samples), between the world's levels rather than on one of them.
WEAK_GRAVITY = 0.55
# Lawful-looking violations: each smooth, each a parabola or a line between its events.
BOUNCE_GAP = 1.0  # units: a bounce that turns this far above the floor (a pixel of daylight under it)
RESTITUTION_SHIFT = 0.3  # a rebound as another material's whose restitution differs by this much or more
VISIBLE_SHIFT = 1.0  # units: a corrupted rebound's height leaves the true one's by a pixel or more in some frame
# Slow motion: the whole clip played at this speed (every object's motion resampled at SLOW_MOTION x the time),
# so speeds look SLOW_MOTION and accelerations SLOW_MOTION^2 times the world's: gravity at a quarter.
SLOW_MOTION = 0.5
# A frictionless slide is a straight line where friction bends the path into a parabola: its bend off the
# best straight line over the slide in view (mu g T^2 / 12 for a slide of T seconds) is at least this (units).
VISIBLE_BEND = 0.5


class NotApplicable(ValueError):
    """The corruption cannot happen in this scene; the message says why."""


@dataclass(frozen=True)
class Corruption:
    group: str  # "physical" (trajectory) or "appearance"
    candidates: Callable[[Scene, Rollout], list]  # where the violation is real and visible
    apply: Callable[[np.ndarray, Scene, Rollout, Any], np.ndarray]  # (video, scene, rollout, candidate)
    needs: str  # what a scene must have for the kind to apply (said when it does not)


def check_kinds(kinds) -> None:
    """Raise ValueError naming any of ``kinds`` that is not a corruption, with the available ones."""
    unknown = sorted(set(kinds) - set(CORRUPTIONS))
    if unknown:
        raise ValueError(f"unknown corruption kinds {unknown}; available: {sorted(CORRUPTIONS)}")


def applicable(scene: Scene, rollout: Rollout) -> list[str]:
    """Names of the corruptions that apply to this scene and rollout."""
    return [name for name, c in CORRUPTIONS.items() if c.candidates(scene, rollout)]


def corrupt(video: np.ndarray, scene: Scene, rollout: Rollout, kind: str, rng: random.Random) -> np.ndarray:
    """A corrupted copy (T, H, W, 3) uint8 of ``video``, the render of ``rollout``. Raises
    :class:`NotApplicable` if ``kind`` does not apply here and ``KeyError`` if it is unknown."""
    if kind not in CORRUPTIONS:
        raise KeyError(f"unknown corruption {kind!r}; available: {sorted(CORRUPTIONS)}")
    c = CORRUPTIONS[kind]
    options = c.candidates(scene, rollout)
    if not options:
        raise NotApplicable(f"{kind} does not apply to this clip: it needs {c.needs}")
    return c.apply(np.asarray(video), scene, rollout, rng.choice(options))


def jittered(rollout: Rollout, sigma: float, rng: np.random.Generator) -> Rollout:
    """``rollout`` with independent Gaussian noise of std ``sigma`` (units: pixels at 32 x 32) on every
    object's position in every frame: a lawful trajectory seen through a noisy centroid, as a generator's
    frames show one. Not a violation: the evaluator must pass it (its calibration)."""
    objects = tuple(replace(o, pos=o.pos + rng.normal(0.0, sigma, o.pos.shape)) for o in rollout.objects)
    return replace(rollout, objects=objects)


# --------------------------------------------------------------------------------------------- helpers


def _with_primary(rollout: Rollout, **changes) -> Rollout:
    primary = replace(rollout.objects[0], **changes)
    return replace(rollout, objects=(primary,) + tuple(rollout.objects[1:]))


def _render_like(video: np.ndarray, scene: Scene, rollout: Rollout, start: int = 0) -> np.ndarray:
    """``video`` up to frame ``start``, the render of ``rollout`` (at the video's size) from there."""
    out = video.copy()
    out[start:] = render(scene, rollout, video.shape[1], video.shape[2])[start:]
    return out


def surface_gaps(rollout: Rollout, pos: np.ndarray) -> dict[str, np.ndarray]:
    """Free distance (T,) from the primary object at ``pos`` (T, 2) to each surface of the scene: floor,
    wall, ramp, second ball. Near the ramp or the ball a block counts as its circumscribed circle."""
    obj = rollout.objects[0]
    r, corner = obj.half_size, obj.half_size * (math.sqrt(2) if obj.kind == "block" else 1.0)
    gaps = {"floor": pos[:, 1] - r - spec.FLOOR_Y}
    if rollout.wall_side is not None:
        side = 1.0 if rollout.wall_side == "right" else -1.0
        gaps["wall"] = side * (spec.WALL_X[rollout.wall_side] - pos[:, 0]) - r
    if rollout.ramp_rises_to is not None:
        gaps["ramp"] = _triangle_distance(pos, np.array(spec.ramp_vertices(rollout.ramp_rises_to))) - corner
    for other in rollout.objects[1:]:
        gaps["other"] = np.hypot(*(pos - other.pos).T) - corner - other.half_size
    return gaps


def clearance(rollout: Rollout, pos: np.ndarray | None = None, skip: tuple[str, ...] = ()) -> np.ndarray:
    """Least free distance (T,) of the primary (at ``pos``, default its own) to the surfaces not skipped."""
    pos = rollout.objects[0].pos if pos is None else pos
    gaps = [g for name, g in surface_gaps(rollout, pos).items() if name not in skip]
    return np.min(gaps, axis=0) if gaps else np.full(len(pos), np.inf)


def _triangle_distance(pos: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Distance (T,) from points to a counter-clockwise triangle (0 inside)."""
    edges = np.roll(corners, -1, 0) - corners  # (3, 2)
    rel = pos[:, None] - corners[None]  # (T, 3, 2)
    t = np.clip((rel * edges).sum(-1) / (edges * edges).sum(-1), 0, 1)
    dist = np.hypot(*(rel - t[..., None] * edges).transpose(2, 0, 1)).min(1)
    inside = (edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0] >= 0).all(1)
    return np.where(inside, 0.0, dist)


def _in_frame(pos: np.ndarray, r: float) -> np.ndarray:
    """(T,) the object lies wholly inside the frame."""
    return ((pos - r >= 0) & (pos + r <= spec.WORLD_SIZE)).all(1)


def ballistic(p0, v0, g: float, times: np.ndarray, floor: float | None = None, restitution: float = 0.0) -> np.ndarray:
    """Positions (len(times), 2) of free flight from ``p0``, ``v0`` at time 0 under vertical acceleration
    ``-g``. With ``floor`` (the lowest height of the centre) it bounces there, leaving ``restitution``
    times as fast as it hit (the corrupted bounces use ``restitution > 1``)."""
    x = p0[0] + v0[0] * np.asarray(times)
    if floor is None:
        return np.stack([x, p0[1] + v0[1] * times - 0.5 * g * times**2], 1)
    y = np.empty(len(times))
    h, vy, t0 = p0[1], v0[1], 0.0
    for i, t in enumerate(times):
        while g > 0 and h + vy * (t - t0) - 0.5 * g * (t - t0) ** 2 < floor:
            hit = t0 + (vy + math.sqrt(max(vy * vy + 2 * g * (h - floor), 0.0))) / g
            h, vy, t0 = floor, restitution * abs(vy - g * (hit - t0)), hit
            if vy < REST_SPEED:  # too slow to leave the floor again: at rest
                h, vy, t0, g = floor, 0.0, hit, 0.0
        y[i] = h + vy * (t - t0) - 0.5 * g * (t - t0) ** 2
    return np.stack([x, y], 1)


def _fly_on(scene: Scene, rollout: Rollout, k: int, g: float | None = None, **bounce) -> np.ndarray:
    """The primary's trajectory, in free flight under ``g`` (default the scene's) from frame ``k`` on."""
    obj = rollout.objects[0]
    g = spec.GRAVITY[scene.force] if g is None else g
    pos = obj.pos.copy()
    pos[k:] = ballistic(obj.pos[k], obj.vel[k], g, rollout.times[k:] - rollout.times[k], **bounce)
    return pos


def _moved(video: np.ndarray, scene: Scene, rollout: Rollout, pos: np.ndarray) -> np.ndarray:
    return _render_like(video, scene, _with_primary(rollout, pos=pos))


# -------------------------------------------------------------------------------------------- physical


def _teleport_candidates(scene: Scene, rollout: Rollout) -> list[tuple[int, float]]:
    """(frame, dx): from ``frame`` on, the object is shifted sideways by more than twice its fastest step
    (and TELEPORT_MIN), landing in view and clear of every surface."""
    obj = rollout.objects[0]
    jump = max(TELEPORT_MIN, 2 * np.hypot(*np.diff(obj.pos, axis=0).T).max() + 2.0)
    out = []
    for k in range(2, len(obj.pos) - MIN_VISIBLE_FRAMES + 1):
        for dx in (-jump, jump):
            pos = obj.pos.copy()
            pos[k:, 0] += dx
            if _in_frame(pos[k:], obj.half_size).all() and (clearance(rollout, pos, skip=("floor",))[k:] > 0).all():
                out.append((k, dx))
    return out


def _teleport(video, scene, rollout, choice) -> np.ndarray:
    k, dx = choice
    pos = rollout.objects[0].pos.copy()
    pos[k:, 0] += dx
    return _moved(video, scene, rollout, pos)


def _freeze_candidates(scene: Scene, rollout: Rollout) -> list[int]:
    """Frames at which the object is in the air under gravity and moving fast enough to be seen stopping."""
    if spec.GRAVITY[scene.force] == 0:
        return []
    obj, air = rollout.objects[0], clearance(rollout) > AIR_CLEARANCE
    speed = np.hypot(*obj.vel.T)
    last = len(obj.pos) - FREEZE_FRAMES - MIN_VISIBLE_FRAMES
    return [k for k in range(1, last + 1) if air[k] and speed[k] >= FREEZE_MIN_SPEED]


def _freeze(video, scene, rollout, k: int) -> np.ndarray:
    """Held at frame k's position for FREEZE_FRAMES more frames; then the motion resumes where it stopped."""
    pos = rollout.objects[0].pos
    held = np.concatenate([pos[: k + 1], np.repeat(pos[k : k + 1], FREEZE_FRAMES, 0), pos[k + 1 :]])
    return _moved(video, scene, rollout, held[: len(pos)])


def _floor_hits(rollout: Rollout) -> list[Contact]:
    return [c for c in rollout.contacts if c.a == "primary" and c.b == "floor" and c.speed_in >= MIN_IMPACT_SPEED]


def _through_candidates(scene: Scene, rollout: Rollout) -> list[int]:
    """The first floor impact, if falling on through the floor sinks the object over a unit deep in view."""
    hits = _floor_hits(rollout)[:1]
    r = rollout.objects[0].half_size
    return [c.frame for c in hits if (spec.FLOOR_Y - (_fly_on(scene, rollout, c.frame - 1)[c.frame :, 1] - r)).max() > 1.0]


def _through(video, scene, rollout, frame: int) -> np.ndarray:
    return _moved(video, scene, rollout, _fly_on(scene, rollout, frame - 1))


def _gained(scene: Scene, rollout: Rollout, contact: Contact) -> np.ndarray:
    """The trajectory from the frame before ``contact`` on, every floor bounce leaving GAIN x faster."""
    floor = spec.FLOOR_Y + rollout.objects[0].half_size
    return _fly_on(scene, rollout, contact.frame - 1, floor=floor, restitution=GAIN)


def _gain_candidates(scene: Scene, rollout: Rollout) -> list[Contact]:
    """Floor impacts that end a fall of at least MIN_FALL (so the rebound has a height to be compared
    with) and whose faster rebound stays in view and clear of walls, ramp and ball for MIN_VISIBLE_FRAMES
    frames (so it shows as a bounce off the floor, nothing else)."""
    out, obj = [], rollout.objects[0]
    for c in _floor_hits(rollout):
        if _fall_height(rollout, c.frame) < MIN_FALL:
            continue
        shown = slice(c.frame, c.frame + MIN_VISIBLE_FRAMES)
        if len(obj.pos) - c.frame < MIN_VISIBLE_FRAMES:
            continue
        pos = _gained(scene, rollout, c)
        if _in_frame(pos[shown], obj.half_size).all() and (clearance(rollout, pos, skip=("floor",))[c.frame - 1 :] > AIR_CLEARANCE).all():
            out.append(c)
    return out


def _fall_height(rollout: Rollout, frame: int) -> float:
    """How far the primary's bottom fell onto the floor before the impact at ``frame``: from its highest
    point since the previous floor impact (or the start)."""
    before = [c.frame for c in rollout.contacts if c.a == "primary" and c.b == "floor" and c.frame < frame]
    start = before[-1] if before else 0
    obj = rollout.objects[0]
    return float((obj.pos[start:frame, 1] - obj.half_size - spec.FLOOR_Y).max(initial=0.0))


def _gain(video, scene, rollout, contact: Contact) -> np.ndarray:
    return _moved(video, scene, rollout, _gained(scene, rollout, contact))


def _upward_candidates(scene: Scene, rollout: Rollout) -> list[int]:
    """Gravity pulls up from the first frame: applies under gravity, if the rise stays in view for
    MIN_VISIBLE_FRAMES + 2 frames (enough to see it accelerate)."""
    g = spec.GRAVITY[scene.force]
    if g == 0:
        return []
    pos = _fly_on(scene, rollout, 0, g=-g)
    shown = _in_frame(pos, rollout.objects[0].half_size)
    return [0] if shown[: MIN_VISIBLE_FRAMES + 2].all() else []


def _upward(video, scene, rollout, k: int) -> np.ndarray:
    return _moved(video, scene, rollout, _fly_on(scene, rollout, k, g=-spec.GRAVITY[scene.force]))


def _wrong_gravity_candidates(scene: Scene, rollout: Rollout) -> list[float]:
    """Other gravity levels under which the object, from its real start, flies (bouncing on the floor
    with its material) clear of walls, ramp and ball and in view for GRAVITY_CHANGE_FRAMES frames."""
    return _flights(scene, rollout, [g for g in spec.GRAVITY.values() if g != spec.GRAVITY[scene.force]])


def _weak_gravity_candidates(scene: Scene, rollout: Rollout) -> list[float]:
    """The scene's gravity times WEAK_GRAVITY, when the object so flies as :func:`_wrong_gravity_candidates`
    says: a smooth, lawful-looking parabola under a gravity that is none of the world's levels."""
    g = spec.GRAVITY[scene.force]
    return _flights(scene, rollout, [WEAK_GRAVITY * g]) if g else []


def _flights(scene: Scene, rollout: Rollout, gravities: list[float]) -> list[float]:
    obj = rollout.objects[0]
    floor = spec.FLOOR_Y + obj.half_size
    restitution = spec.MATERIALS[scene.material].restitution
    out = []
    for g in gravities:
        pos = _fly_on(scene, rollout, 0, g=g, floor=floor, restitution=restitution)
        clear = clearance(rollout, pos, skip=("floor",)) > AIR_CLEARANCE
        airborne = clearance(rollout, pos) > AIR_CLEARANCE
        shown = clear & _in_frame(pos, obj.half_size)
        if shown.all() and airborne.sum() >= GRAVITY_CHANGE_FRAMES:
            out.append(g)
    return out


def _wrong_gravity(video, scene, rollout, g: float) -> np.ndarray:
    floor = spec.FLOOR_Y + rollout.objects[0].half_size
    pos = _fly_on(scene, rollout, 0, g=g, floor=floor, restitution=spec.MATERIALS[scene.material].restitution)
    return _moved(video, scene, rollout, pos)


def _early_bounce_candidates(scene: Scene, rollout: Rollout) -> list[tuple[Contact, int]]:
    """(impact, frame): floor impacts of a bouncing material ending a free fall, where the object, from the
    last frame of that fall at least BOUNCE_GAP + AIR_CLEARANCE clear of every surface, bounces BOUNCE_GAP above
    the floor instead (the material's restitution, every later bounce as high), showing MIN_VISIBLE_FRAMES
    frames of rebound in view and clear of walls, ramp and ball."""
    if spec.MATERIALS[scene.material].restitution == 0:
        return []
    clear = clearance(rollout)
    out = []
    for c in _floor_hits(rollout):
        high = np.flatnonzero(clear[: c.frame] > BOUNCE_GAP + AIR_CLEARANCE)
        k = int(high[-1]) if high.size else -1
        if k >= 0 and (clear[k : c.frame] > 0).all() and _rebound_shown(rollout, c, _early_bounced(scene, rollout, k), AIR_CLEARANCE):
            out.append((c, k))
    return out


def _early_bounced(scene: Scene, rollout: Rollout, k: int) -> np.ndarray:
    floor = spec.FLOOR_Y + rollout.objects[0].half_size + BOUNCE_GAP
    return _fly_on(scene, rollout, k, floor=floor, restitution=spec.MATERIALS[scene.material].restitution)


def _rebound_shown(rollout: Rollout, contact: Contact, pos: np.ndarray, clear: float) -> bool:
    """The trajectory ``pos`` from the frame before ``contact`` on is in view for MIN_VISIBLE_FRAMES frames
    after it and clear of walls, ramp and ball (by ``clear``) to the end."""
    obj, k = rollout.objects[0], contact.frame
    if len(obj.pos) - k < MIN_VISIBLE_FRAMES:
        return False
    shown = _in_frame(pos[k : k + MIN_VISIBLE_FRAMES], obj.half_size).all()
    return bool(shown and (clearance(rollout, pos, skip=("floor",))[k - 1 :] > clear).all())


def _early_bounce(video, scene, rollout, choice: tuple[Contact, int]) -> np.ndarray:
    return _moved(video, scene, rollout, _early_bounced(scene, rollout, choice[1]))


def _restitution_candidates(scene: Scene, rollout: Rollout) -> list[tuple[Contact, float]]:
    """(impact, restitution): from the first floor impact after a fall of at least MIN_FALL, every bounce as
    a material whose restitution differs from the scene's by RESTITUTION_SHIFT or more (a rubber ball landing
    dead like clay, clay bouncing like rubber), where the rebound stays in view and clear of walls, ramp and
    ball for MIN_VISIBLE_FRAMES frames and whose height leaves the true one's by VISIBLE_SHIFT in some frame."""
    e = spec.MATERIALS[scene.material].restitution
    others = sorted({m.restitution for m in spec.MATERIALS.values() if abs(m.restitution - e) >= RESTITUTION_SHIFT})
    hits = [c for c in _floor_hits(rollout) if _fall_height(rollout, c.frame) >= MIN_FALL][:1]
    out = []
    for c, e2 in ((c, e2) for c in hits for e2 in others):
        pos = _rebounded(scene, rollout, c, e2)
        moved = np.abs(pos[c.frame :, 1] - rollout.objects[0].pos[c.frame :, 1]).max(initial=0.0)
        if moved >= VISIBLE_SHIFT and _rebound_shown(rollout, c, pos, AIR_CLEARANCE):
            out.append((c, e2))
    return out


def _rebounded(scene: Scene, rollout: Rollout, contact: Contact, restitution: float) -> np.ndarray:
    floor = spec.FLOOR_Y + rollout.objects[0].half_size
    return _fly_on(scene, rollout, contact.frame - 1, floor=floor, restitution=restitution)


def _restitution(video, scene, rollout, choice: tuple[Contact, float]) -> np.ndarray:
    return _moved(video, scene, rollout, _rebounded(scene, rollout, *choice))


def _frictionless_candidates(scene: Scene, rollout: Rollout) -> list[int]:
    """A block sliding on the floor under gravity (nothing else in its way) that keeps its start velocity:
    applies where friction would bend the path in view by VISIBLE_BEND or more (see there)."""
    if not (scene.kind == "block" and scene.kinematics.startswith("rolled") and scene.interaction == "none"):
        return []
    mu_g = STRUCTURE_FRICTION * spec.MATERIALS[scene.material].friction * spec.GRAVITY[scene.force]
    pos = _slid(rollout)
    shown = np.flatnonzero(_in_frame(pos, rollout.objects[0].half_size))
    duration = (shown.max(initial=0) - shown.min(initial=0)) / spec.FPS if shown.size else 0.0
    return [0] if mu_g * duration**2 / 12 >= VISIBLE_BEND and shown.size >= MIN_VISIBLE_FRAMES else []


def _slid(rollout: Rollout) -> np.ndarray:
    obj = rollout.objects[0]
    return obj.pos[0] + obj.vel[0] * (rollout.times - rollout.times[0])[:, None]


def _frictionless(video, scene, rollout, k: int) -> np.ndarray:
    return _moved(video, scene, rollout, _slid(rollout))


def _slow_candidates(scene: Scene, rollout: Rollout) -> list[int]:
    """Under gravity, where the slowed primary flies for GRAVITY_CHANGE_FRAMES frames or more (clear of every
    surface by AIR_CLEARANCE): the quartered gravity shows there. (In zero gravity a slowed clip is the same
    world at a lower speed, no violation.)"""
    if spec.GRAVITY[scene.force] == 0:
        return []
    slowed = _slowed(rollout)
    airborne = clearance(rollout, slowed.objects[0].pos) > AIR_CLEARANCE
    shown = _in_frame(slowed.objects[0].pos, rollout.objects[0].half_size)
    longest = max((b - a for a, b in _runs(airborne & shown)), default=0)
    return [0] if longest >= GRAVITY_CHANGE_FRAMES else []


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _slowed(rollout: Rollout) -> Rollout:
    """``rollout`` played at SLOW_MOTION (= 1/2) speed: frame k shows the world at time k dt / 2, so even frames are
    the rollout's frames 0..T/2 and odd ones lie halfway between two. A midpoint is the cubic Hermite one,
    ``(p0 + p1) / 2 + (v0 - v1) dt / 8``, exact for any constant acceleration (flight, a slide); across an impact
    it is extrapolated from the frame on the impact's far side under that frame's own acceleration (the
    velocity change over its other neighbouring interval)."""
    assert SLOW_MOTION == 0.5, "the midpoints below resample at half speed"
    dt = float(rollout.times[1] - rollout.times[0])
    n = len(rollout.times)
    objects = []
    for obj in rollout.objects:
        pos = np.empty_like(obj.pos)
        for k in range(n):
            j, odd = divmod(k, 2)
            if not odd:
                pos[k] = obj.pos[j]
                continue
            hits = [c.time for c in rollout.contacts if c.frame == j + 1 and obj.name in (c.a, c.b)]
            if not hits:
                pos[k] = (obj.pos[j] + obj.pos[j + 1]) / 2 + (obj.vel[j] - obj.vel[j + 1]) * dt / 8
            elif min(hits) > rollout.times[j] + dt / 2 or j + 2 >= n:  # the midpoint is before the impact
                acc = (obj.vel[j] - obj.vel[j - 1]) / dt if j >= 1 else np.zeros(2)
                pos[k] = obj.pos[j] + obj.vel[j] * dt / 2 + acc * dt**2 / 8
            else:  # after it: back from frame j + 1
                acc = (obj.vel[j + 2] - obj.vel[j + 1]) / dt
                pos[k] = obj.pos[j + 1] - obj.vel[j + 1] * dt / 2 + acc * dt**2 / 8
        objects.append(replace(obj, pos=pos, vel=obj.vel * SLOW_MOTION))
    return replace(rollout, objects=tuple(objects))


def _slow(video, scene, rollout, k: int) -> np.ndarray:
    return _render_like(video, scene, _slowed(rollout))


# ------------------------------------------------------------------------------------------ appearance


def _onsets(scene: Scene, rollout: Rollout) -> list[int]:
    """Frames from which an appearance change shows: after two normal frames, with MIN_VISIBLE_FRAMES to
    go, while the object is wholly in view."""
    obj = rollout.objects[0]
    shown = _in_frame(obj.pos, obj.half_size)
    return [k for k in range(2, len(obj.pos) - MIN_VISIBLE_FRAMES + 1) if shown[k - 1 : k + MIN_VISIBLE_FRAMES].all()]


def _vanish(video, scene, rollout, k: int) -> np.ndarray:
    """Gone for VANISH_FRAMES frames (moved far out of view), back afterwards."""
    pos = rollout.objects[0].pos.copy()
    pos[k : k + VANISH_FRAMES] = -1000.0
    return _moved(video, scene, rollout, pos)


def _recolored(video, scene, rollout, choice: tuple[int, str]) -> np.ndarray:
    k, color = choice
    return _render_like(video, scene, _with_primary(rollout, color=color), start=k)


def _color_candidates(scene: Scene, rollout: Rollout) -> list[tuple[int, str]]:
    """(frame, colour): from ``frame`` on the object has a colour the scene does not use."""
    unused = [c for c in spec.OBJECT_COLORS if c not in (scene.color, scene.other_color)]
    return [(k, c) for k in _onsets(scene, rollout) for c in unused]


def _resized(video, scene, rollout, k: int) -> np.ndarray:
    """From frame k on, drawn SIZE_FACTOR x larger about the same centre."""
    grown = _with_primary(rollout, half_size=rollout.objects[0].half_size * SIZE_FACTOR)
    return _render_like(video, scene, grown, start=k)


CORRUPTIONS: dict[str, Corruption] = {
    "teleport": Corruption("physical", _teleport_candidates, _teleport, "room in view to jump sideways"),
    "freeze_midair": Corruption("physical", _freeze_candidates, _freeze, "gravity and a fast moment in the air"),
    "vanish": Corruption("appearance", _onsets, _vanish, "the object wholly in view mid-clip"),
    "color_change": Corruption("appearance", _color_candidates, _recolored, "the object wholly in view mid-clip"),
    "pass_through_floor": Corruption("physical", _through_candidates, _through, "a fall onto the floor"),
    "gain_energy": Corruption("physical", _gain_candidates, _gain, "a floor bounce with room to rebound"),
    "gravity_upward": Corruption("physical", _upward_candidates, _upward, "gravity and room to rise in view"),
    "wrong_gravity": Corruption("physical", _wrong_gravity_candidates, _wrong_gravity,
                                "free flight clear of walls, ramp and ball"),
    "size_change": Corruption("appearance", _onsets, _resized, "the object wholly in view mid-clip"),
    "weak_gravity": Corruption("physical", _weak_gravity_candidates, _wrong_gravity,
                               "gravity and free flight clear of walls, ramp and ball"),
    "early_bounce": Corruption("physical", _early_bounce_candidates, _early_bounce,
                               "a bouncing material falling onto the floor with room to rebound"),
    "wrong_restitution": Corruption("physical", _restitution_candidates, _restitution,
                                    "a fall onto the floor with room to rebound"),
    "frictionless_slide": Corruption("physical", _frictionless_candidates, _frictionless,
                                     "a block sliding on the floor under gravity long enough to see it slow"),
    "slow_motion": Corruption("physical", _slow_candidates, _slow, "gravity and a flight in the slowed clip"),
}

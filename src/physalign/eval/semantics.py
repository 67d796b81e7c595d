"""Semantic adherence (SA): the video shows what the prompt names, doing what it says."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from functools import cache
from statistics import NormalDist

import numpy as np

from physalign.eval import motion
from physalign.eval.checks import Check, View, unseen
from physalign.eval.motion import median
from physalign.world import spec
from physalign.world.scene import MAGNITUDES, Scene
from physalign.world.sim import STRUCTURE_FRICTION, InitialDraws, start_state

PRESENT_FRACTION = 0.5  # an object the prompt names is visible in at least half the frames
STRAY_PIXELS = 3.0  # pixels of solid colour the prompt does not name; the smallest object has ~7


def objects(v: View) -> Check:
    """The objects the prompt names, in their colours, are in the video."""
    shares = {f"{n} ({b.track.color})": float(b.track.present.mean()) for n, b in v.bodies.items()}
    worst = min(shares.values())
    text = ", ".join(f"{k} in {s:.0%} of frames" for k, s in shares.items())
    return Check("objects", "SA", worst >= PRESENT_FRACTION, worst, text)


def no_stray_objects(v: View) -> Check:
    """No blob of an object colour the prompt does not name."""
    pixels = float(v.obs.stray_area.max() / v.obs.unit_area)
    return Check("no_stray_objects", "SA", pixels <= STRAY_PIXELS, pixels, f"up to {pixels:.0f} pixels of colours the prompt lacks")


def size(v: View) -> Check:
    """The object's area is nearest to the prompted size class of its kind."""
    body = v.primary
    if not math.isfinite(body.half):
        return unseen("size", "SA", "the object")
    area = float(median(body.track.area[body.seen if body.seen.any() else body.track.present]))
    shape = math.pi if v.scene.kind == "ball" else 4.0
    nearest = min(spec.SIZES, key=lambda s: abs(math.log(area / (shape * spec.SIZES[s] ** 2))))
    return Check("size", "SA", nearest == v.scene.size, area, f"area {area:.1f} units^2 reads as {nearest}")


def kind(v: View) -> Check:
    """Ball or block: whether a square or a disc of the object's area explains its pixels better, by the
    median over its uncut frames (the fill of its box is reported alongside)."""
    t = v.primary.track
    if not t.present.any():
        return unseen("kind", "SA", "the object")
    frames = v.primary.seen if v.primary.seen.any() else t.present
    score, fill = float(median(t.squareness[frames])), float(median(t.fill[frames]))
    seen = "block" if score > 0 else "ball"
    return Check("kind", "SA", seen == v.scene.kind, score,
                 f"reads as a {seen} (squareness {score:+.2f}; fills {fill:.2f} of its box)")


def background(v: View) -> Check:
    seen = v.obs.background
    return Check("background", "SA", seen == v.scene.background, None, f"background reads as {seen}")


def direction(v: View) -> Check:
    """The object first moves the way the prompt says: its first displacement from the start larger than
    the video's noise allows (``View.noise`` at ``motion.ALPHA``), along the prompted axis, has the prompted sign (dropped: down, or no motion at all
    in zero gravity; launched: up; thrown or rolled: left or right)."""
    body = v.primary
    present = np.flatnonzero(body.track.present)
    if present.size < 2:
        return unseen("direction", "SA", "the object")
    moves = body.pos[present[1:]] - body.pos[present[0]]  # (n, 2) from the first sighting
    min_move = v.noise.bound(moves.size, math.sqrt(2))  # what the noise of two positions can move, at ALPHA
    want = v.scene.direction
    if want == "down" and v.g == 0:
        drift = float(np.abs(moves).max())
        return Check("direction", "SA", drift <= min_move, drift, f"drifts {drift:.2f} units in zero gravity (dropped: stays)")
    axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, 1), "down": (1, -1)}[want]
    along = sign * moves[:, axis]
    moved = np.flatnonzero(np.abs(along) > min_move)
    if moved.size == 0:
        return Check("direction", "SA", False, 0.0, f"never moves {want} (or the other way) by more than {min_move:.2f} units")
    first = float(along[moved[0]])
    return Check("direction", "SA", first > 0, first, f"first moves {first:+.2f} units {want} (frame {present[1 + moved[0]]})")


def magnitude(v: View) -> Check:
    """The magnitude the prompt names (low / high drop height, slow / fast throw or roll, low / high launch)
    is the one the start shows. The quantity it sets (``MAGNITUDE_QUANTITY``) is measured at frame 0 by a fit
    over the frames before the first impact (:func:`motion.start_fit`), with its standard error from the
    video's noise (and, on the floor, the interval friction may have slowed it by); each magnitude's range of
    it is the world's (:func:`magnitude_ranges`). A generalised likelihood-ratio decision between the two
    ranges: the check fails when the prompted range is rejected at ``motion.ALPHA`` (it lies more than
    ``z(1 - ALPHA / 2)`` standard errors from the estimate) and the other range lies nearer (is the likelier of
    the two). In between the ranges the prompt's class stands; past both, the nearer decides (a "fast" throw
    that barely moves fails, a fast one faster than the world's passes). Not applicable where the
    world's two ranges overlap (a drop onto the ramp in low gravity starts above the slope either way)."""
    name, axis, what = MAGNITUDE_QUANTITY[v.scene.kinematics]
    fit = motion.start_fit(v.primary, v.start_window, v.noise.sigma, axis, what, _friction(v))
    ranges = magnitude_ranges(v.scene)
    other = next(m for m in ranges if m != v.scene.magnitude)
    shown = ", ".join(f"{m} {a:.1f}-{b:.1f}" for m, (a, b) in ranges.items())
    if max(a for a, _ in ranges.values()) <= min(b for _, b in ranges.values()):
        return Check("magnitude", "SA", None, None, f"the world's {name} ranges overlap here ({shown})")
    if fit is None:
        return Check("magnitude", "SA", None, None, f"too few frames seen before the first impact to fit the {name}")
    sign = -1.0 if v.scene.direction == "left" else 1.0
    low = sign * fit.value  # along the prompted direction; friction may have slowed it by up to fit.slowed
    high = low + fit.slowed
    distance = {m: max(a - high, low - b, 0.0) for m, (a, b) in ranges.items()}
    z = NormalDist().inv_cdf(1 - motion.ALPHA / 2)
    wrong = distance[v.scene.magnitude] > z * fit.std and distance[other] < distance[v.scene.magnitude]
    return Check("magnitude", "SA", not wrong, sign * fit.value,
                 f"{name} {sign * fit.value:.2f} +- {fit.std:.2f} over {fit.frames} frames (ranges: {shown})")


# The quantity a kinematics' magnitude sets, read at frame 0: (its name, axis, position or velocity).
MAGNITUDE_QUANTITY = {
    "dropped": ("start height of the centre", 1, "position"),
    "launched_up": ("upward speed", 1, "velocity"),
    **{k: ("horizontal speed", 0, "velocity") for k in ("thrown_left", "thrown_right", "rolled_left", "rolled_right")},
}
_DRAW_GRID = (0.0, 1.0)  # each start quantity is monotone in each draw (or a max of such): its extremes lie at corners


@cache
def magnitude_ranges(scene: Scene) -> dict[str, tuple[float, float]]:
    """Magnitude -> (least, largest) value of its quantity over every start the world may draw for ``scene``
    with that magnitude (``sim.start_state`` over the unit draws' grid): the same scene's two classes."""
    _, axis, what = MAGNITUDE_QUANTITY[scene.kinematics]
    sign = -1.0 if scene.direction == "left" else 1.0
    out = {}
    for m in MAGNITUDES:
        other = replace(scene, magnitude=m)
        values = [sign * start_state(other, InitialDraws(*u))[what == "velocity"][axis]
                  for u in itertools.product(_DRAW_GRID, repeat=4)]
        out[m] = (min(values), max(values))
    return out


def _friction(v: View) -> float:
    """Largest deceleration (units/s^2) sliding friction gives along the floor: mu g."""
    return STRUCTURE_FRICTION * spec.MATERIALS[v.scene.material].friction * v.g


CHECKS = (objects, no_stray_objects, size, kind, background, direction, magnitude)

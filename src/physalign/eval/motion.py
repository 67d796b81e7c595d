"""From tracks to kinematics: where each object is relative to the scene's surfaces, when it flies freely,
and least-squares fits of its motion.

The scene's static geometry comes from ``spec`` (floor, the wall on the side the object moves to, the ramp
wedge); the checks never see the simulator's rollout. A frame is *near* a surface when the object touches
it or an impact may lie between it and a neighbouring frame (see ``touching``); a run of frames clear of every
surface, cut where an impact may lie, is free flight (``Body.flights``), and a parabola fits it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property
from statistics import NormalDist

import numpy as np

from physalign.eval.track import Observation, Track
from physalign.world import spec
from physalign.world.scene import Scene
from physalign.world.sim import ramp_side

FRAME_TIME = 1.0 / spec.FPS
# Centroid error. The renderer estimates coverage on a 4 x 4 sub-pixel grid, so a straight edge sits on a
# quarter-pixel lattice: uniform error of +-1/8 pixel (std 0.25 / sqrt(12) ~ 0.07) on a block's centre.
# Curved edges (balls) average it down to ~0.03.
POSITION_STD = 0.25 / math.sqrt(12)  # units (one pixel is one unit at 32 x 32)
# The noise every noise-limited test uses is measured from the video itself (:func:`measure_noise`): the
# robust scale of the centroids' third differences between impacts, where physics makes them zero. It is floored
# at the renderer's lattice error (no video is measured more finely) and capped at NOISE_CAP: an object that
# shakes by more than a quarter of a pixel from frame to frame is visibly shaking, which no noise explains,
# so the tests do not widen further and the shaking fails them.
NOISE_FLOOR = POSITION_STD
NOISE_CAP = 0.25
MIN_NOISE_SAMPLES = 6  # third differences needed to measure the noise; fewer: the floor is used
# Windows that may hold an impact (frames near a surface) are added where the lawful ones (flight, contact)
# give fewer third differences than this: the estimate's own relative error would exceed a quarter
# (0.80 / sqrt(20 / 2.31) = 0.27, see ESTIMATE_ERROR), and an impact in a window can only overstate the noise.
LAWFUL_NOISE_SAMPLES = 20
# The noise is the root of the mean of the smallest NOISE_KEPT of the squared third differences, over what a
# Gaussian's second moment keeps under the same trim (so up to 10% of the windows may be spoilt by an
# unexplained impulse; a variance, not a quantile, because the renderer's lattice quantises small jitter into
# many exact zeros). Its relative standard error is 0.80 / sqrt(n) for n independent Gaussian values (by
# simulation, n = 20-200); overlapping third differences of white noise are correlated (-3/4, 3/10, -1/20 at
# lags 1-3), which divides the number of independent values by 1 + 2 sum(rho^2) = 2.31.
NOISE_KEPT = 0.9
_Q = NormalDist().inv_cdf(0.5 + NOISE_KEPT / 2)  # the NOISE_KEPT quantile of |N(0, 1)|: 1.645
TRIMMED_SECOND_MOMENT = 1 - 2 * _Q * NormalDist().pdf(_Q) / NOISE_KEPT  # E[X^2 | |X| < _Q] = 0.623
ESTIMATE_ERROR = 0.80
THIRD_DIFFERENCE_CORRELATION = 2.31
# Family-wise false-alarm rate of each noise-limited test over the samples it looks at in one video
# (Bonferroni over those samples): the thresholds follow from the measured noise and this rate alone.
ALPHA = 0.01
# Closer than this to a surface counts as touching: the simulator lets a body overlap a surface by < 0.1,
# plus the centroid and size errors of a block (1/8 each) and a margin.
CONTACT_MARGIN = 0.5
# Share of gravity (at most) along each surface's normal, which changes the approach speed within a frame:
# all of it for the floor, cos 27 deg < 1 for the ramp's slope, none for a wall or the ball on the floor.
PULL = {"floor": 1.0, "ramp": 1.0, "wall": 0.0, "other": 0.0}


@dataclass(frozen=True)
class Body:
    """An object as the checks see it. Arrays are (T,)."""

    name: str
    kind: str  # what the scene says it is: "ball" or "block"
    half: float  # radius or half-side, from its median area
    track: Track
    gaps: dict[str, np.ndarray]  # signed distance to each surface ("floor", "wall", "ramp", "other")
    touches: dict[str, np.ndarray]  # bool, per surface: may touch it (``touching`` under its share of gravity)
    seen: np.ndarray  # bool: present and not cut by the frame's border
    impacts: dict[str, np.ndarray]  # (T-1,) bool, per surface: an impact may lie between frames k and k + 1

    @cached_property
    def near(self) -> np.ndarray:
        """Frames (T,) that may touch some surface."""
        return np.logical_or.reduce(list(self.touches.values()))

    @property
    def pos(self) -> np.ndarray:
        return self.track.pos

    @property
    def gap(self) -> np.ndarray:
        """Distance to the nearest surface (T,)."""
        return np.min(np.stack(list(self.gaps.values())), 0)

    @cached_property
    def flights(self) -> list[tuple[int, int]]:
        """Every free-flight segment of two frames or more, wherever it lies: :meth:`flight_runs` clear of
        every surface."""
        return self.flight_runs(self.seen, tuple(self.gaps))

    def flight_runs(self, keep: np.ndarray, surfaces: tuple[str, ...]) -> list[tuple[int, int]]:
        """Segments [a, b) of two frames or more in free flight from ``surfaces`` (from the start, between floor
        bounces, hops down the ramp, after a wall): runs of ``keep`` frames (T,) clear of each of them (gap over
        CONTACT_MARGIN), cut wherever an impact on one may lie between two frames. A frame next to an impact
        belongs to the flight on its side of it (``near`` would leave it out: a 5-frame hop kept 3 frames)."""
        clear, impact = keep.copy(), np.zeros(len(keep) - 1, bool)
        for name in surfaces:
            clear &= self.gaps[name] > CONTACT_MARGIN
            impact |= self.impacts[name]
        joined = clear[:-1] & clear[1:] & ~impact  # (T-1,) frames k and k + 1 on one flight
        return [(a, b + 1) for a, b in runs(joined)]


@dataclass(frozen=True)
class Noise:
    """A video's centroid noise: ``measured`` (units, NaN if there were fewer than MIN_NOISE_SAMPLES third
    differences to measure it from) from ``samples`` third differences."""

    measured: float
    samples: int

    @property
    def sigma(self) -> float:
        """The standard deviation the tests assume: the measurement plus one standard error of it (so that a
        low draw of the estimate does not turn noise into physics), within [NOISE_FLOOR, NOISE_CAP]."""
        if not math.isfinite(self.measured):
            return NOISE_FLOOR
        upper = self.measured * (1 + ESTIMATE_ERROR / math.sqrt(self.samples / THIRD_DIFFERENCE_CORRELATION))
        return min(max(upper, NOISE_FLOOR), NOISE_CAP)

    def bound(self, m: int, scale: float = 1.0) -> float:
        """Largest |error| of ``m`` Gaussian errors of std ``scale * sigma`` at family-wise ALPHA:
        ``z(1 - ALPHA / 2m) * scale * sigma``."""
        return NormalDist().inv_cdf(1 - ALPHA / (2 * max(m, 1))) * scale * self.sigma

    def radial_bound(self, m: int, scale: float = 1.0) -> float:
        """Largest length of ``m`` 2-D errors, each axis of std ``scale * sigma``, at family-wise ALPHA (the
        Rayleigh tail ``P(r > x) = exp(-x^2 / 2 s^2)``)."""
        return scale * self.sigma * math.sqrt(2 * math.log(max(m, 1) / ALPHA))


def measure_noise(bodies: dict[str, "Body"]) -> Noise:
    """The centroid noise of a video from its own tracks. Between impacts every motion of the world has a
    constant acceleration (free flight, rolling or sliding against friction, along the ramp), so the third
    difference of position is zero and what is left is noise: for independent errors of std ``sigma`` on
    each axis, a third difference has std ``sqrt(20) sigma``. Taken over every window of four seen frames
    that are all in one free flight (``Body.flights``) or all touching one surface (sliding, rolling or at
    rest; frames merely near it may straddle a hop's impacts, and from flight to contact too), both
    axes, every object, with the largest tenth of them left out (see NOISE_KEPT), so the few windows an
    unexplained impulse spoils do not inflate it."""
    lawful, near = [], []
    for body in bodies.values():
        windows = body.flights + [r for gap in body.gaps.values() for r in runs(body.seen & (gap <= CONTACT_MARGIN))]
        lawful += [np.diff(body.pos[a:b], 3, axis=0).reshape(-1) for a, b in windows if b - a >= 4]
        near += [np.diff(body.pos[a:b], 3, axis=0).reshape(-1) for a, b in runs(body.seen & body.near, 4)]
    d3 = _finite(lawful)
    if len(d3) < LAWFUL_NOISE_SAMPLES:
        d3 = np.concatenate([d3, _finite(near)])
    if len(d3) < MIN_NOISE_SAMPLES:
        return Noise(math.nan, len(d3))
    kept = np.sort(d3**2)[: max(1, int(round(NOISE_KEPT * len(d3))))]
    return Noise(math.sqrt(float(kept.mean()) / TRIMMED_SECOND_MOMENT / 20), len(d3))


def _finite(parts: list[np.ndarray]) -> np.ndarray:
    d3 = np.concatenate(parts) if parts else np.zeros(0)
    return d3[np.isfinite(d3)]


def half_size(track: Track, kind: str) -> float:
    """Radius (ball) or half-side (block) of a track's median area over its uncut frames; NaN if unseen."""
    ok = track.present & ~track.clipped
    if not ok.any():
        ok = track.present
    if not ok.any():
        return math.nan
    area = float(median(track.area[ok]))
    return math.sqrt(area / math.pi) if kind == "ball" else math.sqrt(area) / 2


def bodies(obs: Observation, scene: Scene) -> dict[str, Body]:
    """The scene's objects with their gaps to every surface and their free-flight frames."""
    kinds = {"primary": scene.kind, "other": "ball"}
    halves = {n: half_size(t, kinds[n]) for n, t in obs.tracks.items()}
    out = {}
    for name, track in obs.tracks.items():
        gaps = static_gaps(track.pos, halves[name], kinds[name], scene)
        if len(obs.tracks) == 2:
            partner = "other" if name == "primary" else "primary"
            gaps["other"] = pair_gap(track.pos, halves[name], kinds[name], obs.tracks[partner].pos, halves[partner])
        g = spec.GRAVITY[scene.force]
        hits = {surface: impact_between(gap, g * PULL[surface]) for surface, gap in gaps.items()}
        touches = {surface: _near(gaps[surface], hit) for surface, hit in hits.items()}
        out[name] = Body(name, kinds[name], halves[name], track, gaps, touches, track.present & ~track.clipped, hits)
    return out


def touching(gap: np.ndarray, pull: float = 0.0) -> np.ndarray:
    """Frames (T,) that may be in contact with a surface, from the signed gap (T,) to it: within
    CONTACT_MARGIN, or next to an interval in which an impact may lie (:func:`impact_between`). Unseen frames
    (NaN) count as touching."""
    return _near(gap, impact_between(gap, pull))


def impact_between(gap: np.ndarray, pull: float = 0.0) -> np.ndarray:
    """Intervals (T-1,) between frames k and k + 1 in which an impact on a surface may lie, from the signed
    gap (T,) to it. The object comes in at ``v_in`` and leaves at ``v_out``, so an impact at time tau inside
    (t_k, t_k+1) leaves ``gap_k + gap_k+1 = v_in (tau - t_k) + v_out (t_k+1 - tau) <= max(v_in, v_out) dt``.
    The normal travel per frame next to the interval bounds ``v dt``, up to ``pull dt^2`` (gravity along
    the surface normal) gained meanwhile; CONTACT_MARGIN at each end. NaN (unseen) may hit."""
    step = np.abs(np.diff(gap))  # (T-1,) normal travel per frame
    step = np.where(np.isnan(step), np.inf, step)
    pad = np.concatenate([[0.0], step, [0.0]])
    approach = np.maximum(pad[:-2], pad[2:]) + pull * FRAME_TIME**2  # (T-1,) around each interval
    return ~(gap[:-1] + gap[1:] > approach + 2 * CONTACT_MARGIN)


def _near(gap: np.ndarray, hit: np.ndarray) -> np.ndarray:
    near = ~(gap > CONTACT_MARGIN)
    near[:-1] |= hit
    near[1:] |= hit
    return near


def static_gaps(pos: np.ndarray, half: float, kind: str, scene: Scene) -> dict[str, np.ndarray]:
    """Signed distance (T,) between the object and each static surface of ``scene``; negative = inside."""
    x, y = pos[:, 0], pos[:, 1]
    gaps = {"floor": y - half - spec.FLOOR_Y}
    if scene.interaction == "wall":
        side = scene.direction
        gaps["wall"] = spec.WALL_X["right"] - (x + half) if side == "right" else (x - half) - spec.WALL_X["left"]
    if scene.interaction == "ramp":
        gaps["ramp"] = polygon_gap(pos, half, kind, ramp_polygon(ramp_side(scene)))
    return gaps


@cache
def ramp_polygon(rises_to: str) -> np.ndarray:
    return np.array(spec.ramp_vertices(rises_to), np.float64)  # (3, 2) counter-clockwise


def polygon_gap(pos: np.ndarray, half: float, kind: str, poly: np.ndarray) -> np.ndarray:
    """Signed distance (T,) from a ball (exact) or an axis-aligned block (separating axes: exact when
    overlapping, a lower bound otherwise) to the convex polygon ``poly`` (V, 2), counter-clockwise."""
    edges = np.roll(poly, -1, 0) - poly  # (V, 2)
    normals = np.stack([edges[:, 1], -edges[:, 0]], 1) / np.hypot(*edges.T)[:, None]  # outward (V, 2)
    if kind == "ball":
        return _point_polygon_distance(pos, poly, edges, normals) - half
    axes = np.concatenate([np.eye(2), normals])  # (A, 2)
    centre = pos @ axes.T  # (T, A)
    box = half * np.abs(axes).sum(1)  # (A,) half-extent of the square along each axis
    shape = poly @ axes.T  # (V, A)
    sep = np.maximum(shape.min(0) - (centre + box), (centre - box) - shape.max(0))  # (T, A)
    return sep.max(1)


def _point_polygon_distance(pos, poly, edges, normals) -> np.ndarray:
    rel = pos[:, None, :] - poly[None]  # (T, V, 2)
    t = np.clip((rel * edges).sum(-1) / (edges * edges).sum(-1), 0.0, 1.0)  # (T, V)
    dist = np.hypot(*(rel - t[..., None] * edges).transpose(2, 0, 1)).min(1)  # (T,)
    inside = ((rel * normals).sum(-1) < 0).all(1)
    return np.where(inside, -dist, dist)


def pair_gap(pos: np.ndarray, half: float, kind: str, other: np.ndarray, other_half: float) -> np.ndarray:
    """Signed distance (T,) between the object (ball or block) and a ball of radius ``other_half``."""
    d = other - pos
    if kind == "ball":
        return np.hypot(*d.T) - half - other_half
    q = np.abs(d) - half  # (T, 2) distance from the block's faces
    outside = np.hypot(*np.maximum(q, 0.0).T)
    return outside + np.minimum(q.max(1), 0.0) - other_half


# ---------------------------------------------------------------------------------------- runs and fits


def runs(mask: np.ndarray, min_len: int = 1) -> list[tuple[int, int]]:
    """Maximal runs [start, stop) of True in ``mask`` (T,) at least ``min_len`` long. A loop over a clip's
    few frames: ten times faster than array operations at T = 16."""
    out, start = [], -1
    for k, on in enumerate(mask.tolist() + [False]):
        if on and start < 0:
            start = k
        elif not on and start >= 0:
            if k - start >= min_len:
                out.append((start, k))
            start = -1
    return out


def median(values: np.ndarray):
    """``np.median`` of a short 1-D array without its general-case overhead (same value and type); NaN
    if any value is."""
    s = np.sort(values)
    n, h = len(s), len(s) // 2
    if n == 0 or not np.isfinite(s[-1]):
        return np.median(values)
    return s[h] if n % 2 else (s[h - 1] + s[h]) / 2


@cache
def _quadratic_design(n: int) -> tuple[np.ndarray, float]:
    """Weights ``w`` (n,) with ``w . y = c`` for the least-squares fit ``y = a + b k + c k^2`` over frames
    ``k = 0..n-1``, and ``sum(r^2)`` of ``k^2`` residualised against ``[1, k]`` (so ``Var c = s^2 / sum``)."""
    k = np.arange(n, dtype=np.float64)
    lin = np.stack([np.ones(n), k], 1)
    r = k**2 - lin @ np.linalg.lstsq(lin, k**2, rcond=None)[0]
    ss = float(r @ r)
    return r / ss, ss


def acceleration_weights(n: int) -> np.ndarray:
    """Weights ``w`` (n,) of the acceleration (units/s^2) fitted over n frames (:func:`fit_acceleration`'s one
    segment): ``A = w . y``."""
    return _quadratic_design(n)[0] * 2 * spec.FPS**2


def fit_acceleration(y: np.ndarray, segments: list[tuple[int, int]], sigma: float = POSITION_STD) -> tuple[float, float]:
    """Acceleration (units/s^2) shared by all ``segments`` of ``y`` (T,), each with its own offset and
    velocity: ``y_k = a_s + b_s k + (A / 2) (k dt)^2``. Returns ``(A, std of A)`` for position noise
    ``sigma``; ``(nan, inf)`` without segments of at least 3 frames."""
    num, den = 0.0, 0.0
    for a, b in segments:
        if b - a < 3:
            continue
        w, ss = _quadratic_design(b - a)
        num += float(w @ y[a:b]) * ss  # sum(r * y) of this segment
        den += ss
    if den == 0:
        return math.nan, math.inf
    return 2 * num / den * spec.FPS**2, 2 * sigma / math.sqrt(den) * spec.FPS**2


@dataclass(frozen=True)
class StartFit:
    """A position or velocity at frame 0 fitted over the frames before the first impact: ``value`` (units or
    units/s) with its standard error ``std`` under the video's noise; friction may have slowed the motion
    meanwhile, so a speed may be up to ``slowed`` larger than measured (0 where nothing slows it)."""

    value: float
    std: float
    slowed: float
    frames: int


def start_window(body: Body) -> tuple[int, int]:
    """Frames [a, b) of ``body`` from its first uncut sighting ``a`` to its first impact: every frame after
    ``a`` seen, and frames from 0 on clear of every surface the object did not rest on at the start, or, for a
    surface it starts on (a launch, a roll), until it has left it and comes back. A frame ends the window when
    it may touch a surface (``touching``) it approaches (the gap shrinks into it or out of it); the first such
    frame precedes the impact, so it is kept. (0, 0) if the object is never seen."""
    if not body.seen.any():
        return 0, 0
    a = int(np.argmax(body.seen))
    end = a + int(np.argmin(body.seen[a:])) if not body.seen[a:].all() else len(body.seen)
    for name, gap in body.gaps.items():
        left = np.logical_or.accumulate(gap > CONTACT_MARGIN)  # (T,) has been clear of it by frame k
        shrinks = ~(gap[1:] > gap[:-1])  # (T-1,) from frame k to k + 1 (or unseen)
        approach = np.concatenate([shrinks, [False]]) | np.concatenate([[False], shrinks])  # (T,) into k or out of it
        hits = np.flatnonzero(body.touches[name] & left & approach)
        if hits.size:
            end = min(end, int(hits[0]) + 1)
    return a, max(end, a)


@cache
def _polynomial_fit(a: int, b: int, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares weights (degree + 1, b - a) of ``y_k = sum_j c_j k^j`` over frames k = a..b-1 (the
    coefficients are those at frame 0), and the coefficients' standard errors (degree + 1,) for unit noise."""
    design = np.vander(np.arange(a, b, dtype=np.float64), degree + 1, increasing=True)  # (b - a, d + 1)
    inverse = np.linalg.inv(design.T @ design)
    return inverse @ design.T, np.sqrt(np.diag(inverse))


def start_fit(body: Body, window: tuple[int, int], sigma: float, axis: int, what: str, friction: float) -> StartFit | None:
    """The position (``what="position"``) or velocity at frame 0 along ``axis`` (0: x, 1: y), from a fit over
    ``window``, the :func:`start_window` (None if it has fewer frames than the fit has coefficients). Vertically the
    acceleration is fitted (a parabola: whether it is the scene's gravity is the gravity check's question).
    Horizontally the world has no force in flight, and on the floor only friction, which slows the motion by at
    most ``friction`` (units/s^2): a line's slope is a mean velocity, ``slowed`` by up to ``friction`` times the
    mean time of the frames fitted. On the floor the line takes the first frames whose interval (that bias plus
    the slope's error on both sides at ALPHA) is narrowest: more frames shrink the error, but widen the bias."""
    a, b = window
    degree = 2 if axis == 1 else 1
    if b - a <= degree:
        return None
    on_floor = axis == 0 and bool(body.touches["floor"][a:b].any())
    z = NormalDist().inv_cdf(1 - ALPHA / 2)
    fits = [_start_fit(body.pos[a:stop, axis], a, degree, what, sigma, friction if on_floor else 0.0)
            for stop in range(a + degree + 1, b + 1)]
    return min(fits, key=lambda f: f.slowed + 2 * z * f.std)


def _start_fit(y: np.ndarray, a: int, degree: int, what: str, sigma: float, friction: float) -> StartFit:
    weights, errors = _polynomial_fit(a, a + len(y), degree)
    order = 0 if what == "position" else 1
    scale = FRAME_TIME**-order  # coefficient of k -> per second
    slowed = friction * (2 * a + len(y) - 1) / 2 * FRAME_TIME
    return StartFit(float(weights[order] @ y) * scale, float(errors[order]) * sigma * scale, slowed, len(y))


def chi2_quantile(p: float, k: int) -> float:
    """The ``p`` quantile of chi-squared with ``k`` degrees of freedom (Wilson-Hilferty: within 1% for k >= 3
    at the tails used here)."""
    z = NormalDist().inv_cdf(p)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def fit_line(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y = c + b t``: returns (c, b)."""
    tm, ym = t.mean(), y.mean()
    dt = t - tm
    b = float(dt @ (y - ym) / (dt @ dt))
    return float(ym - b * tm), b

"""Physical commonsense (PC): laws every video of the world obeys, whatever its start.

Every test of a measured position is a statistical test against the video's own centroid noise
(``View.noise``, measured from the video: :func:`physalign.eval.motion.measure_noise`): a deviation fails
when noise of that size would produce it with probability below ``motion.ALPHA`` over all the samples the
check looks at. What is not noise is named with the reason for its size (the simulator's overlap, the
half-size read from the area, friction). One world unit is one pixel at 32 x 32, and ``dt = 1 / spec.FPS``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from statistics import NormalDist

import numpy as np

from physalign.eval import motion
from physalign.eval.checks import Check, View, unseen
from physalign.eval.motion import CONTACT_MARGIN, FRAME_TIME, Body
from physalign.world import spec
from physalign.world.scene import Scene
from physalign.world.sim import STRUCTURE_FRICTION, ramp_side

# A step may exceed the fastest speed energy allows by the noise of its two ends, plus this margin (units)
# for the sub-frame timing of the start and of impacts.
STEP_MARGIN = 0.25
STRUCK_SPEEDUP = 2.0  # a struck ball leaves at most 2 m1 / (m1 + m2) < 2 times the striker's speed
# Frames cut by the border are left out; a visible object's area stays within this factor of its median
# (the soft area is exact to ~2%, to ~10% where it touches the other object; measured at most 1.09).
SIZE_RATIO = 1.25
COLOR_DRIFT = 40.0  # RGB: a quarter of the distance between the closest object colours
MIN_FLIGHT_FRAMES = 3  # the fewest frames that show an acceleration (a second difference); a short hop
# weighs little in the shared fit (Var ~ 1 / sum of its squared frame offsets), so every one is used
GRAVITY_REL = 0.25  # fitted gravity within 25% of the scene's (pymunk integrates it to < 1%), or within the
# fit's own noise bound (two axes at motion.ALPHA), whichever is wider
# The simulator keeps overlaps under 0.1 unit (40 sub-steps per frame, slop 0.02); the half-size read from
# the area adds up to 0.25 (measured deepest on simulator videos); the centroid noise comes on top.
SIM_OVERLAP, HALF_SIZE_ERROR = 0.1, 0.25
# Restitution from the peak heights of successive hops, sqrt(h2 / h1), with bounds from the error of the
# peaks (noise, plus HALF_SIZE_SPREAD for the half-size read from the area); pymunk's restitution is the
# material's, so allow RESTITUTION_TOL around it beyond those bounds.
HALF_SIZE_SPREAD = 0.05
RESTITUTION_TOL = 0.1
# Momentum across a collision on the floor: velocities are fitted over up to MOMENTUM_FRAMES frames on each
# side; floor friction (mu = STRUCTURE_FRICTION x the material's) may move it meanwhile, nothing else.
MOMENTUM_FRAMES = 4
MOMENTUM_SIGMAS = 3.0


def permanence(v: View) -> Check:
    """Every object is in every frame, unless it left through the border of the frame."""
    worst, where = 1.0, ""
    for name, body in v.bodies.items():
        t = body.track
        gone = ~t.present & ~_left_frame(t)
        share = 1.0 - float(gone.mean())
        if share < worst:
            worst, where = share, f"{name} ({t.color}) missing in frames {np.flatnonzero(gone).tolist()}"
    return Check("permanence", "PC", worst == 1.0, worst, where or "every object in every frame")


def _left_frame(t) -> np.ndarray:
    """Absent frames excused because the object left the view next to them: it was cut by the top, left or
    right border, or its last step carries it past one (the bottom border lies under the floor: nothing
    leaves through it). The same holds backwards in time for an object coming into view."""
    excused = np.zeros(len(t.area), bool)
    for a, b in motion.runs(~t.present):
        excused[a:b] = _exits(t, a - 1, -1) or _exits(t, b, +1)
    return excused


def _exits(t, k: int, back: int) -> bool:
    """Whether the object, seen at frame ``k`` and at ``k + back``, leaves the view past frame ``k``."""
    n = len(t.area)
    if not 0 <= k < n or not t.present[k]:
        return False
    if t.clipped[k]:
        return not t.bbox[k, 1] <= 0  # cut by a border other than the bottom
    if not 0 <= k + back < n or not t.present[k + back]:
        return False
    x0, y0, x1, y1 = t.bbox[k] + (t.pos[k] - t.pos[k + back])[[0, 1, 0, 1]]  # one more step out
    return bool(x0 < 0 or x1 > spec.WORLD_SIZE or y1 > spec.WORLD_SIZE)


def size_stability(v: View) -> Check:
    """Each object keeps its size: its area stays near its median in every uncut frame."""
    worst, who = 1.0, ""
    for name, body in v.bodies.items():
        area = body.track.area[body.seen]
        if area.size == 0:
            return unseen("size_stability", "PC", name)
        middle = motion.median(area)
        ratio = np.maximum(area / middle, middle / area).max()
        if ratio > worst:
            worst, who = float(ratio), name
    return Check("size_stability", "PC", worst <= SIZE_RATIO, worst, f"largest area change x{worst:.2f} ({who or 'none'})")


def color_stability(v: View) -> Check:
    """Each object keeps its colour: the mean colours of its inner pixels in any two frames lie within
    COLOR_DRIFT (frames without inner pixels are skipped; whether it is the prompted colour is semantics)."""
    worst, who = 0.0, ""
    for name, body in v.bodies.items():
        rgb = body.track.rgb[np.isfinite(body.track.rgb).all(1)]  # (n, 3) frames with inner pixels
        if len(rgb) == 0:
            continue
        drift = float(np.linalg.norm(rgb[:, None] - rgb[None], axis=-1).max())  # farthest pair of frames
        if drift > worst:
            worst, who = drift, name
    return Check("color_stability", "PC", worst <= COLOR_DRIFT, worst, f"colour drifts up to {worst:.0f} RGB ({who or 'none'})")


def continuity(v: View) -> Check:
    """No step longer than energy allows: speed^2 <= v0^2 + 2 g (y_start - y) with v0 the fastest start
    the prompt allows (a struck ball: up to twice that). A frame cut by the border has its centroid off by
    up to the object's half-size, which the bound allows for."""
    v0 = max_start_speed(v.scene)
    y_start = _start_height(v.primary)
    worst, detail = -math.inf, "no step to measure"
    for name, body in v.bodies.items():
        t = body.track
        step = np.hypot(*np.diff(t.pos, axis=0).T)  # (T-1,) NaN next to absent frames
        low = np.fmin(t.pos[:-1, 1], t.pos[1:, 1])
        speed = np.sqrt(v0**2 + 2 * v.g * np.maximum(y_start - low, 0.0))
        cut = (t.clipped[:-1] | t.clipped[1:]) * body.half
        slack = v.noise.bound(2 * len(step), math.sqrt(2)) + STEP_MARGIN  # a step's noise: two positions
        bound = speed * (STRUCK_SPEEDUP if name == "other" else 1.0) * FRAME_TIME + slack + cut
        excess = step - bound
        if np.isfinite(excess).any() and np.nanmax(excess) > worst:
            k = int(np.nanargmax(excess))
            worst, detail = float(excess[k]), f"{name}: step {step[k]:.2f} units at frame {k + 1} (bound {bound[k]:.2f})"
    return Check("continuity", "PC", worst <= 0, worst if math.isfinite(worst) else None, detail)


def max_start_speed(scene: Scene) -> float:
    """Fastest initial speed the prompt's kinematics and magnitude allow (spec ranges)."""
    if scene.kinematics == "launched_up":
        return spec.LAUNCH_SPEED[scene.magnitude][1]
    if scene.kinematics == "dropped":
        return 0.0
    return spec.SPEED[scene.magnitude][1]


def _start_height(body: Body) -> float:
    """Height of the first frame the object is seen in (the top of the world if never)."""
    seen = np.flatnonzero(body.seen)
    return float(body.pos[seen[0], 1]) if seen.size else spec.WORLD_SIZE


def gravity(v: View) -> Check:
    """Free flight accelerates at (0, -g) of the scene: one acceleration fitted over every free-flight
    segment (:func:`_flight`: from the start, between bounces on the floor or down the ramp, after a wall;
    each with its own start and velocity, the acceleration shared, as physics has it). It fails when the fit
    is inconsistent with the scene's gravity, whatever its precision; it passes only when precise enough to tell the scene's gravity from
    the nearest other level (otherwise it does not apply)."""
    segments, ay, std, ax = _flight(v)
    frames = sum(b - a for a, b in segments)
    if not math.isfinite(ay):
        return Check("gravity", "PC", None, None, f"no free flight of {MIN_FLIGHT_FRAMES} frames or more")
    spread = v.noise.bound(2) / v.noise.sigma  # two axes at motion.ALPHA, in standard errors
    tol = max(GRAVITY_REL * v.g, spread * std)
    text = f"fitted ({ax:.1f}, {ay:.1f}) units/s^2 over {frames} frames (expected (0, {-v.g:.0f}) +- {tol:.1f})"
    if abs(ay + v.g) > tol or abs(ax) > tol:
        return Check("gravity", "PC", False, ay, text)
    nearest = min(abs(g - v.g) for g in spec.GRAVITY.values() if g != v.g)
    if spread * std > 0.5 * nearest:
        return Check("gravity", "PC", None, ay, text + ": too short to tell the gravity levels apart")
    return Check("gravity", "PC", True, ay, text)


def _flight(v: View) -> tuple[list[tuple[int, int]], float, float, float]:
    """The primary's free-flight segments (MIN_FLIGHT_FRAMES or more: ``Body.flight_runs`` clear of every surface
    but a wall, which acts only at its impact, :func:`_off_wall`) and the acceleration fitted over them:
    (segments, vertical, its std under the video's noise, horizontal)."""
    def fit():
        body = v.primary
        surfaces = tuple(name for name in body.gaps if name != "wall")  # a wall acts only at its impact
        runs = body.flight_runs(body.seen & _off_wall(body, v.noise), surfaces)
        segments = [(a, b) for a, b in runs if b - a >= MIN_FLIGHT_FRAMES]
        ay, std = motion.fit_acceleration(body.pos[:, 1], segments, v.noise.sigma)
        ax, _ = motion.fit_acceleration(body.pos[:, 0], segments, v.noise.sigma)
        return segments, ay, std, ax

    return v.once("flight", fit)


def free_flight(v: View) -> Check:
    """No impulse in mid-air: between contacts the second difference of position is (0, -g dt^2), up to
    noise (each axis of std sqrt(6) sigma); the largest of the video's deviations must be one noise could
    make (a Rayleigh bound at motion.ALPHA over all of them)."""
    worst, at, count = _largest_impulse(v)
    if at < 0:
        return Check("free_flight", "PC", None, None, "no three consecutive free frames")
    tol = v.noise.radial_bound(count, math.sqrt(6))
    return Check("free_flight", "PC", worst <= tol, worst,
                 f"largest mid-air velocity change {worst:.2f} units/frame at frame {at} (noise allows {tol:.2f})")


def _largest_impulse(v: View) -> tuple[float, int, int]:
    """(largest deviation of a free-flight second difference from gravity's, its frame, how many were seen)."""
    return v.once("impulse", lambda: _impulse(v))


def _impulse(v: View) -> tuple[float, int, int]:
    body = v.primary
    worst, at, count = -1.0, -1, 0
    for a, b in _flight(v)[0]:
        acc = np.diff(body.pos[a:b], 2, axis=0)  # (n-2, 2)
        acc[:, 1] += v.g * FRAME_TIME**2
        err = np.hypot(*acc.T)
        count += len(err)
        if err.max() > worst:
            worst, at = float(err.max()), a + 1 + int(err.argmax())
    return worst, at, count


def ballistic(v: View) -> Check:
    """Free flight is a parabola under the scene's gravity: in every free-flight segment of MIN_FLIGHT_FRAMES
    or more, the centroids fit ``p_s + u_s t + (0, -g/2) t^2`` (each segment its own start and velocity) up to
    noise: ``chi2 = sum(r^2) / sigma^2`` within its (1 - motion.ALPHA) quantile, with 2 degrees of freedom per
    frame less 4 per segment. A freeze, a mid-air change of gravity, a drift or a slow-down fails it though no
    single step is an impulse."""
    segments = _flight(v)[0]
    squares, frames = v.once("ballistic", lambda: _ballistic_squares(v.primary, v.g, segments))
    if not frames:
        return Check("ballistic", "PC", None, None, f"no free flight of {MIN_FLIGHT_FRAMES} frames or more")
    dof = 2 * frames - 4 * len(segments)
    chi2, limit = squares / v.noise.sigma**2, motion.chi2_quantile(1 - motion.ALPHA, dof)
    rms = math.sqrt(squares / frames)
    return Check("ballistic", "PC", chi2 <= limit, rms,
                 f"{rms:.2f} units RMS from the best parabola over {frames} frames (chi2 {chi2:.1f}, noise "
                 f"{v.noise.sigma:.2f} allows {limit:.1f})")


def _ballistic_squares(body: Body, g: float, segments: list[tuple[int, int]]) -> tuple[float, int]:
    """Sum of squared residuals (units^2) of ``pos_k = p_s + u_s t_k + (0, -g/2) t_k^2`` fitted per segment
    (``p_s``, ``u_s`` free), and the number of frames fitted."""
    squares, count = 0.0, 0
    for a, b in segments:
        t = np.arange(b - a) * FRAME_TIME
        design = np.stack([np.ones_like(t), t], 1)  # (n, 2)
        target = body.pos[a:b] + np.stack([np.zeros_like(t), 0.5 * g * t**2], 1)  # gravity taken out
        coef = np.linalg.lstsq(design, target, rcond=None)[0]
        squares += float(((target - design @ coef) ** 2).sum())
        count += b - a
    return squares, count


def no_hover(v: View) -> Check:
    """Under gravity nothing rests in the air: no window of frames in the air without motion, the window
    long enough that free fall moves the object by more than the centroid error."""
    if v.g == 0:
        return Check("no_hover", "PC", None, None, "zero gravity")
    body = v.primary
    airborne = body.seen & (body.gap > CONTACT_MARGIN)
    error = v.noise.bound(2 * int(airborne.sum()))  # the largest centroid error among the airborne frames
    n = hover_frames(v.g, error)
    longest = 0
    for a, b in motion.runs(airborne, n):
        pos = body.pos[a:b]
        windows = np.lib.stride_tricks.sliding_window_view(pos, n, axis=0)  # (m, 2, n)
        still = np.ptp(windows, axis=2).max(1) <= 2 * error  # what noise alone spreads a still object over
        longest = max(longest, int(still.sum()))
    return Check("no_hover", "PC", longest == 0, float(longest), f"{longest} windows of {n} still frames in the air")


def hover_frames(g: float, error: float) -> int:
    """Frames n such that free fall moves an object by more than a still object's noise spread (2 error) plus
    the error of the moving one's ends (2 error) over any n consecutive frames: the slowest stretch is
    centred on the apex, where it covers g dt^2 (n-1)^2 / 8."""
    return 1 + math.ceil(math.sqrt(8 * 4 * error / (g * FRAME_TIME**2)))


def no_penetration(v: View) -> Check:
    """No object sinks into the floor, a wall, the ramp or the other object. Frames cut by the border
    count too, through the bottom of the pixels they show (an object sinking out of view through the
    floor is cut by the bottom border)."""
    worst, where = -math.inf, "nothing to test"
    for name, body in v.bodies.items():
        depths = {s: np.where(body.seen, -gap, np.nan) for s, gap in body.gaps.items()}
        shown = np.where(body.track.present, spec.FLOOR_Y - body.track.bbox[:, 1], np.nan)
        depths["floor"] = np.fmax(depths["floor"], shown)
        for surface, depth in depths.items():
            if np.isfinite(depth).any() and np.nanmax(depth) > worst:
                k = int(np.nanargmax(depth))
                worst, where = float(depth[k]), f"{name} into {surface} by {depth[k]:.2f} units at frame {k}"
    tol = SIM_OVERLAP + HALF_SIZE_ERROR + v.noise.bound(sum(int(b.seen.sum()) * len(b.gaps) for b in v.bodies.values()))
    return Check("no_penetration", "PC", worst <= tol, worst if math.isfinite(worst) else None, f"{where} (allowed {tol:.2f})")


def bounce(v: View) -> Check:
    """Floor bounces rebound as the material does, judged by energy: a hop that peaks ``h`` above the floor
    and lands is followed by one that peaks at ``e^2 h`` (``e`` the restitution). The interval of ``e`` each
    landing allows (see ``_rebounds``) must meet the material's, widened by RESTITUTION_TOL and capped at 1:
    clay must not rebound, rubber must, nothing gains energy. Hops touching a wall, the ramp or the other
    ball (friction along them) are left out."""
    if v.g == 0:
        return Check("bounce", "PC", None, None, "zero gravity: nothing falls onto the floor")
    e_mat = spec.MATERIALS[v.scene.material].restitution
    lo, hi = max(e_mat - RESTITUTION_TOL, 0.0), min(e_mat + RESTITUTION_TOL, 1.0)
    judged = _landings(v)  # (landing frame, low and high bounds of e)
    if not judged:
        return Check("bounce", "PC", None, None, "no landing from a hop with the rebound in view")
    bad = [j for j in judged if j[1] > hi or j[2] < lo]
    _, e_lo, e_hi = (bad or judged)[0]
    text = "; ".join(f"landing at frame {k}: e in [{a:.2f}, {b:.2f}]" for k, a, b in judged)
    value = e_lo if e_lo > hi or not math.isfinite(e_hi) else e_hi
    return Check("bounce", "PC", not bad, value, f"{text} (material {e_mat:.2f}: {lo:.2f}-{hi:.2f})")


def _landings(v: View) -> list[tuple[int, float, float]]:
    """:func:`_rebounds` of the primary under the scene's material and the video's noise."""
    def judge():
        e_mat = spec.MATERIALS[v.scene.material].restitution
        starts_at_apex = v.scene.kinematics == "dropped" or v.scene.kinematics.startswith("thrown")
        peak_error = v.noise.bound(int(v.primary.seen.sum())) + HALF_SIZE_SPREAD
        return _rebounds(v.primary, v.g, starts_at_apex, max(e_mat - RESTITUTION_TOL, 0.0), peak_error)

    return v.once("landings", judge)


def _rebounds(body: Body, g: float, starts_at_apex: bool, slowest: float, peak_error: float) -> list[tuple[int, float, float]]:
    """Bounds (frame, low, high) on the restitution at each landing of a hop on the floor.

    Hops are runs of frames clear of the floor; between two hops lies a stretch touching it (one impact,
    or several with rebounds too low to leave the floor's reach, the highest of them ``h_R``). With peaks
    ``h1`` before and ``h2`` after, every impact in the stretch multiplies the height by ``e^2 <= 1``, so
    ``sqrt(h2 / h1)`` bounds ``e`` from below; ``e`` of the first impact is at most
    ``sqrt(max(h2, h_R) / h1)``. A hop still rising at the end of the clip only bounds from below; a last
    landing with no hop after bounds from above (``h2 = 0``) once the clip has lasted long enough for the
    ``slowest`` rebound the material allows to peak. Stretches next to any other surface, or not wholly seen, break the chain. A hop's
    peak must be a real apex: inside the hop, or at frame 0 when the object starts with no vertical speed
    (``starts_at_apex``), not where another contact left it moving. Peaks are known to within ``peak_error``,
    which widens the bounds."""
    height, n = body.gaps["floor"], len(body.gaps["floor"])
    clean = body.seen & ~_near_other_surface(body)
    err = peak_error + g * FRAME_TIME**2 / 8  # the sampled top of a parabola is up to g dt^2 / 8 low
    hops = motion.runs(clean & ~body.touches["floor"])
    out = []
    for (a1, b1), (a2, b2) in zip(hops, hops[1:] + [(n, n)]):
        h1, top = float(height[a1:b1].max()), a1 + int(height[a1:b1].argmax())
        apex = (top > a1 and top < b1 - 1) or (a1 == 0 and starts_at_apex) or (a1 > 0 and height[a1 - 1] <= h1)
        if not apex or h1 <= err or b1 == n or not clean[b1:a2].all():
            continue
        if a2 == n and (n - b1) * FRAME_TIME < slowest * math.sqrt(2 * h1 / g) + FRAME_TIME:
            continue  # landed too late to tell whether it rebounds: the slowest rebound peaks after the clip
        h_r = float(height[b1:a2].max())
        h2 = float(height[a2:b2].max()) if a2 < n else 0.0
        rising = b2 == n and a2 < n and height[-1] >= h2
        low = math.sqrt(max(h2 - err, 0.0) / (h1 + err))
        high = math.inf if rising else math.sqrt((max(h2, h_r) + err) / (h1 - err))
        out.append((b1, low, high))
    return out


def _near_other_surface(body: Body, noise: motion.Noise | None = None) -> np.ndarray:
    """(T,) frames that may touch a surface other than the floor; given the video's noise, a wall only at its
    impact (:func:`_off_wall`), for a check that fits each flight apart."""
    near = np.zeros(len(body.seen), bool)
    for name, touch in body.touches.items():
        if name != "floor":
            near |= ~_off_wall(body, noise) if name == "wall" and noise is not None else touch
    return near


@dataclass(frozen=True)
class Impact:
    """A floor impact between two hops, from both flights fitted under the scene's gravity: the time
    ``t`` (s) they meet, the object's gap to the floor there, the restitution (outgoing over incoming vertical
    speed at ``t``), and the standard errors of the last two under the video's noise."""

    frame: int  # first frame after the last one of the incoming hop
    t: float
    gap: float
    gap_std: float
    restitution: float
    restitution_std: float


def impact_point(v: View) -> Check:
    """Bounces happen at the floor: the incoming and the outgoing flight of each floor bounce, two parabolas
    under the scene's gravity, meet where the object touches the floor. Their meeting point's gap to the floor
    must be within the simulator's overlap, the half-size read from the area and its own fitted error at
    motion.ALPHA (over the bounces judged). A bounce that turns in mid-air, above the floor, fails."""
    judged = _impacts(v)
    if not judged:
        return Check("impact_point", "PC", None, None, "no floor bounce with both flights in view")
    z = NormalDist().inv_cdf(1 - motion.ALPHA / (2 * len(judged)))
    excess = [abs(i.gap) - (SIM_OVERLAP + HALF_SIZE_ERROR + z * i.gap_std) for i in judged]
    worst = judged[int(np.argmax(excess))]
    text = "; ".join(f"frame {i.frame}: {i.gap:+.2f} +- {i.gap_std:.2f} units" for i in judged)
    return Check("impact_point", "PC", max(excess) <= 0, worst.gap, f"flights meet the floor at gaps {text}")


def restitution(v: View) -> Check:
    """Each floor bounce rebounds as the material does, from the velocities: the outgoing over the incoming
    vertical speed where the two fitted flights meet (see :func:`impact_point`) lies, within its error at
    motion.ALPHA (over the bounces judged), in the material's restitution widened by RESTITUTION_TOL and
    capped at 1. Unlike ``bounce`` it needs only a few frames of each flight, not their peaks."""
    if v.g == 0:
        return Check("restitution", "PC", None, None, "zero gravity: nothing falls onto the floor")
    judged = _impacts(v)
    if not judged:
        return Check("restitution", "PC", None, None, "no floor bounce with both flights in view")
    e_mat = spec.MATERIALS[v.scene.material].restitution
    lo, hi = max(e_mat - RESTITUTION_TOL, 0.0), min(e_mat + RESTITUTION_TOL, 1.0)
    z = NormalDist().inv_cdf(1 - motion.ALPHA / (2 * len(judged)))
    excess = [max(lo - i.restitution, i.restitution - hi) - z * i.restitution_std for i in judged]
    worst = judged[int(np.argmax(excess))]
    text = "; ".join(f"frame {i.frame}: {i.restitution:.2f} +- {i.restitution_std:.2f}" for i in judged)
    return Check("restitution", "PC", max(excess) <= 0, worst.restitution,
                 f"rebound over impact speed {text} (material {e_mat:.2f}: {lo:.2f}-{hi:.2f})")


def _impacts(v: View) -> list[Impact]:
    """The primary's floor impacts between two hops of two frames or more each (:func:`_hops`; the stretch
    between them touching the floor only), the incoming hop falling and the outgoing one rising where they
    meet, under the scene's gravity and the video's noise (zero gravity: none)."""
    def find():
        body = v.primary
        clean = body.seen & ~_near_other_surface(body, v.noise)
        hops = _hops(body, v.noise) if v.g else []
        out = []
        for (a1, b1), (a2, b2) in zip(hops, hops[1:]):
            if clean[b1:a2].all():
                hit = _meet(body.pos[:, 1], (a1, b1), (a2, b2), v.g, v.noise.sigma)
                out += [] if hit is None else [replace(hit, gap=hit.gap - body.half - spec.FLOOR_Y)]
        return out

    return v.once("impacts", find)


def rebound(v: View) -> Check:
    """An object that lands rebounds at its material's restitution ``e_lo = e_hi = e`` (the simulator's floor
    impacts leave at exactly ``e`` times the speed they came in with; what the frames cannot fix is carried by
    the margin below, not by a band), under the scene's gravity: with the incoming flight (two frames or
    more) fitted by a parabola under ``g`` and extrapolated to the floor at ``t*`` with speed ``v``, every later
    frame in which the object touches nothing but the floor has its height above the floor's level
    (:func:`_floor_level`) at least ``e_lo v tau - g tau^2 / 2`` (``tau = t - t*``, within that slowest
    rebound's flight) and at most the fastest rebound's rise, ``e_hi v tau - g tau^2 / 2`` up to its apex and the
    apex after (no later hop of any slower rebound rises above it). The margin: the simulator's overlap, the
    level's error and the errors of the gap and of the extrapolation at motion.ALPHA (over the bounds tested).
    A bouncy object that lands dead fails, and so does a dead one that hops; neither needs a whole hop."""
    if v.g == 0:
        return Check("rebound", "PC", None, None, "zero gravity: nothing falls onto the floor")
    e_mat = spec.MATERIALS[v.scene.material].restitution
    band = (e_mat, e_mat)
    body = v.primary
    clean = body.seen & ~_near_other_surface(body, v.noise)
    level, level_error = _floor_level(body, v.noise)
    rows = []  # (frame, height, bound, its std, +1 for a least height / -1 for a greatest)
    for a, b in _hops(body, v.noise):
        rows += _rebound_bounds(body.gaps["floor"] - level, (a, b), clean, band, v.g, v.noise.sigma)
    if not rows:
        return Check("rebound", "PC", None, None, "no landing with frames after it in view")
    z = NormalDist().inv_cdf(1 - motion.ALPHA / (2 * len(rows)))
    excess = [side * (bound - h) - (SIM_OVERLAP + level_error + z * math.hypot(v.noise.sigma, std))
              for _, h, bound, std, side in rows]
    k = int(np.argmax(excess))
    frame, h, bound, _, side = rows[k]
    word = "lifts it at least" if side > 0 else "lifts it at most"
    return Check("rebound", "PC", excess[k] <= 0, excess[k],
                 f"frame {frame}: {h:.2f} above the floor where restitution {band[side < 0]:.2f} {word} {bound:.2f} "
                 f"(worst of {len(rows)} bounds)")


def _rebound_bounds(gap: np.ndarray, hop: tuple[int, int], clean: np.ndarray, band: tuple[float, float], g: float,
                    sigma: float) -> list:
    """Rows (frame, gap, bound, its std, side) after the landing that ends ``hop``: the hop's gap fitted by
    ``c + u t - g t^2 / 2``, its later zero ``t*`` and speed there; for the frames from the hop's end while
    ``clean``, the least height (side +1) of a rebound at ``band[0]`` within its flight (none at 0) and the
    greatest (side -1) at ``band[1]``; stds by the delta method from the fit's covariance."""
    a, b = hop
    t = np.arange(a, b) * FRAME_TIME
    design = np.stack([np.ones_like(t), t], 1)
    inverse = np.linalg.inv(design.T @ design)
    theta = inverse @ design.T @ (gap[a:b] + g * t**2 / 2)  # (c, u)
    after = np.arange(b, b + int(np.argmin(np.append(clean[b:], False))))  # the clean frames after the hop
    times = after * FRAME_TIME

    def bounds(p):  # (2, m): least and greatest height at ``times``; NaN where not bounded
        c, u = p
        root = u * u + 2 * g * c
        if root < 0:
            return np.full((2, len(times)), np.nan)
        landing = (u + math.sqrt(root)) / g  # the later zero of the falling parabola
        speed = g * landing - u  # > 0 downward at the floor
        tau = times - landing
        least = band[0] * speed * tau - g * tau**2 / 2
        rise = np.minimum(tau, band[1] * speed / g)  # the fastest rebound rises until its apex, then stays below it
        greatest = band[1] * speed * rise - g * rise**2 / 2
        return np.stack([np.where((tau > 0) & (least > 0), least, np.nan), np.where(tau > 0, greatest, np.nan)])

    here = bounds(theta)
    if not np.isfinite(here).any():
        return []
    std = _delta_std(bounds, theta, inverse, sigma)  # (2, m)
    return [(int(k), float(gap[k]), float(here[i, j]), float(std[i, j]), 1 - 2 * i)
            for i in range(2) for j, k in enumerate(after) if np.isfinite(here[i, j])]


def _floor_level(body: Body, noise: motion.Noise) -> tuple[float, float]:
    """The gap (units) the object shows when it rests on the floor, and its error. The half-size read from the
    area shifts every gap alike (by up to HALF_SIZE_ERROR), so where the object rests the median of those gaps
    is the floor's level, to within its median's noise (1.25 sigma / sqrt(m)); elsewhere the level is 0, to
    within HALF_SIZE_ERROR. It rests in the frames from some frame to the clip's end that lie on the floor
    (within CONTACT_MARGIN), each within the noise of two positions of the next: nothing in the world lifts an
    object at rest on the floor, so a still stretch that ends in a rise is a slow rebound, not rest."""
    gap = body.gaps["floor"]
    still = np.abs(np.diff(body.pos[:, 1])) <= noise.bound(len(gap) - 1, math.sqrt(2))  # (T-1,) NaN: not still
    on = body.seen & (gap <= CONTACT_MARGIN)
    first = len(gap) - 1  # of the trailing run of frames at rest
    while first > 0 and still[first - 1] and on[first - 1] and on[first]:
        first -= 1
    rest = np.zeros(len(gap), bool)
    rest[first:] = first < len(gap) - 1
    if rest.sum() < 3:
        return 0.0, HALF_SIZE_ERROR
    return float(motion.median(gap[rest])), 1.25 * noise.sigma / math.sqrt(int(rest.sum()))


def _hops(body: Body, noise: motion.Noise) -> list[tuple[int, int]]:
    """Runs of two frames or more (a line's two coefficients, once gravity's parabola is taken out) in which
    the vertical motion is free flight: seen, touching neither the floor, the ramp nor the other object, and
    no wall impact inside. A wall's normal is horizontal, so an impact on it changes the vertical velocity only
    by its friction: a run is cut only at the wall's impact (:func:`_off_wall`)."""
    vertical = body.seen & _off_wall(body, noise)
    for name, touch in body.touches.items():
        if name != "wall":
            vertical &= ~touch
    return motion.runs(vertical, 2)


def _off_wall(body: Body, noise: motion.Noise) -> np.ndarray:
    """Frames (T,) clear of a wall impact. A wall pushes only at an impact (nothing holds an object to it, and
    nothing in flight drives it back once it has met it), and the impact lies next to the first frame at the
    least gap of each run of frames that may touch it: from the first frame within the noise of two positions of
    that gap to that frame, the frames are cut. Later frames at the wall (clay stays there and falls) are free;
    an impact among them would have a normal speed under that noise per frame, its friction impulse (up to
    2 mu times it) under the noise too. A run with unseen frames is cut whole."""
    off = np.ones(len(body.seen), bool)
    if "wall" in body.gaps:
        gap, tol = body.gaps["wall"], noise.bound(len(body.seen), math.sqrt(2))
        for a, b in motion.runs(body.touches["wall"]):
            if not np.isfinite(gap[a:b]).all():
                off[a:b] = False
                continue
            least = a + int(np.argmin(gap[a:b]))
            first = a + int(np.argmax(gap[a:b] <= gap[least] + tol))
            off[first : least + 1] = False
    return off


def _meet(y: np.ndarray, first: tuple[int, int], second: tuple[int, int], g: float, sigma: float) -> Impact | None:
    """Fit ``y_k = c_i + b_i t_k - g t_k^2 / 2`` over two hops (i = 1, 2) under the scene's gravity, and where
    they meet, ``t* = (c_2 - c_1) / (b_1 - b_2)``, the height ``y*`` and the restitution ``-(b_2 - g t*) /
    (b_1 - g t*)``, with standard errors by the delta method from the fit's covariance ``sigma^2 (X'X)^-1``.
    None if the first does not fall or the second does not rise there. ``gap`` holds ``y*``."""
    frames = [np.arange(a, b) for a, b in (first, second)]
    t = np.concatenate(frames) * FRAME_TIME  # (n,)
    one = np.concatenate([np.full(len(f), i) for i, f in enumerate(frames)])  # (n,) which hop
    design = np.stack([one == 0, (one == 0) * t, one == 1, (one == 1) * t], 1).astype(np.float64)
    inverse = np.linalg.inv(design.T @ design)
    theta = inverse @ design.T @ (y[np.concatenate(frames)] + g * t**2 / 2)  # (c1, b1, c2, b2)

    def meeting(p):
        c1, b1, c2, b2 = p
        tm = (c2 - c1) / (b1 - b2)
        return np.array([c1 + b1 * tm - g * tm**2 / 2, -(b2 - g * tm) / (b1 - g * tm), tm, b1 - g * tm, b2 - g * tm])

    here = meeting(theta)
    if not (here[3] < 0 < here[4]):
        return None
    std = _delta_std(lambda p: meeting(p)[:2], theta, inverse, sigma)  # of (y*, e)
    return Impact(first[1], float(here[2]), float(here[0]), float(std[0]), float(here[1]), float(std[1]))


def _delta_std(f, theta: np.ndarray, inverse: np.ndarray, sigma: float) -> np.ndarray:
    """Standard errors of ``f(theta)`` (any shape) where ``theta`` (p,) is a least-squares fit with covariance
    ``sigma^2 inverse``: the delta method, ``sqrt(J inverse J^T) sigma``, with ``J`` by central differences
    (0 where a step crosses the edge of where ``f`` is defined)."""
    steps = 1e-6 * np.maximum(np.abs(theta), 1.0)
    eye = np.eye(len(theta))
    jacobian = np.stack([(f(theta + eye[j] * steps[j]) - f(theta - eye[j] * steps[j])) / (2 * steps[j])
                         for j in range(len(theta))], -1)  # (..., p)
    jacobian = np.nan_to_num(jacobian)
    return sigma * np.sqrt(np.einsum("...i,ij,...j->...", jacobian, inverse, jacobian))


def sliding(v: View) -> Check:
    """On the floor, friction is the only horizontal force, and it acts against the sliding: in every slide
    (:func:`_slides`) the horizontal position fits the law of sliding friction, ``mu g`` (``mu`` the floor's
    and the material's friction coefficients multiplied, as the simulator does) against the motion for some
    time ``tau``, then none: a block comes to rest (it does not rotate), a ball rolls on at constant speed (its
    spin may even make the friction push it forward until it rolls). A rolled ball is set moving without spin
    (the world's start), so its first slide has no free final speed (:func:`_rolling_start_fit`).
    ``chi2 = sum(r^2) / sigma^2`` of the best such fits (over each slide's ``tau``, direction, start and, for a
    ball, final speed) within its (1 - motion.ALPHA) quantile. A block that slides on without slowing, or slows
    as under another gravity's friction, or anything speeding up on flat ground, fails."""
    body = v.primary
    ball = v.scene.kind == "ball"
    slides = _slides(v, 5 if ball else 4)  # two frames more than a fit's free terms (start, tau, a ball's end)
    if not slides:
        return Check("sliding", "PC", None, None, "no slide on the floor from the start")
    mu_g = STRUCTURE_FRICTION * spec.MATERIALS[v.scene.material].friction * v.g
    from_rest = ball and v.scene.kinematics.startswith("rolled") and slides[0][0] == v.start_window[0]
    squares, free = 0.0, 0
    for i, (a, b) in enumerate(slides):
        if i == 0 and from_rest:
            squares, free = squares + _rolling_start_fit(body.pos[a:b, 0], a, mu_g), free + 2  # start, speed
        else:
            squares, free = squares + _friction_fit(body.pos[a:b, 0], mu_g, ball), free + 2 + ball
    frames = sum(b - a for a, b in slides)
    chi2, limit = squares / v.noise.sigma**2, motion.chi2_quantile(1 - motion.ALPHA, frames - free)
    rms = math.sqrt(squares / frames)
    return Check("sliding", "PC", chi2 <= limit, rms,
                 f"{rms:.2f} units RMS from the best slide under friction {mu_g:.1f} units/s^2 over {frames} frames "
                 f"in {len(slides)} slides (chi2 {chi2:.1f}, noise {v.noise.sigma:.2f} allows {limit:.1f})")


ROLLING_SPEEDS = np.arange(0.0, 15.0, 0.01)  # units/s: start speeds searched (1.5 x the fastest roll; a step
# moves a 16-frame slide by at most 0.013 units)


def _rolling_start_fit(x: np.ndarray, a: int, mu_g: float) -> float:
    """Least sum of squared residuals of ``x`` (n,) (frames a..a+n-1) for a ball set moving at time 0 without
    spin: friction ``mu_g`` slows it and spins it up until it rolls, at ``t = v0 / (3 mu_g)`` with 2/3 of its
    start speed ``v0`` (a disc, ``I = m r^2 / 2``: ``v0 - mu_g t = 2 mu_g t``), then it rolls on. Searched over
    ``v0`` (ROLLING_SPEEDS) and its sign; the start position is free."""
    shape = _rolling_designs(len(x), a, mu_g)  # (G, n) displacement for each v0
    best = math.inf
    for s in (1.0, -1.0):
        r = x[None] - s * shape
        best = min(best, float(((r - r.mean(1, keepdims=True)) ** 2).sum(1).min()))
    return best


@cache
def _rolling_designs(n: int, a: int, mu_g: float) -> np.ndarray:
    t = (a + np.arange(n)) * FRAME_TIME  # (n,)
    v0 = ROLLING_SPEEDS[:, None]  # (G, 1)
    if mu_g == 0:
        return v0 * t
    tau = np.minimum(t[None], v0 / (3 * mu_g))  # (G, n) time it has slid by t
    return v0 * t - mu_g * (tau * t - tau**2 / 2)


def _slides(v: View, least: int) -> list[tuple[int, int]]:
    """Slides of ``least`` frames or more on the floor of an object that has never left it: from the start to
    the first impact, then between impacts on a wall (:func:`_off_wall`) or with the other ball (each its own
    start and speed: their normals are horizontal, so they add no friction impulse on the floor). After a
    landing a slide is not judged: the landing's friction impulse (up to mu times its normal impulse) is one
    the frames cannot bound."""
    body = v.primary
    on_floor = body.seen & (body.gaps["floor"] <= CONTACT_MARGIN)
    a, b = v.start_window
    off = np.flatnonzero(~on_floor[a:b])
    b = a + int(off[0]) if off.size else b
    out = [(a, b)] if b - a >= least else []
    if not on_floor[: b].all() or b == a:
        return out
    left = np.flatnonzero(~on_floor[b:])
    stop = b + int(left[0]) if left.size else len(on_floor)  # the object stays on the floor until then
    sideways = on_floor & _off_wall(body, v.noise) & ~body.touches.get("other", False)
    return out + [(c + b, d + b) for c, d in motion.runs(sideways[b:stop], least)]


SLIDE_STEPS = 8  # the time friction stops acting is searched on a grid this many times finer than a frame


def _friction_fit(x: np.ndarray, mu_g: float, rolls: bool) -> float:
    """Least sum of squared residuals of ``x`` (n,) (frames 0..n-1 of a slide) under a velocity
    ``v(t) = v_end + s mu_g max(tau - t, 0)``: friction against the motion until ``tau``, then a ball rolls on
    at ``v_end`` and a block rests (``v_end = 0``), or still slides at the end (``tau`` past it, ``s v(t) >= 0``
    throughout). Searched over ``s = +-1`` and ``tau`` on a grid of SLIDE_STEPS per frame (linear in the rest)."""
    n = len(x)
    t, shape, residual, line = _slide_designs(n, rolls)
    best = math.inf
    for s in (1.0, -1.0):
        best = min(best, float((((x[None] - s * mu_g * shape) @ residual) ** 2).sum(1).min()))
        # still sliding at the end: a parabola of curvature -s mu_g whose velocity keeps the sign s
        target = x + s * mu_g * t**2 / 2
        slope = float(line @ target)
        if rolls or s * slope >= mu_g * t[-1]:
            best = min(best, float(((target @ _slide_designs(n, True)[2]) ** 2).sum()))
    return best


@cache
def _slide_designs(n: int, rolls: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For a slide of n frames: times (n,), the displacement (G, n) of a deceleration of 1 lasting each
    ``tau`` of the grid, the residual-maker (n, n) ``I - X X^+`` of the free terms (a start; a ball's final
    speed), and the least-squares slope weights (n,) of a line."""
    t = np.arange(n) * FRAME_TIME
    taus = np.arange(n * SLIDE_STEPS + 1) * FRAME_TIME / SLIDE_STEPS  # (G,) the friction's end, within the clip
    inside = np.minimum(t[None], taus[:, None])  # (G, n)
    shape = taus[:, None] * inside - inside**2 / 2
    design = np.stack([np.ones(n), t], 1) if rolls else np.ones((n, 1))
    residual = np.eye(n) - design @ np.linalg.pinv(design)  # symmetric
    line = np.linalg.pinv(np.stack([np.ones(n), t], 1))[1]
    return t, shape, residual, line


def ramp_slide(v: View) -> Check:
    """On the ramp the slope bounds how fast an object gains speed down it. With ``u`` its velocity down the
    slope: in flight ``du/dt = g sin(theta)``; on the slope friction (at most ``mu`` times the normal force, an
    impact's too) adds to it or takes from it. The acceleration along the slope fitted over a stretch of frames
    is a weighted mean of ``du/dt`` (a kernel ``K >= 0`` of unit integral, :func:`_kernel_peak`), so from the
    start to the first touch of the floor it is at least ``g sin(theta) - mu K_max (dv_n + g cos(theta) T)``:
    the normal impulses over the stretch are the normal velocity's change ``dv_n`` plus gravity's share ``g
    cos(theta) T``, and ``dv_n`` is at most twice the fastest speed energy allows (``continuity``'s); the stretch
    ends where the object may touch the ramp's top corner instead of its slope. A block (it
    does not rotate) moving downhill meets friction only against it, so from its downhill turn (the least
    position along the slope) the fitted acceleration is also at most ``g sin(theta)``. Each within its error at
    motion.ALPHA over the two. A slide under a weaker gravity (slower) or a stronger one (a block faster) fails."""
    if v.scene.interaction != "ramp" or v.g == 0:
        return Check("ramp_slide", "PC", None, None, "no ramp under gravity")
    body = v.primary
    top, down = _slope(v.scene)
    sin, cos = -down[1], abs(down[0])
    a = int(np.argmax(body.seen))
    # Over the ramp's top corner the object may touch the corner, not the slope: a block's bottom face resting on
    # it is pushed straight up, a ball beyond the slope's end away from the corner. Such frames end the stretch.
    if v.scene.kind == "block":
        corner = np.abs(body.pos[:, 0] - top[0]) < body.half
    else:
        corner = (body.pos - top) @ down < 0
    stop = np.flatnonzero(body.touches["floor"][a:] | ~body.seen[a:] | (corner & body.touches["ramp"])[a:])
    end = a + int(stop[0]) if stop.size else len(body.seen)
    if end - a < MIN_FLIGHT_FRAMES:
        return Check("ramp_slide", "PC", None, None, "too few frames above the floor")
    along = body.pos[:, 0] * down[0] + body.pos[:, 1] * down[1]  # (T,) position down the slope
    z = NormalDist().inv_cdf(1 - motion.ALPHA / 2)
    acc, std = motion.fit_acceleration(along, [(a, end)], v.noise.sigma)
    mu = STRUCTURE_FRICTION * spec.MATERIALS[v.scene.material].friction
    fall = max(_start_height(body) - float(np.nanmin(body.pos[a:end, 1])), 0.0)
    fastest = math.sqrt(max_start_speed(v.scene) ** 2 + 2 * v.g * fall)
    duration = (end - 1 - a) * FRAME_TIME
    least = v.g * sin - mu * _kernel_peak(end - a) * (2 * fastest + v.g * cos * duration)
    text = (f"acceleration down the slope {acc:.1f} +- {std:.1f} units/s^2 over frames {a}-{end - 1} "
            f"(friction and impacts allow {least:.1f} or more")
    if acc + z * std < least:
        return Check("ramp_slide", "PC", False, acc / (v.g * sin), text + ")")
    turn = a + int(np.argmin(along[a:end]))
    if v.scene.kind != "block" or end - turn < MIN_FLIGHT_FRAMES:
        return Check("ramp_slide", "PC", True, acc / (v.g * sin), text + ")")
    acc, std = motion.fit_acceleration(along, [(turn, end)], v.noise.sigma)
    return Check("ramp_slide", "PC", acc - z * std <= v.g * sin, acc / (v.g * sin),
                 text + f"; from frame {turn} downhill {acc:.1f} +- {std:.1f}, gravity's share {v.g * sin:.1f} at most)")


def _slope(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """The ramp's top corner (2,) and the unit vector (2,) down its slope."""
    corners = motion.ramp_polygon(ramp_side(scene))  # (3, 2)
    top = corners[np.argmax(corners[:, 1])]
    foot = corners[np.argmax(np.abs(corners[:, 0] - top[0]))]  # the slope's end on the floor
    return top, (foot - top) / np.hypot(*(foot - top))


@cache
def _kernel_peak(n: int) -> float:
    """The largest weight (1/s) the acceleration fitted over n frames (``motion.fit_acceleration``) gives a
    velocity change at any moment of them: the fit is ``A = integral K(tau) a(tau) dtau`` with ``K(tau) =
    sum_k w_k (t_k - tau)_+ >= 0`` of unit integral (``w`` the fit's weights); ``max K`` is 1.5-2 over the
    stretch's duration."""
    w = motion.acceleration_weights(n)  # (n,) A = w . y
    t = np.arange(n) * FRAME_TIME
    tau = np.linspace(0.0, t[-1], 64 * n)
    return float((w[None] * np.maximum(t[None] - tau[:, None], 0.0)).sum(1).max())


def momentum(v: View) -> Check:
    """Across the collision with the second ball, total horizontal momentum (mass = density x area) changes
    by no more than floor friction can explain: ``|p_after - p_before| <= mu g (m1 + m2) dt + 3 sigma``,
    velocities fitted over up to MOMENTUM_FRAMES frames on each side, ``sigma`` their centroid error."""
    if "other" not in v.bodies:
        return Check("momentum", "PC", None, None, "no second ball")
    a, b = v.bodies["primary"], v.bodies["other"]
    touching = np.flatnonzero(a.touches["other"])
    if touching.size == 0:
        return Check("momentum", "PC", None, None, "the objects never touch")
    c = int(touching[0])  # frames before c are before the impact, frames after c after it
    before = np.arange(max(0, c - MOMENTUM_FRAMES), c)
    after = np.arange(c + 1, min(v.obs.frames, c + 1 + MOMENTUM_FRAMES))
    if min(len(before), len(after)) < 2 or not all(x.seen[w].all() for x in (a, b) for w in (before, after)):
        return Check("momentum", "PC", None, None, f"collision at frame {c}: too close to the clip's ends or not seen")
    density = spec.MATERIALS[v.scene.material].density
    masses = [density * float(motion.median(x.track.area[x.seen])) for x in (a, b)]
    p = [sum(m * motion.fit_line(w * FRAME_TIME, x.pos[w, 0])[1] for m, x in zip(masses, (a, b))) for w in (before, after)]
    sigma = math.hypot(*masses) * math.hypot(*(_velocity_std(len(w), v.noise.sigma) for w in (before, after)))
    friction = STRUCTURE_FRICTION * spec.MATERIALS[v.scene.material].friction * v.g * sum(masses)
    allowed = friction * (after.mean() - before.mean()) * FRAME_TIME + MOMENTUM_SIGMAS * sigma
    change = abs(p[1] - p[0])
    return Check("momentum", "PC", change <= allowed, change / allowed,
                 f"horizontal momentum {p[0]:.0f} -> {p[1]:.0f} at frame {c} (friction and error allow +-{allowed:.0f})")


def _velocity_std(n: int, sigma: float) -> float:
    """Standard error (units/s) of a line's slope fitted to n consecutive frames with noise ``sigma``."""
    k = np.arange(n)
    return sigma * spec.FPS / math.sqrt(float(((k - k.mean()) ** 2).sum()))


CHECKS = (permanence, size_stability, color_stability, continuity, gravity, ballistic, free_flight, no_hover,
          no_penetration, bounce, impact_point, restitution, rebound, sliding, ramp_slide, momentum)


# ------------------------------------------------------------------------------------ continuous errors

ERRORS = ("gravity_ratio", "zero_g_accel", "fit_residual", "impulse", "restitution_error", "penetration", "noise")


def errors(v: View) -> dict[str, float | None]:
    """How far the video is from physics, as numbers (None where a figure does not apply), next to the binary
    checks:

    - ``gravity_ratio``: the fitted vertical acceleration of free flight over the scene's (1 = right; under
      gravity only); ``zero_g_accel``: the fitted acceleration's size (units/s^2) where gravity is zero;
    - ``fit_residual``: RMS distance (units) between the free-flight centroids and the best ballistic fit
      under the scene's gravity (each segment its own start and velocity);
    - ``impulse``: the largest unexplained mid-air velocity change (units/frame);
    - ``restitution_error``: how far the material's restitution lies outside the interval the bounces allow;
    - ``penetration``: the deepest overlap with a surface or the other object (units, 0 if none);
    - ``noise``: the centroid noise measured from the video (units)."""
    segments, ay, _, ax = _flight(v)
    worst, at, _ = _largest_impulse(v)
    squares, frames = v.once("ballistic", lambda: _ballistic_squares(v.primary, v.g, segments))
    out = {"gravity_ratio": ay / -v.g if v.g and math.isfinite(ay) else None,
           "zero_g_accel": math.hypot(ax, ay) if not v.g and math.isfinite(ay) else None,
           "fit_residual": math.sqrt(squares / frames) if frames else None,
           "impulse": worst if at >= 0 else None,
           "restitution_error": _restitution_error(v),
           "penetration": _deepest(v),
           "noise": v.noise.measured if math.isfinite(v.noise.measured) else None}
    return {k: None if x is None or not math.isfinite(x) else float(x) for k, x in out.items()}


def _restitution_error(v: View) -> float | None:
    if not v.g:
        return None
    e_mat = spec.MATERIALS[v.scene.material].restitution
    judged = _landings(v)
    if not judged:
        return None
    return max(max(lo - e_mat, e_mat - hi, 0.0) for _, lo, hi in judged)


def _deepest(v: View) -> float | None:
    worst = -math.inf
    for body in v.bodies.values():
        for gap in body.gaps.values():
            depth = np.where(body.seen, -gap, np.nan)
            if np.isfinite(depth).any():
                worst = max(worst, float(np.nanmax(depth)))
    return max(worst, 0.0) if math.isfinite(worst) else None

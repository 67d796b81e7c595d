"""The checks: physical commonsense (PC) and semantic adherence (SA) of one observed video.

The evaluator knows the prompt's scene but not the simulator's rollout: start positions and speeds are
random per video, so every check tests a law or a stated fact, not a reference trajectory. Each check
returns a :class:`Check`; ``passed`` is None when the check does not apply to the scene (no collision to
test momentum at, no bounce within the clip...).

Tolerances are named below with the reason for their size. One world unit is one pixel at 32 x 32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from physalign.eval.track import ObjectObs, Observation
from physalign.world import spec
from physalign.world.scene import Scene
from physalign.world.sim import ramp_side

CONTACT_MARGIN = 0.8  # units: closer than this to a surface counts as touching (pixel quantisation)
PENETRATION_TOL = 0.9  # units: pymunk's slop plus a pixel of centroid error
MIN_FLIGHT_FRAMES = 5  # a gravity fit needs this many free-flight frames
GRAVITY_REL_TOL = 0.3  # fitted acceleration within 30% of the scene's gravity...
GRAVITY_ABS_TOL = 9.0  # ...or within 9 units/s^2 (centroid noise of ~0.05 units, amplified by 1/dt^2)
IMPULSE = 1.0  # units/frame of velocity change that marks an impact (see _impulses)
HOVER_STEP = 0.02  # units per frame: slower than this for HOVER_FRAMES frames in the air is hovering
HOVER_FRAMES = 4
JUMP_SLACK = 1.5  # units per frame added to the fastest motion the scene allows
SIZE_STABILITY = 2.0  # largest / smallest visible area of an object
PRESENT_FRACTION = 0.9  # SA: an object must be seen in this fraction of frames
STRAY_PIXELS = 3.0  # SA: more than this many pixels of a colour the scene lacks is a wrong object
BLOCK_FILL = 0.9  # median bounding-box fill above this reads as a block, below as a ball
RESTITUTION_BANDS = {"rubber": (0.6, 1.1), "wood": (0.3, 0.85), "steel": (0.0, 0.55), "clay": (0.0, 0.25)}
ENERGY_GAIN = 1.1  # a rebound faster than 1.1 x the impact speed gains energy
MOMENTUM_TOL = 0.35  # relative change of total horizontal momentum across a collision


@dataclass
class Check:
    name: str
    group: str  # "PC" or "SA"
    passed: bool | None
    value: float | None = None
    detail: str = ""

    def to_dict(self) -> dict:
        value = None if self.value is None or not math.isfinite(self.value) else round(float(self.value), 4)
        passed = None if self.passed is None else bool(self.passed)
        return {"name": self.name, "group": self.group, "passed": passed, "value": value, "detail": self.detail}


def half_size(obj: ObjectObs, kind: str) -> float:
    """Radius (ball) or half-side (block) from the median visible area."""
    area = float(np.median(obj.area[obj.present])) if obj.present.any() else 0.0
    return math.sqrt(area / math.pi) if kind == "ball" else math.sqrt(area) / 2


# ---------------------------------------------------------------------------------------------- PC


def permanence(obs: Observation, scene: Scene) -> Check:
    """Every object is visible in every frame with a stable size."""
    worst = 1.0
    for name, obj in obs.objects.items():
        if not obj.present.all():
            return Check("permanence", "PC", False, float(obj.present.mean()), f"{name} missing in {int((~obj.present).sum())} frames")
        worst = max(worst, float(obj.area.max() / max(obj.area.min(), 1e-9)))
    return Check("permanence", "PC", worst <= SIZE_STABILITY, worst, f"area ratio {worst:.2f}")


def continuity(obs: Observation, scene: Scene) -> Check:
    """No jump larger than the fastest motion the scene's speeds and gravity allow."""
    bound = max_speed(scene) / spec.FPS + JUMP_SLACK
    worst = 0.0
    for obj in obs.objects.values():
        step = np.hypot(np.diff(obj.x), np.diff(obj.y))
        worst = max(worst, float(np.nanmax(step, initial=0.0)))
    return Check("continuity", "PC", worst <= bound, worst, f"largest step {worst:.2f} (bound {bound:.2f})")


def max_speed(scene: Scene) -> float:
    """An upper bound on any object's speed: a struck ball can leave at up to twice the striker's speed;
    vertically, the fastest launch plus a fall across the whole frame."""
    g = spec.GRAVITY[scene.force]
    vertical = math.sqrt(spec.LAUNCH_SPEED["high"][1] ** 2 + 2 * g * spec.WORLD_SIZE)
    return 2 * spec.SPEED["high"][1] + vertical


def contact_frames(obs: Observation, scene: Scene, name: str, impulses: bool = True) -> np.ndarray:
    """Frames (T,) bool where object ``name`` touches the floor, a wall, the ramp or the other ball (and,
    with ``impulses``, frames where its velocity jumps as at an impact)."""
    obj = obs.objects[name]
    r = half_size(obj, scene.kind if name == "primary" else "ball")
    touching = obj.y - r < spec.FLOOR_Y + CONTACT_MARGIN
    if scene.interaction == "wall":
        wall = spec.WALL_X[scene.direction]
        touching |= np.abs(obj.x - wall) < r + CONTACT_MARGIN
    if scene.interaction == "ramp":  # a block on the slope stands off it by up to sqrt(2) x its half-side
        reach = r * (math.sqrt(2) if scene.kind == "block" and name == "primary" else 1.0)
        touching |= _ramp_distance(obj.x, obj.y, ramp_side(scene)) < reach + CONTACT_MARGIN
    if "other" in obs.objects:
        other = obs.objects["other" if name == "primary" else "primary"]
        touching |= np.hypot(obj.x - other.x, obj.y - other.y) < r + half_size(other, "ball") + CONTACT_MARGIN
    return touching | ~obj.present | (_impulses(obj) if impulses else False)


def _impulses(obj: ObjectObs) -> np.ndarray:
    """Frames where the per-frame velocity jumps (an impact the proximity test missed between frames).
    Free flight changes the per-frame velocity by g / FPS^2 <= 0.42 units; impacts by a unit or more."""
    jump = np.zeros(len(obj.x), bool)
    accel = np.hypot(np.diff(obj.x, 2), np.diff(obj.y, 2))
    jump[1:-1] = np.nan_to_num(accel, nan=np.inf) > IMPULSE
    return jump


def _ramp_distance(x: np.ndarray, y: np.ndarray, rises_to: str) -> np.ndarray:
    """Signed distance of points above the ramp's slope (negative inside the wedge)."""
    (ax, ay), (bx, by) = _slope(rises_to)
    nx, ny = -(by - ay), bx - ax
    norm = math.hypot(nx, ny)
    if ny < 0:
        nx, ny = -nx, -ny
    return ((x - ax) * nx + (y - ay) * ny) / norm


def _slope(rises_to: str):
    """(foot, top) of the ramp's slope."""
    corners = spec.ramp_vertices(rises_to)
    top = max(corners, key=lambda c: c[1])
    foot = [c for c in corners if c[1] == spec.FLOOR_Y and c[0] != top[0]][0]
    return foot, top


def flight_segments(free: np.ndarray, min_len: int) -> list[np.ndarray]:
    """Runs of consecutive True frames at least ``min_len`` long, as index arrays."""
    segments, start = [], None
    for i, f in enumerate(list(free) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            if i - start >= min_len:
                segments.append(np.arange(start, i))
            start = None
    return segments


def fitted_gravity(obj: ObjectObs, free: np.ndarray) -> tuple[float, int]:
    """Vertical acceleration fitted to free-flight segments (frame-count weighted), and frames used."""
    accs, weights = [], []
    for seg in flight_segments(free, MIN_FLIGHT_FRAMES):
        t = seg / spec.FPS
        coef = np.polyfit(t, obj.y[seg], 2)
        accs.append(2 * coef[0])
        weights.append(len(seg))
    if not accs:
        return math.nan, 0
    return float(np.average(accs, weights=weights)), int(sum(weights))


def gravity(obs: Observation, scene: Scene) -> Check:
    """Free flight accelerates downward at the scene's gravity (none, low or normal)."""
    g = spec.GRAVITY[scene.force]
    obj = obs.objects["primary"]
    a, used = fitted_gravity(obj, ~contact_frames(obs, scene, "primary"))
    if used == 0:
        return Check("gravity", "PC", None, None, "no free-flight segment long enough")
    ok = abs(a + g) <= max(GRAVITY_REL_TOL * g, GRAVITY_ABS_TOL)
    return Check("gravity", "PC", ok, a, f"fitted {a:.1f} units/s^2 over {used} frames (expected {-g:.0f})")


def no_hover(obs: Observation, scene: Scene) -> Check:
    """Under gravity nothing stays still in the air."""
    if spec.GRAVITY[scene.force] == 0:
        return Check("no_hover", "PC", None, None, "zero gravity")
    obj = obs.objects["primary"]
    free = ~contact_frames(obs, scene, "primary", impulses=False)  # a freeze's own velocity jumps are not contacts
    still = np.hypot(np.diff(obj.x), np.diff(obj.y)) < HOVER_STEP
    run = still & free[1:] & free[:-1]
    longest = max((len(s) for s in flight_segments(run, 1)), default=0)
    return Check("no_hover", "PC", longest < HOVER_FRAMES - 1, float(longest), f"{longest} still steps in the air")


def no_penetration(obs: Observation, scene: Scene) -> Check:
    """No object sinks into the floor, a wall or the ramp."""
    worst = 0.0
    for name, obj in obs.objects.items():
        r = half_size(obj, scene.kind if name == "primary" else "ball")
        depths = [spec.FLOOR_Y - (obj.y - r)]
        if scene.interaction == "wall":
            wall = spec.WALL_X[scene.direction]
            depths.append((obj.x + r - wall) if scene.direction == "right" else (wall - (obj.x - r)))
        if scene.interaction == "ramp":
            (fx, _), (tx, _) = _slope(ramp_side(scene))
            over = (obj.x >= min(fx, tx)) & (obj.x <= max(fx, tx))
            depths.append(np.where(over, r - _ramp_distance(obj.x, obj.y, ramp_side(scene)), -np.inf))
        worst = max(worst, float(np.nanmax(np.concatenate([np.atleast_1d(d) for d in depths]))))
    return Check("no_penetration", "PC", worst <= PENETRATION_TOL, worst, f"deepest {worst:.2f} units")


def bounce(obs: Observation, scene: Scene) -> Check:
    """Floor impacts rebound as the material does; nothing rebounds faster than it hit."""
    g = spec.GRAVITY[scene.force]
    obj = obs.objects["primary"]
    if g == 0:
        return Check("bounce", "PC", None, None, "zero gravity")
    r = half_size(obj, scene.kind)
    ratios = _restitutions(obj, r, g, contact_frames(obs, scene, "primary"), obj.y - r < spec.FLOOR_Y + CONTACT_MARGIN)
    if not ratios:
        return Check("bounce", "PC", None, None, "no floor impact with flight on both sides")
    lo, hi = RESTITUTION_BANDS[scene.material]
    e = max(ratios)
    ok = all(lo <= x <= min(hi, ENERGY_GAIN) for x in ratios)
    return Check("bounce", "PC", ok, e, f"restitution {', '.join(f'{x:.2f}' for x in ratios)} (band {lo}-{hi})")


def _restitutions(obj: ObjectObs, r: float, g: float, contact: np.ndarray, on_floor: np.ndarray) -> list[float]:
    """Rebound / impact speed at each floor impact with >= 3 free frames before (and after, or a stop).

    The impact's window is its run of floor frames widened by the contact frames touching it (an impact
    between frames also marks its neighbours through the velocity jump)."""
    out = []
    for run in flight_segments(on_floor, 1):
        i, j = int(run[0]), int(run[-1])
        while i > 0 and contact[i - 1]:
            i -= 1
        while j + 1 < len(contact) and contact[j + 1]:
            j += 1
        before = np.arange(max(0, i - 4), i)
        if len(before) < 3:
            continue
        v_in = _impact_speed(obj, before, r, g)
        after = np.arange(j + 1, min(len(obj.y), j + 5))
        if len(after) >= 3 and not contact[after].any():
            out.append(_impact_speed(obj, after, r, g, rising=True) / max(v_in, 1e-6))
        elif on_floor[run[0] : min(len(obj.y), run[0] + 3)].all() and run[0] + 3 <= len(obj.y):
            out.append(0.0)  # stayed on the floor for 3 frames: no rebound
    return out


def _impact_speed(obj: ObjectObs, frames: np.ndarray, r: float, g: float, rising: bool = False) -> float:
    """Speed at which the parabola through ``frames`` (known gravity) meets the floor."""
    t = frames / spec.FPS
    y = obj.y[frames] + 0.5 * g * t**2  # remove the known gravity term: y + g t^2 / 2 = c + b t
    b, c = np.polyfit(t, y, 1)
    h = spec.FLOOR_Y + r
    # c + b t - g t^2 / 2 = h  ->  roots; the impact is the root nearest the segment's floor end
    disc = b**2 - 2 * g * (h - c)
    if disc < 0:
        return 0.0
    roots = ((b - math.sqrt(disc)) / g, (b + math.sqrt(disc)) / g)
    t_hit = min(roots, key=lambda x: abs(x - (t[0] if rising else t[-1])))
    return abs(b - g * t_hit)


def momentum(obs: Observation, scene: Scene) -> Check:
    """Total horizontal momentum is about conserved when the object strikes the second ball."""
    if "other" not in obs.objects:
        return Check("momentum", "PC", None, None, "no second ball")
    a, b = obs.objects["primary"], obs.objects["other"]
    moved = np.abs(b.x - b.x[0]) > 0.3
    if not moved.any():
        return Check("momentum", "PC", None, None, "the second ball never moves")
    k = int(moved.argmax())
    if k < 3 or k + 3 > len(a.x):
        return Check("momentum", "PC", None, None, "collision too close to the clip's ends")
    density = spec.MATERIALS[scene.material].density
    m1 = density * (math.pi if scene.kind == "ball" else 4) * spec.SIZES[scene.size] ** 2
    m2 = density * math.pi * spec.SIZES[spec.SECOND_BALL_SIZE] ** 2
    p_before = m1 * (a.x[k - 2] - a.x[k - 3]) * spec.FPS
    p_after = (m1 * (a.x[k + 2] - a.x[k + 1]) + m2 * (b.x[k + 2] - b.x[k + 1])) * spec.FPS
    change = abs(p_after - p_before) / max(abs(p_before), 1e-6)
    gap = float(np.nanmin(np.hypot(a.x - b.x, a.y - b.y)) / (half_size(a, scene.kind) + half_size(b, "ball")))
    ok = change <= MOMENTUM_TOL and gap > 0.6
    return Check("momentum", "PC", ok, change, f"momentum change {change:.0%}, closest approach {gap:.2f} x radii")


# ---------------------------------------------------------------------------------------------- SA


def objects_present(obs: Observation, scene: Scene) -> Check:
    seen = min(float(o.present.mean()) for o in obs.objects.values())
    return Check("objects", "SA", seen >= PRESENT_FRACTION, seen, f"objects seen in {seen:.0%} of frames")


def no_stray_objects(obs: Observation, scene: Scene) -> Check:
    pixels = float(obs.stray_area.max() / obs.unit_area)
    return Check("no_stray_objects", "SA", pixels <= STRAY_PIXELS, pixels, f"{pixels:.0f} pixels of colours the prompt lacks")


def size(obs: Observation, scene: Scene) -> Check:
    obj = obs.objects["primary"]
    if not obj.present.any():
        return Check("size", "SA", False, None, "object never seen")
    area = float(np.median(obj.area[obj.present]))
    shape = math.pi if scene.kind == "ball" else 4.0
    nearest = min(spec.SIZES, key=lambda s: abs(math.log(area / (shape * spec.SIZES[s] ** 2))))
    return Check("size", "SA", nearest == scene.size, area, f"area {area:.1f} reads as {nearest}")


def kind(obs: Observation, scene: Scene) -> Check:
    obj = obs.objects["primary"]
    if not obj.present.any():
        return Check("kind", "SA", False, None, "object never seen")
    fill = float(np.median(obj.fill[obj.present]))
    seen = "block" if fill > BLOCK_FILL else "ball"
    return Check("kind", "SA", seen == scene.kind, fill, f"box fill {fill:.2f} reads as {seen}")


def background(obs: Observation, scene: Scene) -> Check:
    return Check("background", "SA", obs.background == scene.background, None, f"background reads as {obs.background}")


def direction(obs: Observation, scene: Scene) -> Check:
    """The first frames move the way the prompt says."""
    obj = obs.objects["primary"]
    if not obj.present[:3].all():
        return Check("direction", "SA", False, None, "object missing at the start")
    dx, dy = obj.x[1] - obj.x[0], obj.y[2] - obj.y[0]
    want = scene.direction
    if want in ("left", "right"):
        value = dx if want == "right" else -dx
        return Check("direction", "SA", value > 0.1, float(value), f"first step {dx:+.2f} units in x")
    if want == "up":
        return Check("direction", "SA", dy > 0.3, float(dy), f"rises {dy:+.2f} units in two frames")
    if spec.GRAVITY[scene.force] == 0:
        moved = float(np.hypot(obj.x[-1] - obj.x[0], obj.y[-1] - obj.y[0]))
        return Check("direction", "SA", moved < 1.0, moved, f"moves {moved:.2f} units in zero gravity")
    return Check("direction", "SA", dy < -0.02, float(dy), f"falls {-dy:+.2f} units in two frames")


PC_CHECKS = (permanence, continuity, gravity, no_hover, no_penetration, bounce, momentum)
SA_CHECKS = (objects_present, no_stray_objects, size, kind, background, direction)

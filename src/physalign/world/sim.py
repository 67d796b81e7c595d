"""Simulate a scene with pymunk and record its ground truth: trajectories and contact events.

A scene fixes *ranges* (drop height, speed); the seed fixes where in each range a video falls, through
unit-uniform draws (:class:`InitialDraws`). A counterfactual — the same scene with one physics axis
perturbed — reuses the same draws, so it differs from the original only by that axis.

Blocks do not rotate (infinite moment of inertia) and stay axis-aligned squares: the renderer and the
evaluator then see a block's shape unchanged in every frame, and what varies is only its motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pymunk

from physalign.world import spec
from physalign.world.scene import Scene

# Floor, walls, ramp; pymunk multiplies it with the object's friction. Low, so that a block pushed at
# "slow" speed visibly slides (v^2 / (2 mu g) >= 0.9 units even for clay) and slides down the ramp.
STRUCTURE_FRICTION = 0.1
STATIC_ELASTICITY = 1.0  # so an impact's restitution is the object's material restitution
_SURFACES = {1: "floor", 2: "wall", 3: "ramp"}
COLLISION_SLOP = 0.02  # units of overlap pymunk leaves between resting shapes (its default, 0.1, is visible)
INTERACTION_TIME = 0.6  # s: an object reaches the wall or the second ball within this (see _gap_cap)
RAMP_CLEARANCE = 1.0  # units: the least free fall of an object dropped onto the ramp
_OBJECT = 10  # collision type of the primary object; the second ball is _OBJECT + 1


@dataclass(frozen=True)
class InitialDraws:
    """Unit-uniform numbers that place a scene inside the ranges its prompt names."""

    u_x: float  # start position across its range
    u_height: float  # drop / throw height (or the fall onto a ramp)
    u_speed: float  # horizontal or launch speed
    u_gap: float  # free distance to a wall or second ball; landing point on a ramp

    @classmethod
    def from_seed(cls, seed: int) -> "InitialDraws":
        return cls(*np.random.default_rng(seed).uniform(size=4).tolist())


@dataclass
class ObjectTrack:
    """One object's trajectory: ``pos`` and ``vel`` are (T, 2) in world units (x right, y up)."""

    name: str  # "primary" or "other"
    color: str
    kind: str  # "ball" | "block"
    half_size: float  # radius of a ball, half-side of a block
    mass: float
    pos: np.ndarray
    vel: np.ndarray


@dataclass
class Contact:
    """An impact: object ``a`` met surface ``b`` between frames ``frame - 1`` and ``frame``."""

    frame: int
    time: float
    a: str
    b: str  # "floor" | "wall" | "ramp" | "other"
    speed_in: float  # approach speed along the contact normal, before
    speed_out: float  # separation speed along the normal, right after the impact
    # speed_out / speed_in is the material's restitution on static surfaces (their elasticity is 1), its
    # square between the two balls (pymunk multiplies the elasticities of the shapes in contact).


@dataclass
class Rollout:
    """What a scene did: trajectories, impacts, and the static geometry that was there."""

    times: np.ndarray  # (T,) seconds
    objects: tuple[ObjectTrack, ...]  # primary first
    contacts: list[Contact] = field(default_factory=list)
    wall_side: str | None = None  # "left" | "right"
    ramp_rises_to: str | None = None  # "left" | "right"

    def object(self, name: str) -> ObjectTrack:
        return next(o for o in self.objects if o.name == name)


def lerp(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def simulate(scene: Scene, seed: int, frames: int = spec.DEFAULT_FRAMES, *, draws: InitialDraws | None = None) -> Rollout:
    """Run ``scene`` for ``frames`` frames at ``spec.FPS`` (``spec.SUBSTEPS`` physics steps per frame).

    The start is placed by ``InitialDraws.from_seed(seed)`` (or by ``draws``, if given). For every valid
    scene and ``frames <= spec.DEFAULT_FRAMES`` the objects stay wholly inside the visible box and out of
    the floor, wall and ramp (up to pymunk's collision slop, < 0.1 unit); ``tests/test_world_sim.py``
    checks it over random scenes and the extreme draws.
    """
    if frames < 2:
        raise ValueError(f"frames must be >= 2. Got {frames}.")
    draws = InitialDraws.from_seed(seed) if draws is None else draws
    space = pymunk.Space()
    space.gravity = (0.0, -spec.GRAVITY[scene.force])
    space.collision_slop = COLLISION_SLOP
    geometry = _add_structures(space, scene)
    bodies = _add_objects(space, scene, draws)
    events = _watch_contacts(space, bodies)
    return _run(space, scene, bodies, events, frames, geometry)


def _add_structures(space: pymunk.Space, scene: Scene) -> dict:
    def add(shape: pymunk.Shape, kind: int) -> None:
        shape.elasticity, shape.friction, shape.collision_type = STATIC_ELASTICITY, STRUCTURE_FRICTION, kind
        space.add(shape)

    body = space.static_body
    add(pymunk.Poly(body, [(-10, -10), (spec.WORLD_SIZE + 10, -10), (spec.WORLD_SIZE + 10, spec.FLOOR_Y), (-10, spec.FLOOR_Y)]), 1)
    geometry = {"wall_side": None, "ramp_rises_to": None}
    if scene.interaction == "wall":
        side = scene.direction
        x0, x1 = (spec.WALL_X["right"], spec.WORLD_SIZE + 10) if side == "right" else (-10, spec.WALL_X["left"])
        add(pymunk.Poly(body, [(x0, spec.FLOOR_Y - 1), (x1, spec.FLOOR_Y - 1), (x1, spec.WORLD_SIZE + 10), (x0, spec.WORLD_SIZE + 10)]), 2)
        geometry["wall_side"] = side
    if scene.interaction == "ramp":
        rises = ramp_side(scene)
        add(pymunk.Poly(body, list(spec.ramp_vertices(rises))), 3)
        geometry["ramp_rises_to"] = rises
    return geometry


def ramp_side(scene: Scene) -> str:
    """Which way the ramp rises: toward a thrown object's motion; to the left under a dropped one."""
    return scene.direction if scene.direction in ("left", "right") else "left"


def start_state(scene: Scene, draws: InitialDraws) -> tuple[tuple[float, float], tuple[float, float]]:
    """Initial centre (x, y) and velocity (vx, vy) of the primary object."""
    r = spec.SIZES[scene.size]
    if scene.kinematics == "dropped":
        return _drop_start(scene, draws, r), (0.0, 0.0)
    if scene.kinematics == "launched_up":
        return (lerp(spec.DROP_X, draws.u_x), spec.FLOOR_Y + r), (0.0, lerp(spec.LAUNCH_SPEED[scene.magnitude], draws.u_speed))
    sign = 1.0 if scene.direction == "right" else -1.0
    speed = lerp(spec.SPEED[scene.magnitude], draws.u_speed)
    if scene.interaction == "ramp":
        x, y = _onto_ramp(scene, draws, r, speed)
    else:
        height = 0.0 if scene.kinematics.startswith("rolled") else lerp(spec.THROW_HEIGHT, draws.u_height)
        x, y = _start_x(scene, draws, r, speed, height), spec.FLOOR_Y + height + r
    x = x if sign > 0 else spec.WORLD_SIZE - x
    return (x, y), (sign * speed, 0.0)


def _drop_start(scene: Scene, draws: InitialDraws, r: float) -> tuple[float, float]:
    """Start centre of a dropped object. Over a ramp, at least ``RAMP_CLEARANCE`` above the slope under it."""
    if scene.interaction != "ramp":
        return lerp(spec.DROP_X, draws.u_x), spec.FLOOR_Y + lerp(spec.DROP_HEIGHT[scene.magnitude], draws.u_height) + r
    x = lerp(spec.RAMP_DROP_X, draws.u_x)
    highest = max(ramp_surface(x - r, "left"), ramp_surface(x + r, "left"))
    height = lerp(spec.DROP_HEIGHT[scene.magnitude], draws.u_height) * _ramp_drop_scale(scene)
    return x, max(spec.FLOOR_Y + height, highest + RAMP_CLEARANCE) + r


def _ramp_drop_scale(scene: Scene) -> float:
    """Shrinks drop heights (keeping high above low) so that a drop onto the ramp lasts at most
    ``RAMP_MAX_FALL_TIME``: the landing the prompt names happens within the clip even in low gravity."""
    reach = 0.5 * spec.GRAVITY[scene.force] * spec.RAMP_MAX_FALL_TIME**2
    return min(1.0, reach / spec.DROP_HEIGHT["high"][1])


def ramp_surface(x: float, rises_to: str) -> float:
    """Height y of the ramp's top surface at ``x`` (the floor's beyond the wedge)."""
    (x0, _), (x1, _), (x2, y2) = spec.ramp_vertices("right")
    x = x if rises_to == "right" else spec.WORLD_SIZE - x
    return spec.FLOOR_Y + (y2 - spec.FLOOR_Y) * min(max((x - x0) / (x1 - x0), 0.0), 1.0)


def _onto_ramp(scene: Scene, draws: InitialDraws, r: float, speed: float) -> tuple[float, float]:
    """Start centre (x, y), for rightward motion, of an object thrown onto the slope facing it.

    Its bottom falls ``fall`` units onto the slope at ``x_land``, reached after ``t = sqrt(2 fall / g)``:
    ``x0 = x_land - speed t``. The fall is short (and the fall time at most ``RAMP_MAX_FALL_TIME``), so
    that a bouncy object, which the slope sends back the way it came, stays in the frame.
    """
    g = spec.GRAVITY[scene.force]
    fall = min(lerp(spec.RAMP_THROW_FALL, draws.u_height), 0.5 * g * spec.RAMP_MAX_FALL_TIME**2)
    x_land = spec.RAMP_LOW_X + lerp(spec.RAMP_LAND_X, draws.u_gap)
    return max(r, x_land - speed * math.sqrt(2 * fall / g)), ramp_surface(x_land, "right") + fall + r


def _start_x(scene: Scene, draws: InitialDraws, r: float, speed: float, height: float) -> float:
    """Start x for rightward motion (the caller mirrors it). With a wall or a second ball the object starts
    a gap away that it crosses early in the clip: see :func:`_gap_cap`."""
    if scene.interaction not in ("wall", "ball"):
        return lerp(spec.THROW_START_X, draws.u_x)
    cap = _gap_cap(scene, speed, height)
    gap = lerp((min(spec.INTERACTION_GAP[0], 0.5 * cap), min(spec.INTERACTION_GAP[1], cap)), draws.u_gap)
    target = spec.WALL_X["right"] if scene.interaction == "wall" else spec.SECOND_BALL_X - spec.SIZES[spec.SECOND_BALL_SIZE]
    return target - gap - r


def _gap_cap(scene: Scene, speed: float, height: float) -> float:
    """The widest gap that still makes the interaction happen early: the object covers it within
    ``INTERACTION_TIME`` at its start speed (a rolling ball slows as it starts to roll), before friction
    stops a sliding block (70% of its reach), and, thrown, before it lands (floor friction at the landing
    can stop a slow block short of the wall)."""
    g = spec.GRAVITY[scene.force]
    cap = speed * INTERACTION_TIME
    if scene.kinematics.startswith("rolled") and scene.kind == "block" and g > 0:
        decel = STRUCTURE_FRICTION * spec.MATERIALS[scene.material].friction * g
        cap = min(cap, 0.7 * speed**2 / (2 * decel))
    if height > 0 and g > 0:
        cap = min(cap, 0.8 * speed * math.sqrt(2 * height / g))
    return cap


def _make_body(space: pymunk.Space, kind: str, half: float, material: spec.Material, kind_id: int) -> pymunk.Body:
    if kind == "ball":
        mass = material.density * math.pi * half**2
        body = pymunk.Body(mass, pymunk.moment_for_circle(mass, 0, half))
        shape: pymunk.Shape = pymunk.Circle(body, half)
    else:
        mass = material.density * (2 * half) ** 2
        body = pymunk.Body(mass, math.inf)
        shape = pymunk.Poly.create_box(body, (2 * half, 2 * half))
    shape.elasticity, shape.friction, shape.collision_type = material.restitution, material.friction, kind_id
    space.add(body, shape)
    return body


def _add_objects(space: pymunk.Space, scene: Scene, draws: InitialDraws) -> dict[str, pymunk.Body]:
    material = spec.MATERIALS[scene.material]
    primary = _make_body(space, scene.kind, spec.SIZES[scene.size], material, _OBJECT)
    primary.position, primary.velocity = start_state(scene, draws)
    bodies = {"primary": primary}
    if scene.interaction == "ball":
        r2 = spec.SIZES[spec.SECOND_BALL_SIZE]
        other = _make_body(space, "ball", r2, material, _OBJECT + 1)
        x = spec.SECOND_BALL_X if scene.direction == "right" else spec.WORLD_SIZE - spec.SECOND_BALL_X
        other.position = (x, spec.FLOOR_Y + r2)
        bodies["other"] = other
    return bodies


def _watch_contacts(space: pymunk.Space, bodies: dict[str, pymunk.Body]) -> list[dict]:
    """Record each new contact's normal speed before the impulse; the run loop fills in the speed after."""
    events: list[dict] = []
    names = {_OBJECT: "primary", _OBJECT + 1: "other"}

    def begin(arbiter: pymunk.Arbiter, space: pymunk.Space, data) -> None:
        a_shape, b_shape = arbiter.shapes
        a = names[a_shape.collision_type]
        b = _SURFACES.get(b_shape.collision_type) or names.get(b_shape.collision_type, "other")
        normal = arbiter.normal
        rel = bodies[a].velocity - (bodies[b].velocity if b in bodies else pymunk.Vec2d(0, 0))
        events.append({"a": a, "b": "other" if b in bodies else b, "normal": normal, "speed_in": abs(rel.dot(normal)), "bodies": (a, b)})

    for kind in (1, 2, 3, _OBJECT + 1):
        space.on_collision(_OBJECT, kind, begin=begin)
    for kind in (1, 2, 3):
        space.on_collision(_OBJECT + 1, kind, begin=begin)
    return events


def _run(space, scene: Scene, bodies: dict, events: list[dict], frames: int, geometry: dict) -> Rollout:
    dt = 1.0 / (spec.FPS * spec.SUBSTEPS)
    pos = {n: np.zeros((frames, 2)) for n in bodies}
    vel = {n: np.zeros((frames, 2)) for n in bodies}
    contacts: list[Contact] = []
    for f in range(frames):
        for k in range(spec.SUBSTEPS if f > 0 else 0):
            seen = len(events)
            space.step(dt)
            t = (f - 1) / spec.FPS + (k + 1) * dt
            contacts += [_finish(e, bodies, f, t) for e in events[seen:]]
        for n, body in bodies.items():
            pos[n][f], vel[n][f] = tuple(body.position), tuple(body.velocity)
    del events[:]
    times = np.arange(frames) / spec.FPS
    tracks = tuple(_track(n, scene, bodies[n], pos[n], vel[n]) for n in bodies)
    return Rollout(times, tracks, _merge(contacts), **geometry)


def _finish(event: dict, bodies: dict, frame: int, time: float) -> Contact:
    a, b = event["bodies"]
    rel = bodies[a].velocity - (bodies[b].velocity if b in bodies else pymunk.Vec2d(0, 0))
    return Contact(frame, time, event["a"], event["b"], float(event["speed_in"]), float(abs(rel.dot(event["normal"]))))


def _merge(contacts: list[Contact]) -> list[Contact]:
    """Drop the re-touches of an object resting on a surface: keep impacts faster than a crawl."""
    return [c for c in contacts if c.speed_in > 0.5]


def _track(name: str, scene: Scene, body: pymunk.Body, pos: np.ndarray, vel: np.ndarray) -> ObjectTrack:
    if name == "primary":
        color, kind, half = scene.color, scene.kind, spec.SIZES[scene.size]
    else:
        color, kind, half = scene.other_color, "ball", spec.SIZES[spec.SECOND_BALL_SIZE]
    return ObjectTrack(name, color, kind, half, float(body.mass), pos, vel)

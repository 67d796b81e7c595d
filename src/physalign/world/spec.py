"""The physical constants and geometry of the physics world: one source of truth.

The simulator (``sim.py``), the renderer (``render.py``) and the evaluator (``physalign.eval``) all read
these numbers, so that what the evaluator checks is exactly what the simulator did.

Coordinates are *world units*: the visible box is ``WORLD_SIZE`` x ``WORLD_SIZE`` units, x to the right,
y upward (the renderer flips y). A video of ``H`` x ``W`` pixels maps one unit to ``W / WORLD_SIZE``
pixels horizontally and ``H / WORLD_SIZE`` vertically. Time is in seconds; frames are ``1 / FPS`` apart.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bumped whenever a change here alters what the simulator renders, so that data generated before it is
# recognised as stale (the bench's data stamps carry it). v2: larger objects (v1: radius 1.5 and 2.5).
WORLD_VERSION = 2

WORLD_SIZE = 32.0  # units; the visible box is [0, 32] x [0, 32]
FPS = 12.0  # frames per second of every rendered video
SUBSTEPS = 40  # physics steps per frame (480 Hz): fast impacts overlap surfaces by < 0.1 unit
DEFAULT_FRAMES = 16
DEFAULT_RESOLUTION = 32  # pixels, square

FLOOR_Y = 3.0  # top surface of the floor; the floor fills y in [0, FLOOR_Y]
WALL_THICKNESS = 4.0  # a wall fills the last WALL_THICKNESS units of the side it stands on
WALL_X = {"right": WORLD_SIZE - WALL_THICKNESS, "left": WALL_THICKNESS}  # inner face of each wall

# Gravity in units / s^2, by the scene's ``force`` value.
GRAVITY = {"normal": 60.0, "low": 15.0, "none": 0.0}


@dataclass(frozen=True)
class Material:
    """Contact properties. ``restitution`` is the pymunk elasticity of the object (the floor, walls and
    ramp have elasticity 1.0, so the effective restitution of an impact is this value)."""

    restitution: float
    friction: float
    density: float  # mass per unit area (2D)


MATERIALS = {
    "rubber": Material(restitution=0.85, friction=0.9, density=1.0),
    "wood": Material(restitution=0.55, friction=0.6, density=0.7),
    "steel": Material(restitution=0.30, friction=0.3, density=7.8),
    "clay": Material(restitution=0.0, friction=1.0, density=1.8),
}

# Radius of a ball, half-side of a block, in units, by the scene's ``size`` value.
SIZES = {"small": 2.5, "large": 4.0}
SECOND_BALL_SIZE = "small"  # the struck ball of the "collides with a ... ball" interaction
SECOND_BALL_X = 15.0  # its centre when the primary object moves right (mirrored for left)

# Colours, RGB uint8. Object colours are far from every background and from the static structures.
OBJECT_COLORS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 255),
    "yellow": (240, 220, 40),
    "cyan": (40, 220, 230),
    "magenta": (220, 50, 220),
}
BACKGROUNDS = {
    "black": (0, 0, 0),
    "gray": (100, 100, 100),
    "navy": (16, 24, 72),
}
STRUCTURE_COLOR = (235, 235, 235)  # floor, walls, ramp

# Ramp: a static wedge on the floor, its slope facing the incoming object. For an object arriving from
# the left (thrown right) the wedge rises to the right; mirrored otherwise. Dropped objects fall onto a
# wedge that rises to the left, so they roll down to the right.
RAMP_LOW_X = 12.0  # x where the slope meets the floor (for a wedge rising to the right)
RAMP_HIGH_X = 28.0  # x of the top of the slope
RAMP_HEIGHT = 8.0  # units above the floor at the high end

# Initial conditions: ranges sampled uniformly per video (the prompt fixes the range, the seed the value).
DROP_X = (10.0, 22.0)
RAMP_DROP_X = (7.0, 12.0)  # over the slope of the wedge that rises to the left
DROP_HEIGHT = {"low": (7.0, 11.0), "high": (15.0, 20.0)}  # bottom of the object above the floor
THROW_START_X = (4.0, 7.0)  # distance of the start from the side the object moves away from
THROW_HEIGHT = (13.0, 19.0)  # bottom of the object above the floor
SPEED = {"low": (4.0, 6.0), "high": (8.0, 10.0)}  # horizontal speed: thrown, rolled
INTERACTION_GAP = (1.5, 4.0)  # free distance between the object and the wall / second ball at the start
RAMP_MAX_FALL_TIME = 1.0  # s; an object thrown or dropped onto the ramp starts low enough to land by then
RAMP_LAND_X = (5.0, 9.0)  # where a thrown object lands: distance up the slope from RAMP_LOW_X (mirrored)
RAMP_THROW_FALL = (3.0, 6.0)  # how far a thrown object's bottom falls onto the slope
LAUNCH_SPEED = {"low": (16.0, 19.0), "high": (23.0, 26.0)}  # upward speed: launched up (apex in frame at low gravity)


def ramp_vertices(rises_to: str) -> tuple[tuple[float, float], ...]:
    """Corners (x, y) of the ramp wedge, counter-clockwise. ``rises_to`` is "right" or "left"."""
    if rises_to not in ("right", "left"):
        raise ValueError(f"rises_to must be 'right' or 'left'. Got {rises_to!r}.")
    low, high, top = RAMP_LOW_X, RAMP_HIGH_X, FLOOR_Y + RAMP_HEIGHT
    corners = ((low, FLOOR_Y), (high, FLOOR_Y), (high, top))
    if rises_to == "left":
        corners = tuple((WORLD_SIZE - x, y) for x, y in reversed(corners))
    return corners

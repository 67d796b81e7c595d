"""Render a rollout to RGB frames.

Each pixel's colour is the area-weighted mix of what covers it, estimated on a ``supersample`` x
``supersample`` grid of sub-pixels: an object's edge pixels blend with the background, which is what lets
the evaluator find sub-pixel centroids. The y axis is flipped so that up in the world is up on screen.
"""

from __future__ import annotations

import numpy as np

from physalign.world import spec
from physalign.world.scene import Scene
from physalign.world.sim import Rollout


def render(
    scene: Scene,
    rollout: Rollout,
    height: int = spec.DEFAULT_RESOLUTION,
    width: int = spec.DEFAULT_RESOLUTION,
    supersample: int = 4,
) -> np.ndarray:
    """Frames of ``rollout`` as uint8 (T, height, width, 3)."""
    if height < 4 or width < 4 or supersample < 1:
        raise ValueError(f"need height, width >= 4 and supersample >= 1. Got {height}, {width}, {supersample}.")
    x, y = _subpixel_centres(height * supersample, width * supersample)  # (Ws,), (Hs,)
    canvas = np.broadcast_to(_static_layer(scene, rollout, x, y), (len(rollout.times), len(y), len(x), 3)).copy()
    for obj in rollout.objects:
        inside = _covers(obj.kind, obj.pos, obj.half_size, x, y)  # (T, Hs, Ws)
        canvas[inside] = spec.OBJECT_COLORS[obj.color]
    frames = canvas.reshape(len(rollout.times), height, supersample, width, supersample, 3).mean(axis=(2, 4))
    return np.rint(frames).astype(np.uint8)


def _subpixel_centres(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    x = (np.arange(cols) + 0.5) * spec.WORLD_SIZE / cols
    y = spec.WORLD_SIZE - (np.arange(rows) + 0.5) * spec.WORLD_SIZE / rows
    return x, y


def _static_layer(scene: Scene, rollout: Rollout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Background, floor, wall and ramp as float (Hs, Ws, 3)."""
    xx, yy = np.meshgrid(x, y)
    solid = yy < spec.FLOOR_Y
    if rollout.wall_side == "right":
        solid |= xx > spec.WALL_X["right"]
    elif rollout.wall_side == "left":
        solid |= xx < spec.WALL_X["left"]
    if rollout.ramp_rises_to is not None:
        solid |= _in_triangle(xx, yy, spec.ramp_vertices(rollout.ramp_rises_to))
    layer = np.empty(xx.shape + (3,), np.float32)
    layer[:] = spec.BACKGROUNDS[scene.background]
    layer[solid] = spec.STRUCTURE_COLOR
    return layer


def _in_triangle(xx: np.ndarray, yy: np.ndarray, corners) -> np.ndarray:
    (ax, ay), (bx, by), (cx, cy) = corners
    d1 = (xx - bx) * (ay - by) - (ax - bx) * (yy - by)
    d2 = (xx - cx) * (by - cy) - (bx - cx) * (yy - cy)
    d3 = (xx - ax) * (cy - ay) - (cx - ax) * (yy - ay)
    has_neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    has_pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(has_neg & has_pos)


def _covers(kind: str, pos: np.ndarray, half: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sub-pixels covered by a ball (disc) or a block (axis-aligned square), per frame: (T, Hs, Ws)."""
    dx = x[None, None, :] - pos[:, 0, None, None]  # (T, 1, Ws)
    dy = y[None, :, None] - pos[:, 1, None, None]  # (T, Hs, 1)
    if kind == "ball":
        return dx**2 + dy**2 <= half**2
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)

"""Render a rollout to RGB frames.

Each pixel's colour is the mean over a ``supersample`` x ``supersample`` grid of sub-pixels, each of which
takes the colour of what covers its centre (objects over structures over the background): an estimate of
the area-weighted mix, so an object's edge pixels blend with what is behind it, which is what lets the
evaluator find sub-pixel centroids. The y axis is flipped so that up in the world is up on screen; one
world unit is ``width / WORLD_SIZE`` pixels across and ``height / WORLD_SIZE`` pixels down.

Speed: the static layer (background, floor, wall, ramp) is rendered once per look and resolution and
cached; objects are then drawn only inside a small window around each, for all frames at once. The result
equals drawing every sub-pixel of every frame (``tests/test_world_render.py`` checks it against that).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from physalign.world import spec
from physalign.world.scene import Scene
from physalign.world.sim import ObjectTrack, Rollout


def render(
    scene: Scene,
    rollout: Rollout,
    height: int = spec.DEFAULT_RESOLUTION,
    width: int | None = None,
    supersample: int = 4,
) -> np.ndarray:
    """Frames of ``rollout`` as uint8 (T, height, width, 3); ``width`` defaults to ``height``."""
    width = height if width is None else width
    if height < 4 or width < 4 or supersample < 1:
        raise ValueError(f"need height, width >= 4 and supersample >= 1. Got {height}, {width}, {supersample}.")
    sub, mean = static_layer(scene.background, rollout.wall_side, rollout.ramp_rises_to, height, width, supersample)
    frames = np.repeat(mean[None], len(rollout.times), axis=0)  # (T, H, W, 3) float32
    for j in range(len(rollout.objects)):
        _draw_window(frames, sub, rollout.objects[: j + 1], supersample)
    return np.rint(frames).astype(np.uint8)


def subpixel_centres(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """World x of each sub-pixel column (cols,) and world y of each sub-pixel row (rows,), top row first."""
    x = (np.arange(cols) + 0.5) * spec.WORLD_SIZE / cols
    y = spec.WORLD_SIZE - (np.arange(rows) + 0.5) * spec.WORLD_SIZE / rows
    return x, y


@functools.lru_cache(maxsize=64)
def static_layer(
    background: str, wall_side: str | None, ramp_rises_to: str | None, height: int, width: int, supersample: int
) -> tuple[np.ndarray, np.ndarray]:
    """Background, floor, wall and ramp: sub-pixels (H*s, W*s, 3) and their pixel means (H, W, 3), float32.

    Cached and read-only: many videos share a look.
    """
    x, y = subpixel_centres(height * supersample, width * supersample)
    xx, yy = np.meshgrid(x, y)
    solid = yy < spec.FLOOR_Y
    if wall_side == "right":
        solid |= xx > spec.WALL_X["right"]
    elif wall_side == "left":
        solid |= xx < spec.WALL_X["left"]
    if ramp_rises_to is not None:
        solid |= in_triangle(xx, yy, spec.ramp_vertices(ramp_rises_to))
    sub = np.empty(xx.shape + (3,), np.float32)
    sub[:] = spec.BACKGROUNDS[background]
    sub[solid] = spec.STRUCTURE_COLOR
    mean = sub.reshape(height, supersample, width, supersample, 3).mean(axis=(1, 3))
    sub.flags.writeable = mean.flags.writeable = False
    return sub, mean


def in_triangle(xx: np.ndarray, yy: np.ndarray, corners) -> np.ndarray:
    """Points (xx, yy) inside or on the triangle ``corners`` (any winding)."""
    (ax, ay), (bx, by), (cx, cy) = corners
    d1 = (xx - bx) * (ay - by) - (ax - bx) * (yy - by)
    d2 = (xx - cx) * (by - cy) - (bx - cx) * (yy - cy)
    d3 = (xx - ax) * (cy - ay) - (cx - ax) * (yy - ay)
    has_neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    has_pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(has_neg & has_pos)


def covers(kind: str, pos: np.ndarray, half: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which points a ball (disc) or block (axis-aligned square) covers, per frame.

    ``pos`` (T, 2); ``x`` (T, 1, n) or (n,) and ``y`` (T, m, 1) or (m, 1) world coordinates -> (T, m, n) bool.
    """
    dx = x - pos[:, 0, None, None]
    dy = y - pos[:, 1, None, None]
    if kind == "ball":
        return dx**2 + dy**2 <= half**2
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)


def _draw_window(frames: np.ndarray, sub: np.ndarray, objects: tuple[ObjectTrack, ...], s: int) -> None:
    """Redraw, in place, the pixels of a window around the last of ``objects`` in every frame.

    The window's sub-pixels start from the static layer and get every object of ``objects`` painted in
    order, so pixels shared with an earlier object keep its share. Windows reaching past the border are
    clipped to it (repeated edge pixels are computed identically, so writing them twice is harmless).
    """
    T, H, W, _ = frames.shape
    obj = objects[-1]
    rows = _window(spec.WORLD_SIZE - obj.pos[:, 1], obj.half_size, H)  # (T, kh) pixel rows, top first
    cols = _window(obj.pos[:, 0], obj.half_size, W)  # (T, kw)
    sub_rows = (rows[:, :, None] * s + np.arange(s)).reshape(T, -1)  # (T, kh*s)
    sub_cols = (cols[:, :, None] * s + np.arange(s)).reshape(T, -1)  # (T, kw*s)
    patch = sub[sub_rows[:, :, None], sub_cols[:, None, :]]  # (T, kh*s, kw*s, 3)
    x = ((sub_cols + 0.5) * spec.WORLD_SIZE / (W * s))[:, None, :]  # (T, 1, kw*s)
    y = (spec.WORLD_SIZE - (sub_rows + 0.5) * spec.WORLD_SIZE / (H * s))[:, :, None]  # (T, kh*s, 1)
    for o in objects:
        patch[covers(o.kind, o.pos, o.half_size, x, y)] = spec.OBJECT_COLORS[o.color]
    kh, kw = rows.shape[1], cols.shape[1]
    pixels = patch.reshape(T, kh, s, kw, s, 3).mean(axis=(2, 4))  # (T, kh, kw, 3)
    frames[np.arange(T)[:, None, None], rows[:, :, None], cols[:, None, :]] = pixels


def _window(centre: np.ndarray, half: float, pixels: int) -> np.ndarray:
    """Pixel indices (T, k) of a window covering [centre - half, centre + half] (world units along one
    axis, measured from the image's first pixel), clipped to [0, pixels)."""
    scale = pixels / spec.WORLD_SIZE
    k = math.ceil(2 * half * scale) + 2
    start = np.floor((np.clip(np.nan_to_num(centre, nan=-1e6), -1e6, 1e6) - half) * scale).astype(np.int64)  # (T,)
    return np.clip(start[:, None] + np.arange(k), 0, pixels - 1)

"""Find the scene's objects in every frame by colour.

Each pixel gets the label of the nearest colour of a palette holding every background, the structure
colour and every object colour of the world (so a wrong background or a stray object colour is seen, not
forced onto the scene's own). An object's pixels are weighted by how much of the object colour they hold
(the projection of the pixel onto the background→object colour segment), which gives anti-aliased edges
their partial weight and the centroid sub-pixel precision.

All positions are returned in world units (x right, y up), as the simulator uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from physalign.world import spec
from physalign.world.scene import Scene

PALETTE_NAMES = tuple(f"bg:{b}" for b in spec.BACKGROUNDS) + ("structure",) + tuple(spec.OBJECT_COLORS)
PALETTE = np.array(
    list(spec.BACKGROUNDS.values()) + [spec.STRUCTURE_COLOR] + list(spec.OBJECT_COLORS.values()), np.float32
)  # (K, 3)
_OBJECT_INDEX = {c: PALETTE_NAMES.index(c) for c in spec.OBJECT_COLORS}
_STRUCTURE = PALETTE_NAMES.index("structure")
EDGE_ALPHA = 0.05  # background-labelled pixels next to an object holding more of its colour than this count


@dataclass
class ObjectObs:
    """One object colour's measurements per frame (T,). Absent frames hold NaN positions."""

    color: str
    area: np.ndarray  # world units^2 (soft)
    x: np.ndarray
    y: np.ndarray
    fill: np.ndarray  # soft area / (soft width x soft height): ball ~ pi/4, block ~ 1
    width: np.ndarray  # bounding-box width, world units

    @property
    def present(self) -> np.ndarray:
        return self.area > 0


@dataclass
class Observation:
    objects: dict[str, ObjectObs]  # "primary", and "other" when the scene has a second ball
    stray_area: np.ndarray  # (T,) world units^2 of object colours the scene does not have
    background: str  # the background label covering most of the sky
    unit_area: float  # world units^2 of one pixel
    frames: int


def label_pixels(video: np.ndarray) -> np.ndarray:
    """Nearest palette index for every pixel: (T, H, W) int."""
    v = video.astype(np.float32)
    d = ((v[..., None, :] - PALETTE) ** 2).sum(-1)  # (T, H, W, K)
    return d.argmin(-1)


def observe(video: np.ndarray, scene: Scene) -> Observation:
    """Measure ``video`` (T, H, W, 3) uint8 against the objects ``scene`` says are there."""
    t, h, w, _ = video.shape
    labels = label_pixels(video)
    sx, sy = spec.WORLD_SIZE / w, spec.WORLD_SIZE / h
    xs = (np.arange(w) + 0.5) * sx
    ys = spec.WORLD_SIZE - (np.arange(h) + 0.5) * sy
    bg = np.array(spec.BACKGROUNDS[scene.background], np.float32)
    colors = {"primary": scene.color} | ({"other": scene.other_color} if scene.other_color else {})
    objects = {n: _object(video, labels, c, bg, xs, ys, sx * sy) for n, c in colors.items()}
    stray = [i for c, i in _OBJECT_INDEX.items() if c not in colors.values()]
    stray_area = np.isin(labels, stray).sum((1, 2)) * sx * sy
    return Observation(objects, stray_area, _sky_label(labels, h), sx * sy, t)


def _object(video, labels, color: str, bg, xs, ys, unit_area: float) -> ObjectObs:
    mask = labels == _OBJECT_INDEX[color]  # (T, H, W)
    target = np.array(spec.OBJECT_COLORS[color], np.float32)
    axis = target - bg
    alpha = np.clip(((video.astype(np.float32) - bg) @ axis) / float(axis @ axis), 0.0, 1.0)
    edge = (labels < len(spec.BACKGROUNDS)) & (alpha > EDGE_ALPHA)  # partly covered pixels read as background
    weight = np.where(mask, alpha, 0.0) + np.where(edge & _near(mask), alpha, 0.0)  # (T, H, W)
    mass = weight.sum((1, 2))
    safe = np.where(mass > 0, mass, 1.0)
    x = np.where(mass > 0, (weight.sum(1) * xs).sum(1) / safe, np.nan)
    y = np.where(mass > 0, (weight.sum(2) * ys).sum(1) / safe, np.nan)
    width, height = weight.max(1).sum(1), weight.max(2).sum(1)  # soft extents in pixels
    fill = mass / np.maximum(width * height, 1e-6)
    present = mask.sum((1, 2)) > 0
    area = np.where(present, mass, 0.0) * unit_area
    return ObjectObs(color, area, np.where(present, x, np.nan), np.where(present, y, np.nan), fill, width * (xs[1] - xs[0]))


def _near(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of ``mask``, per frame."""
    near = mask.copy()
    near[:, 1:] |= mask[:, :-1]
    near[:, :-1] |= mask[:, 1:]
    grown = near.copy()
    grown[:, :, 1:] |= near[:, :, :-1]
    grown[:, :, :-1] |= near[:, :, 1:]
    return grown


def _sky_label(labels: np.ndarray, height: int) -> str:
    """The background name most of the upper half of the frames shows."""
    sky = labels[:, : height // 2]
    counts = np.bincount(sky.ravel(), minlength=len(PALETTE_NAMES))[: len(spec.BACKGROUNDS)]
    return PALETTE_NAMES[int(counts.argmax())].split(":", 1)[1]

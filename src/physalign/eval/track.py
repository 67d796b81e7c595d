"""Find the scene's objects in every frame by colour, with sub-pixel precision.

Every pixel is labelled with the nearest colour of a palette holding every background, the structure
colour and *every* object colour of the world, so a wrong background or a stray object is seen rather than
forced onto the scene's own colours. The nearest colour is read from a table over RGB quantised to 6 bits
per channel (built once; a bin is 4 levels wide, far below the ~170 between palette colours), which makes
labelling one gather per pixel instead of K distances.

An object of colour ``O`` covers a fraction ``a`` of an edge pixel, the rest of which shows the background
``B`` and at most one other colour ``Y`` (the structure, or the scene's other object)::

    v = B + a (O - B) + b (Y - B)        (a, b) by least squares; the Y with the smallest residual wins

and the pixel weighs ``a``. These soft weights make area,
centroid and extents exact to a few hundredths of a pixel on the renderer's anti-aliased frames.

All lengths are in world units (x right, y up): pixel column ``c`` is at ``x = (c + 0.5) S / W`` and row
``r`` at ``y = S - (r + 0.5) S / H`` with ``S = spec.WORLD_SIZE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from physalign.world import spec
from physalign.world.scene import Scene

BACKGROUND_NAMES = tuple(spec.BACKGROUNDS)
PALETTE_NAMES = BACKGROUND_NAMES + ("structure",) + tuple(spec.OBJECT_COLORS)
PALETTE = np.array(
    list(spec.BACKGROUNDS.values()) + [spec.STRUCTURE_COLOR] + list(spec.OBJECT_COLORS.values()), np.float32
)  # (K, 3)
STRUCTURE = PALETTE_NAMES.index("structure")
COLOR_INDEX = {c: PALETTE_NAMES.index(c) for c in spec.OBJECT_COLORS}

QUANT_BITS = 6  # per channel in the label table
# A pixel is a *solid* patch of a palette colour within this distance of it: a quarter of the closest pair
# of object colours (~170 apart), so an edge mixing two colours (~85 or more from either) never is.
SOLID_DISTANCE = 40.0
# A mix the model explains leaves a residual of rounding only on rendered frames; generated or autoencoded
# frames add colour noise, allowed up to SOLID_DISTANCE. Pixels further off (four colours, other things)
# get no soft weight unless labelled as the object.
MIX_RESIDUAL = SOLID_DISTANCE**2
_SOLID = 1 << 4  # flag bit in the label table; the low 4 bits hold the palette index


@dataclass(frozen=True)
class Track:
    """One object colour measured in every frame. Arrays are (T,) unless noted; NaN where absent."""

    color: str
    area: np.ndarray  # units^2, soft (edge pixels count their covered fraction)
    pos: np.ndarray  # (T, 2) centroid x, y
    bbox: np.ndarray  # (T, 4) x0, y0, x1, y1 of the pixels labelled with its colour
    fill: np.ndarray  # area / (soft width x soft height): ball ~ pi/4, block ~ 1
    squareness: np.ndarray  # in [-1, 1]: > 0 where a square explains the pixels better than a disc
    rgb: np.ndarray  # (T, 3) mean colour of its inner pixels (NaN if it has none)
    clipped: np.ndarray  # bool: touches the border of the frame (area and centroid are partial)

    @property
    def present(self) -> np.ndarray:
        return self.area > 0


@dataclass(frozen=True)
class Observation:
    """What the tracker saw in a (T, H, W, 3) video."""

    tracks: dict[str, Track]  # "primary", and "other" when the scene has a second ball
    stray_area: np.ndarray  # (T,) units^2 of solid object colours the scene does not have
    background_counts: dict[str, int]  # pixels labelled with each background, over the whole clip
    pixel: tuple[float, float]  # (width, height) of one pixel in units
    frames: int

    @property
    def background(self) -> str:
        return max(self.background_counts, key=self.background_counts.get)

    @property
    def unit_area(self) -> float:
        return self.pixel[0] * self.pixel[1]


def scene_colors(scene: Scene) -> dict[str, str]:
    """Track name -> colour, for the objects ``scene`` has."""
    return {"primary": scene.color} | ({"other": scene.other_color} if scene.other_color else {})


@cache
def label_table() -> np.ndarray:
    """(2^(3 QUANT_BITS),) uint8: palette index of the nearest colour to each quantised RGB bin centre,
    plus ``_SOLID`` when the bin centre is within ``SOLID_DISTANCE`` of it."""
    levels = 1 << QUANT_BITS
    centre = (np.arange(levels, dtype=np.float32) + 0.5) * (256 / levels)
    rgb = np.stack(np.meshgrid(centre, centre, centre, indexing="ij"), -1).reshape(-1, 1, 3)
    d2 = ((rgb - PALETTE) ** 2).sum(-1)  # (L^3, K)
    nearest = d2.argmin(1)
    solid = d2[np.arange(len(d2)), nearest] <= SOLID_DISTANCE**2
    return (nearest + _SOLID * solid).astype(np.uint8)


def label_pixels(video: np.ndarray) -> np.ndarray:
    """Label codes (T, H, W) uint8 of a (T, H, W, 3) uint8 video: palette index | ``_SOLID`` flag."""
    q = video >> (8 - QUANT_BITS)  # (T, H, W, 3) uint8
    index = q[..., 0].astype(np.int32) << (2 * QUANT_BITS)
    index |= q[..., 1].astype(np.int32) << QUANT_BITS
    index |= q[..., 2]
    return label_table()[index]


def observe(video: np.ndarray, scene: Scene) -> Observation:
    """Measure ``video`` (T, H, W, 3) uint8 against the objects ``scene`` says are there."""
    t, h, w, _ = video.shape
    codes = label_pixels(video)
    labels = codes & (_SOLID - 1)
    grid = _Grid(t, h, w)
    bg = PALETTE_NAMES.index(scene.background)
    colors = scene_colors(scene)
    others = {c: (STRUCTURE,) + tuple(COLOR_INDEX[o] for o in colors.values() if o != c) for c in colors.values()}
    tracks = {n: _track(c, video, labels, bg, others[c], grid) for n, c in colors.items()}
    stray = np.zeros(2 * _SOLID, bool)
    stray[[_SOLID + COLOR_INDEX[c] for c in spec.OBJECT_COLORS if c not in colors.values()]] = True
    stray_area = stray[codes].reshape(t, -1).sum(1) * grid.unit_area
    counts = np.bincount(labels.ravel(), minlength=len(PALETTE_NAMES))
    return Observation(tracks, stray_area, {b: int(counts[i]) for i, b in enumerate(BACKGROUND_NAMES)}, grid.pixel, t)


@dataclass(frozen=True)
class _Grid:
    frames: int
    rows: int
    cols: int

    @property
    def pixel(self) -> tuple[float, float]:
        return spec.WORLD_SIZE / self.cols, spec.WORLD_SIZE / self.rows

    @property
    def unit_area(self) -> float:
        return self.pixel[0] * self.pixel[1]

    @property
    def xs(self) -> np.ndarray:
        return (np.arange(self.cols) + 0.5) * self.pixel[0]

    @property
    def ys(self) -> np.ndarray:
        return spec.WORLD_SIZE - (np.arange(self.rows) + 0.5) * self.pixel[1]


def coverage(pixels: np.ndarray, k: int, bg: int, others: tuple[int, ...]) -> np.ndarray:
    """Fraction (M,) of each pixel (M, 3) covered by palette colour ``k``, unmixing it as
    ``v = B + a (O - B) + b (Y - B)`` (B the background, Y one of ``others``: the structure colour or
    another object) by least squares, for the Y that leaves the smallest residual. 0 where no Y explains
    the pixel as such a mix."""
    base = PALETTE[bg]
    rel = pixels - base  # (M, 3)
    best_a, best_res = np.zeros(len(pixels), np.float32), np.full(len(pixels), np.inf, np.float32)
    for y in others:
        basis, unmix = _unmixing(k, bg, y)
        coef = rel @ unmix.T  # (M, 2)
        res = ((rel - coef @ basis.T) ** 2).sum(1)
        better = res < best_res
        best_a, best_res = np.where(better, coef[:, 0], best_a), np.where(better, res, best_res)
    return np.where(best_res <= MIX_RESIDUAL, np.clip(best_a, 0.0, 1.0), 0.0)


@cache
def _unmixing(k: int, bg: int, y: int) -> tuple[np.ndarray, np.ndarray]:
    """The basis (3, 2) ``[O - B, Y - B]`` and its pseudo-inverse (2, 3)."""
    basis = np.stack([PALETTE[k] - PALETTE[bg], PALETTE[y] - PALETTE[bg]], 1)
    return basis, np.linalg.pinv(basis)


def _track(color: str, video: np.ndarray, labels: np.ndarray, bg: int, others: tuple[int, ...], grid: _Grid) -> Track:
    k = COLOR_INDEX[color]
    mask = labels == k  # (T, H, W)
    near = np.flatnonzero(_grow(mask))  # the object's pixels and the ring of its partly covered edges
    alpha = coverage(video.reshape(-1, 3)[near].astype(np.float32), k, bg, others)
    weight = np.zeros(mask.shape, np.float32)
    labelled = mask.ravel()[near]
    weight.ravel()[near] = np.where(labelled, np.maximum(alpha, 0.5), alpha)  # labelled: at least half covered
    mass = weight.sum((1, 2))  # (T,) pixels
    cols, rows = mask.any(1), mask.any(2)  # (T, W), (T, H): columns and rows holding a labelled pixel
    present = cols.any(1)
    safe = np.where(present, mass, 1.0)
    col_w, row_w = weight.max(1), weight.max(2)  # (T, W), (T, H): soft extents
    pos = np.stack([weight.sum(1) @ grid.xs, weight.sum(2) @ grid.ys], 1) / safe[:, None]
    nan = np.where(present, 1.0, np.nan)[:, None]
    return Track(
        color=color,
        area=np.where(present, mass, 0.0) * grid.unit_area,
        pos=pos * nan,
        bbox=_bbox(cols, rows, grid) * nan,
        fill=mass / np.maximum(col_w.sum(1) * row_w.sum(1), 1e-9),
        squareness=squareness(weight, near, pos, mass, grid),
        rgb=_mean_rgb(video, mask),
        clipped=rows[:, 0] | rows[:, -1] | cols[:, 0] | cols[:, -1],
    )


def squareness(weight: np.ndarray, near: np.ndarray, pos: np.ndarray, mass: np.ndarray, grid: _Grid) -> np.ndarray:
    """Per frame (T,), ``(E_disc - E_square) / (E_disc + E_square)``: the squared errors of the coverage
    ``weight`` at the flat pixel indices ``near`` (M,) (the object and the ring around it) against a disc
    and an axis-aligned square of the measured area at the measured centroid. Both templates meet the
    same noise, so the sign holds on noisy frames, where extents (and the fill) grow. Coverage of a square
    is exact (overlap of intervals); of a disc, the usual ``clip(r - d + 1/2, 0, 1)`` with ``d`` the pixel
    centre's distance, in pixels."""
    px, py = grid.pixel
    frame, rest = np.divmod(near, grid.rows * grid.cols)
    row, col = np.divmod(rest, grid.cols)
    centre = np.nan_to_num(pos)  # (T, 2)
    dx = grid.xs[col] / px - centre[frame, 0] / px  # (M,) pixels from the centroid
    dy = grid.ys[row] / py - centre[frame, 1] / py
    area = mass[frame]  # pixels
    half = np.sqrt(area) / 2
    square = _overlap(dx, half) * _overlap(dy, half)
    disc = np.clip(np.sqrt(area / np.pi) - np.hypot(dx, dy) + 0.5, 0.0, 1.0)
    w = weight.ravel()[near]
    e_square = np.bincount(frame, (w - square) ** 2, minlength=grid.frames)
    e_disc = np.bincount(frame, (w - disc) ** 2, minlength=grid.frames)
    return (e_disc - e_square) / np.maximum(e_disc + e_square, 1e-9)


def _overlap(d: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Covered length of unit pixels centred ``d`` from the middle of intervals ``[-half, half]``."""
    return np.clip(np.minimum(d + 0.5, half) - np.maximum(d - 0.5, -half), 0.0, 1.0)


def _grow(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of ``mask`` (T, H, W)."""
    rows = mask.copy()
    rows[:, 1:] |= mask[:, :-1]
    rows[:, :-1] |= mask[:, 1:]
    out = rows.copy()
    out[:, :, 1:] |= rows[:, :, :-1]
    out[:, :, :-1] |= rows[:, :, 1:]
    return out


def _bbox(cols: np.ndarray, rows: np.ndarray, grid: _Grid) -> np.ndarray:
    """(T, 4) x0, y0, x1, y1: outer pixel edges of the labelled pixels, from the columns (T, W) and rows
    (T, H) that hold one."""
    c0, c1 = cols.argmax(1), grid.cols - cols[:, ::-1].argmax(1)
    r0, r1 = rows.argmax(1), grid.rows - rows[:, ::-1].argmax(1)
    px, py = grid.pixel
    return np.stack([c0 * px, spec.WORLD_SIZE - r1 * py, c1 * px, spec.WORLD_SIZE - r0 * py], 1)


def _mean_rgb(video: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T, 3) mean colour of the object's inner pixels (labelled, and so are their 4 neighbours: no edge
    mixes in the background), NaN in frames without any."""
    t = len(mask)
    inner = mask.copy()
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    inner[:, :, 1:] &= mask[:, :, :-1]
    inner[:, :, :-1] &= mask[:, :, 1:]
    flat = inner.reshape(t, 1, -1)  # (T, 1, H W)
    sums = (flat.astype(np.float64) @ video.reshape(t, -1, 3))[:, 0]  # (T, 3): exact sums of integers
    count = flat.sum(2)  # (T, 1)
    return np.where(count > 0, sums / np.maximum(count, 1), np.nan)

"""Physics-IQ's metrics and score, as google-deepmind/physics-IQ-benchmark computes them.

Videos are uint8 RGB ``(T, H, W, 3)``. References are files of that repository's ``code/`` folder.

**Motion masks** (``binary_mask_generator.py``, ``generate_mask``), at the video's own resolution: each
frame to grayscale ``g_t`` (``cv2.cvtColor``), blurred by OpenCV's 5 x 5 Gaussian with sigma 0 (the
binomial kernel ``[1, 4, 6, 4, 1] / 16`` per axis); a running average ``a_0 = g_0``,
``a_t = 0.7 a_{t-1} + 0.3 g_t`` (``cv2.accumulateWeighted``, updated *before* the comparison);
``m_t = |g_t - round(a_t)| > 10`` (``convertScaleAbs`` rounds half to even; ``THRESH_BINARY`` is strict),
then a 5 x 5 morphological open and then close; ``m_0 = 0``. Bool ``(T, H, W)``.

The benchmark stores masks as mp4v videos (gray, ``round(fps)`` frames per second) and reads them back as
3-channel frames; :func:`mp4v_roundtrip` does the same, so a mask pixel the codec blurs near the resize's
127 cut is decided as in the benchmark.

**Metrics** (``calculate_and_write_metrics_to_csv.py``, ``process_videos``): the real take's first frame sets
the size ``(W // 4, H // 4)``; frames and decoded masks of every video are resized to it (``cv2.resize``,
bilinear; a mask value is kept when the resized value exceeds 127, per channel); the frames of index below
``5 * fps`` are used. IoUs count over every non-time axis (pixels, and channels of decoded masks).

- spatiotemporal IoU: ``mean_t IoU(m_t, r_t)`` with ``IoU = 1`` where both masks are empty
  (``spatiotemporal_iou_per_frame``);
- spatial IoU: ``IoU(any_t m_t, any_t r_t)`` (``spatial_binary_masks``);
- weighted spatial IoU: ``sum_p min(f, g) / sum_p max(f, g)`` of ``f = mean_t m_t``, 1 when both are 0
  (``weighted_spatial_mask``, ``compute_weighted_spatial_iou``);
- MSE: per frame ``mean (x_t - y_t)^2`` of frames in [0, 1] over pixels and channels (``mse_per_frame``).

Each is measured against take 1; the same four between take 1 and take 2 are the *physical variance*.

**Score** (``calculate_iq_score.py``, ``calculate_iq_score``), over scenarios s and views v (left, center,
right), per-frame values first rounded to 4 decimals as the CSV parser does:

- ``ST`` = mean over s of the mean of s's per-frame spatiotemporal IoUs (all views' frames together);
  ``MSE`` likewise; ``S``, ``WS`` = mean over v of the mean over s;
- the variances ``vST``, ``vMSE`` = mean over v of the mean of every frame's value of v (rounded to 4
  decimals), ``vS`` (rounded to 5) and ``vWS`` (to 4) = mean over v of the mean over s;
- ``score = 100 * ((ST / vST + S / vS + WS / vWS) / 3 - (MSE - vMSE))``, clipped to [0, 100] and rounded to
  2 decimals.

What we do not reproduce: the benchmark makes real takes at 8, 16 or 24 fps by blending 30 fps frames
(``fps_changer.py``); we expect takes at the generated video's frame rate. Masks of odd width or height are
cropped to even ones before the round trip (the benchmark declares an even-sized writer and writes the
uncropped frames; what OpenCV does then is not checked).
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

BLUR, AVERAGE_WEIGHT, THRESHOLD, MORPH = 5, 0.3, 10, 5
DOWNSCALE, SECONDS = 4, 5
VIEWS = ("perspective-left", "perspective-center", "perspective-right")
PER_FRAME = ("spatiotemporal_iou", "mse")
PER_VIEW = ("spatial_iou", "weighted_spatial_iou")


def _check(video: np.ndarray) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video must be uint8 (T, H, W, 3). Got {video.dtype} {video.shape}.")
    return video


def motion_masks(video: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> bool (T, H, W), the benchmark's masks (module docstring); ``m_0`` is empty."""
    video = _check(video)
    kernel = np.ones((MORPH, MORPH), np.uint8)
    gray = [cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (BLUR, BLUR), 0) for f in video]
    average = gray[0].astype(np.float64)
    masks = [np.zeros(gray[0].shape, bool)]
    for g in gray[1:]:
        cv2.accumulateWeighted(g, average, AVERAGE_WEIGHT)  # average <- 0.7 average + 0.3 g
        moved = (cv2.absdiff(g, cv2.convertScaleAbs(average)) > THRESHOLD).astype(np.uint8) * 255
        moved = cv2.morphologyEx(cv2.morphologyEx(moved, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
        masks.append(moved > 0)
    return np.stack(masks)


def read_frames(path: str | Path) -> np.ndarray:
    """Every frame of a video file as OpenCV decodes it (the benchmarks' reader): uint8 BGR (T, H, W, 3)."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if not frames:
        raise ValueError(f"{path}: OpenCV reads no frame")
    return np.stack(frames)


def read_rgb(path: str | Path) -> np.ndarray:
    """A video file as OpenCV decodes it, uint8 RGB (T, H, W, 3)."""
    return np.ascontiguousarray(read_frames(path)[..., ::-1])


def mp4v_roundtrip(masks: np.ndarray, fps: float) -> np.ndarray:
    """bool (T, H, W) -> uint8 (T, H', W', 3): the masks as 0/255 written to an mp4v file at ``round(fps)``
    (gray, even size) and decoded, as the benchmark stores them."""
    masks = np.asarray(masks)[:, : masks.shape[1] // 2 * 2, : masks.shape[2] // 2 * 2]
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "masks.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), max(1, round(fps)),
                                 (masks.shape[2], masks.shape[1]), isColor=False)
        for m in masks:
            writer.write(m.astype(np.uint8) * 255)
        writer.release()
        return read_frames(path)


def quarter_size(reference: np.ndarray) -> tuple[int, int]:
    """The benchmark's comparison size ``(W // 4, H // 4)`` of a (T, H, W, ...) real take."""
    return reference.shape[2] // DOWNSCALE, reference.shape[1] // DOWNSCALE


def resize_frames(video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float (T, h, w, 3) in [0, 1] at ``size = (w, h)`` (bilinear, then / 255)."""
    return np.stack([cv2.resize(f, size) for f in video]).astype(np.float64) / 255.0


def resize_masks(masks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool (T, H, W) (as 0/255) or uint8 (T, H, W[, 3]) as decoded from a mask video -> bool (T, h, w[, 3]):
    resized bilinearly, kept where above 127."""
    masks = np.asarray(masks)
    masks = masks if masks.dtype == np.uint8 else masks.astype(np.uint8) * 255
    return np.stack([cv2.resize(m, size) > 127 for m in masks])


def frame_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame IoU of bool (T, ...) masks over the frames both have, (min T,); 1 where both are empty."""
    n = min(len(a), len(b))
    inter = np.logical_and(a[:n], b[:n]).reshape(n, -1).sum(1)
    union = np.logical_or(a[:n], b[:n]).reshape(n, -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def spatial_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the pixels that move in any frame, ``any_t a_t`` vs ``any_t b_t``."""
    return float(frame_iou(a.any(0)[None], b.any(0)[None])[0])


def weighted_spatial_iou(a: np.ndarray, b: np.ndarray) -> float:
    """``sum min(f, g) / sum max(f, g)`` of the moving fractions ``f = mean_t a_t``; 1 when neither moves."""
    f, g = a.mean(0), b.mean(0)
    top = np.maximum(f, g).sum()
    return float(np.minimum(f, g).sum() / top) if top > 0 else 1.0


def frame_mse(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-frame ``mean (x_t - y_t)^2`` of (T, h, w, 3) frames in [0, 1], (T,), in float32 as
    ``mse_per_frame`` computes it; the frame counts must agree."""
    if len(x) != len(y):
        raise ValueError(f"Physics-IQ's MSE needs as many frames in both videos. Got {len(x)} and {len(y)}.")
    x, y = x.astype(np.float32), y.astype(np.float32)
    return ((x - y) ** 2).reshape(len(x), -1).mean(1, dtype=np.float32).astype(np.float64)


@dataclass
class Clip:
    """One video cut to the benchmark's window: frames (T, h, w, 3) in [0, 1] and bool masks (T, h, w[, 3])."""

    frames: np.ndarray
    masks: np.ndarray


def prepare(video: np.ndarray, size: tuple[int, int], frames: int, masks: np.ndarray | None = None,
            roundtrip_fps: float | None = None) -> Clip:
    """The first ``frames`` frames of ``video`` and their masks, both resized to ``size``. Masks are computed
    over the whole video (and passed through :func:`mp4v_roundtrip` at ``roundtrip_fps`` if given, as the
    benchmark stores a whole video's masks) unless ``masks`` gives them: the dataset's own as decoded uint8
    (T, H, W, 3)."""
    video = _check(video)
    if masks is None:
        masks = motion_masks(video)
        masks = mp4v_roundtrip(masks, roundtrip_fps) if roundtrip_fps else masks
    return Clip(resize_frames(video[:frames], size), resize_masks(np.asarray(masks)[:frames], size))


def _channels(masks: np.ndarray) -> np.ndarray:
    """(T, h, w) -> (T, h, w, 3) as a decoded mask video has them; (T, h, w, 3) unchanged."""
    return masks if masks.ndim == 4 else np.repeat(masks[..., None], 3, -1)


def compare(generated: Clip, take: Clip) -> dict:
    """The four metrics of ``generated`` against one real ``take``: per-frame lists and per-view floats."""
    a, b = (_channels(c.masks) for c in (take, generated))
    return {"spatiotemporal_iou": frame_iou(a, b).tolist(), "spatial_iou": spatial_iou(a, b),
            "weighted_spatial_iou": weighted_spatial_iou(a, b),
            "mse": frame_mse(take.frames, generated.frames).tolist()}


def metrics(video: np.ndarray, take1: np.ndarray, fps: float, take2: np.ndarray | None = None,
            masks1: np.ndarray | None = None, masks2: np.ndarray | None = None, roundtrip: bool = True) -> dict:
    """Physics-IQ's metrics of ``video`` against ``take1`` over the first 5 s at ``fps``, and (given
    ``take2``) the physical variance, take 1 against take 2: ``{"metrics": ..., "variance": ... | None}``.
    Masks not given are computed and, with ``roundtrip``, stored as the benchmark stores them."""
    frames, size = math.ceil(SECONDS * fps), quarter_size(_check(take1))  # frame indices < 5 fps
    codec = fps if roundtrip else None
    real1 = prepare(take1, size, frames, masks1, codec)
    out = {"metrics": compare(prepare(video, size, frames, None, codec), real1), "variance": None}
    if take2 is not None:
        out["variance"] = compare(prepare(take2, size, frames, masks2, codec), real1)
    return out


def summary(values: dict) -> dict[str, float]:
    """The per-video means: per-frame metrics averaged over frames."""
    return {k: float(np.mean(v)) if isinstance(v, list) else float(v) for k, v in values.items()}


# ------------------------------------------------------------------------------------------------ score


def _r(values, digits: int = 4) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64), digits)


def score(views: list[dict]) -> dict:
    """Physics-IQ's score from per-view results ``{"scenario", "view", "metrics", "variance"}`` (``metrics``
    and ``variance`` as :func:`compare` returns them); formula in the module docstring."""
    if not views or any(v.get("variance") is None for v in views):
        raise ValueError("Physics-IQ's score needs take 2 (the physical variance) for every view.")
    scenarios = sorted({v["scenario"] for v in views})
    names = sorted({v["view"] for v in views})
    by = {s: [v for v in views if v["scenario"] == s] for s in scenarios}
    model = {k: float(np.mean([np.concatenate([_r(v["metrics"][k]) for v in by[s]]).mean() for s in scenarios]))
             for k in PER_FRAME}
    for k in PER_VIEW:  # mean over views of the mean over scenarios (pandas' df[columns].mean().mean())
        model[k] = float(np.mean([np.mean([v["metrics"][k] for v in views if v["view"] == n]) for n in names]))
    variance = {k: round(float(np.mean([np.concatenate([_r(v["variance"][k]) for v in views if v["view"] == n]).mean()
                                        for n in names])), 4) for k in PER_FRAME}
    for k, digits in (("spatial_iou", 5), ("weighted_spatial_iou", 4)):
        variance[k] = round(float(np.mean([np.mean([v["variance"][k] for v in views if v["view"] == n])
                                            for n in names])), digits)
    zero = [k for k in ("spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou") if variance[k] == 0]
    if zero:
        raise ValueError(f"the physical variance of {', '.join(zero)} is 0: Physics-IQ's score is undefined.")
    ratio = sum(model[k] / variance[k] for k in ("spatiotemporal_iou", "spatial_iou", "weighted_spatial_iou")) / 3
    value = 100 * (ratio - (model["mse"] - variance["mse"]))
    return {"score": round(max(min(value, 100.0), 0.0), 2), "model": model, "physical_variance": variance,
            "scenarios": len(scenarios), "views": len(views)}


# ----------------------------------------------------------------------------------------- file layout

TAKE = re.compile(r"^(?P<id>\d{4})_(?P<kind>testing-videos|video-masks)_(?P<fps>\d+)FPS_(?P<view>perspective-[a-z]+)_"
                  r"take-(?P<take>[12])_(?P<scenario>.+)\.mp4$")


@dataclass
class Take:
    """One real take of the dataset: ``{id}_testing-videos_{fps}FPS_{view}_take-{1,2}_{scenario}.mp4``."""

    id: str
    fps: int
    view: str
    take: int
    scenario: str
    path: Path
    masks: Path | None = None


def find_takes(root: str | Path) -> list[Take]:
    """Every real take under the dataset's ``root`` (``split-videos/testing-videos/{fps}FPS/``), with the
    dataset's own mask file (``video-masks/real/{fps}FPS/{id}_video-masks_...``) where there is one; files
    under a ``generated`` folder (where the benchmark puts generated videos' masks) are not takes."""
    files = [(TAKE.match(p.name), p) for p in sorted(Path(root).rglob("*.mp4"))
             if "generated" not in p.relative_to(root).parts]  # the benchmark's masks of generated videos
    masks = {(m["fps"], m["view"], m["take"], m["scenario"]): p for m, p in files if m and m["kind"] == "video-masks"}
    return [Take(m["id"], int(m["fps"]), m["view"], int(m["take"]), m["scenario"], p,
                 masks.get((m["fps"], m["view"], m["take"], m["scenario"])))
            for m, p in files if m and m["kind"] == "testing-videos"]


def match_takes(video: Path, takes: list[Take], fps: float) -> tuple[Take, Take | None] | None:
    """Take 1 with the generated video's four-digit ID prefix (the benchmark's naming, ``{ID}_...mp4``) at
    its frame rate (``int(fps)`` as the benchmark names folders), and take 2 of that scenario and view; None
    when the name or frame rate has no take 1."""
    key = video.name[:4]
    first = [t for t in takes if t.take == 1 and t.id == key and t.fps == int(fps)]
    if len(first) != 1:
        return None
    t1 = first[0]
    second = [t for t in takes if t.take == 2 and t.fps == t1.fps and (t.view, t.scenario) == (t1.view, t1.scenario)]
    return t1, (second[0] if second else None)

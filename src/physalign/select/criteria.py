"""What data selection measures about one candidate video: three light criteria and the judge's two.

Light criteria read a video ``(T, H, W, 3)`` uint8, T >= 2, as floats in [0, 1]; a pixel's change between
two frames is the largest change of its three channels (so a red object on a gray background of the same
brightness still moves). Each returns one float:

- ``motion``: the fraction of pixels that change by more than ``MOTION_LEVEL`` between consecutive frames,
  averaged over the T - 1 pairs. 0 for a static clip; higher is better (PhysHPO excludes near-static clips).
- ``sharpness``: the variance of the 4-neighbour Laplacian over a frame's interior pixels, averaged over
  frames and channels. Blur lowers it; higher is better.
- ``flicker``: the median over pixels of the change between consecutive frames, averaged over the pairs.
  VBench's temporal flickering is the frame-to-frame mean absolute difference of clips without motion; the
  median leaves out the moving object (a minority of the pixels), so it measures flicker in clips that do
  move. 0 for a clean world video (its background never changes); lower is better.

The judge's criteria (``judge_criteria``) are ``P(yes)`` to :data:`PLAUSIBILITY_QUESTION`
("plausibility") and to :func:`prompt_question` of the candidate's prompt ("text").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from physalign.judges.base import PLAUSIBILITY_QUESTION, Judge, prompt_question
from physalign.models.interface import to_model_range

MOTION_LEVEL = 0.05  # a pixel moves when a channel changes by more than 5% of the range (13 levels) in a frame
LIGHT = ("motion", "sharpness", "flicker")
JUDGED = ("plausibility", "text")


def light_criteria(video: np.ndarray) -> dict[str, float]:
    """{"motion", "sharpness", "flicker"} of ``video`` (T, H, W, 3) uint8."""
    x = _unit(video)
    change = _changes(x)
    return {"motion": motion(x, change), "sharpness": sharpness(x), "flicker": flicker(x, change)}


def motion(x: np.ndarray, change: np.ndarray | None = None, level: float = MOTION_LEVEL) -> float:
    """Mean over frame pairs of the fraction of pixels whose change exceeds ``level``; ``x`` (T, H, W, 3)."""
    change = _changes(x) if change is None else change  # (T-1, H, W)
    return float((change > level).mean())


def sharpness(x: np.ndarray) -> float:
    """Mean over frames and channels of Var(Laplacian) on the interior; ``x`` (T, H, W, 3) in [0, 1]."""
    x = _unit(x)
    if x.shape[1] < 3 or x.shape[2] < 3:
        raise ValueError(f"sharpness needs frames of at least 3 x 3 pixels. Got {x.shape[1:3]}.")
    lap = x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:] - 4 * x[:, 1:-1, 1:-1]  # (T, H-2, W-2, 3)
    return float(lap.var(axis=(1, 2)).mean())


def flicker(x: np.ndarray, change: np.ndarray | None = None) -> float:
    """Mean over frame pairs of the median pixel change; ``x`` (T, H, W, 3)."""
    change = _changes(x) if change is None else change  # (T-1, H, W)
    return float(np.median(change.reshape(len(change), -1), axis=1).mean())


def judge_criteria(judge: Judge, videos: np.ndarray, prompts: Sequence[str]) -> dict[str, np.ndarray]:
    """{"plausibility", "text"}: (B,) P(yes) of ``judge`` for ``videos`` (B, T, H, W, 3) uint8 of one shape."""
    if len(prompts) != len(videos):
        raise ValueError(f"one prompt per video: got {len(prompts)} prompts for {len(videos)} videos.")
    x = to_model_range(np.ascontiguousarray(videos))  # (B, 3, T, H, W) in [-1, 1]
    with torch.no_grad():
        plausible = judge.yes_prob(x, [PLAUSIBILITY_QUESTION] * len(x))
        matches = judge.yes_prob(x, [prompt_question(p) for p in prompts])
    return {"plausibility": plausible.float().numpy(), "text": matches.float().numpy()}


def _unit(video: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 (or floats already in [0, 1]) -> float32 in [0, 1], checked."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"a video must have shape (T, H, W, 3). Got {video.shape}.")
    return video.astype(np.float32) / 255.0 if video.dtype == np.uint8 else video.astype(np.float32)


def _changes(x: np.ndarray) -> np.ndarray:
    """(T-1, H, W): each pixel's largest channel change between consecutive frames of ``x`` (T, H, W, 3)."""
    x = _unit(x)
    if len(x) < 2:
        raise ValueError(f"motion and flicker need at least 2 frames. Got {len(x)}.")
    return np.abs(np.diff(x, axis=0)).max(axis=-1)

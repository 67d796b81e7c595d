"""Light video metrics that need no large model (numpy and torch only).

Videos are uint8 ``(T, H, W, 3)``; ``x`` below is a frame in [0, 1] and ``x_t`` frame t.

**Physics-IQ** (against a reference clip of the same shape): binary motion masks from frame differencing,
``m_t(p) = max_c |x_t(p, c) - x_{t-1}(p, c)| > tau`` with ``tau = 0.05`` (about 13 of 255 levels), ``(T-1, H, W)``;

- spatial IoU: IoU of ``any_t m_t``, the pixels that ever move;
- spatiotemporal IoU: IoU of the masks ``(T-1, H, W)``;
- weighted spatial IoU: ``sum_p min(f, g) / sum_p max(f, g)`` of the moving fractions ``f = mean_t m_t``;
- MSE: ``mean (x - x_ref)^2`` over every pixel, channel and frame.

Two empty masks agree: their IoU is 1. Physics-IQ reports each relative to the agreement of two real takes
of a scene ("physical variance"); with one reference there is no such ceiling, so these are raw values.

**VBench** style:

- temporal flickering: ``(255 - MAE) / 255`` with MAE the mean absolute difference of consecutive frames on
  the 0-255 scale (VBench's mapping; it counts motion as flicker, which is why VBench applies it to prompts of
  static scenes);
- dynamic degree [VBench's rule, our flow]: per consecutive pair, the mean of the top 5% of the flow's
  magnitudes (pixels per frame); a pair moves when that exceeds ``6 * min(H, W) / 256 * max(1, 8 / fps)`` and
  a video is dynamic when at least ``max(1, round(4 * n / 16))`` of its ``n`` frames do, frames being
  first taken every ``round(fps / 8)``-th (VBench's numbers; VBench uses RAFT for the flow, we use
  :func:`optical_flow`);
- motion smoothness [ours]: VBench interpolates dropped frames with a learned model (AMT); as a stand-in we
  predict every interior frame from its two neighbours by flow interpolation,
  ``x^_t = (warp(x_{t-1}, -F/2) + warp(x_{t+1}, F/2)) / 2`` with ``F`` the flow from ``x_{t-1}`` to
  ``x_{t+1}``, and map the MAE as VBench does, ``(255 - MAE) / 255``. Uniform motion is predicted well,
  a stop-and-go one is not.

Optical flow: Horn-Schunck over all three channels, coarse to fine (a pyramid of 2x average pools down to
8 pixels, at most 4 levels), warping the second frame by the current flow at each level and iterating
Jacobi updates of the per-pixel 2x2 system ``(J^T J + a^2 I) w = a^2 w_bar + J^T J w_0 - J^T I_t``
(``J`` the (3, 2) spatial gradients, ``w_bar`` the neighbourhood mean of the flow, ``a = 0.05``). Frames whose
shorter side exceeds 128 are average-pooled by the smallest integer factor that brings it to 128 or less
first (for speed: about 0.05 s per frame pair at 128 x 128 on one thread), and the flow is scaled back.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

MOTION_THRESHOLD = 0.05  # of the [0, 1] range
FLOW_ALPHA, FLOW_ITERS, FLOW_MIN_SIZE, FLOW_MAX_SIDE = 0.05, 60, 8, 128
TOP_FRACTION = 0.05  # VBench: mean of the top 5% of flow magnitudes


def as_float(video: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> float64 in [0, 1]; checks the shape."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must have shape (T, H, W, 3). Got {video.shape}.")
    return video.astype(np.float64) / 255.0


def _frames(video: np.ndarray, at_least: int, what: str) -> np.ndarray:
    x = as_float(video)
    if len(x) < at_least:
        raise ValueError(f"{what} needs at least {at_least} frames. Got {len(x)}.")
    return x


# ------------------------------------------------------------------------------------------ Physics-IQ


def motion_masks(video: np.ndarray, threshold: float = MOTION_THRESHOLD) -> np.ndarray:
    """(T, H, W, 3) -> bool (T-1, H, W): ``max_c |x_t - x_{t-1}| > threshold``."""
    x = _frames(video, 2, "a motion mask")
    return np.abs(np.diff(x, axis=0)).max(-1) > threshold


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of boolean arrays of one shape; 1 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"masks must have one shape. Got {a.shape} and {b.shape}.")
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def spatial_iou(masks: np.ndarray, reference: np.ndarray) -> float:
    """IoU of the pixels that move at any time, (T-1, H, W) masks."""
    return iou(masks.any(0), reference.any(0))


def spatiotemporal_iou(masks: np.ndarray, reference: np.ndarray) -> float:
    return iou(masks, reference)


def weighted_spatial_iou(masks: np.ndarray, reference: np.ndarray) -> float:
    """``sum min(f, g) / sum max(f, g)`` of the per-pixel moving fractions; 1 when neither moves."""
    if masks.shape != reference.shape:
        raise ValueError(f"masks must have one shape. Got {masks.shape} and {reference.shape}.")
    f, g = masks.mean(0), reference.mean(0)
    top = np.maximum(f, g).sum()
    return float(np.minimum(f, g).sum() / top) if top else 1.0


def physics_iq(video: np.ndarray, reference: np.ndarray, threshold: float = MOTION_THRESHOLD) -> dict[str, float]:
    """The four Physics-IQ metrics of ``video`` against ``reference`` (same (T, H, W, 3))."""
    if np.shape(video) != np.shape(reference):
        raise ValueError(f"video and reference must have one shape. Got {np.shape(video)} and {np.shape(reference)}.")
    m, r = motion_masks(video, threshold), motion_masks(reference, threshold)
    return {"spatial_iou": spatial_iou(m, r), "spatiotemporal_iou": spatiotemporal_iou(m, r),
            "weighted_spatial_iou": weighted_spatial_iou(m, r),
            "mse": float(np.mean((as_float(video) - as_float(reference)) ** 2))}


# --------------------------------------------------------------------------------------------- flow


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of (N, C, H, W) along x and y (replicated borders)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2, (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2


_NEIGHBOURS = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]], dtype=torch.float32) / 12  # Horn-Schunck's mean


def _neighbour_mean(w: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) -> the weighted mean of each pixel's 8 neighbours."""
    k = _NEIGHBOURS.to(w).expand(2, 1, 3, 3)
    return F.conv2d(F.pad(w, (1, 1, 1, 1), mode="replicate"), k, groups=2)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``x(p + flow(p))`` by bilinear sampling: (N, C, H, W), flow (N, 2, H, W) in pixels (dx, dy)."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    gx = (xs + flow[:, 0]) / max(w - 1, 1) * 2 - 1  # (N, H, W), align_corners=True coordinates
    gy = (ys + flow[:, 1]) / max(h - 1, 1) * 2 - 1
    return F.grid_sample(x, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=True)


def _refine(a: torch.Tensor, b: torch.Tensor, w0: torch.Tensor, alpha: float, iters: int) -> torch.Tensor:
    """Horn-Schunck at one level from the flow ``w0``: returns the refined flow (N, 2, H, W)."""
    bw = warp(b, w0)
    ix, iy = _gradients((a + bw) / 2)  # (N, C, H, W) each
    it = bw - a
    jxx, jxy, jyy = (ix * ix).sum(1), (ix * iy).sum(1), (iy * iy).sum(1)  # (N, H, W): J^T J
    rx = jxx * w0[:, 0] + jxy * w0[:, 1] - (ix * it).sum(1)  # J^T J w0 - J^T I_t
    ry = jxy * w0[:, 0] + jyy * w0[:, 1] - (iy * it).sum(1)
    a2 = alpha ** 2
    det = (jxx + a2) * (jyy + a2) - jxy ** 2
    w = w0.clone()
    for _ in range(iters):
        m = _neighbour_mean(w)
        bx, by = a2 * m[:, 0] + rx, a2 * m[:, 1] + ry
        w = torch.stack([((jyy + a2) * bx - jxy * by) / det, ((jxx + a2) * by - jxy * bx) / det], 1)
    return w


def optical_flow(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, alpha: float = FLOW_ALPHA,
                 iters: int = FLOW_ITERS) -> torch.Tensor:
    """Dense flow (N, 2, H, W) in pixels (dx, dy) with ``a(p) ≈ b(p + flow(p))``; ``a``, ``b`` float
    (N, H, W, 3) in [0, 1]. Coarse to fine Horn-Schunck (module docstring)."""
    a, b = (torch.as_tensor(np.asarray(v), dtype=torch.float32).permute(0, 3, 1, 2) for v in (a, b))
    full, scale = a.shape[-2:], math.ceil(min(a.shape[-2:]) / FLOW_MAX_SIDE)
    if scale > 1:
        a, b = F.avg_pool2d(a, scale, ceil_mode=True), F.avg_pool2d(b, scale, ceil_mode=True)
    pyramid = [(a, b)]
    while min(pyramid[-1][0].shape[-2:]) >= 2 * FLOW_MIN_SIZE and len(pyramid) < 4:
        pyramid.append(tuple(F.avg_pool2d(v, 2) for v in pyramid[-1]))
    flow = torch.zeros(a.shape[0], 2, *pyramid[-1][0].shape[-2:], dtype=torch.float32)
    for level_a, level_b in reversed(pyramid):
        flow = _refine(level_a, level_b, _resize_flow(flow, level_a.shape[-2:]), alpha, iters)
    return _resize_flow(flow, full)


def _resize_flow(flow: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of (N, 2, h, w) to ``size`` (H, W), the vectors scaled by W / w and H / h."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    up = F.interpolate(flow, size=tuple(size), mode="bilinear", align_corners=False)
    return up * torch.tensor([size[1] / w, size[0] / h], dtype=flow.dtype)[None, :, None, None]


# --------------------------------------------------------------------------------------------- VBench


def temporal_flickering(video: np.ndarray) -> float:
    """``(255 - MAE) / 255``, MAE of consecutive frames on the 0-255 scale; 1 for a static clip."""
    x = _frames(video, 2, "temporal flickering")
    return float((255 - np.abs(np.diff(x, axis=0)).mean() * 255) / 255)


def dynamic_degree(video: np.ndarray, fps: float = 8.0) -> dict:
    """VBench's dynamic-degree rule on our flow: {"dynamic", "pair_magnitudes", "threshold", "count_needed"}."""
    x = _frames(video, 2, "dynamic degree")
    x = x[:: max(1, round(fps / 8))]
    if len(x) < 2:
        raise ValueError(f"dynamic degree needs 2 frames after sampling at 8 fps. Got {len(x)} (fps {fps}).")
    magnitude = optical_flow(x[:-1], x[1:]).norm(dim=1).flatten(1)  # (N, H*W)
    top = max(1, int(magnitude.shape[1] * TOP_FRACTION))
    scores = magnitude.topk(top, dim=1).values.mean(1).tolist()
    threshold = 6.0 * min(x.shape[1:3]) / 256 * max(1.0, 8.0 / fps)
    needed = max(1, round(4 * len(x) / 16))
    return {"dynamic": sum(s > threshold for s in scores) >= needed, "pair_magnitudes": scores,
            "threshold": threshold, "count_needed": needed}


def interpolate_middle(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) neighbours -> the frames halfway between them by flow interpolation, (N, H, W, 3)."""
    a, b = (torch.as_tensor(v, dtype=torch.float32).permute(0, 3, 1, 2) for v in (prev, nxt))
    flow = optical_flow(prev, nxt)  # a(p) ≈ b(p + flow)
    middle = (warp(a, -flow / 2) + warp(b, flow / 2)) / 2
    return middle.permute(0, 2, 3, 1).numpy()


def motion_smoothness(video: np.ndarray) -> float:
    """``(255 - MAE) / 255`` of every interior frame against its flow interpolation from its neighbours [ours]."""
    x = _frames(video, 3, "motion smoothness")
    predicted = interpolate_middle(x[:-2], x[2:])
    return float((255 - np.abs(predicted - x[1:-1]).mean() * 255) / 255)

"""physalign's classical optical flow and flow interpolation (numpy and torch only): the stand-ins that
:mod:`physalign.benchmarks.vbench` uses when no RAFT or AMT weights are given. Physics-IQ's and VBench's
metrics themselves are in :mod:`physalign.benchmarks.physics_iq` and :mod:`physalign.benchmarks.vbench`.

Optical flow: Horn-Schunck over all three channels, coarse to fine (a pyramid of 2x average pools down to
8 pixels, at most 4 levels), warping the second frame by the current flow at each level and iterating
Jacobi updates of the per-pixel 2x2 system ``(J^T J + a^2 I) w = a^2 w_bar + J^T J w_0 - J^T I_t``
(``J`` the (3, 2) spatial gradients, ``w_bar`` the neighbourhood mean of the flow, ``a = 0.05``). Frames whose
shorter side exceeds 128 are average-pooled by the smallest integer factor that brings it to 128 or less
first (for speed: about 0.05 s per frame pair at 128 x 128 on one thread), and the flow is scaled back.

Flow interpolation: the frame halfway between ``a`` and ``b`` is ``(warp(a, -F/2) + warp(b, F/2)) / 2`` with
``F`` the flow from ``a`` to ``b``; uniform motion is predicted well, a stop-and-go one is not.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

FLOW_ALPHA, FLOW_ITERS, FLOW_MIN_SIZE, FLOW_MAX_SIDE = 0.05, 60, 8, 128


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


def interpolate_middle(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) neighbours -> the frames halfway between them by flow interpolation, (N, H, W, 3)."""
    a, b = (torch.as_tensor(v, dtype=torch.float32).permute(0, 3, 1, 2) for v in (prev, nxt))
    flow = optical_flow(prev, nxt)  # a(p) ≈ b(p + flow)
    middle = (warp(a, -flow / 2) + warp(b, flow / 2)) / 2
    return middle.permute(0, 2, 3, 1).numpy()

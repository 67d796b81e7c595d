"""Motion-saliency mask of M-TSA: which tokens move."""

from __future__ import annotations

import torch


def tubelet_motion(video: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Δ (B, F, H', W'): L1 change of each tubelet token since the previous token frame.

    The video (B, C, T, H, W) is cut into non-overlapping tubelets of T/F x H/H' x W/W' pixels, one per token
    of ``grid`` = (F, H', W'); Y_f is the flattened tubelet, Δ_f = ||Y_f - Y_{f-1}||_1 for f >= 1 and
    Δ_0 = Δ_1 (frame 0 has no predecessor). T, H, W must be multiples of F, H', W'; F >= 2.
    """
    if video.dim() != 5 or len(grid) != 3:
        raise ValueError(f"video must be (B, C, T, H, W) and grid (F, H, W). Got {list(video.shape)}, {grid}.")
    (b, c, *size), (f, h, w) = video.shape, grid
    if f < 2 or any(n < 1 or s % n for s, n in zip(size, grid)):
        raise ValueError(f"grid (F, H, W) = {tuple(grid)} must divide the video's (T, H, W) = {tuple(size)} "
                         f"exactly, with F >= 2 (motion needs two token frames).")
    tt, ph, pw = size[0] // f, size[1] // h, size[2] // w
    tokens = (video if video.is_floating_point() else video.float()).reshape(b, c, f, tt, h, ph, w, pw)
    delta = (tokens[:, :, 1:] - tokens[:, :, :-1]).abs().sum((1, 3, 5, 7))  # (B, F-1, H', W')
    return torch.cat([delta[:, :1], delta], 1)


def motion_mask(video: torch.Tensor, grid: tuple[int, int, int], ratio: float = 0.2) -> torch.Tensor:
    """M (B, F, H', W') bool: per token frame, the k = max(1, round(ratio * H' * W')) tokens of largest
    ``tubelet_motion``; frame 0 copies frame 1. Exactly k per frame (ties broken by ``topk`` [ours]).

    video (B, C, T, H, W) pixels; grid (F, H', W') the teacher's token grid; 0 < ratio <= 1.
    """
    return salient_tokens(tubelet_motion(video, grid), ratio)


def salient_tokens(motion: torch.Tensor, ratio: float) -> torch.Tensor:
    """M (B, F, H', W') bool from Δ = :func:`tubelet_motion` (B, F, H', W'): per token frame f >= 1 the
    k = max(1, round(ratio * H' * W')) tokens of largest Δ_f; frame 0 copies frame 1."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1]. Got {ratio}.")
    if motion.dim() != 4 or motion.shape[1] < 2:
        raise ValueError(f"motion must be (B, F, H', W') with F >= 2. Got {list(motion.shape)}.")
    delta = motion[:, 1:].flatten(2)  # (B, F-1, H'W')
    k = max(1, round(ratio * delta.shape[-1]))
    top = delta.topk(k, dim=-1).indices  # (B, F-1, k)
    mask = torch.zeros(delta.shape, dtype=torch.bool, device=motion.device).scatter_(-1, top, True)
    mask = mask.unflatten(-1, tuple(motion.shape[2:]))
    return torch.cat([mask[:, :1], mask], 1)

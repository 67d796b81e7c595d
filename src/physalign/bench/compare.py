"""Paired comparison of two models scored on the same prompts with the same sampling noise.

With identical test prompts and noise seeds, the videos of two models pair up one to one; resampling the
pairs (not each model's videos independently) gives a much tighter interval for the difference, the one
that says whether a method beats SFT.
"""

from __future__ import annotations

import numpy as np

from physalign.eval.score import VideoResult
from physalign.eval.stats import LEVEL


def paired_difference(a, b, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> dict:
    """Mean of ``a - b`` over paired 0/1 scores (n,) and its percentile-bootstrap interval:
    {"mean", "lo", "hi", "n"}; NaNs when there are no pairs."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two vectors of one length. Got {a.shape} and {b.shape}.")
    if resamples < 1000:
        raise ValueError(f"resamples must be >= 1000 for a stable 95% interval. Got {resamples}.")
    if a.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    d = a - b
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))  # (R, n)
    means = d[idx].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": int(d.size)}


def pair_results(a: list[VideoResult], b: list[VideoResult]) -> tuple[list[VideoResult], list[VideoResult]]:
    """The results of ``a`` and ``b`` for the same videos (matched by video name), both scored."""
    by_name = {r.video: r for r in b if r.error is None}
    pairs = [(r, by_name[r.video]) for r in a if r.error is None and r.video in by_name]
    return [p[0] for p in pairs], [p[1] for p in pairs]

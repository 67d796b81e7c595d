"""Paired comparison of two models scored on the same prompts with the same sampling noise.

With identical test prompts and noise seeds, the videos of two models pair up one to one; resampling the
pairs (not each model's videos independently) gives a much tighter interval for the difference, the one
that says whether a method beats SFT.
"""

from __future__ import annotations

import math

import numpy as np

from physalign.eval.score import VideoResult
from physalign.eval.stats import LEVEL, METRICS

# Power of a paired comparison, normal approximation: a true difference of MDE_SE standard errors is found
# (interval excluding zero) with probability 0.80 at the two-sided 95% level: z_0.975 + z_0.80 = 1.960 + 0.842.
Z_LEVEL = 1.959964
MDE_SE = Z_LEVEL + 0.841621
TARGET_HALF_WIDTH = 0.04  # the instrument's aim for the paired Joint interval (issue 17)


def paired_difference(a, b, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> dict:
    """Mean of ``a - b`` over paired scores (n,), its percentile-bootstrap interval and the comparison's power:
    {"mean", "lo", "hi", "n", "sd", "mde", "n_for_target"}; NaNs when there are no pairs.

    ``sd`` is the standard deviation of the paired differences d_i, SE = sd / sqrt(n); ``mde`` = 2.80 SE, the
    smallest true difference this comparison finds with 80% power at the 95% level; ``n_for_target`` the
    pairs for a 95% half-width of TARGET_HALF_WIDTH, (1.96 sd / 0.04)^2, with this comparison's sd."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two vectors of one length. Got {a.shape} and {b.shape}.")
    if resamples < 1000:
        raise ValueError(f"resamples must be >= 1000 for a stable 95% interval. Got {resamples}.")
    if a.size == 0:
        nan = float("nan")
        return {"mean": nan, "lo": nan, "hi": nan, "n": 0, "sd": nan, "mde": nan, "n_for_target": nan}
    d = a - b
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))  # (R, n)
    means = d[idx].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    sd = float(d.std(ddof=1)) if d.size > 1 else float("nan")
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": int(d.size), "sd": sd,
            "mde": MDE_SE * sd / math.sqrt(d.size), "n_for_target": math.ceil((Z_LEVEL * sd / TARGET_HALF_WIDTH) ** 2)
            if math.isfinite(sd) else float("nan")}


def pair_results(a: list[VideoResult], b: list[VideoResult]) -> tuple[list[VideoResult], list[VideoResult]]:
    """The results of ``a`` and ``b`` for the same videos (matched by video name), both scored."""
    by_name = {r.video: r for r in b if r.error is None}
    pairs = [(r, by_name[r.video]) for r in a if r.error is None and r.video in by_name]
    return [p[0] for p in pairs], [p[1] for p in pairs]


# continuous physics errors shown, as (name, what is compared: a function of the video's value)
SHOWN_ERRORS = {"gravity_error": ("gravity_ratio", lambda x: abs(x - 1.0)), "zero_g_accel": ("zero_g_accel", float),
                "fit_residual": ("fit_residual", float), "impulse": ("impulse", float),
                "penetration": ("penetration", float)}


def paired_differences(results: list[VideoResult], reference: list[VideoResult]) -> dict:
    """Paired differences results − reference over the videos both scored: PC, SA, Joint, then each continuous
    error of SHOWN_ERRORS over the videos where both have it (:func:`paired_difference` each)."""
    x, y = pair_results(results, reference)
    out = {m: paired_difference([getattr(r, m) for r in x], [getattr(r, m) for r in y]) for m in METRICS}
    for shown, (name, value) in SHOWN_ERRORS.items():
        both = [(value(p.physics_errors[name]), value(q.physics_errors[name])) for p, q in zip(x, y)
                if p.physics_errors.get(name) is not None and q.physics_errors.get(name) is not None]
        out[shown] = paired_difference([p for p, _ in both], [q for _, q in both])
    return out

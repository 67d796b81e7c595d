"""Summaries with percentile-bootstrap 95% confidence intervals, overall and per group."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from physalign.eval.score import VideoResult
from physalign.world.scene import PHYSICS_AXES

METRICS = ("pc", "sa", "joint")


def bootstrap_ci(passed: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a 0/1 array and its percentile-bootstrap 95% interval (vectorised resampling)."""
    passed = np.asarray(passed, np.float64)
    if passed.size == 0:
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    means = passed[rng.integers(0, passed.size, size=(resamples, passed.size))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(passed.mean()), float(lo), float(hi)


def summarize(results: list[VideoResult], resamples: int = 2000) -> dict:
    scored = [r for r in results if r.error is None]
    groups: dict[str, list[VideoResult]] = defaultdict(list)
    for r in scored:
        groups["ood" if r.ood else "in-distribution"].append(r)
        for axis, field in PHYSICS_AXES.items():
            groups[f"{axis}={r.scene[field]}"].append(r)
    return {
        "n": len(scored),
        "errors": [{"video": r.video, "error": r.error} for r in results if r.error],
        "overall": _metrics(scored, resamples),
        "groups": {name: _metrics(rs, resamples) for name, rs in sorted(groups.items())},
        "checks": _check_rates(scored),
    }


def _metrics(results: list[VideoResult], resamples: int) -> dict:
    out = {"n": len(results)}
    for m in METRICS:
        mean, lo, hi = bootstrap_ci(np.array([getattr(r, m) for r in results]), resamples)
        out[m] = {"mean": mean, "lo": lo, "hi": hi}
    return out


def _check_rates(results: list[VideoResult]) -> dict:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in results:
        for c in r.checks:
            if c.passed is not None:
                counts[c.name][0] += int(c.passed)
                counts[c.name][1] += 1
    return {name: {"pass_rate": p / n, "n": n} for name, (p, n) in sorted(counts.items())}

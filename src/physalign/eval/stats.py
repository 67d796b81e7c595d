"""Summaries of scored videos: PC / SA / Joint rates with percentile-bootstrap 95% intervals, overall,
per value of each physics axis, in- vs out-of-distribution, and the pass rate of every check.

For 0/1 scores the mean of a bootstrap resample (n draws with replacement) is Binomial(n, p_hat) / n, so
resampling draws those means directly: exact, and O(resamples) whatever n.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from physalign.eval.physics import ERRORS
from physalign.eval.score import VideoResult
from physalign.world.scene import PHYSICS_AXES

METRICS = ("pc", "sa", "joint")
LEVEL = 0.95


def bootstrap_ci(passed, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of 0/1 scores (n,) and its percentile-bootstrap interval: (mean, low, high); NaNs if n = 0."""
    passed = np.asarray(passed, dtype=np.float64)
    if resamples < 1000:
        raise ValueError(f"resamples must be >= 1000 for a stable 95% interval. Got {resamples}.")
    if passed.size == 0:
        return (float("nan"),) * 3
    p = float(passed.mean())
    means = np.random.default_rng(seed).binomial(passed.size, p, size=resamples) / passed.size  # (B,)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return p, float(lo), float(hi)


def rates(results: list[VideoResult], resamples: int = 2000, seed: int = 0) -> dict:
    """{"n": n, "pc" | "sa" | "joint": {"mean", "lo", "hi"}} over ``results`` (all scored)."""
    out: dict = {"n": len(results)}
    for m in METRICS:
        mean, lo, hi = bootstrap_ci([getattr(r, m) for r in results], resamples, seed)
        out[m] = {"mean": mean, "lo": lo, "hi": hi}
    return out


def summarize(results: list[VideoResult], resamples: int = 2000, seed: int = 0) -> dict:
    """Everything the report shows. Videos with an error are listed under "errors" and not scored."""
    scored = [r for r in results if r.error is None]
    by_axis: dict[str, dict[str, list]] = {axis: defaultdict(list) for axis in PHYSICS_AXES}
    for r in scored:
        for axis, field in PHYSICS_AXES.items():
            by_axis[axis][r.scene[field]].append(r)
    split = {"in-distribution": [r for r in scored if not r.ood], "ood": [r for r in scored if r.ood]}
    return {
        "n": len(scored),
        "errors": [{"video": r.video, "error": r.error} for r in results if r.error is not None],
        "overall": rates(scored, resamples, seed),
        "split": {name: rates(rs, resamples, seed) for name, rs in split.items()},
        "axes": {axis: {value: rates(rs, resamples, seed) for value, rs in sorted(groups.items())}
                 for axis, groups in by_axis.items()},
        "checks": check_rates(scored),
        "physics_errors": error_means(scored, resamples, seed),
        "physics_errors_split": {name: error_means(rs, resamples, seed) for name, rs in split.items()},
        "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL},
    }


def check_rates(results: list[VideoResult]) -> dict:
    """Per check: its group, pass rate over the videos it applies to, how many that is, and how many it
    does not apply to."""
    out: dict[str, dict] = {}
    for r in results:
        for c in r.checks:
            row = out.setdefault(c.name, {"group": c.group, "passed": 0, "n": 0, "not_applicable": 0})
            row["not_applicable"] += c.passed is None
            row["n"] += c.passed is not None
            row["passed"] += c.passed is True
    for row in out.values():
        row["pass_rate"] = row["passed"] / row["n"] if row["n"] else float("nan")
    return out


def mean_ci(values, resamples: int = 2000, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of real values (n,) and its percentile-bootstrap interval; NaNs if n = 0."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (float("nan"),) * 3
    idx = np.random.default_rng(seed).integers(0, values.size, (resamples, values.size))
    means = values[idx].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(values.mean()), float(lo), float(hi)


def error_means(results: list[VideoResult], resamples: int = 2000, seed: int = 0) -> dict:
    """Per continuous physics error (``physics.ERRORS``): over the videos it applies to, n, the median and the
    mean with its bootstrap interval."""
    out = {}
    for name in ERRORS:
        values = [r.physics_errors[name] for r in results if r.physics_errors.get(name) is not None]
        mean, lo, hi = mean_ci(values, resamples, seed)
        out[name] = {"n": len(values), "mean": mean, "lo": lo, "hi": hi,
                     "median": float(np.median(values)) if values else float("nan")}
    return out

"""Combine the criteria into one score, apply hard thresholds, keep the top fraction, say why the rest go.

Each criterion's raw value v is mapped to a goodness g in [0, 1]:

    plausibility, text:   g = v                  (the judge's P(yes))
    motion, sharpness:    g = min(v / ref, 1)    (higher is better)
    flicker:              g = min(ref / v, 1)    (lower is better; g = 1 at v = 0)

``ref`` is ``config.references[c]`` when given, else the pool's ``quantile`` (default 0.25) for motion and
sharpness and its ``1 - quantile`` for flicker (at least ``FLICKER_FLOOR``, since a clean world video has
none): a candidate better than the worst quarter of its pool scores 1 and only worse ones lose. No constant
of one video domain is built in, and clean clips that differ in content (a small slow ball has fewer edges
and moving pixels than a large fast block) are not ranked against each other. The score is the
weighted mean over the criteria that ran, ``score = sum_c w_c g_c / sum_c w_c``.

A candidate whose raw value is on the wrong side of ``config.thresholds[c]`` (below it; above it for
flicker) is dropped with the reason "<c> below threshold" ("above" for flicker). The rest are ranked by
score (ties: the earlier line first) and the first ``floor(keep * N + 0.5)`` of the pool's N candidates are kept
(every passing one if fewer pass). The others are "below the cut, weakest: <c>", for the criterion that
cost the candidate most score, ``argmax_c w_c (1 - g_c)``. Unreadable candidates are "unreadable".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

CRITERIA = ("plausibility", "text", "motion", "sharpness", "flicker")
LOWER_IS_BETTER = ("flicker",)
DEFAULT_WEIGHTS = {"plausibility": 1.0, "text": 1.0, "motion": 0.5, "sharpness": 0.5, "flicker": 0.5}
DEFAULT_THRESHOLDS = {"motion": 0.002}  # fewer than 2 pixels in 1000 move per frame: a near-static clip
FLICKER_FLOOR = 0.005  # least flicker reference (~1.3 grey levels), so a pool without flicker can rate it
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class SelectConfig:
    """What to keep: the top ``keep`` fraction by the weighted score, after the hard thresholds."""

    keep: float = 0.5
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    references: dict[str, float] = field(default_factory=dict)  # absolute; a missing one is the pool's quantile
    quantile: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.keep <= 1.0:
            raise ValueError(f"keep must be a fraction in (0, 1]. Got {self.keep}.")
        if not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f"quantile must be in [0, 1]. Got {self.quantile}.")
        for name, table in (("weights", self.weights), ("thresholds", self.thresholds), ("references", self.references)):
            unknown = sorted(set(table) - set(CRITERIA))
            if unknown:
                raise ValueError(f"{name}: unknown criteria {unknown}; the criteria are {CRITERIA}.")
            if any(not math.isfinite(v) for v in table.values()):
                raise ValueError(f"{name} must be finite numbers. Got {table}.")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be >= 0. Got {self.weights}.")
        if any(r <= 0 for r in self.references.values()):
            raise ValueError(f"references must be > 0. Got {self.references}.")

    def without(self, criterion: str) -> "SelectConfig":
        """The same config with ``criterion`` given weight 0 and no threshold (an ablation)."""
        weights = {**self.weights, criterion: 0.0}
        return replace(self, weights=weights, thresholds={c: t for c, t in self.thresholds.items() if c != criterion})


@dataclass
class Scored:
    """A pool's candidates and their raw criteria (what :func:`select` ranks): ``values[c]`` is (N,), NaN where
    unreadable; ``errors[i]`` says why candidate i could not be read (None if it could)."""

    manifest: Path
    rows: list[dict]
    values: dict[str, np.ndarray]
    errors: list[str | None]


@dataclass
class Selection:
    """Per candidate (N of them): goodness by criterion, score (NaN if unreadable), kept, reasons."""

    criteria: tuple[str, ...]  # the criteria that ran
    references: dict[str, float]  # the ref each light criterion was rated against
    goodness: dict[str, np.ndarray]  # criterion -> (N,)
    score: np.ndarray  # (N,)
    kept: np.ndarray  # (N,) bool
    reasons: list[list[str]]  # empty for kept candidates


def select(values: dict[str, np.ndarray], config: SelectConfig) -> Selection:
    """Select from N candidates whose criteria ``values`` (criterion -> (N,) raw values, NaN for every
    criterion of an unreadable candidate) are given; criteria absent from ``values`` did not run."""
    criteria = tuple(c for c in CRITERIA if c in values)
    values = {c: np.asarray(values[c], dtype=np.float64) for c in criteria}
    n = _check_values(values, set(values) - set(CRITERIA))
    readable = np.all([np.isfinite(values[c]) for c in criteria], axis=0) if criteria else np.zeros(n, bool)
    refs = {c: _reference(c, values[c][readable], config) for c in criteria if c not in ("plausibility", "text")}
    goodness = {c: _goodness(c, values[c], refs.get(c)) for c in criteria}
    weights = {c: config.weights.get(c, 0.0) for c in criteria}
    if sum(weights.values()) <= 0:
        raise ValueError(f"no criterion that ran ({', '.join(criteria) or 'none'}) has a positive weight: {config.weights}")
    score = sum(weights[c] * goodness[c] for c in criteria) / sum(weights.values())
    failures = [_failures(values, config.thresholds, i) if readable[i] else [UNREADABLE] for i in range(n)]
    kept = _top(score, [not f for f in failures], int(math.floor(config.keep * n + 0.5)))
    reasons = [[] if kept[i] else failures[i] or [_below_cut(goodness, weights, i)] for i in range(n)]
    return Selection(criteria, refs, goodness, np.where(readable, score, np.nan), kept, reasons)


def _check_values(values: dict[str, np.ndarray], unknown: set[str]) -> int:
    if unknown:
        raise ValueError(f"unknown criteria {sorted(unknown)}; the criteria are {CRITERIA}.")
    lengths = {c: v.shape for c, v in values.items()}
    if len(set(lengths.values())) > 1 or any(len(s) != 1 for s in lengths.values()):
        raise ValueError(f"every criterion needs one value per candidate, shape (N,). Got {lengths}.")
    return next(iter(lengths.values()))[0] if lengths else 0


def _reference(criterion: str, readable_values: np.ndarray, config: SelectConfig) -> float:
    if criterion in config.references:
        return float(config.references[criterion])
    if criterion in LOWER_IS_BETTER:
        return max(_quantile(readable_values, 1.0 - config.quantile), FLICKER_FLOOR)
    return _quantile(readable_values, config.quantile)


def _quantile(v: np.ndarray, q: float) -> float:
    return float(np.quantile(v, q)) if v.size else 0.0


def _goodness(criterion: str, v: np.ndarray, ref: float | None) -> np.ndarray:
    """(N,) in [0, 1] (NaN stays NaN); see the module docstring."""
    if ref is None:
        return np.clip(v, 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = ref / v if criterion in LOWER_IS_BETTER else v / ref
    # 0 / 0: no flicker against no flicker, or no motion in a pool whose reference does not move
    both_zero = (v == 0) & (ref == 0)
    ratio = np.where(both_zero, 1.0 if criterion in LOWER_IS_BETTER else 0.0, ratio)
    return np.where(np.isnan(v), np.nan, np.clip(ratio, 0.0, 1.0))


def _failures(values: dict[str, np.ndarray], thresholds: dict[str, float], i: int) -> list[str]:
    out = []
    for c in values:
        if c in thresholds:
            above = c in LOWER_IS_BETTER
            if (values[c][i] > thresholds[c]) if above else (values[c][i] < thresholds[c]):
                out.append(f"{c} {'above' if above else 'below'} threshold")
    return out


def _top(score: np.ndarray, passed: list[bool], count: int) -> np.ndarray:
    """(N,) bool: the ``count`` passing candidates of highest score, earlier lines first among ties."""
    ranked = sorted((i for i in range(len(score)) if passed[i]), key=lambda i: (-score[i], i))
    kept = np.zeros(len(score), bool)
    kept[ranked[:count]] = True
    return kept


def _below_cut(goodness: dict[str, np.ndarray], weights: dict[str, float], i: int) -> str:
    weakest = max(goodness, key=lambda c: weights[c] * (1.0 - goodness[c][i]))
    return f"below the cut, weakest: {weakest}"

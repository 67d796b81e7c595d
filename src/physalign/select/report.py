"""``report.md`` of a selection: what ran, what was kept and dropped and why, and, for a labelled pool
(``degradation`` on every line), how clean the kept set is; ``summary.json`` holds the same figures as data
(no per-candidate records: those are in ``scores.jsonl``).

Precision = clean kept / kept (the fraction of kept candidates with ``degradation`` none); recall = clean
kept / clean. Selecting at random would give a precision equal to the pool's clean share. The ablation
re-selects from the same measured criteria with one criterion left out (weight 0, no threshold).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from physalign.select.rank import CRITERIA, Scored, SelectConfig, Selection, select

EXAMPLES = 5  # top and bottom candidates shown


def precision_recall(clean: np.ndarray, kept: np.ndarray) -> tuple[float, float]:
    """(precision, recall) of ``kept`` (N,) bool against ``clean`` (N,) bool; NaN when undefined."""
    clean, kept = np.asarray(clean, bool), np.asarray(kept, bool)
    hits = float((clean & kept).sum())
    return (hits / kept.sum() if kept.any() else math.nan, hits / clean.sum() if clean.any() else math.nan)


def clean_labels(rows: list[dict]) -> np.ndarray | None:
    """(N,) bool, True where ``degradation`` is none; None unless every line carries the label."""
    if not rows or any("degradation" not in r for r in rows):
        return None
    return np.array([r["degradation"] == "none" for r in rows])


def ablation(values: dict[str, np.ndarray], config: SelectConfig, clean: np.ndarray) -> list[tuple[str, float, float]]:
    """(left out, precision, recall) for the full selection ("none") and each criterion left out in turn;
    a criterion whose removal leaves no positive weight is skipped."""
    rows = [("none", *precision_recall(clean, select(values, config).kept))]
    for c in (c for c in CRITERIA if c in values):
        try:
            rows.append((c, *precision_recall(clean, select(values, config.without(c)).kept)))
        except ValueError:
            continue
    return rows


def markdown(scored: Scored, selection: Selection, config: SelectConfig) -> str:
    n, kept = len(scored.rows), int(selection.kept.sum())
    lines = ["# Data selection", "", f"`{scored.manifest}`: {n} candidates, **{kept} kept** (keep {config.keep:g}), "
             f"{n - kept} dropped. Video paths in `selected.jsonl` are relative to its folder.", ""]
    lines += _config_lines(selection, config) + [""]
    lines += ["## Dropped, by reason", ""]
    reasons = Counter(r for rs in selection.reasons for r in rs)
    lines += _table(("reason", "candidates"), [(r, str(k)) for r, k in reasons.most_common()]) + [""]
    clean = clean_labels(scored.rows)
    if clean is not None:
        lines += _labelled_lines(scored, selection, config, clean)
    lines += _examples(scored, selection)
    errors = [(row["video"], e) for row, e in zip(scored.rows, scored.errors) if e]
    if errors:
        lines += ["", f"## {len(errors)} unreadable videos", ""] + [f"- `{v}`: {e}" for v, e in errors]
    return "\n".join(lines) + "\n"


def _config_lines(selection: Selection, config: SelectConfig) -> list[str]:
    skipped = [c for c in CRITERIA if c not in selection.criteria]
    lines = [f"Criteria that ran: {', '.join(selection.criteria)}."]
    if skipped:
        lines.append(f"Not run: {', '.join(skipped)}" + (" (no judge)." if "plausibility" in skipped else "."))
    lines.append("Weights: " + ", ".join(f"{c} {config.weights.get(c, 0.0):g}" for c in selection.criteria) + ".")
    thresholds = [f"{c} {'<=' if c == 'flicker' else '>='} {t:g}" for c, t in config.thresholds.items() if c in selection.criteria]
    lines.append("Thresholds: " + (", ".join(thresholds) if thresholds else "none") + ".")
    lines.append("References (goodness 1 at or beyond): " + ", ".join(f"{c} {r:.4g}" for c, r in selection.references.items()) + ".")
    return lines


def _labelled_lines(scored: Scored, selection: Selection, config: SelectConfig, clean: np.ndarray) -> list[str]:
    precision, recall = precision_recall(clean, selection.kept)
    lines = ["## By degradation", ""]
    head = ("degradation", "candidates", "kept", "kept share") + tuple(f"mean {c}" for c in selection.criteria)
    body = [(label, str(d["candidates"]), str(d["kept"]), f"{d['kept_share']:.2f}",
             *(f"{d['mean'][c]:.4g}" for c in selection.criteria)) for label, d in by_degradation(scored, selection).items()]
    lines += _table(head, body) + ["", "## Precision", "",
              f"**Precision {precision:.3f}** (clean share of the kept), recall {recall:.3f} (kept share of the "
              f"clean); a random selection's precision would be the pool's clean share, {clean.mean():.3f}.", "",
              "Each criterion left out in turn (weight 0, no threshold), the rest as above:", ""]
    rows = ablation(scored.values, config, clean)
    lines += _table(("left out", "precision", "recall"), [(c, f"{p:.3f}", f"{r:.3f}") for c, p, r in rows]) + [""]
    return lines


def by_degradation(scored: Scored, selection: Selection) -> dict[str, dict]:
    """Per degradation label (clean first): candidates, kept, kept share and each criterion's mean raw value."""
    labels = [r["degradation"] for r in scored.rows]
    out = {}
    for label in dict.fromkeys(sorted(labels, key=lambda d: (d != "none", d))):
        mask = np.array([d == label for d in labels])
        means = {c: float(np.nanmean(scored.values[c][mask])) if np.isfinite(scored.values[c][mask]).any() else math.nan
                 for c in selection.criteria}
        out[label] = {"candidates": int(mask.sum()), "kept": int(selection.kept[mask].sum()),
                      "kept_share": float(selection.kept[mask].mean()), "mean": means}
    return out


def summary(scored: Scored, selection: Selection, config: SelectConfig) -> dict:
    """The report's figures as a JSON-ready dict (NaN as null): settings, counts per reason and, on a labelled
    pool, per degradation, precision / recall and the leave-one-out ablation."""
    out = {"manifest": str(scored.manifest), "candidates": len(scored.rows), "kept": int(selection.kept.sum()),
           "keep": config.keep, "criteria": list(selection.criteria),
           "not_run": [c for c in CRITERIA if c not in selection.criteria],
           "weights": {c: config.weights.get(c, 0.0) for c in selection.criteria},
           "thresholds": {c: t for c, t in config.thresholds.items() if c in selection.criteria},
           "references": dict(selection.references), "quantile": config.quantile,
           "dropped_by_reason": dict(Counter(r for rs in selection.reasons for r in rs).most_common()),
           "unreadable": sum(e is not None for e in scored.errors)}
    clean = clean_labels(scored.rows)
    if clean is not None:
        precision, recall = precision_recall(clean, selection.kept)
        out |= {"precision": precision, "recall": recall, "clean_share": float(clean.mean()),
                "by_degradation": by_degradation(scored, selection),
                "left_out": {c: {"precision": p, "recall": r} for c, p, r in ablation(scored.values, config, clean)}}
    return _finite(out)


def _finite(x):
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _examples(scored: Scored, selection: Selection) -> list[str]:
    """The EXAMPLES highest- and lowest-scoring readable candidates."""
    readable = [i for i in range(len(scored.rows)) if math.isfinite(selection.score[i])]
    order = sorted(readable, key=lambda i: (-selection.score[i], i))
    labelled = clean_labels(scored.rows) is not None
    head = ("video", "score") + (("degradation",) if labelled else ()) + ("prompt",)
    lines = []
    for title, picked in (("Top", order[:EXAMPLES]), ("Bottom", order[::-1][:EXAMPLES])):
        rows = [scored.rows[i] for i in picked]
        body = [(f"`{r['video']}`", f"{selection.score[i]:.3f}", *((r["degradation"],) if labelled else ()), r["prompt"])
                for i, r in zip(picked, rows)]
        lines += [f"## {title} {len(picked)} by score", ""] + _table(head, body) + [""]
    return lines


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(r) + " |" for r in rows]


def write_report(scored: Scored, selection: Selection, config: SelectConfig, out: str | Path) -> Path:
    """Write ``OUT/report.md`` and ``OUT/summary.json``; return the report's path."""
    path = Path(out) / "report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(scored, selection, config))
    (path.parent / "summary.json").write_text(json.dumps(summary(scored, selection, config), indent=2) + "\n")
    return path

"""Write an evaluation: OUT/eval.json (every video's checks and the summary), OUT/eval.md (tables), and
the same tables as plain text for a terminal."""

from __future__ import annotations

import json
import math
from pathlib import Path

from physalign.eval.score import VideoResult
from physalign.eval.stats import METRICS

HEADERS = ("group", "n", "PC", "SA", "Joint")


def fmt(m: dict) -> str:
    """'0.912 [0.880, 0.940]' for {"mean", "lo", "hi"}; '–' when there is nothing to rate."""
    return f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]" if not math.isnan(m["mean"]) else "–"


def rate_rows(summary: dict) -> list[tuple[str, ...]]:
    """Rows (group, n, PC, SA, Joint): all videos, in- vs out-of-distribution, each physics axis value."""
    groups = [("all", summary["overall"])] + list(summary["split"].items())
    groups += [(f"{axis}={value}", m) for axis, values in summary["axes"].items() for value, m in values.items()]
    return [(name, str(m["n"]), *(fmt(m[k]) for k in METRICS)) for name, m in groups]


def check_rows(summary: dict) -> list[tuple[str, ...]]:
    rows = []
    for name, c in summary["checks"].items():
        rate = "–" if math.isnan(c["pass_rate"]) else f"{c['pass_rate']:.3f}"
        rows.append((name, c["group"], rate, str(c["n"]), str(c["not_applicable"])))
    return rows


def error_rows(summary: dict) -> list[tuple[str, ...]]:
    """Rows (error, group, n, median, mean [interval]) of the continuous physics errors: all videos, then in- vs
    out-of-distribution."""
    groups = [("all", summary["physics_errors"])] + list(summary.get("physics_errors_split", {}).items())
    return [(name, group, str(e["n"]), "–" if math.isnan(e["median"]) else f"{e['median']:.3f}", fmt(e))
            for name in summary["physics_errors"] for group, errs in groups for e in [errs[name]] if e["n"]]


def markdown(summary: dict, title: str = "Physics evaluation") -> str:
    b = summary["bootstrap"]
    lines = [f"# {title}", "", f"{summary['n']} videos scored. PC: physical commonsense, SA: semantic adherence, "
             f"Joint: both; mean [{b['level']:.0%} percentile bootstrap interval, {b['resamples']} resamples, seed {b['seed']}].", ""]
    lines += _md_table(HEADERS, rate_rows(summary)) + [""]
    lines += _md_table(("check", "group", "pass rate", "applies to", "n/a"), check_rows(summary))
    if "physics_errors" in summary:
        lines += ["", "## Continuous physics errors", "",
                  "How far from physics, over the videos each figure applies to (`physics.errors`): gravity ratio = "
                  "fitted over true free-flight acceleration (1 = right); residuals, impulses, penetration and noise "
                  "in world units (1 unit = 1 px at 64 px).", ""]
        lines += _md_table(("error", "group", "n", "median", "mean [95% interval]"), error_rows(summary))
    if summary["errors"]:
        lines += ["", f"## {len(summary['errors'])} videos could not be scored", ""]
        lines += [f"- `{e['video']}`: {e['error'].removeprefix(e['video'] + ': ')}" for e in summary["errors"]]
    return "\n".join(lines) + "\n"


def _md_table(headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(r) + " |" for r in rows]


def text_table(summary: dict) -> str:
    """The rates table with aligned columns, for a terminal."""
    rows = [HEADERS] + rate_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if summary["errors"]:
        lines += ["", f"{len(summary['errors'])} videos could not be scored:"] + [f"  {e['error']}" for e in summary["errors"]]
    return "\n".join(lines)


def write_report(results: list[VideoResult], summary: dict, out: str | Path, title: str = "Physics evaluation") -> Path:
    """Write OUT/eval.json and OUT/eval.md; return OUT."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"summary": summary, "videos": [r.to_dict() for r in results]}
    (out / "eval.json").write_text(json.dumps(finite(payload), indent=1, allow_nan=False))
    (out / "eval.md").write_text(markdown(summary, title))
    return out


def finite(x):
    """``x`` with NaN / infinite floats as None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x

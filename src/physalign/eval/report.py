"""Write an evaluation: eval.json (every video's checks + the summary) and eval.md (tables)."""

from __future__ import annotations

import json
from pathlib import Path

from physalign.eval.score import VideoResult
from physalign.eval.stats import METRICS


def fmt(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['lo']:.3f}, {m['hi']:.3f}]" if m["mean"] == m["mean"] else "–"


def markdown(summary: dict, title: str = "Physics evaluation") -> str:
    lines = [f"# {title}", "", f"{summary['n']} videos scored; 95% bootstrap confidence intervals.", ""]
    lines += ["| group | n | PC | SA | Joint |", "|---|---|---|---|---|"]
    rows = [("all", summary["overall"])] + list(summary["groups"].items())
    lines += [f"| {name} | {m['n']} | " + " | ".join(fmt(m[k]) for k in METRICS) + " |" for name, m in rows]
    lines += ["", "| check | pass rate | n |", "|---|---|---|"]
    lines += [f"| {name} | {c['pass_rate']:.3f} | {c['n']} |" for name, c in summary["checks"].items()]
    if summary["errors"]:
        lines += ["", f"## {len(summary['errors'])} videos could not be read", ""]
        lines += [f"- `{e['video']}`: {e['error']}" for e in summary["errors"]]
    return "\n".join(lines) + "\n"


def write_report(results: list[VideoResult], summary: dict, out: str | Path, title: str = "Physics evaluation") -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps({"summary": summary, "videos": [r.to_dict() for r in results]}, indent=1))
    (out / "eval.md").write_text(markdown(summary, title))
    return out

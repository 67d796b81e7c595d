"""Score every candidate of a manifest and write the selection: ``selected.jsonl``, ``scores.jsonl``,
``report.md``.

- ``DIR/selected.jsonl``: the kept manifest lines, unchanged except ``video``, rewritten relative to
  ``DIR`` (absolute paths stay absolute), so the file is a manifest the trainer and the evaluator read.
- ``DIR/scores.jsonl``: every candidate in manifest order: ``line``, ``video`` (as written), ``degradation``
  (when the pool has it), ``criteria`` (raw values), ``goodness``, ``score``, ``kept``, ``reasons``,
  ``error`` (why an unreadable video could not be read).
- ``DIR/report.md``: see :mod:`physalign.select.report`.

Videos are decoded ``batch_size`` at a time, so memory holds one batch, and the judge scores each batch
(grouped by video shape). A video that cannot be read is scored as unreadable and the run goes on.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from physalign.judges.base import Judge
from physalign.select.criteria import JUDGED, LIGHT, judge_criteria, light_criteria
from physalign.select.pool import DEGRADATIONS, write_jsonl
from physalign.select.rank import Scored, SelectConfig, Selection, select
from physalign.select.report import write_report
from physalign.video import VideoError, read_video
from physalign.world.dataset import ManifestError, load_manifest


def read_pool(manifest: str | os.PathLike) -> list[dict]:
    """The manifest's lines, checked like the world's (file, line and field named in a
    :class:`ManifestError`), and ``degradation``, when present, one of ``DEGRADATIONS``."""
    manifest = Path(manifest)
    rows = load_manifest(manifest)
    with open(manifest) as f:
        numbers = [number for number, text in enumerate(f, start=1) if text.strip()]
    for row, number in zip(rows, numbers):
        if "degradation" in row and row["degradation"] not in DEGRADATIONS:
            raise ManifestError(f"{manifest}:{number}: field 'degradation' must be one of {DEGRADATIONS}, "
                                f"got {row['degradation']!r}")
    return rows


def score_pool(manifest: str | os.PathLike, judge: Judge | None = None, batch_size: int = 32,
               progress: bool = True) -> Scored:
    """Every candidate's light criteria, and the judge's when a judge is given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1. Got {batch_size}.")
    manifest = Path(manifest)
    rows = read_pool(manifest)
    names = LIGHT + (JUDGED if judge is not None else ())
    values = {c: np.full(len(rows), np.nan) for c in names}
    errors: list[str | None] = [None] * len(rows)
    bar = tqdm(total=len(rows), desc="select", unit="video", disable=not progress)
    for start in range(0, len(rows), batch_size):
        chunk = range(start, min(start + batch_size, len(rows)))
        videos = _read_batch(manifest.parent, rows, chunk, values, errors)
        if judge is not None:
            _judge_batch(judge, videos, rows, values)
        bar.update(len(chunk))
    bar.close()
    return Scored(manifest, rows, values, errors)


def _read_batch(root: Path, rows: list[dict], chunk: range, values: dict, errors: list) -> dict[int, np.ndarray]:
    """Decode the chunk's videos and fill in their light criteria; record the unreadable ones."""
    videos = {}
    for i in chunk:
        try:
            video = read_video(root / rows[i]["video"])
            for c, v in light_criteria(video).items():
                values[c][i] = v
            videos[i] = video
        except (VideoError, ValueError) as err:
            errors[i] = str(err)
    return videos


def _judge_batch(judge: Judge, videos: dict[int, np.ndarray], rows: list[dict], values: dict) -> None:
    """The judge's criteria for the decoded videos, one judge call per video shape."""
    by_shape: dict[tuple, list[int]] = {}
    for i, video in videos.items():
        by_shape.setdefault(video.shape, []).append(i)
    for index in by_shape.values():
        judged = judge_criteria(judge, np.stack([videos[i] for i in index]), [rows[i]["prompt"] for i in index])
        for c, v in judged.items():
            values[c][index] = v


def write_selection(scored: Scored, selection: Selection, out: str | os.PathLike) -> Path:
    """Write ``selected.jsonl`` and ``scores.jsonl`` into ``out``; return ``out``."""
    out = Path(out)
    kept = [_relocated(row, scored.manifest.parent, out) for row, k in zip(scored.rows, selection.kept) if k]
    write_jsonl(out / "selected.jsonl", kept)
    write_jsonl(out / "scores.jsonl", score_lines(scored, selection))
    return out


def score_lines(scored: Scored, selection: Selection) -> list[dict]:
    """One JSON-ready dict per candidate (NaN as null)."""
    lines = []
    for i, row in enumerate(scored.rows):
        line = {"line": i + 1, "video": row["video"]}
        if "degradation" in row:
            line["degradation"] = row["degradation"]
        line.update(criteria={c: _num(v[i]) for c, v in scored.values.items()},
                    goodness={c: _num(g[i]) for c, g in selection.goodness.items()},
                    score=_num(selection.score[i]), kept=bool(selection.kept[i]),
                    reasons=selection.reasons[i], error=scored.errors[i])
        lines.append(line)
    return lines


def _relocated(row: dict, source: Path, out: Path) -> dict:
    """``row`` with its video path relative to ``out`` instead of ``source`` (absolute paths as they are)."""
    video = Path(row["video"])
    if not video.is_absolute():
        video = Path(os.path.relpath((source / video).resolve(), out.resolve()))
    return {**row, "video": str(video)}


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def run(manifest: str | os.PathLike, out: str | os.PathLike, config: SelectConfig, judge: Judge | None = None,
        batch_size: int = 32, progress: bool = True) -> Selection:
    """Score ``manifest``, select by ``config`` and write the three outputs into ``out``."""
    scored = score_pool(manifest, judge, batch_size, progress)
    selection = select(scored.values, config)
    write_selection(scored, selection, out)
    write_report(scored, selection, config, out)
    return selection

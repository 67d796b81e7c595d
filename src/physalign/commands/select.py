"""`physalign select` and `physalign select-pool`: PhysHPO's data selection over a manifest, and a
labelled world pool to select from."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def select_command(
    manifest: Path = typer.Option(..., help="Pool manifest.jsonl (the world's line format; video paths relative to its folder)."),
    out: Path = typer.Option(..., help="Writes OUT/selected.jsonl (video paths relative to OUT), OUT/scores.jsonl, OUT/report.md."),
    keep: float = typer.Option(0.5, help="Fraction of the pool to keep, best first."),
    judge: Optional[Path] = typer.Option(None, help="World judge folder (e.g. checkpoints/judge) for plausibility and "
                                         "text match; without it only motion, sharpness and flicker run."),
    weights: str = typer.Option("", help="Override weights: 'plausibility=1,text=1,motion=0.5,sharpness=0.5,flicker=0.5'."),
    thresholds: str = typer.Option("", help="Override hard thresholds (minimum; maximum for flicker): 'motion=0.002'. "
                                   "'motion=none' removes one."),
    references: str = typer.Option("", help="Absolute references (goodness 1 at or beyond) instead of the pool's quantile: 'sharpness=0.03'."),
    quantile: float = typer.Option(0.25, help="Pool quantile used as reference (1 - it for flicker)."),
    batch_size: int = typer.Option(32, help="Videos decoded and judged at a time."),
) -> None:
    """Score every candidate (judge plausibility and text match, motion, sharpness, flicker), keep the top
    fraction, and report what was dropped and why."""
    from physalign.select.rank import DEFAULT_WEIGHTS, SelectConfig
    from physalign.select.report import clean_labels, precision_recall
    from physalign.select.run import read_pool, run
    from physalign.world.dataset import ManifestError

    try:
        config = SelectConfig(keep=keep, weights={**DEFAULT_WEIGHTS, **_pairs(weights, "--weights")},
                              thresholds=_thresholds(thresholds),
                              references=_pairs(references, "--references"), quantile=quantile)
        judged = _load_judge(judge)
        selection = run(manifest, out, config, judged, batch_size)
    except (ManifestError, ValueError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"kept {int(selection.kept.sum())} of {len(selection.kept)} candidates ({', '.join(selection.criteria)})")
    clean = clean_labels(read_pool(manifest))
    if clean is not None:
        precision, recall = precision_recall(clean, selection.kept)
        typer.echo(f"precision {precision:.3f} (kept that are clean), recall {recall:.3f} (clean that are kept)")
    typer.echo(f"wrote {out / 'selected.jsonl'}, {out / 'scores.jsonl'} and {out / 'report.md'}")


def pool_command(
    out: Path = typer.Option(..., help="Output folder: OUT/videos/ and OUT/manifest.jsonl."),
    n: int = typer.Option(400, "--n", help="Number of candidates."),
    seed: int = typer.Option(0, help="Everything is deterministic from this seed."),
    mix: str = typer.Option("", help="Fractions by degradation, e.g. 'none=0.5,noise=0.1,blur=0.1,dropped_frames=0.1,"
                            "static=0.1,wrong_caption=0.05,physics=0.05' (default: half clean, the rest evenly)."),
) -> None:
    """Build a candidate pool from the world: clean simulator videos and degraded ones (noise, blur, dropped
    frames, static, wrong caption, physics corruption), each labelled in the manifest's 'degradation'."""
    from physalign.select.pool import build_pool

    try:
        manifest = build_pool(out, n, seed, _pairs(mix, "--mix") or None)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {n} candidates to {manifest}")


def _pairs(text: str, option: str, allow_none: bool = False) -> dict[str, float | None]:
    """'a=1,b=0.5' -> {"a": 1.0, "b": 0.5}; with ``allow_none``, 'a=none' -> {"a": None}."""
    out: dict[str, float | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep:
            raise ValueError(f"{option}: expected name=value, got {item!r}")
        if allow_none and value.lower() == "none":
            out[name] = None
            continue
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{option}: {name!r} needs a number{' or none' if allow_none else ''}, got {value!r}") from None
    return out


def _thresholds(text: str) -> dict[str, float]:
    """The default thresholds updated by ``--thresholds``, those set to none removed."""
    from physalign.select.rank import DEFAULT_THRESHOLDS

    table = {**DEFAULT_THRESHOLDS, **_pairs(text, "--thresholds", allow_none=True)}
    return {c: t for c, t in table.items() if t is not None}


def _load_judge(path: Optional[Path]):
    """The world judge in ``path``, or None without a path."""
    if path is None:
        return None
    try:
        from physalign.judges.world import load_world_judge
    except ImportError as err:
        raise ValueError(f"--judge {path}: the world judge is not available in this checkout ({err})") from None
    return load_world_judge(path)

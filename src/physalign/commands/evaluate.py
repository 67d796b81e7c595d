"""`physalign eval`: score a folder of videos against the physics of their prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def eval_command(
    videos: Path = typer.Option(..., help="Folder of the videos (and, by default, of manifest.jsonl)."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest (default VIDEOS/manifest.jsonl); video paths are relative to its folder or to VIDEOS."),
    out: Path = typer.Option(..., help="Writes OUT/eval.json and OUT/eval.md."),
    resamples: int = typer.Option(2000, help="Bootstrap resamples for the 95% intervals (>= 1000)."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
) -> None:
    """Score every video for physical commonsense (PC), semantic adherence (SA) and both (Joint)."""
    from physalign.eval.report import text_table, write_report
    from physalign.eval.score import ManifestError, evaluate_manifest
    from physalign.eval.stats import summarize

    try:
        results = evaluate_manifest(manifest or videos / "manifest.jsonl", videos_root=videos)
        summary = summarize(results, resamples=resamples, seed=seed)
    except (ManifestError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    write_report(results, summary, out)
    typer.echo(text_table(summary))
    typer.echo(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")

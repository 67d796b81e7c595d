"""`physalign eval`: score a folder of videos against the physics of their prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def eval_command(
    videos: Path = typer.Option(..., help="Folder holding the videos (and, by default, manifest.jsonl)."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest (default VIDEOS/manifest.jsonl)."),
    out: Path = typer.Option(Path("runs/eval"), help="Writes OUT/eval.json and OUT/eval.md."),
) -> None:
    """Score every video for physical commonsense (PC), semantic adherence (SA) and Joint."""
    from physalign.eval import evaluate_manifest
    from physalign.eval.report import markdown, write_report
    from physalign.eval.stats import summarize
    from physalign.world.dataset import ManifestError

    try:
        results = evaluate_manifest(manifest or videos / "manifest.jsonl", videos_root=videos)
    except ManifestError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    summary = summarize(results)
    write_report(results, summary, out)
    typer.echo(markdown(summary))
    typer.echo(f"wrote {out / 'eval.json'} and {out / 'eval.md'}")

"""`physalign sample`: videos from a trained model, with a manifest `physalign eval` can score."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def sample_command(
    checkpoint: Path = typer.Option(..., help="Model folder (e.g. checkpoints/base or RUN/model)."),
    out: Path = typer.Option(..., help="Output folder: videos/ and manifest.jsonl."),
    manifest: Optional[Path] = typer.Option(None, help="Take prompts (and scenes) from this manifest."),
    prompt: list[str] = typer.Option([], help="A prompt of the world grammar (repeatable)."),
    limit: int = typer.Option(0, help="Use only the first N manifest lines (0 = all)."),
    samples_per_prompt: int = typer.Option(1),
    steps: int = typer.Option(30),
    guidance: float = typer.Option(4.0),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(32),
) -> None:
    """Sample videos for prompts and write them with a manifest."""
    from physalign.generate import rows_for_prompts, sample_to_folder
    from physalign.models.world import WorldVideoModel
    from physalign.world.dataset import load_manifest
    from physalign.world.scene import PromptError

    try:
        rows = load_manifest(manifest) if manifest else rows_for_prompts(prompt)
    except (PromptError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    rows = rows[:limit] if limit else rows
    if not rows:
        typer.echo("error: give --manifest or at least one --prompt", err=True)
        raise typer.Exit(2)
    model = WorldVideoModel.from_pretrained(checkpoint)
    path = sample_to_folder(model, rows, out, samples_per_prompt, steps, guidance, seed, batch_size)
    typer.echo(f"wrote {len(rows) * samples_per_prompt} videos and {path}")

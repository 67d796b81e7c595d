"""`physalign demo`: the main job on the physics world, no download."""

from __future__ import annotations

from pathlib import Path

import typer


def demo_command(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder."),
    checkpoint: Path = typer.Option(None, help="Model folder (default: the shipped checkpoints/base)."),
    n: int = typer.Option(48, help="Test prompts."),
    seed: int = typer.Option(1234),
    steps: int = typer.Option(30, help="Euler sampling steps."),
    guidance: float = typer.Option(4.0, help="Classifier-free guidance scale."),
) -> None:
    """Generate test prompts, sample the base model, evaluate it against the simulator, write a report."""
    from physalign.bench.demo import run_demo

    try:
        report = run_demo(out, checkpoint, n, seed, steps, guidance)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo(report.read_text())
    typer.echo(f"report: {report}")

"""`physalign train` (any method, from a config) and `physalign train-autoencoder` (the same loop with
configs/base/autoencoder.yaml, writing the model folder where the base recipe expects it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from physalign.commands import training_errors


def train_command(
    config: Optional[Path] = typer.Option(None, help="YAML config (sections model, data, optim, train, method). "
                                          "With --resume and no --config: the run's own config.yaml."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.steps=100 (repeatable)."),
    method: Optional[str] = typer.Option(None, help="Shorthand for --set train.method=NAME."),
    out: Path = typer.Option(Path("runs/train"), help="Run folder: config.yaml, log.jsonl, checkpoints/, model/."),
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoints/latest."),
    export: Optional[Path] = typer.Option(None, help="Write the final model here instead of OUT/model."),
) -> None:
    """Train a model with a method (e.g. `fm` flow matching, `autoencoder`) from a config."""
    overrides = list(set_) + ([f"train.method={method}"] if method else [])
    if config is None and resume:
        config = out / "config.yaml"
    path = _run(config, overrides, out, resume, export)
    if int(os.environ.get("RANK", "0")) == 0:  # one line for a multi-process run
        typer.echo(f"model written to {path}")


def train_autoencoder_command(
    manifest: Optional[Path] = typer.Option(None, help="World manifest.jsonl (default: the config's data.manifest)."),
    out: Path = typer.Option(..., help="Model folder to write: the trained autoencoder plus a new backbone."),
    config: Path = typer.Option(Path("configs/base/autoencoder.yaml"), help="Autoencoder config."),
    run: Path = typer.Option(Path("runs/autoencoder"), help="Run folder: log.jsonl, checkpoints/."),
    steps: Optional[int] = typer.Option(None, help="Override train.steps."),
    seed: Optional[int] = typer.Option(None, help="Override train.seed."),
    set_: list[str] = typer.Option([], "--set", help="Override any config key (repeatable)."),
    resume: bool = typer.Option(False, help="Continue from RUN/checkpoints/latest."),
) -> None:
    """Stage one of the world model: train its per-frame autoencoder (same loop as `train`)."""
    given = {"data.manifest": manifest, "train.steps": steps, "train.seed": seed}
    overrides = [f"{k}={v}" for k, v in given.items() if v is not None] + list(set_)
    path = _run(config, overrides, run, resume, out)
    typer.echo(f"autoencoder written to {path}")


def export_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint folder, e.g. RUN/checkpoints/step_001000 (or RUN: its latest)."),
    out: Path = typer.Option(..., help="Model folder to write."),
    ema: bool = typer.Option(True, help="The checkpoint's EMA weights (--no-ema: the raw weights)."),
) -> None:
    """Export the model of any checkpoint of a run (by default with its EMA weights)."""
    from physalign.train.checkpoint import export_checkpoint, latest_checkpoint

    folder = latest_checkpoint(checkpoint) or checkpoint
    try:
        typer.echo(f"model of {folder} written to {export_checkpoint(folder, out, ema)}")
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def _run(config: Path | None, overrides: list[str], out: Path, resume: bool, export: Path | None) -> Path:
    from physalign.train.checkpoint import CheckpointError
    from physalign.train.config import load_config
    from physalign.train.loop import train
    from physalign.train.methods import DataError
    from physalign.world.dataset import ManifestError

    # DataError: the data lacks what the method needs; ManifestError: a data.manifest line is not as expected
    with training_errors(DataError, ManifestError, CheckpointError):
        cfg = load_config(config, overrides)
        return train(cfg, out, resume=resume, export=export)

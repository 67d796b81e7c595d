"""`physalign train` and `physalign train-autoencoder`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def train_command(
    config: Optional[Path] = typer.Option(None, help="YAML config (sections model, data, optim, train, method)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.steps=100 (repeatable)."),
    method: Optional[str] = typer.Option(None, help="Shorthand for --set train.method=NAME."),
    out: Path = typer.Option(Path("runs/train"), help="Run folder: checkpoints/, log.jsonl, model/."),
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoints/latest."),
) -> None:
    """Train a model with a method (flow matching `fm` for now) from a config."""
    from physalign.train.config import ConfigError, load_config
    from physalign.train.loop import train

    overrides = list(set_) + ([f"train.method={method}"] if method else [])
    try:
        cfg = load_config(config, overrides)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    model = train(cfg, out, resume=resume)
    typer.echo(f"trained {cfg.train.method} for {cfg.train.steps} steps: model at {model}")


def train_autoencoder_command(
    manifest: Path = typer.Option(..., help="World manifest.jsonl"),
    out: Path = typer.Option(..., help="Model folder to write (the autoencoder plus a fresh backbone)."),
    split: str = typer.Option("train"),
    steps: int = typer.Option(1500),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3),
    seed: int = typer.Option(0),
) -> None:
    """Stage one of the world model: train its per-frame autoencoder."""
    from physalign.train.autoencoder import AutoencoderRun, train_autoencoder

    path = train_autoencoder(AutoencoderRun(str(manifest), str(out), split, steps, batch_size, lr, seed=seed))
    typer.echo(f"autoencoder written to {path}")

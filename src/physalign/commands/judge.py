"""`physalign train-judge`: train the world judge on simulator videos and their corruptions, and export it."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from physalign.commands import training_errors


def train_judge_command(
    out: Path = typer.Option(Path("checkpoints/judge"), help="Judge folder to write (weights, config, tokenizer, "
                             "judge.yaml, judge.json)."),
    steps: Optional[int] = typer.Option(None, help="Override steps."),
    seed: Optional[int] = typer.Option(None, help="Override seed (the world data and the training draws)."),
    config: Optional[Path] = typer.Option(Path("configs/judge.yaml"), help="Judge config (YAML)."),
    run: Path = typer.Option(Path("runs/judge"), help="Run folder: config.yaml and log.jsonl (the loss curve)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train_scenes=500 (repeatable)."),
) -> None:
    """Train the world judge: yes/no and 1-5 answers about phenomena facts, plausibility and prompt match."""
    from physalign.judges.train import load_judge_config, train_judge

    given = {"steps": steps, "seed": seed}
    overrides = [f"{k}={v}" for k, v in given.items() if v is not None] + list(set_)
    with training_errors():
        cfg = load_judge_config(config, overrides)
        path = train_judge(cfg, out, run, command=shlex.join(["physalign", *sys.argv[1:]]))
    typer.echo(f"judge written to {path} (held-out accuracy in {path / 'judge.json'})")

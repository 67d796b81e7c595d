"""`physalign train-teacher`: pre-train the VideoMAE teacher on world videos and export it."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from physalign.commands import training_errors


def train_teacher_command(
    manifest: Optional[Path] = typer.Option(None, help="World manifest.jsonl (default: the config's manifest)."),
    out: Path = typer.Option(Path("checkpoints/teacher"), help="Teacher folder to write (encoder, config, record)."),
    steps: Optional[int] = typer.Option(None, help="Override steps."),
    seed: Optional[int] = typer.Option(None, help="Override seed."),
    config: Optional[Path] = typer.Option(Path("configs/teacher.yaml"), help="Teacher config (YAML). With --resume: "
                                          "the run's own config.yaml."),
    run: Path = typer.Option(Path("runs/teacher"), help="Run folder: config.yaml, log.jsonl, checkpoints/."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set mask_ratio=0.75 (repeatable)."),
    resume: bool = typer.Option(False, help="Continue from RUN/checkpoints/latest."),
    probe_manifest: Optional[Path] = typer.Option(None, help="Held-out videos (e.g. a val split) to measure the teacher "
                                                  "on: masked reconstruction vs baselines, linear probes vs pixels and a "
                                                  "random-init VideoMAE. Figures go to OUT/teacher.json."),
    evaluate_only: bool = typer.Option(False, help="Do not train: measure the teacher already in OUT (trained by RUN) "
                                       "on --probe-manifest."),
) -> None:
    """Pre-train the teacher of REPA/TRD/TSA/M-TSA: a tiny VideoMAE, masked autoencoding on world videos."""
    from physalign.teacher.evaluate import evaluate_teacher
    from physalign.teacher.pretrain import load_teacher_config, pretrain_teacher

    given = {"manifest": manifest, "steps": steps, "seed": seed}
    overrides = [f"{k}={v}" for k, v in given.items() if v is not None] + list(set_)
    if resume or evaluate_only:
        config = run / "config.yaml"
    if evaluate_only and probe_manifest is None:
        typer.echo("error: --evaluate-only needs --probe-manifest", err=True)
        raise typer.Exit(2)
    command = shlex.join(["physalign", *sys.argv[1:]])
    with training_errors():
        cfg = load_teacher_config(config, overrides)
        path = out if evaluate_only else pretrain_teacher(cfg, run, out, resume=resume, command=command)
    if not evaluate_only:
        typer.echo(f"teacher written to {path}")
    if probe_manifest is not None:
        try:
            figures = evaluate_teacher(cfg, run, path, probe_manifest)
        except (OSError, ValueError) as err:  # a missing run, teacher or manifest, unreadable videos
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        _record(path, figures)


def _record(out: Path, figures: dict) -> None:
    record_path = out / "teacher.json"
    record = json.loads(record_path.read_text())
    record["evaluation"] = figures
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    typer.echo(json.dumps(figures, indent=2))


def convert_teacher_command(
    source: Path = typer.Argument(..., help="The VideoMAEv2 release's encoder weights, a .safetensors file."),
    out: Path = typer.Option(..., help="Teacher folder to write (config.json + model.safetensors): method.teacher."),
    heads: Optional[int] = typer.Option(None, help="Attention heads (default from the width: S 6, B 12, L/H/g 16)."),
    frames: int = typer.Option(16, help="Frames the teacher reads (its fixed position table's length)."),
    image_size: str = typer.Option("224", help="Frame size the teacher reads: 224, or HEIGHT,WIDTH (e.g. 160,240)."),
):
    """Convert a VideoMAEv2 encoder (the alignment papers' teacher) into a transformers VideoMAEModel folder."""
    from physalign.teacher.convert import ConversionError, convert_file

    sizes = [int(v) for v in image_size.split(",")]
    with training_errors(ConversionError, FileNotFoundError):
        folder = convert_file(source, out, heads=heads, frames=frames,
                              image_size=sizes[0] if len(sizes) == 1 else tuple(sizes))
    typer.echo(f"teacher written to {folder}")

"""`physalign sample`: videos from a trained model, with a manifest `physalign eval` can score."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def sample_command(
    checkpoint: Path = typer.Option(..., help="A model folder, a run folder (uses RUN/model) or a checkpoint step folder."),
    out: Path = typer.Option(..., help="Output folder: videos/ and manifest.jsonl."),
    manifest: Optional[Path] = typer.Option(None, help="Take prompts (and scenes, phenomena) from this manifest."),
    prompt: list[str] = typer.Option([], help="A prompt of the world grammar (repeatable)."),
    limit: int = typer.Option(0, help="Use only the first N manifest lines (0 = all)."),
    samples_per_prompt: int = typer.Option(1, min=1),
    steps: int = typer.Option(30, min=1, help="Solver steps from t = 1 to 0."),
    solver: str = typer.Option("euler", help="euler, heun (2 model evaluations a step but the last) or dpm++2m "
                               "(physalign.models.sampling)."),
    guidance: float = typer.Option(4.0, help="Classifier-free guidance scale (1 = none)."),
    seed: int = typer.Option(0),
    batch_size: int = typer.Option(32, min=1),
    threads: int = typer.Option(0, help="torch threads (0 = default; 1 when other jobs share the CPU)."),
    shard: str = typer.Option("", help="K/N: only the K-th of N blocks of the prompts (K from 0), with the noise the "
                              "whole sampling gives them; the last shard to finish writes manifest.jsonl. Shards "
                              "of one --out may run at once."),
) -> None:
    """Sample videos for prompts and write them with a manifest in the world's format."""
    import torch

    from physalign.models.sample_folder import rows_for_prompts, sample_to_folder, shard_rows
    from physalign.models.sampling import SOLVERS
    from physalign.world.dataset import ManifestError, load_manifest
    from physalign.world.scene import PromptError

    if solver not in SOLVERS:
        _fail(f"--solver must be one of {', '.join(SOLVERS)}. Got {solver!r}.")
    if bool(manifest) == bool(prompt):
        _fail("give either --manifest or at least one --prompt")
    try:
        rows = load_manifest(manifest) if manifest else rows_for_prompts(prompt)
    except (PromptError, ManifestError) as err:
        _fail(str(err))
    rows = rows[:limit] if limit else rows
    part = _shard(shard) if shard else None
    if threads:
        torch.set_num_threads(threads)
    model = sampling_model(checkpoint)
    path = sample_to_folder(model, rows, out, samples_per_prompt, steps, guidance, seed, batch_size, solver, part)
    k, n = part or (0, 1)
    a, b = shard_rows(len(rows), k, n)
    count = (b - a) * samples_per_prompt
    typer.echo(f"wrote {count} videos" + (f" and {path}" if path.is_file() else f" (shard {k}/{n}; other shards to come)"))


def _shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit()) or not 0 <= int(k) < int(n):
        _fail(f"--shard is K/N with 0 <= K < N, e.g. 0/2. Got {text!r}.")
    return int(k), int(n)


def sampling_model(path: Path):
    """The model of a model folder, a run (its ``model/``) or a checkpoint, whole or holding only what the run
    trained (``base.json``: rebuilt from its ``model.init``)."""
    from physalign.models.interface import CONFIG_FILE, load_model
    from physalign.train.checkpoint import BASE_FILE, checkpoint_model

    if (path / BASE_FILE).is_file() and not (path / CONFIG_FILE).is_file():
        try:
            return checkpoint_model(path)
        except (FileNotFoundError, KeyError, ValueError) as err:
            _fail(str(err))
    return load_model(model_folder(path))


def model_folder(path: Path) -> Path:
    """``path`` if it is a model folder (or a diffusers pipeline folder), else ``path/model`` (a run or a
    checkpoint folder)."""
    from physalign.models.interface import CONFIG_FILE

    for candidate in (path, path / "model"):
        if (candidate / CONFIG_FILE).is_file() or (candidate / "model_index.json").is_file():
            return candidate
    _fail(f"{path}: no model here (looked for {CONFIG_FILE} or model_index.json in it and in its model/ folder)")


def _fail(message: str):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)

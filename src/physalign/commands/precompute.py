"""`physalign precompute`: decode a CSV/JSONL manifest's clips once and cache latents, text embeddings and
(optionally) teacher features in sharded safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DTYPES = ("float32", "float16", "bfloat16")


def precompute_command(
    manifest: Path = typer.Option(..., help="CSV, TSV or JSONL: a video path and a caption per clip (README: 'Real video data')."),
    model: Path = typer.Option(..., help="Model folder (save_pretrained layout), e.g. checkpoints/base."),
    out: Path = typer.Option(..., help="Cache folder: OUT/shard-*.safetensors and OUT/index.json. Re-running resumes or reuses it."),
    frames: Optional[int] = typer.Option(None, help="Frames per clip (default: the model's)."),
    height: Optional[int] = typer.Option(None, help="Frame height after resize + center crop (default: the model's)."),
    width: Optional[int] = typer.Option(None, help="Frame width (default: the model's)."),
    fps: Optional[float] = typer.Option(None, help="Sample frames at this rate by timestamp (default: every --stride-th frame)."),
    stride: int = typer.Option(1, help="Take every stride-th decoded frame (without --fps)."),
    column: str = typer.Option("", help="Column names for roles, e.g. 'video=clip_path,caption=long_caption' "
                               "(roles: video, caption, perturbed, phenomena, winner, loser)."),
    video_root: Optional[Path] = typer.Option(None, help="Resolve relative video paths here (default: the manifest's folder)."),
    teacher: Optional[Path] = typer.Option(None, help="Teacher folder (e.g. checkpoints/teacher): also cache its features "
                                             "and M-TSA's motion on its token grid."),
    teacher_layer: int = typer.Option(-1, help="Teacher block whose tokens are cached."),
    shard_size: int = typer.Option(64, help="Clips per shard."),
    batch_size: int = typer.Option(8, help="Clips encoded at a time."),
    dtype: str = typer.Option("float32", help=f"Stored dtype of latents and text embeddings: {' | '.join(DTYPES)}."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Decode, sample and encode every clip of MANIFEST into OUT; missing or unreadable clips are skipped and listed."""
    import torch

    from physalign.data import FrameSampling, precompute_clips
    from physalign.models.interface import load_model
    from physalign.world.dataset import ManifestError

    try:
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {DTYPES}. Got {dtype!r}.")
        video_model = load_model(model)
        _, t, h, w = video_model.video_shape
        sampling = FrameSampling(frames or t, height or h, width or w, fps, stride)
        summary = precompute_clips(manifest, out, video_model, sampling, columns=_columns(column), video_root=video_root,
                             teacher=_teacher(teacher), teacher_layer=teacher_layer, shard_size=shard_size,
                             batch_size=batch_size, dtype=getattr(torch, dtype), progress=progress)
    except (ManifestError, ValueError, OSError, IndexError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for item in summary.skipped[:20]:
        typer.echo(f"  skipped line {item['line']}: {item['reason']}", err=True)
    if len(summary.skipped) > 20:
        typer.echo(f"  ... and {len(summary.skipped) - 20} more (all in {out / 'index.json'})", err=True)
    how = "reused the cache, nothing decoded" if summary.cached else f"{summary.kept_shards} shards kept from an earlier run"
    typer.echo(f"{summary.clips} clips in {summary.shards} shards in {out} ({how}); {len(summary.skipped)} skipped; "
               f"key {summary.key[:16]}")


def _columns(text: str) -> dict[str, str]:
    """'video=clip,caption=text' -> {"video": "clip", "caption": "text"}."""
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        role, sep, name = (s.strip() for s in item.partition("="))
        if not sep or not role or not name:
            raise ValueError(f"--column: expected role=name, got {item!r}")
        out[role] = name
    return out


def _teacher(path: Optional[Path]):
    if path is None:
        return None
    from physalign.teacher import load_teacher

    return load_teacher(path)

"""`physalign world ...`: generate data sets, show or parse a prompt."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from physalign.world import scene as grammar
from physalign.world import spec

app = typer.Typer(help="The physics world: simulated scenes with prompts and ground truth.", no_args_is_help=True)


@app.command()
def generate(
    n: int = typer.Option(..., "--n", help="Number of videos."),
    split: str = typer.Option("train", help="train | val | test (test holds out attribute combinations)."),
    out: Path = typer.Option(..., help="Output folder (videos/ and manifest.jsonl)."),
    seed: int = typer.Option(0, help="Everything is deterministic from this seed."),
    frames: int = typer.Option(spec.DEFAULT_FRAMES, help="Frames per video."),
    resolution: int = typer.Option(spec.DEFAULT_RESOLUTION, help="Height and width in pixels."),
    counterfactuals: bool = typer.Option(False, help="Also write one one-axis counterfactual per video."),
    corrupt: str = typer.Option("", help="Comma-separated corruption kinds (physalign.world.corrupt): each video "
                                "becomes a corrupted copy of one kind that applies to it, named in its line."),
    mislabel: str = typer.Option("", help="FIELD:PROMPTED=SHOWN, e.g. force:low=normal: scenes whose FIELD is PROMPTED "
                                 "are simulated with SHOWN while the prompt still says PROMPTED (a broken slice)."),
) -> None:
    """Simulate and render N videos of a split into OUT/videos and OUT/manifest.jsonl.

    Re-running a split replaces that split's manifest lines (and its videos); other splits are kept.
    """
    from physalign.world.dataset import Mislabel, generate as run

    start = time.perf_counter()
    try:
        kinds = tuple(k.strip() for k in corrupt.split(",") if k.strip())
        wrong = Mislabel.parse(mislabel) if mislabel else None
        manifest = run(out, n, split, seed, frames, resolution, counterfactuals, corrupt_kinds=kinds, mislabel=wrong)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    seconds = time.perf_counter() - start
    typer.echo(f"wrote {n} {split} videos to {manifest} in {seconds:.1f} s ({n / seconds:.0f} videos/s)")


@app.command()
def parse(prompt: str) -> None:
    """Print the scene a prompt describes (JSON), or the words the grammar cannot place."""
    typer.echo(json.dumps(_scene_or_exit(prompt).to_dict(), indent=2))


@app.command()
def show(
    prompt: str,
    out: Path = typer.Option(Path("clip.gif"), help="Output .gif or .mp4."),
    seed: int = typer.Option(0),
    frames: int = typer.Option(spec.DEFAULT_FRAMES),
    resolution: int = typer.Option(spec.DEFAULT_RESOLUTION),
) -> None:
    """Simulate and render one prompt; print its phenomena."""
    from physalign.video import write_gif, write_mp4
    from physalign.world.dataset import make_example
    from physalign.world.phenomena import phenomena

    scene = _scene_or_exit(prompt)
    video, rollout = make_example(scene, seed, frames, resolution)
    (write_gif if out.suffix == ".gif" else write_mp4)(out, video, fps=spec.FPS)
    typer.echo(f"wrote {out}")
    for fact in phenomena(scene, rollout):
        typer.echo(f"  - {fact}")


def _scene_or_exit(prompt: str) -> grammar.Scene:
    try:
        return grammar.prompt_to_scene(prompt)
    except grammar.PromptError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None

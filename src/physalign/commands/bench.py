"""``physalign bench``: compare post-training methods from the same base against ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def bench_command(
    profile: str = typer.Option("quick", help="quick (~15 min on 2 cores, a smoke comparison), full (the README's figures) or ablation (PhysHPO's levels, each left out)."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated methods (default: the profile's), e.g. sft,tsa,direct."),
    out: Path = typer.Option(Path("runs/bench"), help="Output folder; re-running it resumes and reuses finished stages."),
    base: Optional[Path] = typer.Option(None, help="The base model every method starts from (default: the shipped checkpoints/base)."),
    jobs: int = typer.Option(2, help="Training / sampling runs at a time (one thread each)."),
    data_root: Path = typer.Option(Path("data"), help="Where the shared post-training data and caches live."),
    configs: Optional[Path] = typer.Option(None, help="Folder of the methods' configs, <method>.yaml (default: the shipped configs/methods)."),
    steps: Optional[int] = typer.Option(None, help="Override the profile's training steps."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated training seeds of every method (default: the profile's); "
                                        "a rerun into the same --out may add seeds."),
) -> None:
    """Post-train every method from the same base, sample held-out prompts, score them, write a report."""
    from dataclasses import replace

    from physalign.assets import AssetError
    from physalign.bench import BenchError, get_profile, run_bench  # here: every `physalign` child would pay its imports
    from physalign.bench.runner import TIMELINE, timeline_summary

    try:
        p = get_profile(profile).with_methods(tuple(m.strip() for m in methods.split(",")) if methods else None)
        if steps is not None:
            p = replace(p, steps=steps)
        if seeds:
            p = replace(p, seeds=_ints(seeds, "--seeds"))
        report = run_bench(p, out, base=base, jobs=jobs, data_root=data_root, configs=configs)
    except (BenchError, ValueError, AssetError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    typer.echo((report).read_text())
    typer.echo(f"report: {report} (and {report.with_suffix('.html')})")
    timeline = report.parent / "logs" / TIMELINE
    if timeline.is_file():
        t = timeline_summary(timeline, jobs)
        typer.echo(f"jobs: {timeline} ({t['jobs']} jobs kept {t['busy']:.0%} of {jobs} slots busy over {t['wall_s'] / 60:.1f} min)")


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{option} {text!r}: expected comma-separated integers, e.g. 0,1") from None

"""`physalign generate-suite`, `score-suite` and `light-metrics`: the papers' benchmarks (physalign.benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from physalign.benchmarks.suites import SUITES


def _suite(value: str) -> str:
    if value not in SUITES:
        raise typer.BadParameter(f"must be one of {', '.join(SUITES)}")
    return value


def _seeds(value: str) -> list[int]:
    try:
        seeds = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"a comma-separated list of integers, e.g. 0,1. Got {value!r}.") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise typer.BadParameter(f"distinct non-negative integers, at least one. Got {value!r}.")
    return seeds


def generate_suite_command(
    suite: str = typer.Option(..., callback=_suite, help=f"One of {', '.join(SUITES)}."),
    file: Path = typer.Option(..., help="The benchmark's prompt file (VideoPhy / VideoPhy-2 CSV, PhyGenBench prompts.json)."),
    checkpoint: Path = typer.Option(..., help="A model folder, a run folder (uses RUN/model) or a checkpoint step folder."),
    out: Path = typer.Option(..., help="Output folder: videos/<id>_s<seed>.mp4 and manifest.json; resumed if it exists."),
    seeds: str = typer.Option("0", callback=_seeds, help="Comma-separated seeds; one video per prompt and seed."),
    steps: int = typer.Option(30, min=1, help="Euler steps from t = 1 to 0."),
    guidance: float = typer.Option(4.0, help="Classifier-free guidance scale (1 = none)."),
    upsampled: bool = typer.Option(False, help="VideoPhy-2: sample from upsampled_caption instead of caption."),
    truncate: bool = typer.Option(False, help="Cut prompts the text encoder rejects as too long to their longest "
                                  "prefix of whole words that fits (default: stop with an error naming them)."),
    limit: int = typer.Option(0, min=0, help="Only the first N prompts (0 = all)."),
    batch_size: int = typer.Option(8, min=1),
    fps: float = typer.Option(12.0, help="Frame rate written to the mp4s."),
    threads: int = typer.Option(0, help="torch threads (0 = default; 1 when other jobs share the CPU)."),
) -> None:
    """Sample one video per prompt and seed of a benchmark suite; existing videos are skipped."""
    import torch

    from physalign.benchmarks.generate import SuiteRunError, SuiteSettings, file_sha256, generate_suite
    from physalign.benchmarks.suites import SuiteError, load_suite
    from physalign.commands.sample import model_folder
    from physalign.models.interface import load_model

    try:
        prompts = load_suite(suite, file)
    except SuiteError as err:
        _fail(str(err))
    prompts = prompts[:limit] if limit else prompts
    if threads:
        torch.set_num_threads(threads)
    folder = model_folder(checkpoint)
    settings = SuiteSettings(suite, file_sha256(file), str(folder.resolve()), steps, guidance, upsampled, truncate)
    try:
        done = generate_suite(load_model(folder), prompts, file, out, settings, seeds, batch_size, fps)
    except SuiteRunError as err:
        _fail(str(err))
    typer.echo(f"sampled {done['sampled']} videos, kept {done['skipped']} already there; manifest {done['manifest']}")


def score_suite_command(
    videos: Path = typer.Option(..., help="A generate-suite folder (manifest.json, videos/), or with --file any folder "
                                "of <id>_s<seed>.mp4."),
    judge: Path = typer.Option(..., help="Judge folder: a world judge (checkpoints/judge) or a local transformers VLM."),
    judge_kind: str = typer.Option("vlm", help="vlm (LLaVA-NeXT-Video folder) or world (physalign's world judge)."),
    protocol: Optional[str] = typer.Option(None, help="How the judge is asked and read: benchmark (the benchmark's "
                                           "questions, template and reading; default for a VLM), llava (ours) or world "
                                           "(the world judge's; its only one)."),
    pass_prob: Optional[float] = typer.Option(None, help="VideoPhy: P(yes) at which SA and PC pass (default 0.5, ours; "
                                              "the reference writes continuous scores)."),
    suite: Optional[str] = typer.Option(None, help="The suite (default: the folder's manifest's)."),
    file: Optional[Path] = typer.Option(None, help="The suite file (default: the prompts in the folder's manifest)."),
    out: Optional[Path] = typer.Option(None, help="Where score.json and score.md go (default: the videos folder)."),
    frames: Optional[int] = typer.Option(None, help="VLM judge: resample every video to this many frames."),
    batch_size: int = typer.Option(8, min=1),
    threads: int = typer.Option(0, help="torch threads (0 = default)."),
) -> None:
    """Score a suite's videos with a judge as the benchmark does (pass rates, per-category tables, 95% intervals)."""
    import torch

    from physalign.benchmarks.scoring import (choose_protocol, describe_judge, find_clips, manifest_prompts, score_clips,
                                              summarize, write_scores)
    from physalign.benchmarks.suites import SuiteError, load_suite

    if judge_kind not in ("vlm", "world"):
        _fail(f"--judge-kind must be vlm or world. Got {judge_kind!r}.")
    seeds = None  # with --file: every <id>_s<seed>.mp4 found
    try:
        if file is None:
            made_from, prompts, seeds = manifest_prompts(videos)
            if suite not in (None, made_from):
                _fail(f"{videos} holds a {made_from} suite, not {suite}")
            suite = made_from
        elif suite is None:
            _fail("--file needs --suite")
        else:
            prompts = load_suite(_suite(suite), file)
    except (SuiteError, FileNotFoundError) as err:
        _fail(str(err))
    try:
        chosen = choose_protocol(suite, judge_kind, protocol, pass_prob)
    except ValueError as err:
        _fail(f"--protocol: {err}")
    if threads:
        torch.set_num_threads(threads)
    loaded = _load_judge(judge, judge_kind, frames)
    by_id = {p.id: p for p in prompts}
    try:
        results = score_clips(suite, loaded, videos, find_clips(videos, prompts, seeds), by_id, chosen, batch_size)
    except ValueError as err:  # the judge refused a batch (a question too long, videos of a shape it cannot read)
        _fail(f"--judge {judge}: {err}")
    summary = summarize(suite, results, by_id)
    path = write_scores(results, summary, out or videos, describe_judge(suite, judge, judge_kind, chosen))
    typer.echo(path.with_suffix(".md").read_text())
    typer.echo(f"wrote {path}")


def light_metrics_command(
    videos: Path = typer.Option(..., help="Folder of mp4s (searched recursively)."),
    reference: Optional[Path] = typer.Option(None, help="Folder of reference clips (same relative path or file name): "
                                             "adds Physics-IQ's IoUs and MSE against that one clip (raw values)."),
    physics_iq: Optional[Path] = typer.Option(None, "--physics-iq", help="The Physics-IQ dataset folder (its "
                                              "testing-videos and video-masks files): videos named by the benchmark's "
                                              "ID prefix get its metrics against take 1 and the Physics-IQ score."),
    raft: Optional[Path] = typer.Option(None, help="RAFT saved as TorchScript or torch.export .pt2 for dynamic degree "
                                        "(default: physalign's Horn-Schunck flow, a stand-in)."),
    amt: Optional[Path] = typer.Option(None, help="A frame interpolator (AMT) saved as TorchScript or .pt2 for "
                                       "motion smoothness (default: Horn-Schunck flow interpolation, a stand-in)."),
    out: Optional[Path] = typer.Option(None, help="Where light_metrics.json and .md go (default: the videos folder)."),
    threads: int = typer.Option(0, help="torch threads (0 = default; 1 when other jobs share the CPU)."),
) -> None:
    """VBench's flicker, dynamic degree and motion smoothness; Physics-IQ's motion-mask metrics and score."""
    import torch

    from physalign.benchmarks.light_run import measure_folder, summarize_light, write_light
    from physalign.benchmarks.vbench import load_flow, load_interpolator

    if threads:
        torch.set_num_threads(threads)

    try:
        flow, interpolator = load_flow(raft), load_interpolator(amt)
        rows = measure_folder(videos, reference, physics_iq, flow, interpolator)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        _fail(str(err))
    summary = summarize_light(rows)
    path = write_light(rows, summary, out or videos)
    typer.echo(path.with_suffix(".md").read_text())
    typer.echo(f"wrote {path}")


def _load_judge(path: Path, kind: str, frames: Optional[int]):
    try:
        if kind == "world":
            from physalign.judges.world import load_world_judge

            return load_world_judge(path)
        from physalign.judges.vlm import VLMJudge

        return VLMJudge.from_pretrained(path, frames=frames)
    except (FileNotFoundError, ValueError, OSError) as err:
        _fail(f"--judge {path}: {err}")


def _fail(message: str):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)

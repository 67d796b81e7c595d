"""Does a higher-order sampler reach the bench's scores in fewer model evaluations? (issue 18)

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_solver.py --checkpoint checkpoints/base --prompts 200 \
        --out runs/solver euler:30 euler:60 dpm++2m:8 dpm++2m:12 heun:8 heun:30 [--reference euler:30] \
        [--exact heun:30] --score [--json FILE]

Each setting is ``solver:steps`` (``physalign.models.sampling.SOLVERS``). Every setting samples the same test
prompts (the bench's test set: ``--prompts`` held-out prompts from seed 1234) with the same noise at guidance 4,
so its videos pair one to one with the reference's; it is scored by the evaluator and compared with the reference
setting (the bench's default) by paired differences of PC, SA, Joint and the continuous physics errors (95%
bootstrap intervals, :func:`physalign.bench.compare.paired_difference`). Also printed: model evaluations per
video, seconds per video as measured when sampled (one thread; noisy on a shared machine, evaluations are the
cost that does not drift), and the mean absolute pixel difference (0-255) from the videos of the setting taken as
the ODE's exact solution (``--exact``, e.g. a second-order solver at many steps; default: the most evaluations). Samples are kept in OUT (a rerun only scores them), so
settings can be sampled by several processes, each given some of them, and then scored by one run given all.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from physalign.bench.compare import paired_differences
from physalign.bench.profiles import Profile
from physalign.bench.runner import test_data
from physalign.eval import evaluate_manifest
from physalign.eval.stats import METRICS
from physalign.files import write_text_atomic
from physalign.models.interface import load_model
from physalign.models.sample_folder import sample_to_folder
from physalign.models.sampling import evaluations
from physalign.video import read_video
from physalign.world.dataset import load_manifest


def parse(setting: str) -> tuple[str, int]:
    solver, _, steps = setting.rpartition(":")
    if not solver or not steps.isdigit():
        raise SystemExit(f"a setting is solver:steps, e.g. dpm++2m:12. Got {setting!r}.")
    evaluations(solver, int(steps))  # checks the solver's name
    return solver, int(steps)


def sampled(model, rows: list[dict], folder: Path, setting: str) -> Path:
    """``folder/manifest.jsonl`` of ``setting``'s samples (made unless there), with ``folder/seconds.json``."""
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        solver, steps = parse(setting)
        began = time.perf_counter()
        manifest = sample_to_folder(model, rows, folder, steps=steps, guidance=4.0, seed=1234, solver=solver)
        write_text_atomic(folder / "seconds.json", json.dumps({"seconds": time.perf_counter() - began, "videos": len(rows)}))
    return manifest


def pixel_difference(a: Path, b: Path) -> float:
    """Mean |a - b| over the pixels of the videos two manifests share (0-255)."""
    diffs = []
    for x, y in zip(load_manifest(a / "manifest.jsonl"), load_manifest(b / "manifest.jsonl")):
        diffs.append(np.abs(read_video(a / x["video"]).astype(np.int16) - read_video(b / y["video"]).astype(np.int16)).mean())
    return float(np.mean(diffs))


def markdown(table: dict, reference: str) -> str:
    lines = [f"| setting | evaluations | s/video | pixels from exact | PC | Joint | Δ PC vs {reference} | "
             f"Δ Joint | Δ gravity error | Δ zero-g accel |", "|---|---|---|---|---|---|---|---|---|---|"]
    for setting, row in table.items():
        d = row["vs_reference"]
        fmt = lambda m: f"{d[m]['mean']:+.3f} [{d[m]['lo']:+.3f}, {d[m]['hi']:+.3f}]"
        lines.append(f"| {setting} | {row['evaluations']} | {row['seconds_per_video']:.2f} | {row['pixels_from_finest']:.2f} "
                     f"| {row['pc']:.3f} | {row['joint']:.3f} | {fmt('pc')} | {fmt('joint')} | {fmt('gravity_error')} "
                     f"| {fmt('zero_g_accel')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="solver:steps, e.g. euler:30 dpm++2m:12")
    parser.add_argument("--checkpoint", default="checkpoints/base")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--reference", default="euler:30")
    parser.add_argument("--exact", default="", help="the setting taken as the ODE's solution for the pixel "
                        "differences (default: the one with the most evaluations)")
    parser.add_argument("--score", action="store_true", help="also score and compare (needs the reference's samples)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", default="", help="write the table as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for setting in args.settings:
        parse(setting)
    rows = load_manifest(test_data(Profile("full", test_prompts=args.prompts), args.out / "test"))
    model = load_model(args.checkpoint)
    folders = {s: args.out / s.replace(":", "-") for s in dict.fromkeys([args.reference, *args.settings])}
    for setting, folder in folders.items():
        sampled(model, rows, folder, setting)
    if not args.score:
        return
    results = {s: evaluate_manifest(f / "manifest.jsonl", progress=False) for s, f in folders.items()}
    finest = args.exact or max(folders, key=lambda s: evaluations(*parse(s)))
    if finest not in folders:
        raise SystemExit(f"--exact {finest}: not among the settings {list(folders)}")
    table = {}
    for setting, folder in folders.items():
        timing = json.loads((folder / "seconds.json").read_text())
        table[setting] = {"evaluations": evaluations(*parse(setting)),
                          "seconds_per_video": timing["seconds"] / timing["videos"],
                          "pixels_from_finest": pixel_difference(folder, folders[finest]),
                          **{m: float(np.mean([getattr(r, m) for r in results[setting]])) for m in METRICS},
                          "vs_reference": paired_differences(results[setting], results[args.reference])}
    print(markdown(table, args.reference))
    if args.json:
        record = {"table": table, "reference": args.reference, "finest": finest, "checkpoint": args.checkpoint,
                  "prompts": args.prompts, "guidance": 4.0, "seed": 1234}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(args.json), json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

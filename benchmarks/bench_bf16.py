"""Does training under bf16 autocast give the fp32 result? (issue 18's equivalence check)

    .venv/bin/python benchmarks/bench_bf16.py --out runs/bf16 --data-root data --methods sft,tsa --steps 200 \
        --prompts 200 [--jobs 2] [--json FILE]

Each method is post-trained from the shipped base on the quick profile's data (256 world videos with
counterfactuals, batch 12) three times: fp32 under training seeds 0 and 1, and bf16 (``train.mixed_precision=bf16``)
under seed 0. Seed 0's two runs see the same batches, timesteps and noise, so their difference is the precision's
alone; the two fp32 seeds' difference is the seed-to-seed noise it is measured against. Every model is sampled in
fp32 on ``--prompts`` held-out test prompts (the quick profile's sampler, the same noise for all) and scored by the
evaluator. Reported per method: the training loss of each run (mean of each tenth of the run, and of the last
quarter), and the paired differences bf16 − fp32 (seed 0) and fp32 seed 1 − seed 0 of PC, SA, Joint and the
physics errors, with 95% bootstrap intervals (:func:`physalign.bench.compare.paired_difference`).

The runs go through the bench's job scheduler (``--jobs`` at a time, one thread each) and are kept in OUT: a rerun
skips finished trainings, samplings and scores. On a CPU without bf16 instructions bf16 is emulated and each bf16
step costs ~8x a fp32 one (docs/speed.md); the numbers are the same as on a CPU with them up to the order of
float additions.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from physalign.assets import shipped
from physalign.bench.compare import paired_differences
from physalign.bench.profiles import get_profile
from physalign.bench.runner import Job, post_training_data, sample_command, schedule, score_job, test_data
from physalign.bench.timing import cpu_description
from physalign.files import write_text_atomic

RUNS = (("fp32", 0), ("fp32", 1), ("bf16", 0))


def run_name(method: str, precision: str, seed: int) -> str:
    return f"{method}-{precision}-s{seed}"


def train_command(out: Path, method: str, precision: str, seed: int, data: Path, cache: Path, steps: int) -> list[str]:
    sets = {"model.init": shipped("checkpoints/base"), "data.manifest": data, "data.split": "train",
            "data.cache_dir": cache, "train.steps": steps, "train.batch_size": 12, "train.seed": seed,
            "train.threads": 1, "train.save_every": steps, "train.log_every": 1,
            "train.mixed_precision": "bf16" if precision == "bf16" else "no"}
    return ["train", "--config", str(shipped("configs/methods") / f"{method}.yaml"),
            "--out", str(out / "runs" / run_name(method, precision, seed)),
            *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]


def jobs(out: Path, methods: list[str], steps: int, data: Path, cache: Path, test: Path, profile) -> list[Job]:
    """Train (bf16 runs first: the longest), sample and score every run of every method."""
    order = sorted(((m, p, s) for m in methods for p, s in RUNS), key=lambda r: r[1] != "bf16")
    found = []
    for method, precision, seed in order:
        name = run_name(method, precision, seed)
        model, samples = out / "runs" / name / "model", out / "samples" / name
        if not (model / "physalign_model.json").is_file():
            found.append(Job(f"train {name}", cli=train_command(out, method, precision, seed, data, cache, steps)))
        if not (samples / "manifest.jsonl").is_file():
            found.append(Job(f"sample {name}", cli=sample_command(model, test, samples, profile), after=(f"train {name}",)))
        found.append(score_job(name, samples / "manifest.jsonl", (f"sample {name}",)))
    return found


def losses(run: Path, pieces: int = 10) -> dict:
    """The run's per-step training loss (``log.jsonl``): its mean over each of ``pieces`` equal parts of the run,
    and over the last quarter."""
    loss = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    pieces = min(pieces, len(loss))
    size = len(loss) // pieces
    return {"steps": len(loss), "per_part": [statistics.fmean(loss[i:i + size]) for i in range(0, size * pieces, size)],
            "last_quarter": statistics.fmean(loss[-max(1, len(loss) // 4):])}


def plot_losses(out: Path, methods: list[str], window: int = 10) -> Path:
    """``out/loss.png``: each run's per-step training loss, a running mean over ``window`` steps, one panel per
    method (fp32 seeds 0 and 1, bf16 seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        for (precision, seed), style in zip(RUNS, ("-", ":", "--")):
            run = out / "runs" / run_name(method, precision, seed)
            loss = np.array([json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines() if line.strip()])
            k = min(window, len(loss))
            ax.plot(np.arange(k, len(loss) + 1), np.convolve(loss, np.ones(k) / k, "valid"), style, label=f"{precision} seed {seed}")
        ax.set(title=method, xlabel="step", ylabel=f"loss (mean of {window} steps)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=120)
    plt.close(fig)
    return out / "loss.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="the bench's data root (shared data, caches)")
    parser.add_argument("--methods", default="sft,tsa")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    profile = replace(get_profile("quick"), test_prompts=args.prompts)
    data = post_training_data(profile, args.data_root)
    test = test_data(profile, args.out / "test")
    values = schedule(jobs(args.out, methods, args.steps, data, args.data_root / "cache", test, profile), args.jobs,
                      args.out / "logs", "bf16 against fp32")
    results = {key.removeprefix("score "): v for key, v in values.items() if key.startswith("score ")}
    record = {"cpu": cpu_description(), "steps": args.steps, "batch_size": 12, "prompts": args.prompts,
              "sample_steps": profile.sample_steps, "methods": {}}
    for m in methods:
        names = {f"{p}-s{s}": run_name(m, p, s) for p, s in RUNS}
        record["methods"][m] = {
            "loss": {k: losses(args.out / "runs" / n) for k, n in names.items()},
            "bf16_vs_fp32": paired_differences(results[names["bf16-s0"]], results[names["fp32-s0"]]),
            "seed1_vs_seed0": paired_differences(results[names["fp32-s1"]], results[names["fp32-s0"]]),
        }
        r = record["methods"][m]
        print(m, "last-quarter loss", {k: round(v["last_quarter"], 5) for k, v in r["loss"].items()})
        for metric in ("joint", "gravity_error"):
            print(f"  {metric}: bf16 - fp32 {r['bf16_vs_fp32'][metric]['mean']:+.3f}, "
                  f"seed 1 - seed 0 {r['seed1_vs_seed0'][metric]['mean']:+.3f}")
    print("loss curves:", plot_losses(args.out, methods))
    if args.json:
        write_text_atomic(args.json, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

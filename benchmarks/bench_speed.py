"""Training-step time of each method and sampling time per video of the world model, fp32 against bf16.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_speed.py [--methods sft,tsa,...] [--rounds 4]
        [--batch-size 32] [--videos 16] [--sample-steps 30] [--threads 1] [--out FILE.json]

The baseline the bench's speed work is compared with (issue 18). Training: every (method, precision) pair is
built once from its shipped config (``configs/methods``, from ``checkpoints/base``, on a small post-training set
with counterfactuals made under ``--data-root``), then stepped round-robin, the order rotated each round, so that
drift on a shared CPU falls on all alike; the figure is the median step after one warm-up round, and the ratio is
to SFT's at the same precision (``bf16`` is ``train.mixed_precision=bf16``: the forward under autocast, fp32
master weights). Sampling: ``--videos`` test prompts through the shipped base at ``--sample-steps`` Euler steps
and guidance 4, fp32 and under bf16 autocast alternately, median of ``--repeats``; with the largest pixel
difference between the two precisions' videos (same noise). Timings are ratios measured in one run: keep heavy
jobs off the machine. Prints a markdown table; ``--out`` writes every figure as JSON with the settings.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from physalign.bench.profiles import METHODS, Profile
from physalign.bench.runner import Arm, arm_config, post_training_data, test_data
from physalign.bench.timing import cpu_description, step_times
from physalign.models.interface import load_model
from physalign.models.sampling import sample
from physalign.world.dataset import load_manifest

PRECISIONS = {"fp32": "no", "bf16": "bf16"}


def training(methods: list[str], args) -> dict:
    """{method: {precision: {"median_s", "ratio"}}}, ratio to SFT's step at the same precision."""
    profile = Profile("speed", train_videos=args.train_videos, steps=10, batch_size=args.batch_size)
    manifest = post_training_data(profile, Path(args.data_root))
    configs = {}
    for method in methods:
        for name, mixed in PRECISIONS.items():
            cfg = arm_config(Arm(method, 0), profile, manifest, Path(args.base), Path(args.data_root) / "cache",
                             Path(args.configs))
            cfg.train.mixed_precision = mixed
            configs[f"{method}@{name}"] = cfg
    times = step_times(configs, args.rounds, threads=args.threads)
    out = {}
    for key, t in times.items():
        method, name = key.split("@")
        reference = times.get(f"sft@{name}", t)["median_s"]
        out.setdefault(method, {})[name] = {"median_s": t["median_s"], "ratio": t["median_s"] / reference,
                                            "seconds": t["seconds"]}
    return out


def sampling(args) -> dict:
    """{precision: {"per_video_s", "seconds"}} and the largest pixel difference between precisions."""
    torch.set_num_threads(args.threads)
    rows = load_manifest(test_data(Profile("speed", test_prompts=args.videos), Path(args.data_root) / "speed-test"))
    prompts = [r["prompt"] for r in rows]
    model = load_model(Path(args.base))
    seconds, videos = {name: [] for name in PRECISIONS}, {}
    for _ in range(args.repeats):
        for name in PRECISIONS:
            context = torch.autocast("cpu", dtype=torch.bfloat16) if name == "bf16" else contextlib.nullcontext()
            began = time.perf_counter()
            with context:
                videos[name] = sample(model, prompts, steps=args.sample_steps, guidance=4.0, seed=0, progress=False)
            seconds[name].append(time.perf_counter() - began)
    diff = np.abs(videos["fp32"].astype(np.int16) - videos["bf16"].astype(np.int16))
    return {"per_video": {name: {"per_video_s": statistics.median(s) / len(prompts), "seconds": s}
                          for name, s in seconds.items()},
            "max_pixel_difference": int(diff.max()), "mean_pixel_difference": float(diff.mean())}


def markdown(train: dict, samp: dict, args) -> str:
    lines = [f"Training step, batch {args.batch_size}, {args.threads} thread(s), median of {args.rounds} rounds:", "",
             "| method | fp32 (s) | bf16 (s) | bf16 / fp32 | fp32 / SFT | bf16 / SFT |", "|---|---|---|---|---|---|"]
    for method, t in train.items():
        f, b = t["fp32"], t["bf16"]
        lines.append(f"| {method} | {f['median_s']:.3f} | {b['median_s']:.3f} | {b['median_s'] / f['median_s']:.2f} "
                     f"| {f['ratio']:.2f} | {b['ratio']:.2f} |")
    p = samp["per_video"]
    lines += ["", f"Sampling, {args.videos} videos at {args.sample_steps} Euler steps and guidance 4, median of "
              f"{args.repeats}: fp32 {p['fp32']['per_video_s']:.3f} s/video, bf16 {p['bf16']['per_video_s']:.3f} "
              f"s/video ({p['bf16']['per_video_s'] / p['fp32']['per_video_s']:.2f}); largest pixel difference "
              f"between them {samp['max_pixel_difference']} of 255 (mean {samp['mean_pixel_difference']:.2f})."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-videos", type=int, default=64)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base", default="checkpoints/base")
    parser.add_argument("--configs", default="configs/methods")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    train = training(methods, args)
    samp = sampling(args)
    print(markdown(train, samp, args))
    if args.out:
        record = {"training": train, "sampling": samp, "settings": vars(args), "date": datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
            "machine": platform.machine(), "cpu": cpu_description()}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

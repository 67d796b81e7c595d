"""What glibc's allocator settings cost a bench job: ``physalign`` train and sample commands run as the bench runs
them (one thread each, one at a time), alternately with glibc's defaults (``PHYSALIGN_MALLOC=default``) and with
freed memory reused (:func:`physalign.process.reuse_freed_memory`, physalign's default). (issue 18)

    .venv/bin/python benchmarks/bench_malloc.py --out runs/malloc --rounds 3 [--json FILE]

Each command's wall time, user and system CPU seconds and minor page faults come from the kernel's accounting of
the finished child (``os.wait4``). The jobs: SFT and PhysHPO training (``--steps`` steps of batch 12 on 64 world
videos with counterfactuals, from the shipped base) and sampling ``--videos`` test prompts at 16 Euler steps.
Reported: the median of each over the rounds, and the ratio reuse / default of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from physalign.assets import shipped
from physalign.bench.timing import cpu_description
from physalign.files import write_text_atomic
from physalign.process import HEAP_ENV

MODES = ("default", "reuse")


def run(command: list[str], mode: str, log: Path) -> dict:
    """Run ``command`` under allocator ``mode``; its wall, user, sys seconds and minor faults."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", HEAP_ENV: mode}
    began = time.perf_counter()
    with open(log, "w") as f:
        child = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed under {mode}; log {log}")
    return {"wall_s": time.perf_counter() - began, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "minor_faults": usage.ru_minflt}


def jobs(out: Path, steps: int, videos: int) -> dict[str, list[str]]:
    """The measured commands by name; the data they read is generated first."""
    cli = [sys.executable, "-m", "physalign.cli"]
    for split, n, extra in (("train", 64, ["--counterfactuals"]), ("test", videos, [])):
        if not (out / split / "manifest.jsonl").is_file():
            subprocess.run([*cli, "world", "generate", "--n", str(n), "--split", split, "--seed", "5",
                            "--out", str(out / split), *extra], check=True, capture_output=True)
    base, configs = shipped("checkpoints/base"), shipped("configs/methods")

    def train(method: str) -> list[str]:
        return [*cli, "train", "--config", str(configs / f"{method}.yaml"), "--out", str(out / "run"),
                *(a for kv in (f"model.init={base}", f"data.manifest={out / 'train' / 'manifest.jsonl'}",
                               "data.split=train", f"data.cache_dir={out / 'cache'}", f"train.steps={steps}",
                               "train.batch_size=12", "train.threads=1", "train.save_every=100000")
                  for a in ("--set", kv))]

    sample = [*cli, "sample", "--checkpoint", str(base), "--manifest", str(out / "test" / "manifest.jsonl"),
              "--out", str(out / "samples"), "--steps", "16", "--threads", "1"]
    return {"train sft": train("sft"), "train physhpo": train("physhpo"), f"sample {videos} videos": sample}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="scratch folder (data, caches, runs, logs)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the record here")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    commands = jobs(args.out, args.steps, args.videos)
    for command in commands.values():  # builds the caches (latents, counterfactual latents) outside the timing
        run(command, "reuse", args.out / "warm.log")
        subprocess.run(["rm", "-rf", str(args.out / "run"), str(args.out / "samples")], check=True)
    seen = {name: {mode: [] for mode in MODES} for name in commands}
    for r in range(args.rounds):
        for name, command in commands.items():
            for mode in (MODES if r % 2 == 0 else MODES[::-1]):  # alternate which goes first
                seen[name][mode].append(run(command, mode, args.out / f"{name.replace(' ', '_')}-{mode}.log"))
                subprocess.run(["rm", "-rf", str(args.out / "run"), str(args.out / "samples")], check=True)
                print(name, mode, {k: round(v, 2) for k, v in seen[name][mode][-1].items()}, flush=True)
    record = {"cpu": cpu_description(), "python": platform.python_version(), "rounds": args.rounds,
              "steps": args.steps, "videos": args.videos, "jobs": {}}
    for name, by_mode in seen.items():
        medians = {mode: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for mode, runs in by_mode.items()}
        record["jobs"][name] = {"runs": by_mode, "median": medians,
                                "ratio": {k: medians["reuse"][k] / medians["default"][k] for k in medians["default"]}}
        print(name, {k: round(v, 3) for k, v in record["jobs"][name]["ratio"].items()})
    if args.json:
        write_text_atomic(args.json, json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

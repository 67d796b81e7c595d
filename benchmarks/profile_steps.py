"""Where the world model's time goes: torch.profiler tables of training steps and of sampling.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_steps.py [--methods sft,physhpo] [--batch-size 32]
        [--videos 32] [--sample-steps 4] [--threads 1] [--data-root data] [--out results/profile/profile.json]

For each method (built from ``configs/methods`` on the shipped base, as :mod:`benchmarks.bench_speed` does):
one warm-up step, then ``--steps`` profiled training steps. For sampling: ``--videos`` test prompts through the
shipped base, ``--sample-steps`` guided steps (the two CFG branches in one batched forward) then the VAE decode,
profiled apart so that the per-step and per-video costs can be read separately. Prints, per part, the
operators that take the most self CPU time and the share of the total; ``--out`` writes the tables as JSON,
with the CPU's model and torch's CPU capability (bf16 is fast only where the CPU has bf16 instructions).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from physalign.bench.profiles import Profile
from physalign.bench.runner import Arm, arm_config, post_training_data, test_data
from physalign.models.interface import load_model
from physalign.models.sampling import sample_latents
from physalign.bench.timing import cpu_description
from physalign.train.data import batch_indices
from physalign.train.loop import build_run, train_step
from physalign.world.dataset import load_manifest


def table(prof, seconds: float, rows: int) -> dict:
    """{"seconds", "ops": [{"name", "self_s", "share", "calls"}]} of the ``rows`` costliest operators."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return {"seconds": seconds, "ops": [{"name": e.key, "self_s": e.self_cpu_time_total / 1e6,
                                         "share": e.self_cpu_time_total / total, "calls": e.count}
                                        for e in events[:rows]]}


def profiled(fn, rows: int) -> dict:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        began = time.perf_counter()
        fn()
        seconds = time.perf_counter() - began
    return table(prof, seconds, rows)


def training(method: str, args) -> dict:
    profile_ = Profile("profile", train_videos=args.train_videos, steps=10, batch_size=args.batch_size)
    manifest = post_training_data(profile_, Path(args.data_root))
    cfg = arm_config(Arm(method, 0), profile_, manifest, Path(args.base), Path(args.data_root) / "cache",
                     Path(args.configs))
    state, data = build_run(cfg)

    def steps(first: int, n: int) -> None:
        for r in range(first, first + n):
            train_step(state, data.batch(batch_indices(r, cfg.train.batch_size, len(data), cfg.train.seed)),
                       cfg.optim.grad_clip, r)

    steps(0, 1)  # warm-up
    result = profiled(lambda: steps(1, args.steps), args.rows)
    result["per_step_s"] = result["seconds"] / args.steps
    return result


def sampling(args) -> dict:
    rows = load_manifest(test_data(Profile("profile", test_prompts=args.videos), Path(args.data_root) / "profile-test"))
    prompts = [r["prompt"] for r in rows]
    model = load_model(Path(args.base)).eval()
    noise = torch.randn((len(prompts), *model.latent_shape(model.video_shape)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sample_latents(model, prompts[:2], noise[:2], 1, 4.0)  # warm-up
        latents = {}
        steps = profiled(lambda: latents.setdefault("x0", sample_latents(model, prompts, noise, args.sample_steps, 4.0)),
                         args.rows)
        decode = profiled(lambda: model.decode(latents["x0"]), args.rows)
    steps["per_step_per_video_s"] = steps["seconds"] / args.sample_steps / len(prompts)
    decode["per_video_s"] = decode["seconds"] / len(prompts)
    return {"steps": steps, "decode": decode}


def markdown(name: str, part: dict) -> str:
    lines = [f"### {name}: {part['seconds']:.2f} s", "", "| operator | self s | share | calls |", "|---|---|---|---|"]
    lines += [f"| `{op['name']}` | {op['self_s']:.3f} | {op['share']:.1%} | {op['calls']} |" for op in part["ops"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="sft,physhpo")
    parser.add_argument("--steps", type=int, default=3, help="profiled training steps per method")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-videos", type=int, default=64)
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--sample-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--base", default="checkpoints/base")
    parser.add_argument("--configs", default="configs/methods")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = {"training": {m.strip(): training(m.strip(), args) for m in args.methods.split(",") if m.strip()},
              "sampling": sampling(args)}
    for method, part in record["training"].items():
        print(markdown(f"training {method}, {args.steps} steps of batch {args.batch_size}", part), "\n")
    s = record["sampling"]
    print(markdown(f"sampling, {args.sample_steps} guided steps of {args.videos} videos", s["steps"]), "\n")
    print(markdown(f"decoding {args.videos} videos", s["decode"]))
    if args.out:
        record |= {"settings": vars(args), "cpu": cpu_description(), "torch": torch.__version__,
                   "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()

"""Training-step time of each method as a ratio to SFT's, measured in one process, interleaved.

Timings on a shared CPU drift; measuring every method round-robin within the same minutes and taking
medians makes the ratios comparable even when the absolute seconds are not. Building each run also fills
every cache a method needs (latents, counterfactual latents, teacher features), so the training
subprocesses that follow start from warm caches instead of racing to build them.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time

import torch
from tqdm import tqdm

from physalign.train.config import Config
from physalign.train.data import batch_indices
from physalign.train.engine import LocalEngine, native_bf16
from physalign.train.loop import build_run, train_step

REFERENCE = "sft"


def step_times(configs: dict[str, Config], rounds: int, warmup: int = 1, threads: int = 1) -> dict:
    """{method: {"median_s", "ratio", "seconds": [...]}} with ratio = median / the reference's median
    (``sft``; the first method if sft is not among them). Each round runs one step of every method, in an
    order rotated from round to round."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1. Got {rounds}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        engines = {name: LocalEngine(cfg.train.mixed_precision) for name, cfg in configs.items()}  # its precision
        runs = {name: build_run(cfg, engine=engines[name]) for name, cfg in tqdm(configs.items(), desc="build", unit="method")}
        seconds: dict[str, list[float]] = {name: [] for name in configs}
        names = list(runs)
        for r in tqdm(range(warmup + rounds), desc="step times", unit="round"):
            for name in names[r % len(names):] + names[: r % len(names)]:  # rotated: no method always goes first
                state, data = runs[name]
                cfg = configs[name]
                batch = data.batch(batch_indices(r, cfg.train.batch_size, len(data), cfg.train.seed))
                began = time.perf_counter()
                train_step(state, batch, cfg.optim.grad_clip, r, engines[name])
                if r >= warmup:
                    seconds[name].append(time.perf_counter() - began)
    finally:
        torch.set_num_threads(previous)
    reference = REFERENCE if REFERENCE in seconds else next(iter(seconds))
    ref = statistics.median(seconds[reference])
    return {name: {"median_s": statistics.median(s), "ratio": statistics.median(s) / ref, "seconds": s,
                   "reference": reference} for name, s in seconds.items()}


def warm_caches(configs: dict[str, Config]) -> None:
    """Build each config's run once and drop it: every cache the methods read (latents, counterfactual latents,
    teacher features) is then on disk for the trainings and the step timing. Caches are written atomically, so a
    training that starts meanwhile and builds one too only repeats the work."""
    for cfg in tqdm(configs.values(), desc="caches", unit="method"):
        build_run(cfg, engine=LocalEngine(cfg.train.mixed_precision))


def cpu_description() -> dict:
    """The CPU a timing was measured on: its model name, torch's vector capability and whether oneDNN has bf16
    kernels for it (without them bf16 is emulated: slower than fp32, not faster)."""
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {"model": model or platform.processor(), "cores": os.cpu_count(),
            "capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16()}


"""Time and peak memory of TSA forward + backward: chunked (physalign.objectives.tsa_loss) against the plain
full-matrix version, at VideoREPA's token grid 24x10x15 (N = 3,600) and at 24x20x30 (N = 14,400).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stss.py [--repeats 3] [--chunk 256] [--out FILE.json]

Each (grid, version) runs in a fresh subprocess with one thread. Batch 1, student and teacher with 768 channels
(the teacher's width, the student after its projector), the teacher frozen. Time: median over ``--repeats``
runs after one warm-up. Peak memory: growth of the process's peak resident set (``ru_maxrss``) from just before
the first run to the end, so it counts everything the loss allocates (the STSS, the softmaxes, the gradients)
and nothing of the inputs. Prints a markdown table with the chunked / plain ratios; ``--out`` also writes every
case's figures as JSON, with the settings, the date, the torch version and the thread count.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GRIDS = [(24, 10, 15), (24, 20, 30)]


def plain_tsa(student, teacher, tau=0.1):
    """The full-matrix TSA: both N x N STSS at once (autograd keeps them for backward)."""
    import torch.nn.functional as F

    b, frames = student.shape[:2]
    es = F.normalize(student.flatten(1, 3), dim=-1)  # (B, N, C)
    et = F.normalize(teacher.flatten(1, 3), dim=-1)
    log_s = (es @ es.transpose(1, 2)).unflatten(-1, (frames, -1)).div(tau).log_softmax(-1)  # (B, N, F, H*W)
    log_t = (et @ et.transpose(1, 2)).unflatten(-1, (frames, -1)).div(tau).log_softmax(-1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="sum") / (b * es.shape[1] * frames)


def run_case(version: str, grid: tuple[int, int, int], channels: int, repeats: int, chunk: int) -> dict:
    import torch

    from physalign.objectives import tsa_loss

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    student = torch.randn(1, *grid, channels, generator=g).requires_grad_()
    teacher = torch.randn(1, *grid, channels, generator=g)
    loss_fn = plain_tsa if version == "plain" else lambda s, t: tsa_loss(s, t, chunk_size=chunk)

    def step():
        start = time.perf_counter()
        loss = loss_fn(student, teacher)
        (grad,) = torch.autograd.grad(loss, student)
        return time.perf_counter() - start, loss.item(), grad

    tiny = torch.randn(1, 2, 2, 2, channels, requires_grad=True)
    torch.autograd.grad(loss_fn(tiny, tiny.detach()), tiny)  # load the kernels before measuring
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    _, value, grad = step()  # warm-up
    times = [step()[0] for _ in range(repeats)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return {"version": version, "grid": grid, "n": grid[0] * grid[1] * grid[2], "seconds": statistics.median(times),
            "times": times, "peak_mib": peak / 1024, "loss": value, "grad_norm": grad.norm().item(),
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk", type=int, default=256, help="query rows per chunk of the chunked version")
    p.add_argument("--channels", type=int, default=768)
    p.add_argument("--out", type=Path, help="also write the figures, settings, date and versions to this JSON file")
    p.add_argument("--case", nargs=4, metavar=("VERSION", "F", "H", "W"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        version, *grid = args.case
        print(json.dumps(run_case(version, tuple(map(int, grid)), args.channels, args.repeats, args.chunk)))
        return

    started = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for grid in GRIDS:
        result = {}
        for version in ("plain", "chunked"):
            cmd = [sys.executable, __file__, "--case", version, *map(str, grid), "--repeats", str(args.repeats),
                   "--chunk", str(args.chunk), "--channels", str(args.channels)]
            result[version] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            print(f"# {version} {grid}: {result[version]['seconds']:.2f} s, {result[version]['peak_mib']:.0f} MiB",
                  file=sys.stderr)
        plain, chunked = result["plain"], result["chunked"]
        if abs(plain["loss"] - chunked["loss"]) > 1e-4 * abs(plain["loss"]):
            raise SystemExit(f"chunked and plain disagree at {grid}: {chunked['loss']} vs {plain['loss']}")
        rows.append((grid, plain, chunked))

    print(f"TSA forward + backward, batch 1, C = {args.channels}, 1 thread, chunk {args.chunk} query rows, "
          f"median of {args.repeats} runs\n")
    print("| grid (F×H×W) | N | plain time | chunked time | time ratio | plain peak | chunked peak | memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for grid, plain, chunked in rows:
        print(f"| {'×'.join(map(str, grid))} | {plain['n']:,} | {plain['seconds']:.2f} s | {chunked['seconds']:.2f} s "
              f"| {chunked['seconds'] / plain['seconds']:.2f}× | {plain['peak_mib']:,.0f} MiB "
              f"| {chunked['peak_mib']:,.0f} MiB | {chunked['peak_mib'] / plain['peak_mib']:.3f}× |")
    if args.out:
        import torch

        record = {"settings": {"repeats": args.repeats, "chunk": args.chunk, "channels": args.channels, "batch": 1},
                  "date": started.isoformat(timespec="seconds"), "seconds": round(time.time() - started.timestamp(), 1),
                  "torch": torch.__version__, "threads": rows[0][1]["threads"], "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                  "python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
                  "cases": [{"grid": list(grid), "n": plain["n"], "plain": plain, "chunked": chunked,
                             "time_ratio": chunked["seconds"] / plain["seconds"],
                             "memory_ratio": chunked["peak_mib"] / plain["peak_mib"]} for grid, plain, chunked in rows]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Speed of the evaluator on one core, and (with --rates) how it scores simulator and corrupted videos.

    .venv/bin/python benchmarks/bench_eval.py [--n 300] [--runs 5] [--rates 300] [--min-applied 30]
                                              [--jitter 0.05,0.1,0.2] [--mislabel force:low=normal,...]
                                              [--mislabel-scenes 300] [--out FILE.json]

Scoring from arrays times ``evaluate_video`` on videos in memory; end to end times ``evaluate_manifest``
on the same videos written as lossless mp4 (decode included). Each figure is the median of ``--runs``
runs. Target: >= 200 videos/s for 32 x 32 x 16 videos. With ``--rates``: the simulator's pass rates, each
corruption kind's detection rate where it applies (a kind that applies to fewer than ``--min-applied`` of the
scenes is measured on further random scenes drawn until it does), and SA's detection of the magnitude
counterfactual (the same scene and draws rendered with the other magnitude, scored against the prompt's).
With ``--mislabel``: for each ``FIELD:PROMPTED=SHOWN`` (``physalign.world.dataset.Mislabel``), random scenes of
the prompted slice simulated with the shown value and scored against the prompt, until ``--mislabel-scenes``
of them: how many PC and Joint flag, overall and apart for rolls (a roll on flat ground shows gravity only
through friction) and the rest.
``--out`` also writes what is printed as JSON, with the settings, the date, the torch version and the thread
count.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy is imported
    os.environ[_var] = "1"

import argparse  # noqa: E402
import collections  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from physalign.eval import evaluate_manifest, evaluate_video  # noqa: E402
from physalign.video import write_mp4  # noqa: E402
from physalign.world import spec  # noqa: E402
from physalign.world.corrupt import CORRUPTIONS, applicable, corrupt, jittered  # noqa: E402
from physalign.world.dataset import Mislabel  # noqa: E402
from physalign.world.render import render  # noqa: E402
from physalign.world.scene import MAGNITUDES, sample_scene  # noqa: E402
from physalign.world.sim import simulate  # noqa: E402

TARGET = 200.0  # videos/s


def clips(n: int, seed: int) -> list:
    """(scene, rollout, video, seed) of ``n`` random scenes."""
    rng = random.Random(seed)
    return [clip(sample_scene(rng, held_out=None), seed * 100_000 + i) for i in range(n)]


def clip(scene, seed: int) -> tuple:
    rollout = simulate(scene, seed)
    return scene, rollout, render(scene, rollout), seed


def rare_clips(data: list, min_applied: int, seed: int, tries: int = 20_000) -> list:
    """Further random scenes, drawn until every corruption kind applies to ``min_applied`` of ``data`` and
    them together (``tries`` at most): the kinds that few scenes allow (a frictionless slide needs a block
    sliding on the floor long enough to see it slow) get a rate over enough clips."""
    count = collections.Counter(k for scene, rollout, *_ in data for k in applicable(scene, rollout))
    rng, extra = random.Random(seed), []
    for i in range(tries):
        short = {k for k in CORRUPTIONS if count[k] < min_applied}
        if not short:
            break
        scene = sample_scene(rng, held_out=None)
        rollout = simulate(scene, seed * 100_000 + i)
        kinds = short & set(applicable(scene, rollout))
        if kinds:
            count.update(kinds)
            extra.append((scene, rollout, render(scene, rollout), seed * 100_000 + i))
    return extra


def median_rate(n: int, runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def speed(data: list, runs: int) -> dict:
    n = len(data)
    evaluate_video(data[0][2], data[0][0])  # warm up: the label table is built once
    arrays = median_rate(n, runs, lambda: [evaluate_video(v, s) for s, _, v, _ in data])
    with tempfile.TemporaryDirectory() as tmp:
        lines = []
        for i, (scene, _, video, _) in enumerate(data):
            write_mp4(Path(tmp) / f"videos/{i:05d}.mp4", video, fps=spec.FPS)
            lines.append(json.dumps({"video": f"videos/{i:05d}.mp4", "scene": scene.to_dict()}))
        (Path(tmp) / "manifest.jsonl").write_text("\n".join(lines) + "\n")
        e2e = median_rate(n, runs, lambda: evaluate_manifest(Path(tmp) / "manifest.jsonl", progress=False))
    shape = "x".join(map(str, data[0][2].shape[:3]))
    cpus = sorted(os.sched_getaffinity(0))
    print(f"{n} videos ({shape}), median of {runs} runs, 1 thread, CPUs allowed: {cpus}")
    for name, rate in (("scoring from arrays", arrays), ("end to end (mp4 decode + score)", e2e)):
        print(f"  {name:33s} {rate:7.0f} videos/s  ({1000 / rate:.2f} ms/video)  {'ok' if rate >= TARGET else 'BELOW'} target {TARGET:.0f}")
    return {"videos": n, "shape": shape, "runs": runs, "cpus_allowed": cpus, "target_videos_per_s": TARGET,
            "arrays_videos_per_s": arrays, "end_to_end_videos_per_s": e2e}


def calibration(data: list, extra: list, sigmas: list[float], seed: int, min_applied: int) -> dict:
    """PC pass rates (and the checks that fail) of the simulator's videos re-rendered with per-frame position
    jitter of each std in ``sigmas``, and the corruptions' detection rates on the jittered videos."""
    out = {}
    for sigma in sigmas:
        rng = np.random.default_rng(seed)

        def shake(clips: list) -> list:
            moved = [(scene, jittered(rollout, sigma, rng), s) for scene, rollout, _, s in clips]
            return [(scene, rollout, render(scene, rollout), s) for scene, rollout, s in moved]

        print(f"jitter {sigma} px:")
        out[str(sigma)] = rates(shake(data), shake(extra), min_applied, counterfactuals=False)
    return out


def rates(data: list, extra: list, min_applied: int, counterfactuals: bool = True) -> dict:
    """Pass rates on the simulator's own videos; detection rate of each corruption where it applies (on
    ``data``, and on ``extra`` for the kinds that apply to fewer than ``min_applied`` of ``data``); SA's
    detection of the magnitude counterfactual."""
    clean = collections.Counter()
    failing = collections.Counter()
    applied, flagged_pc, flagged = collections.Counter(), collections.Counter(), collections.Counter()
    other = collections.Counter()
    for i, (scene, rollout, video, seed) in enumerate(data):
        r = evaluate_video(video, scene)
        failing.update(r.failed)
        clean.update(pc=r.pc, sa=r.sa, joint=r.joint)
        for kind in applicable(scene, rollout):
            _flag(video, scene, rollout, kind, i, applied, flagged_pc, flagged)
        if counterfactuals:
            other.update(_other_magnitude(scene, seed))
    rare = {k for k in CORRUPTIONS if applied[k] < min_applied}
    for i, (scene, rollout, video, _) in enumerate(extra, start=len(data)):
        for kind in rare & set(applicable(scene, rollout)):
            _flag(video, scene, rollout, kind, i, applied, flagged_pc, flagged)
    n = len(data)
    print(f"simulator videos (n={n}) passing: " + ", ".join(f"{k.upper()} {clean[k] / n:.3f}" for k in ("pc", "sa", "joint"))
          + (f"; failing checks: {dict(failing.most_common())}" if failing else ""))
    print(f"  {'corruption':20s} {'applies to':>10s} {'flagged (PC)':>13s} {'flagged (Joint)':>16s}")
    kinds = {}
    for kind in CORRUPTIONS:
        a = max(applied[kind], 1)
        print(f"  {kind:20s} {applied[kind]:10d} {flagged_pc[kind] / a:13.3f} {flagged[kind] / a:16.3f}"
              + ("  (with further scenes)" if kind in rare else ""))
        kinds[kind] = {"applies_to": applied[kind], "flagged_pc": flagged_pc[kind] / a, "flagged_joint": flagged[kind] / a,
                       "further_scenes": kind in rare}
    out = {"scenes": n, "simulator": {k: clean[k] / n for k in ("pc", "sa", "joint")},
           "failing_checks": dict(failing), "corruptions": kinds}
    if counterfactuals:
        judged = other["judged"]
        out["counterfactuals"] = {"magnitude": {"scenes": n, "judged": judged, "flagged_sa": other["sa"] / max(judged, 1),
                                                "flagged_joint": other["joint"] / max(judged, 1)}}
        print(f"  other magnitude: judged on {judged} of {n}, flagged by SA {other['sa'] / max(judged, 1):.3f}")
    return out


def _flag(video, scene, rollout, kind: str, i: int, applied, flagged_pc, flagged) -> None:
    bad = evaluate_video(corrupt(video, scene, rollout, kind, random.Random(i)), scene)
    applied[kind] += 1
    flagged_pc[kind] += not bad.pc
    flagged[kind] += not bad.joint


def _other_magnitude(scene, seed: int) -> dict:
    """The same scene and draws with the other magnitude, scored against ``scene``: judged by SA's magnitude
    check or not, flagged by SA, flagged by Joint."""
    shown = replace(scene, magnitude=next(m for m in MAGNITUDES if m != scene.magnitude))
    _, _, video, _ = clip(shown, seed)
    r = evaluate_video(video, scene)
    check = next(c for c in r.checks if c.name == "magnitude")
    judged = check.passed is not None
    return {"judged": judged, "sa": judged and not r.sa, "joint": judged and not r.joint}


def mislabelled(text: str, n: int, seed: int) -> dict:
    """Flag rates of ``n`` random scenes of a mislabel's prompted slice, rendered with the shown value and scored
    against the prompt: overall, for rolls and for the rest."""
    wrong, rng = Mislabel.parse(text), random.Random(seed)
    count = collections.Counter()
    i = 0
    while count["all"] < n:
        i += 1
        scene = sample_scene(rng, held_out=None)
        shown = wrong.shown_scene(scene)
        if shown is None:
            continue
        r = evaluate_video(clip(shown, seed * 100_000 + i)[2], scene)
        for part in ("all", "rolled" if scene.kinematics.startswith("rolled") else "not_rolled"):
            count.update({part: 1, f"{part} pc": not r.pc, f"{part} joint": not r.joint})
    out = {}
    for part in ("all", "rolled", "not_rolled"):
        n_part = max(count[part], 1)
        out[part] = {"scenes": count[part], "flagged_pc": count[f"{part} pc"] / n_part,
                     "flagged_joint": count[f"{part} joint"] / n_part}
    print(f"  mislabel {text}: " + ", ".join(f"{p} {c['flagged_pc']:.3f} of {c['scenes']}" for p, c in out.items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="videos to time")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rates", type=int, default=0, help="also measure pass / detection rates on this many scenes")
    ap.add_argument("--min-applied", type=int, default=30, help="with --rates: draw further scenes for the "
                    "corruption kinds that apply to fewer of them")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jitter", type=str, default="", help="with --rates: also with these per-frame position "
                    "jitters (px, comma-separated, e.g. 0.05,0.1,0.2)")
    ap.add_argument("--mislabel", type=str, default="", help="with --rates: also these mislabels "
                    "(FIELD:PROMPTED=SHOWN, comma-separated, e.g. force:low=normal,force:normal=low)")
    ap.add_argument("--mislabel-scenes", type=int, default=300, help="scenes of each mislabelled slice")
    ap.add_argument("--out", type=Path, help="also write the figures, settings, date and versions to this JSON file")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    started = datetime.datetime.now(datetime.timezone.utc)
    record = {"settings": {"n": args.n, "runs": args.runs, "rates": args.rates, "min_applied": args.min_applied,
                           "seed": args.seed, "jitter": args.jitter, "mislabel": args.mislabel,
                           "mislabel_scenes": args.mislabel_scenes}}
    record["speed"] = speed(clips(args.n, args.seed), args.runs)
    if args.rates:
        data = clips(args.rates, args.seed + 1)
        extra = rare_clips(data, args.min_applied, args.seed + 3)
        record["rates"] = rates(data, extra, args.min_applied)
        if args.mislabel:
            record["rates"]["mislabels"] = {text: mislabelled(text, args.mislabel_scenes, args.seed + 4 + k)
                                            for k, text in enumerate(args.mislabel.split(","))}
        if args.jitter:
            sigmas = [float(s) for s in args.jitter.split(",")]
            record["jitter"] = calibration(data, extra, sigmas, args.seed + 2, args.min_applied)
    if args.out:
        import torch

        record |= {"date": started.isoformat(timespec="seconds"), "seconds": round(time.time() - started.timestamp(), 1),
                   "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
                   "machine": platform.machine(), "cpu_count": os.cpu_count()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Fill the result tables of docs/*.md and README.md from the recorded runs under results/.

A doc marks a generated table with a block:

    <!-- results: TABLE_NAME -->
    ...generated markdown...
    <!-- /results -->

    python scripts/results_tables.py            # rewrite every block from results/ (changed files only, atomically)
    python scripts/results_tables.py --check    # change nothing; exit 1 listing each block that differs
    python scripts/results_tables.py --print stss   # one table to stdout
    python scripts/results_tables.py --list

``TABLES`` maps each TABLE_NAME to a function that reads ``results/<name>/...`` and returns the block's
markdown. A block with an unknown name, or whose results files are missing, is reported (and left as it
is); either makes the script exit 1. Blocks inside fenced code are not blocks. Each ``results/<name>/``
holds the tools' JSON output and ``command.txt`` with the command(s), the date and machine notes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = re.compile(r"^<!-- results: (\S+) -->\s*$")
END = re.compile(r"^<!-- /results -->\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


class MissingResults(Exception):
    """A table's results file does not exist."""


# ------------------------------------------------------------------------------------------- formatting


def load(results: Path, relative: str) -> dict:
    path = results / relative
    if not path.is_file():
        raise MissingResults(f"results/{relative}")
    return json.loads(path.read_text())


def num(x, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; '–' for a missing value (null / NaN in the JSON)."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def signed(x) -> str:
    """+0.042 / −0.005 (a true minus sign, as the docs write it)."""
    return "–" if x is None else f"{x:+.3f}".replace("-", "−")


def ci(m: dict) -> str:
    """0.292 [0.198, 0.385] for {"mean", "lo", "hi"}."""
    return num(m["mean"]) if m["mean"] is None else f"{num(m['mean'])} [{num(m['lo'])}, {num(m['hi'])}]"


def signed_ci(d: dict) -> str:
    return "–" if d["mean"] is None else f"{signed(d['mean'])} [{signed(d['lo'])}, {signed(d['hi'])}]"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def source(*names: str) -> str:
    folders = ", ".join(f"`results/{n}/`" for n in names)
    return f"Source: {folders} (command{'s' if len(names) > 1 else ''} in command.txt)"


def with_source(md: str, *names: str) -> str:
    return md + "\n\n" + source(*names)


# ----------------------------------------------------------------------------------------------- tables

CORRUPTION_NAMES = {"teleport": "teleport", "freeze_midair": "freeze in mid-air", "vanish": "vanish",
                    "color_change": "colour change", "pass_through_floor": "pass through the floor",
                    "gain_energy": "energy gain on a bounce", "gravity_upward": "upward gravity",
                    "wrong_gravity": "wrong gravity", "size_change": "size change",
                    "weak_gravity": "weak gravity (0.55 g)", "early_bounce": "bounce a pixel above the floor",
                    "wrong_restitution": "another material's rebound", "frictionless_slide": "frictionless slide",
                    "slow_motion": "slow motion (0.5×)"}
FORCE_NAMES = {"normal": "normal", "low": "low", "none": "zero"}


def mislabel_name(text: str) -> str:
    """'force:low=normal' -> 'low gravity shown at normal' (other fields as written)."""
    field, rest = text.split(":")
    prompted, shown = rest.split("=")
    if field != "force":
        return f"{field} {prompted} shown as {shown}"
    return f"{FORCE_NAMES[prompted]} gravity shown at {FORCE_NAMES[shown]}"


def eval_rates(results: Path) -> str:
    """The simulator's pass rates and each corruption kind's detection rate (bench_eval.py --rates)."""
    r = load(results, "eval_rates/eval_rates.json")["rates"]
    sim = r["simulator"]
    rows = [["simulator", str(r["scenes"]), " / ".join(num(sim[m]) for m in ("pc", "sa", "joint")), "", "", ""]]
    for kind, c in r["corruptions"].items():
        scenes = f"{c['applies_to']}{' *' if c.get('further_scenes') else ''}"
        rows.append([CORRUPTION_NAMES.get(kind, kind), scenes, "", num(c["flagged_pc"]), "", num(c["flagged_joint"])])
    for axis, c in r.get("counterfactuals", {}).items():
        rows.append([f"other {axis}", f"{c['judged']} of {c['scenes']}", "", "", num(c["flagged_sa"]), num(c["flagged_joint"])])
    for text, parts in r.get("mislabels", {}).items():
        for part, label in (("all", ""), ("not_rolled", ": throws, drops, launches, ramps"), ("rolled", ": rolls and slides")):
            c = parts[part]
            rows.append([mislabel_name(text) + label, str(c["scenes"]), "", num(c["flagged_pc"]), "", num(c["flagged_joint"])])
    md = table(["videos", "scenes", "passing PC / SA / Joint", "flagged by PC", "flagged by SA", "flagged by Joint"], rows)
    note = ("\n\n\\* on further random scenes, drawn until the kind applied to --min-applied of them"
            if any(c.get("further_scenes") for c in r["corruptions"].values()) else "")
    return with_source(md + note, "eval_rates")


def eval_jitter(results: Path) -> str:
    """The calibration: simulator videos re-rendered with per-frame position jitter (bench_eval.py --jitter)."""
    data = load(results, "eval_rates/eval_rates.json")
    rows = []
    for sigma, r in data["jitter"].items():
        kinds = r["corruptions"]
        worst = min(kinds, key=lambda k: kinds[k]["flagged_pc"])
        failing = ", ".join(f"{k} {n}" for k, n in sorted(r["failing_checks"].items(), key=lambda kv: -kv[1])) or "none"
        rows.append([f"{float(sigma):.2f}", str(r["scenes"]), num(r["simulator"]["pc"]), failing,
                     f"{num(kinds[worst]['flagged_pc'])} ({CORRUPTION_NAMES.get(worst, worst)})"])
    md = table(["jitter (px)", "scenes", "simulator PC", "failing checks (videos)", "least-flagged corruption (PC)"], rows)
    return with_source(md, "eval_rates")


def parity_sft(results: Path) -> str:
    """SFT against the base under the old and the new post-training protocol (bench.json of each)."""
    rows = []
    for name, label in (("old", "old: constant lr, no EMA"), ("new", "new: warm-up, cosine, EMA 0.99 (warm-up)")):
        data = load(results, f"parity_sft/{name}_bench.json")
        joint = data["vs_base"]["sft"]["joint"]
        phys = data["physics_vs_base"]["sft"]
        ratio = data["summaries"]["sft"]["physics_errors"]["gravity_ratio"]["median"]
        rows.append([label, signed_ci(joint), signed_ci(phys["gravity_error"]), signed_ci(phys["fit_residual"]), num(ratio, 2)])
    base = load(results, "parity_sft/new_bench.json")["summaries"]["base"]["physics_errors"]["gravity_ratio"]["median"]
    md = table(["protocol", "Δ Joint vs base", "Δ gravity error vs base", "Δ fit residual (px) vs base",
                f"SFT gravity ratio (median; base {num(base, 2)})"], rows)
    return with_source(md, "parity_sft")


def eval_speed(results: Path) -> str:
    """Single-thread evaluator speed (bench_eval.py)."""
    data = load(results, "eval_rates/eval_rates.json")
    s = data["speed"]
    rows = []
    for name, key in (("scoring from arrays", "arrays_videos_per_s"), ("end to end (lossless mp4 decode + score)", "end_to_end_videos_per_s")):
        rate = s[key]
        met = "met" if rate >= s["target_videos_per_s"] else "not met"
        rows.append([name, f"{rate:.0f}", f"{1000 / rate:.2f}", f"≥ {s['target_videos_per_s']:.0f}: {met}"])
    md = table(["measure", "videos/s", "ms/video", "target"], rows)
    note = (f"{s['videos']} videos of {s['shape'].replace('x', '×')}, median of {s['runs']} runs, "
            f"{data.get('threads', 1)} thread, {data['date'][:10]}.")
    return md + "\n\n" + note + "\n" + source("eval_rates")


def base_scores(results: Path) -> str:
    """The shipped base model on the demo's test prompts against the simulator (physalign demo)."""
    sim = load(results, "base_v4/simulator.json")["summary"]
    base = load(results, "base_v4/base_model.json")["summary"]
    second = load(results, "base_v4_seed4321/base_model.json")["summary"]
    metrics = ("pc", "sa", "joint")
    ind, ood = base["split"]["in-distribution"], base["split"]["ood"]
    rows = [["simulator", *(num(sim["overall"][m]["mean"]) for m in metrics)],
            ["base v4 (shipped)", *(ci(base["overall"][m]) for m in metrics)],
            [f"base v4, in distribution ({ind['n']}) / OOD ({ood['n']})",
             *(f"{num(ind[m]['mean'])} / {num(ood[m]['mean'])}" for m in metrics)],
            [f"second test set (`--seed 4321`, {second['n']} prompts): base v4", *(ci(second["overall"][m]) for m in metrics)]]
    return with_source(table(["videos", "PC", "SA", "Joint"], rows), "base_v4", "base_v4_seed4321")


MODEL_NAMES = {"base": "base", "sft": "SFT", "dfm": "ΔFM", "repa": "REPA", "trd": "TRD", "tsa": "TSA", "mtsa": "M-TSA",
               "direct": "DiReCT", "diffphy": "DiffPhy", "physhpo": "PhysHPO", "physhpo-anchored": "PhysHPO anchored",
               "broken": "broken (positive control's start)"}


def bench_table(results: Path, name: str) -> str:
    """Per model of a ``physalign bench`` run: PC, SA, Joint [CI], paired Δ Joint vs SFT and vs the base,
    Joint OOD, step time / SFT."""
    b = load(results, f"{name}/bench.json")
    rows = []
    for model, s in b["summaries"].items():
        if model == "simulator":
            continue
        vs_sft, vs_base = b["vs_sft"].get(model), b["vs_base"].get(model)
        ratio = b["step_time"].get(model, {}).get("ratio")
        rows.append([MODEL_NAMES.get(model, model), num(s["overall"]["pc"]["mean"]), num(s["overall"]["sa"]["mean"]),
                     ci(s["overall"]["joint"]), signed_ci(vs_sft["joint"]) if vs_sft else "",
                     signed_ci(vs_base["joint"]) if vs_base else "", num(s["split"]["ood"]["joint"]["mean"]),
                     num(ratio, 2) if ratio is not None else ""])
    md = table(["model", "PC", "SA", "Joint", "Δ Joint vs SFT", "Δ Joint vs base", "Joint OOD", "step time / SFT"], rows)
    return with_source(md, name)


def bench_quick(results: Path) -> str:
    return bench_table(results, "bench_quick")


def bench_control_verdicts(results: Path) -> str:
    """The controls of ``physalign bench --profile control``: each expected change, its paired Δ and whether the
    instrument saw it; then the broken model against the base (that the break took)."""
    b = load(results, "bench_control/bench.json")
    rows = []
    for arm, c in b["controls"].items():
        for metric, k in c["checks"].items():
            rows.append([arm, c["slice"] or "all test prompts", k["expected"], str(k["n"]), signed_ci(k),
                         "seen" if k["seen"] else "NOT seen"])
    md = table(["control", "videos", "expected", "pairs", "Δ [95% CI]", "verdict"], rows)
    if "broken" in b["vs_base"]:
        d, e = b["vs_base"]["broken"], b["physics_vs_base"]["broken"]
        md += ("\n\nThe broken model against the base, all test prompts: Δ PC " + signed_ci(d["pc"])
               + ", Δ zero-gravity acceleration " + signed_ci(e["zero_g_accel"]) + ".")
    return with_source(md, "bench_control")


def speed_baseline(results: Path) -> str:
    """Training-step time of each method (fp32) and sampling time per video, fp32 against bf16 (bench_speed.py).
    The record's bf16 training column is not shown: the step timings of that run ran every config in fp32
    (fixed since; docs/speed.md)."""
    d = load(results, "speed_baseline/speed.json")
    rows = [[MODEL_NAMES.get(method, method), num(t["fp32"]["median_s"], 2), num(t["fp32"]["ratio"], 2), ""]
            for method, t in d["training"].items()]
    p, s = d["sampling"]["per_video"], d["settings"]
    rows.append([f"sampling, per video ({s['sample_steps']} Euler steps)", num(p["fp32"]["per_video_s"], 2), "",
                 f"{num(p['bf16']['per_video_s'], 2)} ({num(p['bf16']['per_video_s'] / p['fp32']['per_video_s'], 2)}×)"])
    md = table(["step", "fp32 (s)", "fp32 / SFT", "bf16 (s)"], rows)
    note = (f"Training at batch {s['batch_size']}, median of {s['rounds']} interleaved rounds; sampling {s['videos']} "
            f"videos, median of {s['repeats']}; {s['threads']} thread, {d['date'][:10]}. Largest pixel difference "
            f"between the fp32 and bf16 samples: {d['sampling']['max_pixel_difference']} of 255 (mean "
            f"{d['sampling']['mean_pixel_difference']:.2f}).")
    return md + "\n\n" + note + "\n" + source("speed_baseline")


def speed_bf16(results: Path) -> str:
    """fp32 against bf16, each step under its own precision, and sampling (bench_speed.py, fixed timings)."""
    d = load(results, "speed_bf16/speed.json")
    rows = [[MODEL_NAMES.get(m, m), num(t["fp32"]["median_s"], 1), num(t["bf16"]["median_s"], 1),
             num(t["bf16"]["median_s"] / t["fp32"]["median_s"], 2)] for m, t in d["training"].items()]
    p, s = d["sampling"]["per_video"], d["settings"]
    rows.append([f"sampling, per video ({s['sample_steps']} Euler steps)", num(p["fp32"]["per_video_s"], 1),
                 num(p["bf16"]["per_video_s"], 1), num(p["bf16"]["per_video_s"] / p["fp32"]["per_video_s"], 2)])
    md = table(["step", "fp32 (s)", "bf16 (s)", "bf16 / fp32"], rows)
    note = (f"Batch {s['batch_size']}, median of {s['rounds']} interleaved rounds; sampling {s['videos']} videos; "
            f"{s['threads']} thread, {d['date'][:10]}, a loaded machine (the seconds are not today's quiet ones, the "
            "ratios are within one run; command.txt).")
    return md + "\n\n" + note + "\n" + source("speed_bf16")


def quick_schedule(results: Path) -> str:
    """The quick bench's wall time and CPU use under the job scheduler (/usr/bin/time -v)."""
    d = load(results, "quick_schedule/time.json")
    m, sec = divmod(round(d["wall_s"]), 60)
    md = table(["run", "wall", "CPU (of 200%)", "CPU-seconds", "peak RSS"],
               [[f"`{d['command'].split('--out')[0].strip()}` at {d['commit']}", f"{m} min {sec} s", f"{d['cpu_percent']}%",
                 num(d["user_s"] + d["system_s"], 0), f"{d['max_rss_kb'] / 2**20:.2f} GiB"]])
    return md + "\n\n" + f"{d['machine']}, {d['date']}.\n" + source("quick_schedule")


def malloc(results: Path) -> str:
    """glibc's allocator defaults against reusing freed memory, per bench job (bench_malloc.py)."""
    d = load(results, "malloc/malloc.json")
    rows = []
    for name, j in d["jobs"].items():
        a, b = j["median"]["default"], j["median"]["reuse"]
        rows.append([name, num(a["user_s"] + a["sys_s"], 1), num(b["user_s"] + b["sys_s"], 1),
                     num((b["user_s"] + b["sys_s"]) / (a["user_s"] + a["sys_s"]), 2), f"{num(a['sys_s'], 2)} → {num(b['sys_s'], 2)}",
                     f"{a['minor_faults'] / 1e6:.2f} M → {b['minor_faults'] / 1e6:.2f} M", num(j["ratio"]["wall_s"], 2)])
    md = table(["job", "CPU s, default", "CPU s, reuse", "reuse / default", "kernel s", "page faults", "wall, reuse / default"], rows)
    note = (f"Medians of {d['rounds']} rounds each, one thread, the bench's commands one at a time; {d['cpu']['model']} "
            f"({d['cpu']['capability']}); CPU s = user + kernel. The other core was not idle for the whole run: the CPU "
            "seconds and faults are the measure, the wall ratio is noisy.")
    return md + "\n\n" + note + "\n" + source("malloc")


def bf16_equivalence(results: Path) -> str:
    """bf16 against fp32 training, against the seed-to-seed spread (bench_bf16.py)."""
    d = load(results, "bf16_equivalence/bf16.json")
    rows = []
    for method, m in d["methods"].items():
        loss = {k: v["last_quarter"] for k, v in m["loss"].items()}
        rows.append([MODEL_NAMES.get(method, method), "training loss, last quarter (fp32 s0 / s1 / bf16 s0)",
                     f"{loss['fp32-s0']:.4f} / {loss['fp32-s1']:.4f} / {loss['bf16-s0']:.4f}",
                     *(f"{x:+.4f}".replace("-", "−") for x in (loss["bf16-s0"] - loss["fp32-s0"], loss["fp32-s1"] - loss["fp32-s0"]))])
        for metric, label in (("pc", "PC"), ("joint", "Joint"), ("gravity_error", "gravity error"),
                              ("fit_residual", "fit residual (px)")):
            rows.append([MODEL_NAMES.get(method, method), f"{label}, paired over {m['bf16_vs_fp32'][metric]['n']} videos", "",
                         signed_ci(m["bf16_vs_fp32"][metric]), signed_ci(m["seed1_vs_seed0"][metric])])
    md = table(["method", "measure", "values", "bf16 − fp32 (seed 0)", "fp32 seed 1 − seed 0"], rows)
    note = (f"{d['steps']} steps of batch {d['batch_size']} from the shipped base on the quick profile's data; every model "
            f"sampled in fp32 on {d['prompts']} test prompts ({d['sample_steps']} Euler steps, the same noise); 95% "
            f"bootstrap intervals. {d['cpu']['model']} ({d['cpu']['capability']}, bf16 instructions: "
            f"{'yes' if d['cpu']['native_bf16'] else 'no, emulated'}).")
    return md + "\n\n" + note + "\n" + source("bf16_equivalence")


PROFILE_OPS = 6


def profile_steps(results: Path) -> str:
    """Where the time of a training step, a guided sampling step and the decoding goes (profile_steps.py)."""
    d = load(results, "profile_steps/profile.json")
    s = d["settings"]
    parts = {f"training step, {MODEL_NAMES.get(m, m)} (batch {s['batch_size']})": (p, p["per_step_s"])
             for m, p in d["training"].items()}
    samp = d["sampling"]
    parts[f"guided sampling step, per video ({s['videos']} videos)"] = (samp["steps"], samp["steps"]["per_step_per_video_s"])
    parts["decoding, per video"] = (samp["decode"], samp["decode"]["per_video_s"])
    rows = [[name, num(seconds, 3), ", ".join(f"{op['name'].removeprefix('aten::')} {op['share']:.0%}"
                                              for op in part["ops"][:PROFILE_OPS])]
            for name, (part, seconds) in parts.items()]
    md = table(["part", "s (profiled)", f"top {PROFILE_OPS} operators, share of self CPU time"], rows)
    cpu = d["cpu"]
    note = (f"{s['threads']} thread, torch {d['torch']}, {cpu['model']} ({cpu['capability']}, bf16 instructions: "
            f"{'yes' if cpu['native_bf16'] else 'no'}), {d['date'][:10]}; seconds under the profiler (slower than bare).")
    return md + "\n\n" + note + "\n" + source("profile_steps")


def solver(results: Path) -> str:
    """Sampling solvers against the bench's sampler and against an accurate solution, paired on the same prompts
    and noise (bench_solver.py)."""
    d, exact = load(results, "solver/solver.json"), load(results, "solver/solver_vs_exact.json")
    ref, ex = d["reference"], exact["reference"]

    def flips(delta: dict) -> str:  # d in {-1, 0, 1}: the share of videos whose outcome changed, E[d^2]
        n = delta["n"]
        return "–" if not n or delta["sd"] is None else num(delta["sd"] ** 2 * (n - 1) / n + delta["mean"] ** 2, 3)

    rows = []
    for setting, r in d["table"].items():
        e = exact["table"].get(setting, {}).get("vs_reference")
        rows.append([setting, str(r["evaluations"]), num(r["pixels_from_finest"], 2), num(r["pc"]), num(r["joint"]),
                     signed_ci(r["vs_reference"]["pc"]), signed_ci(r["vs_reference"]["joint"]),
                     flips(e["pc"]) if e else "0", num(e["gravity_error"]["sd"], 2) if e else "0"])
    md = table(["solver:steps", "evaluations", f"pixels from {ex}", "PC", "Joint", f"Δ PC vs {ref}",
                f"Δ Joint vs {ref}", f"PC changed vs {ex}", f"sd Δ gravity error vs {ex}"], rows)
    note = (f"{d['prompts']} test prompts of the bench's test set, one video each, the same noise for every setting "
            f"(seed {d['seed']}), guidance {d['guidance']}, model {d['checkpoint']}. Δ: paired, 95% bootstrap intervals; "
            f"pixels: mean absolute difference (0-255) from {ex}'s videos; PC changed: the share of videos whose PC "
            f"verdict differs from {ex}'s; sd Δ gravity error: the spread of the per-video change of the fitted "
            "gravity error.")
    return md + "\n\n" + note + "\n" + source("solver")


def bench_control(results: Path) -> str:
    return bench_table(results, "bench_control")


MAKE_DEMO_RUNS = {"make_demo": "the first record, a loaded machine",  # folder -> what changed since the row above
                  "make_demo_schedule": "jobs scheduled over both cores",
                  "make_demo_malloc": "freed memory reused, lighter CLI imports, the last run sampled in shards",
                  "make_demo_workers": "train / sample jobs inside the bench's worker processes, no test extras",
                  "make_demo_onestage": "caches, step timing and runs in one schedule; every sampling in shards"}


def _same_scores(results: Path, a: str, b: str) -> bool | None:
    """Whether two recorded benches' summaries (PC, SA, Joint of every model) are equal; None without both."""
    if not all((results / f / "bench.json").is_file() for f in (a, b)):
        return None
    summaries = [load(results, f"{f}/bench.json")["summaries"] for f in (a, b)]
    means = [{m: {k: v["overall"][k]["mean"] for k in ("pc", "sa", "joint")} for m, v in s.items()} for s in summaries]
    return means[0] == means[1]


def make_demo(results: Path) -> str:
    """`make demo`'s wall time on a fresh clone (/usr/bin/time -v), one row per recorded change, each row's scores
    compared with the row above's (bench.json) where both were kept."""
    rows, runs = [], [f for f in MAKE_DEMO_RUNS if (results / f / "time.json").is_file()]
    for i, folder in enumerate(runs):
        t = load(results, f"{folder}/time.json")
        minutes, seconds = divmod(round(t["wall_seconds"]), 60)
        same = _same_scores(results, runs[i - 1], folder) if i else None
        scores = ("equal results/bench_quick's" if t["scores_equal_results_bench_quick"] else "new: evaluator v2") \
            if same is None else ("equal the row above's" if same else "differ from the row above's")
        rows.append([f"{minutes} min {seconds:02d} s", f"{t['cpu_percent']}%", f"{t['max_rss_kb'] / 2**20:.2f} GiB", scores,
                     MAKE_DEMO_RUNS[folder], t["date"], t["commit"]])
    md = table(["wall time", "CPU (of 200%)", "peak RSS", "scores", "change", "date", "commit"], rows)
    return with_source(md, *runs)


def stss(results: Path) -> str:
    """TSA forward + backward, chunked vs plain (bench_stss.py), the table the script prints."""
    rows = []
    for c in load(results, "stss/stss.json")["cases"]:
        p, k = c["plain"], c["chunked"]
        rows.append(["×".join(map(str, c["grid"])), f"{c['n']:,}", f"{p['seconds']:.2f} s", f"{k['seconds']:.2f} s",
                     f"{c['time_ratio']:.2f}×", f"{p['peak_mib']:,.0f} MiB", f"{k['peak_mib']:,.0f} MiB",
                     f"{c['memory_ratio']:.3f}×"])
    md = table(["grid (F×H×W)", "N", "plain time", "chunked time", "time ratio", "plain peak", "chunked peak",
                "memory ratio"], rows)
    return with_source(md, "stss")


DEGRADATIONS = {"noise": "noise", "blur": "blur", "static": "static", "dropped_frames": "dropped frames",
                "wrong_caption": "wrong caption", "physics": "physics", "none": "none (clean)"}
SELECTIONS = (("no_judge", "light criteria only (no judge)"), ("judge", "with the judge"))  # results/select_pool400/<folder>.json


def select(results: Path) -> str:
    """Precision / recall and kept share per degradation, without and with the judge (physalign select)."""
    rows = []
    for folder, label in SELECTIONS:
        s = load(results, f"select_pool400/{folder}.json")
        shares = [num(s["by_degradation"][d]["kept_share"], 2) if d in s["by_degradation"] else "–" for d in DEGRADATIONS]
        rows.append([label, num(s["precision"]), num(s["recall"]), *shares])
    md = table(["selection (keep 0.5)", "precision", "recall", *(f"kept: {d}" for d in DEGRADATIONS.values())], rows)
    return with_source(md, "select_pool400")


def select_left_out(results: Path) -> str:
    """Precision with each criterion left out in turn, without and with the judge."""
    runs = [load(results, f"select_pool400/{folder}.json")["left_out"] for folder, _ in SELECTIONS]
    names = list(dict.fromkeys(c for run in reversed(runs) for c in run))  # the judged run has every criterion
    rows = [["nothing (all criteria)" if c == "none" else c, *(num(run[c]["precision"]) if c in run else "–" for run in runs)]
            for c in names]
    return with_source(table(["left out", "precision, no judge", "precision, with the judge"], rows), "select_pool400")


def teacher_reconstruction(results: Path) -> str:
    """Masked reconstruction error on the held-out videos (checkpoints/teacher/teacher.json)."""
    r = load(results, "teacher/teacher.json")["evaluation"]["reconstruction"]
    labels = {"teacher": "teacher", "dataset_mean": "mean of the token's position over the val videos (an oracle baseline)",
              "visible_mean": "mean of the same video's visible tokens"}
    rows = [[label, f"{r['all'][k]:.4f}", f"{r['object_tokens'][k]:.3f}"] for k, label in labels.items()]
    return with_source(table(["predictor", "all hidden tokens", "object tokens"], rows), "teacher")


PROBE_ATTRIBUTES = {"kinematics": ("kinematics", 6), "force": ("gravity", 3), "material": ("material", 4)}  # world classes


def teacher_probes(results: Path) -> str:
    """Linear-probe accuracy of the scene's physics attributes; random init is the best of its layers."""
    probe = load(results, "teacher/teacher.json")["evaluation"]["probe"]
    layers = sorted(k for k in next(iter(probe.values())) if k.startswith("teacher/"))
    rows = []
    for key, p in probe.items():
        name, classes = PROBE_ATTRIBUTES.get(key, (key, "?"))
        random_init = max(v[0] for k, v in p.items() if k.startswith("random_init/"))
        rows.append([f"{name} ({classes}, {p['majority']:.2f})", num(p["pixels"][0]), num(random_init),
                     *(num(p[layer][0]) for layer in layers)])
    heads = [f"teacher layer {layer.split('layer')[1]}" for layer in layers]
    md = table(["attribute (classes, majority share)", "raw pixels", "random init", *heads], rows)
    return with_source(md, "teacher")


def judge_heldout(results: Path) -> str:
    """Balanced held-out accuracy per question family and video condition (checkpoints/judge/judge.json)."""
    h = load(results, "judge/judge.json")["heldout"]
    rows = []
    for family, label in (("fact", "facts"), ("plausibility", "plausibility"), ("prompt", "prompt match")):
        rows.append([f"{label} ({h['rendered'][family]['n']:,})", *(num(h[c][family]["balanced_accuracy"]) for c in h)])
    names = {"rendered": "rendered", "round_trip": "round trip"}
    heads = [names.get(c, c.replace("blurred_sigma_", "blurred σ ")) for c in h]
    return with_source(table(["question", *heads], rows), "judge")


TABLES = {"eval_rates": eval_rates, "eval_jitter": eval_jitter, "parity_sft": parity_sft, "eval_speed": eval_speed, "base_scores": base_scores, "bench_quick": bench_quick, "make_demo": make_demo,
          "bench_control": bench_control, "bench_control_verdicts": bench_control_verdicts,
          "speed_baseline": speed_baseline, "profile_steps": profile_steps, "quick_schedule": quick_schedule, "malloc": malloc, "bf16_equivalence": bf16_equivalence, "speed_bf16": speed_bf16, "solver": solver,
          "stss": stss, "select": select, "select_left_out": select_left_out,
          "teacher_reconstruction": teacher_reconstruction, "teacher_probes": teacher_probes,
          "judge_heldout": judge_heldout}


# ------------------------------------------------------------------------------------------------ blocks


def blocks(lines: list[str]) -> tuple[list[tuple[str, int, int]], list[tuple[int, str]]]:
    """(name, start line, end line) of every block (0-based, the marker lines), and (line, problem) for
    markers that do not pair up. Markers inside fenced code are ignored."""
    found, problems, fence, open_at = [], [], None, None
    for i, line in enumerate(lines):
        m = FENCE.match(line)
        if m:
            fence = None if fence == m.group(1) else (fence or m.group(1))
            continue
        if fence:
            continue
        if START.match(line):
            if open_at is not None:
                problems.append((open_at, "block not closed before the next one"))
            open_at = i
        elif END.match(line):
            if open_at is None:
                problems.append((i, "'<!-- /results -->' without a block"))
            else:
                found.append((START.match(lines[open_at]).group(1), open_at, i))
                open_at = None
    if open_at is not None:
        problems.append((open_at, "block not closed"))
    return found, problems


def render(name: str, results: Path) -> str:
    return TABLES[name](results).rstrip("\n") + "\n"


def process(path: Path, root: Path, check: bool) -> tuple[str, list[str]]:
    """The file's text with every known block rendered, and the problems (one line each)."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    found, problems = blocks(lines)
    where = path.relative_to(root)
    report = [f"{where}:{i + 1}: {p}" for i, p in problems]
    out, last = [], 0
    for name, start, end in found:
        out += lines[last : start + 1]
        body = "".join(lines[start + 1 : end])
        if name not in TABLES:
            report.append(f"{where}:{start + 1}: unknown table '{name}' (known: {', '.join(TABLES)})")
        else:
            try:
                new = render(name, root / "results")
            except MissingResults as err:
                report.append(f"{where}:{start + 1}: table '{name}': results file missing: {err}")
            else:
                if new != body and check:
                    report.append(f"{where}:{start + 1}: table '{name}' differs from its results files")
                body = new
        out.append(body)
        last = end
    out += lines[last:]
    return "".join(out), report


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def doc_files(root: Path) -> list[Path]:
    files = sorted((root / "docs").glob("*.md")) if (root / "docs").is_dir() else []
    return files + ([root / "README.md"] if (root / "README.md").is_file() else [])


def run(root: Path = ROOT, check: bool = False) -> tuple[list[str], list[str]]:
    """Process every doc; return (problems, files rewritten)."""
    problems, changed = [], []
    for path in doc_files(root):
        new, report = process(path, root, check)
        problems += report
        if not check and new != path.read_text():
            write_atomic(path, new)
            changed.append(str(path.relative_to(root)))
    return problems, changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if any block differs from results/")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout (docs/, README.md, results/)")
    ap.add_argument("--print", dest="show", metavar="TABLE", help="print one table and exit")
    ap.add_argument("--list", action="store_true", help="list the table names and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(f"{name}: {fn.__doc__.splitlines()[0] if fn.__doc__ else ''}" for name, fn in TABLES.items()))
        return 0
    if args.show:
        if args.show not in TABLES:
            print(f"unknown table '{args.show}' (known: {', '.join(TABLES)})", file=sys.stderr)
            return 2
        print(render(args.show, args.root / "results"), end="")
        return 0
    problems, changed = run(args.root, args.check)
    for line in changed:
        print(f"rewrote {line}")
    for line in problems:
        print(line, file=sys.stderr)
    if args.check and not problems:
        print("every results block matches results/")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

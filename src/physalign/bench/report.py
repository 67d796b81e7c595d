"""The bench report: ``bench.json`` (every figure), ``report.md`` and ``report.html`` (tables, plots, a GIF
grid). Methods pool their seeds; differences with SFT pair the same prompt, noise and training seed."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

from physalign.bench.compare import TARGET_HALF_WIDTH, pair_results, paired_difference
from physalign.bench.profiles import CONTROLS
from physalign.eval.report import finite, fmt
from physalign.eval.stats import METRICS, summarize
from physalign.video import read_video, tile, write_gif
from physalign.world import spec
from physalign.world.dataset import load_manifest

REFERENCE = "sft"
GIF_PROMPTS = 4


def write_bench_report(out: Path, profile, arms, results: dict, timing: dict, runs: dict) -> Path:
    methods = list(dict.fromkeys(a.method for a in arms))
    pooled = {"simulator": results["simulator"], "base": results["base"]}
    pooled |= {m: [r for a in arms if a.method == m for r in results[a.name]] for m in methods}
    summaries = {name: summarize(rs) for name, rs in pooled.items()}
    deltas = {m: _delta(arms, results, m) for m in methods if REFERENCE in methods and m != REFERENCE}
    vs_base = {m: _delta(arms, results, m, against=lambda arm: "base") for m in methods}
    physics_vs_base = {m: _delta_errors(arms, results, m) for m in methods}
    controls = {m: control_verdict(vs_base[m]) for m in methods if m in CONTROLS}
    data = {"profile": profile.to_dict(), "summaries": summaries, "vs_sft": deltas, "vs_base": vs_base, "controls": controls,
            "physics_vs_base": physics_vs_base, "step_time": timing,
            "curves": {a.name: _curve(runs[a.name]) for a in arms}}
    (out / "bench.json").write_text(json.dumps(finite(data), indent=2, allow_nan=False))
    plots = [_plot_metrics(out, summaries), _plot_curves(out, data["curves"])]
    gif = _gif_grid(out, list(pooled)[1:], arms)
    md = _markdown(profile, summaries, deltas, vs_base, timing, plots, gif) + _physics_markdown(summaries, physics_vs_base)
    md = _controls_markdown(controls) + md if controls else md
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(md))
    return out / "report.md"


def control_verdict(vs_base: dict) -> dict:
    """A negative control (SFT on corrupted clips) is seen when its paired Δ PC against the base has a 95%
    interval wholly below zero."""
    pc = vs_base["pc"]
    return {"expected": "Δ PC vs base < 0", "pc": pc, "seen": bool(math.isfinite(pc["hi"]) and pc["hi"] < 0)}


def _controls_markdown(controls: dict) -> str:
    lines = []
    for name, c in controls.items():
        verdict = "seen" if c["seen"] else "NOT seen: the instrument could not see this change"
        lines.append(f"> **Control {name}** ({c['expected']}): {_fmt_delta(c['pc'])}, {verdict}.")
    return "\n".join(lines) + "\n\n"


def _delta(arms, results, method: str, against=lambda arm: f"{REFERENCE}-s{arm.seed}") -> dict:
    """Paired differences method - reference, pooled over training seeds: by default SFT (seed s pairs with
    SFT's seed s); ``against`` names the reference of each arm (e.g. the base, which every method starts from)."""
    out = {}
    for metric in METRICS:
        a, b = [], []
        for arm in arms:
            if arm.method == method:
                x, y = pair_results(results[arm.name], results[against(arm)])
                a += [getattr(r, metric) for r in x]
                b += [getattr(r, metric) for r in y]
        out[metric] = paired_difference(a, b)
    return out


# continuous physics errors shown, as (name, what is compared: a function of the video's value)
SHOWN_ERRORS = {"gravity_error": ("gravity_ratio", lambda x: abs(x - 1.0)), "fit_residual": ("fit_residual", float),
                "impulse": ("impulse", float), "penetration": ("penetration", float)}


def _delta_errors(arms, results, method: str, against=lambda arm: "base") -> dict:
    """Paired differences method - reference of each continuous error in SHOWN_ERRORS (``gravity_error`` is
    ``|gravity_ratio - 1|``), over the videos where both have it; pooled over training seeds."""
    out = {}
    for shown, (name, value) in SHOWN_ERRORS.items():
        a, b = [], []
        for arm in arms:
            if arm.method == method:
                for x, y in zip(*pair_results(results[arm.name], results[against(arm)])):
                    if x.physics_errors.get(name) is not None and y.physics_errors.get(name) is not None:
                        a.append(value(x.physics_errors[name]))
                        b.append(value(y.physics_errors[name]))
        out[shown] = paired_difference(a, b)
    return out


def _physics_markdown(summaries: dict, vs_base: dict) -> str:
    """The continuous physics errors: each model's mean (95% bootstrap interval; median of the gravity ratio),
    then each method's paired difference with the base (negative = closer to physics)."""
    lines = ["", "## Continuous physics errors", "",
             "Means over the videos each applies to, 95% bootstrap intervals (the evaluator's `physics_errors`). "
             "gravity ratio: fitted over true acceleration in free flight (1 = right).", "",
             "| model | gravity ratio (median) | gravity ratio | fit residual (px) | impulse (px/frame) | penetration (px) | noise (px) |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        e = s["physics_errors"]
        cells = [_short(e["gravity_ratio"] | {"mean": e["gravity_ratio"]["median"]})] + \
                [fmt(e[k]) for k in ("gravity_ratio", "fit_residual", "impulse", "penetration", "noise")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences with the base (same prompt and noise; negative = closer to physics):", "",
              "| method | " + " | ".join(f"Δ {k.replace('_', ' ')}" for k in SHOWN_ERRORS) + " |",
              "|---" * (len(SHOWN_ERRORS) + 1) + "|"]
    for method, d in vs_base.items():
        lines.append(f"| {method} | " + " | ".join(_fmt_delta(d[k]) for k in SHOWN_ERRORS) + " |")
    return "\n".join(lines) + "\n"


def _curve(run: Path) -> list[dict]:
    log = run / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def _markdown(profile, summaries: dict, deltas: dict, vs_base: dict, timing: dict, plots: list[str], gif: str) -> str:
    p = profile
    lines = [f"# physalign bench ({p.name})", "",
             f"Every method post-trained from the same base on the same {p.train_videos} world videos (seed "
             f"{p.data_seed}, with counterfactuals) for {p.steps} steps of batch {p.batch_size}, training seeds "
             f"{list(p.seeds)}; sampled on {p.test_prompts} held-out test prompts x {p.samples_per_prompt} "
             f"({p.sample_steps} Euler steps, guidance {p.guidance}, the same noise for every model) and scored "
             "against the simulator. 95% bootstrap intervals; Δ columns pair each video with SFT's.", "",
             "| model | n | PC | SA | Joint | Δ PC vs SFT | Δ Joint vs SFT | Δ Joint vs base | step time / SFT |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        d = deltas.get(name)
        dpc, djoint = (_fmt_delta(d["pc"]), _fmt_delta(d["joint"])) if d else ("", "")
        dbase = _fmt_delta(vs_base[name]["joint"]) if name in vs_base else ""
        ratio = f"{timing[name]['ratio']:.2f}" if name in timing else ""
        lines.append(f"| {name} | {s['n']} | " + " | ".join(fmt(s["overall"][m]) for m in METRICS)
                     + f" | {dpc} | {djoint} | {dbase} | {ratio} |")
    lines += _power_markdown(deltas, vs_base)
    lines += ["", "## In-distribution and out-of-distribution prompts (Joint)", "",
              "| model | in-distribution | ood |", "|---|---|---|"]
    for name, s in summaries.items():
        lines.append(f"| {name} | {fmt(s['split']['in-distribution']['joint'])} | {fmt(s['split']['ood']['joint'])} |")
    lines += ["", "## Per physics axis (PC)", ""]
    names = list(summaries)
    lines += ["| axis = value | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for axis, values in summaries["simulator"]["axes"].items():
        for value in values:
            cells = [_short(summaries[n]["axes"].get(axis, {}).get(value, {}).get("pc")) for n in names]
            lines.append(f"| {axis} = {value} | " + " | ".join(cells) + " |")
    lines += ["", "## Checks (pass rate where the check applies)", ""]
    checks = list(summaries["simulator"]["checks"])
    lines += ["| check | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for c in checks:
        cells = [f"{summaries[n]['checks'].get(c, {}).get('pass_rate', float('nan')):.2f}" for n in names]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    lines += ["", f"## Samples: ground truth, base, then each method (first {GIF_PROMPTS} test prompts)", "", f"![samples]({gif})", ""]
    return "\n".join(lines) + "\n"


def _power_markdown(deltas: dict, vs_base: dict) -> list[str]:
    """Each paired Joint comparison's power: its pairs, the minimum detectable effect (80% power, 95% level)
    and the pairs a half-width of TARGET_HALF_WIDTH would need at the same spread."""
    lines = ["", "## Power of the paired Joint comparisons", "",
             f"MDE: the smallest true difference found with 80% power (2.80 standard errors of the paired mean); "
             f"the last column: pairs needed for a 95% interval of ±{TARGET_HALF_WIDTH} at this spread.", "",
             "| comparison | pairs | half-width | MDE | pairs for ±0.04 |", "|---|---|---|---|---|"]
    rows = [(f"{m} − sft", d["joint"]) for m, d in deltas.items()] + [(f"{m} − base", d["joint"]) for m, d in vs_base.items()]
    for label, d in rows:
        if d["n"]:
            lines.append(f"| {label} | {d['n']} | {(d['hi'] - d['lo']) / 2:.3f} | {d.get('mde', float('nan')):.3f} "
                         f"| {d.get('n_for_target', '')} |")
    return lines


def _fmt_delta(d: dict) -> str:
    if not math.isfinite(d["mean"]):
        return "n/a"
    return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"


def _short(m: dict | None) -> str:
    return "" if not m or not math.isfinite(m["mean"]) else f"{m['mean']:.2f}"


def _plot_metrics(out: Path, summaries: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 3.5))
    width = 0.27
    for k, metric in enumerate(METRICS):
        mean = np.array([summaries[n]["overall"][metric]["mean"] for n in names])
        lo = np.array([summaries[n]["overall"][metric]["lo"] for n in names])
        hi = np.array([summaries[n]["overall"][metric]["hi"] for n in names])
        x = np.arange(len(names)) + (k - 1) * width
        ax.bar(x, mean, width, label=metric.upper(), yerr=[mean - lo, hi - mean], capsize=2)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass rate (95% CI)")
    ax.legend(ncols=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=120)
    plt.close(fig)
    return "metrics.png"


def _plot_curves(out: Path, curves: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, records in curves.items():
        pts = [(r["step"], r["fm"]) for r in records if "fm" in r]
        if pts:
            steps, fm = np.array(pts).T
            k = max(1, len(fm) // 20)
            smooth = np.convolve(fm, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], smooth, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching term (smoothed)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    return "curves.png"


def _gif_grid(out: Path, models: list[str], arms) -> str:
    """Rows: test prompts; columns: ground truth, base, then each method's first seed."""
    first = {a.method: a.name for a in reversed(arms)}
    folders = [out / "test"] + [out / "samples" / ("base" if m == "base" else first[m]) for m in models]
    manifests = [load_manifest(f / "manifest.jsonl") for f in folders]
    rows = []
    for i in range(min(GIF_PROMPTS, len(manifests[0]))):
        prompt = manifests[0][i]["prompt"]
        cells = []
        for folder, rows_m in zip(folders, manifests):
            match = next(r for r in rows_m if r["prompt"] == prompt)
            cells.append(read_video(folder / match["video"]))
        rows.append(cells)
    write_gif(out / "samples.gif", tile(rows, pad=2), fps=spec.FPS, scale=3)
    (out / "samples.txt").write_text("columns: truth | " + " | ".join(models) + "\n"
                                     + "\n".join(f"row {i + 1}: {manifests[0][i]['prompt']}" for i in range(len(rows))) + "\n")
    return "samples.gif"


def _html(md: str) -> str:
    """The markdown report as a standalone HTML page (tables, images, headings, paragraphs)."""
    body, table = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            body.append(_html_table(table))
            table = []
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>")
        elif line.startswith("!["):
            src = line[line.index("(") + 1 : line.rindex(")")]
            body.append(f'<p><img src="{html.escape(src)}" style="image-rendering: pixelated; max-width: 100%"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>physalign bench</title><style>{style}</style></head><body>" \
           + "\n".join(body) + "</body></html>\n"


def _html_table(lines: list[str]) -> str:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if not set(line) <= set("|-")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"

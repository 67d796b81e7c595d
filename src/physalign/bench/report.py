"""The bench report: ``bench.json`` (every figure), ``report.md`` and ``report.html`` (tables, plots, a GIF
grid). Methods pool their seeds; differences with SFT pair the same prompt, noise and training seed."""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from physalign.bench.compare import SHOWN_ERRORS, TARGET_HALF_WIDTH, pair_results, paired_difference
from physalign.bench.profiles import CONTROLS
from physalign.bench.profiles import recipe as recipe_of
from physalign.eval.report import finite, fmt
from physalign.eval.stats import METRICS, summarize
from physalign.video import read_video, tile, write_gif
from physalign.world import spec
from physalign.world.dataset import load_manifest

REFERENCE = "sft"
GIF_PROMPTS = 4


def write_bench_report(out: Path, profile, arms, results: dict, timing: dict, runs: dict, starts: dict | None = None,
                       curves: dict | None = None) -> Path:
    """``starts``: a starting model's name (``profiles.BROKEN``) -> its run's name, a model of the bench that
    some arms start from; ``curves``: run name -> {step: the evaluator's results of that checkpoint's samples}."""
    starts, curves = starts or {}, curves or {}
    methods = list(dict.fromkeys(a.method for a in arms))
    pooled = {"simulator": results["simulator"], "base": results["base"]} | {n: results[r] for n, r in starts.items()}
    pooled |= {m: [r for a in arms if a.method == m for r in results[a.name]] for m in methods}
    summaries = {name: summarize(rs) for name, rs in pooled.items()}
    deltas = {m: _delta(arms, results, m) for m in methods if REFERENCE in methods and m != REFERENCE}
    # every trained model against the base (a starting model's arms carry its run name)
    everyone, named = arms + [_Solo(r) for r in starts.values()], {**starts, **{m: m for m in methods}}
    vs_base = {name: _delta(everyone, results, m, against=lambda arm: "base") for name, m in named.items()}
    physics_vs_base = {name: _delta_errors(everyone, results, m) for name, m in named.items()}
    controls = {m: control_verdict(m, CONTROLS[m], arms, results, {**starts, "base": "base"}) for m in methods if m in CONTROLS}
    spread = seed_spread(arms, results)
    curve_table = learning_curves(arms, results, curves, profile, starts)
    data = {"profile": profile.to_dict(), "summaries": summaries, "vs_sft": deltas, "vs_base": vs_base, "controls": controls,
            "physics_vs_base": physics_vs_base, "step_time": timing, "seed_spread": spread,
            "learning_curves": curve_table, "curves": {name: _curve(run) for name, run in runs.items()}}
    (out / "bench.json").write_text(json.dumps(finite(data), indent=2, allow_nan=False))
    plots = [_plot_metrics(out, summaries), _plot_curves(out, data["curves"])]
    plots += [_plot_learning_curves(out, curve_table)] if any(len(c) > 2 for c in curve_table.values()) else []
    gif = _gif_grid(out, list(pooled)[1:], arms, starts)
    md = _markdown(profile, summaries, deltas, vs_base, timing, plots, gif) + _physics_markdown(summaries, physics_vs_base)
    md += _seed_markdown(spread, deltas) + _curve_markdown(curve_table)
    md = _controls_markdown(controls) + md if controls else md
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(md))
    return out / "report.md"


@dataclass(frozen=True)
class _Solo:
    """A model trained once, outside the arms (a starting model): an arm of its own run name."""

    method: str
    seed: int = 0

    @property
    def name(self) -> str:
        return self.method


def control_verdict(name: str, control, arms, results: dict, names: dict) -> dict:
    """Whether the instrument saw a control's change: for each (metric, sign) of ``control.expect``, the paired
    Δ of the control's arms against ``control.reference`` (its run: ``names``), over the test videos of its scene
    slice, has a 95% interval wholly on that side of zero. ``seen`` only if every one does."""
    keep = (lambda r: r.scene.get(control.scene_slice[0]) == control.scene_slice[1]) if control.scene_slice else None
    reference = names[control.reference]
    tag, own = control.slice_name, [a.name for a in arms if a.method == name]
    own_set = bool(tag) and all(f"{n}:{tag}" in results for n in [reference, *own])
    if own_set:  # the slice's own test set
        results = results | {n: results[f"{n}:{tag}"] for n in [reference, *own]}
    checks = {}
    for metric, sign in control.expect:
        delta = (_delta_errors(arms, results, name, against=lambda arm: reference, keep=keep)[metric]
                 if metric in SHOWN_ERRORS else _delta(arms, results, name, lambda arm: reference, keep)[metric])
        bound = delta["hi"] if sign < 0 else -delta["lo"]
        checks[metric] = {"expected": f"Δ {metric} vs {control.reference} {'<' if sign < 0 else '>'} 0", **delta,
                          "seen": bool(math.isfinite(bound) and bound < 0)}
    where = f" on {control.scene_slice[0]} = {control.scene_slice[1]}" if control.scene_slice else ""
    where += " (its own test prompts)" if own_set else ""
    return {"reference": control.reference, "slice": where.strip(), "checks": checks,
            "seen": all(c["seen"] for c in checks.values())}


def _controls_markdown(controls: dict) -> str:
    lines = []
    for name, c in controls.items():
        verdict = "seen" if c["seen"] else "NOT seen: the instrument could not see this change"
        parts = "; ".join(f"{k['expected']}: {_fmt_delta(k)}{'' if k['seen'] else ' (not seen)'}" for k in c["checks"].values())
        where = f", {c['slice']}" if c["slice"] else ""
        lines.append(f"> **Control {name}**{where}: {parts}. {verdict}.")
    return "\n>\n".join(lines) + "\n\n"


def _delta(arms, results, method: str, against=lambda arm: f"{REFERENCE}-s{arm.seed}", keep=None) -> dict:
    """Paired differences method - reference, pooled over training seeds: by default SFT (seed s pairs with
    SFT's seed s); ``against`` names the reference of each arm (e.g. the base, which every method starts from);
    ``keep`` (a test on a result) restricts them to some videos."""
    out = {}
    for metric in METRICS:
        a, b = [], []
        for arm in arms:
            if arm.method == method:
                x, y = pair_results(_kept(results[arm.name], keep), results[against(arm)])
                a += [getattr(r, metric) for r in x]
                b += [getattr(r, metric) for r in y]
        out[metric] = paired_difference(a, b)
    return out


def seed_spread(arms, results: dict) -> dict:
    """For each method trained under several seeds: the paired Δ (PC, SA, Joint) of each later seed against
    its first seed, on the same prompts and noise: how far a training seed alone moves the figures."""
    out = {}
    for method in dict.fromkeys(a.method for a in arms):
        seeds = [a for a in arms if a.method == method]
        for arm in seeds[1:]:
            out[f"{method}: s{arm.seed} − s{seeds[0].seed}"] = _delta([arm], results, method, lambda _: seeds[0].name)
    return out


def _sft_spread(spread: dict) -> float | None:
    """SFT's seed spread on Joint: the largest |Δ Joint| of its later seeds against its first (None with one)."""
    values = [abs(d["joint"]["mean"]) for k, d in spread.items() if k.startswith(f"{REFERENCE}:")]
    return max(values) if values else None


def _within(deltas: dict, spread: float) -> list[str]:
    """The methods (not a control) whose |Δ Joint vs SFT| is at most ``spread``."""
    return [m for m, d in deltas.items() if m not in CONTROLS and abs(d["joint"]["mean"]) <= spread]


def second_seed_methods(arms, results: dict) -> list[str]:
    """The methods trained under one seed that are within SFT's seed spread (:func:`_within`): they need
    another seed."""
    spread = _sft_spread(seed_spread(arms, results))
    if spread is None:
        return []
    single = [m for m in dict.fromkeys(a.method for a in arms) if m != REFERENCE and sum(a.method == m for a in arms) == 1]
    return _within({m: _delta(arms, results, m) for m in single}, spread)


def _seed_markdown(spread: dict, deltas: dict) -> str:
    if not spread:
        return ""
    lines = ["", "## Training seeds", "", "How far another training seed alone moves each figure (paired, same prompts "
             "and noise). A method whose Δ Joint vs SFT is within SFT's seed spread needs a second seed before it is "
             "ranked.", "", "| comparison | Δ PC | Δ SA | Δ Joint |", "|---|---|---|---|"]
    lines += [f"| {k} | " + " | ".join(_fmt_delta(d[m]) for m in METRICS) + " |" for k, d in spread.items()]
    sft = _sft_spread(spread)
    if sft is not None and deltas:
        lines += ["", f"SFT's seed spread on Joint: {sft:.3f}. Within it: {', '.join(_within(deltas, sft)) or 'none'}."]
    return "\n".join(lines) + "\n"


# the learning curve's figures at each step: the headline rates and the mean gravity error
CURVE_METRICS = ("pc", "sa", "joint")


def learning_curves(arms, results: dict, curves: dict, profile, starts: dict) -> dict:
    """run name -> [{"step", "n", "pc", "sa", "joint", "gravity_error"}] at step 0 (its starting model's
    samples), each curve checkpoint and the last step (its model's samples), all on the curve's prompts and noise
    (the first ``curve_prompts`` test prompts). Empty when the profile samples no curve."""
    if not any(curves.values()):
        return {}
    n = (profile.curve_prompts or profile.test_prompts) * profile.samples_per_prompt
    start_of = {a.name: starts.get(recipe_of(a.method).start, "base") for a in arms} | {r: "base" for r in starts.values()}
    factor = {a.name: recipe_of(a.method).steps_factor for a in arms} | {r: recipe_of(n).steps_factor for n, r in starts.items()}
    out = {}
    for name, points in curves.items():
        series = [(0, results[start_of[name]]), *sorted(points.items()), (profile.steps * factor[name], results[name])]
        out[name] = [{"step": step, **_curve_point(rs[:n])} for step, rs in series]
    return out


def _curve_point(rs: list) -> dict:
    s = summarize(rs)
    g = [abs(r.physics_errors["gravity_ratio"] - 1.0) for r in rs if r.physics_errors.get("gravity_ratio") is not None]
    return {"n": s["n"], **{m: s["overall"][m] for m in CURVE_METRICS},
            "gravity_error": float(np.mean(g)) if g else float("nan")}


def _curve_markdown(table: dict) -> str:
    if not table:
        return ""
    steps = sorted({p["step"] for points in table.values() for p in points})
    lines = ["", "## Learning curves (Joint; mean gravity error)", "",
             "Each run's EMA export at evenly spaced checkpoints, sampled on the curve's prompts with the same noise; "
             "step 0 is the model it started from.", "",
             "| run | " + " | ".join(f"step {k}" for k in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for name, points in table.items():
        at = {p["step"]: p for p in points}
        lines.append(f"| {name} | " + " | ".join(
            f"{at[k]['joint']['mean']:.3f}; {at[k]['gravity_error']:.2f}" if k in at else "" for k in steps) + " |")
    return "\n".join(lines) + "\n"


def _kept(rs: list, keep) -> list:
    return rs if keep is None else [r for r in rs if keep(r)]


def _delta_errors(arms, results, method: str, against=lambda arm: "base", keep=None) -> dict:
    """Paired differences method - reference of each continuous error in SHOWN_ERRORS (``gravity_error`` is
    ``|gravity_ratio - 1|``), over the videos where both have it (and ``keep`` holds); pooled over seeds."""
    out = {}
    for shown, (name, value) in SHOWN_ERRORS.items():
        a, b = [], []
        for arm in arms:
            if arm.method == method:
                for x, y in zip(*pair_results(_kept(results[arm.name], keep), results[against(arm)])):
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
             f"({p.sample_steps} steps of the {p.sample_solver} solver, guidance {p.guidance}, the same noise for every model) and scored "
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


def _plot_learning_curves(out: Path, table: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, points in table.items():
        steps = [p["step"] for p in points]
        axes[0].plot(steps, [p["joint"]["mean"] for p in points], marker="o", label=name)
        axes[1].plot(steps, [p["gravity_error"] for p in points], marker="o", label=name)
    axes[0].set_ylabel("Joint")
    axes[1].set_ylabel("mean |gravity ratio - 1|")
    for ax in axes:
        ax.set_xlabel("step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    plt.close(fig)
    return "learning_curves.png"


def _gif_grid(out: Path, models: list[str], arms, starts: dict | None = None) -> str:
    """Rows: test prompts; columns: ground truth, base, then each starting model and method's first seed."""
    first = {a.method: a.name for a in reversed(arms)} | {"base": "base"} | (starts or {})
    folders = [out / "test"] + [out / "samples" / first[m] for m in models]
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

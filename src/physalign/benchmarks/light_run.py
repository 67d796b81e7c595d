"""Light metrics over a folder of videos: VBench's temporal flickering, dynamic degree and motion smoothness
(:mod:`physalign.benchmarks.vbench`), and Physics-IQ's metrics (:mod:`physalign.benchmarks.physics_iq`)
either against the benchmark's real takes (its file layout; with the physical variance and the score) or
against one reference clip per video (raw values). Per-video values, means with bootstrap intervals,
``light_metrics.json`` and ``light_metrics.md``; every metric names the model or stand-in that made it.
Videos are decoded with OpenCV, as both benchmarks decode them."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
from tqdm import tqdm

from physalign.benchmarks import physics_iq, vbench
from physalign.benchmarks.scoring import bootstrap_mean_ci, table
from physalign.eval.report import finite, fmt

VBENCH = ("temporal_flickering", "dynamic_degree", "motion_smoothness")
PHYSICS_IQ = ("spatial_iou", "spatiotemporal_iou", "weighted_spatial_iou", "mse")
FLICKER_MADE_BY = "no model (VBench's formula)"
TAKES_MADE_BY = "Physics-IQ's definitions (OpenCV masks), against take 1 of the benchmark's real takes"
CLIP_MADE_BY = "Physics-IQ's definitions (OpenCV masks), against one reference clip (no physical variance: raw)"


def video_fps(path: Path, default: float = 8.0) -> float:
    """The frame rate OpenCV reads (``CAP_PROP_FPS``, as both benchmarks do), or ``default`` when it reads 0."""
    capture = cv2.VideoCapture(str(path))
    rate = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return float(rate) if rate > 0 else default


def find_videos(root: Path) -> list[Path]:
    """Every ``*.mp4`` under ``root``, sorted."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    return sorted(root.rglob("*.mp4"))


def match_reference(video: Path, root: Path, references: list[Path], ref_root: Path) -> Path | None:
    """The reference with the same path relative to its folder, else the only one with the same file name."""
    same = ref_root / video.relative_to(root)
    if same.is_file():
        return same
    named = [r for r in references if r.name == video.name]
    return named[0] if len(named) == 1 else None


def measure(video, fps: float, flow: vbench.FlowModel, interpolator: vbench.Interpolator) -> dict:
    """VBench's three metrics of one video, with the models that made them."""
    dynamic = vbench.dynamic_degree(video, fps, flow)
    row = {"temporal_flickering": vbench.temporal_flickering(video), "dynamic_degree": float(dynamic["dynamic"]),
           "dynamic_pair_scores": dynamic["pair_scores"], "dynamic_threshold": dynamic["threshold"],
           "flow_model": dynamic["model"], "motion_smoothness": None, "interpolator": interpolator.name}
    if len(video) >= 3:
        row["motion_smoothness"] = vbench.motion_smoothness(video, interpolator)["score"]
    return row


def _mask_frames(take: physics_iq.Take):
    """The dataset's own masks of a take as OpenCV decodes them, uint8 (T, H, W, 3), or None to compute them."""
    return physics_iq.read_frames(take.masks) if take.masks is not None else None


def against_takes(path: Path, video, fps: float, takes: list[physics_iq.Take]) -> dict:
    """Physics-IQ's metrics against the benchmark's take 1 (and the variance against take 2)."""
    pair = physics_iq.match_takes(path, takes, fps)
    if pair is None:
        return {"reference_error": f"no take 1 for {path.name} (ID {path.name[:4]}) at {int(fps)} fps"}
    t1, t2 = pair
    out = physics_iq.metrics(video, physics_iq.read_rgb(t1.path), fps, physics_iq.read_rgb(t2.path) if t2 else None,
                             _mask_frames(t1), _mask_frames(t2) if t2 else None)
    view = {"scenario": t1.scenario, "view": t1.view, **out}
    return {"reference": str(t1.path), "physics_iq_made_by": TAKES_MADE_BY, "physics_iq_view": view,
            **physics_iq.summary(out["metrics"])}


def against_clip(video, fps: float, ref: Path) -> dict:
    out = physics_iq.metrics(video, physics_iq.read_rgb(ref), fps)
    return {"reference": str(ref), "physics_iq_made_by": CLIP_MADE_BY, **physics_iq.summary(out["metrics"])}


def measure_folder(videos: str | Path, reference: str | Path | None = None, takes: str | Path | None = None,
                   flow: vbench.FlowModel | None = None, interpolator: vbench.Interpolator | None = None,
                   progress: bool = True) -> list[dict]:
    """One row per video: its metrics, or "error" when it cannot be read. Physics-IQ's metrics come from the
    dataset under ``takes`` (matched by the benchmark's four-digit ID prefix) or from the clip of the same
    name under ``reference``; a video without one gets a "reference_error"."""
    if reference is not None and takes is not None:
        raise ValueError("give either a reference folder or the Physics-IQ dataset, not both")
    root, flow, interpolator = Path(videos), flow or vbench.HornSchunckFlow(), interpolator or vbench.FlowInterpolation()
    ref_root = Path(reference) if reference is not None else None
    references = find_videos(ref_root) if ref_root is not None else []
    if takes is not None and not Path(takes).is_dir():
        raise FileNotFoundError(f"{takes}: no such folder")
    real = physics_iq.find_takes(takes) if takes is not None else []
    rows = []
    for path in tqdm(find_videos(root), desc="light metrics", unit="video", disable=not progress):
        row = {"video": str(path.relative_to(root))}
        try:
            video, fps = physics_iq.read_rgb(path), video_fps(path)
            row.update(measure(video, fps, flow, interpolator))
        except ValueError as err:
            rows.append({**row, "error": str(err)})
            continue
        ref = match_reference(path, root, references, ref_root) if ref_root is not None else None
        try:
            if takes is not None:
                row.update(against_takes(path, video, fps, real))
            elif ref_root is not None and ref is None:
                row["reference_error"] = f"no reference video for {row['video']} in {ref_root}"
            elif ref is not None:
                row.update(against_clip(video, fps, ref))
        except ValueError as err:
            row["reference_error"] = f"Physics-IQ against {ref or 'the real takes'}: {err}"
        rows.append(row)
    return rows


def made_by(rows: list[dict]) -> dict[str, str]:
    """Which model or stand-in made each metric, from the rows (one name per metric in a run)."""
    names = {"temporal_flickering": FLICKER_MADE_BY}
    for metric, key in (("dynamic_degree", "flow_model"), ("motion_smoothness", "interpolator")):
        names[metric] = "; ".join(sorted({r[key] for r in rows if key in r}))
    for metric in PHYSICS_IQ:
        names[metric] = "; ".join(sorted({r["physics_iq_made_by"] for r in rows if metric in r}))
    return names


def physics_iq_score(rows: list[dict]) -> dict | None:
    """The benchmark's score over the videos measured against real takes with a take 2, or None/an error."""
    views = [r["physics_iq_view"] for r in rows if "physics_iq_view" in r]
    views = [v for v in views if v["variance"] is not None]
    if not views:
        return None
    try:
        return physics_iq.score(views)
    except ValueError as err:
        return {"error": str(err)}


def summarize_light(rows: list[dict], resamples: int = 2000, seed: int = 0) -> dict:
    """Mean [95% interval] of each metric over the videos that have it, who made it, and Physics-IQ's score."""
    scored = [r for r in rows if "error" not in r]
    metrics, names = {}, made_by(scored)
    for name in VBENCH + PHYSICS_IQ:
        values = [r[name] for r in scored if r.get(name) is not None]
        if values:
            mean, lo, hi = bootstrap_mean_ci(values, resamples, seed)
            metrics[name] = {"n": len(values), "mean": mean, "lo": lo, "hi": hi, "made_by": names[name]}
    return {"n": len(scored), "metrics": metrics, "physics_iq_score": physics_iq_score(scored),
            "errors": [{"video": r["video"], "error": r["error"]} for r in rows if "error" in r],
            "unmatched": [{"video": r["video"], "error": r["reference_error"]} for r in rows if "reference_error" in r],
            "bootstrap": {"resamples": resamples, "seed": seed}}


def markdown(summary: dict) -> str:
    lines = ["# Light metrics", "", f"{summary['n']} videos. VBench: temporal flickering and motion smoothness as "
             "(255 - MAE) / 255, dynamic degree = share of dynamic videos. Physics-IQ: motion-mask IoUs and MSE "
             "(per-frame values averaged). Each metric names the model that made it; a stand-in's score is not "
             "comparable with published numbers. Mean [95% bootstrap].", ""]
    rows = [(name, str(m["n"]), fmt(m), m["made_by"]) for name, m in summary["metrics"].items()]
    lines += table(("metric", "n", "mean", "made by"), rows)
    lines += _score_lines(summary["physics_iq_score"])
    if summary["errors"]:
        lines += ["", f"## {len(summary['errors'])} videos not measured", ""]
        lines += [f"- `{e['video']}`: {e['error']}" for e in summary["errors"]]
    if summary["unmatched"]:
        lines += ["", f"## {len(summary['unmatched'])} videos without Physics-IQ metrics", ""]
        lines += [f"- `{e['video']}`: {e['error']}" for e in summary["unmatched"]]
    return "\n".join(lines) + "\n"


def _score_lines(score: dict | None) -> list[str]:
    if score is None:
        return []
    if "error" in score:
        return ["", f"Physics-IQ score: not computed ({score['error']})"]
    return ["", f"Physics-IQ score: {score['score']:.2f} over {score['views']} views of {score['scenarios']} "
            f"scenarios ({TAKES_MADE_BY}; physical variance from take 2: "
            + ", ".join(f"{k} {v:g}" for k, v in score["physical_variance"].items()) + ")"]


def write_light(rows: list[dict], summary: dict, out: str | Path) -> Path:
    """Write OUT/light_metrics.json and OUT/light_metrics.md; return the JSON's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "light_metrics.json"
    path.write_text(json.dumps(finite({"summary": summary, "videos": rows}), indent=1, allow_nan=False))
    (out / "light_metrics.md").write_text(markdown(summary))
    return path

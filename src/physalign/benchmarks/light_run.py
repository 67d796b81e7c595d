"""Light metrics over a folder of videos (and a reference folder): per-video values, means with bootstrap
intervals, ``light_metrics.json`` and ``light_metrics.md``."""

from __future__ import annotations

import json
from pathlib import Path

import av
from tqdm import tqdm

from physalign.benchmarks import light
from physalign.benchmarks.scoring import bootstrap_mean_ci, table
from physalign.eval.report import finite, fmt
from physalign.video import VideoError, read_video

VBENCH = ("temporal_flickering", "dynamic_degree", "motion_smoothness")
PHYSICS_IQ = ("spatial_iou", "spatiotemporal_iou", "weighted_spatial_iou", "mse")


def video_fps(path: Path, default: float = 8.0) -> float:
    """The stream's average frame rate, or ``default`` when the file does not say."""
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    return float(rate) if rate else default


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


def measure(path: Path) -> dict:
    """The VBench-style metrics of one video."""
    video = read_video(path)
    dynamic = light.dynamic_degree(video, video_fps(path))
    return {"temporal_flickering": light.temporal_flickering(video), "dynamic_degree": float(dynamic["dynamic"]),
            "flow_top5": dynamic["pair_magnitudes"], "flow_threshold": dynamic["threshold"],
            "motion_smoothness": light.motion_smoothness(video) if len(video) >= 3 else None}


def measure_folder(videos: str | Path, reference: str | Path | None = None, progress: bool = True) -> list[dict]:
    """One row per video: its metrics, or "error" when it cannot be read. A video without a reference (or
    with one of another shape) gets the VBench-style metrics and a "reference_error"."""
    root = Path(videos)
    ref_root = Path(reference) if reference is not None else None
    references = find_videos(ref_root) if ref_root is not None else []
    rows = []
    for path in tqdm(find_videos(root), desc="light metrics", unit="video", disable=not progress):
        row = {"video": str(path.relative_to(root))}
        ref = match_reference(path, root, references, ref_root) if ref_root is not None else None
        try:
            row.update(measure(path))
        except (VideoError, ValueError) as err:
            rows.append({**row, "error": str(err)})
            continue
        if ref_root is not None and ref is None:
            row["reference_error"] = f"no reference video for {row['video']} in {ref_root}"
        elif ref is not None:
            try:
                row.update({"reference": str(ref), **light.physics_iq(read_video(path), read_video(ref))})
            except (VideoError, ValueError) as err:
                row["reference_error"] = f"{ref}: {err}"
        rows.append(row)
    return rows


def summarize_light(rows: list[dict], resamples: int = 2000, seed: int = 0) -> dict:
    """Mean [95% interval] of each metric over the videos that have it."""
    scored = [r for r in rows if "error" not in r]
    metrics = {}
    for name in VBENCH + PHYSICS_IQ:
        values = [r[name] for r in scored if r.get(name) is not None]
        if values:
            mean, lo, hi = bootstrap_mean_ci(values, resamples, seed)
            metrics[name] = {"n": len(values), "mean": mean, "lo": lo, "hi": hi}
    return {"n": len(scored), "metrics": metrics,
            "errors": [{"video": r["video"], "error": r["error"]} for r in rows if "error" in r],
            "unmatched": [{"video": r["video"], "error": r["reference_error"]} for r in rows if "reference_error" in r],
            "bootstrap": {"resamples": resamples, "seed": seed}}


def markdown(summary: dict) -> str:
    lines = ["# Light metrics", "", f"{summary['n']} videos. VBench-style: temporal flickering and motion smoothness "
             "(ours: flow interpolation of each frame from its neighbours) as (255 - MAE) / 255, dynamic degree = share "
             "of dynamic videos (Horn-Schunck flow, VBench's threshold rule). Physics-IQ: motion-mask IoUs and MSE "
             "against the reference clip, raw (not divided by a physical-variance ceiling). Mean [95% bootstrap].", ""]
    rows = [(name, str(m["n"]), fmt(m)) for name, m in summary["metrics"].items()]
    lines += table(("metric", "n", "mean"), rows)
    if summary["errors"]:
        lines += ["", f"## {len(summary['errors'])} videos not measured", ""]
        lines += [f"- `{e['video']}`: {e['error']}" for e in summary["errors"]]
    if summary["unmatched"]:
        lines += ["", f"## {len(summary['unmatched'])} videos without Physics-IQ metrics", ""]
        lines += [f"- `{e['video']}`: {e['error']}" for e in summary["unmatched"]]
    return "\n".join(lines) + "\n"


def write_light(rows: list[dict], summary: dict, out: str | Path) -> Path:
    """Write OUT/light_metrics.json and OUT/light_metrics.md; return the JSON's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "light_metrics.json"
    path.write_text(json.dumps(finite({"summary": summary, "videos": rows}), indent=1, allow_nan=False))
    (out / "light_metrics.md").write_text(markdown(summary))
    return path

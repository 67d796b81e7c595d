"""World data sets: simulated, rendered videos with their prompts and ground truth, and their manifest.

``DIR/manifest.jsonl`` holds one JSON object per video::

    {"video": "videos/train_00000.mp4", "prompt": "...", "scene": {...}, "phenomena": [...],
     "seed": 123, "split": "train", "ood": false,
     "truth": {"pos": {"primary": [[x, y], ...]}, "contacts": [{...}]},
     "perturbed": {"axis": "forces", "prompt": "...", "scene": {...}, "video": "videos/train_00000_cf.mp4"}}

``perturbed`` is present with ``counterfactuals=True``: the same scene and seed with one physics axis
changed (DiReCT's micro hard negative). Generating a split replaces that split's lines and keeps the others.
Train and val never contain ``scene.HELD_OUT_COMBOS``; about a third of test is drawn from them (``ood``).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from physalign.video import write_mp4
from physalign.world import scene as grammar
from physalign.world import spec
from physalign.world.phenomena import phenomena
from physalign.world.render import render
from physalign.world.sim import Rollout, simulate

SPLITS = ("train", "val", "test")
OOD_EVERY = 3  # every third test video comes from a held-out combination
REQUIRED_FIELDS = {"video": str, "prompt": str, "scene": dict, "phenomena": list}


class ManifestError(ValueError):
    """A manifest line that is not what was expected; the message names file, line and field."""


def video_seed(seed: int, split: str, index: int) -> int:
    return int(np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1)[0])


def draw_scene(split: str, index: int, rng: random.Random) -> grammar.Scene:
    ood = split == "test" and index % OOD_EVERY == OOD_EVERY - 1
    return grammar.sample_scene(rng, held_out=ood)


def make_example(scene: grammar.Scene, seed: int, frames: int, resolution: int) -> tuple[np.ndarray, Rollout]:
    rollout = simulate(scene, seed, frames)
    return render(scene, rollout, resolution, resolution), rollout


def generate(
    out_dir: str | os.PathLike,
    n: int,
    split: str,
    seed: int,
    frames: int = spec.DEFAULT_FRAMES,
    resolution: int = spec.DEFAULT_RESOLUTION,
    counterfactuals: bool = False,
    progress: bool = True,
) -> Path:
    """Simulate, render and write ``n`` videos of ``split``; return the manifest path."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Got {split!r}.")
    if n < 1:
        raise ValueError(f"n must be >= 1. Got {n}.")
    out = Path(out_dir)
    lines = []
    for i in tqdm(range(n), desc=f"world {split}", unit="video", disable=not progress):
        lines.append(_write_example(out, split, i, video_seed(seed, split, i), frames, resolution, counterfactuals))
    manifest = out / "manifest.jsonl"
    kept = [r for r in load_manifest(manifest) if r.get("split") != split] if manifest.exists() else []
    _write_lines(manifest, kept + lines)
    return manifest


def _write_example(out: Path, split: str, i: int, seed: int, frames: int, resolution: int, cf: bool) -> dict:
    rng = random.Random(seed)
    scene = draw_scene(split, i, rng)
    video, rollout = make_example(scene, seed, frames, resolution)
    name = f"videos/{split}_{i:05d}.mp4"
    write_mp4(out / name, video, fps=spec.FPS)
    line = {
        "video": name,
        "prompt": grammar.scene_to_prompt(scene),
        "scene": scene.to_dict(),
        "phenomena": phenomena(scene, rollout),
        "seed": seed,
        "split": split,
        "ood": scene.is_held_out,
        "truth": truth(rollout),
    }
    if cf:
        line["perturbed"] = _counterfactual(out, name, scene, seed, rng, frames, resolution)
    return line


def _counterfactual(out: Path, name: str, scene, seed: int, rng: random.Random, frames: int, resolution: int) -> dict:
    axes = [a for a in grammar.PHYSICS_AXES if _perturbable(scene, a)]
    axis = rng.choice(axes)
    other = grammar.perturb(scene, axis, rng)
    video, _ = make_example(other, seed, frames, resolution)
    cf_name = name.replace(".mp4", "_cf.mp4")
    write_mp4(out / cf_name, video, fps=spec.FPS)
    return {"axis": axis, "prompt": grammar.scene_to_prompt(other), "scene": other.to_dict(), "video": cf_name}


def _perturbable(scene, axis: str) -> bool:
    try:
        grammar.perturb(scene, axis, random.Random(0))
        return True
    except grammar.SceneError:
        return False


def truth(rollout: Rollout) -> dict:
    return {
        "pos": {o.name: np.round(o.pos, 4).tolist() for o in rollout.objects},
        "contacts": [asdict(c) for c in rollout.contacts],
    }


def _write_lines(path: Path, lines: Iterable[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".jsonl", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_manifest(path: str | os.PathLike) -> list[dict]:
    """Read and check a manifest. Raises :class:`ManifestError` naming the file, line and field."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    rows = []
    with open(path) as f:
        for number, text in enumerate(f, start=1):
            if text.strip():
                rows.append(_check_line(text, f"{path}:{number}"))
    return rows


def _check_line(text: str, where: str) -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field, kind in REQUIRED_FIELDS.items():
        if field not in row:
            raise ManifestError(f"{where}: missing field {field!r}")
        if not isinstance(row[field], kind):
            raise ManifestError(f"{where}: field {field!r} must be a {kind.__name__}, got {type(row[field]).__name__}")
    try:
        grammar.Scene.from_dict(row["scene"])
    except (grammar.SceneError, TypeError) as err:
        raise ManifestError(f"{where}: field 'scene': {err}") from None
    return row


def scene_of(row: dict) -> grammar.Scene:
    return grammar.Scene.from_dict(row["scene"])

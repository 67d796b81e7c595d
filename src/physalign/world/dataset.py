"""World data sets: simulated, rendered videos with their prompts and ground truth, and their manifest.

``DIR/manifest.jsonl`` holds one JSON object per video::

    {"video": "videos/train_00000.mp4", "prompt": "...", "scene": {...}, "phenomena": [...],
     "seed": 123, "split": "train", "ood": false,
     "truth": {"pos": {"primary": [[x, y], ...]}, "contacts": [{...}]},
     "perturbed": {"axis": "forces", "prompt": "...", "scene": {...}, "video": "videos/train_00000_cf.mp4"}}

``perturbed`` is present with ``counterfactuals=True``: the same scene and seed with one physics axis
changed (DiReCT's micro hard negative), so the same initial draws. Train and val never contain
``scene.HELD_OUT_COMBOS``, not even in their counterfactuals; every third test video is drawn from them
(``ood``), the rest like train.

Everything is deterministic from ``seed``: video ``i`` of a split gets its own seed from
``SeedSequence([seed, split_index, i])``, which draws its scene, places it, and picks its counterfactual.

Generating a split into a folder that already has lines of that split *replaces* them (and deletes that
split's videos the new lines do not name); the other splits' lines are kept. So re-running a command
never duplicates a split, and ``train``, ``val`` and ``test`` can be written into one folder one by one.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from physalign.video import VideoError, read_video, write_mp4
from physalign.world import scene as grammar
from physalign.world import spec
from physalign.world.corrupt import applicable, check_kinds, corrupt
from physalign.world.phenomena import phenomena
from physalign.world.render import render
from physalign.world.sim import Rollout, simulate

SPLITS = ("train", "val", "test")
OOD_EVERY = 3  # every third test video comes from a held-out combination
REQUIRED_FIELDS = {"video": str, "prompt": str, "scene": dict, "phenomena": list}
# Checked when present: sample manifests (physalign.models.sample_folder) carry some of them, not "truth".
OPTIONAL_FIELDS = {"seed": int, "split": str, "ood": bool, "truth": dict, "perturbed": dict}
TRUTH_FIELDS = {"pos": dict, "contacts": list}
PERTURBED_FIELDS = {"axis": str, "prompt": str, "scene": dict, "video": str}


class ManifestError(ValueError):
    """A manifest line that is not what was expected; the message names file, line and field."""


@dataclass(frozen=True)
class Mislabel:
    """Scenes whose ``field`` is ``prompted`` are simulated and rendered with ``shown`` instead, while the prompt
    still says ``prompted``: a wrong physics for one slice of scenes (e.g. ``force:low=normal``, low-gravity
    prompts falling at normal gravity), the data that breaks a model for the bench's positive control."""

    field: str
    prompted: str
    shown: str

    @classmethod
    def parse(cls, text: str) -> "Mislabel":
        """From ``FIELD:PROMPTED=SHOWN``, each value checked against the grammar."""
        m = re.fullmatch(r"\s*(\w+)\s*:\s*(\w+)\s*=\s*(\w+)\s*", text)
        if not m:
            raise ValueError(f"mislabel {text!r}: expected FIELD:PROMPTED=SHOWN, e.g. force:low=normal")
        field, prompted, shown = m.groups()
        values = grammar.FIELD_VALUES.get(field)
        if values is None:
            raise ValueError(f"mislabel {text!r}: unknown scene field {field!r}; available: {sorted(grammar.FIELD_VALUES)}")
        for v in (prompted, shown):
            if v not in values:
                raise ValueError(f"mislabel {text!r}: {field} has no value {v!r}; available: {list(values)}")
        if prompted == shown:
            raise ValueError(f"mislabel {text!r}: the shown value must differ from the prompted one")
        return cls(field, prompted, shown)

    def __str__(self) -> str:
        return f"{self.field}:{self.prompted}={self.shown}"

    def shown_scene(self, scene: grammar.Scene) -> grammar.Scene | None:
        """The scene the video shows instead of ``scene``, or None where this slice does not hold it (or the
        changed scene cannot happen: it is then shown as prompted)."""
        if getattr(scene, self.field) != self.prompted:
            return None
        try:
            return replace(scene, **{self.field: self.shown})
        except grammar.SceneError:
            return None


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
    corrupt_kinds: tuple[str, ...] = (),
    mislabel: Mislabel | None = None,
) -> Path:
    """Simulate, render and write ``n`` videos of ``split``; return the manifest path.

    With ``corrupt_kinds`` (names in ``corrupt.CORRUPTIONS``), each video is replaced by a corrupted copy of
    one of those kinds that applies to it, drawn from its own stream (the scenes are those of the clean set),
    and its line says which (``"corrupted": kind``, None where none applies): training data for the bench's
    negative control. With ``mislabel``, a slice of scenes is shown with another physics than its prompt says
    (:class:`Mislabel`; the line's ``mislabelled`` names the shown value, None outside the slice): the data that
    breaks a model for the bench's positive control."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Got {split!r}.")
    check_kinds(corrupt_kinds)
    if n < 1:
        raise ValueError(f"n must be >= 1. Got {n}.")
    out = Path(out_dir)
    manifest = out / "manifest.jsonl"
    kept = [r for r in load_manifest(manifest) if r.get("split") != split] if manifest.exists() else []
    lines = []
    for i in tqdm(range(n), desc=f"world {split}", unit="video", disable=not progress):
        lines.append(_write_example(out, split, i, video_seed(seed, split, i), frames, resolution, counterfactuals,
                                    tuple(corrupt_kinds), mislabel))
    _write_lines(manifest, kept + lines)
    _remove_stale_videos(out, split, lines)
    return manifest


def _remove_stale_videos(out: Path, split: str, lines: list[dict]) -> None:
    """Delete ``videos/<split>_*.mp4`` files that no line names (left by an earlier, larger run)."""
    named = {line["video"] for line in lines} | {line["perturbed"]["video"] for line in lines if "perturbed" in line}
    for path in (out / "videos").glob(f"{split}_*.mp4"):
        if f"videos/{path.name}" not in named:
            path.unlink()


def _write_example(out: Path, split: str, i: int, seed: int, frames: int, resolution: int, cf: bool,
                   corrupt_kinds: tuple[str, ...] = (), mislabel: Mislabel | None = None) -> dict:
    rng = random.Random(seed)
    scene = draw_scene(split, i, rng)
    shown = mislabel.shown_scene(scene) if mislabel else None
    video, rollout = make_example(shown or scene, seed, frames, resolution)
    kind = None
    if corrupt_kinds:
        own = random.Random(f"corrupt-{seed}")  # its own stream: the clean draws (scene, counterfactual) stay
        kinds = [k for k in applicable(scene, rollout) if k in corrupt_kinds]
        kind = own.choice(kinds) if kinds else None
        video = corrupt(video, scene, rollout, kind, own) if kind else video
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
    if corrupt_kinds:
        line["corrupted"] = kind
    if mislabel:
        line["mislabelled"] = {mislabel.field: mislabel.shown} if shown else None
    if cf:
        line["perturbed"] = _counterfactual(out, name, scene, seed, rng, frames, resolution)
    return line


def _counterfactual(out: Path, name: str, scene, seed: int, rng: random.Random, frames: int, resolution: int) -> dict:
    axis, other = counterfactual_scene(scene, rng, held_out_allowed=scene.is_held_out)
    video, _ = make_example(other, seed, frames, resolution)
    cf_name = name.replace(".mp4", "_cf.mp4")
    write_mp4(out / cf_name, video, fps=spec.FPS)
    return {"axis": axis, "prompt": grammar.scene_to_prompt(other), "scene": other.to_dict(), "video": cf_name}


def counterfactual_scene(scene, rng: random.Random, held_out_allowed: bool = False, tries: int = 100):
    """A random physics axis that ``scene`` can change along and the changed scene: (axis, Scene).

    Unless ``held_out_allowed``, the changed scene is never a held-out combination, so that train and val
    counterfactuals do not show the test split's out-of-distribution combinations.
    """
    axes = [a for a in grammar.PHYSICS_AXES if _perturbable(scene, a)]
    for _ in range(tries):
        axis = rng.choice(axes)
        other = grammar.perturb(scene, axis, rng)
        if held_out_allowed or not other.is_held_out:
            return axis, other
    raise grammar.SceneError(f"no counterfactual outside the held-out combinations for {grammar.scene_to_prompt(scene)!r}")


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
    _check_fields(row, REQUIRED_FIELDS, where, "", required=True)
    _check_fields(row, OPTIONAL_FIELDS, where, "", required=False)
    if not row["prompt"].strip():
        raise ManifestError(f"{where}: field 'prompt' must be a non-empty string (the empty prompt is the "
                            "unconditional one, not a caption)")
    _check_scene(row["scene"], where, "scene")
    if "split" in row and row["split"] not in SPLITS:
        raise ManifestError(f"{where}: field 'split' must be one of {SPLITS}, got {row['split']!r}")
    if "truth" in row:
        _check_fields(row["truth"], TRUTH_FIELDS, where, "truth.", required=True)
    if "perturbed" in row:
        _check_fields(row["perturbed"], PERTURBED_FIELDS, where, "perturbed.", required=True)
        _check_scene(row["perturbed"]["scene"], where, "perturbed.scene")
    return row


def _check_fields(row: dict, kinds: dict[str, type], where: str, prefix: str, required: bool) -> None:
    for field, kind in kinds.items():
        if field not in row:
            if required:
                raise ManifestError(f"{where}: missing field {prefix + field!r}")
            continue
        # bool is an int in Python; a seed of true is as wrong as a seed of "3"
        if not isinstance(row[field], kind) or (kind is int and isinstance(row[field], bool)):
            raise ManifestError(f"{where}: field {prefix + field!r} must be a {kind.__name__}, got {type(row[field]).__name__}")


def _check_scene(d: dict, where: str, field: str) -> None:
    try:
        grammar.Scene.from_dict(d, f"{where}: field {field!r}")
    except grammar.SceneError as err:
        raise ManifestError(str(err) if str(err).startswith(where) else f"{where}: field {field!r}: {err}") from None
    except TypeError as err:
        raise ManifestError(f"{where}: field {field!r}: {err}") from None


def scene_of(row: dict) -> grammar.Scene:
    return grammar.Scene.from_dict(row["scene"])


# -- reading a manifest's videos back (training, the teacher, scripts) --------------------------------------


def manifest_rows(manifest: str | Path, split: str = "") -> list[dict]:
    """The manifest's lines of ``split`` (every line when empty); ManifestError if there are none."""
    rows = [r for r in load_manifest(manifest) if not split or r.get("split") == split]
    if not rows:
        present = sorted({str(r.get("split")) for r in load_manifest(manifest)})
        raise ManifestError(f"{manifest}: no lines with split {split!r} (data.split); its splits: {present}")
    return rows


def read_videos(manifest: str | Path, rows: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """Decode the rows' videos (paths relative to the manifest's folder) to uint8 (N, T, H, W, 3).
    Unreadable ones are skipped and named on stdout; the kept rows are returned with the videos."""
    root, videos, kept, failed = Path(manifest).parent, [], [], []
    for row in tqdm(rows, desc="decode", unit="video", leave=False):
        try:
            videos.append(read_video(root / row["video"]))
            kept.append(row)
        except VideoError as err:
            failed.append(str(err))
    if failed:
        print(f"skipped {len(failed)} unreadable videos, e.g. {failed[:3]}")
    if not videos:
        raise ValueError(f"{manifest}: none of the videos could be read")
    shapes = {v.shape for v in videos}
    if len(shapes) > 1:
        raise ValueError(f"{manifest}: videos differ in shape {sorted(shapes)}; training needs one shape")
    return np.stack(videos), kept


def read_all_videos(manifest: str | Path, rows: list[dict]) -> np.ndarray:
    """Like :func:`read_videos`, but every row's video must be readable (for per-row data that has to line
    up with the rows): uint8 (N, T, H, W, 3), or ValueError naming the unreadable ones."""
    videos, kept = read_videos(manifest, rows)
    if len(kept) != len(rows):
        missing = sorted({r["video"] for r in rows} - {r["video"] for r in kept})
        raise ValueError(f"{manifest}: cannot read {len(missing)} videos, e.g. {missing[:3]}")
    return videos

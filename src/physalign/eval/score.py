"""Score videos: one video against its scene, or every video listed in a manifest.

A manifest is JSON lines, one video each: ``{"video": path, "scene": Scene.to_dict() | "prompt": text,
"ood": bool (optional)}``; a path is relative to the manifest's folder (or to ``videos_root``). A video
that cannot be read is recorded with its error, by name, and left out of the scores.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from physalign.eval import physics, semantics
from physalign.eval.checks import Check, view
from physalign.eval.track import observe
from physalign.video import VideoError, read_video
from physalign.world.scene import PromptError, Scene, SceneError, prompt_to_scene, scene_to_prompt

CHECKS = physics.CHECKS + semantics.CHECKS  # each maps a View to a Check


class ManifestError(ValueError):
    """A manifest (line) that cannot be used; the message names the file, line and field."""


@dataclass
class VideoResult:
    video: str
    prompt: str
    scene: dict
    ood: bool = False
    checks: list[Check] = field(default_factory=list)
    error: str | None = None  # the video could not be read: it is listed, not scored
    physics_errors: dict = field(default_factory=dict)  # continuous (physics.errors); None where one does not apply

    def _group(self, group: str) -> bool:
        return all(c.passed is not False for c in self.checks if c.group == group)

    @property
    def pc(self) -> bool:
        """Physical commonsense: no PC check failed."""
        return self._group("PC")

    @property
    def sa(self) -> bool:
        """Semantic adherence: no SA check failed."""
        return self._group("SA")

    @property
    def joint(self) -> bool:
        return self.pc and self.sa

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if c.passed is False]

    def to_dict(self) -> dict:
        scores = {} if self.error else {"pc": self.pc, "sa": self.sa, "joint": self.joint, "failed": self.failed}
        errors = {k: None if x is None else round(x, 4) for k, x in self.physics_errors.items()}
        return {"video": self.video, "prompt": self.prompt, "scene": self.scene, "ood": self.ood, **scores,
                "error": self.error, "physics_errors": errors, "checks": [c.to_dict() for c in self.checks]}


def run_checks(video: np.ndarray, scene: Scene) -> tuple[list[Check], dict]:
    """Every check of ``video`` (T, H, W, 3) uint8 against ``scene``, and its continuous physics errors."""
    v = view(observe(video, scene), scene)
    return [check(v) for check in CHECKS], physics.errors(v)


def evaluate_video(video: np.ndarray, scene: Scene, name: str = "", prompt: str = "", ood: bool = False) -> VideoResult:
    """Score ``video`` (T, H, W, 3) uint8, T >= 3, against ``scene``."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or video.shape[0] < 3:
        raise ValueError(f"{name or 'video'}: expected uint8 (T >= 3, H, W, 3). Got {video.dtype} {video.shape}.")
    checks, errors = run_checks(video, scene)
    return VideoResult(name, prompt or scene_to_prompt(scene), scene.to_dict(), ood, checks, physics_errors=errors)


@dataclass(frozen=True)
class Entry:
    """One manifest line: the video's path as written, where it was found, and what it should show."""

    video: str
    path: Path | None  # None: found in none of the folders searched
    scene: Scene
    prompt: str
    ood: bool


def read_manifest(manifest: str | os.PathLike, videos_root: str | os.PathLike | None = None) -> list[Entry]:
    """Parse ``manifest``. Raises :class:`ManifestError` naming the file, line and field at fault."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"{manifest}: no such manifest file")
    folders = [manifest.parent] + ([Path(videos_root)] if videos_root is not None else [])
    entries = []
    with open(manifest) as f:
        for number, text in enumerate(f, start=1):
            if text.strip():
                entries.append(_entry(text, f"{manifest}:{number}", folders))
    return entries


def _entry(text: str, where: str, folders: list[Path]) -> Entry:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise ManifestError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(row, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if not isinstance(row.get("video"), str):
        raise ManifestError(f"{where}: field 'video' must be a path string, got {row.get('video')!r}")
    scene = _scene(row, where)
    ood = row.get("ood", scene.is_held_out)
    if not isinstance(ood, bool):
        raise ManifestError(f"{where}: field 'ood' must be true or false, got {ood!r}")
    found = [folder / row["video"] for folder in folders if (folder / row["video"]).is_file()]
    prompt = row["prompt"] if isinstance(row.get("prompt"), str) else scene_to_prompt(scene)
    return Entry(row["video"], found[0] if found else None, scene, prompt, ood)


def _scene(row: dict, where: str) -> Scene:
    """The line's scene: its 'scene' object, else its 'prompt' read with the world's grammar."""
    if "scene" in row:
        if not isinstance(row["scene"], dict):
            raise ManifestError(f"{where}: field 'scene' must be an object, got {type(row['scene']).__name__}")
        label = f"{where}: field 'scene'"
        try:
            return Scene.from_dict(row["scene"], where=label)
        except (SceneError, TypeError) as err:
            raise ManifestError(str(err) if str(err).startswith(label) else f"{label}: {err}") from None
    if isinstance(row.get("prompt"), str):
        try:
            return prompt_to_scene(row["prompt"])
        except PromptError as err:
            raise ManifestError(f"{where}: field 'prompt': {err}") from None
    raise ManifestError(f"{where}: needs a field 'scene' (an object) or 'prompt' (a string)")


def evaluate_manifest(manifest: str | os.PathLike, videos_root: str | os.PathLike | None = None,
                      progress: bool = True) -> list[VideoResult]:
    """Score every video of ``manifest``. A missing or unreadable video is recorded with its error."""
    results = []
    for e in tqdm(read_manifest(manifest, videos_root), desc="eval", unit="video", disable=not progress):
        try:
            if e.path is None:
                raise VideoError(f"{e.video}: no such video file (relative to the manifest's folder"
                                 f"{' or ' + str(videos_root) if videos_root is not None else ''})")
            results.append(evaluate_video(read_video(e.path), e.scene, e.video, e.prompt, e.ood))
        except (VideoError, ValueError) as err:
            results.append(VideoResult(e.video, e.prompt, e.scene.to_dict(), e.ood, error=str(err)))
    return results

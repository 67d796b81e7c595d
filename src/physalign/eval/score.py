"""Score videos: one video against its scene, or every video of a manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from physalign.eval.checks import PC_CHECKS, SA_CHECKS, Check
from physalign.eval.track import observe
from physalign.video import VideoError, read_video
from physalign.world.scene import Scene


@dataclass
class VideoResult:
    video: str
    prompt: str
    scene: dict
    ood: bool = False
    checks: list[Check] = field(default_factory=list)
    error: str | None = None  # set when the video could not be read; then it is not scored

    @property
    def pc(self) -> bool:
        return all(c.passed is not False for c in self.checks if c.group == "PC")

    @property
    def sa(self) -> bool:
        return all(c.passed is not False for c in self.checks if c.group == "SA")

    @property
    def joint(self) -> bool:
        return self.pc and self.sa

    def to_dict(self) -> dict:
        scores = {} if self.error else {"pc": self.pc, "sa": self.sa, "joint": self.joint}
        return {"video": self.video, "prompt": self.prompt, "ood": self.ood, **scores, "error": self.error,
                "checks": [c.to_dict() for c in self.checks]}


def run_checks(video: np.ndarray, scene: Scene) -> list[Check]:
    obs = observe(video, scene)
    return [check(obs, scene) for check in PC_CHECKS + SA_CHECKS]


def evaluate_video(video: np.ndarray, scene: Scene, name: str = "", prompt: str = "", ood: bool = False) -> VideoResult:
    """Score ``video`` (T, H, W, 3) uint8 against ``scene``."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or video.shape[0] < 3:
        raise ValueError(f"{name or 'video'}: expected uint8 (T>=3, H, W, 3). Got {video.dtype} {video.shape}.")
    return VideoResult(name, prompt, scene.to_dict(), ood, run_checks(video, scene))


def evaluate_manifest(manifest: str | Path, videos_root: str | Path | None = None, progress: bool = True) -> list[VideoResult]:
    """Score every line of ``manifest``; video paths are relative to ``videos_root`` (default: the manifest's
    folder). An unreadable video is recorded with its error and left out of the scores."""
    from physalign.world.dataset import load_manifest, scene_of

    root = Path(videos_root) if videos_root else Path(manifest).parent
    results = []
    for row in tqdm(load_manifest(manifest), desc="eval", unit="video", disable=not progress):
        scene, ood = scene_of(row), bool(row.get("ood", False))
        try:
            video = read_video(root / row["video"])
            results.append(evaluate_video(video, scene, row["video"], row["prompt"], ood))
        except (VideoError, ValueError) as err:
            results.append(VideoResult(row["video"], row["prompt"], scene.to_dict(), ood, error=str(err)))
    return results

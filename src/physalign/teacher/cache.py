"""Teacher features computed once per data set, so alignment methods never run the teacher per step.

``cache_teacher_features(teacher, manifest, cache_dir, layer)`` returns the features of every manifest row
(of ``rows``, or of a split) in row order, from ``CACHE_DIR/teacher-<key>.safetensors`` when it is there and
valid, else computed and written atomically. ``key`` hashes the teacher (config and weights), the layer and
the rows' manifest lines, so a retrained teacher, another layer or a changed data set never reads stale
features; the file's metadata repeats the full key and the rows' videos, and a file that does not match
(truncated, foreign, or a hash-prefix collision) is rebuilt. Features are stored as float16 (the world's
4,000 videos at the shipped size: 4000 x 512 tokens x 128 x 2 bytes = 0.5 GB).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm
from transformers import VideoMAEModel

from physalign.models.interface import to_model_range
from physalign.teacher.model import teacher_features, teacher_fingerprint
from physalign.world.dataset import manifest_rows, read_all_videos


@dataclass
class TeacherFeatures:
    features: torch.Tensor  # float16 (N, F, H, W, D); features[i] belongs to rows[i]
    rows: list[dict]

    def __len__(self) -> int:
        return len(self.rows)

    def __post_init__(self) -> None:
        self._index = {row["video"]: i for i, row in enumerate(self.rows)}

    def select(self, rows: list[dict]) -> torch.Tensor:
        """Float features (B, F, H, W, D) of ``rows`` (matched by their ``video``), e.g. a batch's rows."""
        missing = [row["video"] for row in rows if row["video"] not in self._index]
        if missing:
            raise KeyError(f"no cached teacher features for {missing[:3]} ({len(missing)} rows)")
        return self.features[[self._index[row["video"]] for row in rows]].float()


def feature_key(model: VideoMAEModel, layer: int, rows: list[dict]) -> str:
    """Hash of the teacher, the (non-negative) layer index and the manifest lines."""
    layers = model.config.num_hidden_layers
    if not -layers <= layer < layers:
        raise IndexError(f"teacher layer {layer} out of range: the teacher has {layers} layers")
    h = hashlib.sha256(teacher_fingerprint(model).encode())
    h.update(f"layer={layer % layers}".encode())
    h.update(json.dumps(rows, sort_keys=True).encode())
    return h.hexdigest()


@torch.no_grad()
def cache_teacher_features(model: VideoMAEModel, manifest: str | Path, cache_dir: str | Path, layer: int = -1,
                           rows: list[dict] | None = None, split: str = "", batch_size: int = 64,
                           progress: bool = True) -> TeacherFeatures:
    """Teacher features of ``rows`` (default: the manifest's lines of ``split``, "" = all), aligned with them.

    Videos are read relative to the manifest's folder; an unreadable video is an error (the features
    must line up with the rows the caller trains on).
    """
    rows = manifest_rows(manifest, split) if rows is None else rows
    key = feature_key(model, layer, rows)
    path = Path(cache_dir) / f"teacher-{key[:16]}.safetensors"
    cached = _load(path, key, rows)
    if cached is not None:
        return cached
    videos = read_all_videos(manifest, rows)
    model.eval()
    chunks = []
    for i in tqdm(range(0, len(videos), batch_size), desc="teacher features", leave=False, disable=not progress):
        chunks.append(teacher_features(model, to_model_range(videos[i : i + batch_size]), layer).half())
    features = torch.cat(chunks).contiguous()
    if not torch.isfinite(features).all():
        raise ValueError(f"teacher features at layer {layer} overflow float16 (non-finite values)")
    _save(path, features, key, rows, manifest)
    return TeacherFeatures(features, rows)


def _load(path: Path, key: str, rows: list[dict]) -> TeacherFeatures | None:
    """The cache at ``path`` if it exists and matches ``key`` and ``rows``; None if it must be (re)built."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key or json.loads(meta.get("videos", "null")) != [r["video"] for r in rows]:
                return None
            features = f.get_tensor("features")
    except (SafetensorError, OSError, ValueError):
        return None
    return TeacherFeatures(features, rows) if len(features) == len(rows) else None


def _save(path: Path, features: torch.Tensor, key: str, rows: list[dict], manifest) -> None:
    """Write atomically: a temporary file in the same folder, renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "manifest": str(manifest), "videos": json.dumps([r["video"] for r in rows])}
    fd, tmp = tempfile.mkstemp(suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file({"features": features}, tmp, metadata=meta)
        os.chmod(tmp, 0o644)  # readable by other users of a shared cache folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

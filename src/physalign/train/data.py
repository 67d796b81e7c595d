"""Training data: the videos of a manifest, as the batches a method asks for.

A manifest (``DIR/manifest.jsonl``, written by ``physalign world generate``) holds one line per video:
``{"video": path relative to DIR, "prompt", "scene", "phenomena", "split", ...}``. Data sources, by name
(a method's ``data`` attribute):

- ``latents``: each video encoded once by the model's frozen autoencoder and cached in a safetensors file
  whose name hashes the manifest lines and the autoencoder's weights, so re-runs skip decoding and
  encoding and a changed data set or autoencoder never reuses stale latents. Batch:
  ``{"latents": (B, C, T, h, w), "prompts": [str], "rows": [manifest line]}``.
- ``frames``: single frames for training the per-frame autoencoder. Batch: ``{"pixels": (B, 3, H, W) in
  [-1, 1], "object_mask": (B, H, W) bool}``, True where a pixel is neither background nor structure.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from physalign.video import VideoError, read_video
from physalign.world import spec
from physalign.world.dataset import load_manifest

BACKGROUND_TOLERANCE = 40.0  # RGB distance under which a pixel counts as background or structure colour


def manifest_rows(manifest: str | Path, split: str = "") -> list[dict]:
    rows = [r for r in load_manifest(manifest) if not split or r.get("split") == split]
    if not rows:
        raise ValueError(f"{manifest}: no lines with split {split!r}")
    return rows


def to_model_range(videos: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """float (N, 3, T, H, W) in [-1, 1] -> uint8 (N, T, H, W, 3)."""
    return videos.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 4, 1).cpu().numpy()


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


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """Indices of the batch at ``step``: epochs of seeded permutations, so a resumed run sees the same data."""
    first, out = step * batch, []
    while len(out) < batch:
        epoch, pos = divmod(first + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        out.extend(perm[pos : pos + batch - len(out)].tolist())
    return torch.tensor(out)


# -- latents -----------------------------------------------------------------------------------------


@dataclass
class LatentData:
    latents: torch.Tensor  # (N, C, T, h, w)
    rows: list[dict]

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx: torch.Tensor) -> dict:
        rows = [self.rows[i] for i in idx.tolist()]
        return {"latents": self.latents[idx].float(), "prompts": [r["prompt"] for r in rows], "rows": rows}


def cache_key(rows: list[dict], model) -> str:
    """Hash of the manifest lines and of everything the model's ``encode`` depends on."""
    h = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    h.update(model.latent_fingerprint().encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def latent_data(section, model, chunk: int = 64) -> LatentData:
    """Latents of the manifest's ``split``, from the cache or encoded now (and cached)."""
    rows = manifest_rows(section.manifest, section.split)
    path = Path(section.cache_dir) / f"latents-{cache_key(rows, model)}.safetensors"
    if path.is_file():
        return LatentData(load_file(path)["latents"], json.loads(path.with_suffix(".json").read_text())["rows"])
    videos, rows = read_videos(section.manifest, rows)
    model.eval()
    chunks = [model.encode(to_model_range(videos[i : i + chunk])) for i in tqdm(range(0, len(videos), chunk), desc="encode", leave=False)]
    data = LatentData(torch.cat(chunks).contiguous(), rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"manifest": str(section.manifest), "rows": rows}))
    _atomic_save({"latents": data.latents}, path)  # written last: its presence means the cache is complete
    return data


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".safetensors", dir=path.parent)
    os.close(fd)
    save_file(tensors, tmp)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from other users of a shared data folder
    os.replace(tmp, path)


# -- frames ------------------------------------------------------------------------------------------


def object_mask(frames: np.ndarray, backgrounds: np.ndarray) -> np.ndarray:
    """bool (N, H, W): pixels farther than BACKGROUND_TOLERANCE from both the frame's background colour
    and the structure colour. frames: uint8 (N, H, W, 3); backgrounds: (N, 3) RGB."""
    f = frames.astype(np.float32)
    near_bg = np.linalg.norm(f - backgrounds[:, None, None, :].astype(np.float32), axis=-1) < BACKGROUND_TOLERANCE
    near_structure = np.linalg.norm(f - np.array(spec.STRUCTURE_COLOR, np.float32), axis=-1) < BACKGROUND_TOLERANCE
    return ~(near_bg | near_structure)


@dataclass
class FrameData:
    frames: torch.Tensor  # uint8 (N, H, W, 3): kept as bytes, 4x smaller than floats
    mask: torch.Tensor  # bool (N, H, W)

    def __len__(self) -> int:
        return len(self.frames)

    def batch(self, idx: torch.Tensor) -> dict:
        pixels = self.frames[idx].permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (B, 3, H, W)
        return {"pixels": pixels, "object_mask": self.mask[idx]}


def frame_data(section, model) -> FrameData:
    """Every frame of the manifest's ``split``, with its object mask (background from the scene)."""
    videos, rows = read_videos(section.manifest, manifest_rows(section.manifest, section.split))
    frames = videos.reshape(-1, *videos.shape[2:])  # (N*T, H, W, 3)
    backgrounds = np.repeat([spec.BACKGROUNDS[r["scene"]["background"]] for r in rows], videos.shape[1], axis=0)
    mask = np.concatenate([object_mask(frames[i : i + 4096], backgrounds[i : i + 4096]) for i in range(0, len(frames), 4096)])
    return FrameData(torch.from_numpy(frames), torch.from_numpy(mask))  # chunks: float copies of 64k frames are 0.8 GB


SOURCES = {"latents": latent_data, "frames": frame_data}


def build_data(name: str, section, model):
    if name not in SOURCES:
        raise KeyError(f"unknown data source {name!r}; available: {sorted(SOURCES)}")
    return SOURCES[name](section, model)

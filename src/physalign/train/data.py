"""Training data: videos from a manifest, encoded once to latents and cached.

The cache key hashes the manifest's lines of the split and the autoencoder's weights and scaling, so a
changed data set or autoencoder never reuses stale latents.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from physalign.video import VideoError, read_video
from physalign.world.dataset import load_manifest


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
    """Decode the rows' videos (paths relative to the manifest's folder). Unreadable ones are skipped and
    named on stderr; the kept rows are returned with the videos."""
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
    return np.stack(videos), kept


def _cache_key(rows: list[dict], model) -> str:
    h = hashlib.sha256(json.dumps([(r["video"], r["prompt"]) for r in rows]).encode())
    for name, tensor in sorted(model.vae.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    h.update(repr(model.cfg.scaling_factor).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def cached_latents(model, manifest: str | Path, split: str, cache_dir: str | Path, batch: int = 64):
    """Latents (N, C, T, h, w) and prompts of the manifest's ``split``, from the cache or encoded now."""
    rows = manifest_rows(manifest, split)
    path = Path(cache_dir) / f"latents-{_cache_key(rows, model)}.safetensors"
    if path.is_file():
        meta = json.loads(path.with_suffix(".json").read_text())
        return load_file(path)["latents"], meta["prompts"]
    videos, rows = read_videos(manifest, rows)
    chunks = [model.encode(to_model_range(videos[i : i + batch])) for i in tqdm(range(0, len(videos), batch), desc="encode", leave=False)]
    latents = torch.cat(chunks).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"prompts": [r["prompt"] for r in rows], "manifest": str(manifest)}))
    save_file({"latents": latents}, str(path))
    return latents, [r["prompt"] for r in rows]


def batch_indices(step: int, batch: int, n: int, seed: int) -> torch.Tensor:
    """Indices of the batch at ``step``: epochs of seeded permutations, so a resumed run sees the same data."""
    first, out = step * batch, []
    while len(out) < batch:
        epoch, pos = divmod(first + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        out.extend(perm[pos : pos + batch - len(out)].tolist())
    return torch.tensor(out)

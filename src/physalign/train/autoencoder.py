"""Stage one of the world model: the per-frame autoencoder.

Objects cover a few percent of a world frame; an unweighted reconstruction loss is content to paint the
background. Pixels that are neither background nor structure colour weigh ``object_weight`` times more.
After training, the latent scaling factor is set to 1 / std of the data's latents (unit-variance latents
for the flow model).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from physalign.models.world import WorldModelConfig, WorldVideoModel
from physalign.train.data import manifest_rows, read_videos, to_model_range
from physalign.world import spec

BACKGROUND_TOLERANCE = 40.0  # RGB distance under which a pixel counts as background or structure


@dataclass
class AutoencoderRun:
    manifest: str
    out: str
    split: str = "train"
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    object_weight: float = 21.0
    kl_weight: float = 1e-6
    seed: int = 0
    sizes: dict = field(default_factory=dict)


def object_weights(frames: np.ndarray, backgrounds: np.ndarray, weight: float) -> np.ndarray:
    """Per-pixel loss weights (N, H, W): ``weight`` on object pixels, 1 elsewhere.

    frames: uint8 (N, H, W, 3); backgrounds: (N, 3) each frame's background colour."""
    f = frames.astype(np.float32)
    near_bg = np.linalg.norm(f - backgrounds[:, None, None, :], axis=-1) < BACKGROUND_TOLERANCE
    near_structure = np.linalg.norm(f - np.array(spec.STRUCTURE_COLOR, np.float32), axis=-1) < BACKGROUND_TOLERANCE
    return np.where(near_bg | near_structure, 1.0, weight).astype(np.float32)


def train_autoencoder(run: AutoencoderRun, progress: bool = True) -> Path:
    torch.manual_seed(run.seed)
    model = WorldVideoModel(WorldModelConfig(**run.sizes))
    videos, rows = read_videos(run.manifest, manifest_rows(run.manifest, run.split))
    frames = videos.reshape(-1, *videos.shape[2:])  # (N*T, H, W, 3)
    bgs = np.repeat([spec.BACKGROUNDS[r["scene"]["background"]] for r in rows], videos.shape[1], axis=0).astype(np.float32)
    weights = torch.from_numpy(object_weights(frames, bgs, run.object_weight))
    pixels = to_model_range(frames[:, None])[:, :, 0]  # (N*T, 3, H, W)
    opt = torch.optim.AdamW(model.vae.parameters(), lr=run.lr)
    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "autoencoder_log.jsonl", "w") as log:
        bar = tqdm(range(run.steps), desc="autoencoder", disable=not progress)
        for step in bar:
            idx = torch.randint(len(pixels), (run.batch_size,))
            terms = _step(model.vae, pixels[idx], weights[idx], opt, run.kl_weight)
            if step % 25 == 0 or step + 1 == run.steps:
                log.write(json.dumps({"step": step, **terms}) + "\n")
                bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()})
    model.cfg.scaling_factor = latent_scale(model, pixels)
    model.save_pretrained(out)
    (out / "autoencoder_run.json").write_text(json.dumps(asdict(run), indent=2))
    return out


def _step(vae, x: torch.Tensor, w: torch.Tensor, opt, kl_weight: float) -> dict[str, float]:
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample
    rec = ((recon - x).pow(2).mean(1) * w).mean()  # (B, H, W) weighted squared error
    kl = posterior.kl().mean()
    loss = rec + kl_weight * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": float(loss), "recon": float(rec), "kl": float(kl)}


@torch.no_grad()
def latent_scale(model: WorldVideoModel, pixels: torch.Tensor, n: int = 4096) -> float:
    idx = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(0))[:n]
    z = torch.cat([model.vae.encode(pixels[idx[i : i + 256]]).latent_dist.mean for i in range(0, len(idx), 256)])
    return float(1.0 / z.std())

"""The ceiling an autoencoder puts on a latent video model: world videos passed through its encoder and
decoder, then scored like generated ones (the README's autoencoder ceilings: on world v2, SA 0.93 after stage
4 and 0.97 for checkpoints/base; the v1 figures, kind 0.54 / 0.67 / 0.75, came from this script at commit
1d91d2f). With --blur, scores the same videos blurred by a Gaussian of that many pixels instead (the
"sigma = 0.6" figures).

    .venv/bin/physalign world generate --n 96 --split test --out runs/ceiling/world --seed 1234
    .venv/bin/python scripts/ae_ceiling.py --videos runs/ceiling/world --model checkpoints/base
    .venv/bin/python scripts/ae_ceiling.py --videos runs/ceiling/world --blur 0.6
"""

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch

from physalign.eval.score import evaluate_video
from physalign.models.interface import load_model, to_model_range, to_uint8
from physalign.world.dataset import load_manifest, read_all_videos
from physalign.world.scene import Scene


def round_trip(model, videos: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([to_uint8(model.decode(model.encode(to_model_range(videos[i : i + 16]))))
                               for i in range(0, len(videos), 16)])


def blur(videos: np.ndarray, sigma: float) -> np.ndarray:
    r = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-r**2 / (2 * sigma**2))
    k /= k.sum()
    n, t, h, w, c = videos.shape
    x = torch.from_numpy(videos).float().permute(0, 1, 4, 2, 3).reshape(-1, 1, h, w)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    x = torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, k.view(1, 1, 1, 5)), k.view(1, 1, 5, 1))
    return x.reshape(n, t, c, h, w).permute(0, 1, 3, 4, 2).round().clamp(0, 255).byte().numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, required=True, help="a world folder with manifest.jsonl")
    ap.add_argument("--model", type=Path, help="a model folder whose autoencoder to round-trip through")
    ap.add_argument("--blur", type=float, default=0.0, help="instead: Gaussian blur of this many pixels")
    args = ap.parse_args()
    rows = load_manifest(args.videos / "manifest.jsonl")
    videos = read_all_videos(args.videos / "manifest.jsonl", rows)
    if args.model:
        videos = round_trip(load_model(args.model).eval(), videos)
    elif args.blur > 0:
        videos = blur(videos, args.blur)
    results = [evaluate_video(v, Scene(**r["scene"])) for v, r in zip(videos, rows)]
    print({m: round(float(np.mean([getattr(r, m) for r in results])), 3) for m in ("pc", "sa", "joint")})
    kind = collections.defaultdict(list)
    for r, row in zip(results, rows):
        kind[(row["scene"]["kind"], row["scene"]["size"])] += [next(c.passed for c in r.checks if c.name == "kind")]
    print("kind passes:", json.dumps({f"{k} {s}": round(float(np.mean(v)), 2) for (k, s), v in sorted(kind.items())}),
          f"all {np.mean([p for v in kind.values() for p in v]):.3f}")


if __name__ == "__main__":
    main()

"""Did the teacher learn something? Two measurements on held-out world videos.

1. **Masked reconstruction** against two baselines that know no motion: each hidden token predicted as
   (a) the mean target of its position over the evaluation videos themselves (an oracle dataset mean: it
   knows the static layout, e.g. where the floor's edge is), and (b) the mean of the same video's visible
   tokens. Same masks for all; over all hidden tokens and over the hidden tokens that hold part of a
   moving object (the hard part: objects cover a few percent of the pixels).
2. **Linear probes** of physics attributes of the scene (kinematics, gravity, material), read from token
   grids average-pooled to (F, 2, 2) cells: the trained teacher at every layer, the same architecture at
   random initialisation, and the raw pixels cut into the same tubelet x patch tokens. A ridge classifier
   (least squares onto one-hot labels) on standardised features, its strength picked on a held-out fifth
   of each training fold; k-fold accuracy (mean and spread over folds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import VideoMAEForPreTraining, VideoMAEModel

from physalign.models.interface import to_model_range
from physalign.teacher.model import load_teacher, teacher_config, teacher_features, teacher_grid, to_teacher_input
from physalign.teacher.pretrain import mask_tokens, step_generator
from physalign.train.checkpoint import latest_checkpoint
from physalign.train.data import object_mask
from physalign.world import spec
from physalign.world.dataset import manifest_rows, read_videos

PROBE_ATTRIBUTES = ("kinematics", "force", "material")
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def patch_targets(videos: torch.Tensor, config, normalize: bool | None = None) -> torch.Tensor:
    """VideoMAE's reconstruction targets: (B, C, T, H, W) in [-1, 1] -> (B, N, tubelet * patch * patch * C),
    tokens in (F, H, W) order as the encoder's. Pixels in [0, 1]; if ``normalize`` (default:
    ``config.norm_pix_loss``) each token's pixels are standardised per channel (unbiased variance), as
    ``VideoMAEForPreTraining`` does."""
    b, c, t, h, w = videos.shape
    ts, p = config.tubelet_size, config.patch_size
    x = ((videos + 1) / 2).reshape(b, c, t // ts, ts, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (t // ts) * (h // p) * (w // p), ts * p * p, c)
    if config.norm_pix_loss if normalize is None else normalize:
        x = (x - x.mean(-2, keepdim=True)) / (x.var(-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)


def object_tokens(videos: np.ndarray, rows: list[dict], config) -> torch.Tensor:
    """Bool (N, L): tokens whose tubelet x patch holds a pixel of a moving object (not background or
    structure colour), from uint8 videos (N, T, H, W, 3) and their scenes' backgrounds."""
    n, t, h, w, _ = videos.shape
    backgrounds = np.repeat([spec.BACKGROUNDS[r["scene"]["background"]] for r in rows], t, axis=0)
    mask = torch.from_numpy(object_mask(videos.reshape(n * t, h, w, 3), backgrounds)).reshape(n, 1, t, h, w)
    size = (config.tubelet_size, config.patch_size, config.patch_size)
    return F.max_pool3d(mask.float(), size, size).flatten(1).bool()  # (N, F*H*W) in the encoder's order


@torch.no_grad()
def reconstruction_figures(model: VideoMAEForPreTraining, videos: np.ndarray, ratio: float, masking: str,
                           seed: int = 0, objects: torch.Tensor | None = None, batch: int = 64) -> dict:
    """Mean squared error over hidden tokens of ``model`` and of the two baselines on uint8 videos
    (N, T, H, W, 3), the masks drawn from ``seed``: ``{"all": {...}}``, plus ``{"object_tokens": {...},
    "object_share": ...}`` over the hidden tokens that ``objects`` (bool (N, L)) marks."""
    model.eval()
    x = to_model_range(videos)  # (N, 3, T, H, W)
    targets = patch_targets(x, model.config)  # (N, L, P)
    dataset_mean = targets.mean(0)  # (L, P)
    objects = torch.zeros(targets.shape[:2], dtype=torch.bool) if objects is None else objects
    grid, names = teacher_grid(model.config), ("teacher", "dataset_mean", "visible_mean")
    sums, counts = {k: torch.zeros(2, dtype=torch.float64) for k in names}, torch.zeros(2, dtype=torch.float64)
    for i in range(0, len(x), batch):
        xb, tb = x[i : i + batch], targets[i : i + batch]
        mask = mask_tokens(grid, len(xb), ratio, masking, step_generator(seed, i))  # (B, L)
        hidden = tb[mask].reshape(len(xb), -1, tb.shape[-1])  # (B, M, P), ascending token order as the logits
        predictions = {
            "teacher": model(to_teacher_input(xb, model.config), bool_masked_pos=mask).logits,
            "dataset_mean": dataset_mean.expand_as(tb)[mask].reshape_as(hidden),
            "visible_mean": tb[~mask].reshape(len(xb), -1, tb.shape[-1]).mean(1, keepdim=True).expand_as(hidden),
        }
        on_object = objects[i : i + batch][mask].reshape(hidden.shape[:2])  # (B, M)
        for name, pred in predictions.items():
            error = (pred - hidden).square().mean(-1)  # (B, M)
            sums[name] += torch.stack([error.sum(), error[on_object].sum()]).double()
        counts += torch.tensor([on_object.numel(), on_object.sum()], dtype=torch.float64)
    out = {"all": {k: round(float(v[0] / counts[0]), 6) for k, v in sums.items()}}
    if counts[1]:
        out["object_tokens"] = {k: round(float(v[1] / counts[1]), 6) for k, v in sums.items()}
        out["object_share"] = round(float(counts[1] / counts[0]), 4)
    return out


def pooled(grid_tokens: torch.Tensor, cells: tuple[int, int] = (2, 2)) -> torch.Tensor:
    """(B, F, H, W, D) -> (B, F * cells * D): average over spatial cells, every frame kept."""
    x = grid_tokens.permute(0, 4, 1, 2, 3)  # (B, D, F, H, W)
    return F.adaptive_avg_pool3d(x, (x.shape[2], *cells)).flatten(1)


@torch.no_grad()
def representations(encoders: dict[str, VideoMAEModel], videos: np.ndarray, layers: dict[str, list[int]],
                    batch: int = 64) -> dict[str, torch.Tensor]:
    """Pooled features per representation: "pixels" and "<name>/layer<i>" for each encoder and layer."""
    x = to_model_range(videos)
    config = next(iter(encoders.values())).config
    pixel_grid = patch_targets(x, config, normalize=False).reshape(len(x), *teacher_grid(config), -1)  # (N, F, H, W, P)
    out = {"pixels": pooled(pixel_grid)}
    for name, model in encoders.items():
        for layer in layers[name]:
            feats = [pooled(teacher_features(model, x[i : i + batch], layer)) for i in range(0, len(x), batch)]
            out[f"{name}/layer{layer}"] = torch.cat(feats)
    return out


def ridge_fits(x: torch.Tensor, y: torch.Tensor, classes: int) -> dict[float, torch.Tensor]:
    """Ridge regression of one-hot labels on centred features (N, D): weights (D + 1, K), the last row the
    intercept (the class shares), for each strength in :data:`RIDGE_GRID` (relative to the mean eigenvalue
    of the Gram matrix). Solved in the dual, ``W = X^T (X X^T + lam I)^-1 Y``, from one eigendecomposition:
    D may exceed N."""
    x = x.double()
    onehot = F.one_hot(y, classes).double()
    prior = onehot.mean(0, keepdim=True)  # (1, K)
    target = onehot - prior
    evals, evecs = torch.linalg.eigh(x @ x.T)  # (N,), (N, N)
    projected = evecs.T @ target  # (N, K)
    scale = float(evals.clamp(min=0).mean())
    weights = {a: x.T @ (evecs @ (projected / (evals.clamp(min=0) + a * scale)[:, None])) for a in RIDGE_GRID}
    return {a: torch.cat([w, prior]) for a, w in weights.items()}


def _accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(((x.double() @ w[:-1] + w[-1]).argmax(1) == y).float().mean())


def probe_accuracy(x: torch.Tensor, labels: list[str], folds: int = 5, seed: int = 0) -> tuple[float, float]:
    """k-fold accuracy (mean, std over folds) of a linear probe (ridge classifier) predicting ``labels``
    from features (N, D). Features are standardised with the training fold's statistics; the ridge strength
    is picked on a held-out fifth of the training fold, then refitted on all of it."""
    names = sorted(set(labels))
    y = torch.tensor([names.index(v) for v in labels])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    scores = []
    for k in range(folds):
        in_test = torch.arange(len(order)) % folds == k
        train, test = order[~in_test], order[in_test]
        z = (x - x[train].mean(0)) / (x[train].std(0) + 1e-6)
        fit, held = train[: len(train) * 4 // 5], train[len(train) * 4 // 5 :]
        inner = ridge_fits(z[fit], y[fit], len(names))
        best = max(inner, key=lambda a: _accuracy(inner[a], z[held], y[held]))
        scores.append(_accuracy(ridge_fits(z[train], y[train], len(names))[best], z[test], y[test]))
    return float(np.mean(scores)), float(np.std(scores))


def probe_figures(features: dict[str, torch.Tensor], rows: list[dict], attributes=PROBE_ATTRIBUTES) -> dict:
    """{attribute: {"majority": share of the commonest value, representation: [mean, std] accuracy}}."""
    out = {}
    for attribute in attributes:
        labels = [row["scene"][attribute] for row in rows]
        majority = max(labels.count(v) for v in set(labels)) / len(labels)
        out[attribute] = {"majority": round(majority, 4)}
        for name, x in features.items():
            out[attribute][name] = [round(v, 4) for v in probe_accuracy(x, labels)]
    return out


def evaluate_teacher(cfg, run: str | Path, teacher: str | Path, manifest: str | Path, split: str = "") -> dict:
    """Both measurements on the videos of ``manifest`` (lines of ``split``; "" = all) for the teacher
    exported to ``teacher`` by the run in ``run`` (its latest checkpoint holds the decoder)."""
    checkpoint = latest_checkpoint(run)
    if checkpoint is None:
        raise FileNotFoundError(f"{run}: no checkpoints/latest (the pre-training run that made {teacher})")
    videos, rows = read_videos(manifest, manifest_rows(manifest, split))
    full = VideoMAEForPreTraining.from_pretrained(checkpoint / "model", use_safetensors=True)
    trained = load_teacher(teacher)
    torch.manual_seed(cfg.seed)
    untrained = VideoMAEModel(teacher_config(cfg.sizes)).eval()
    layers = list(range(trained.config.num_hidden_layers))
    features = representations({"teacher": trained, "random_init": untrained}, videos,
                               {"teacher": layers, "random_init": layers})
    return {
        "manifest": str(manifest), "videos": len(rows),
        "reconstruction": reconstruction_figures(full, videos, cfg.mask_ratio, cfg.masking, cfg.seed,
                                                 object_tokens(videos, rows, full.config)),
        "probe": probe_figures(features, rows),
    }

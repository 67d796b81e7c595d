"""Training data: the batches a method asks for, from the physics world or from precomputed real clips.

A data source is picked by the config's ``data.source`` and the method's ``data`` attribute (the kind of
batch), in :data:`SOURCES`:

- ``world`` (this module): a manifest (``DIR/manifest.jsonl``, written by ``physalign world generate``) with
  one line per video, ``{"video": path relative to DIR, "prompt", "scene", "phenomena", "split", ...}``.

  - ``latents``: each video encoded once by the model's frozen autoencoder and cached in a safetensors file
    whose name hashes the manifest lines and the autoencoder's weights, so re-runs skip decoding and
    encoding and a changed data set or autoencoder never reuses stale latents. Batch:
    ``{"latents": (B, C, T, h, w), "prompts": [str], "rows": [manifest line], "index": (B,) row numbers}``.
  - ``frames``: single frames for training the per-frame autoencoder. Batch: ``{"pixels": (B, 3, H, W) in
    [-1, 1], "object_mask": (B, H, W) bool}``, True where a pixel is neither background nor structure.

- ``precomputed`` (:mod:`physalign.train.clips`): ``latents`` batches from the shards of ``physalign
  precompute``.

Every ``latents`` source offers the same per-clip extras, which methods ask for once in ``setup`` and look
up by ``batch["index"]`` (each source builds them its own way, or raises
:class:`~physalign.train.methods.DataError` naming what is missing and the command that provides it):
``prompts``, ``perturbed_prompts``, ``partition_ids``, ``teacher_features``, ``motion_masks``,
``counterfactual_latents``, ``loser_latents``, ``expected_facts``. What the sources share with the tools
around them lives lower down: a manifest's rows and decoded videos in :mod:`physalign.world.dataset`, the
model's pixel range in :mod:`physalign.models.interface`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from physalign.models.interface import to_model_range
from physalign.objectives.motion import motion_mask
from physalign.train.clips import clip_data
from physalign.train.config import ConfigError
from physalign.train.methods import DataError
from physalign.world import corrupt as corruptions
from physalign.world import spec
from physalign.world.dataset import make_example, manifest_rows, read_all_videos, read_videos
from physalign.world.scene import Scene

BACKGROUND_TOLERANCE = 40.0  # RGB distance under which a pixel counts as background or structure colour


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
    """The world's ``latents`` source; its extras are built once from the manifest's videos and scenes (and
    cached in ``section.cache_dir``)."""

    latents: torch.Tensor  # (N, C, T, h, w)
    rows: list[dict]
    section: object = None  # the config's data section it came from (manifest, split, cache_dir)

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, idx: torch.Tensor) -> dict:
        rows = [self.rows[i] for i in idx.tolist()]
        return {"latents": self.latents[idx].float(), "prompts": [r["prompt"] for r in rows], "rows": rows, "index": idx}

    @property
    def prompts(self) -> list[str]:
        return [r["prompt"] for r in self.rows]

    def perturbed_prompts(self, required_by: str = "") -> list[str | None]:
        """Per row, its counterfactual's prompt (one physics axis changed), None without one; rows without
        one are an error if ``required_by`` names what needs them."""
        missing = [line for line, r in enumerate(self.rows, 1) if "perturbed" not in r]
        if required_by and missing:
            raise DataError(f"{self.section.manifest}: {required_by} needs each line's 'perturbed' prompt; rows "
                            f"{missing[:10]} of split {self.section.split!r} have none (`physalign world generate "
                            "--counterfactuals`)")
        return [r["perturbed"]["prompt"] if "perturbed" in r else None for r in self.rows]

    def partition_ids(self, keys: list[str]) -> torch.Tensor:
        return partition_ids(self.rows, keys)

    def teacher_features(self, teacher, layer: int) -> torch.Tensor:
        """float16 (N, F, H, W, D): the teacher's tokens of every row's video (cached per teacher and layer)."""
        from physalign.teacher.cache import cache_teacher_features

        s = self.section
        return cache_teacher_features(teacher, s.manifest, s.cache_dir, layer, rows=self.rows).features

    def motion_masks(self, grid: tuple[int, int, int], ratio: float, chunk: int = 256) -> torch.Tensor:
        """bool (N, F, H, W): M-TSA's motion-salient tokens of every row's video on the teacher's ``grid``."""
        videos = pixel_videos(self.section, self.rows)  # (N, 3, T, H, W)
        return torch.cat([motion_mask(videos[i : i + chunk], grid, ratio) for i in range(0, len(videos), chunk)])

    def counterfactual_latents(self, model) -> torch.Tensor:
        return counterfactual_latents(self.section, model, self.rows)

    def loser_latents(self, model, seed: int, group: str) -> tuple[torch.Tensor, list[str]]:
        """PhysHPO's losers: physically corrupted re-simulations (:func:`corrupted_latents`) and their kinds."""
        return corrupted_latents(self.section, model, self.rows, seed, group)

    def expected_facts(self, reasoner: str) -> tuple[list[list[str]], list[str]]:
        """DiffPhy's facts and enhanced prompts per row (:func:`reasoned_facts`)."""
        return reasoned_facts(self.rows, reasoner)


def cache_key(rows: list[dict], model) -> str:
    """Hash of the manifest lines and of everything the model's ``encode`` depends on."""
    h = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    h.update(model.latent_fingerprint().encode())
    return h.hexdigest()[:16]


def latent_data(section, model) -> LatentData:
    """Latents of the manifest's ``split``, from the cache or encoded now (and cached)."""
    rows = manifest_rows(section.manifest, section.split)
    latents, rows = encoded_videos(section.manifest, rows, model, section.cache_dir)
    return LatentData(latents, rows, section)


@torch.no_grad()
def encoded_videos(manifest: str | Path, rows: list[dict], model, cache_dir: str | Path, chunk: int = 64
                   ) -> tuple[torch.Tensor, list[dict]]:
    """``model.encode`` of each row's ``video`` (relative to the manifest's folder): (N, C, T, h, w) and the
    rows kept (unreadable videos are skipped and named). Cached in ``cache_dir`` under a hash of the rows
    and the autoencoder, so a changed data set or autoencoder never reuses stale latents."""
    path = Path(cache_dir) / f"latents-{cache_key(rows, model)}.safetensors"
    if path.is_file():
        return load_file(path)["latents"], json.loads(path.with_suffix(".json").read_text())["rows"]
    videos, rows = read_videos(manifest, rows)
    model.eval()
    chunks = [model.encode(to_model_range(videos[i : i + chunk])) for i in tqdm(range(0, len(videos), chunk), desc="encode", leave=False)]
    latents = torch.cat(chunks).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"manifest": str(manifest), "rows": rows}))
    _atomic_save({"latents": latents}, path)  # written last: its presence means the cache is complete
    return latents, rows


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


SOURCES = {("world", "latents"): latent_data, ("world", "frames"): frame_data, ("precomputed", "latents"): clip_data}


def data_source(kind: str, section):
    """The builder ``(section, model) -> data`` of ``section.source`` for batches of ``kind`` (a method's
    ``data`` attribute); ConfigError if that source does not serve them."""
    if (section.source, kind) not in SOURCES:
        served = sorted(f"{source}: {k}" for source, k in SOURCES)
        raise ConfigError(f"data.source {section.source!r} does not serve {kind!r} batches; sources and the "
                          f"batches they serve: {served}")
    return SOURCES[section.source, kind]


# -- per-video extras for post-training methods (built once in a method's ``setup``) ---------------------


def counterfactual_latents(section, model, rows: list[dict]) -> torch.Tensor:
    """Latents (N, C, T, h, w) of each row's counterfactual video (``perturbed.video``: the same scene and
    seed with one physics axis changed), in the order of ``rows``. Needs a manifest written by
    ``physalign world generate --counterfactuals``."""
    for line, row in enumerate(rows, 1):
        if "perturbed" not in row:
            raise ValueError(f"{section.manifest}: the line of {row['video']} (row {line} of split "
                             f"{section.split!r}) has no 'perturbed' field; write the data with "
                             "`physalign world generate --counterfactuals`")
    perturbed = [{"video": r["perturbed"]["video"], "prompt": r["perturbed"]["prompt"], "scene": r["perturbed"]["scene"]}
                 for r in rows]
    latents, kept = encoded_videos(section.manifest, perturbed, model, section.cache_dir)
    if len(kept) != len(rows):
        missing = sorted({r["video"] for r in perturbed} - {r["video"] for r in kept})
        raise ValueError(f"{section.manifest}: unreadable counterfactual videos {missing[:5]}")
    return latents


def pixel_videos(section, rows: list[dict]) -> torch.Tensor:
    """The rows' videos as float (N, 3, T, H, W) in [-1, 1] (e.g. for motion masks)."""
    return to_model_range(read_all_videos(section.manifest, rows))


def partition_ids(rows: list[dict], keys: tuple[str, ...] | list[str]) -> torch.Tensor:
    """(N,) integer id of each row's partition: rows share an id iff their scenes agree on every key of
    ``keys`` (scene fields, e.g. the semantic ones ``kind``, ``color``)."""
    ids: dict[tuple, int] = {}
    out = []
    for row in rows:
        missing = [k for k in keys if k not in row["scene"]]
        if missing:
            raise ValueError(f"partition keys {missing} are not scene fields; scene fields: {sorted(row['scene'])}")
        out.append(ids.setdefault(tuple(row["scene"][k] for k in keys), len(ids)))
    return torch.tensor(out)


def reasoned_facts(rows: list[dict], backend: str) -> tuple[list[list[str]], list[str]]:
    """Per row: the expected phenomena and the enhanced prompt. Rows that ``physalign reason`` already
    annotated (``expected_phenomena``, ``enhanced_prompt``) are read; the others are reasoned about now."""
    from physalign.reasoning import build_reasoner

    reasoner, facts, enhanced = None, [], []
    for row in rows:
        if "expected_phenomena" in row and "enhanced_prompt" in row:
            facts.append(list(row["expected_phenomena"]))
            enhanced.append(row["enhanced_prompt"])
            continue
        reasoner = reasoner or build_reasoner(backend)
        answer = reasoner.reason(row["prompt"])
        facts.append(list(answer.phenomena))
        enhanced.append(answer.enhanced_prompt)
    return facts, enhanced


def corrupted_latents(section, model, rows: list[dict], seed: int = 0, group: str = "physical",
                      chunk: int = 64) -> tuple[torch.Tensor, list[str]]:
    """Latents (N, C, T, h, w) of a physically corrupted copy of each row's video, and the corruption of each
    (PhysHPO's losers in the world: the same prompt, a clip that breaks physics). Each row's clip is
    re-simulated from its ``scene`` and ``seed`` and corrupted (``physalign.world.corrupt``) by a kind of
    ``group`` that applies to it, else by any kind that does, drawn from ``seed``. Cached like
    :func:`encoded_videos`, keyed by the rows, the seed, the group, the world version and the autoencoder."""
    key = hashlib.sha256(f"{cache_key(rows, model)}-{seed}-{group}-{spec.WORLD_VERSION}".encode()).hexdigest()[:16]
    path = Path(section.cache_dir) / f"corrupted-{key}.safetensors"
    if path.is_file():
        return load_file(path)["latents"], json.loads(path.with_suffix(".json").read_text())["kinds"]
    videos, kinds = [], []
    for line, row in enumerate(tqdm(rows, desc="corrupt", leave=False), 1):
        if "seed" not in row:
            raise ValueError(f"{section.manifest}: the line of {row['video']} (row {line}) has no 'seed': corrupted "
                             "losers re-simulate the scene, so the data must come from `physalign world generate`")
        scene, rng = Scene.from_dict(row["scene"]), random.Random(f"{seed}-{row['seed']}")
        video, rollout = make_example(scene, row["seed"], model.video_shape[1], model.video_shape[2])
        options = corruptions.applicable(scene, rollout)
        preferred = [k for k in options if corruptions.CORRUPTIONS[k].group == group] or options
        kinds.append(rng.choice(preferred))
        videos.append(corruptions.corrupt(video, scene, rollout, kinds[-1], rng))
    stacked = np.stack(videos)
    with torch.no_grad():
        model.eval()
        latents = torch.cat([model.encode(to_model_range(stacked[i : i + chunk])) for i in range(0, len(stacked), chunk)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps({"manifest": str(section.manifest), "kinds": kinds}))
    _atomic_save({"latents": latents.contiguous()}, path)
    return latents, kinds

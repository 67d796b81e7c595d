"""``physalign precompute``: decode a manifest's clips once and cache what training reads, in shards.

For each row of a CSV/JSONL manifest (:mod:`physalign.data.manifest`) the clip is decoded and sampled
(:mod:`physalign.data.frames`), then encoded in batches: VAE latents (``model.encode``), caption
embeddings (``model.encode_text``), optionally a teacher's tokens (and M-TSA's motion on its grid), and a
preference pair's loser. Clips go into shards of ``shard_size`` (layout in :mod:`physalign.data.shards`),
read back by :class:`~physalign.data.shards.PrecomputedClips` (and trained on through
:mod:`physalign.train.clips`).

- **Skipped, never fatal:** a clip that is missing, cannot be decoded or is too short (or whose loser is)
  is skipped; each is listed with its manifest line and reason in the index and the summary.
- **Keyed:** the cache key hashes the manifest rows (with each clip's size and modification time), the
  frame sampling, the shard size, the stored dtype, the autoencoder's ``latent_fingerprint()``, the text
  encoder (its weights, and the embedding of a probe prompt) and the teacher's weights and layer. A
  re-run with the same key reuses the cache without decoding anything; another key rebuilds it in place.
- **Resumable:** shards are written atomically (a temporary file, then ``os.replace``) as they fill; a
  killed run keeps its finished shards and redoes the partial one. Shard ``k`` starts at a manifest
  position recorded in shard ``k - 1``, and encoding batches restart at every shard, so a resumed run
  (with the same ``batch_size``) writes the same bytes as a straight one.

One run per output folder at a time. The model is put in eval mode.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from physalign.data.frames import FrameSampling, decode_clip
from physalign.data.manifest import ClipRow, load_clip_manifest
from physalign.data.shards import FORMAT, INDEX, shard_meta, shard_path, write_shard
from physalign.files import write_text_atomic
from physalign.models.interface import VideoModel, to_model_range
from physalign.video import VideoError

TEXT_PROBE = "a red ball falls, bounces twice on the floor and rolls to the left"


@dataclass
class Summary:
    out: Path
    key: str
    clips: int  # clips in the cache
    shards: int
    kept_shards: int  # shards reused from an earlier (interrupted) run
    cached: bool  # the whole cache was reused: nothing decoded
    skipped: list[dict] = field(default_factory=list)  # [{"line", "video", "reason"}]


@dataclass
class Clip:
    row: ClipRow
    frames: np.ndarray  # uint8 (T, H, W, 3)
    indices: np.ndarray  # (T,) decoded frame numbers
    loser: tuple[np.ndarray, np.ndarray] | None = None  # the loser's (frames, indices)


def precompute_clips(manifest: str | Path, out: str | Path, model: VideoModel, sampling: FrameSampling | None = None,
                     *, columns: dict[str, str] | None = None, video_root: str | Path | None = None,
                     teacher: nn.Module | None = None, teacher_layer: int = -1, shard_size: int = 64,
                     batch_size: int = 8, dtype: torch.dtype = torch.float32, progress: bool = True) -> Summary:
    """Cache the clips of ``manifest`` in ``out`` (see the module docstring); ``sampling`` defaults to the
    model's video shape, every frame. ``teacher``: a ``VideoMAEModel`` whose input shape matches."""
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1. Got {shard_size} and {batch_size}.")
    rows = load_clip_manifest(manifest, columns, video_root)
    _, frames, height, width = model.video_shape
    sampling = sampling or FrameSampling(frames, height, width)
    model.latent_shape((3, sampling.frames, sampling.height, sampling.width))  # fails early on a bad size
    model.eval()
    encoder = Encoder(model, teacher, teacher_layer, sampling, dtype, pairs=any(r.loser for r in rows))
    settings = {"sampling": asdict(sampling), "shard_size": shard_size, "dtype": str(dtype).removeprefix("torch."),
                "teacher_layer": encoder.layer, "pairs": encoder.pairs}
    fingerprints = encoder.fingerprints()
    out, key = Path(out), precompute_key(rows, settings, fingerprints)
    if is_complete(out, key):
        index = json.loads((out / INDEX).read_text())
        return Summary(out, key, index["clips"], len(index["shards"]), len(index["shards"]), True, index["skipped"])
    (out / INDEX).unlink(missing_ok=True)  # a reader must never see an index over shards being rewritten
    for tmp in out.glob(".tmp-*"):  # left by a killed run
        tmp.unlink()
    kept, start = resume_point(out, key)
    bar = tqdm(total=len(rows), initial=start, desc="precompute", unit="clip", disable=not progress)
    with bar:
        shards, trailing = fill_shards(rows, out, key, encoder, kept, start, shard_size, batch_size, bar)
    index = write_index(out, key, manifest, settings, fingerprints, rows, shards, trailing)
    return Summary(out, key, index["clips"], shards, kept, False, index["skipped"])


def precompute_key(rows: list[ClipRow], settings: dict, fingerprints: dict) -> str:
    """Hash of everything the cached tensors depend on (see the module docstring)."""
    stamped = [{**row.record(), "stat": [_stat(row.video), _stat(row.loser)]} for row in rows]
    text = json.dumps({"format": FORMAT, "rows": stamped, "settings": settings, "fingerprints": fingerprints},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _stat(path: Path | None) -> list[int] | None:
    """[size, mtime_ns] of a clip, so a replaced file changes the key; None if there is none."""
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return None if st is None else [st.st_size, st.st_mtime_ns]


def text_fingerprint(model: VideoModel) -> str:
    """Hash of what ``encode_text`` depends on: the weights of the model's ``text_encoder`` module (the
    diffusers convention) if it has one, and the embedding of a fixed probe prompt, which also catches a
    changed tokenizer or maximum length."""
    h = hashlib.sha256()
    text_encoder = getattr(model, "text_encoder", None)
    if isinstance(text_encoder, nn.Module):
        for name, tensor in sorted(text_encoder.state_dict().items()):
            h.update(name.encode())
            h.update(_raw_bytes(tensor))
    with torch.no_grad():
        probe = model.encode_text([TEXT_PROBE])
    h.update(_raw_bytes(probe.hidden))
    h.update(_raw_bytes(probe.mask))
    return h.hexdigest()


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's bytes as stored (any dtype, bfloat16 included, without a conversion)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def is_complete(out: Path, key: str) -> bool:
    """True if ``out`` holds a finished cache of ``key``: its index and every shard it lists."""
    try:
        index = json.loads((out / INDEX).read_text())
    except (OSError, ValueError):
        return False
    if index.get("key") != key:
        return False
    return all((shard_meta(out / s["file"]) or {}).get("key") == key for s in index["shards"])


def resume_point(out: Path, key: str) -> tuple[int, int]:
    """(shards already finished for ``key``, the manifest position the next shard starts at)."""
    number, start = 0, 0
    while True:
        meta = shard_meta(shard_path(out, number))
        if meta is None or meta["key"] != key or meta["shard"] != number or meta["start"] != start:
            return number, start
        number, start = number + 1, meta["end"]


class Encoder:
    """Decoded clips -> the tensors of a shard (module docstring of :mod:`physalign.data.shards`)."""

    def __init__(self, model: VideoModel, teacher: nn.Module | None, layer: int, sampling: FrameSampling,
                 dtype: torch.dtype, pairs: bool):
        self.model, self.teacher, self.sampling, self.dtype, self.pairs = model, teacher, sampling, dtype, pairs
        self.device = next(model.parameters()).device
        self.layer = None
        if teacher is not None:
            self.layer = _check_teacher(teacher, layer, sampling)
            teacher.eval()

    def fingerprints(self) -> dict:
        teacher = None
        if self.teacher is not None:
            from physalign.teacher.model import teacher_fingerprint

            teacher = teacher_fingerprint(self.teacher)
        return {"latents": self.model.latent_fingerprint(), "text": text_fingerprint(self.model), "teacher": teacher}

    @torch.no_grad()
    def __call__(self, clips: list[Clip]) -> dict[str, torch.Tensor]:
        video = to_model_range(np.stack([c.frames for c in clips]))  # (B, 3, T, H, W) in [-1, 1]
        text = self.model.encode_text([c.row.caption for c in clips])
        out = {"latents": self._encode(video), "frame_indices": torch.from_numpy(np.stack([c.indices for c in clips])),
               "text_hidden": text.hidden.to("cpu", self.dtype), "text_mask": text.mask.cpu().bool()}
        if self.teacher is not None:
            out["teacher"], out["motion"] = self._teacher(video)
        if self.pairs:
            out.update(self._losers(clips, out["latents"]))
        return out

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.model.encode(video.to(self.device)).to("cpu", self.dtype)  # (B, C, t, h, w)

    def _teacher(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's tokens (B, F, H, W, D) float16 and M-TSA's tubelet motion (B, F, H, W) on its grid.
        The motion is kept rather than a mask so the mask's ratio stays a training option."""
        from physalign.objectives.motion import tubelet_motion
        from physalign.teacher.model import fit_to_teacher, teacher_features, teacher_grid

        device = next(self.teacher.parameters()).device
        video = fit_to_teacher(video, self.teacher.config)  # e.g. 49 x 480 x 720 -> 48 x 160 x 240
        features = teacher_features(self.teacher, video.to(device), self.layer).half().cpu()  # (B, F, H, W, D)
        if not torch.isfinite(features).all():
            raise ValueError(f"teacher features at layer {self.layer} overflow float16 (non-finite values)")
        return features, tubelet_motion(video, teacher_grid(self.teacher.config)).float()

    def _losers(self, clips: list[Clip], latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loser_latents`` (B, C, t, h, w), ``loser_frame_indices`` (B, T), zeros where a row has no
        loser, and ``has_loser`` (B,)."""
        has = torch.tensor([c.loser is not None for c in clips])
        losers = torch.zeros_like(latents)
        indices = torch.zeros(len(clips), self.sampling.frames, dtype=torch.int64)
        if has.any():
            paired = [c.loser for c in clips if c.loser is not None]
            losers[has] = self._encode(to_model_range(np.stack([frames for frames, _ in paired])))
            indices[has] = torch.from_numpy(np.stack([idx for _, idx in paired]))
        return {"loser_latents": losers, "loser_frame_indices": indices, "has_loser": has}


def _check_teacher(teacher: nn.Module, layer: int, sampling: FrameSampling) -> int:
    """The non-negative layer index; the teacher must read the sampled frames (or one fewer: frame 0 is
    dropped) at any frame size (resized: ``teacher.model.fit_to_teacher``)."""
    from physalign.teacher.model import check_frame_count

    check_frame_count(sampling.frames, teacher.config)
    layers = teacher.config.num_hidden_layers
    if not -layers <= layer < layers:
        raise IndexError(f"teacher layer {layer} out of range: the teacher has {layers} layers")
    return layer % layers


def load_clip(row: ClipRow, sampling: FrameSampling) -> Clip:
    """Decode the row's video (and loser). Raises :class:`VideoError` naming the file."""
    frames, indices = decode_clip(row.video, sampling)
    loser = None
    if row.loser is not None:
        try:
            loser = decode_clip(row.loser, sampling)
        except VideoError as err:
            raise VideoError(f"loser {err}") from err
    return Clip(row, frames, indices, loser)


def fill_shards(rows: list[ClipRow], out: Path, key: str, encoder: Encoder, shard: int, start: int,
                shard_size: int, batch_size: int, bar: tqdm) -> tuple[int, list[list]]:
    """Decode and encode ``rows[start:]`` into shards ``shard``, ``shard + 1``, ...

    Returns the number of shards in all and the [position, reason] of clips skipped after the last shard.
    """
    filling, skipped = ShardBuffer(shard, start), 0
    for position in range(start, len(rows)):
        try:
            filling.add(position, load_clip(rows[position], encoder.sampling))
        except VideoError as err:
            filling.skipped.append([position, str(err)])
            skipped += 1
            bar.set_postfix(skipped=skipped, refresh=False)
        bar.update(1)
        if len(filling.pending) == batch_size:
            filling.encode(encoder)
        if len(filling.positions) == shard_size:
            filling.write(out, key, encoder, position + 1)
            filling = ShardBuffer(filling.number + 1, position + 1)
    if filling.positions:
        filling.write(out, key, encoder, len(rows))
        return filling.number + 1, []
    return filling.number, filling.skipped


@dataclass
class ShardBuffer:
    """The shard being filled: clips waiting to be encoded, and the encoded batches."""

    number: int
    start: int  # manifest position this shard's filling started at
    positions: list[int] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # ClipRow.record() of the encoded clips
    skipped: list[list] = field(default_factory=list)  # [position, reason]
    pending: list[Clip] = field(default_factory=list)
    encoded: list[dict] = field(default_factory=list)

    def add(self, position: int, clip: Clip) -> None:
        self.positions.append(position)
        self.pending.append(clip)

    def encode(self, encoder: Encoder) -> None:
        if self.pending:
            self.encoded.append(encoder(self.pending))
            self.records.extend(c.row.record() for c in self.pending)
            self.pending = []

    def write(self, out: Path, key: str, encoder: Encoder, end: int) -> None:
        self.encode(encoder)
        tensors = {name: torch.cat([part[name] for part in self.encoded]) for name in self.encoded[0]}
        meta = {"key": key, "shard": self.number, "start": self.start, "end": end, "positions": self.positions,
                "rows": self.records, "skipped": self.skipped}
        write_shard(out, self.number, tensors, meta)


def write_index(out: Path, key: str, manifest, settings: dict, fingerprints: dict, rows: list[ClipRow],
                shards: int, trailing: list[list]) -> dict:
    """Write ``out/index.json`` (the shards, the settings, every skipped clip) and delete stale shards."""
    metas = [shard_meta(shard_path(out, n)) for n in range(shards)]
    skipped = [s for meta in metas for s in meta["skipped"]] + trailing
    index = {"format": FORMAT, "key": key, "manifest": str(Path(manifest).absolute()), "settings": settings,
             "fingerprints": fingerprints, "clips": sum(len(m["positions"]) for m in metas),
             "shards": [{"file": shard_path(out, n).name, "clips": len(m["positions"])} for n, m in enumerate(metas)],
             "skipped": [{"line": rows[p].line, "video": str(rows[p].video), "reason": r} for p, r in skipped]}
    stale = shards
    while shard_path(out, stale).exists():
        shard_path(out, stale).unlink()
        stale += 1
    write_text_atomic(out / INDEX, json.dumps(index, indent=1))
    return index

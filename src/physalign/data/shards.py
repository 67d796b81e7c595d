"""The on-disk layout of precomputed clips, and the reader that serves them to training.

``OUT/shard-00000.safetensors``, ``OUT/shard-00001.safetensors``, ... each hold up to ``shard_size`` clips:

- ``latents`` (n, C, t, h, w): ``model.encode`` of the sampled frames;
- ``text_hidden`` (n, L, D) and ``text_mask`` (n, L) bool: ``model.encode_text`` of the captions;
- ``frame_indices`` (n, T) int64: the decoded frame numbers that were sampled;
- with a teacher, ``teacher`` (n, F, H', W', D') float16: its tokens of the same frames, and ``motion``
  (n, F, H', W') float32: M-TSA's per-tubelet L1 change on the teacher's token grid
  (:func:`physalign.objectives.motion.tubelet_motion` of the sampled frames);
- when the manifest has preference pairs, ``loser_latents`` (n, C, t, h, w) and
  ``loser_frame_indices`` (n, T) (zeros where a row has no loser) and ``has_loser`` (n,) bool.

A shard's metadata (one key, ``physalign``, a JSON string, so the file's bytes do not depend on a
dictionary's order) holds the cache key, the shard number, the manifest positions of its clips, their
rows (caption, paths, phenomena, perturbed prompts) and the clips skipped while filling it.
``OUT/index.json`` lists the shards, the settings, the fingerprints and every skipped clip; it is written
last, so its presence with a matching key means the cache is complete.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from physalign.files import atomic_write

INDEX = "index.json"
FORMAT = 2  # bumped when the layout changes, so old caches are never misread (2: `motion`)


def shard_path(out: Path, number: int) -> Path:
    return out / f"shard-{number:05d}.safetensors"


def write_shard(out: Path, number: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write shard ``number`` atomically (a temporary file in ``out``, then ``os.replace``)."""
    atomic_write(shard_path(out, number), lambda tmp: save_file(
        {k: v.contiguous() for k, v in tensors.items()}, tmp, metadata={"physalign": json.dumps(meta, sort_keys=True)}))


def shard_meta(path: Path) -> dict | None:
    """The metadata of the shard at ``path``; None if it is missing or unreadable (truncated, foreign)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["physalign"])
    except (OSError, SafetensorError, KeyError, ValueError):
        return None


class PrecomputedClips:
    """Clips cached by ``physalign precompute``, served as training batches.

    Shards are memory-mapped on demand (``safe_open``; at most ``max_open`` at a time) and only the
    requested clips are read, so a data set larger than memory trains as well as a small one. The
    interface matches ``physalign.train.data.LatentData``: ``len(data)``, ``data.batch(index)``.

    ``fingerprint``: if given, the model's ``latent_fingerprint()``; a cache built with another
    autoencoder is refused.
    """

    def __init__(self, folder: str | Path, fingerprint: str | None = None, max_open: int = 8):
        self.folder = Path(folder)
        index_file = self.folder / INDEX
        if not index_file.is_file():
            raise FileNotFoundError(f"{index_file}: no precomputed index (run `physalign precompute --out {self.folder}`)")
        self.index = json.loads(index_file.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{index_file}: format {self.index.get('format')!r}, this reader reads {FORMAT}; re-run precompute")
        if fingerprint is not None and fingerprint != self.index["fingerprints"]["latents"]:
            raise ValueError(f"{index_file}: latents were encoded by another autoencoder than the model's; re-run precompute")
        counts = [s["clips"] for s in self.index["shards"]]
        self._starts = torch.tensor([0] + counts).cumsum(0)  # clip i is in shard s iff starts[s] <= i < starts[s+1]
        self._open: OrderedDict[int, tuple] = OrderedDict()
        self.max_open = max_open
        self._rows: list[dict] | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def skipped(self) -> list[dict]:
        """[{"line", "video", "reason"}] of the clips precompute could not use."""
        return self.index["skipped"]

    @property
    def rows(self) -> list[dict]:
        """Every clip's manifest row, in clip order (read from the shards' headers, not their tensors)."""
        if self._rows is None:
            self._rows = [row for n in range(len(self.index["shards"])) for row in self._meta(n)["rows"]]
        return self._rows

    def row(self, i: int) -> dict:
        """The manifest row of clip ``i`` (``line``, ``video``, ``caption``, ``perturbed``, ``phenomena``, ``loser``)."""
        shard, offset = self._locate(i)
        return self._shard(shard)[1]["rows"][offset]

    @property
    def names(self) -> list[str]:
        """The tensors the shards hold for every clip (``latents``, ``text_hidden``, ...)."""
        return sorted(self._shard(0)[0].keys()) if len(self) else []

    def batch(self, index: torch.Tensor, names: Sequence[str] | None = None) -> dict:
        """Clips ``index`` (B,): ``latents`` (B, C, t, h, w) float, ``text_hidden`` (B, L, D) float,
        ``text_mask`` (B, L) bool, ``frame_indices`` (B, T), ``prompts`` [str], ``rows`` [dict], ``index``,
        and ``teacher`` / ``motion`` / ``loser_latents``, ``loser_frame_indices``, ``has_loser`` when cached;
        only the tensors ``names`` if given. Text is zero-padded (mask False) to the batch's longest L if
        shards differ."""
        items = [self._item(int(i), names) for i in index.reshape(-1)]
        out = {name: _stack([item[name] for item in items], pad=name.startswith("text_"))
               for name in items[0] if name != "row"}
        for name in ("latents", "text_hidden", "loser_latents", "teacher"):
            if name in out:
                out[name] = out[name].float()
        rows = [item["row"] for item in items]
        return {**out, "prompts": [r["caption"] for r in rows], "rows": rows, "index": index}

    def column(self, name: str) -> "ShardColumn":
        """Tensor ``name`` of every clip, read on demand (:class:`ShardColumn`)."""
        if name not in self.names:
            raise KeyError(f"{self.folder}: the shards hold no {name!r} (they hold {self.names})")
        return ShardColumn(self, name)

    def _item(self, i: int, names: Sequence[str] | None = None) -> dict:
        shard, offset = self._locate(i)
        handle, meta = self._shard(shard)
        names = handle.keys() if names is None else names
        item = {name: handle.get_slice(name)[offset : offset + 1] for name in names}  # (1, ...) each
        return {**item, "row": meta["rows"][offset]}

    def _meta(self, number: int) -> dict:
        path = self.folder / self.index["shards"][number]["file"]
        meta = shard_meta(path)
        if meta is None or meta["key"] != self.index["key"]:
            raise ValueError(f"{path}: missing, unreadable or from another precompute run; re-run precompute")
        return meta

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"clip {i} out of range: {self.folder} holds {len(self)} clips")
        shard = int(torch.searchsorted(self._starts, torch.tensor(i), right=True)) - 1
        return shard, i - int(self._starts[shard])

    def _shard(self, number: int) -> tuple:
        """(safe_open handle, metadata) of shard ``number``, opening it (and closing the oldest) if needed."""
        if number in self._open:
            self._open.move_to_end(number)
            return self._open[number]
        meta = self._meta(number)
        self._open[number] = (safe_open(str(self.folder / self.index["shards"][number]["file"]), framework="pt"), meta)
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)
        return self._open[number]


class ShardColumn:
    """One tensor of every clip of a :class:`PrecomputedClips`, read from the shards when indexed:
    ``column[index]`` is (B, ...) in the stored dtype for clip numbers ``index`` (B,); ``column.shape`` is
    (N, ...). Lets a method look up per-clip data by ``batch["index"]`` as it would in a tensor."""

    def __init__(self, clips: PrecomputedClips, name: str):
        self.clips, self.name = clips, name
        self.shape = (len(clips), *clips._shard(0)[0].get_slice(name).get_shape()[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        clips = torch.as_tensor(index).reshape(-1).tolist()
        return torch.cat([self.clips._item(i, (self.name,))[self.name] for i in clips])


def _stack(parts: list[torch.Tensor], pad: bool) -> torch.Tensor:
    """Concatenate (1, ...) slices; with ``pad``, (1, L, ...) slices of different L are zero-padded to the longest."""
    longest = max(p.shape[1] for p in parts) if pad else None
    if pad and any(p.shape[1] != longest for p in parts):
        parts = [torch.cat([p, p.new_zeros(1, longest - p.shape[1], *p.shape[2:])], 1) for p in parts]
    return torch.cat(parts)

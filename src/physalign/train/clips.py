"""The ``precomputed`` data source: training batches from the shards of ``physalign precompute``.

Config (README, "Real video data")::

    data:
      source: precomputed
      precomputed: data/clips_cache     # the folder `physalign precompute --out` wrote

Batches are read lazily from the memory-mapped shards (:class:`~physalign.data.shards.PrecomputedClips`):
``latents`` (B, C, t, h, w), ``prompts`` (the captions), ``rows`` (manifest rows: ``line``, ``video``,
``caption``, ``perturbed``, ``phenomena``, ``loser``), ``index`` (B,), ``frame_indices`` (B, T), and the
captions' embeddings ``text_hidden`` (B, L, D), ``text_mask`` (B, L) with the empty prompt's
``empty_text_hidden`` (1, L, D), ``empty_text_mask`` (1, L) for classifier-free-guidance dropout. The
embeddings are served only if the model's text encoder is frozen and is the one that wrote them (same
fingerprint); otherwise methods encode prompts themselves (:func:`physalign.train.methods.fm.encode_prompts`).

What methods need besides (the extras of :mod:`physalign.train.data`), and where it comes from:

==================  =====================================  ==================================================
extra               from                                   provided by
==================  =====================================  ==================================================
teacher_features    the shards' ``teacher``                ``physalign precompute --teacher DIR``
motion_masks        the shards' ``motion`` (Δ per token)   the same; the top-``ratio`` mask is drawn on lookup
loser_latents       the shards' ``loser_latents``          a ``loser`` / ``rejected`` manifest column
perturbed_prompts   rows' first ``perturbed`` prompt       a ``perturbed_prompts`` manifest column
partition_ids       row fields (``caption``)               the manifest
expected_facts      rows' ``phenomena``                    a ``phenomena`` column, or ``physalign reason``'s
                                                           ``expected_phenomena`` (found by that name)
==================  =====================================  ==================================================

Shard tensors are looked up per batch through :class:`~physalign.data.shards.ShardColumn`, never loaded
whole. ``counterfactual_latents`` is world-only (it needs the simulator).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from physalign.data.precompute import text_fingerprint
from physalign.data.shards import PrecomputedClips, ShardColumn
from physalign.models.interface import TextEmbedding
from physalign.objectives.motion import salient_tokens
from physalign.train.methods import DataError

PRECOMPUTE = "physalign precompute --manifest M --model MODEL --out DIR"
BATCH = ("latents", "frame_indices")  # read for every batch; text embeddings too when valid


def clip_data(section, model) -> "ClipData":
    """The clips precomputed in ``section.precomputed`` for ``model``'s autoencoder."""
    if not section.precomputed:
        raise DataError(f"data.source precomputed needs data.precomputed: the folder of `{PRECOMPUTE}`")
    try:
        clips = PrecomputedClips(section.precomputed, model.latent_fingerprint())
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"data.precomputed: {err}") from None
    if not len(clips):
        raise DataError(f"{clips.folder}: no clips (all {len(clips.skipped)} were skipped; see its index.json)")
    return ClipData(clips, caption_text(model, clips))


def caption_text(model, clips: PrecomputedClips) -> TextEmbedding | None:
    """The empty prompt's embedding (1, L, D) if the shards' caption embeddings can stand in for
    ``model.encode_text``, else None: a trainable text encoder changes them as it trains, another one
    (weights, tokenizer, length) never gave them. Both are in eval mode, as precompute encodes."""
    training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            empty = model.encode_text([""])
        if empty.hidden.requires_grad:
            return None
        if text_fingerprint(model) != clips.index["fingerprints"]["text"]:
            print(f"{clips.folder}: caption embeddings are from another text encoder than the model's; "
                  "encoding prompts at every step instead")
            return None
        return empty
    finally:
        model.train(training)


class ClipData:
    """Batches of precomputed clips (module docstring); ``empty``: the empty prompt's embedding when the
    shards' caption embeddings are served, else None."""

    def __init__(self, clips: PrecomputedClips, empty: TextEmbedding | None = None):
        self.clips, self.empty = clips, empty
        self.manifest = Path(clips.index["manifest"]).name

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def rows(self) -> list[dict]:
        return self.clips.rows

    @property
    def prompts(self) -> list[str]:
        return [r["caption"] for r in self.rows]

    def batch(self, index: torch.Tensor) -> dict:
        if self.empty is None:
            return self.clips.batch(index, BATCH)
        out = self.clips.batch(index, BATCH + ("text_hidden", "text_mask"))
        return {**out, "empty_text_hidden": self.empty.hidden, "empty_text_mask": self.empty.mask}

    # -- extras ------------------------------------------------------------------------------------------
    def perturbed_prompts(self, required_by: str = "") -> list[str | None]:
        """Per clip, the first of its manifest row's perturbed prompts (None without one)."""
        out = [r["perturbed"][0] if r["perturbed"] else None for r in self.rows]
        if required_by and None in out:
            raise DataError(f"{self.manifest}: {required_by} needs a perturbed prompt per clip; lines "
                            f"{self._lines(p is None for p in out)} have none: add a 'perturbed_prompts' column "
                            f"and re-run `{PRECOMPUTE}`")
        return out

    def partition_ids(self, keys: list[str]) -> torch.Tensor:
        """(N,) ids: clips share one iff their rows agree on every field of ``keys`` (e.g. ``caption``)."""
        fields = sorted(self.rows[0])
        missing = [k for k in keys if k not in fields]
        if missing:
            raise DataError(f"partition keys {missing} are not fields of precomputed clips ({fields}); world scene "
                            "fields do not exist for real clips: partition them by caption with "
                            "--set method.partition_keys=[caption]")
        ids: dict[str, int] = {}
        return torch.tensor([ids.setdefault(json.dumps([r[k] for k in keys]), len(ids)) for r in self.rows])

    def teacher_features(self, teacher, layer: int) -> ShardColumn:
        """The shards' ``teacher`` tokens (N, F, H, W, D) float16, if ``teacher`` at ``layer`` wrote them."""
        from physalign.teacher.model import teacher_fingerprint

        self._require("teacher", "teacher features", f"{PRECOMPUTE} --teacher TEACHER --teacher-layer {layer}")
        cached = self.clips.index["settings"]["teacher_layer"]
        layers = teacher.config.num_hidden_layers
        if teacher_fingerprint(teacher) != self.clips.index["fingerprints"]["teacher"] or cached != layer % layers:
            raise DataError(f"{self.clips.folder}: its teacher features come from another teacher or layer (layer "
                            f"{cached}) than method.teacher at method.teacher_layer {layer}; re-run "
                            f"`{PRECOMPUTE} --teacher TEACHER --teacher-layer {layer}`")
        return self.clips.column("teacher")

    def motion_masks(self, grid: tuple[int, int, int], ratio: float) -> "SalientTokens":
        """M-TSA's masks (N, F, H, W) bool on lookup, from the shards' ``motion`` on the teacher's ``grid``."""
        self._require("motion", "M-TSA's motion (per-token change on the teacher's grid)", f"{PRECOMPUTE} --teacher TEACHER")
        motion = self.clips.column("motion")
        if tuple(motion.shape[1:]) != tuple(grid):
            raise DataError(f"{self.clips.folder}: motion is on a {tuple(motion.shape[1:])} grid, the teacher's is "
                            f"{tuple(grid)}; re-run `{PRECOMPUTE} --teacher TEACHER` with method.teacher")
        return SalientTokens(motion, ratio)

    def counterfactual_latents(self, model) -> torch.Tensor:
        raise DataError("micro: counterfactual needs simulated counterfactual videos, which only the physics world "
                        "has (`physalign world generate --counterfactuals`); on precomputed clips use "
                        "--set method.micro=reference (the frozen model under each clip's perturbed prompt)")

    def loser_latents(self, model, seed: int, group: str) -> tuple[ShardColumn, list[str]]:
        """The shards' ``loser_latents`` (N, C, t, h, w): the manifest's dispreferred clip of each pair, and
        "manifest" as every loser's kind. (``seed`` and ``group`` choose world corruptions; unused here.)"""
        lacking = [r["loser"] is None for r in self.rows]
        if any(lacking):
            raise DataError(f"{self.manifest}: preference pairs need a loser per clip; lines {self._lines(lacking)} "
                            f"have none: fill the 'loser' (or 'rejected') column and re-run `{PRECOMPUTE}`")
        return self.clips.column("loser_latents"), ["manifest"] * len(self)

    def expected_facts(self, reasoner: str) -> tuple[list[list[str]], None]:
        """Each clip's manifest ``phenomena`` (no enhanced prompts: the caption is the prompt). The
        ``reasoner`` is not asked: real captions are annotated beforehand (``physalign reason``)."""
        lacking = [not r["phenomena"] for r in self.rows]
        if any(lacking):
            raise DataError(f"{self.manifest}: the judge's facts come from the 'phenomena' column; lines "
                            f"{self._lines(lacking)} have none: fill it (or precompute a `physalign reason` output, "
                            f"whose 'expected_phenomena' is read) and re-run `{PRECOMPUTE}`")
        return [list(r["phenomena"]) for r in self.rows], None

    def _require(self, name: str, what: str, command: str) -> None:
        if name not in self.clips.names:
            raise DataError(f"{self.clips.folder}: the shards hold no {what} ({name!r}; they hold "
                            f"{self.clips.names}); write them with `{command}`")

    def _lines(self, flags) -> list[int]:
        """Manifest lines of the clips whose flag is set (the first ten)."""
        return [r["line"] for r, flag in zip(self.rows, flags) if flag][:10]


class SalientTokens:
    """``masks[index]`` (B, F, H, W) bool: :func:`salient_tokens` of the stored motion of clips ``index``."""

    def __init__(self, motion: ShardColumn, ratio: float):
        self.motion, self.ratio = motion, ratio

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return salient_tokens(self.motion[index].float(), self.ratio)

"""Real video data: manifests as users have them, clips decoded and cached once, batches served from shards::

    rows = load_clip_manifest("clips.csv")                              # typed rows, checked
    summary = precompute_clips("clips.csv", "cache/clips", model)             # shards + index.json, resumable
    data = PrecomputedClips("cache/clips", model.latent_fingerprint())  # memory-mapped, lazy
    batch = data.batch(torch.tensor([0, 1]))                             # latents, text_hidden, text_mask, ...
"""

from physalign.data.frames import FrameSampling, decode_clip
from physalign.data.manifest import COLUMNS, ClipRow, load_clip_manifest
from physalign.data.precompute import Summary, precompute_clips
from physalign.data.shards import PrecomputedClips

__all__ = ["COLUMNS", "ClipRow", "FrameSampling", "PrecomputedClips", "Summary", "decode_clip", "load_clip_manifest",
           "precompute_clips"]

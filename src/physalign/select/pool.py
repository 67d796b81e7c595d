"""A candidate pool from the physics world: clean simulator videos mixed with degraded ones, each labelled.

``build_pool(out, n, seed)`` writes ``OUT/videos/pool_XXXXX.mp4`` and ``OUT/manifest.jsonl``, one line per
video in the world's format (``video``, ``prompt``, ``scene``, ``phenomena``, ``seed``) plus
``degradation``, what was done to it (and ``corruption``, the kind, for ``physics``):

- ``none``: the simulator's video of the prompt.
- ``noise``: Gaussian pixel noise of standard deviation ``NOISE_SIGMA`` (of the range), every frame.
- ``blur``: a Gaussian blur of ``BLUR_SIGMA`` pixels, every frame.
- ``dropped_frames``: ``DROP_FRAMES`` consecutive frames cut mid-clip (the motion jumps); the last frame
  is held at the end so the clip keeps its length.
- ``static``: one frame of the clip, held for its whole length.
- ``wrong_caption``: the video is clean, but the prompt (and its scene and phenomena) names another
  kind, colour or background: one semantic field changed.
- ``physics``: a corruption of :mod:`physalign.world.corrupt` that applies to the scene (teleport,
  freeze in mid-air, vanish, ...), drawn at random.

The labels are spread by ``mix`` (fractions by label, default half clean, the rest evenly) over a seeded
shuffle, and video ``i`` draws its scene and its degradation's details from ``SeedSequence([seed, i])``,
so a pool is a function of its arguments.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from physalign.video import write_mp4
from physalign.world import corrupt as corruptions
from physalign.world import scene as grammar
from physalign.world import spec
from physalign.world.dataset import make_example
from physalign.world.phenomena import phenomena
from physalign.world.sim import simulate

DEGRADATIONS = ("none", "noise", "blur", "dropped_frames", "static", "wrong_caption", "physics")
DEFAULT_MIX = {"none": 0.5, **{d: 0.5 / (len(DEGRADATIONS) - 1) for d in DEGRADATIONS[1:]}}
NOISE_SIGMA = 0.06  # of the [0, 1] range, ~15 grey levels
BLUR_SIGMA = 1.0  # pixels; at 0.6 the world's shapes still read right (README, world v2)
DROP_FRAMES = (3, 5)  # inclusive range of how many consecutive frames are cut
CAPTION_FIELDS = {"kind": grammar.KINDS, "color": grammar.COLORS, "background": grammar.BACKGROUNDS}


def build_pool(out: str | os.PathLike, n: int, seed: int, mix: dict[str, float] | None = None,
               frames: int = spec.DEFAULT_FRAMES, resolution: int = spec.DEFAULT_RESOLUTION,
               progress: bool = True) -> Path:
    """Write a pool of ``n`` labelled candidates into ``out`` (replacing a pool already there); return its
    manifest path."""
    if n < 1:
        raise ValueError(f"n must be >= 1. Got {n}.")
    out = Path(out)
    labels = assign_labels(n, DEFAULT_MIX if mix is None else mix, seed)
    lines = [_candidate(out, i, label, seed, frames, resolution)
             for i, label in enumerate(tqdm(labels, desc="pool", unit="video", disable=not progress))]
    for stale in set((out / "videos").glob("pool_*.mp4")) - {out / line["video"] for line in lines}:
        stale.unlink()  # left by an earlier, larger pool in the same folder
    return write_jsonl(out / "manifest.jsonl", lines)


def assign_labels(n: int, mix: dict[str, float], seed: int) -> list[str]:
    """``n`` degradation labels in the proportions of ``mix`` (largest remainders), shuffled by ``seed``."""
    unknown = sorted(set(mix) - set(DEGRADATIONS))
    if unknown or not mix or any(f < 0 for f in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"mix must give non-negative fractions of {DEGRADATIONS} with a positive sum. Got {mix}.")
    total = sum(mix.values())
    exact = {d: n * f / total for d, f in mix.items()}
    counts = {d: int(e) for d, e in exact.items()}
    for d in sorted(exact, key=lambda d: counts[d] - exact[d])[: n - sum(counts.values())]:
        counts[d] += 1
    labels = [d for d in DEGRADATIONS for _ in range(counts.get(d, 0))]
    random.Random(seed).shuffle(labels)
    return labels


def _candidate(out: Path, i: int, label: str, seed: int, frames: int, resolution: int) -> dict:
    """Draw, degrade and write candidate ``i``; return its manifest line."""
    item_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
    rng = random.Random(item_seed)
    scene, video, rollout = _draw(rng, item_seed, frames, resolution, corruptible=label == "physics")
    facts, extra = phenomena(scene, rollout), {}
    if label == "physics":
        extra["corruption"] = rng.choice(corruptions.applicable(scene, rollout))
        video = corruptions.corrupt(video, scene, rollout, extra["corruption"], rng)
    elif label == "wrong_caption":  # the clean video under another scene's prompt and facts
        scene = wrong_caption(scene, rng)
        facts = phenomena(scene, simulate(scene, item_seed, frames))
    elif label != "none":
        video = DEGRADE[label](video, rng)
    name = f"videos/pool_{i:05d}.mp4"
    write_mp4(out / name, video, fps=spec.FPS)
    return {"video": name, "prompt": grammar.scene_to_prompt(scene), "scene": scene.to_dict(), "phenomena": facts,
            "seed": item_seed, "degradation": label, **extra}


def _draw(rng: random.Random, seed: int, frames: int, resolution: int, corruptible: bool, tries: int = 100):
    """A random training scene, its video and rollout; with ``corruptible``, one that some corruption
    applies to (nearly all do)."""
    for _ in range(tries):
        scene = grammar.sample_scene(rng)
        video, rollout = make_example(scene, seed, frames, resolution)
        if not corruptible or corruptions.applicable(scene, rollout):
            return scene, video, rollout
    raise RuntimeError(f"no scene of {tries} draws (seed {seed}) admits a corruption")


def noise(video: np.ndarray, rng: random.Random, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """(T, H, W, 3) uint8 plus N(0, sigma) of the range per pixel and channel, clipped."""
    draws = np.random.default_rng(rng.getrandbits(64)).normal(0.0, sigma * 255.0, video.shape)
    return np.clip(video + draws, 0, 255).round().astype(np.uint8)


def blur(video: np.ndarray, rng: random.Random | None = None, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """(T, H, W, 3) uint8 blurred along H and W by a Gaussian of ``sigma`` pixels (edges reflected); ``rng``
    is unused (every degradation takes one)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    x = video.astype(np.float64)
    for axis in (1, 2):
        pad = [(0, 0)] * 4
        pad[axis] = (radius, radius)
        padded = np.pad(x, pad, mode="reflect")
        length = x.shape[axis]
        x = sum(w * np.take(padded, np.arange(k, k + length), axis=axis) for k, w in enumerate(taps))
    return np.clip(x, 0, 255).round().astype(np.uint8)


def drop_frames(video: np.ndarray, rng: random.Random) -> np.ndarray:
    """(T, H, W, 3): ``DROP_FRAMES`` consecutive frames cut after frame 0, the last frame held at the end."""
    t = len(video)
    cut = rng.randint(*DROP_FRAMES)
    if t < cut + 2:
        raise ValueError(f"dropping {cut} frames needs a clip of at least {cut + 2} frames. Got {t}.")
    start = rng.randint(1, t - cut - 1)
    order = list(range(start)) + list(range(start + cut, t)) + [t - 1] * cut
    return video[order]


def hold_frame(video: np.ndarray, rng: random.Random) -> np.ndarray:
    """(T, H, W, 3): one frame of ``video``, drawn at random, repeated T times."""
    return np.repeat(video[rng.randrange(len(video))][None], len(video), axis=0)


DEGRADE = {"noise": noise, "blur": blur, "dropped_frames": drop_frames, "static": hold_frame}


def wrong_caption(scene: grammar.Scene, rng: random.Random) -> grammar.Scene:
    """``scene`` with one of its kind, colour or background set to another value, at random; never a
    held-out combination."""
    options = [(f, v) for f, values in CAPTION_FIELDS.items() for v in values if v != getattr(scene, f)]
    rng.shuffle(options)
    for field, value in options:
        try:
            other = replace(scene, **{field: value})
        except grammar.SceneError:  # e.g. the new colour is the second ball's
            continue
        if not other.is_held_out:  # a pool is training data: no test-split combinations
            return other
    raise grammar.SceneError(f"no valid wrong caption for {grammar.scene_to_prompt(scene)!r}")


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    """Write ``lines`` as JSON lines to ``path`` atomically; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".jsonl", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path

"""Sample a model over manifest rows and write videos plus a manifest in the world's format, so that
``physalign eval`` scores generated videos exactly as it scores simulated ones (``physalign sample``,
``physalign demo``). The sampler itself, for any :class:`~physalign.models.interface.VideoModel`, is
:mod:`physalign.models.sampling`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from physalign.files import write_text_atomic
from physalign.models.sampling import sample
from physalign.video import write_mp4
from physalign.world import spec
from physalign.world.scene import prompt_to_scene, scene_to_prompt

CARRIED = ("prompt", "scene", "phenomena", "split", "ood", "seed")


def rows_for_prompts(prompts: Sequence[str]) -> list[dict]:
    """Manifest-like rows for bare prompts (parsed with the world grammar)."""
    rows = []
    for p in prompts:
        scene = prompt_to_scene(p)
        rows.append({"prompt": scene_to_prompt(scene), "scene": scene.to_dict(), "phenomena": []})
    return rows


def sample_to_folder(model, rows: list[dict], out, samples_per_prompt=1, steps=30, guidance=4.0, seed=0, batch_size=32,
                     solver: str = "euler", shard: tuple[int, int] | None = None) -> Path:
    """``samples_per_prompt`` videos (T, H, W, 3) per row, as ``OUT/videos/sample_<row>_<k>.mp4``, and
    ``OUT/manifest.jsonl`` with the rows' world fields and ``sample`` (k); returns the manifest's path.

    ``shard=(k, n)``: only the k-th of n contiguous blocks of the rows (k from 0), with the noise the whole
    sampling gives them, and its lines in ``OUT/manifest.part-k-of-n.jsonl``; the shard that finds all n parts
    written joins them into ``OUT/manifest.jsonl``, the same file one unsharded sampling writes. Shards may run in
    separate processes at once.
    """
    out = Path(out)
    k, n = shard or (0, 1)
    if not 0 <= k < n:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n. Got {shard}.")
    a, b = shard_rows(len(rows), k, n)
    prompts = [r["prompt"] for r in rows[a:b] for _ in range(samples_per_prompt)]
    videos = sample(model, prompts, steps=steps, guidance=guidance, seed=seed, batch_size=batch_size, solver=solver,
                    first=a * samples_per_prompt)
    lines = []
    for i, video in enumerate(videos):
        row, s = a + i // samples_per_prompt, i % samples_per_prompt
        name = f"videos/sample_{row:05d}_{s}.mp4"
        write_mp4(out / name, video, fps=spec.FPS)
        lines.append(json.dumps({"video": name, **{f: rows[row][f] for f in CARRIED if f in rows[row]}, "sample": s}) + "\n")
    path = out / "manifest.jsonl"  # last and atomic: its presence means every video is there
    if n == 1:
        write_text_atomic(path, "".join(lines))
        return path
    write_text_atomic(out / part_manifest(k, n), "".join(lines))
    parts = [out / part_manifest(j, n) for j in range(n)]
    if all(p.is_file() for p in parts):
        write_text_atomic(path, "".join(p.read_text() for p in parts))
    return path


def shard_rows(rows: int, k: int, n: int) -> tuple[int, int]:
    """The rows [a, b) of shard k of n: contiguous blocks whose sizes differ by at most one."""
    return rows * k // n, rows * (k + 1) // n


def part_manifest(k: int, n: int) -> str:
    """The file name of shard k of n's manifest lines."""
    return f"manifest.part-{k}-of-{n}.jsonl"

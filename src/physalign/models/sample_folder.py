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
                     solver: str = "euler") -> Path:
    """``samples_per_prompt`` videos (T, H, W, 3) per row, as ``OUT/videos/sample_<row>_<k>.mp4``, and
    ``OUT/manifest.jsonl`` with the rows' world fields and ``sample`` (k); returns the manifest's path."""
    out = Path(out)
    prompts = [r["prompt"] for r in rows for _ in range(samples_per_prompt)]
    videos = sample(model, prompts, steps=steps, guidance=guidance, seed=seed, batch_size=batch_size, solver=solver)
    lines = []
    for k, video in enumerate(videos):
        row = rows[k // samples_per_prompt]
        name = f"videos/sample_{k // samples_per_prompt:05d}_{k % samples_per_prompt}.mp4"
        write_mp4(out / name, video, fps=spec.FPS)
        lines.append({"video": name, **{f: row[f] for f in CARRIED if f in row}, "sample": k % samples_per_prompt})
    path = out / "manifest.jsonl"  # last and atomic: its presence means every video is there
    write_text_atomic(path, "".join(json.dumps(line) + "\n" for line in lines))
    return path

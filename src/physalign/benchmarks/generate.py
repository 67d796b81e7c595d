"""Sample a model over a benchmark suite, resumably: one mp4 per prompt and seed, ``OUT/videos/<id>_s<seed>.mp4``.

A video that exists is never sampled again (``write_mp4`` is atomic, so an existing file is whole), and
``OUT/manifest.json`` is rewritten atomically after every batch. The noise of a video depends only on its
seed and its caption, ``torch.Generator().manual_seed(video_seed(seed, caption))``, so a resumed run, a
different batch size or another file holding the same caption all sample from the same noise (pixels can
still differ by a level where float rounding differs between batch compositions). A folder is resumed
only with the settings it was made with (suite file contents, checkpoint, steps, guidance, prompt choice);
more seeds may be added.

Prompts longer than the model accepts (the world model's ``max_text_tokens = 32`` against VideoPhy-2's
upsampled captions of up to 170 words) are an error naming them, before anything is sampled; with
``truncate`` each is cut to its longest prefix of whole words that ``model.encode_text`` accepts, and the
manifest records the text sampled and ``truncated: true``. Judges still see the full caption.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from physalign.benchmarks.suites import SuitePrompt
from physalign.models.interface import VideoModel, to_uint8
from physalign.models.sampling import sample_latents
from physalign.video import write_mp4

MANIFEST = "manifest.json"


class SuiteRunError(ValueError):
    """A suite run that cannot start or resume; the message says why and what to do."""


@dataclass(frozen=True)
class SuiteSettings:
    """What a folder's videos depend on; a folder is resumed only with equal settings."""

    suite: str
    file_sha256: str
    checkpoint: str
    steps: int
    guidance: float
    upsampled: bool
    truncate: bool


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def video_name(prompt_id: str, seed: int) -> str:
    """Path of a video relative to the output folder."""
    return f"videos/{prompt_id}_s{seed}.mp4"


def video_seed(seed: int, caption: str) -> int:
    """The noise generator's seed of (seed, caption): 60 bits of SHA-256."""
    return int(hashlib.sha256(f"{seed}\n{caption}".encode()).hexdigest()[:15], 16)


def write_json_atomic(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------- prompts


@torch.no_grad()
def accepts(model: VideoModel, texts: Sequence[str]) -> bool:
    """Whether ``model.encode_text`` takes ``texts`` (models raise ValueError on too long a prompt)."""
    try:
        model.encode_text(list(texts))
        return True
    except ValueError:
        return False


def longest_prefix(model: VideoModel, text: str) -> str | None:
    """The longest prefix of whole words of ``text`` that the model accepts (bisection), None if none does."""
    words = text.split()
    lo, hi = 0, len(words)  # words[:lo] fits (or lo = 0), words[:hi + 1] does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if accepts(model, [" ".join(words[:mid])]) else (lo, mid - 1)
    return " ".join(words[:lo]) if lo else None


def sampled_texts(model: VideoModel, prompts: Sequence[SuitePrompt], upsampled: bool, truncate: bool,
                  batch_size: int = 32) -> dict[str, dict]:
    """{id: {"sampled_prompt", "truncated"}}: the text each prompt is sampled with."""
    if upsampled:
        lacking = [p.id for p in prompts if not p.upsampled]
        if lacking:
            raise SuiteRunError(f"--upsampled: {len(lacking)} prompts have no upsampled caption: {lacking[:5]}")
    texts = {p.id: p.upsampled if upsampled else p.prompt for p in prompts}
    out = {i: {"sampled_prompt": t, "truncated": False} for i, t in texts.items()}
    ids = list(texts)
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        if accepts(model, [texts[i] for i in batch]):
            continue
        for i in batch:
            if accepts(model, [texts[i]]):
                continue
            cut = longest_prefix(model, texts[i]) if truncate else None
            if cut is None:
                hint = "no prefix of it fits either" if truncate else "pass --truncate to cut such prompts to the longest prefix of words that fits"
                raise SuiteRunError(f"prompt {i} is longer than the model's text encoder accepts ({hint}): {texts[i][:120]!r}")
            out[i] = {"sampled_prompt": cut, "truncated": True}
    return out


# ----------------------------------------------------------------------------------------- the run


def load_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SuiteRunError(f"{path}: not valid JSON ({err}); it is written atomically, so this is not a half-written "
                            "run: move it away to start over") from None


def check_resumable(old: dict | None, settings: SuiteSettings, out: Path) -> None:
    """Refuse to add videos to a folder made with other settings."""
    if old is None:
        return
    differ = {k: (old["settings"].get(k), v) for k, v in asdict(settings).items() if old["settings"].get(k) != v}
    if differ:
        listed = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
        raise SuiteRunError(f"{out} holds videos made with other settings ({listed}); use another --out")


def manifest_payload(settings: SuiteSettings, file: Path, prompts: Sequence[SuitePrompt], texts: dict[str, dict],
                     seeds: Sequence[int], out: Path) -> dict:
    videos = [{"video": video_name(p.id, s), "id": p.id, "seed": s}
              for p in prompts for s in seeds if (out / video_name(p.id, s)).is_file()]
    rows = [{**p.to_dict(), **texts[p.id]} for p in prompts]
    return {"settings": asdict(settings), "file": str(file), "seeds": list(seeds), "prompts": rows, "videos": videos}


@torch.no_grad()
def sample_batch(model: VideoModel, texts: Sequence[str], captions: Sequence[str], seeds: Sequence[int], steps: int,
                 guidance: float):
    """uint8 (B, T, H, W, 3) videos; noise per video from :func:`video_seed`."""
    shape = model.latent_shape(model.video_shape)
    device = next(model.parameters()).device
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(video_seed(s, c)))
                         for s, c in zip(seeds, captions)]).to(device)  # (B, C, t, h, w)
    return to_uint8(model.decode(sample_latents(model, texts, noise, steps, guidance)))


def generate_suite(model: VideoModel, prompts: Sequence[SuitePrompt], file: str | Path, out: str | Path,
                   settings: SuiteSettings, seeds: Sequence[int] = (0,), batch_size: int = 8, fps: float = 12.0,
                   progress: bool = True) -> dict:
    """Sample every missing (prompt, seed) video into ``out``; returns {"sampled", "skipped", "manifest"}."""
    out, file = Path(out), Path(file)
    if not seeds or batch_size < 1:
        raise SuiteRunError(f"need at least one seed and batch_size >= 1. Got seeds={list(seeds)}, batch_size={batch_size}.")
    old = load_manifest(out)
    check_resumable(old, settings, out)
    todo = [(p, s) for p in prompts for s in seeds if not (out / video_name(p.id, s)).is_file()]
    known = {r["id"]: r for r in old["prompts"]} if old else {}
    fresh = [p for p in prompts if p.id not in known]
    texts = {i: {k: known[i][k] for k in ("sampled_prompt", "truncated")} for i in known}
    texts.update(sampled_texts(model, fresh, settings.upsampled, settings.truncate))
    (out / "videos").mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    write_json_atomic(manifest, manifest_payload(settings, file, prompts, texts, seeds, out))
    model.eval()
    with tqdm(total=len(todo), desc=f"generate {settings.suite}", unit="video", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            videos = sample_batch(model, [texts[p.id]["sampled_prompt"] for p, _ in batch], [p.prompt for p, _ in batch],
                                  [s for _, s in batch], settings.steps, settings.guidance)
            for (p, s), video in zip(batch, videos):
                write_mp4(out / video_name(p.id, s), video, fps=fps)
            write_json_atomic(manifest, manifest_payload(settings, file, prompts, texts, seeds, out))
            bar.update(len(batch))
    return {"sampled": len(todo), "skipped": len(prompts) * len(seeds) - len(todo), "manifest": manifest}

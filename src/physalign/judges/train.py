"""Training the world judge (``physalign train-judge``): questions about world videos, answers known.

The data (:mod:`physalign.judges.data`) is built from the world in memory, deterministically from ``seed``:
``train_scenes`` scenes of the train split and ``heldout_scenes`` of the val split for the figures. A share of
the train videos also gets an autoencoder round trip (``decode(encode(video))`` of the ``autoencoder`` model,
the shipped base by default), because the judge will read decodes of a generator, blurrier than the
simulator's renders.

A step draws ``scenes_per_step`` scenes (epochs of seeded permutations) and from each scene one question of
every (kind, answer) stratum it has: a true and a false fact, the plausibility of its clean and of its
corrupted video, its own prompt and a mismatched one, so yes and no are balanced within every kind. Every
video of the step is encoded once and shared by its questions. Each video is shown as rendered or as its
round trip, then degraded (Gaussian blur, noise) with the same probabilities whatever its answer, so that
blur never tells a corrupted clip from a clean one. Loss: cross-entropy of the yes/no logits, plus
``rating_weight`` x cross-entropy of the rating logits (targets: ``data`` module docstring), plus
``attribute_weight`` x the :class:`AttributeProbe`'s cross-entropy [ours]: linear heads that read the scene's
attributes (colour, kind, motion, gravity...) off each clean video's mean token, so that the video tokens
carry what prompts name (in pilots of 400 steps, prompt match stayed near chance without it). The probe is
not exported.

Outputs: ``OUT/`` the judge (:func:`physalign.judges.world.save_world_judge`), ``OUT/judge.yaml`` (this config)
and ``OUT/judge.json`` (data, time, held-out accuracy per question kind and tag, on rendered, blurred and
round-tripped videos); ``RUN/log.jsonl`` the loss curve. A run takes minutes, so it is not resumable: a new
run starts over.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm import tqdm

from physalign.judges.base import PLAUSIBILITY_QUESTION, fact_question, prompt_question
from physalign.judges.data import (DEFAULT_PLAUSIBILITY_KINDS, DEFAULT_PROMPT_KINDS, KINDS, Item, JudgeData,
                                   build_split)
from physalign.judges.world import (JudgeSizes, WorldJudgeNet, build_question_tokenizer, encode_questions,
                                    save_world_judge)
from physalign.models.interface import to_model_range, to_uint8
from physalign.models.tokenizer import world_vocabulary
from physalign.teacher.pretrain import lr_factor
from physalign.train.config import ConfigError, load_flat_config
from physalign.train.data import batch_indices
from physalign.train.loop import TrainingError, seed_everything
from physalign.world import scene as grammar
from physalign.world.corrupt import CORRUPTIONS

ATTRIBUTES = {"kind": grammar.KINDS, "color": grammar.COLORS, "size": grammar.SIZES, "background": grammar.BACKGROUNDS,
              "kinematics": grammar.KINEMATICS, "force": grammar.FORCES, "material": grammar.MATERIALS,
              "interaction": grammar.INTERACTIONS, "magnitude": grammar.MAGNITUDES}


@dataclass
class JudgeTrainConfig:
    """Everything a judge run depends on; saved as ``OUT/judge.yaml``."""

    seed: int = 0
    train_scenes: int = 2000  # two videos each (clean, corrupted)
    heldout_scenes: int = 400  # of the val split, for judge.json
    plausibility_kinds: list[str] = field(default_factory=lambda: list(DEFAULT_PLAUSIBILITY_KINDS))
    prompt_kinds: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPT_KINDS))
    autoencoder: str = "checkpoints/base"  # model folder whose encode/decode gives round trips; "" = none
    round_trip_share: float = 0.1  # of the train scenes whose two videos get a round-trip copy
    heldout_round_trip_scenes: int = 100  # held-out scenes also measured after a round trip
    round_trip_prob: float = 0.5  # a video with a round-trip copy is shown it with this probability
    blur_prob: float = 0.5
    blur_max: float = 1.0  # Gaussian blur sigma ~ U(0, blur_max) pixels
    noise_prob: float = 0.5
    noise_max: float = 0.06  # Gaussian noise std ~ U(0, noise_max), on the [-1, 1] scale
    heldout_blur: float = 0.8  # sigma of the blurred held-out condition
    sizes: dict = field(default_factory=dict)  # JudgeSizes fields
    steps: int = 1000
    scenes_per_step: int = 16
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.05
    warmup_steps: int = 100  # then cosine decay to 0
    grad_clip: float = 1.0
    rating_weight: float = 0.5
    attribute_weight: float = 0.5  # [ours] auxiliary loss: the scene's attributes read off the clean videos' tokens
    threads: int = 1  # torch intra-op threads; 0 = torch's default
    log_every: int = 25

    def __post_init__(self) -> None:
        unknown = sorted(set(self.plausibility_kinds + self.prompt_kinds) - set(CORRUPTIONS))
        if unknown:
            raise ConfigError(f"unknown corruption kinds {unknown}; available: {sorted(CORRUPTIONS)}")
        for name in ("round_trip_share", "round_trip_prob", "blur_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1]. Got {getattr(self, name)}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_judge_config(path: str | Path | None = None, overrides: list[str] = ()) -> JudgeTrainConfig:
    """Read YAML ``path`` (or the defaults when None), then apply ``key=value`` overrides (values as YAML)."""
    return load_flat_config(JudgeTrainConfig, path, overrides)


# ------------------------------------------------------------------------------------------- videos


@torch.no_grad()
def round_trips(model, videos: np.ndarray, chunk: int = 32) -> np.ndarray:
    """uint8 (N, T, H, W, 3) -> the same videos through ``model.decode(model.encode(.))``, uint8."""
    out = [to_uint8(model.decode(model.encode(to_model_range(videos[i : i + chunk]))))
           for i in range(0, len(videos), chunk)]
    return np.concatenate(out)


def gaussian_blur(videos: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Spatial Gaussian blur of (B, C, T, H, W) with a per-video ``sigma`` (B,) in pixels (0 = unchanged);
    kernel radius 2, edges replicated."""
    b, c, t, h, w = videos.shape
    offsets = torch.arange(-2, 3, dtype=videos.dtype, device=videos.device)  # (5,)
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp_min(1e-3)[:, None]) ** 2)  # (B, 5)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, 5)
    x = videos.permute(2, 0, 1, 3, 4).reshape(t, b * c, h, w)  # (T, B*C, H, W): a channel per (video, colour)
    x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), kernel[:, None, :, None], groups=b * c)
    return x.reshape(t, b, c, h, w).permute(1, 2, 0, 3, 4)  # (B, C, T, H, W)


def degrade(videos: torch.Tensor, cfg: JudgeTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Blur with probability ``blur_prob`` (sigma ~ U(0, blur_max)), then noise with probability
    ``noise_prob`` (std ~ U(0, noise_max)), independently per video of (B, 3, T, H, W)."""
    b = len(videos)
    draw = lambda: torch.rand(b, generator=generator)  # noqa: E731
    sigma = torch.where(draw() < cfg.blur_prob, draw() * cfg.blur_max, torch.zeros(b))
    videos = gaussian_blur(videos, sigma)
    std = torch.where(draw() < cfg.noise_prob, draw() * cfg.noise_max, torch.zeros(b))
    noise = torch.randn(videos.shape, generator=generator) * std[:, None, None, None, None]
    return (videos + noise).clamp(-1, 1)


# -------------------------------------------------------------------------------------------- steps


@dataclass
class Batch:
    videos: torch.Tensor  # (V, 3, T, H, W) in [-1, 1], degraded
    video_index: torch.Tensor  # (Q,) row of ``videos`` per question
    ids: torch.Tensor  # (Q, L)
    padding: torch.Tensor  # (Q, L) True = padding
    answer: torch.Tensor  # (Q,) 0 = yes, 1 = no
    rating: torch.Tensor  # (Q,) 0..4 = ratings 1..5
    attributes: torch.Tensor  # (V, len(ATTRIBUTES)) value index of each scene attribute; -1 for corrupted videos


def make_batch(data: JudgeData, strata: list[list[list[int]]], trips: dict[int, np.ndarray], tokenizer,
               cfg: JudgeTrainConfig, step: int, max_words: int) -> Batch:
    """The step's scenes, one question of each of their strata, their videos (as rendered or round-tripped)."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    scenes = batch_indices(step, cfg.scenes_per_step, len(data.scenes), cfg.seed).tolist()
    items = [data.items[rng.choice(group)] for s in scenes for group in strata[s]]
    rows = sorted({item.video for item in items})
    shown = [trips[r] if r in trips and rng.random() < cfg.round_trip_prob else data.videos[r] for r in rows]
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    videos = degrade(to_model_range(np.stack(shown)), cfg, generator)
    position = {r: i for i, r in enumerate(rows)}
    ids, padding = encode_questions(tokenizer, [item.question for item in items], max_words)
    return Batch(videos, torch.tensor([position[item.video] for item in items]), ids, padding,
                 torch.tensor([0 if item.yes else 1 for item in items]), torch.tensor([item.rating - 1 for item in items]),
                 attribute_targets(data, rows))


def attribute_targets(data: JudgeData, rows: list[int]) -> torch.Tensor:
    """(len(rows), len(ATTRIBUTES)): each clean video's scene attributes as value indices; -1 elsewhere."""
    scene_of = {record.clean: record.scene for record in data.scenes}
    return torch.tensor([[values.index(getattr(scene_of[r], name)) if r in scene_of else -1
                          for name, values in ATTRIBUTES.items()] for r in rows])


class AttributeProbe(nn.Module):
    """[ours] Linear heads reading each scene attribute off the mean video token. Trained with the judge as an
    auxiliary loss, so that the video tokens carry what prompts name; not part of the exported judge."""

    def __init__(self, width: int):
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """tokens (V, N, D), targets (V, A) -> mean cross-entropy over attributes (rows of -1 ignored)."""
        pooled = tokens.mean(1)  # (V, D)
        if (targets[:, 0] < 0).all():
            return pooled.sum() * 0.0
        return torch.stack([F.cross_entropy(head(pooled), targets[:, a], ignore_index=-1)
                            for a, head in enumerate(self.heads.values())]).mean()


def train_step(net: WorldJudgeNet, probe: AttributeProbe, opt, sched, batch: Batch, cfg: JudgeTrainConfig,
               step: int) -> dict[str, float]:
    """One update of the judge and the probe; returns the step's named loss terms and answer accuracy."""
    net.train()
    tokens = net.encode_video(batch.videos)  # (V, N, D)
    answer, rating = net.answer(tokens, batch.ids, batch.padding, batch.video_index)
    answer_loss = F.cross_entropy(answer, batch.answer)
    rating_loss = F.cross_entropy(rating, batch.rating)
    attribute_loss = probe(tokens, batch.attributes)
    loss = answer_loss + cfg.rating_weight * rating_loss + cfg.attribute_weight * attribute_loss
    if not torch.isfinite(loss):
        raise TrainingError(f"step {step}: non-finite judge loss {float(loss)}; lower lr")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_([*net.parameters(), *probe.parameters()], cfg.grad_clip or math.inf)
    opt.step()
    sched.step()
    accuracy = (answer.argmax(-1) == batch.answer).float().mean()
    return {"loss": float(loss.detach()), "answer": float(answer_loss.detach()), "rating": float(rating_loss.detach()),
            "attributes": float(attribute_loss.detach()),
            "accuracy": float(accuracy), "grad_norm": float(norm), "questions": len(batch.answer)}


# ------------------------------------------------------------------------------------------ figures


@torch.no_grad()
def answer_items(net: WorldJudgeNet, tokenizer, videos: torch.Tensor, items: list[Item], chunk: int = 64
                 ) -> tuple[np.ndarray, np.ndarray]:
    """P(yes) (I,) and expected rating (I,) of each item; ``videos`` (V, 3, T, H, W) holds every item's row."""
    net.eval()
    rows = sorted({item.video for item in items})
    tokens = torch.cat([net.encode_video(videos[rows[i : i + chunk]]) for i in range(0, len(rows), chunk)])
    position = {r: i for i, r in enumerate(rows)}
    p_yes, expected = [], []
    for i in range(0, len(items), 4 * chunk):
        part = items[i : i + 4 * chunk]
        ids, padding = encode_questions(tokenizer, [item.question for item in part], net.sizes.max_words)
        answer, rating = net.answer(tokens, ids, padding, torch.tensor([position[item.video] for item in part]))
        p_yes.append(answer.softmax(-1)[:, 0])
        expected.append(rating.softmax(-1) @ torch.arange(1.0, 6.0))
    return torch.cat(p_yes).numpy(), torch.cat(expected).numpy()


def accuracy_report(items: list[Item], p_yes: np.ndarray, expected: np.ndarray,
                    untrained: tuple[str, ...] = ()) -> dict:
    """Per question kind: accuracy (yes at P(yes) >= 0.5, VideoPhy's rule), balanced accuracy (mean of the
    yes-items' and the no-items' accuracy) and, per tag, accuracy, count and mean expected rating.
    Plausibility tags in ``untrained`` (corruption kinds the judge was not taught to call implausible) are
    reported but left out of the kind's figures."""
    correct = (p_yes >= 0.5) == np.array([item.yes for item in items])
    report = {}
    for kind in KINDS:
        tags = sorted({item.tag for item in items if item.kind == kind})
        rows = {tag: [i for i, item in enumerate(items) if item.kind == kind and item.tag == tag] for tag in tags}
        left_out = untrained if kind == "plausibility" else ()
        scored = [i for tag in tags if tag not in left_out for i in rows[tag]]
        if not scored:
            continue
        yes = [i for i in scored if items[i].yes]
        no = [i for i in scored if not items[i].yes]
        report[kind] = {
            "accuracy": round(float(correct[scored].mean()), 4),
            "balanced_accuracy": round(float((correct[yes].mean() + correct[no].mean()) / 2), 4) if yes and no else None,
            "n": len(scored),
            "tags": {tag: {"accuracy": round(float(correct[r].mean()), 4), "n": len(r),
                           "mean_rating": round(float(expected[r].mean()), 3), "scored": tag not in left_out}
                     for tag, r in rows.items()},
        }
    return report


def heldout_figures(net: WorldJudgeNet, tokenizer, data: JudgeData, trips: dict[int, np.ndarray],
                    cfg: JudgeTrainConfig) -> dict:
    """Accuracy reports on the held-out split: as rendered, blurred by ``heldout_blur``, and round-tripped
    (the videos that have a round trip in ``trips``)."""
    untrained = tuple(k for k in CORRUPTIONS if k not in cfg.plausibility_kinds)
    videos = to_model_range(data.videos)
    blurred = gaussian_blur(videos, torch.full((len(videos),), cfg.heldout_blur))
    figures = {name: accuracy_report(data.items, *answer_items(net, tokenizer, shown, data.items), untrained)
               for name, shown in (("rendered", videos), (f"blurred_sigma_{cfg.heldout_blur}", blurred))}
    if trips:
        shown = videos.clone()
        for row, video in trips.items():
            shown[row] = to_model_range(video[None])[0]
        items = [item for item in data.items if item.video in trips]
        figures["round_trip"] = accuracy_report(items, *answer_items(net, tokenizer, shown, items), untrained)
    return figures


# ---------------------------------------------------------------------------------------------- run


def question_words(data: JudgeData) -> list[str]:
    """What the vocabulary is built from: the grammar's words, the question templates, the train facts."""
    templates = [PLAUSIBILITY_QUESTION, fact_question("x"), prompt_question("x")]
    return list(world_vocabulary()) + templates + sorted({f for record in data.scenes for f in record.facts})


def build_data(cfg: JudgeTrainConfig, progress: bool) -> tuple[JudgeData, JudgeData]:
    """The train split (the config's kinds) and the held-out val split (every kind asked for plausibility,
    so that untrained kinds are measured too)."""
    train = build_split("train", cfg.train_scenes, cfg.seed, cfg.plausibility_kinds, cfg.prompt_kinds, progress=progress)
    heldout = build_split("val", cfg.heldout_scenes, cfg.seed, tuple(CORRUPTIONS), cfg.prompt_kinds, progress=progress)
    return train, heldout


def round_trip_rows(data: JudgeData, scenes: int) -> list[int]:
    """The video rows (clean and corrupted) of the first ``scenes`` scenes."""
    return sorted(r for record in data.scenes[:scenes] for r in (record.clean, record.corrupted) if r is not None)


def make_trips(cfg: JudgeTrainConfig, train: JudgeData, heldout: JudgeData) -> tuple[dict, dict]:
    """Round-trip copies {row: uint8 video} of a ``round_trip_share`` of the train scenes (the first ones:
    scenes are already in random order) and of ``heldout_round_trip_scenes`` held-out scenes."""
    if not cfg.autoencoder:
        return {}, {}
    from physalign.models.interface import load_model

    try:
        model = load_model(cfg.autoencoder).eval()
    except (OSError, ValueError) as err:
        raise TrainingError(f"autoencoder {cfg.autoencoder!r}: {err}") from None
    out = []
    for data, scenes in ((train, round(cfg.round_trip_share * len(train.scenes))), (heldout, cfg.heldout_round_trip_scenes)):
        rows = round_trip_rows(data, scenes)
        out.append(dict(zip(rows, round_trips(model, data.videos[rows]))) if rows else {})
    return out[0], out[1]


def build_net(cfg: JudgeTrainConfig, tokenizer) -> WorldJudgeNet:
    try:
        sizes = JudgeSizes.from_dict({**cfg.sizes, "vocab_size": len(tokenizer)}, "sizes")
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    return WorldJudgeNet(sizes)


def train_judge(cfg: JudgeTrainConfig, out: str | Path, run: str | Path, progress: bool = True,
                command: str = "") -> Path:
    """Build the data, train, measure on the held-out split and export to ``out``; returns ``out``.
    ``command`` (the command line) is recorded in ``out/judge.json``."""
    began, seconds = time.perf_counter(), {}
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    train, heldout = build_data(cfg, progress)
    seconds["data"] = time.perf_counter() - began
    trips, heldout_trips = make_trips(cfg, train, heldout)
    seconds["round_trips"] = time.perf_counter() - began - seconds["data"]
    tokenizer = build_question_tokenizer(question_words(train), JudgeSizes().max_words)
    net = build_net(cfg, tokenizer)
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    seconds["train"] = _loop(cfg, net, tokenizer, train, trips, run / "log.jsonl", progress)
    figures_began = time.perf_counter()
    figures = heldout_figures(net, tokenizer, heldout, heldout_trips, cfg)
    seconds["figures"] = time.perf_counter() - figures_began
    net.eval()
    save_world_judge(net, tokenizer, out)
    (Path(out) / "judge.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    seconds["total"] = time.perf_counter() - began
    record = {"command": command, "data": {"train": data_summary(train, trips), "heldout": data_summary(heldout, heldout_trips)},
              "seconds": {k: round(v, 1) for k, v in seconds.items()}, "threads": torch.get_num_threads(),
              "parameters": sum(p.numel() for p in net.parameters()), "final_loss": _final_loss(run / "log.jsonl"),
              "heldout": figures}
    (Path(out) / "judge.json").write_text(json.dumps(record, indent=2) + "\n")
    return Path(out)


def _loop(cfg: JudgeTrainConfig, net: WorldJudgeNet, tokenizer, data: JudgeData, trips: dict, log_path: Path,
          progress: bool) -> float:
    """Steps 0 .. ``cfg.steps``; returns the seconds spent in them."""
    probe = AttributeProbe(net.sizes.width)
    params = [*net.parameters(), *probe.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, cfg.warmup_steps, cfg.steps))
    strata, elapsed = data.groups(), 0.0
    bar = tqdm(range(cfg.steps), desc="judge", disable=not progress)
    with open(log_path, "w") as log:
        for step in bar:
            began = time.perf_counter()
            batch = make_batch(data, strata, trips, tokenizer, cfg, step, net.sizes.max_words)
            terms = train_step(net, probe, opt, sched, batch, cfg, step)
            elapsed += time.perf_counter() - began
            if step % cfg.log_every == 0 or step + 1 == cfg.steps:
                log.write(json.dumps({"step": step, "lr": sched.get_last_lr()[0], **terms, "elapsed": elapsed}) + "\n")
                log.flush()
                bar.set_postfix({k: f"{terms[k]:.3g}" for k in ("loss", "accuracy")})
    return elapsed


def data_summary(data: JudgeData, trips: dict) -> dict:
    """Counts of scenes, videos, round trips and questions per kind, and the corruption kinds used."""
    kinds = {}
    for record in data.scenes:
        if record.kind:
            kinds[record.kind] = kinds.get(record.kind, 0) + 1
    return {"scenes": len(data.scenes), "videos": len(data.videos), "round_trips": len(trips),
            "questions": {k: sum(item.kind == k for item in data.items) for k in KINDS},
            "corruptions": dict(sorted(kinds.items()))}


def _final_loss(path: Path, last: int = 10) -> float:
    """Mean loss of the last ``last`` log records."""
    records = [json.loads(line) for line in path.read_text().splitlines()][-last:]
    return round(sum(r["loss"] for r in records) / len(records), 5)

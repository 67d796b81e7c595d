"""The world judge: a small video classifier, trained by this project on the physics world, behind :class:`Judge`.

Architecture (:class:`WorldJudgeNet`), all differentiable in the video:

- video encoder: the frames and their differences to the previous frame (motion is what physics questions are
  about), 6 channels, through ``Conv3d`` stages (kernel 3, GroupNorm, SiLU); the last stage's grid becomes
  tokens ``(B, N, D)`` with a learned position per cell. The grid is derived from the strides (:func:`conv_grid`).
- question: a word-level vocabulary of the world's grammar, the phenomena wording and the question templates
  (``tokenizers`` WordLevel in a ``PreTrainedTokenizerFast``), a ``<cls>`` token first, learned positions.
- fusion: ``layers`` transformer layers over the question's tokens whose attention reads [the video's tokens;
  the question's tokens] (:class:`FusionLayer`), so each word can look for what it names in the clip; the
  ``<cls>`` token starts from a projection of the mean video token, and its last state feeds a yes/no head
  ``(B, 2)`` and a rating head ``(B, 5)``.

The video is encoded once and its tokens can be shared by several questions (:meth:`WorldJudgeNet.answer`
takes an index from questions to videos); the fusion layers project each video's keys and values once too,
then gather them per question. That is what makes training on many questions per clip cheap: a
decoder whose every question token cross-attends would project the video per question.

Folder layout (:func:`save_world_judge`): ``config.json`` (:class:`JudgeSizes`), ``model.safetensors``,
``tokenizer/``; :func:`load_world_judge` refuses anything but safetensors weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import PreTrainedTokenizerFast

from physalign.assets import resolve
from physalign.judges.base import Judge, check_batch

CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_DIR = "config.json", "model.safetensors", "tokenizer"
PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass
class JudgeSizes:
    """The network's shape; saved as ``config.json``. The defaults are the shipped judge's."""

    channels: tuple[int, ...] = (24, 48, 96)  # one Conv3d stage each
    strides: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (1, 2, 2), (2, 2, 2))  # (T, H, W) per stage
    width: int = 96  # token width D of video, question and fusion
    heads: int = 4
    layers: int = 3  # fusion layers
    mlp_ratio: int = 4
    dropout: float = 0.1
    max_words: int = 48  # question length limit, <cls> included
    vocab_size: int = 0  # set from the tokenizer when the net is built
    frames: int = 16  # the video shape the judge reads
    resolution: int = 32

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.strides = tuple(tuple(s) for s in self.strides)
        if len(self.channels) != len(self.strides):
            raise ValueError(f"channels and strides need one entry per stage. Got {len(self.channels)} channels "
                             f"and {len(self.strides)} strides.")
        if any(c % 8 for c in self.channels) or self.width % self.heads:
            raise ValueError(f"channels must be multiples of 8 (GroupNorm of 8 groups) and width a multiple of "
                             f"heads. Got channels {self.channels}, width {self.width}, heads {self.heads}.")

    @classmethod
    def from_dict(cls, values: dict, where: str = "judge sizes") -> "JudgeSizes":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{where}: unknown fields {unknown}; fields: {sorted(names)}")
        return cls(**values)


def conv_grid(size: Sequence[int], strides: Iterable[Sequence[int]]) -> tuple[int, ...]:
    """(T, H, W) after kernel-3, padding-1 convolutions of the given strides: n -> floor((n - 1) / s) + 1."""
    grid = tuple(size)
    for stride in strides:
        grid = tuple((n - 1) // s + 1 for n, s in zip(grid, stride))
    return grid


# ------------------------------------------------------------------------------------------ vocabulary


def build_question_tokenizer(words: Iterable[str], max_words: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``<pad> <unk> <cls>`` and the sorted ``words`` (whitespace and punctuation
    split, lower case); every encoding starts with ``<cls>``."""
    split = pre_tokenizers.Whitespace()
    vocab_words = sorted({w for text in words for w, _ in split.pre_tokenize_str(text.lower())})
    vocab = {word: i for i, word in enumerate((PAD, UNK, CLS, *vocab_words))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, unk_token=UNK, cls_token=CLS,
                                   model_max_length=max_words)


def encode_questions(tokenizer: PreTrainedTokenizerFast, questions: Sequence[str], max_words: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, L) and a padding mask (B, L), True = padding, with ``<cls>`` at position 0."""
    texts = [f"{CLS} {q.lower()}" for q in questions]
    tokens = tokenizer(texts, padding="longest", return_tensors="pt")
    if tokens.input_ids.shape[1] > max_words:
        longest = max(questions, key=len)
        raise ValueError(f"question longer than max_words={max_words} words: {longest!r}")
    return tokens.input_ids, tokens.attention_mask == 0


# --------------------------------------------------------------------------------------------- network


def _stage(c_in: int, c_out: int, stride: Sequence[int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride=tuple(stride), padding=1), nn.GroupNorm(8, c_out), nn.SiLU())


class FusionLayer(nn.Module):
    """A pre-norm transformer layer over the question's tokens whose attention also reads the video's tokens:
    keys and values are [video tokens; question tokens], queries the question tokens. The video's keys and
    values are projected once per video and gathered per question; the video tokens are not updated."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm_x, self.norm_video, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.video_kv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, 2 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, video: torch.Tensor, video_index: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """x (Q, L, D), video (V, N, D), video_index (Q,), padding (Q, L) True = padding -> (Q, L, D)."""
        q, k, v = self.qkv(self.norm_x(x)).chunk(3, -1)  # (Q, L, D) each
        video_k, video_v = self.video_kv(self.norm_video(video))[video_index].chunk(2, -1)  # (Q, N, D) each
        keep = torch.cat([padding.new_ones(len(x), video.shape[1]), ~padding], 1)  # (Q, N+L)
        q, k, v = self._heads(q), self._heads(torch.cat([video_k, k], 1)), self._heads(torch.cat([video_v, v], 1))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :],
                                                  dropout_p=self.dropout if self.training else 0.0)  # (Q, h, L, D/h)
        x = x + F.dropout(self.out(attended.transpose(1, 2).flatten(2)), self.dropout, self.training)
        return x + self.mlp(self.norm_mlp(x))  # (Q, L, D)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (Q, *, D) -> (Q, h, *, D/h)


class WorldJudgeNet(nn.Module):
    """Videos (B, 3, T, H, W) in [-1, 1] and question tokens -> answer logits (Q, 2) and rating logits (Q, 5)."""

    def __init__(self, sizes: JudgeSizes):
        super().__init__()
        if sizes.vocab_size < 4:
            raise ValueError(f"vocab_size must be set from the tokenizer (>= 4). Got {sizes.vocab_size}.")
        self.sizes = s = sizes
        chans = (6, *s.channels)
        self.video = nn.Sequential(*[_stage(a, b, st) for a, b, st in zip(chans, chans[1:], s.strides)])
        self.to_tokens = nn.Linear(s.channels[-1], s.width)
        self.grid = conv_grid((s.frames, s.resolution, s.resolution), s.strides)
        self.video_pos = nn.Parameter(torch.randn(1, math.prod(self.grid), s.width) * 0.02)
        self.words = nn.Embedding(s.vocab_size, s.width)
        self.word_pos = nn.Parameter(torch.randn(1, s.max_words, s.width) * 0.02)
        self.fusion = nn.ModuleList(FusionLayer(s.width, s.heads, s.mlp_ratio, s.dropout) for _ in range(s.layers))
        self.video_summary = nn.Linear(s.width, s.width)
        self.norm = nn.LayerNorm(s.width)
        self.answer_head = nn.Linear(s.width, 2)
        self.rating_head = nn.Linear(s.width, 5)

    def encode_video(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> video tokens (B, N, D), N = product of :attr:`grid`."""
        expected = (3, self.sizes.frames, self.sizes.resolution, self.sizes.resolution)
        if videos.ndim != 5 or tuple(videos.shape[1:]) != expected:
            raise ValueError(f"the world judge reads videos of shape (B, {', '.join(map(str, expected))}) in [-1, 1]. "
                             f"Got {tuple(videos.shape)}.")
        motion = torch.cat([torch.zeros_like(videos[:, :, :1]), videos.diff(dim=2)], dim=2)  # (B, 3, T, H, W)
        h = self.video(torch.cat([videos, motion], dim=1))  # (B, C, t, h, w)
        return self.to_tokens(h.flatten(2).transpose(1, 2)) + self.video_pos  # (B, N, D)

    def answer(self, video_tokens: torch.Tensor, ids: torch.Tensor, padding: torch.Tensor,
               video_index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Question q reads the tokens (V, N, D) of video ``video_index[q]`` (default: q). ids, padding: (Q, L).
        Returns answer logits (Q, 2) (yes, no) and rating logits (Q, 5) (1..5)."""
        if video_index is None:
            video_index = torch.arange(len(video_tokens), device=video_tokens.device)
        if len(video_index) != len(ids):
            raise ValueError(f"one video per question: got {len(video_index)} videos for {len(ids)} questions.")
        x = self.words(ids) + self.word_pos[:, : ids.shape[1]]  # (Q, L, D)
        summary = self.video_summary(video_tokens.mean(1))[video_index]  # (Q, D)
        x = torch.cat([x[:, :1] + summary[:, None], x[:, 1:]], 1)  # the <cls> token starts from the clip's summary
        for layer in self.fusion:
            x = layer(x, video_tokens, video_index, padding)  # (Q, L, D)
        cls = self.norm(x[:, 0])  # (Q, D)
        return self.answer_head(cls), self.rating_head(cls)

    def forward(self, videos: torch.Tensor, ids: torch.Tensor, padding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.answer(self.encode_video(videos), ids, padding)


# ----------------------------------------------------------------------------------------------- judge


class WorldJudge(Judge):
    """:class:`Judge` over a :class:`WorldJudgeNet` and its question tokenizer."""

    def __init__(self, net: WorldJudgeNet, tokenizer: PreTrainedTokenizerFast):
        self.net, self.tokenizer = net, tokenizer

    def logits(self, videos: torch.Tensor, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2) answer and (B, 5) rating logits in one pass."""
        check_batch(videos, questions)
        ids, padding = encode_questions(self.tokenizer, questions, self.net.sizes.max_words)
        device = self.net.video_pos.device
        return self.net(videos.to(device), ids.to(device), padding.to(device))

    def answer_logits(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        return self.logits(videos, questions)[0]

    def rating_logits(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        return self.logits(videos, questions)[1]


def save_world_judge(net: WorldJudgeNet, tokenizer: PreTrainedTokenizerFast, path: str | Path) -> None:
    """Write ``config.json``, ``model.safetensors`` and ``tokenizer/`` to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(net.sizes), indent=2) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, path / WEIGHTS_FILE)
    tokenizer.save_pretrained(path / TOKENIZER_DIR)


def load_world_judge(path: str | Path, device: str | torch.device = "cpu") -> WorldJudge:
    """The judge saved at ``path``, frozen (no parameter gradients) and in eval mode. Gradients still flow
    to the videos it is given. Weights are read from ``model.safetensors`` only, never unpickled."""
    path = resolve(path)
    config, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config.is_file():
        raise FileNotFoundError(f"{path}: not a world judge folder (no {CONFIG_FILE})")
    if not weights.is_file():
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        raise FileNotFoundError(f"{weights}: missing; judges load safetensors weights only"
                                + (f" (found {pickled}, which are not loaded)" if pickled else ""))
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{weights}: not a safetensors file ({err}); judges never load pickled weights") from None
    sizes = JudgeSizes.from_dict(json.loads(config.read_text()), str(config))
    net = WorldJudgeNet(sizes)
    net.load_state_dict(state)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path / TOKENIZER_DIR)
    return WorldJudge(net.to(device).eval().requires_grad_(False), tokenizer)

"""A real video-language model as a :class:`Judge`: transformers ``LlavaNextVideoForConditionalGeneration``.

Scoring as VideoPhy does with its judge: ask the question in a conversation template and read the next-token
logits at the answer position. ``answer_logits`` are the logits of the "Yes" and "No" tokens there (so
``yes_prob`` = softmax over the two), ``rating_logits`` those of the tokens "1".."5"; ``rating_replies`` are
greedy replies (VideoPhy-2's reading, :func:`physalign.judges.official.parse_rating`). The template is
LLaVA-NeXT-Video's own (:data:`LLAVA_CONVERSATION`) unless the judge is asked in another one
(``with_conversation``, e.g. the benchmarks' in :mod:`physalign.judges.official`).

The model, its tokenizer and its video processor's settings are read from a local folder (a user's download
of e.g. ``LLaVA-NeXT-Video-7B-hf``, or a folder the tests write); nothing is fetched from a hub, and weights are
loaded from safetensors only. Pixels are computed from the video tensor in torch, following the video
processor's saved settings (``video_preprocessor_config.json``: resize of the shortest edge, bicubic; centre
crop; rescale to [0, 1]; normalise with its mean and std), so the score is differentiable in the video. We do
not call ``LlavaNextVideoVideoProcessor`` itself: it converts to uint8 on the way, and it needs torchvision,
which does not load with this project's CPU build of torch (measured: the torchvision 0.28.0 wheel fails
with "operator torchvision::nms does not exist"). The ``<video>`` placeholder is expanded to as many tokens as
the processor would (:meth:`VLMJudge.video_tokens`, the rule of ``LlavaNextVideoProcessor``), and the model
checks that this matches its features.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, LlavaNextVideoForConditionalGeneration
from transformers.image_transforms import get_resize_output_image_size

from physalign.judges.base import Conversation, Judge, check_batch
from physalign.judges.official import refuse_official

PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
PROCESSOR_FIELDS = ("do_resize", "size", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                    "do_normalize", "image_mean", "image_std")
# LLaVA-NeXT-Video's conversation format (its model card's examples: "USER: <video>\n... ASSISTANT:").
ANSWER_TEMPLATE = "USER: {video}\n{question} Answer yes or no. ASSISTANT:"
RATING_TEMPLATE = "USER: {video}\n{question} Rate it from 1 (not at all) to 5 (fully). ASSISTANT:"
LLAVA_CONVERSATION = Conversation(ANSWER_TEMPLATE, RATING_TEMPLATE)
ANSWER_WORDS = ("Yes", "No")
RATING_WORDS = ("1", "2", "3", "4", "5")


def read_processor_settings(path: Path) -> dict:
    """The video processor's settings (:data:`PROCESSOR_FIELDS`) from the first of :data:`PROCESSOR_FILES`."""
    for name in PROCESSOR_FILES:
        if (path / name).is_file():
            settings = json.loads((path / name).read_text())
            missing = [f for f in PROCESSOR_FIELDS if f not in settings]
            if missing:
                raise ValueError(f"{path / name}: missing video processor fields {missing}")
            return {f: settings[f] for f in PROCESSOR_FIELDS}
    raise FileNotFoundError(f"{path}: no video processor settings (expected one of {list(PROCESSOR_FILES)})")


def word_token(tokenizer, word: str) -> int:
    """The id of ``word`` as the first token of an answer: its space-prefixed form (SentencePiece ``▁``,
    byte-level BPE ``Ġ``) if the vocabulary has it, else the bare word."""
    vocab = tokenizer.get_vocab()
    for token in (f"\u2581{word}", f"\u0120{word}", word):
        if token in vocab:
            return vocab[token]
    raise ValueError(f"the tokenizer has no single token for the answer {word!r} (tried ▁{word}, Ġ{word}, {word})")


class VLMJudge(Judge):
    """LLaVA-NeXT-Video as a judge. ``frames``: resample every video to this many frames first (None: as given);
    ``conversation``: the templates questions are asked in."""

    def __init__(self, model: LlavaNextVideoForConditionalGeneration, tokenizer, processor: dict,
                 frames: int | None = None, conversation: Conversation = LLAVA_CONVERSATION):
        self.model, self.tokenizer, self.processor, self.frames = model, tokenizer, processor, frames
        self.conversation = conversation
        self.video_token = tokenizer.convert_ids_to_tokens(model.config.video_token_index)
        self.answer_ids = [word_token(tokenizer, w) for w in ANSWER_WORDS]
        self.rating_ids = [word_token(tokenizer, w) for w in RATING_WORDS]

    @classmethod
    def from_pretrained(cls, path: str | Path, frames: int | None = None, dtype: torch.dtype = torch.float32,
                        device: str | torch.device = "cpu") -> "VLMJudge":
        """Model (safetensors), tokenizer and video processor settings from the local folder ``path``;
        frozen and in eval mode."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model folder (no config.json)")
        refuse_official(json.loads((path / "config.json").read_text()).get("model_type"), str(path / "config.json"))
        model = LlavaNextVideoForConditionalGeneration.from_pretrained(path, use_safetensors=True, local_files_only=True,
                                                                       dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(model.to(device).eval().requires_grad_(False), tokenizer, read_processor_settings(path), frames)

    # -- pixels ------------------------------------------------------------------------------------
    def pixel_values(self, videos: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> ``pixel_values_videos`` (B, T', 3, h, w), as the video processor
        would make them from the uint8 frames, but differentiable."""
        p = self.processor
        x = (videos.float() + 1) / 2  # (B, 3, T, H, W) in [0, 1]: the processor's rescale of uint8 / 255
        if self.frames is not None:
            x = x[:, :, torch.linspace(0, x.shape[2] - 1, self.frames).round().long()]
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B*T, 3, H, W)
        if p["do_resize"]:
            size = get_resize_output_image_size(np.empty((h, w, 3)), p["size"]["shortest_edge"], default_to_square=False,
                                                input_data_format="channels_last")
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        if p["do_center_crop"]:
            x = _center_crop(x, p["crop_size"]["height"], p["crop_size"]["width"])
        if not p["do_rescale"]:  # the processor would see 0..255 values
            x = x * 255
        elif p["rescale_factor"] != 1 / 255:
            x = x * 255 * p["rescale_factor"]
        if p["do_normalize"]:
            mean, std = (torch.tensor(p[k], dtype=x.dtype, device=x.device)[:, None, None] for k in ("image_mean", "image_std"))
            x = (x - mean) / std
        return x.reshape(b, t, *x.shape[1:]).to(self.model.dtype)  # (B, T', 3, h, w)

    def video_tokens(self, pixel_values: torch.Tensor) -> int:
        """Placeholder tokens of one video: frames x patches per frame / 4 (``LlavaNextVideoProcessor``'s rule
        for its 2 x 2 average pooling)."""
        _, t, _, h, w = pixel_values.shape
        patch = self.model.config.vision_config.patch_size
        return (h // patch) * (w // patch) // 4 * t

    # -- text and scoring --------------------------------------------------------------------------
    def prompt_ids(self, questions: Sequence[str], template: str, video_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded token ids (B, L) and attention mask (B, L) of the templated questions."""
        texts = [template.format(video=self.video_token * video_tokens, question=q) for q in questions]
        rows = [self.tokenizer(t, add_special_tokens=True).input_ids for t in texts]
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids, mask

    def next_token_logits(self, videos: torch.Tensor, questions: Sequence[str], template: str) -> torch.Tensor:
        """(B, V) logits of the token after the prompt (the answer position)."""
        check_batch(videos, questions)
        device = self.model.device
        pixels = self.pixel_values(videos.to(device))
        ids, mask = self.prompt_ids(questions, template, self.video_tokens(pixels))
        positions = (mask.cumsum(1) - 1).clamp_min(0)  # left padding: real tokens count from 0
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                         pixel_values_videos=pixels, logits_to_keep=1)
        return out.logits[:, -1]  # (B, V)

    def answer_logits(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        return self.next_token_logits(videos, questions, self.conversation.answer)[:, self.answer_ids]  # (B, 2)

    def rating_logits(self, videos: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        return self.next_token_logits(videos, questions, self.conversation.rating)[:, self.rating_ids]  # (B, 5)

    def rating_replies(self, videos: torch.Tensor, questions: Sequence[str], max_new_tokens: int = 256) -> list[str]:
        """Greedy replies to the rating questions (in ``conversation.rating``), special tokens dropped: what
        VideoPhy-2's ``inference.py`` decodes (``do_sample=False``, at most 256 new tokens)."""
        check_batch(videos, questions)
        device = self.model.device
        pixels = self.pixel_values(videos.to(device))
        ids, mask = self.prompt_ids(questions, self.conversation.rating, self.video_tokens(pixels))
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      pixel_values_videos=pixels, do_sample=False, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)

    def with_conversation(self, conversation: Conversation) -> "VLMJudge":
        """The same model asking in ``conversation`` (a shallow copy: the weights are shared)."""
        judge = copy.copy(self)
        judge.conversation = conversation
        return judge


def _center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre crop of (N, C, H, W), as torchvision's (top = round((H - height) / 2)); pads with 0 if smaller."""
    _, _, h, w = x.shape
    if h < height or w < width:
        dh, dw = max(height - h, 0), max(width - w, 0)
        x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        h, w = x.shape[-2:]
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return x[..., top : top + height, left : left + width]

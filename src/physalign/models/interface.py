"""The model interface every method trains through, whatever the backbone.

A method sees a :class:`VideoModel`: it encodes videos to latents and prompts to embeddings, predicts a
velocity from a noisy latent, and can tap the backbone's hidden states at chosen blocks. Nothing in a method
asks which model this is; the world's tiny Wan model and (later) Wan 2.1 / CogVideoX implement the same
methods.

Conventions (rectified flow, as in docs/methods.md): ``x_t = (1 - t) x0 + t eps``, ``t`` in [0, 1] with
``t = 1`` pure noise; the model predicts the velocity ``v ≈ eps - x0``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn


@dataclass
class TextEmbedding:
    hidden: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) bool, True on real tokens

    def __getitem__(self, index) -> "TextEmbedding":
        return TextEmbedding(self.hidden[index], self.mask[index])

    @staticmethod
    def cat(parts: Sequence["TextEmbedding"]) -> "TextEmbedding":
        return TextEmbedding(torch.cat([p.hidden for p in parts]), torch.cat([p.mask for p in parts]))


class VideoModel(nn.Module, abc.ABC):
    """A text-to-video flow model: autoencoder + text encoder + denoising backbone."""

    @abc.abstractmethod
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> scaled latents (B, C, t, h, w)."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, t, h, w) -> video (B, 3, T, H, W) in [-1, 1]."""

    @abc.abstractmethod
    def encode_text(self, prompts: Sequence[str]) -> TextEmbedding:
        """Prompts -> TextEmbedding; the empty prompt "" is the unconditional embedding."""

    @abc.abstractmethod
    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, text: TextEmbedding, taps: Sequence[int] = ()
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Velocity (B, C, t, h, w) at time ``t`` (B,) in [0, 1], and the hidden states of blocks ``taps``
        as {block: (B, F, H, W, D)} on the backbone's token grid."""

    @abc.abstractmethod
    def latent_shape(self, video_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """(3, T, H, W) -> (C, t, h, w), from the autoencoder's strides."""

    @abc.abstractmethod
    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, t, h, w) -> (F, H, W) tokens, from the backbone's patch size."""

    @abc.abstractmethod
    def save_pretrained(self, path: str | Path) -> None:
        """Write every part (safetensors) and the model config to ``path``."""

    @property
    def backbone_blocks(self) -> nn.ModuleList:
        """The transformer blocks feature taps hook into."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its blocks")


def capture_blocks(blocks: nn.ModuleList, indices: Sequence[int]):
    """Register forward hooks that store each tapped block's output tokens (B, N, D).

    Returns (store, handles): ``store`` fills during the forward pass; remove the handles afterwards.
    """
    for i in indices:
        if not -len(blocks) <= i < len(blocks):
            raise IndexError(f"tap block {i} out of range: the backbone has {len(blocks)} blocks")
    store: dict[int, torch.Tensor] = {}
    handles = []
    for i in indices:
        def hook(module, args, output, i=i):
            store[i] = output[0] if isinstance(output, tuple) else output
        handles.append(blocks[i].register_forward_hook(hook))
    return store, handles

"""The model interface every method trains through, whatever the backbone.

A method sees a :class:`VideoModel`: it encodes videos to latents and prompts to embeddings, predicts a
velocity from a noisy latent, and can tap the backbone's hidden states at chosen blocks. Nothing in a method
asks which model this is; the world's tiny Wan model and (later) Wan 2.1 / CogVideoX implement the same
methods, and :func:`load_model` picks the class from the folder's ``physalign_model.json``.

Conventions (rectified flow, as in docs/methods.md): ``x_t = (1 - t) x0 + t eps``, ``t`` in [0, 1] with
``t = 1`` pure noise; the model predicts the velocity ``v ≈ eps - x0``.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from physalign.assets import resolve
from physalign.models.times import FlowTimes

CONFIG_FILE = "physalign_model.json"  # in every model folder: {"class": <name in MODELS>, ...sizes}

# Model classes by the name their folders record; a new backbone is one line here (imported lazily, so
# loading the world model never imports a large model's code).
MODELS = {
    "WorldVideoModel": "physalign.models.world:WorldVideoModel",
    "WanVideoModel": "physalign.models.wan:WanVideoModel",
    "CogVideoXVideoModel": "physalign.models.cogvideox:CogVideoXVideoModel",
}
# A diffusers pipeline folder without physalign_model.json (a user's download) loads by its model_index.json.
PIPELINES = {"WanPipeline": "WanVideoModel", "CogVideoXPipeline": "CogVideoXVideoModel"}


@dataclass
class TextEmbedding:
    hidden: torch.Tensor  # (B, L, D)
    mask: torch.Tensor  # (B, L) bool, True on real tokens

    def __len__(self) -> int:
        return len(self.hidden)

    def __getitem__(self, index) -> "TextEmbedding":
        return TextEmbedding(self.hidden[index], self.mask[index])

    @staticmethod
    def cat(parts: Sequence["TextEmbedding"]) -> "TextEmbedding":
        return TextEmbedding(torch.cat([p.hidden for p in parts]), torch.cat([p.mask for p in parts]))


def to_model_range(videos: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float (N, 3, T, H, W) in [-1, 1], what :meth:`VideoModel.encode` takes."""
    return torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def to_uint8(videos: torch.Tensor) -> np.ndarray:
    """float (N, 3, T, H, W) in [-1, 1], what :meth:`VideoModel.decode` returns -> uint8 (N, T, H, W, 3)."""
    return videos.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 4, 1).cpu().numpy()


class VideoModel(nn.Module, abc.ABC):
    """A text-to-video flow model: autoencoder + text encoder + denoising backbone.

    Subclasses name their separately trainable sub-modules in ``parts`` (e.g. "transformer", "vae",
    "text_encoder"); :meth:`set_trainable` freezes the rest.
    """

    parts: tuple[str, ...] = ()
    # training-time distribution and sampling grid (physalign.models.times): unshifted, logit-normal draws
    times = FlowTimes()

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
        """Velocity (B, C, t, h, w) at time ``t`` (B,) in [0, 1], and the outputs of backbone blocks
        ``taps`` as {block: (B, F, H, W, D)} on the token grid ``token_grid(x_t.shape[1:])``."""

    @abc.abstractmethod
    def latent_shape(self, video_shape: Sequence[int]) -> tuple[int, int, int, int]:
        """(3, T, H, W) -> (C, t, h, w), from the autoencoder's strides."""

    @abc.abstractmethod
    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, t, h, w) -> (F, H, W) tokens, from the backbone's patch size."""

    @abc.abstractmethod
    def latent_fingerprint(self) -> str:
        """A hash of everything :meth:`encode` depends on (weights, scaling); keys caches of latents."""

    @property
    @abc.abstractmethod
    def video_shape(self) -> tuple[int, int, int, int]:
        """(3, T, H, W) of the videos the model generates by default."""

    @property
    @abc.abstractmethod
    def backbone(self) -> nn.Module:
        """The denoising transformer (a diffusers model: LoRA adapters attach here, see models.lora)."""

    @property
    @abc.abstractmethod
    def backbone_blocks(self) -> nn.ModuleList:
        """The transformer blocks that feature taps hook into."""

    def teacher_frames(self, features: torch.Tensor) -> torch.Tensor:
        """Tapped features (B, F, H, W, D) as an alignment projector should map them to a teacher's grid: by
        default unchanged (CogVideoX drops its first latent frame and doubles the rest, as VideoREPA)."""
        return features

    @abc.abstractmethod
    def save_pretrained(self, path: str | Path) -> None:
        """Write every part (each with its library's own ``save_pretrained``, safetensors) and
        ``physalign_model.json`` (with ``"class"``) to ``path``."""

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, path: str | Path) -> "VideoModel":
        """The model saved at ``path`` by :meth:`save_pretrained`."""

    @classmethod
    @abc.abstractmethod
    def from_config(cls, sizes: dict) -> "VideoModel":
        """A newly initialised model; ``sizes`` overrides the class's default configuration."""

    @property
    def lora_pipeline(self) -> str:
        """The diffusers pipeline whose LoRA files this model's adapters export to (``models.lora``)."""
        return {model: pipe for pipe, model in PIPELINES.items()}[type(self).__name__]

    def set_trainable(self, parts: Sequence[str]) -> None:
        """Train only the sub-modules ``parts`` (names from ``self.parts``, or a dotted path inside one, e.g.
        ``vae.decoder``); freeze everything else."""
        unknown = sorted(p for p in parts if p.split(".")[0] not in self.parts)
        if unknown:
            raise ValueError(f"trainable parts must be among {list(self.parts)} (or dotted paths inside them). Got {unknown}.")
        modules = {}
        for name in parts:
            try:
                modules[name] = self.get_submodule(name)
            except AttributeError:
                raise ValueError(f"trainable part {name!r}: {type(self).__name__} has no such sub-module") from None
        self.requires_grad_(False)
        for module in modules.values():
            module.requires_grad_(True)

    def train(self, mode: bool = True) -> "VideoModel":
        """``nn.Module.train``, except that a part with nothing to train stays in eval mode: a frozen text
        encoder or VAE encodes without dropout, as a frozen model should (a part with LoRA adapters counts as
        trained, so its dropout stays on as peft's training expects)."""
        super().train(mode)
        for name in self.parts if mode else ():
            part = self.get_submodule(name)
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()
        return self


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


def save_parts(model: "VideoModel", path: str | Path) -> Path:
    """Write ``model``'s transformer (with a LoRA adapter in ``transformer_lora/``), vae, text_encoder and
    tokenizer to ``path``, each in its library's own format (safetensors weights); returns the folder."""
    from physalign.models.lora import save_backbone

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_backbone(model.transformer, path / "transformer")
    model.vae.save_pretrained(path / "vae", safe_serialization=True)
    model.text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
    model.tokenizer.save_pretrained(path / "tokenizer")
    return path


def wan_token_grid(transformer, latent_shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, t, h, w) -> (F, H, W) tokens of a ``WanTransformer3DModel``: the latent divided by its patch size,
    within its rotary embedding's ``rope_max_seq_len``."""
    _, t, h, w = latent_shape
    patch = tuple(transformer.config.patch_size)
    if t % patch[0] or h % patch[1] or w % patch[2]:
        raise ValueError(f"latent (t, h, w) = {(t, h, w)} must be divisible by the patch size {patch}")
    grid = (t // patch[0], h // patch[1], w // patch[2])
    longest = transformer.config.rope_max_seq_len
    if max(grid) > longest:
        raise ValueError(f"token grid {grid} exceeds the rotary embedding's rope_max_seq_len={longest}")
    return grid


def from_fields(cls: type, values: dict, where: str):
    """The dataclass ``cls`` from ``values``, or ValueError naming (at ``where``) the keys it does not have."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {allowed}")
    return cls(**values)


def model_class(name: str) -> type[VideoModel]:
    """The class registered in :data:`MODELS` under ``name``."""
    if name not in MODELS:
        raise KeyError(f"unknown model class {name!r}; known: {sorted(MODELS)}")
    module, attr = MODELS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def load_model(path: str | Path, options: dict | None = None) -> VideoModel:
    """Load the model folder ``path`` with the class its ``physalign_model.json`` names (or, for a diffusers
    pipeline folder without one, the class of the pipeline its ``model_index.json`` names). ``options`` (a
    config's ``model.sizes``) override the folder's options, for classes whose ``from_pretrained`` takes them."""
    path = resolve(path)
    config, index = path / CONFIG_FILE, path / "model_index.json"
    if not config.is_file() and index.is_file():
        pipeline = json.loads(index.read_text()).get("_class_name")
        if pipeline not in PIPELINES:
            raise ValueError(f"{index}: field '_class_name' must be one of {sorted(PIPELINES)}. Got {pipeline!r}.")
        name = PIPELINES[pipeline]
    elif not config.is_file():
        raise FileNotFoundError(f"{config}: not a physalign model folder (no {CONFIG_FILE})")
    else:
        name = json.loads(config.read_text()).get("class")
        if name not in MODELS:
            raise ValueError(f"{config}: field 'class' must be one of {sorted(MODELS)}. Got {name!r}.")
    cls = model_class(name)
    if not options:
        return cls.from_pretrained(path)
    takes = inspect.signature(cls.from_pretrained).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in takes):
        raise ValueError(f"model sizes {sorted(options)}: {name} takes no options when loaded from a folder")
    return cls.from_pretrained(path, **options)

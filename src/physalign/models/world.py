"""The physics world's tiny text-to-video model: real diffusers/transformers classes at toy sizes.

- backbone: diffusers ``WanTransformer3DModel`` (Wan 2.1's class), ~1.7M parameters at the defaults;
- text encoder: transformers ``T5EncoderModel`` (Wan's encoder family) with a word-level tokenizer;
- autoencoder: diffusers ``AutoencoderKL`` applied per frame (temporal stride 1, spatial stride 4).

Why a per-frame image autoencoder rather than a tiny ``AutoencoderKLWan``, measured on this project's
2-core CPU (the planning notes in the workplace's shared/docs/world-notes.md, outside this repository, and a
step-time comparison, 32 x 32 frames):

- a latent-space DiT after a per-frame AE drew coherent objects after ~15 min of training; a pixel-space
  DiT had not after 30;
- a train step of the per-frame ``AutoencoderKL`` (0.95M parameters) on 64 frames took 0.91 s; one of a
  tiny ``AutoencoderKLWan`` (base_dim 16, dims x1/x2/x2, 0.61M parameters, no temporal downsampling) on
  4 clips of 17 frames took 1.05 s (one thread, machine shared): no faster per frame despite fewer weights;
- ``AutoencoderKLWan`` reads clips of 1 + 4k frames (it returned 13 of our 16), and with its temporal
  downsampling on it would squeeze 16-frame bounces into 4 latent frames.

Folder layout (``save_pretrained``): ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` each in
its library's own format (safetensors weights), plus ``physalign_model.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers import AutoencoderKL, WanTransformer3DModel
from transformers import AutoTokenizer, T5Config, T5EncoderModel

from physalign.assets import resolve
from physalign.models.interface import (CONFIG_FILE, TextEmbedding, VideoModel, capture_blocks, from_fields, save_parts,
                                       wan_token_grid)
from physalign.models.lora import load_adapter, lora_folder
from physalign.models.parts import load_part
from physalign.models.tokenizer import build_world_tokenizer


@dataclass
class WorldModelConfig:
    """Sizes of the three parts. The defaults are the shipped base model's."""

    layers: int = 6
    heads: int = 4
    head_dim: int = 32  # even: Wan's 3D RoPE splits it into t / h / w parts of even sizes
    ffn_dim: int = 512
    text_dim: int = 64
    text_layers: int = 2
    max_text_tokens: int = 32
    vae_channels: tuple[int, ...] = (32, 64, 64)  # one VAE level each; every level but the last halves H, W
    latent_channels: int = 4
    patch_size: tuple[int, int, int] = (1, 2, 2)
    scaling_factor: float = 1.0  # latents are multiplied by this after encoding (1 / std of the data's latents)
    frames: int = 16  # the video shape the model generates
    resolution: int = 32

    def __post_init__(self) -> None:
        self.vae_channels, self.patch_size = tuple(self.vae_channels), tuple(self.patch_size)
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (Wan's rotary embedding splits it in pairs). Got {self.head_dim}.")
        if len(self.patch_size) != 3:
            raise ValueError(f"patch_size must be (t, h, w). Got {self.patch_size}.")

    @classmethod
    def from_dict(cls, values: dict, where: str = "model sizes") -> "WorldModelConfig":
        return from_fields(cls, values, where)


def build_transformer(cfg: WorldModelConfig) -> WanTransformer3DModel:
    return WanTransformer3DModel(
        patch_size=cfg.patch_size,
        num_attention_heads=cfg.heads,
        attention_head_dim=cfg.head_dim,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        text_dim=cfg.text_dim,
        freq_dim=64,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.layers,
        rope_max_seq_len=64,
    )


def build_vae(cfg: WorldModelConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        latent_channels=cfg.latent_channels,
        layers_per_block=1,
        norm_num_groups=16,
    )


def build_text_encoder(cfg: WorldModelConfig, vocab_size: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=vocab_size,
        d_model=cfg.text_dim,
        d_kv=cfg.text_dim // 4,
        d_ff=cfg.text_dim * 2,
        num_layers=cfg.text_layers,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


class WorldVideoModel(VideoModel):
    parts = ("transformer", "vae", "text_encoder")
    lora_pipeline = "WanPipeline"  # the backbone is Wan's transformer: its adapters load into any WanPipeline

    def __init__(self, cfg: WorldModelConfig, transformer=None, vae=None, text_encoder=None, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer or build_world_tokenizer(cfg.max_text_tokens)
        self.transformer = transformer or build_transformer(cfg)
        self.vae = vae or build_vae(cfg)
        self.text_encoder = text_encoder or build_text_encoder(cfg, len(self.tokenizer))

    @classmethod
    def from_config(cls, sizes: dict) -> "WorldVideoModel":
        return cls(WorldModelConfig.from_dict(sizes))

    # -- autoencoder (per frame) -------------------------------------------------------------------
    @property
    def spatial_stride(self) -> int:
        """Product of the strides of the VAE encoder's downsampling convolutions."""
        convs = [d.conv for block in self.vae.encoder.down_blocks for d in (block.downsamplers or [])]
        return math.prod(conv.stride[0] for conv in convs)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, 3, h, w)  # (B*T, 3, H, W)
        z = self.vae.encode(frames).latent_dist.mean  # (B*T, C, h, w): the mean, so encoding is deterministic
        return z.reshape(b, t, *z.shape[1:]).transpose(1, 2) * self.cfg.scaling_factor  # (B, C, T, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = latents.shape
        z = latents.transpose(1, 2).reshape(b * t, c, h, w) / self.cfg.scaling_factor  # (B*T, C, h, w)
        frames = self.vae.decode(z).sample  # (B*T, 3, H, W)
        return frames.reshape(b, t, *frames.shape[1:]).transpose(1, 2)  # (B, 3, T, H, W)

    def latent_shape(self, video_shape: Sequence[int]) -> tuple[int, int, int, int]:
        _, t, h, w = video_shape
        s = self.spatial_stride
        if h % s or w % s:
            raise ValueError(f"video height and width must be multiples of the VAE's stride {s}. Got {h}x{w}.")
        return (self.vae.config.latent_channels, t, h // s, w // s)

    def latent_fingerprint(self) -> str:
        h = hashlib.sha256(repr(self.cfg.scaling_factor).encode())
        for name, tensor in sorted(self.vae.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        return (3, self.cfg.frames, self.cfg.resolution, self.cfg.resolution)

    # -- text --------------------------------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str]) -> TextEmbedding:
        limit = self.cfg.max_text_tokens
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=limit, return_tensors="pt")
        if tokens.input_ids.shape[1] > limit:
            longest = max(prompts, key=lambda p: len(self.tokenizer(p).input_ids))
            raise ValueError(f"prompt longer than max_text_tokens={limit} tokens: {longest!r}")
        device = self.text_encoder.device
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device).bool()
        hidden = self.text_encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, D)
        # Wan's cross-attention takes no mask and attends to all L positions; like Wan 2.1 we zero the padding.
        return TextEmbedding(hidden * mask[..., None], mask)

    # -- backbone ----------------------------------------------------------------------------------
    @property
    def backbone(self) -> WanTransformer3DModel:
        return self.transformer

    @property
    def backbone_blocks(self) -> torch.nn.ModuleList:
        return self.transformer.blocks

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        return wan_token_grid(self.transformer, latent_shape)

    def forward(self, x_t, t, text: TextEmbedding, taps: Sequence[int] = ()):
        if t.shape != x_t.shape[:1]:
            raise ValueError(f"t must have shape [batch] = {list(x_t.shape[:1])}. Got {list(t.shape)}.")
        grid = self.token_grid(x_t.shape[1:])
        store, handles = capture_blocks(self.transformer.blocks, taps)
        try:  # Wan's timestep convention: t in [0, 1000], 1000 = noise
            v = self.transformer(x_t, timestep=t * 1000.0, encoder_hidden_states=text.hidden, return_dict=False)[0]
        finally:
            for handle in handles:
                handle.remove()
        features = {i: h.reshape(h.shape[0], *grid, h.shape[-1]) for i, h in store.items()}  # (B, F, H, W, D)
        return v, features

    # -- persistence -------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        path = save_parts(self, path)
        (path / CONFIG_FILE).write_text(json.dumps({"class": type(self).__name__, **asdict(self.cfg)}, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "WorldVideoModel":
        path = resolve(path)
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: not a physalign model folder (no {CONFIG_FILE})")
        fields = json.loads(config_path.read_text())
        fields.pop("class", None)
        transformer = load_part(WanTransformer3DModel, path / "transformer")
        if lora_folder(path / "transformer").is_dir():
            load_adapter(transformer, lora_folder(path / "transformer"))
        return cls(
            WorldModelConfig.from_dict(fields, str(config_path)),
            transformer=transformer,
            vae=load_part(AutoencoderKL, path / "vae"),
            text_encoder=load_part(T5EncoderModel, path / "text_encoder"),
            tokenizer=AutoTokenizer.from_pretrained(path / "tokenizer"),
        )

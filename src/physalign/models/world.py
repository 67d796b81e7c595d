"""The physics world's tiny text-to-video model: real diffusers/transformers classes at toy sizes.

- backbone: diffusers ``WanTransformer3DModel`` (Wan 2.1's class), ~1.7M parameters;
- text encoder: transformers ``T5EncoderModel`` (Wan's encoder family) with a word-level tokenizer;
- autoencoder: diffusers ``AutoencoderKL`` applied per frame (temporal stride 1, spatial stride 4).

Why a per-frame image autoencoder rather than a tiny ``AutoencoderKLWan``: on this project's 2-core CPU,
a latent-space DiT after a per-frame AE produced coherent objects in ~15 min of training, while the pixel-
space DiT had not after 30 (``docs/world-notes.md``); the per-frame AE is the measured path. Wan's video VAE
also compresses time by 4, which would blur 16-frame bounces into 4 latent frames.

Folder layout (``save_pretrained``): ``transformer/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` each in
its library's own format (safetensors weights), plus ``physalign_model.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers import AutoencoderKL, WanTransformer3DModel
from transformers import AutoTokenizer, T5Config, T5EncoderModel

from physalign.models.interface import TextEmbedding, VideoModel, capture_blocks
from physalign.models.tokenizer import build_world_tokenizer

CONFIG_FILE = "physalign_model.json"


@dataclass
class WorldModelConfig:
    """Sizes of the three parts. The defaults are the shipped base model's."""

    layers: int = 6
    heads: int = 4
    head_dim: int = 32
    ffn_dim: int = 512
    text_dim: int = 64
    text_layers: int = 2
    max_text_tokens: int = 32
    vae_channels: tuple[int, ...] = (32, 64, 64)
    latent_channels: int = 4
    patch_size: tuple[int, int, int] = (1, 2, 2)
    scaling_factor: float = 1.0  # latents are multiplied by this after encoding (1 / std of the data's latents)
    frames: int = 16  # the video shape the model generates
    resolution: int = 32

    def __post_init__(self) -> None:
        self.vae_channels, self.patch_size = tuple(self.vae_channels), tuple(self.patch_size)


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
    def __init__(self, cfg: WorldModelConfig, transformer=None, vae=None, text_encoder=None, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer or build_world_tokenizer(cfg.max_text_tokens)
        self.transformer = transformer or build_transformer(cfg)
        self.vae = vae or build_vae(cfg)
        self.text_encoder = text_encoder or build_text_encoder(cfg, len(self.tokenizer))

    # -- autoencoder -----------------------------------------------------------------------------
    @property
    def spatial_stride(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = video.shape
        frames = video.transpose(1, 2).reshape(b * t, 3, h, w)  # (B*T, 3, H, W)
        z = self.vae.encode(frames).latent_dist.mean  # (B*T, C, h, w)
        return z.reshape(b, t, *z.shape[1:]).transpose(1, 2) * self.cfg.scaling_factor  # (B, C, T, h, w)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = latents.shape
        z = latents.transpose(1, 2).reshape(b * t, c, h, w) / self.cfg.scaling_factor
        frames = self.vae.decode(z).sample  # (B*T, 3, H, W)
        return frames.reshape(b, t, *frames.shape[1:]).transpose(1, 2)  # (B, 3, T, H, W)

    def latent_shape(self, video_shape: Sequence[int]) -> tuple[int, int, int, int]:
        _, t, h, w = video_shape
        s = self.spatial_stride
        if h % s or w % s:
            raise ValueError(f"video height and width must be multiples of {s}. Got {h}x{w}.")
        return (self.cfg.latent_channels, t, h // s, w // s)

    # -- text --------------------------------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str]) -> TextEmbedding:
        tokens = self.tokenizer(
            list(prompts), padding="max_length", truncation=True, max_length=self.cfg.max_text_tokens, return_tensors="pt"
        )
        device = self.text_encoder.device
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device).bool()
        hidden = self.text_encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, D)
        return TextEmbedding(hidden * mask[..., None], mask)  # Wan attends to all L: zero the padding

    # -- backbone ----------------------------------------------------------------------------------
    @property
    def backbone_blocks(self) -> torch.nn.ModuleList:
        return self.transformer.blocks

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        _, t, h, w = latent_shape
        pt, ph, pw = self.transformer.config.patch_size
        return (t // pt, h // ph, w // pw)

    def forward(self, x_t, t, text: TextEmbedding, taps: Sequence[int] = ()):
        store, handles = capture_blocks(self.transformer.blocks, taps)
        try:
            v = self.transformer(x_t, timestep=t * 1000.0, encoder_hidden_states=text.hidden, return_dict=False)[0]
        finally:
            for handle in handles:
                handle.remove()
        grid = self.token_grid(x_t.shape[1:])
        features = {i: h.reshape(h.shape[0], *grid, h.shape[-1]) for i, h in store.items()}  # (B, F, H, W, D)
        return v, features

    # -- persistence -------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(path / "transformer")
        self.vae.save_pretrained(path / "vae")
        self.text_encoder.save_pretrained(path / "text_encoder")
        self.tokenizer.save_pretrained(path / "tokenizer")
        (path / CONFIG_FILE).write_text(json.dumps({"class": "WorldVideoModel", **asdict(self.cfg)}, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path) -> "WorldVideoModel":
        path = Path(path)
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path}: not a physalign model folder (no {CONFIG_FILE})")
        fields = json.loads(config_path.read_text())
        fields.pop("class", None)
        return cls(
            WorldModelConfig(**fields),
            transformer=WanTransformer3DModel.from_pretrained(path / "transformer", use_safetensors=True),
            vae=AutoencoderKL.from_pretrained(path / "vae", use_safetensors=True),
            text_encoder=T5EncoderModel.from_pretrained(path / "text_encoder", use_safetensors=True),
            tokenizer=AutoTokenizer.from_pretrained(path / "tokenizer"),
        )

    def set_trainable(self, parts: Sequence[str]) -> None:
        """Freeze everything but ``parts`` (any of "transformer", "vae", "text_encoder")."""
        known = {"transformer", "vae", "text_encoder"}
        if set(parts) - known:
            raise ValueError(f"trainable parts must be among {sorted(known)}. Got {sorted(set(parts) - known)}.")
        for name in known:
            getattr(self, name).requires_grad_(name in parts)

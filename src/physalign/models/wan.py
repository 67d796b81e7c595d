"""Wan 2.1 text-to-video behind :class:`VideoModel`, read from a local diffusers folder
(``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` or ``-14B-Diffusers`` layout; see :mod:`physalign.models.pipeline_folder`).

Parts: ``WanTransformer3DModel``, ``AutoencoderKLWan``, ``UMT5EncoderModel`` with its tokenizer. Conventions,
as ``WanPipeline`` has them:

- Wan 2.1 is a rectified-flow model in physalign's own convention: ``x_t = (1 - t) x0 + t eps``, the transformer
  takes ``timestep = 1000 t`` and predicts ``eps - x0``, so :meth:`forward` is the transformer itself;
- times (:mod:`physalign.models.times`): trained and sampled with the flow shift ``s u / (1 + (s - 1) u)``,
  ``s`` = the scheduler config's ``flow_shift`` (3 at 480p, 5 at 720p) unless the option ``flow_shift`` is set;
  training draws ``u`` uniformly;
- latents: ``z = (mu - latents_mean) / latents_std`` per channel, with the VAE config's constants; ``mu`` is the
  posterior mean (deterministic, so latents can be cached);
- the VAE is causal in time: ``T = 1 + 4k`` frames give ``1 + k`` latent frames (the first frame alone),
  space /8;
- text: UMT5 over at most 512 tokens with the attention mask, the padding positions zeroed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from physalign.models.interface import TextEmbedding, capture_blocks, wan_token_grid
from physalign.models.pipeline_folder import FolderOptions, PipelineVideoModel
from physalign.models.times import FlowTimes


@dataclass
class WanOptions(FolderOptions):
    frames: int = 81  # Wan 2.1's 480p default (81 x 480 x 832, 16 fps)
    height: int = 480
    width: int = 832
    max_text_tokens: int = 512
    flow_shift: float = 0.0  # the time shift of training and sampling; 0 = the scheduler config's


class WanVideoModel(PipelineVideoModel):
    pipeline = "WanPipeline"
    transformer_class, vae_class = WanTransformer3DModel, AutoencoderKLWan
    text_encoder_class, config_class = UMT5EncoderModel, UMT5Config
    options_class = WanOptions

    @property
    def times(self) -> FlowTimes:
        return FlowTimes(shift=self.flow_shift, draw="uniform")

    @property
    def flow_shift(self) -> float:
        """The option's shift, else the scheduler config's (UniPC's ``flow_shift``, FlowMatchEuler's ``shift``)."""
        if self.options.flow_shift:
            return self.options.flow_shift
        shift = self.scheduler.config.get("flow_shift") or self.scheduler.config.get("shift")
        if not shift:
            raise ValueError(f"scheduler config ({type(self.scheduler).__name__}) has no flow_shift or shift: "
                             "set the model option flow_shift")
        return float(shift)

    @classmethod
    def default_scheduler(cls, **kwargs):
        return UniPCMultistepScheduler(**{"prediction_type": "flow_prediction", "use_flow_sigmas": True,
                                          "flow_shift": 3.0, **kwargs})

    # -- autoencoder ---------------------------------------------------------------------------------
    @property
    def strides(self) -> tuple[int, int]:
        """(temporal, spatial) compression of the VAE, from its architecture: one halving of H, W per level
        after the first, one halving of T per ``temperal_downsample`` flag (diffusers' spelling)."""
        c = self.vae.config
        temporal = 2 ** sum(bool(d) for d in c.temperal_downsample)
        return temporal, 2 ** (len(c.dim_mult) - 1) * (c.patch_size or 1)

    def _normaliser(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.vae.config
        shape = (1, c.z_dim, 1, 1, 1)
        mean = torch.tensor(c.latents_mean, dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(c.latents_std, dtype=torch.float32, device=like.device).view(shape)
        return mean, std

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.latent_shape(video.shape[1:])  # checks T = 1 + 4k and H, W multiples of the stride
        mu = self.vae.encode(video.to(self.vae.dtype)).latent_dist.mean.float()  # (B, z, 1 + (T-1)/4, H/8, W/8)
        mean, std = self._normaliser(mu)
        return (mu - mean) / std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        mean, std = self._normaliser(latents)
        z = (latents.float() * std + mean).to(self.vae.dtype)
        return self.vae.decode(z).sample.float()  # (B, 3, T, H, W)

    def latent_shape(self, video_shape: Sequence[int]) -> tuple[int, int, int, int]:
        _, t, h, w = video_shape
        st, s = self.strides
        if (t - 1) % st or h % s or w % s:
            raise ValueError(f"Wan's VAE reads T = 1 + {st}k frames of H, W multiples of {s}. Got {t}x{h}x{w}.")
        return (self.vae.config.z_dim, 1 + (t - 1) // st, h // s, w // s)

    # -- text ----------------------------------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str]) -> TextEmbedding:
        limit = self.options.max_text_tokens
        ids, mask = self.tokens(prompts, limit)
        if mask[:, -1].any():
            warnings.warn(f"a prompt filled all max_text_tokens={limit} tokens and may have been truncated", stacklevel=2)
        hidden = self.text_encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()  # (B, L, D)
        return TextEmbedding(hidden * mask[..., None], mask)  # Wan attends to all L positions: padding zeroed

    # -- backbone ------------------------------------------------------------------------------------
    @property
    def backbone_blocks(self) -> torch.nn.ModuleList:
        return self.transformer.blocks

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        return wan_token_grid(self.transformer, latent_shape)

    def forward(self, x_t, t, text: TextEmbedding, taps: Sequence[int] = ()):
        """v = transformer(x_t, 1000 t, text) (B, C, t, h, w) in float32, and the taps' (B, F, H, W, D)."""
        self.check_time(x_t, t)
        grid = self.token_grid(x_t.shape[1:])
        dtype = self.compute_dtype()
        store, handles = capture_blocks(self.transformer.blocks, taps)
        try:
            with self.compute():
                v = self.transformer(x_t.to(dtype), timestep=t * 1000.0, encoder_hidden_states=text.hidden.to(dtype),
                                     return_dict=False)[0]
        finally:
            for handle in handles:
                handle.remove()
        features = {i: h.float().reshape(h.shape[0], *grid, h.shape[-1]) for i, h in store.items()}  # (B, F, H, W, D)
        return v.float(), features

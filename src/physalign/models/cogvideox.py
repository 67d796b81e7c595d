"""CogVideoX (2B / 5B, text-to-video) behind :class:`VideoModel`, read from a local diffusers folder
(``THUDM/CogVideoX-2b`` / ``-5b`` layout; see :mod:`physalign.models.pipeline_folder`).

Parts: ``CogVideoXTransformer3DModel``, ``AutoencoderKLCogVideoX``, ``T5EncoderModel`` with its tokenizer, and
the DDIM/DPM scheduler whose noise schedule the weights were trained on.

**From v-prediction to physalign's velocity [ours].** CogVideoX is a DDPM model: at an integer timestep k it
sees ``z = a x0 + b eps`` (``a = sqrt(abar_k)``, ``b = sqrt(1 - abar_k)``, ``abar`` from the scheduler, with its
SNR shift and zero terminal SNR) and predicts ``v = a eps - b x0``. physalign's methods use rectified flow,
``x_t = (1 - t) x0 + t eps`` with target ``u = eps - x0``. We do not retrain CogVideoX into a flow model; we
convert exactly. With ``n = sqrt((1 - t)^2 + t^2)``, the state ``x_t / n`` *is* a DDPM state of the same
signal-to-noise ratio (``a = (1 - t) / n``, ``b = t / n``), at the continuous timestep ``s(t)`` where the
scheduler's ``b / (a + b)`` equals t (linear interpolation between its integer timesteps). Then

    x0 = a z - b v,   eps = b z + a v   =>   u = eps - x0 = ((2t - 1) x_t + n v) / n^2.

So :meth:`forward` returns a velocity in physalign's convention from the first step, the Euler sampler runs on
the released weights, and training with L_FM = ||u_pred - u||^2 is the model's own v-loss weighted by
``1 / n^2`` (between 1 and 2). Times below the scheduler's least noise (t < t_0 ~ 0.05 for CogVideoX-2B)
run at timestep 0 with the exact state; the alternative, treating the output as a flow velocity and
fine-tuning it into one, would start from a model whose outputs mean something else.

**Token grid.** The VAE is causal in time: 49 frames -> 13 latent frames ``1 + 48/4``, the first latent frame
encoding the first video frame alone; space /8, patch 2 -> 13 x 30 x 45 tokens at 480 x 720. VideoREPA aligns
such a student with a teacher of 48 frames by dropping latent frame 0 and interpolating the rest x2 in time
(:func:`videorepa_frames`), which :meth:`CogVideoXVideoModel.teacher_frames` applies for the alignment methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid
from transformers import T5Config, T5EncoderModel

from physalign.models.interface import TextEmbedding, capture_blocks
from physalign.models.pipeline_folder import FolderOptions, PipelineVideoModel
from physalign.models.times import DDPMTimes, ddpm_flow_times


@dataclass
class CogVideoXOptions(FolderOptions):
    frames: int = 49  # CogVideoX's training shape (49 x 480 x 720, 8 fps)
    height: int = 480
    width: int = 720


# -- rectified flow <-> CogVideoX's DDPM ------------------------------------------------------------------


def ddpm_timestep(t: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Continuous DDPM timesteps s (B,) of the same SNR as flow times t (B,): k interpolated linearly in t
    between the scheduler's timesteps, clamped to [0, K - 1]."""
    times = ddpm_flow_times(alphas_cumprod).to(t.device)  # (K,)
    hi = torch.searchsorted(times, t.float().contiguous()).clamp(1, len(times) - 1)  # (B,)
    lo = hi - 1
    frac = (t.float() - times[lo]) / (times[hi] - times[lo]).clamp_min(1e-12)
    return (lo + frac).clamp(0, len(times) - 1)


def flow_scale(t: torch.Tensor) -> torch.Tensor:
    """n = sqrt((1 - t)^2 + t^2): x_t / n is the DDPM state of the same SNR."""
    return ((1 - t) ** 2 + t**2).sqrt()


def velocity_from_v(v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """u = ((2t - 1) x_t + n v) / n^2: physalign's velocity from a v-prediction at the matched DDPM state.
    v, x_t: (B, ...); t: (B,)."""
    tb = t.float().reshape(-1, *([1] * (x_t.ndim - 1)))
    n = flow_scale(tb)
    return ((2 * tb - 1) * x_t + n * v) / n**2


# -- the first latent frame (VideoREPA) ------------------------------------------------------------------


def videorepa_grid(grid: Sequence[int], factor: int = 2) -> tuple[int, int, int]:
    """Token grid (F, H, W) after :func:`videorepa_frames`: (factor (F - 1), H, W); 13x30x45 -> 24x30x45."""
    f, h, w = grid
    if f < 2:
        raise ValueError(f"dropping the first latent frame needs at least 2 frames. Got grid {tuple(grid)}.")
    return (factor * (f - 1), h, w)


def videorepa_frames(features: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """(B, F, H, W, D) -> (B, factor (F - 1), H, W, D): drop latent frame 0 (the first video frame alone) and
    interpolate the rest linearly in time, as VideoREPA maps CogVideoX's 13 latent frames to a 48-frame
    teacher's 24 token frames (docs/methods.md, TRD)."""
    if features.ndim != 5:
        raise ValueError(f"features must be (B, F, H, W, D). Got {tuple(features.shape)}.")
    _, f, h, w, _ = features.shape
    rest = features[:, 1:].permute(0, 4, 1, 2, 3)  # (B, D, F - 1, H, W)
    size = videorepa_grid((f, h, w), factor)
    return F.interpolate(rest, size=size, mode="trilinear", align_corners=False).permute(0, 2, 3, 4, 1)


class CogVideoXVideoModel(PipelineVideoModel):
    pipeline = "CogVideoXPipeline"
    transformer_class, vae_class = CogVideoXTransformer3DModel, AutoencoderKLCogVideoX
    text_encoder_class, config_class = T5EncoderModel, T5Config
    options_class = CogVideoXOptions

    def __init__(self, options, transformer, vae, text_encoder, tokenizer, scheduler):
        super().__init__(options, transformer, vae, text_encoder, tokenizer, scheduler)
        if transformer.config.patch_size_t is not None:
            raise ValueError("transformer config patch_size_t is set (CogVideoX 1.5): "
                             "only CogVideoX 1.0 (2B, 5B) is supported")
        if scheduler.config.prediction_type != "v_prediction":
            raise ValueError(f"scheduler config prediction_type must be 'v_prediction' (CogVideoX's). "
                             f"Got {scheduler.config.prediction_type!r}.")

    @property
    def times(self) -> DDPMTimes:
        """Trained on uniform integer timesteps; sampled on the scheduler's own inference timesteps."""
        return DDPMTimes(self.scheduler.alphas_cumprod, self._inference_timesteps)

    def _inference_timesteps(self, steps: int) -> torch.Tensor:
        self.scheduler.set_timesteps(steps)
        return self.scheduler.timesteps.clone()

    @classmethod
    def default_scheduler(cls, **kwargs):
        return CogVideoXDDIMScheduler(**{"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                                         "snr_shift_scale": 3.0, "timestep_spacing": "trailing",
                                         "clip_sample": False, **kwargs})

    # -- autoencoder ---------------------------------------------------------------------------------
    @property
    def strides(self) -> tuple[int, int]:
        """(temporal, spatial) compression of the VAE: its temporal ratio, and one halving per level after the first."""
        c = self.vae.config
        return int(c.temporal_compression_ratio), 2 ** (len(c.block_out_channels) - 1)

    def _scale(self) -> tuple[float, float]:
        return float(self.vae.config.scaling_factor), float(self.vae.config.shift_factor or 0.0)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        self.latent_shape(video.shape[1:])
        mu = self.vae.encode(video.to(self.vae.dtype)).latent_dist.mean.float()  # (B, C, 1 + (T-1)/4, H/8, W/8)
        scale, shift = self._scale()
        return (mu - shift) * scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        scale, shift = self._scale()
        return self.vae.decode((latents.float() / scale + shift).to(self.vae.dtype)).sample.float()

    def latent_shape(self, video_shape: Sequence[int]) -> tuple[int, int, int, int]:
        _, t, h, w = video_shape
        st, s = self.strides
        if (t - 1) % st or h % s or w % s:
            raise ValueError(f"CogVideoX's VAE reads T = 1 + {st}k frames of H, W multiples of {s}. Got {t}x{h}x{w}.")
        return (self.vae.config.latent_channels, 1 + (t - 1) // st, h // s, w // s)

    # -- text ----------------------------------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str]) -> TextEmbedding:
        """T5 over exactly ``max_text_seq_length`` (226) tokens, without the attention mask and with the padding's
        outputs kept, as ``CogVideoXPipeline`` encodes (the transformer's positions count on that length)."""
        ids, mask = self.tokens(prompts, self.transformer.config.max_text_seq_length)
        return TextEmbedding(self.text_encoder(ids)[0].float(), mask)

    # -- backbone ------------------------------------------------------------------------------------
    @property
    def backbone_blocks(self) -> torch.nn.ModuleList:
        return self.transformer.transformer_blocks

    def token_grid(self, latent_shape: Sequence[int]) -> tuple[int, int, int]:
        _, t, h, w = latent_shape
        p = self.transformer.config.patch_size
        if h % p or w % p:
            raise ValueError(f"latent (h, w) = {(h, w)} must be divisible by the patch size {p}")
        return (t, h // p, w // p)

    def teacher_frames(self, features: torch.Tensor) -> torch.Tensor:
        return videorepa_frames(features)

    def rotary(self, grid: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """3D rotary embeddings (cos, sin), each (F H W, head_dim), for the grid; positions are placed on the
        crop of the training grid (sample_height x sample_width / patch) that the grid's aspect fits, as
        ``CogVideoXPipeline`` does. None when the model uses sin-cos position embeddings (2B)."""
        c = self.transformer.config
        if not c.use_rotary_positional_embeddings:
            return None
        f, h, w = grid
        crops = get_resize_crop_region_for_grid((h, w), c.sample_width // c.patch_size, c.sample_height // c.patch_size)
        return get_3d_rotary_pos_embed(embed_dim=c.attention_head_dim, crops_coords=crops, grid_size=(h, w),
                                       temporal_size=f, device=device)

    def forward(self, x_t, t, text: TextEmbedding, taps: Sequence[int] = ()):
        """u (B, C, t, h, w) in float32 from CogVideoX's v-prediction at the matched DDPM state (module docstring),
        and the taps' video tokens (B, F, H, W, D)."""
        self.check_time(x_t, t)
        grid = self.token_grid(x_t.shape[1:])
        dtype, n = self.compute_dtype(), flow_scale(t.float()).reshape(-1, 1, 1, 1, 1)
        z = (x_t.float() / n).transpose(1, 2).to(dtype)  # (B, t, C, h, w): the DDPM state, CogVideoX's layout
        s = ddpm_timestep(t, self.scheduler.alphas_cumprod)  # (B,)
        store, handles = capture_blocks(self.backbone_blocks, taps)
        try:
            with self.compute():
                v = self.transformer(z, encoder_hidden_states=text.hidden.to(dtype), timestep=s,
                                     image_rotary_emb=self.rotary(grid, x_t.device), return_dict=False)[0]
        finally:
            for handle in handles:
                handle.remove()
        features = {i: h.float().reshape(h.shape[0], *grid, h.shape[-1]) for i, h in store.items()}  # (B, F, H, W, D)
        return velocity_from_v(v.float().transpose(1, 2), x_t.float(), t), features

"""The teacher: a transformers ``VideoMAEModel`` at a tiny size, pre-trained by this project on world videos.

Representation-alignment methods (REPA, TRD, TSA, M-TSA) align the student's hidden states with the frozen
teacher's tokens of the clean video. The papers use VideoMAEv2-B; on the 32 x 32 x 16 world we use the same
class family (``VideoMAEModel``, masked-autoencoder pre-training with ``VideoMAEForPreTraining``) at a size a
2-core CPU trains in minutes. Teacher folders hold ``config.json`` and ``model.safetensors`` only
(``save_pretrained``); loading refuses pickled weights.

Input convention: videos ``(B, C, T, H, W)`` in [-1, 1] (as everywhere in physalign); the teacher sees them
with its own normalisation, ImageNet mean/std on [0, 1] pixels, which is what ``VideoMAEForPreTraining``
assumes when it un-normalises its reconstruction targets.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from transformers import VideoMAEConfig, VideoMAEForPreTraining, VideoMAEModel
from transformers.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from physalign.assets import resolve
from physalign.models.interface import capture_blocks

# The shipped teacher's sizes (configs/teacher.yaml may override any VideoMAEConfig field). Chosen by
# measurement on the shared 2-core CPU: see the README section "The teacher".
TEACHER_SIZES = dict(
    image_size=32,
    num_frames=16,
    patch_size=4,
    tubelet_size=2,
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    decoder_hidden_size=64,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=4,
    decoder_intermediate_size=256,
    norm_pix_loss=True,  # VideoMAE's default; raw-pixel targets gave worse probes (README)
)


# The config fields the encoder's output depends on besides its weights (not e.g. the library version).
FORWARD_FIELDS = ("image_size", "patch_size", "tubelet_size", "num_frames", "num_channels", "hidden_act",
                  "layer_norm_eps", "num_attention_heads", "qv_bias", "use_mean_pooling")


def teacher_config(sizes: dict | None = None) -> VideoMAEConfig:
    """``VideoMAEConfig`` of :data:`TEACHER_SIZES` with ``sizes`` overriding fields."""
    values = {**TEACHER_SIZES, **(sizes or {})}
    unknown = sorted(k for k in values if not hasattr(VideoMAEConfig(), k))
    if unknown:
        raise ValueError(f"teacher sizes: unknown VideoMAEConfig fields {unknown}")
    return VideoMAEConfig(**values)


def teacher_grid(config: VideoMAEConfig) -> tuple[int, int, int]:
    """Token grid (F, H, W) = (frames / tubelet, height / patch, width / patch), from the config."""
    size = _pair(config.image_size)
    patch = _pair(config.patch_size)
    return (config.num_frames // config.tubelet_size, size[0] // patch[0], size[1] // patch[1])


def video_shape(config: VideoMAEConfig) -> tuple[int, int, int, int]:
    """(C, T, H, W) of the videos the teacher reads."""
    return (config.num_channels, config.num_frames, *_pair(config.image_size))


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def load_teacher(path: str | Path) -> VideoMAEModel:
    """The frozen teacher (eval mode, no gradients) saved at ``path`` by :func:`save_teacher`."""
    path = resolve(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a teacher folder (no config.json)")
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path}: no model.safetensors (teachers are loaded from safetensors only)")
    model = VideoMAEModel.from_pretrained(path, use_safetensors=True)
    return model.eval().requires_grad_(False)


def save_teacher(model: VideoMAEModel | VideoMAEForPreTraining, path: str | Path) -> None:
    """Write the encoder (``VideoMAEModel``: config.json + model.safetensors) to ``path``; a pre-training
    model's decoder is left out."""
    encoder = model.videomae if isinstance(model, VideoMAEForPreTraining) else model
    encoder.save_pretrained(path, safe_serialization=True)


def check_frame_count(frames: int, config: VideoMAEConfig) -> None:
    """The teacher reads T frames; clips of T or 1 + T frames fit (frame 0 of 1 + T is dropped)."""
    shape = video_shape(config)
    if frames not in (shape[1], shape[1] + 1):
        raise ValueError(f"the teacher reads videos of shape {shape}; the clips have {frames} frames: give it "
                         f"{shape[1]} or {shape[1] + 1} (frame 0 is then dropped, as VideoREPA does for CogVideoX's 49)")


def fit_to_teacher(video: torch.Tensor, config: VideoMAEConfig) -> torch.Tensor:
    """Clips as sampled for the model -> the shape the teacher reads, the way VideoREPA feeds CogVideoX's
    49 x 480 x 720 clips to VideoMAEv2 as 48 x 160 x 240: (B, C, T, H, W) -> (B, C, T', H', W').

    With one frame more than the teacher reads (the 1 + 4k frames of CogVideoX and Wan, whose first frame has
    a latent frame of its own) frame 0 is dropped; any other frame count is an error. Frames of another size
    are resized (bilinear, antialiased); a different aspect ratio is stretched, so give the teacher the clips'
    aspect ratio (VideoMAE's positions are sinusoidal: any ``image_size`` loads)."""
    c, t, h, w = video_shape(config)
    if video.ndim != 5 or video.shape[1] != c:
        raise ValueError(f"the teacher reads videos of shape {(c, t, h, w)}: clips must be (B, {c}, {t} or {t + 1}, "
                         f"H, W) (with {t + 1} frames, frame 0 is dropped). Got {tuple(video.shape)}.")
    check_frame_count(video.shape[2], config)
    video = video[:, :, -t:]
    if tuple(video.shape[-2:]) == (h, w):
        return video
    b, f = video.shape[0], video.shape[2]
    frames = video.transpose(1, 2).reshape(b * f, c, *video.shape[-2:])
    frames = torch.nn.functional.interpolate(frames, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return frames.reshape(b, f, c, h, w).transpose(1, 2)


def to_teacher_input(video: torch.Tensor, config: VideoMAEConfig) -> torch.Tensor:
    """(B, C, T, H, W) in [-1, 1] -> the teacher's ``pixel_values`` (B, T, C, H, W), ImageNet-normalised."""
    expected = video_shape(config)
    if video.ndim != 5 or tuple(video.shape[1:]) != expected:
        raise ValueError(f"teacher input must have shape (B, C, T, H, W) = (B, {', '.join(map(str, expected))}). "
                         f"Got {tuple(video.shape)}.")
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=video.dtype, device=video.device)[:, None, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD, dtype=video.dtype, device=video.device)[:, None, None, None]
    return ((video + 1) / 2 - mean).div(std).transpose(1, 2)  # (B, T, C, H, W)


@torch.no_grad()
def teacher_features(model: VideoMAEModel, video: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Tokens of encoder block ``layer`` on the teacher's grid: (B, C, T, H, W) in [-1, 1] -> (B, F, H, W, D)."""
    store, handles = capture_blocks(model.encoder.layer, [layer])
    try:
        model(to_teacher_input(video, model.config))
    finally:
        for handle in handles:
            handle.remove()
    tokens = store[layer]  # (B, N, D), N in (F, H, W) order: the patch embedding's Conv3d flattened
    return tokens.reshape(len(tokens), *teacher_grid(model.config), tokens.shape[-1])


def teacher_fingerprint(model: VideoMAEModel) -> str:
    """A hash of the teacher's config and weights; keys caches of its features."""
    c = model.config
    h = hashlib.sha256(json.dumps({k: getattr(c, k) for k in FORWARD_FIELDS}, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

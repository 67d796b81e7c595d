"""The VideoMAEv2 release as a teacher folder: ``physalign convert-teacher WEIGHTS.safetensors --out DIR``.

VideoMAEv2's encoders (ViT-S/B/L/H/g, the distilled ViT-B the alignment papers use) are timm-style vision
transformers; their state dict, under an optional ``model.`` / ``module.`` / ``encoder.`` prefix, is

    patch_embed.proj.{weight,bias}             Conv3d(3, D, (tubelet, p, p), stride = kernel)
    blocks.<i>.norm1 / norm2.{weight,bias}     LayerNorm(D, eps 1e-6), pre-norm
    blocks.<i>.attn.qkv.weight                 (3 D, D): query, key, value stacked; no key bias
    blocks.<i>.attn.q_bias, attn.v_bias        (D,)
    blocks.<i>.attn.proj.{weight,bias}         (D, D)
    blocks.<i>.mlp.fc1 / fc2.{weight,bias}     D -> 4 D -> D, exact GELU
    norm.{weight,bias} or fc_norm.{weight,bias}  the final LayerNorm over tokens, or over their mean
    head.{weight,bias}                         a classifier (dropped)

with fixed sinusoidal position embeddings (not stored). transformers' ``VideoMAEModel`` is the same network, so
the conversion renames and splits ``qkv`` into ``query`` / ``key`` / ``value``; its ``last_hidden_state`` is the
release's per-token features (before ``fc_norm``'s pooling). The head count is not in the weights: it comes from
the width (:data:`HEADS`, the release's sizes) unless given. Layer scale (``gamma_1``), which transformers'
class lacks, is refused. Reads safetensors only (a ``.pth`` release must be re-saved as safetensors first;
physalign never unpickles a downloaded file).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import VideoMAEConfig, VideoMAEModel

PREFIXES = ("module.", "model.", "encoder.")
HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}  # ViT-S, B, L, H, g
DROPPED = ("head.", "fc_norm.")  # the classifier and the pooled output's norm: not part of VideoMAEModel


class ConversionError(ValueError):
    pass


def strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the wrapper prefix every key shares (if any of :data:`PREFIXES`)."""
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return strip_prefix({k[len(prefix):]: v for k, v in state.items()})
    return state


def release_config(state: dict[str, torch.Tensor], heads: int | None, frames: int,
                   image_size: int | tuple[int, int]) -> VideoMAEConfig:
    """The ``VideoMAEConfig`` of a release state dict (widths and depth from the shapes)."""
    if "patch_embed.proj.weight" not in state:
        raise ConversionError("not a VideoMAEv2 encoder: no patch_embed.proj.weight "
                              f"(keys start {sorted(state)[:5]})")
    width, channels, tubelet, patch, _ = state["patch_embed.proj.weight"].shape
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    if any(".gamma_" in k for k in state):
        raise ConversionError("the checkpoint uses layer scale (blocks.*.gamma_1), which VideoMAEModel lacks")
    heads = heads or HEADS.get(width)
    if heads is None or width % heads:
        raise ConversionError(f"width {width}: give the number of attention heads (--heads)")
    return VideoMAEConfig(
        image_size=list(image_size) if isinstance(image_size, (tuple, list)) else image_size, patch_size=patch,
        num_channels=channels, num_frames=frames, tubelet_size=tubelet, hidden_size=width, num_hidden_layers=depth,
        num_attention_heads=heads, intermediate_size=state["blocks.0.mlp.fc1.weight"].shape[0], hidden_act="gelu",
        layer_norm_eps=1e-6, qv_bias="blocks.0.attn.q_bias" in state,
        use_mean_pooling="norm.weight" not in state)


def renamed(state: dict[str, torch.Tensor], depth: int) -> tuple[dict[str, torch.Tensor], set[str]]:
    """The release's tensors under ``VideoMAEModel``'s names (module docstring), and the release keys read."""
    read: set[str] = set()

    def take(key: str) -> torch.Tensor:
        read.add(key)
        return state[key]

    out = {"embeddings.patch_embeddings.projection.weight": take("patch_embed.proj.weight"),
           "embeddings.patch_embeddings.projection.bias": take("patch_embed.proj.bias")}
    parts = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"encoder.layer.{i}."
        for old, new in parts.items():
            for kind in ("weight", "bias"):
                out[f"{dst}{new}.{kind}"] = take(f"{src}{old}.{kind}")
        query, key, value = take(f"{src}attn.qkv.weight").chunk(3)
        attention = f"{dst}attention.attention."
        out |= {f"{attention}query.weight": query, f"{attention}key.weight": key, f"{attention}value.weight": value}
        for bias, name in (("q_bias", "query"), ("v_bias", "value")):
            if f"{src}attn.{bias}" in state:
                out[f"{attention}{name}.bias"] = take(f"{src}attn.{bias}")
    if "norm.weight" in state:
        out |= {"layernorm.weight": take("norm.weight"), "layernorm.bias": take("norm.bias")}
    return {k: v.contiguous() for k, v in out.items()}, read


def convert_videomae_v2(state: dict[str, torch.Tensor], heads: int | None = None, frames: int = 16,
                        image_size: int | tuple[int, int] = 224) -> VideoMAEModel:
    """A ``VideoMAEModel`` holding the release encoder ``state`` (every tensor used or listed in
    :data:`DROPPED`; the model's every weight set)."""
    state = strip_prefix(state)
    config = release_config(state, heads, frames, image_size)
    weights, read = renamed(state, config.num_hidden_layers)
    unread = sorted(k for k in set(state) - read if not k.startswith(DROPPED))
    if unread:
        raise ConversionError(f"tensors the conversion does not know: {unread[:6]}")
    model = VideoMAEModel(config)
    missing, extra = model.load_state_dict(weights, strict=False)
    if missing or extra:
        raise ConversionError(f"the converted weights do not fit VideoMAEModel: missing {missing[:4]}, extra {extra[:4]}")
    return model.eval()


def convert_file(source: str | Path, out: str | Path, **options) -> Path:
    """Convert the safetensors file ``source`` into a teacher folder ``out`` (``load_teacher`` reads it)."""
    from physalign.teacher.model import save_teacher

    source = Path(source)
    if source.suffix != ".safetensors":
        raise ConversionError(f"{source}: give a .safetensors file (physalign does not unpickle downloaded .pth "
                              "files; re-save the release's state dict with safetensors.torch.save_file)")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
    save_teacher(convert_videomae_v2(load_file(str(source)), **options), out)
    return Path(out)

"""Memory a scale training config needs on one accelerator, estimated from the model's shapes.

    .venv/bin/python scripts/estimate_memory.py configs/scale/tsa_cogvideox_2b.yaml [--frames 49 --height 480 --width 720]
    .venv/bin/python scripts/estimate_memory.py CONFIG --measure     # re-measure the per-token bytes of one block
    .venv/bin/python scripts/estimate_memory.py CONFIG --fsdp 8      # per GPU under configs/accelerate/fsdp.yaml
    .venv/bin/python scripts/estimate_memory.py CONFIG --zero2 8     # per GPU under configs/accelerate/deepspeed.yaml

Parameter counts are exact: the real diffusers/transformers classes built on the meta device from the model
folder's own configs (``model.init``, if it exists here) or from the published configs in :data:`PRESETS`.

Accounting, in bytes (P = parameters of a part, P_t = trained parameters):

- weights: frozen parts in storage dtype (transformer, text encoder bfloat16: 2 P; VAE float32: 4 P); a trained
  part as float32 master weights (4 P_t) plus the bfloat16 copy autocast makes in the forward pass (2 P_t);
  with LoRA the base stays frozen bfloat16 and P_t = the adapter (rank r on to_q, to_k, to_v, to_out.0);
- gradients: float32, 4 P_t;  AdamW: two float32 moments, 8 P_t;
- activations, per sample and forward pass with gradient, N = video tokens (F H W after patching; CogVideoX adds
  its 226 text tokens to every block's sequence), L blocks of width D, A = bytes autograd keeps per token and
  block (measured, see below), T = text tokens of Wan's cross-attention (their keys and values, 2 D each):

      without checkpointing:  L (N A + 2 T 2D)
      with checkpointing:     L 2 N D  +  N A          (each block's bf16 input, plus one block recomputed)

  A is measured with ``torch.autograd.graph.saved_tensors_hooks`` on the real block at the real width under
  bfloat16 autocast, from two token counts and two depths (so weights and per-sample constants cancel); CPU's
  flash attention keeps no N x N matrix, like the CUDA kernels.
- method extras: DiReCT deep-copies the whole model as its frozen reference (transformer float32 after
  set_trainable, text encoder bf16, VAE float32); the alignment projector (float32, trained); PhysHPO runs
  2 (3 with the semantic level) clips per sample with gradient, DiffPhy 1 (its decode of the judged samples
  through the VAE with gradient is not counted: see the config's note).

- ``--fsdp N`` (FSDP2 over N processes, ``physalign.train.engine.ShardedEngine``): the transformer's weights,
  its trained parameters' gradients and AdamW moments divide by N; each process adds the whole float32
  parameters of two blocks (the one computing and the one being gathered next); the text encoder, the VAE,
  a projector and DiReCT's frozen copy stay whole on every process. Activations are per process: the batch
  is ``train.batch_size_per_process``, else the global batch over N.

- ``--zero2 N`` (DeepSpeed ZeRO stage 2 over N processes, ``physalign.train.zero``): every trained
  parameter (backbone, projector, adapter) keeps its whole float32 weights and bf16 autocast copy on every
  process, plus DeepSpeed's float32 master copy of its 1/N share; its gradients (one reduce bucket of
  ``reduce_bucket_size`` = 5e8 float32 elements, DeepSpeed's default, plus the 1/N partition) and AdamW
  moments divide by N. Frozen parts and DiReCT's copy stay whole. Activations are per process.

- EMA (``optim.ema_decay`` > 0): a float32 shadow of the trained parameters, 4 P_t, sharded as the moments are
  under FSDP2, whole under ZeRO-2. ``--ddp N`` / ``--fsdp N``: the in-place gradient averaging's one bucket
  (25 MiB) for what the engine all-reduces itself.
- a checkpoint save (``at a checkpoint``, activations freed): under FSDP2 each sharded tensor is gathered
  whole one at a time (on the GPU at most one block in float32) into the writing process's host RAM (the
  backbone's frozen bf16 weights, its trained float32 weights, both moments, the EMA shadow); under ZeRO-2
  the writing process clones the trained parameters (4 P_t) and holds the gathered moments in host RAM
  (8 P_t).

Not counted: the allocator's fragmentation, kernel workspaces, the optimizer step's temporaries and the CUDA
context (0.5-1 GB): add 10-20%. Without ``--fsdp`` one process holds everything (plain data parallel).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

GB = 1e9
TEXT_TOKENS = {"WanVideoModel": 512, "CogVideoXVideoModel": 226}
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)
T5_XXL = dict(UMT5_XXL, vocab_size=32128)
WAN_1_3B = dict(patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
COG_2B = dict(num_attention_heads=30, attention_head_dim=64, num_layers=30, time_embed_dim=512, text_embed_dim=4096,
              use_rotary_positional_embeddings=False)

# The published configs (transformer / text encoder; the VAEs are the classes' defaults), the default video
# (frames, height, width), and A = measured bytes per token and block (``--measure``, diffusers 0.42.1,
# torch 2.13 CPU, bfloat16 autocast; 2026-12-01).
PRESETS = {
    "Wan2.1-T2V-1.3B": dict(kind="WanVideoModel", transformer=WAN_1_3B, text_encoder=UMT5_XXL, video=(81, 480, 832),
                            block_bytes_per_token=140420, decode_bytes_per_pixel=21933),
    "Wan2.1-T2V-14B": dict(kind="WanVideoModel", transformer=dict(WAN_1_3B, num_attention_heads=40, ffn_dim=13824,
                                                                  num_layers=40),
                           text_encoder=UMT5_XXL, video=(81, 480, 832), block_bytes_per_token=403812,
                           decode_bytes_per_pixel=21933),
    "CogVideoX-2b": dict(kind="CogVideoXVideoModel", transformer=COG_2B, text_encoder=T5_XXL, video=(49, 480, 720),
                         block_bytes_per_token=88936, decode_bytes_per_pixel=43059),
    "CogVideoX-5b": dict(kind="CogVideoXVideoModel", transformer=dict(COG_2B, num_attention_heads=48, num_layers=42,
                                                                      use_rotary_positional_embeddings=True),
                         text_encoder=T5_XXL, video=(49, 480, 720), block_bytes_per_token=142288,
                         decode_bytes_per_pixel=43059),
}


def classes(kind: str):
    """(transformer, VAE, text encoder, text config) classes of a model kind."""
    from diffusers import AutoencoderKLCogVideoX, AutoencoderKLWan, CogVideoXTransformer3DModel, WanTransformer3DModel
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    if kind == "WanVideoModel":
        return WanTransformer3DModel, AutoencoderKLWan, UMT5EncoderModel, UMT5Config
    if kind == "CogVideoXVideoModel":
        return CogVideoXTransformer3DModel, AutoencoderKLCogVideoX, T5EncoderModel, T5Config
    raise ValueError(f"model.kind must be WanVideoModel or CogVideoXVideoModel. Got {kind!r}.")


def preset_for(init: str) -> tuple[str, dict]:
    """The preset whose name the folder's name contains (case-insensitive), e.g. /models/Wan2.1-T2V-1.3B-Diffusers."""
    name = Path(init).name.lower()
    for key in sorted(PRESETS, key=len, reverse=True):
        if key.lower() in name:
            return key, PRESETS[key]
    raise ValueError(f"model.init {init!r}: no preset matches its folder name; known: {sorted(PRESETS)}")


def folder_configs(init: str, preset: dict) -> dict:
    """The part configs from the folder ``init`` if it is here, else the preset's."""
    folder = Path(init)
    if not (folder / "transformer" / "config.json").is_file():
        return {"transformer": preset["transformer"], "vae": {}, "text_encoder": preset["text_encoder"]}
    parts = ("transformer", "vae", "text_encoder")
    configs = {part: json.loads((folder / part / "config.json").read_text()) for part in parts}
    return {part: {k: v for k, v in c.items() if not k.startswith("_")} for part, c in configs.items()}


def build_meta(kind: str, configs: dict) -> dict:
    """The three parts on the meta device (no memory, exact shapes)."""
    transformer, vae, text_encoder, text_config = classes(kind)
    allowed = set(text_config().to_dict())
    text = text_config(**{k: v for k, v in configs["text_encoder"].items() if k in allowed})
    with torch.device("meta"):
        return {"transformer": transformer(**configs["transformer"]), "vae": vae(**configs["vae"]),
                "text_encoder": text_encoder(text)}


def parameter_counts(kind: str, preset: dict, init: str = "") -> dict[str, int]:
    parts = build_meta(kind, folder_configs(init, preset))
    return {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}


def lora_parameters(transformer_config: dict, kind: str, rank: int) -> int:
    """r (d_in + d_out) per adapted projection: to_q, to_k, to_v, to_out.0 of every attention of every block
    (Wan: self- and cross-attention; CogVideoX: the joint attention)."""
    d = transformer_config["num_attention_heads"] * transformer_config["attention_head_dim"]
    attentions = 2 if kind == "WanVideoModel" else 1
    return transformer_config["num_layers"] * attentions * 4 * rank * 2 * d


def token_count(kind: str, transformer_config: dict, video: tuple[int, int, int]) -> tuple[int, tuple[int, int, int]]:
    """Video tokens N and the grid (F, H, W): latents 1 + (T - 1)/4 frames, /8 space, then the patch."""
    frames, height, width = video
    t, h, w = 1 + (frames - 1) // 4, height // 8, width // 8
    patch = transformer_config.get("patch_size", 2)
    pt, ph, pw = patch if isinstance(patch, (list, tuple)) else (1, patch, patch)
    grid = (t // pt, h // ph, w // pw)
    return math.prod(grid), grid


# -- measuring A ---------------------------------------------------------------------------------------


def saved_bytes(model, run) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during ``run()``."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def measure_block_bytes(kind: str, transformer_config: dict, tokens: tuple[int, int] = (64, 128)) -> float:
    """A: bytes kept per token and block, from S(L, N) at L in {1, 2} and two token counts N (frames of 8 x 8
    tokens), under bfloat16 autocast: (S(2, N2) - S(2, N1) - S(1, N2) + S(1, N1)) / (N2 - N1)."""
    transformer_class, *_ = classes(kind)
    torch.manual_seed(0)
    sizes = {}
    for layers in (1, 2):
        model = transformer_class(**{**transformer_config, "num_layers": layers})
        for n in tokens:
            sizes[layers, n] = saved_bytes(model, lambda: _forward(kind, model, n // 64))
    (n1, n2) = tokens
    return (sizes[2, n2] - sizes[2, n1] - sizes[1, n2] + sizes[1, n1]) / (n2 - n1)


def _forward(kind: str, model, frames: int):
    c = model.config
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if kind == "WanVideoModel":
            x = torch.randn(1, c.in_channels, frames, 16, 16)
            return model(x, timestep=torch.tensor([500.0]), encoder_hidden_states=torch.randn(1, 16, c.text_dim)).sample
        x = torch.randn(1, frames, c.in_channels, 16, 16)
        return model(x, encoder_hidden_states=torch.randn(1, c.max_text_seq_length, c.text_embed_dim),
                     timestep=torch.tensor([500])).sample


def measure_decode_bytes(kind: str, sizes: tuple[int, int] = (4, 8)) -> float:
    """Bytes autograd keeps per output pixel (frame x row x column) when the float32 VAE decodes with gradient
    (DiffPhy's judged samples), from 3 latent frames of s x s at two sizes s."""
    _, vae_class, *_ = classes(kind)
    vae = vae_class()
    kept = {}
    for s in sizes:
        z = torch.randn(1, vae.config.get("z_dim", vae.config.get("latent_channels")), 3, s, s, requires_grad=True)
        kept[s] = saved_bytes(vae, lambda: vae.decode(z).sample)
    frames = 1 + 2 * 4  # 3 latent frames
    pixels = {s: frames * (8 * s) ** 2 for s in sizes}
    return (kept[sizes[1]] - kept[sizes[0]]) / (pixels[sizes[1]] - pixels[sizes[0]])


# -- the estimate ---------------------------------------------------------------------------------------


def forward_passes(cfg) -> int:
    """Forward passes with gradient per sample of the batch."""
    if cfg.train.method == "physhpo":
        return 3 if cfg.method.get("semantic_weight", 1.0) > 0 else 2
    return 1


REDUCE_BUCKET = 5e8  # DeepSpeed's default zero_optimization.reduce_bucket_size, in elements
AVERAGING_BUCKET = 25 * 2**20  # physalign.train.engine.BUCKET_BYTES: the in-place gradient averaging's bucket
HELD = ("weights", "gradients", "adamw", "ema", "averaging", "extras")  # what a process holds through every step


def static_terms(cfg, kind: str, counts: dict, tc: dict, fsdp: int = 1, zero2: int = 1, ddp: int = 1) -> dict:
    """Weights, gradients, AdamW, EMA, the gradient-averaging bucket and the method's extra weights, in bytes,
    on one of ``ddp``, ``fsdp`` or ``zero2`` processes; what a checkpoint save adds (``checkpoint gather`` on
    the GPU, ``checkpoint host`` in host RAM of the writing process); and the trained parameter count."""
    lora_rank = cfg.method.get("lora_rank", 16) if cfg.train.method in ("diffphy", "physhpo") else None
    trained = lora_parameters(tc, kind, lora_rank) if lora_rank else sum(counts[p] for p in cfg.model.trainable)
    frozen = {p: c for p, c in counts.items() if lora_rank or p not in cfg.model.trainable}
    in_backbone = trained if lora_rank else (counts["transformer"] if "transformer" in cfg.model.trainable else 0)
    extras = 0
    if cfg.train.method == "direct" and (cfg.method.get("reg_weight", 0.1) > 0 or cfg.method.get("micro") == "reference"):
        extras += 4 * counts["transformer"] + 2 * counts["text_encoder"] + 4 * counts["vae"]  # deepcopy of the model
    if cfg.train.method in ("tsa", "mtsa", "trd", "repa"):
        d, h = tc["num_attention_heads"] * tc["attention_head_dim"], cfg.method.get("projector_dim", 256)
        extras += 16 * (d * h + h * h + h * 768 + 768 * 768 * 27)  # MLP + Conv3d onto a 768-wide teacher, trained
    weights = {p: c * (4 if p == "vae" else 2) for p, c in frozen.items()}
    weights["trained"] = 6 * trained
    if fsdp > 1:  # the backbone's share: its frozen weights, its trained parameters and their state
        weights["transformer"] = weights.get("transformer", 0) / fsdp
        weights["trained"] = 6 * (trained - in_backbone + in_backbone / fsdp)
        extras += 2 * 4 * counts["transformer"] / tc["num_layers"]  # two whole float32 blocks, gathered
    state = trained - in_backbone + in_backbone / fsdp
    gradients = 4 * state
    if zero2 > 1:  # every trained parameter's state split; its weights whole, plus the master copy's share
        state = trained / zero2
        weights["trained"] = 6 * trained + 4 * state
        gradients = 4 * (state + min(REDUCE_BUCKET, trained))
    ema = 4 * (trained if zero2 > 1 else state) if cfg.optim.ema_decay else 0  # a float32 shadow, laid out as the weights
    averaged = 0 if zero2 > 1 else trained - (in_backbone if fsdp > 1 else 0)  # what the engine all-reduces
    averaging = min(AVERAGING_BUCKET, 4 * averaged) if max(ddp, fsdp) > 1 else 0
    return {"trained": trained, "weights": sum(weights.values()), "gradients": gradients, "adamw": 8 * state,
            "ema": ema, "averaging": averaging, "extras": extras,
            **checkpoint_terms(cfg, counts, trained, in_backbone, lora_rank is not None, fsdp, zero2, tc["num_layers"])}


def checkpoint_terms(cfg, counts: dict, trained: float, in_backbone: float, lora: bool, fsdp: int, zero2: int,
                     layers: int = 1) -> dict:
    """Bytes a checkpoint save adds. FSDP2 (``ShardedEngine.gathered``): each sharded tensor is gathered whole
    one at a time (on the GPU: at most one block's float32 weights, a bound) and the writing process keeps
    them in host RAM: the backbone's frozen weights (bf16; the whole base under LoRA), its trained float32
    weights, both AdamW moments and the EMA shadow. DeepSpeed (``DeepSpeedEngine.gathered``): the writing
    process gives each trained parameter storage of its own (float32) and keeps the gathered moments in host
    RAM. One whole process: nothing (the save writes the live tensors)."""
    gather = host = 0.0
    if fsdp > 1:
        frozen_backbone = counts["transformer"] if lora or "transformer" not in cfg.model.trainable else 0
        gather = 4 * counts["transformer"] / layers
        host = 2 * frozen_backbone + (4 + 8 + (4 if cfg.optim.ema_decay else 0)) * in_backbone
    if zero2 > 1:
        gather, host = 4 * trained, 8 * trained
    return {"checkpoint gather": gather, "checkpoint host": host}


def activation_terms(cfg, kind: str, tc: dict, seq: int, video, a: float, decode: float, batch: int) -> dict:
    """Per-sample activation bytes with and without gradient checkpointing, and DiffPhy's judged decode."""
    d, layers, passes = tc["num_attention_heads"] * tc["attention_head_dim"], tc["num_layers"], forward_passes(cfg)
    cross = 2 * TEXT_TOKENS[kind] * 2 * d if kind == "WanVideoModel" else 0  # Wan's cross-attention keys and values
    judged = 0.0
    if cfg.train.method == "diffphy":  # the VAE decodes x0_hat with gradient; it has no gradient checkpointing
        judged = max(1, round(cfg.method.get("judge_fraction", 0.25) * batch)) * math.prod(video) * decode
    return {"no checkpointing": passes * layers * (seq * a + cross),
            "checkpointing": passes * (layers * seq * d * 2 + seq * a), "judged decode": judged}


def estimate(cfg, video: tuple[int, int, int] | None = None, block_bytes: float | None = None,
             decode_bytes: float | None = None, fsdp: int = 1, zero2: int = 1, ddp: int = 1) -> dict:
    """Every term in GB for config ``cfg`` at ``video`` = (frames, height, width) (default: the preset's), on
    one process of ``fsdp`` or ``zero2`` (1: unsharded; ``train.batch_size`` is the global batch, unless
    ``train.batch_size_per_process`` gives each process's)."""
    for flag, n in (("--fsdp", fsdp), ("--zero2", zero2), ("--ddp", ddp)):
        if n < 1 or not cfg.train.batch_size_per_process and cfg.train.batch_size % n:
            raise ValueError(f"{flag} {n}: must be >= 1 and divide train.batch_size {cfg.train.batch_size}")
    batch = cfg.train.batch_size_per_process or cfg.train.batch_size // (fsdp * zero2 * ddp)
    if sum(n > 1 for n in (fsdp, zero2, ddp)) > 1:
        raise ValueError("--ddp, --fsdp and --zero2 are three launches: give one")
    name, preset = preset_for(cfg.model.init)
    kind, video = preset["kind"], video or preset["video"]
    counts = parameter_counts(kind, preset, cfg.model.init)
    tc = {**preset["transformer"], **folder_configs(cfg.model.init, preset)["transformer"]}
    n, grid = token_count(kind, tc, video)
    seq = n + (TEXT_TOKENS[kind] if kind == "CogVideoXVideoModel" else 0)  # joint attention: text tokens ride along
    static = static_terms(cfg, kind, counts, tc, fsdp, zero2, ddp)
    act = activation_terms(cfg, kind, tc, seq, video, block_bytes or preset["block_bytes_per_token"],
                           decode_bytes or preset["decode_bytes_per_pixel"], batch)
    held = sum(static[k] for k in HELD)  # through every step
    fixed = held + act["judged decode"]
    return {
        "preset": name, "video": tuple(video), "grid": grid, "tokens": seq, "parameters": counts, "batch": batch,
        "block_bytes_per_token": block_bytes or preset["block_bytes_per_token"], "trained": static["trained"],
        **{k: v / GB for k, v in static.items() if k != "trained"},
        "activations per sample": {k: act[k] / GB for k in ("no checkpointing", "checkpointing")},
        "judged decode": act["judged decode"] / GB,
        "total_gb": {k: (fixed + batch * act[k]) / GB for k in ("no checkpointing", "checkpointing")},
        "at a checkpoint_gb": (held + static["checkpoint gather"]) / GB,  # activations are freed by then
    }


def report(cfg, est: dict) -> str:
    p = est["parameters"]
    lines = [
        f"preset {est['preset']}: transformer {p['transformer'] / 1e9:.2f}B, text encoder {p['text_encoder'] / 1e9:.2f}B, "
        f"VAE {p['vae'] / 1e6:.0f}M parameters; trained {est['trained'] / 1e6:,.1f}M",
        f"video {est['video']}: token grid {est['grid']} -> {est['tokens']:,} tokens per block; "
        f"A = {est['block_bytes_per_token'] / 1e3:.1f} kB per token and block",
        f"weights {est['weights']:.1f} GB + gradients {est['gradients']:.1f} GB + AdamW {est['adamw']:.1f} GB "
        f"+ EMA {est['ema']:.1f} GB + averaging bucket {est['averaging']:.3f} GB + extras {est['extras']:.1f} GB"
        + (f" + judged decode {est['judged decode']:.1f} GB" if est["judged decode"] else ""),
        "activations per sample: " + ", ".join(f"{k} {v:.1f} GB" for k, v in est["activations per sample"].items()),
        f"total at batch {est['batch']} per process: " + ", ".join(f"{k} {v:.1f} GB" for k, v in est["total_gb"].items()),
        f"at a checkpoint save: {est['at a checkpoint_gb']:.1f} GB (gathering adds {est['checkpoint gather']:.1f} GB"
        + (f"; {est['checkpoint host']:.1f} GB of host RAM on the writing process)" if est["checkpoint host"] else ")"),
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    from physalign.train.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--ddp", type=int, default=1, help="processes of a data-parallel launch (configs/accelerate/"
                        "ddp.yaml): memory per process")
    parser.add_argument("--fsdp", type=int, default=1, help="processes of an FSDP2 launch (configs/accelerate/"
                        "fsdp.yaml): memory per process")
    parser.add_argument("--zero2", type=int, default=1, help="processes of a DeepSpeed ZeRO-2 launch (configs/"
                        "accelerate/deepspeed.yaml): memory per process")
    parser.add_argument("--measure", action="store_true", help="re-measure A (one real-width block) and the VAE's "
                        "decode bytes per pixel instead of the recorded figures (minutes on a CPU)")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    name, preset = preset_for(cfg.model.init)
    video = tuple(v or d for v, d in zip((args.frames, args.height, args.width), preset["video"]))
    measured = {}
    if args.measure:
        measured = dict(block_bytes=measure_block_bytes(preset["kind"], preset["transformer"]),
                        decode_bytes=measure_decode_bytes(preset["kind"]))
    print(report(cfg, estimate(cfg, video, fsdp=args.fsdp, zero2=args.zero2, ddp=args.ddp, **measured)))


if __name__ == "__main__":
    sys.exit(main())

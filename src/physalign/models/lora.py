"""LoRA on a model's denoising backbone, through peft and diffusers' own adapter API.

    W x  ->  W x + (alpha / r) B A x,   A: (r, d_in), B: (d_out, r) = 0 at the start

Used by the methods that keep the base frozen (DiffPhy) or need the starting model as a reference without a
second copy in memory (Flow-DPO / PhysHPO: the reference is the backbone with its adapter disabled).

Persistence: a model folder whose backbone carries an adapter holds the *base* weights in the backbone's
usual folder (so the folder stays loadable by diffusers) and the adapter next to it in ``<part>_lora/``:
``pytorch_lora_weights.safetensors`` (diffusers' ``save_lora_adapter`` format: keys
``blocks.0.attn1.to_q.lora_A.weight``) and ``lora_config.json`` (the :class:`LoraSpec`). :func:`merge_lora`
folds the adapter into the weights, leaving a plain model.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from physalign.models.parts import building_empty

if TYPE_CHECKING:
    from peft import LoraConfig

ADAPTER = "default"
WEIGHTS = "pytorch_lora_weights.safetensors"
SPEC_FILE = "lora_config.json"


@dataclass
class LoraSpec:
    rank: int = 16
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])  # attention projections
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or not self.targets:
            raise ValueError(f"LoRA needs rank >= 1, alpha > 0 and target modules. Got {asdict(self)}.")
        self.targets = list(self.targets)

    def peft_config(self) -> LoraConfig:
        from peft import LoraConfig  # peft (and transformers) only where an adapter is made: ~3 s of imports

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self.targets,
                          lora_dropout=self.dropout, init_lora_weights=True)


def has_lora(backbone: torch.nn.Module) -> bool:
    return bool(getattr(backbone, "peft_config", None))


def lora_spec(backbone: torch.nn.Module) -> LoraSpec | None:
    if not has_lora(backbone):
        return None
    c = backbone.peft_config[ADAPTER]
    return LoraSpec(rank=c.r, alpha=c.lora_alpha, targets=sorted(c.target_modules), dropout=c.lora_dropout)


def add_lora(backbone: torch.nn.Module, spec: LoraSpec) -> None:
    """Give ``backbone`` a LoRA adapter per ``spec`` (trainable; every other weight of it frozen). A backbone
    that already carries the same adapter (a resumed run) keeps it and its weights."""
    current = lora_spec(backbone)
    if current is not None:
        if sorted(current.targets) != sorted(spec.targets) or (current.rank, current.alpha) != (spec.rank, spec.alpha):
            raise ValueError(f"the backbone already carries a different LoRA adapter: {asdict(current)} vs {asdict(spec)}")
        backbone.requires_grad_(False)
        for name, p in backbone.named_parameters():
            p.requires_grad_("lora_" in name)
        return
    backbone.add_adapter(spec.peft_config(), adapter_name=ADAPTER)  # freezes the base weights
    for p in backbone.parameters():  # float32 adapter on a bfloat16 base: small updates would round away
        if p.requires_grad:
            p.data = p.data.float()


@contextlib.contextmanager
def lora_disabled(backbone: torch.nn.Module):
    """Within the block the backbone computes with its base weights only (the frozen starting model)."""
    backbone.disable_adapters()
    try:
        yield
    finally:
        backbone.enable_adapters()


def merge_lora(backbone: torch.nn.Module) -> None:
    """Fold the adapter into the base weights and remove it: ``W <- W + (alpha / r) B A``."""
    if has_lora(backbone):
        backbone.fuse_lora()
        backbone.unload_lora()


def lora_state(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under diffusers' key names (no adapter name): ``...to_q.lora_A.weight``."""
    tag = f".{ADAPTER}."
    return {k.replace(tag, "."): v.detach().contiguous() for k, v in backbone.state_dict().items() if "lora_" in k}


def base_state(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights without the adapter, under the plain model's key names."""
    return {k.replace(".base_layer.", "."): v.detach().contiguous() for k, v in backbone.state_dict().items() if "lora_" not in k}


def save_backbone(backbone, folder: Path) -> None:
    """``backbone.save_pretrained(folder)``; with an adapter: base weights there, adapter in ``folder_lora``."""
    if not has_lora(backbone):
        backbone.save_pretrained(folder, safe_serialization=True)
        shutil.rmtree(lora_folder(folder), ignore_errors=True)  # a stale adapter must not ride along
        return
    folder.mkdir(parents=True, exist_ok=True)
    backbone.save_config(folder)
    save_file(base_state(backbone), str(folder / "diffusion_pytorch_model.safetensors"))
    save_adapter(backbone, lora_folder(folder))


def save_adapter(backbone, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lora_state(backbone), str(folder / WEIGHTS))
    (folder / SPEC_FILE).write_text(json.dumps(asdict(lora_spec(backbone)), indent=2))


def load_adapter(backbone, folder: Path) -> None:
    """Add the adapter saved in ``folder`` to ``backbone`` (safetensors only)."""
    spec_path, weights = folder / SPEC_FILE, folder / WEIGHTS
    for path in (spec_path, weights):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; a LoRA folder holds {SPEC_FILE} and {WEIGHTS}")
    add_lora(backbone, LoraSpec(**json.loads(spec_path.read_text())))
    if building_empty():  # the adapter's structure only: another process reads and broadcasts its weights
        return
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(backbone, load_file(str(weights)), adapter_name=ADAPTER)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if result.unexpected_keys or missing:
        raise KeyError(f"{weights} does not fit the backbone: unexpected {result.unexpected_keys[:3]}, missing {missing[:3]}")


def lora_folder(backbone_folder: Path) -> Path:
    return backbone_folder.with_name(backbone_folder.name + "_lora")


def export_pipeline_lora(backbone, pipeline: str, folder: str | Path) -> Path:
    """Write the backbone's adapter as the diffusers pipeline ``pipeline`` (e.g. "WanPipeline") saves LoRA
    weights, so ``pipe.load_lora_weights(folder)`` loads it: ``pytorch_lora_weights.safetensors`` with keys
    ``transformer.<module>.lora_A.weight`` and the adapter's config (rank, alpha, targets) in its metadata."""
    import diffusers

    if not has_lora(backbone):
        raise ValueError("the backbone carries no LoRA adapter to export")
    if not hasattr(diffusers, pipeline) or not hasattr(getattr(diffusers, pipeline), "save_lora_weights"):
        raise ValueError(f"{pipeline!r} is not a diffusers pipeline that saves LoRA weights")
    config = backbone.peft_config[ADAPTER].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    getattr(diffusers, pipeline).save_lora_weights(folder, transformer_lora_layers=lora_state(backbone),
                                                   transformer_lora_adapter_metadata=config, safe_serialization=True)
    return Path(folder)

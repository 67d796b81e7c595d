"""A trained LoRA adapter loads into a diffusers pipeline with ``pipe.load_lora_weights`` and computes what the
adapted backbone computes."""

import copy
import json
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

from physalign.models.interface import load_model
from physalign.models.lora import LoraSpec, add_lora, export_pipeline_lora, lora_disabled
from physalign.models.world import WorldVideoModel
from physalign.train.config import load_config
from physalign.train.loop import train
from physalign.world.dataset import generate

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


def pipe_with(transformer) -> WanPipeline:
    """A WanPipeline holding only the transformer: load_lora_weights needs no other part."""
    return WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler())


def transformer_out(transformer, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, text = torch.randn(1, 4, 4, 4, 4, generator=g), torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        return transformer(x, timestep=torch.tensor([300.0]), encoder_hidden_states=text, return_dict=False)[0]


def test_exported_adapter_loads_into_a_wan_pipeline(tmp_path):
    torch.manual_seed(0)
    model = WorldVideoModel.from_config(TINY)
    plain = copy.deepcopy(model.transformer)
    add_lora(model.backbone, LoraSpec(rank=4, alpha=8))  # alpha != rank: the scale must travel with the file
    with torch.no_grad():
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    folder = export_pipeline_lora(model.backbone, model.lora_pipeline, tmp_path / "lora")
    pipe = pipe_with(plain)
    before = transformer_out(pipe.transformer)
    pipe.load_lora_weights(str(folder))
    after, adapted = transformer_out(pipe.transformer), transformer_out(model.backbone)
    assert not torch.allclose(before, adapted, atol=1e-4)
    assert torch.allclose(after, adapted, atol=1e-5)
    with lora_disabled(model.backbone):
        assert torch.allclose(transformer_out(model.backbone), before, atol=1e-6)
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        export_pipeline_lora(model.backbone, "NoSuchPipeline", tmp_path / "x")


def test_a_lora_run_writes_its_adapter_for_diffusers(tmp_path):
    post = generate(tmp_path / "post", 6, "train", 0, frames=8, resolution=16, counterfactuals=True, progress=False)
    cfg = load_config(CONFIGS / "methods" / "physhpo.yaml", [
        'model.init=""', f"model.sizes={json.dumps(TINY | {'frames': 8})}", f"data.manifest={post}",
        f"data.cache_dir={tmp_path / 'cache'}", "train.batch_size=2", "train.steps=2", "optim.lr=0.01",
        "method.lora_rank=4", "method.lora_alpha=4"])
    out = train(cfg, tmp_path / "run", progress=False)
    merged = load_model(out)  # the run's export: the adapter merged into the weights
    torch.manual_seed(0)
    base = WorldVideoModel.from_config(TINY | {"frames": 8})  # the same start (seeded as build_run seeds)
    pipe = pipe_with(base.transformer)
    assert not torch.allclose(transformer_out(pipe.transformer), transformer_out(merged.transformer), atol=1e-4)
    pipe.load_lora_weights(str(tmp_path / "run" / "lora"))
    assert torch.allclose(transformer_out(pipe.transformer), transformer_out(merged.transformer), atol=1e-5)

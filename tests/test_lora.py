"""LoRA on the backbone: disabled = the base model, saved and loaded exactly, merged into a plain model."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from physalign.models.lora import LoraSpec, add_lora, has_lora, lora_disabled, lora_folder, merge_lora
from physalign.models.world import WorldVideoModel

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)

pytestmark = pytest.mark.usefixtures("one_thread")


def velocity(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, t = torch.randn(2, 4, 4, 4, 4, generator=g), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        return model(x, t, model.encode_text(["a red ball", ""]))[0]


def adapted(rank=4) -> WorldVideoModel:
    torch.manual_seed(0)
    model = WorldVideoModel.from_config(TINY)
    add_lora(model.backbone, LoraSpec(rank=rank, alpha=rank))
    with torch.no_grad():  # B starts at zero (the adapter is the identity); move it so the tests can fail
        for name, p in model.backbone.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model


def test_adapter_trains_alone_and_disabled_is_the_base():
    model = adapted()
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with_lora = velocity(model)
    with lora_disabled(model.backbone):
        base = velocity(model)
    assert not torch.allclose(with_lora, base, atol=1e-4)
    assert torch.equal(velocity(model), with_lora)  # enabled again after the block
    plain = WorldVideoModel.from_config(TINY)
    plain.load_state_dict({k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k})
    assert torch.allclose(velocity(plain), base, atol=1e-6)


def test_save_load_round_trip_and_merge(tmp_path):
    model = adapted()
    before = velocity(model)
    model.save_pretrained(tmp_path / "m")
    assert (lora_folder(tmp_path / "m" / "transformer") / "pytorch_lora_weights.safetensors").is_file()
    saved = load_file(str(tmp_path / "m" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in saved)  # the backbone folder stays a plain diffusers model
    loaded = WorldVideoModel.from_pretrained(tmp_path / "m")
    assert has_lora(loaded.backbone) and torch.allclose(velocity(loaded), before, atol=1e-6)
    add_lora(loaded.backbone, LoraSpec(rank=4, alpha=4))  # a resumed run: the adapter is kept, not replaced
    assert torch.allclose(velocity(loaded), before, atol=1e-6)
    with pytest.raises(ValueError, match="different LoRA adapter"):
        add_lora(loaded.backbone, LoraSpec(rank=8, alpha=8))
    merge_lora(loaded.backbone)
    assert not has_lora(loaded.backbone) and torch.allclose(velocity(loaded), before, atol=1e-5)
    loaded.save_pretrained(tmp_path / "m")  # the same folder, now plain: the stale adapter goes
    assert not lora_folder(tmp_path / "m" / "transformer").exists()
    assert torch.allclose(velocity(WorldVideoModel.from_pretrained(tmp_path / "m")), before, atol=1e-5)


def test_a_lora_file_that_does_not_fit_is_named(tmp_path):
    adapted().save_pretrained(tmp_path / "m")
    weights = lora_folder(tmp_path / "m" / "transformer") / "pytorch_lora_weights.safetensors"
    tensors = load_file(str(weights))
    tensors["blocks.9.attn1.to_q.lora_A.weight"] = torch.zeros(4, 64)
    save_file(tensors, str(weights))
    with pytest.raises(KeyError, match="does not fit the backbone"):
        WorldVideoModel.from_pretrained(tmp_path / "m")

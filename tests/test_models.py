import json
import random

import pytest
import torch

from physalign.models.interface import CONFIG_FILE, load_model
from physalign.models.tokenizer import UNK, world_vocabulary
from physalign.models.world import WorldModelConfig, WorldVideoModel
from physalign.world.scene import sample_scene, scene_to_prompt

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)
PROMPT = "a small red rubber ball is dropped from high up under normal gravity, on a black background"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WorldVideoModel(WorldModelConfig(**TINY)).eval()


def tiny(**changes) -> WorldVideoModel:
    return WorldVideoModel(WorldModelConfig(**{**TINY, **changes}))


def test_latent_shape_and_token_grid_follow_vae_strides_and_patch_size(model):
    assert model.latent_shape((3, 4, 16, 16)) == (4, 4, 8, 8)  # two VAE levels: one halving
    assert model.token_grid((4, 4, 8, 8)) == (4, 4, 4)  # patch (1, 2, 2)
    deeper = tiny(vae_channels=[16, 16, 32], patch_size=[2, 2, 2], latent_channels=8)
    assert deeper.latent_shape((3, 4, 16, 16)) == (8, 4, 4, 4)  # three levels: stride 4
    assert deeper.token_grid((8, 4, 4, 4)) == (2, 2, 2)
    with pytest.raises(ValueError, match="multiples of the VAE's stride 4"):
        deeper.latent_shape((3, 4, 18, 18))
    with pytest.raises(ValueError, match="divisible by the patch size"):
        deeper.token_grid((8, 3, 4, 4))
    with pytest.raises(ValueError, match="rope_max_seq_len=64"):
        model.token_grid((4, 130, 8, 8))


def test_forward_velocity_and_feature_taps_on_the_token_grid(model):
    video = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    z = model.encode(video)
    assert z.shape == (2, *model.latent_shape(video.shape[1:]))
    assert model.decode(z).shape == video.shape
    text = model.encode_text([PROMPT, ""])
    t = torch.tensor([0.2, 0.9])
    with torch.no_grad():
        v, feats = model(z, t, text, taps=(0, -1))
        plain, none = model(z, t, text)
        direct = model.transformer(z, timestep=t * 1000, encoder_hidden_states=text.hidden, return_dict=False)[0]
    assert v.shape == z.shape and none == {}
    assert torch.equal(v, plain) and torch.equal(v, direct)  # taps observe only; Wan's time is t * 1000
    assert set(feats) == {0, -1}
    assert feats[0].shape == (2, *model.token_grid(z.shape[1:]), 2 * 16)  # (B, F, H, W, heads x head_dim)
    assert not torch.equal(feats[0], feats[-1])
    assert all(not block._forward_hooks for block in model.backbone_blocks)  # hooks removed
    with pytest.raises(IndexError, match="2 blocks"):
        model(z, t, text, taps=(2,))
    with pytest.raises(ValueError, match="t must have shape"):
        model(z, torch.rand(3), text)


def test_word_level_tokenizer_covers_the_grammar(model):
    vocab = set(world_vocabulary())
    unk = model.tokenizer.convert_tokens_to_ids(UNK)
    prompts = [scene_to_prompt(sample_scene(random.Random(i), held_out=None)) for i in range(200)]
    ids = model.tokenizer(prompts).input_ids
    assert all(unk not in row for row in ids)
    assert "," in vocab and "zero" in vocab and "</s>" in vocab
    assert model.tokenizer("a purple ball").input_ids.count(unk) == 1  # not a world word
    text = model.encode_text([PROMPT, ""])
    assert text.hidden.shape == (2, TINY.get("max_text_tokens", 32), 32)
    assert text.mask[1].sum() == 1  # the empty prompt is just </s>
    assert torch.all(text.hidden[~text.mask] == 0)
    with pytest.raises(ValueError, match="longer than max_text_tokens"):
        model.encode_text([" ".join(["ball"] * 40)])


def test_save_and_load_round_trip_gives_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"transformer", "vae", "text_encoder", "tokenizer", CONFIG_FILE}
    assert not [p for p in (tmp_path / "m").rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    loaded = load_model(tmp_path / "m").eval()
    assert type(loaded) is WorldVideoModel and loaded.cfg == model.cfg
    video, t = torch.rand(1, 3, 4, 16, 16) * 2 - 1, torch.tensor([0.3])

    @torch.no_grad()
    def outputs(m):
        z, text = m.encode(video), m.encode_text([PROMPT])
        v, feats = m(z, t, text, taps=(1,))
        return z, text.hidden, v, feats[1], m.decode(z)

    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert model.tokenizer(PROMPT).input_ids == loaded.tokenizer(PROMPT).input_ids
    # Same weights, but CPU kernels may round differently with the tensors at other memory alignments.
    assert all(torch.allclose(x, y, rtol=0, atol=1e-5) for x, y in zip(outputs(model), outputs(loaded)))
    with pytest.raises(FileNotFoundError, match="not a physalign model folder"):
        load_model(tmp_path)
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps({"class": "Nope"}))
    with pytest.raises(ValueError, match="'class' must be one of"):
        load_model(tmp_path / "m")


def test_sizes_and_trainable_parts_are_checked():
    with pytest.raises(ValueError, match=r"unknown keys \['layerz'\]; allowed: \['layers'"):
        WorldVideoModel.from_config({"layerz": 3})
    with pytest.raises(ValueError, match="head_dim must be even"):
        WorldModelConfig(head_dim=15)
    m = tiny()
    m.set_trainable(["vae"])
    assert all(p.requires_grad for p in m.vae.parameters())
    assert not any(p.requires_grad for p in m.transformer.parameters())
    assert not any(p.requires_grad for p in m.text_encoder.parameters())
    with pytest.raises(ValueError, match="trainable parts must be among"):
        m.set_trainable(["unet"])
    m.set_trainable(["vae.decoder"])  # a dotted path inside a part
    assert all(p.requires_grad for p in m.vae.decoder.parameters())
    assert not any(p.requires_grad for p in m.vae.encoder.parameters())
    with pytest.raises(ValueError, match="trainable part 'vae.nothing'"):
        m.set_trainable(["vae.nothing"])

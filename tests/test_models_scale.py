"""Wan 2.1 and CogVideoX behind VideoModel, on tiny configurations of the real diffusers/transformers classes.

Each "user folder" is written by the diffusers pipeline's own ``save_pretrained`` (model_index.json,
transformer/, vae/, text_encoder/, tokenizer/, scheduler/) and loaded back the way a user's download is:
``load_model(folder)``, as ``physalign train`` (model.init) and ``physalign sample`` do.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (CogVideoXDDIMScheduler, CogVideoXPipeline, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler,
                       WanPipeline)
from typer.testing import CliRunner

from physalign.cli import app
from physalign.models.cogvideox import (CogVideoXVideoModel, ddpm_timestep, flow_scale, velocity_from_v,
                                        videorepa_frames, videorepa_grid)
from physalign.models.interface import CONFIG_FILE, MODELS, load_model
from physalign.models.lora import LoraSpec, add_lora, has_lora, lora_disabled, merge_lora
from physalign.models.parts import empty_weights
from physalign.models.sampling import sample
from physalign.models.times import FlowTimes, ddpm_flow_times, shift_times
from physalign.models.world import WorldVideoModel
from physalign.train.methods.fm import noisy_velocity, sample_t
from physalign.models.wan import WanVideoModel
from physalign.objectives import flow_matching_loss, interpolate
from physalign.teacher.projector import Projector
from physalign.train.config import load_config
from physalign.train.methods import build_method

from _tiny_models import KINDS, OPTIONS, TEXT, VIDEO, tiny, user_folder

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "a small red rubber ball is dropped from high up under normal gravity, on a black background",
    "a large blue steel block slides fast to the left and hits a wall under low gravity, on a gray background",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("users")
    return {kind: user_folder(root, kind) for kind in KINDS}


@pytest.fixture(scope="module", params=KINDS)
def model(request, folders):
    return tiny(folders[request.param])


def inputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, *model.latent_shape(VIDEO), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    return x0, eps, torch.tensor([0.3, 0.8])


def velocity(model, seed=0):
    x0, eps, t = inputs(model, seed)
    with torch.no_grad():
        return model(interpolate(x0, eps, t), t, model.encode_text(PROMPTS))[0]


# -- loading a user's folder ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, cls, shape", [("wan", "WanVideoModel", (3, 81, 480, 832)),
                                              ("cogvideox", "CogVideoXVideoModel", (3, 49, 480, 720))])
def test_a_user_folder_loads_by_its_model_index_with_the_real_defaults(folders, kind, cls, shape):
    assert not (folders[kind] / CONFIG_FILE).exists()
    model = load_model(folders[kind])
    assert type(model).__name__ == cls and cls in MODELS
    assert model.video_shape == shape
    assert model.transformer.dtype == torch.bfloat16 and model.text_encoder.dtype == torch.bfloat16
    assert model.vae.dtype == torch.float32
    if kind == "wan":  # diffusers keeps WanTransformer3DModel._keep_in_fp32_modules in float32
        assert model.transformer.scale_shift_table.dtype == torch.float32


def test_a_config_sizes_become_the_folder_options(folders, tmp_path):
    model = load_model(folders["wan"], {**OPTIONS, "gradient_checkpointing": True, "vae_slicing": True})
    assert model.video_shape == (3, 9, 32, 48) and model.transformer.gradient_checkpointing and model.vae.use_slicing
    from physalign.models.world import WorldVideoModel

    WorldVideoModel.from_config(dict(layers=1, heads=2, head_dim=16, ffn_dim=32, text_dim=32, text_layers=1,
                                     vae_channels=[16, 32], frames=4, resolution=16)).save_pretrained(tmp_path / "w")
    with pytest.raises(ValueError, match="WorldVideoModel takes no options"):
        load_model(tmp_path / "w", {"frames": 9})


def test_from_config_builds_a_new_model_of_the_same_classes(folders, tmp_path):
    reference = tiny(folders["wan"])
    sizes = {"transformer": dict(reference.transformer.config), "vae": dict(reference.vae.config), "text_encoder": TEXT,
             "tokenizer": "world", **OPTIONS, "dtype": "bfloat16"}
    model = WanVideoModel.from_config(sizes)
    assert model.transformer.dtype == torch.bfloat16 and model.transformer.scale_shift_table.dtype == torch.float32
    assert model.latent_shape(VIDEO) == reference.latent_shape(VIDEO) and torch.isfinite(velocity(model)).all()
    model.save_pretrained(tmp_path / "new")
    assert type(load_model(tmp_path / "new")) is WanVideoModel
    with pytest.raises(ValueError, match="'tokenizer' .* is required"):
        CogVideoXVideoModel.from_config({})


def test_bad_folders_and_options_are_named(folders, tmp_path):
    with pytest.raises(ValueError, match="'_class_name' must be 'CogVideoXPipeline'"):
        CogVideoXVideoModel.from_pretrained(folders["wan"])
    with pytest.raises(ValueError, match="unknown keys \\['frame'\\]"):
        WanVideoModel.from_pretrained(folders["wan"], frame=9)
    with pytest.raises(ValueError, match="dtype must be one of"):
        WanVideoModel.from_pretrained(folders["wan"], dtype="fp8")
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ValueError, match="must be one of \\['CogVideoXPipeline', 'WanPipeline'\\]"):
        load_model(tmp_path)


# -- shapes: encode/decode, latent shape, token grid, taps -------------------------------------------------


def test_encode_decode_and_latent_normalisation(model):
    video = torch.rand(2, *VIDEO) * 2 - 1
    with torch.no_grad():
        z = model.encode(video)
        mu = model.vae.encode(video).latent_dist.mean
        assert z.shape == (2, *model.latent_shape(VIDEO)) == (2, 4, 3, 4, 6)  # 1 + (9 - 1)/4 frames, /8 space
        assert model.decode(z).shape == video.shape
    c = model.vae.config
    if isinstance(model, WanVideoModel):  # (mu - latents_mean) / latents_std, per channel, as WanPipeline
        mean, std = torch.tensor(c.latents_mean).view(1, 4, 1, 1, 1), torch.tensor(c.latents_std).view(1, 4, 1, 1, 1)
        assert torch.allclose(z, (mu - mean) / std, atol=1e-5)
    else:
        assert torch.allclose(z, mu * c.scaling_factor, atol=1e-5)
    with pytest.raises(ValueError, match="T = 1 \\+ 4k frames of H, W multiples of 8"):
        model.latent_shape((3, 8, 32, 48))


def test_token_grid_and_taps_agree_with_the_real_forward(model):
    x0, eps, t = inputs(model)
    grid = model.token_grid(model.latent_shape(VIDEO))
    assert grid == (3, 2, 3)  # patch 1x2x2 (Wan) or 2 (CogVideoX) over 3 x 4 x 6 latents
    x_t, text = interpolate(x0, eps, t), model.encode_text(PROMPTS)
    with torch.no_grad():
        v, feats = model(x_t, t, text, taps=(0, -1))
        plain, none = model(x_t, t, text)
    assert v.shape == x0.shape and v.dtype == torch.float32 and none == {}
    assert torch.equal(v, plain)  # taps only observe
    width = model.transformer.config.num_attention_heads * model.transformer.config.attention_head_dim
    assert set(feats) == {0, -1} and feats[0].shape == (2, *grid, width)
    assert all(not block._forward_hooks for block in model.backbone_blocks)
    assert len(model.backbone_blocks) == 2


def test_tapped_tokens_are_laid_out_frame_row_column(model):
    """A change of the input at one token's patch moves that token's block-0 features most."""
    x0, eps, t = inputs(model)
    x_t, text = interpolate(x0, eps, t), model.encode_text(PROMPTS)
    changed = x_t.clone()
    changed[:, :, 2, 2:4, 4:6] += 5.0  # latent frame 2, rows 2-3, columns 4-5: token (2, 1, 2)
    with torch.no_grad():
        a, b = model(x_t, t, text, taps=(0,))[1][0], model(changed, t, text, taps=(0,))[1][0]
    moved = (a - b).norm(dim=-1)[0]  # (F, H, W)
    assert np.unravel_index(moved.argmax().item(), moved.shape) == (2, 1, 2)


# -- conventions: each forward against the pipeline's own computation ----------------------------------------


def test_wan_forward_is_the_transformer_at_1000_t_and_padding_is_zeroed(folders):
    model = tiny(folders["wan"])
    x0, eps, t = inputs(model)
    text = model.encode_text(PROMPTS + [""])[:2]
    assert text.hidden.shape == (2, 32, 32) and not text.hidden[~text.mask].any()
    with torch.no_grad():
        v = model(interpolate(x0, eps, t), t, text)[0]
        direct = model.transformer(interpolate(x0, eps, t), timestep=t * 1000, encoder_hidden_states=text.hidden).sample
    assert torch.equal(v, direct)


def test_cogvideox_time_and_velocity_mapping_against_the_scheduler():
    """At each integer timestep k of the real scheduler: x_{t_k} / n is add_noise(x0, eps, k), s(t_k) = k, and
    the v target (get_velocity) maps to eps - x0."""
    sched = CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, snr_shift_scale=3.0)
    x0, eps = torch.randn(4, 4, 3, 4, 6, dtype=torch.float64), torch.randn(4, 4, 3, 4, 6, dtype=torch.float64)
    k = torch.tensor([0, 10, 500, 999])
    t = ddpm_flow_times(sched.alphas_cumprod)[k]
    assert torch.all(t[1:] > t[:-1]) and t[-1] == 1.0  # zero terminal SNR: timestep 999 is pure noise
    assert torch.allclose(ddpm_timestep(t, sched.alphas_cumprod), k.float(), atol=1e-3)
    x_t = interpolate(x0, eps, t.double())
    n = flow_scale(t.double()).view(-1, 1, 1, 1, 1)
    assert torch.allclose(x_t / n, sched.add_noise(x0, eps, k), atol=1e-5)
    u = velocity_from_v(sched.get_velocity(x0, eps, k), x_t, t.double())
    assert torch.allclose(u, eps - x0, atol=1e-5)
    between = ddpm_timestep(torch.tensor([0.0, 0.5 * (t[1] + t[2]).item()]), sched.alphas_cumprod)
    assert between[0] == 0 and 10 < between[1] < 500  # below the least noise: timestep 0; else interpolated


@pytest.mark.parametrize("shift", [3.0, 5.0])
def test_the_flow_shift_is_the_schedulers(shift):
    """Wan's times against diffusers': the training sigmas of FlowMatchEulerDiscreteScheduler(shift) are the
    shift of evenly spaced u; the sampling grid is within 1/1000 (in u) of UniPC's flow sigmas (Wan's own
    scheduler, which stops at u = 0.999) and has as many steps above t = 0.9 (13 at s = 3, 18 at s = 5, 5 unshifted)."""
    train = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    assert torch.allclose(shift_times(torch.linspace(1.0, 1e-3, 1000, dtype=torch.float64), shift), train.sigmas[:1000].double(), atol=1e-6)
    unipc = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    unipc.set_timesteps(50)
    grid = FlowTimes(shift, "uniform").grid(50)
    assert grid[0] == 1.0 and grid[-1] == 0.0 and torch.all(grid[1:] < grid[:-1])
    assert torch.allclose(grid, unipc.sigmas.float(), atol=shift * 1e-3)
    assert int((grid[:-1] > 0.9).sum()) == int((unipc.sigmas[:-1] > 0.9).sum()) == {3.0: 13, 5.0: 18}[shift]
    assert int((FlowTimes().grid(50)[:-1] > 0.9).sum()) == 5
    draws = FlowTimes(shift, "uniform").sample(200_000, torch.Generator().manual_seed(0))
    expected = 1 - 0.8 / (shift - (shift - 1) * 0.8)  # P(shift(u) > 0.8) for uniform u
    assert abs(float((draws > 0.8).float().mean()) - expected) < 0.005  # 43% at s = 3, 56% at s = 5


def test_wan_trains_and_samples_on_its_schedulers_shift(folders):
    model = tiny(folders["wan"])
    assert model.times == FlowTimes(3.0, "uniform")  # the folder's UniPC flow_shift
    assert WanVideoModel.from_pretrained(folders["wan"], flow_shift=5.0).times.shift == 5.0  # the option overrides
    x0 = torch.randn(2, *model.latent_shape(model.video_shape))
    torch.manual_seed(3)
    _, _, t, _ = noisy_velocity(model, x0, PROMPTS[:2], 0.0, "model")
    torch.manual_seed(3)
    torch.randn_like(x0)  # noisy_velocity draws eps first
    assert torch.equal(t, shift_times(torch.rand(2), 3.0))
    assert torch.equal(sample_t(4, "logit_normal", torch.Generator().manual_seed(1), model.times),
                       shift_times(torch.sigmoid(torch.randn(4, generator=torch.Generator().manual_seed(1))), 3.0))


def test_cogvideox_trains_on_uniform_timesteps_and_samples_on_its_schedulers():
    """CogVideoX's times are its scheduler's: draws at t_k of k uniform over 0..999 (10% above 900, 10% below
    100; a logit-normal t would give none above 900 and 31% below 100), and the grid at the scheduler's own
    inference timesteps, which the model's forward then runs at exactly."""
    sched = CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True, snr_shift_scale=3.0,
                                   timestep_spacing="trailing")
    model = CogVideoXVideoModel.__new__(CogVideoXVideoModel)  # the times need the scheduler alone
    object.__setattr__(model, "scheduler", sched)
    grid = model.times.grid(50)
    sched.set_timesteps(50)
    assert len(grid) == 51 and grid[0] == 1.0 and grid[-1] == 0.0
    assert torch.allclose(ddpm_timestep(grid[:-1], sched.alphas_cumprod), sched.timesteps.float(), atol=1e-3)
    k = ddpm_timestep(model.times.sample(100_000, torch.Generator().manual_seed(0)), sched.alphas_cumprod)
    assert torch.allclose(k, k.round(), atol=1e-3)  # integer timesteps
    assert abs(float((k > 899.5).float().mean()) - 0.1) < 0.005 and abs(float((k < 99.5).float().mean()) - 0.1) < 0.005


def test_the_world_model_keeps_its_times():
    """Unshifted logit-normal draws and evenly spaced steps, as the shipped base was trained and sampled."""
    assert WorldVideoModel.times == FlowTimes(1.0, "logit_normal")
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(sample_t(6, "model", g(), WorldVideoModel.times), torch.sigmoid(torch.randn(6, generator=g())))
    assert torch.equal(WorldVideoModel.times.grid(30), torch.linspace(1.0, 0.0, 31))


@pytest.mark.parametrize("kind", ["cogvideox", "cogvideox-rotary"])
def test_cogvideox_forward_matches_the_pipeline_rotary_text_and_timestep(folders, kind):
    model = tiny(folders[kind])
    pipe = CogVideoXPipeline(tokenizer=model.tokenizer, text_encoder=model.text_encoder, vae=model.vae,
                             transformer=model.transformer, scheduler=model.scheduler)
    with torch.no_grad():
        text = model.encode_text(PROMPTS)
        expected = pipe._get_t5_prompt_embeds(PROMPTS, max_sequence_length=32, device=torch.device("cpu"))
    assert torch.equal(text.hidden, expected)  # 226 (here 32) tokens, no mask, padding kept
    rope = model.rotary((3, 2, 3), "cpu")
    if kind == "cogvideox":
        assert rope is None  # sin-cos positions (2B)
    else:
        for ours, theirs in zip(rope, pipe._prepare_rotary_positional_embeddings(32, 48, 3, torch.device("cpu"))):
            assert torch.equal(ours, theirs)
    x0, eps, _ = inputs(model)
    k = torch.tensor([200, 700])
    t = ddpm_flow_times(model.scheduler.alphas_cumprod)[k]
    x_t = interpolate(x0, eps, t)
    with torch.no_grad():
        u = model(x_t, t, text)[0]
        z = model.scheduler.add_noise(x0, eps, k).transpose(1, 2)  # (B, F, C, H, W)
        v = model.transformer(z, encoder_hidden_states=text.hidden, timestep=k, image_rotary_emb=rope).sample
    assert torch.allclose(u, velocity_from_v(v.transpose(1, 2), x_t, t), atol=1e-4)


# -- training, persistence, LoRA, sampling ----------------------------------------------------------------


def fm_step(model):
    """L_FM plus a term on block 1's tapped features (as the alignment methods add); returns loss and grads."""
    model.train().set_trainable(["transformer"])
    x0, eps, t = inputs(model)
    v, feats = model(interpolate(x0, eps, t), t, model.encode_text(PROMPTS), taps=(1,))
    loss = flow_matching_loss(v, x0, eps) + feats[1].pow(2).mean()
    loss.backward()
    return loss, [p.grad for p in model.transformer.parameters()]


@pytest.mark.parametrize("kind", ["wan", "cogvideox-rotary"])
def test_a_flow_matching_step_trains_the_transformer_only_with_or_without_checkpointing(folders, kind):
    model = tiny(folders[kind])
    loss, grads = fm_step(model)
    assert torch.isfinite(loss) and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is None for p in [*model.vae.parameters(), *model.text_encoder.parameters()])
    loss_ckpt, grads_ckpt = fm_step(tiny(folders[kind], gradient_checkpointing=True))  # blocks recomputed in backward
    assert torch.allclose(loss_ckpt, loss) and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, grads_ckpt))


def test_trainable_parts_get_float32_master_weights_under_bfloat16_autocast(folders):
    model = tiny(folders["wan"], dtype="bfloat16", autocast="bfloat16")
    model.set_trainable(["transformer"])
    assert model.transformer.dtype == torch.float32 and model.text_encoder.dtype == torch.bfloat16
    x0, eps, t = inputs(model)
    v, feats = model(interpolate(x0, eps, t), t, model.encode_text(PROMPTS), taps=(1,))
    assert v.dtype == feats[1].dtype == torch.float32 and torch.isfinite(v).all()


def test_frozen_parts_stay_in_eval_mode_during_training(folders):
    m = tiny(folders["wan"])
    m.text_encoder.config.dropout_rate = 0.5  # a frozen encoder with dropout: in train mode its output is random
    for module in m.text_encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.5
    m.set_trainable(["transformer"])
    m.train()
    assert m.transformer.training and not m.text_encoder.training and not m.vae.training
    first, second = m.encode_text(PROMPTS), m.encode_text(PROMPTS)
    assert torch.equal(first.hidden, second.hidden)  # no dropout in the frozen encoder
    m.set_trainable(["transformer", "text_encoder"])
    m.train()
    assert m.text_encoder.training and not torch.equal(m.encode_text(PROMPTS).hidden, first.hidden)  # trained: dropout on
    m.eval()
    assert not m.transformer.training and not m.text_encoder.training


def test_save_pretrained_round_trip_is_exact_and_stays_a_diffusers_folder(model, tmp_path):
    before, video = velocity(model), torch.rand(1, *VIDEO) * 2 - 1
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert config["class"] == type(model).__name__ and config["frames"] == 9
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.video_shape == model.video_shape
    assert torch.equal(velocity(loaded), before)
    with torch.no_grad():
        assert torch.equal(loaded.encode(video), model.encode(video))
    assert loaded.latent_fingerprint() == model.latent_fingerprint()
    pipeline = WanPipeline if isinstance(model, WanVideoModel) else CogVideoXPipeline
    assert type(pipeline.from_pretrained(tmp_path / "m").transformer) is type(model.transformer)


def test_lora_add_disable_save_load_merge(folders, tmp_path):
    for kind in ("wan", "cogvideox"):
        model = tiny(folders[kind])
        base = velocity(model)
        add_lora(model.backbone, LoraSpec(rank=4, alpha=4))
        assert all("lora_" in n for n, p in model.backbone.named_parameters() if p.requires_grad)
        with torch.no_grad():  # B starts at zero; move it so the checks can fail
            for name, p in model.backbone.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2)
        adapted = velocity(model)
        assert not torch.allclose(adapted, base, atol=1e-4)
        with lora_disabled(model.backbone):
            assert torch.allclose(velocity(model), base, atol=1e-6)
        model.save_pretrained(tmp_path / kind)
        loaded = load_model(tmp_path / kind)
        assert has_lora(loaded.backbone) and torch.allclose(velocity(loaded), adapted, atol=1e-6)
        merge_lora(loaded.backbone)
        assert not has_lora(loaded.backbone) and torch.allclose(velocity(loaded), adapted, atol=1e-5)


def test_lora_on_a_bfloat16_backbone_trains_float32_adapters(folders):
    model = tiny(folders["wan"], dtype="bfloat16")
    add_lora(model.backbone, LoraSpec(rank=4, alpha=4))
    trainable = [p for p in model.backbone.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert torch.isfinite(velocity(model)).all()


def test_the_sampler_gives_videos_of_the_model_shape(model):
    videos = sample(model, PROMPTS, steps=2, guidance=2.0, seed=0, batch_size=1, progress=False)
    assert videos.shape == (2, 9, 32, 48, 3) and videos.dtype == np.uint8


@pytest.mark.parametrize("kind", ["wan", "cogvideox-rotary"])
def test_the_sample_command_reads_a_saved_folder(folders, kind, tmp_path):
    tiny(folders[kind]).save_pretrained(tmp_path / "m")
    result = CliRunner().invoke(app, ["sample", "--checkpoint", str(tmp_path / "m"), "--prompt", PROMPTS[0],
                                      "--out", str(tmp_path / "s"), "--steps", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s" / "videos" / "sample_00000_0.mp4").is_file()


# -- CogVideoX's first latent frame and a teacher's grid (VideoREPA) ----------------------------------------


def test_videorepa_mapping_reaches_the_teacher_grid():
    assert videorepa_grid((13, 30, 45)) == (24, 30, 45)  # CogVideoX-2B at 49 x 480 x 720
    feats = torch.randn(1, 13, 30, 45, 8)
    mapped = videorepa_frames(feats)
    assert mapped.shape == (1, 24, 30, 45, 8)
    projector = Projector(8, 6, videorepa_grid((13, 30, 45)), (24, 10, 15), hidden_dim=8)  # VideoMAEv2-B of 48 frames
    assert projector(mapped).shape == (1, 24, 10, 15, 6)
    assert projector.conv.stride == (1, 3, 3) and projector.conv.kernel_size == (3, 3, 3)  # VideoREPA's k = s = 3
    changed = feats.clone()
    changed[:, 0] = 1e3  # latent frame 0 is dropped
    assert torch.equal(videorepa_frames(changed), mapped)
    steady = torch.ones(1, 5, 2, 2, 3) * torch.arange(5.0).view(1, 5, 1, 1, 1)
    frames = videorepa_frames(steady)[0, :, 0, 0, 0]  # linear in time between latent frames 1..4
    assert torch.allclose(frames, torch.tensor([1.0, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4.0]))
    with pytest.raises(ValueError, match="at least 2 frames"):
        videorepa_grid((1, 30, 45))


def test_cogvideox_taps_map_to_teacher_frames(folders):
    model = tiny(folders["cogvideox"])
    x0, eps, t = inputs(model)
    with torch.no_grad():
        feats = model(interpolate(x0, eps, t), t, model.encode_text(PROMPTS), taps=(1,))[1][1]
    assert feats.shape[1:4] == (3, 2, 3) and model.teacher_frames(feats).shape[1:4] == videorepa_grid((3, 2, 3))
    wan = tiny(folders["wan"])
    assert wan.teacher_frames(feats) is feats  # other models: unchanged


# -- the scale configs and their memory estimates --------------------------------------------------------


SCALE_CONFIGS = sorted((ROOT / "configs" / "scale").glob("*.yaml"))


def test_every_scale_config_loads_and_builds_its_method():
    assert len(SCALE_CONFIGS) >= 5
    options = {"WanVideoModel": WanVideoModel.options_class, "CogVideoXVideoModel": CogVideoXVideoModel.options_class}
    for path in SCALE_CONFIGS:
        cfg = load_config(path)
        assert cfg.model.kind in MODELS and cfg.model.init.startswith("/models/"), path
        options[cfg.model.kind].from_dict(cfg.model.sizes, str(path))
        build_method(cfg.train.method, cfg.method)


def test_memory_estimates_follow_from_the_shapes():
    spec = importlib.util.spec_from_file_location("estimate_memory", ROOT / "scripts" / "estimate_memory.py")
    est = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(est)
    counts = est.parameter_counts("WanVideoModel", est.PRESETS["Wan2.1-T2V-1.3B"])
    assert 1.3e9 < counts["transformer"] < 1.5e9 and 5.0e9 < counts["text_encoder"] < 6.0e9
    for path in SCALE_CONFIGS:
        report = est.estimate(load_config(path))
        assert report["total_gb"]["checkpointing"] < report["total_gb"]["no checkpointing"], path
    # FSDP over 4: the transformer's weights, gradients and moments quartered, two whole fp32 blocks added,
    # DiReCT's frozen copy whole; activations of a quarter of the batch
    cfg = load_config(ROOT / "configs" / "scale" / "tsa_cogvideox_2b.yaml")
    assert cfg.train.batch_size_per_process == 4 and est.estimate(cfg, fsdp=3)["batch"] == 4  # per process: any count
    cfg.train.batch_size, cfg.train.batch_size_per_process = 8, 0  # a global batch of 8 instead
    one, four = est.estimate(cfg), est.estimate(cfg, fsdp=4)
    assert cfg.model.trainable == ["transformer"] and four["batch"] == 2
    assert four["gradients"] == pytest.approx(one["gradients"] / 4) and four["adamw"] == pytest.approx(one["adamw"] / 4)
    block = 4 * one["parameters"]["transformer"] / 30 / 1e9
    assert four["extras"] == pytest.approx(one["extras"] + 2 * block)
    assert four["weights"] == pytest.approx(one["weights"] - 0.75 * 6 * one["parameters"]["transformer"] / 1e9)
    with pytest.raises(ValueError, match="divide train.batch_size 8"):
        est.estimate(cfg, fsdp=3)
    # ZeRO-2 over 4: the moments quartered, gradients a quarter plus one reduce bucket, the weights whole plus a
    # quarter of the float32 master copy
    zero = est.estimate(cfg, zero2=4)
    trained = one["trained"] / 1e9
    assert zero["batch"] == 2 and zero["adamw"] == pytest.approx(one["adamw"] / 4)
    assert zero["gradients"] == pytest.approx(one["gradients"] / 4 + 4 * min(5e8 / 1e9, trained))
    assert zero["weights"] == pytest.approx(one["weights"] + trained)
    with pytest.raises(ValueError, match="three launches"):
        est.estimate(cfg, fsdp=2, zero2=2)
    # EMA, the averaging bucket and a checkpoint save (the full fine-tune of the transformer, no LoRA)
    P = one["parameters"]["transformer"] / 1e9
    assert one["ema"] == 0 and one["averaging"] == 0 and one["checkpoint gather"] == 0
    assert est.estimate(cfg, ddp=2)["averaging"] == pytest.approx(25 * 2**20 / 1e9)  # one bucket, not 3x gradients
    # FSDP2: one whole tensor at a time on the GPU (at most a float32 block), the whole state in the writer's RAM
    assert four["checkpoint gather"] == pytest.approx(4 * P / 30) and four["checkpoint host"] == pytest.approx(12 * P)
    assert zero["checkpoint gather"] == pytest.approx(4 * trained) and zero["checkpoint host"] == pytest.approx(8 * trained)
    cfg.optim.ema_decay = 0.999
    ema_one, ema_four = est.estimate(cfg), est.estimate(cfg, fsdp=4)
    assert ema_one["ema"] == pytest.approx(4 * trained) and ema_four["ema"] == pytest.approx(trained)  # sharded as AdamW
    assert ema_four["checkpoint host"] == pytest.approx(16 * P)
    assert ema_four["at a checkpoint_gb"] == pytest.approx(sum(ema_four[k] for k in est.HELD) + ema_four["checkpoint gather"])
    small = dict(patch_size=[1, 2, 2], num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                 text_dim=32, freq_dim=32, ffn_dim=64, num_layers=1)
    a = est.measure_block_bytes("WanVideoModel", small)
    wider = est.measure_block_bytes("WanVideoModel", {**small, "num_attention_heads": 4, "ffn_dim": 128})
    assert 32 * 2 * 10 < a < wider  # at least ten bf16 vectors of width D per token, more for a wider block


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_build_has_the_loaded_structure_without_reading_weights(folders, kind, tmp_path, monkeypatch):
    """Inside empty_weights a folder (here with a LoRA adapter beside its transformer) becomes the same module
    tree, names, shapes, dtypes and train/eval modes, on the meta device, and no weight file is opened."""
    loaded = tiny(folders[kind])
    add_lora(loaded.transformer, LoraSpec(rank=2))
    loaded.save_pretrained(tmp_path / kind)
    whole = load_model(tmp_path / kind)
    assert has_lora(whole.transformer)
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("a weight file was read"))
    monkeypatch.setattr(safetensors, "safe_open", lambda *a, **k: pytest.fail("a weight file was read"))
    with empty_weights():
        empty = load_model(tmp_path / kind)
    layout = lambda m: {n: (tuple(t.shape), t.dtype) for n, t in list(m.state_dict().items())}  # noqa: E731
    assert layout(empty) == layout(whole)
    assert {t.device.type for t in empty.state_dict().values()} == {"meta"}
    assert [m.training for m in empty.modules()] == [m.training for m in whole.modules()]

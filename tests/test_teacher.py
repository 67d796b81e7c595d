import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import VideoMAEForPreTraining, VideoMAEModel
from typer.testing import CliRunner

from physalign.cli import app
from physalign.models.interface import to_model_range
from physalign.teacher import cache as cache_mod
from physalign.teacher.cache import cache_teacher_features
from physalign.teacher.evaluate import object_tokens, patch_targets, probe_accuracy, reconstruction_figures
from physalign.teacher.model import (load_teacher, save_teacher, teacher_config, teacher_features, teacher_grid,
                                     to_teacher_input)
from physalign.teacher.pretrain import TeacherConfig, load_teacher_config, mask_tokens, pretrain_teacher, step_generator
from physalign.teacher.projector import Projector
from physalign.train.config import ConfigError
from physalign.train.loop import TrainingError
from physalign.video import write_mp4
from physalign.world import spec
from physalign.world.dataset import read_videos
from physalign.world.scene import sample_scene, scene_to_prompt

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# 4 frames of 16 x 16, tubelet 2, patch 4: a (2, 4, 4) token grid
TINY = dict(image_size=16, num_frames=4, patch_size=4, tubelet_size=2, hidden_size=32, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2, decoder_intermediate_size=32)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_pretraining(seed: int = 0, **sizes) -> VideoMAEForPreTraining:
    torch.manual_seed(seed)
    return VideoMAEForPreTraining(teacher_config({**TINY, **sizes})).eval()


def write_world(root: Path, n: int = 8) -> Path:
    """A manifest of n 4-frame 16x16 clips: a square of the scene's colour moving right on its background."""
    lines = []
    for i in range(n):
        scene = sample_scene(random.Random(i))
        video = np.empty((4, 16, 16, 3), np.uint8)
        video[:] = spec.BACKGROUNDS[scene.background]
        video[:, 12:] = spec.STRUCTURE_COLOR
        for f in range(4):
            video[f, 3 + i % 4 : 7 + i % 4, 2 + 2 * f : 6 + 2 * f] = spec.OBJECT_COLORS[scene.color]
        write_mp4(root / f"videos/{i}.mp4", video)
        lines.append({"video": f"videos/{i}.mp4", "prompt": scene_to_prompt(scene), "scene": scene.to_dict(),
                      "phenomena": [], "split": "train"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("world"))


def tiny_cfg(world: Path, **more) -> TeacherConfig:
    values = dict(manifest=str(world), sizes=TINY, mask_ratio=0.75, steps=4, batch_size=4, lr=3e-3, warmup_steps=2,
                  save_every=2, log_every=1)
    return TeacherConfig(**{**values, **more})


# -- model, features, grid ---------------------------------------------------------------------------------


def test_save_load_round_trip_is_safetensors_encoder_only(tmp_path):
    model = tiny_pretraining()
    save_teacher(model, tmp_path / "t")
    files = sorted(p.name for p in (tmp_path / "t").iterdir())
    assert files == ["config.json", "model.safetensors"]
    with safe_open(str(tmp_path / "t/model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if "decoder" in k]
    teacher = load_teacher(tmp_path / "t")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    video = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    torch.testing.assert_close(teacher_features(teacher, video), teacher_features(model.videomae, video))


def test_load_teacher_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_teacher(tmp_path / "nowhere")
    teacher_config(TINY).save_pretrained(tmp_path / "pickled")
    (tmp_path / "pickled/pytorch_model.bin").write_bytes(b"")  # refused before anything is read
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'pickled'}: no model.safetensors"):
        load_teacher(tmp_path / "pickled")


@pytest.mark.parametrize("sizes, grid", [({}, (2, 4, 4)), (dict(patch_size=2), (2, 8, 8)),
                                         (dict(tubelet_size=1), (4, 4, 4)), (dict(num_frames=8), (4, 4, 4))])
def test_grid_is_derived_from_the_config(sizes, grid):
    model = VideoMAEModel(teacher_config({**TINY, **sizes})).eval()
    frames = model.config.num_frames
    assert teacher_grid(model.config) == grid
    assert teacher_features(model, torch.zeros(3, 3, frames, 16, 16)).shape == (3, *grid, 32)


def test_features_are_the_layer_tokens_in_grid_order():
    model = tiny_pretraining().videomae
    video = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    last = model(to_teacher_input(video, model.config)).last_hidden_state  # (B, N, D)
    feats = teacher_features(model, video, layer=-1)
    torch.testing.assert_close(feats.reshape(2, -1, 32), last)
    assert not torch.allclose(teacher_features(model, video, layer=0), feats)
    # token (f, h, w) sees the tubelet at frames 2f..2f+1 and pixels 4h.., 4w..: change one and only it moves
    probe = video.clone()
    probe[:, :, 2:4, 12:16, 0:4] = 1.0
    changed = (teacher_features(model, probe, layer=0) - teacher_features(model, video, layer=0)).abs().amax((0, 4))
    assert changed[1, 3, 0] > 100 * changed.flatten().topk(2).values[1]  # the rest move only through attention


def test_normalisation_is_imagenet_on_unit_pixels():
    video = torch.zeros(1, 3, 4, 16, 16)  # mid grey in [-1, 1]
    pixels = to_teacher_input(video, teacher_config(TINY))
    assert pixels.shape == (1, 4, 3, 16, 16)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(pixels[0, 0, :, 0, 0], expected)


@pytest.mark.parametrize("shape", [(2, 16, 16, 4, 3), (2, 3, 8, 16, 16), (3, 4, 16, 16)])
def test_wrong_video_shape_is_refused(shape):
    model = tiny_pretraining().videomae
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\) = \(B, 3, 4, 16, 16\)"):
        teacher_features(model, torch.zeros(shape))
    with pytest.raises(IndexError, match="out of range"):
        teacher_features(model, torch.zeros(1, 3, 4, 16, 16), layer=2)


# -- pre-training ----------------------------------------------------------------------------------------


def test_masks_hide_the_ratio_tube_across_frames():
    tube = mask_tokens((2, 4, 4), 5, 0.75, "tube", step_generator(0, 3))
    assert tube.shape == (5, 32) and (tube.sum(1) == 24).all()
    grid = tube.reshape(5, 2, 16)
    assert (grid[:, 0] == grid[:, 1]).all()  # the same positions in every frame
    loose = mask_tokens((2, 4, 4), 5, 0.9, "random", step_generator(0, 3))
    assert (loose.sum(1) == 29).all()
    assert torch.equal(tube, mask_tokens((2, 4, 4), 5, 0.75, "tube", step_generator(0, 3)))
    assert not torch.equal(tube, mask_tokens((2, 4, 4), 5, 0.75, "tube", step_generator(0, 4)))


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_patch_targets_are_videomaes_own_targets(norm_pix_loss):
    model = tiny_pretraining(norm_pix_loss=norm_pix_loss)
    video = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    mask = mask_tokens((2, 4, 4), 2, 0.75, "tube", step_generator(0, 0))
    out = model(to_teacher_input(video, model.config), bool_masked_pos=mask)
    targets = patch_targets(video, model.config)[mask].reshape(2, -1, 2 * 4 * 4 * 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits, targets), rtol=1e-4, atol=1e-6)


def test_pretraining_lowers_the_loss_and_exports(world, tmp_path):
    # raw-pixel targets: the shipped per-patch normalised ones learn too slowly for 40 steps on 8 videos
    cfg = tiny_cfg(world, sizes={**TINY, "norm_pix_loss": False}, steps=40, save_every=40, lr=1e-2, warmup_steps=5)
    out = pretrain_teacher(cfg, tmp_path / "run", tmp_path / "teacher", progress=False, command="physalign x")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    record = json.loads((out / "teacher.json").read_text())
    assert record["videos"] == 8 and record["steps"] == 40 and record["command"] == "physalign x"
    assert load_teacher_config(out / "teacher.yaml") == cfg
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "teacher.json", "teacher.yaml"]
    videos, _ = read_videos(world, [json.loads(line) for line in world.read_text().splitlines()])
    full = VideoMAEForPreTraining.from_pretrained(tmp_path / "run/checkpoints/step_000040/model")
    figures = reconstruction_figures(full, videos, 0.75, "tube")
    assert figures["all"]["teacher"] < figures["all"]["visible_mean"] and "object_tokens" not in figures


def test_object_tokens_are_where_the_square_is(world):
    rows = [json.loads(line) for line in world.read_text().splitlines()]
    videos, _ = read_videos(world, rows)
    flags = object_tokens(videos, rows, teacher_config(TINY)).reshape(8, 2, 4, 4)
    # video 0: rows 3..6 (token rows 0-1); columns 2..7 in frames 0-1 (token columns 0-1), 6..11 in frames 2-3 (1-2)
    assert flags[0, 0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert flags[0, 1].nonzero().tolist() == [[0, 1], [0, 2], [1, 1], [1, 2]]
    model = tiny_pretraining()
    figures = reconstruction_figures(model, videos, 0.75, "tube", objects=object_tokens(videos, rows, model.config))
    assert 0 < figures["object_share"] < 1 and set(figures["object_tokens"]) == set(figures["all"])


def test_resume_continues_exactly(world, tmp_path):
    straight = pretrain_teacher(tiny_cfg(world), tmp_path / "a", tmp_path / "ta", progress=False)
    pretrain_teacher(tiny_cfg(world, steps=2), tmp_path / "b", tmp_path / "tb", progress=False)
    with pytest.raises(TrainingError, match="already holds a run"):
        pretrain_teacher(tiny_cfg(world), tmp_path / "b", tmp_path / "tb", progress=False)
    resumed = pretrain_teacher(tiny_cfg(world), tmp_path / "b", tmp_path / "tb", resume=True, progress=False)
    a, b = load_teacher(straight).state_dict(), load_teacher(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line)["step"] for line in (tmp_path / "b/log.jsonl").read_text().splitlines()]
    assert log == [0, 1, 2, 3]


def test_videos_of_another_shape_are_refused(world, tmp_path):
    with pytest.raises(TrainingError, match=r"videos are \(4, 16, 16, 3\).*reads \(16, 32, 32, 3\)"):
        pretrain_teacher(tiny_cfg(world, sizes={}), tmp_path / "run", tmp_path / "t", progress=False)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'mask'"):
        load_teacher_config(None, ["mask=0.5"])
    with pytest.raises(ConfigError, match="masking must be one of"):
        load_teacher_config(None, ["masking=block"])
    with pytest.raises(ConfigError, match="steps must be int"):
        load_teacher_config(None, ["steps=many"])
    with pytest.raises(ConfigError, match=str(tmp_path / "none.yaml")):
        load_teacher_config(tmp_path / "none.yaml")
    with pytest.raises(ValueError, match="unknown VideoMAEConfig fields"):
        teacher_config({"hidden": 3})


def test_cli_trains_and_names_a_missing_manifest(world, tmp_path):
    runner = CliRunner()
    args = ["train-teacher", "--manifest", str(world), "--out", str(tmp_path / "t"), "--run", str(tmp_path / "r"),
            "--steps", "2", "--config", str(CONFIGS / "teacher.yaml"), "--set", f"sizes={json.dumps(TINY)}", "--set", "batch_size=4", "--set", "mask_ratio=0.75"]
    result = runner.invoke(app, [*args, "--probe-manifest", str(world)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t/model.safetensors").is_file()
    figures = json.loads((tmp_path / "t/teacher.json").read_text())["evaluation"]
    assert set(figures["reconstruction"]["all"]) == {"teacher", "dataset_mean", "visible_mean"}
    result = runner.invoke(app, ["train-teacher", "--evaluate-only", "--out", str(tmp_path / "t"), "--run",
                                 str(tmp_path / "r"), "--probe-manifest", str(world)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t/teacher.json").read_text())["steps"] == 2
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2/config.yaml").write_text((tmp_path / "r/config.yaml").read_text())
    result = runner.invoke(app, ["train-teacher", "--evaluate-only", "--out", str(tmp_path / "t"), "--run",
                                 str(tmp_path / "r2"), "--probe-manifest", str(world)])
    assert result.exit_code == 1 and f"{tmp_path / 'r2'}: no checkpoints/latest" in result.output
    assert set(figures["probe"]["kinematics"]) == {"majority", "pixels", "teacher/layer0", "teacher/layer1",
                                                   "random_init/layer0", "random_init/layer1"}
    result = runner.invoke(app, [*args[:2], str(tmp_path / "missing.jsonl"), *args[3:6], str(tmp_path / "r3"), *args[7:]])
    assert result.exit_code == 1 and f"{tmp_path / 'missing.jsonl'}: no such manifest file" in result.output


# -- feature cache ---------------------------------------------------------------------------------------


def test_cache_miss_hit_and_alignment(world, tmp_path, monkeypatch):
    teacher = tiny_pretraining().videomae
    first = cache_teacher_features(teacher, world, tmp_path, layer=1, progress=False)
    files = list(tmp_path.glob("teacher-*.safetensors"))
    assert len(files) == 1 and first.features.dtype == torch.float16
    assert [r["video"] for r in first.rows] == [f"videos/{i}.mp4" for i in range(8)]
    videos, _ = read_videos(world, first.rows)
    torch.testing.assert_close(first.features.float(), teacher_features(teacher, to_model_range(videos), 1),
                               rtol=2e-3, atol=2e-3)
    monkeypatch.setattr(cache_mod, "read_all_videos", lambda *a: pytest.fail("a cache hit must not read videos"))
    again = cache_teacher_features(teacher, world, tmp_path, layer=1 - 2, progress=False)  # -1 is layer 1 too
    assert torch.equal(again.features, first.features)
    picked = first.select([first.rows[5], first.rows[2]])
    assert torch.equal(picked, first.features[[5, 2]].float())
    with pytest.raises(KeyError, match="videos/none.mp4"):
        first.select([{"video": "videos/none.mp4"}])


def test_cache_rebuilds_when_stale_or_damaged(world, tmp_path):
    teacher = tiny_pretraining().videomae
    rows = [json.loads(line) for line in world.read_text().splitlines()]
    base = cache_teacher_features(teacher, world, tmp_path, rows=rows, progress=False)
    fewer = cache_teacher_features(teacher, world, tmp_path, rows=rows[::-1][:5], progress=False)  # other rows
    assert torch.equal(fewer.features, base.features[[7, 6, 5, 4, 3]])
    other_layer = cache_teacher_features(teacher, world, tmp_path, layer=0, rows=rows, progress=False)
    assert not torch.equal(other_layer.features, base.features)
    retrained = tiny_pretraining(seed=1).videomae
    assert not torch.equal(cache_teacher_features(retrained, world, tmp_path, rows=rows, progress=False).features,
                           base.features)
    assert len(list(tmp_path.glob("teacher-*.safetensors"))) == 4
    path = tmp_path / f"teacher-{cache_mod.feature_key(teacher, -1, rows)[:16]}.safetensors"
    path.write_bytes(path.read_bytes()[:100])  # a truncated file is rebuilt, not read
    assert torch.equal(cache_teacher_features(teacher, world, tmp_path, rows=rows, progress=False).features, base.features)
    assert not list(tmp_path.glob("*.safetensors.tmp*")) and not list(tmp_path.glob("tmp*"))


def test_cache_refuses_unreadable_videos(world, tmp_path):
    rows = [json.loads(line) for line in world.read_text().splitlines()]
    with pytest.raises(ValueError, match="videos/gone.mp4"):
        cache_teacher_features(tiny_pretraining().videomae, world, tmp_path, rows=rows[:2] + [{**rows[0], "video": "videos/gone.mp4"}],
                               progress=False)


# -- projector -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("student, teacher, conv_grid", [((16, 4, 4), (8, 8, 8), (8, 4, 4)),
                                                         ((8, 8, 8), (8, 8, 8), (8, 8, 8)),
                                                         ((12, 30, 45), (12, 10, 15), (12, 10, 15)),
                                                         ((13, 6, 6), (8, 4, 4), (13, 6, 6))])
def test_projector_maps_the_student_grid_to_the_teachers(student, teacher, conv_grid):
    proj = Projector(24, 16, student, teacher, hidden_dim=32)
    x = torch.randn(2, *student, 24, requires_grad=True)
    y = proj(x)
    assert y.shape == (2, *teacher, 16) and proj.conv_grid == conv_grid
    y.square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in proj.parameters())
    assert len(proj.mlp) == 5 and isinstance(proj.mlp[1], torch.nn.SiLU)


def test_projector_downsamples_by_strided_conv_and_refuses_wrong_shapes():
    proj = Projector(8, 8, (16, 4, 4), (8, 8, 8), hidden_dim=16)
    assert proj.conv.stride == (2, 1, 1) and proj.conv.kernel_size == (2, 3, 3)
    with pytest.raises(ValueError, match=r"\(B, F, H, W, D\) = \(B, 16, 4, 4, 8\). Got \(2, 4, 4, 16, 8\)"):
        proj(torch.zeros(2, 4, 4, 16, 8))
    with pytest.raises(ValueError, match="grids must be"):
        Projector(8, 8, (16, 4), (8, 8, 8))


# -- evaluation ------------------------------------------------------------------------------------------


def test_linear_probe_separates_signal_from_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (200,), generator=g)
    signal = torch.randn(200, 50, generator=g)
    signal[:, :3] += 5 * torch.nn.functional.one_hot(labels, 3)
    names = [str(v) for v in labels.tolist()]
    assert probe_accuracy(signal, names)[0] > 0.95
    assert probe_accuracy(torch.randn(200, 50, generator=g), names)[0] < 0.5


def test_fit_to_teacher_drops_frame_zero_and_resizes_as_pil_does():
    from PIL import Image

    from physalign.teacher.model import fit_to_teacher

    config = teacher_config(dict(image_size=[8, 12], num_frames=4, patch_size=4, tubelet_size=2, hidden_size=32,
                                 num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    video = torch.rand(2, 3, 5, 16, 24) * 2 - 1  # 1 + 4 frames at twice the teacher's size
    got = fit_to_teacher(video, config)
    assert got.shape == (2, 3, 4, 8, 12)
    want = torch.empty(2, 3, 4, 8, 12)
    for b in range(2):
        for f in range(4):
            for c in range(3):  # PIL's bilinear resize is antialiased: the independent reference
                frame = Image.fromarray(video[b, c, f + 1].numpy(), mode="F").resize((12, 8), Image.BILINEAR)
                want[b, c, f] = torch.from_numpy(np.array(frame))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    same = torch.rand(1, 3, 4, 8, 12)
    assert torch.equal(fit_to_teacher(same, config), same)  # the teacher's own shape passes unchanged
    with pytest.raises(ValueError, match="the clips have 6 frames: give it 4 or 5"):
        fit_to_teacher(torch.rand(1, 3, 6, 8, 12), config)
    with pytest.raises(ValueError, match="clips must be \\(B, 3, 4 or 5, H, W\\)"):
        fit_to_teacher(torch.rand(1, 1, 4, 8, 12), config)  # one channel

"""physalign.data: CSV/JSONL clip manifests and their errors, frame sampling, `physalign precompute` (latents
against a direct encode, skipped clips, kill-and-resume byte for byte, cache keys and reuse without
decoding, teacher features, preference pairs) and the shard reader."""

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from physalign.cli import app
from physalign.data import FrameSampling, PrecomputedClips, decode_clip, load_clip_manifest, precompute_clips
from physalign.data import precompute as precompute_mod
from physalign.data import shards as shards_mod
from physalign.models.interface import to_model_range
from physalign.models.world import WorldVideoModel
from physalign.objectives import tubelet_motion
from physalign.teacher.model import teacher_config, teacher_features
from physalign.video import VideoError, read_video, write_mp4
from physalign.world.dataset import ManifestError

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4,
             resolution=16)
CAPTIONS = ["a small red rubber ball is dropped from high up under normal gravity, on a black background",
            "a large blue steel block is thrown fast to the right and hits a wall under low gravity, on a gray background",
            "a small green clay ball is launched fast upward under normal gravity, on a gray background"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WorldVideoModel.from_config(SIZES).eval()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Five 6-frame 16x16 clips (random pixels, so every frame differs), one corrupt file, no nope.mp4."""
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for i in range(5):
        write_mp4(root / f"clip{i}.mp4", rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    (root / "corrupt.mp4").write_bytes(b"not an mp4 at all " * 40)
    return root


def write_csv(root: Path, name: str = "clips.csv") -> Path:
    """Rows: clip0, clip1, corrupt, clip2, nope (missing), clip3, clip4 (lines 2-8)."""
    videos = ["clip0.mp4", "clip1.mp4", "corrupt.mp4", "clip2.mp4", "nope.mp4", "clip3.mp4", "clip4.mp4"]
    with open(root / name, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "caption", "phenomena"])
        writer.writerows([video, CAPTIONS[i % 3], json.dumps(["falls", f"bounces {i}"])] for i, video in enumerate(videos))
    return root / name


def run(root: Path, out: str, model, **kwargs):
    return precompute_clips(write_csv(root), root / out, model, **{"shard_size": 2, "batch_size": 2, "progress": False, **kwargs})


# -- manifests -----------------------------------------------------------------------------------------


def test_csv_and_jsonl_manifests_give_the_same_typed_rows(tmp_path):
    (tmp_path / "m.csv").write_text(
        'video_path,prompt,phenomena,perturbed_prompts\n'
        'clips/a.mp4,a ball falls,"[""falls"", ""bounces""]",a ball rises\n'
        f'/abs/b.mp4,"a ball, rolling",,"[""x"", ""y""]"\n')
    (tmp_path / "m.jsonl").write_text(
        json.dumps({"path": "clips/a.mp4", "caption": "a ball falls", "phenomena": ["falls", "bounces"],
                    "perturbed": {"axis": "forces", "prompt": "a ball rises"}}) + "\n\n"
        + json.dumps({"path": "/abs/b.mp4", "caption": "a ball, rolling", "perturbed": '["x", "y"]'}) + "\n")
    csv_rows, jsonl_rows = load_clip_manifest(tmp_path / "m.csv"), load_clip_manifest(tmp_path / "m.jsonl")
    assert [r.line for r in csv_rows] == [2, 3] and [r.line for r in jsonl_rows] == [1, 3]
    for a, b in zip(csv_rows, jsonl_rows):
        assert (a.video, a.caption, a.perturbed, a.phenomena, a.loser) == (b.video, b.caption, b.perturbed, b.phenomena, b.loser)
    first, second = csv_rows
    assert first.video == tmp_path / "clips/a.mp4"  # relative to the manifest's folder
    assert second.video == Path("/abs/b.mp4")
    assert first.phenomena == ("falls", "bounces") and first.perturbed == ("a ball rises",)
    assert second.phenomena == () and second.perturbed == ("x", "y")
    assert load_clip_manifest(tmp_path / "m.csv", video_root="/data")[0].video == Path("/data/clips/a.mp4")


def test_preference_columns_and_configured_names(tmp_path):
    (tmp_path / "pairs.csv").write_text("chosen,rejected,text\nw.mp4,l.mp4,a ball falls\nw2.mp4,,a ball rolls\n")
    rows = load_clip_manifest(tmp_path / "pairs.csv")
    assert rows[0].video == tmp_path / "w.mp4" and rows[0].loser == tmp_path / "l.mp4" and rows[0].caption == "a ball falls"
    assert rows[1].loser is None
    (tmp_path / "own.tsv").write_text("clip\tlong_caption\tcaption\nc.mp4\tthe long one\tshort\n")
    row, = load_clip_manifest(tmp_path / "own.tsv", columns={"video": "clip", "caption": "long_caption"})
    assert row.video == tmp_path / "c.mp4" and row.caption == "the long one"


@pytest.mark.parametrize("name, text, columns, message", [
    ("m.csv", "video,text2\na.mp4,hello\n", None, r"m\.csv:1: no caption column: expected one of \['caption', 'prompt', 'text'\]"),
    ("m.csv", "video,caption\na.mp4,fine\nb.mp4,  \n", None, r"m\.csv:3: column 2 'caption': empty caption"),
    ("m.csv", 'video,caption,phenomena\na.mp4,ok,"[""falls"","\n', None,
     r"m\.csv:2: column 3 'phenomena': not a JSON list of strings"),
    ("m.csv", "video,caption\na.mp4\n", None, r"m\.csv:2: expected 2 columns as in the header, got 1"),
    ("m.csv", "video,caption\n,a ball\n", None, r"m\.csv:2: column 1 'video': empty video path"),
    ("m.csv", "video,caption\nhttps://x.org/a.mp4,a ball\n", None, r"m\.csv:2: column 1 'video': .* is a URL"),
    ("m.csv", "video,chosen,caption\na.mp4,b.mp4,a ball\n", None, r"m\.csv:1: columns 'video' and 'chosen' both name"),
    ("m.csv", "video,loser,caption\na.mp4,a.mp4,a ball\n", None, r"m\.csv:2: column 2 'loser': the loser is the row's own video"),
    ("m.csv", "video,caption\na.mp4,a ball\n", {"caption": "long"}, r"m\.csv:1: column 'long' \(given for caption\) is not in"),
    ("m.jsonl", '{"video": "a.mp4", "caption": "ok"}\n{"video": "b.mp4"}\n', None,
     r"m\.jsonl:2: column 'caption': missing caption"),
    ("m.jsonl", '{"video": "a.mp4", "caption": "ok"}\n{"video": "b.mp4", "caption": 3}\n', None,
     r"m\.jsonl:2: column 'caption': expected a caption \(a string\), got int"),
    ("m.jsonl", '{"video": "a.mp4", "caption": "ok"}\n{"video": "b.mp4",\n', None, r"m\.jsonl:2: not valid JSON"),
    ("m.jsonl", '{"video": "a.mp4", "caption": "ok", "phenomena": [1]}\n', None,
     r"m\.jsonl:1: column 'phenomena': expected a list of strings"),
    ("m.txt", "a.mp4 a ball\n", None, r"m\.txt: unknown manifest format '\.txt'"),
])
def test_manifest_errors_name_file_line_and_column(tmp_path, name, text, columns, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_clip_manifest(tmp_path / name, columns)


# -- frame sampling ------------------------------------------------------------------------------------


def test_frames_by_stride_and_by_timestamp(clips):
    video = read_video(clips / "clip0.mp4")  # 6 frames at 12 fps
    frames, indices = decode_clip(clips / "clip0.mp4", FrameSampling(3, 16, 16, stride=2))
    assert indices.tolist() == [0, 2, 4] and np.array_equal(frames, video[[0, 2, 4]])
    assert decode_clip(clips / "clip0.mp4", FrameSampling(3, 16, 16, fps=6))[1].tolist() == [0, 2, 4]
    assert decode_clip(clips / "clip0.mp4", FrameSampling(3, 16, 16, fps=5))[1].tolist() == [0, 2, 5]  # nearest in time
    assert decode_clip(clips / "clip0.mp4", FrameSampling(4, 16, 16, fps=24))[1].tolist() == [0, 0, 1, 1]
    with pytest.raises(VideoError, match="too short for 4 frames every 2"):
        decode_clip(clips / "clip0.mp4", FrameSampling(4, 16, 16, stride=2))
    with pytest.raises(ValueError, match="fps or stride, not both"):
        FrameSampling(4, 16, 16, fps=6, stride=2)


def test_frames_are_resized_to_cover_then_center_cropped(tmp_path):
    wide = np.zeros((2, 32, 64, 3), np.uint8)
    wide[:, :, :16] = (255, 0, 0)  # left quarter red, right quarter blue, middle half green
    wide[:, :, 16:48] = (0, 255, 0)
    wide[:, :, 48:] = (0, 0, 255)
    write_mp4(tmp_path / "wide.mp4", wide)
    frames, _ = decode_clip(tmp_path / "wide.mp4", FrameSampling(2, 16, 16))  # 32x64 -> 16x32 -> middle 16 columns
    assert frames.shape == (2, 16, 16, 3)
    assert np.abs(frames.astype(int) - [0, 255, 0]).max() <= 2
    frames, _ = decode_clip(tmp_path / "wide.mp4", FrameSampling(2, 32, 32))  # no resize: the crop alone
    assert np.array_equal(frames, wide[:, :, 16:48])


# -- precompute ----------------------------------------------------------------------------------------


def test_latents_and_text_equal_a_direct_encode_and_bad_clips_are_listed(clips, model):
    summary = run(clips, "straight", model)
    assert summary.clips == 5 and summary.shards == 3 and not summary.cached
    assert [(s["line"], Path(s["video"]).name) for s in summary.skipped] == [(4, "corrupt.mp4"), (6, "nope.mp4")]
    assert "cannot decode" in summary.skipped[0]["reason"] and "no such video file" in summary.skipped[1]["reason"]
    data = PrecomputedClips(clips / "straight", model.latent_fingerprint())
    assert len(data) == 5 and data.skipped == summary.skipped
    batch = data.batch(torch.arange(5))
    names = [f"clip{i}.mp4" for i in range(5)]
    assert [Path(r["video"]).name for r in batch["rows"]] == names
    assert batch["prompts"] == [CAPTIONS[i % 3] for i in (0, 1, 3, 5, 6)]
    assert batch["rows"][2]["phenomena"] == ["falls", "bounces 3"]
    assert batch["frame_indices"].tolist() == [[0, 1, 2, 3]] * 5
    with torch.no_grad():
        direct = model.encode(to_model_range(np.stack([read_video(clips / n)[:4] for n in names])))
        text = model.encode_text(batch["prompts"])
    torch.testing.assert_close(batch["latents"], direct)
    torch.testing.assert_close(batch["text_hidden"], text.hidden)
    assert torch.equal(batch["text_mask"], text.mask)


def test_kill_and_resume_writes_the_same_bytes_as_a_straight_run(clips, model, monkeypatch):
    straight = run(clips, "straight_for_resume", model)
    written = []

    def die_after_first(out, number, tensors, meta):
        if written:
            raise KeyboardInterrupt("killed")
        written.append(number)
        real_write(out, number, tensors, meta)

    real_write = shards_mod.write_shard
    monkeypatch.setattr(precompute_mod, "write_shard", die_after_first)
    with pytest.raises(KeyboardInterrupt):
        run(clips, "resumed", model)
    out = clips / "resumed"
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.safetensors"]  # no index, no temporary file
    (out / ".tmp-left-by-a-kill.safetensors").write_bytes(b"partial")
    monkeypatch.setattr(precompute_mod, "write_shard", real_write)
    resumed = run(clips, "resumed", model)
    assert resumed.kept_shards == 1 and resumed.key == straight.key and resumed.skipped == straight.skipped
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in (clips / "straight_for_resume").iterdir())
    for name in files:
        assert (out / name).read_bytes() == (clips / "straight_for_resume" / name).read_bytes(), name


def test_same_settings_reuse_the_cache_without_decoding_and_changes_change_the_key(clips, model, monkeypatch):
    first = run(clips, "keyed", model)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a clip although the cache was complete")

    monkeypatch.setattr(precompute_mod, "decode_clip", no_decoding)
    again = run(clips, "keyed", model)
    assert again.cached and again.key == first.key and again.skipped == first.skipped
    monkeypatch.undo()
    other_vae, other_text = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        next(other_vae.vae.parameters()).add_(0.01)
        next(other_text.text_encoder.parameters()).add_(0.01)
    keys = {first.key}
    for i, (changed, sampling) in enumerate([(model, FrameSampling(2, 16, 16)), (model, FrameSampling(4, 8, 8)),
                                             (model, FrameSampling(4, 16, 16, fps=6)), (other_vae, None),
                                             (other_text, None)]):
        keys.add(run(clips, f"keyed_{i}", changed, sampling=sampling).key)
    assert len(keys) == 6


def test_changed_settings_or_clips_rebuild_the_cache_in_place(clips, model, tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    for p in clips.glob("*.mp4"):
        (root / p.name).write_bytes(p.read_bytes())
    first = run(root, "out", model)
    shorter = run(root, "out", model, sampling=FrameSampling(2, 16, 16))
    assert shorter.key != first.key and not shorter.cached and shorter.kept_shards == 0
    assert PrecomputedClips(root / "out").batch(torch.tensor([0]))["latents"].shape == (1, 4, 2, 8, 8)
    write_mp4(root / "clip4.mp4", np.zeros((6, 16, 16, 3), np.uint8))  # a replaced clip
    replaced = run(root, "out", model, sampling=FrameSampling(2, 16, 16))
    assert replaced.key != shorter.key and not replaced.cached
    bigger = run(root, "out", model, sampling=FrameSampling(2, 16, 16), shard_size=4)
    assert bigger.shards == 2 and sorted(p.name for p in (root / "out").glob("shard-*")) == [
        "shard-00000.safetensors", "shard-00001.safetensors"]  # the third shard of shard size 2 is gone


def test_teacher_features_are_cached_with_the_latents(clips, model):
    from transformers import VideoMAEModel

    torch.manual_seed(1)
    teacher = VideoMAEModel(teacher_config(dict(image_size=16, num_frames=4, patch_size=4, tubelet_size=2, hidden_size=32,
                                                num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))).eval()
    summary = run(clips, "teacher", model, teacher=teacher, teacher_layer=0)
    batch = PrecomputedClips(clips / "teacher").batch(torch.tensor([4, 0]))
    video = to_model_range(np.stack([read_video(clips / n)[:4] for n in ("clip4.mp4", "clip0.mp4")]))
    expected = teacher_features(teacher, video, 0).half().float()  # (B, 2, 4, 4, 32)
    assert batch["teacher"].shape == (2, 2, 4, 4, 32)
    torch.testing.assert_close(batch["teacher"], expected, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(batch["motion"], tubelet_motion(video, (2, 4, 4)))  # M-TSA's, on the teacher's grid
    column = PrecomputedClips(clips / "teacher").column("teacher")  # read on lookup, as training does
    assert column.shape == (5, 2, 4, 4, 32) and torch.equal(column[torch.tensor([4, 0])].float(), batch["teacher"])
    assert summary.key != run(clips, "teacher", model, teacher=teacher, teacher_layer=1).key
    with pytest.raises(ValueError, match="the teacher reads videos of shape"):
        run(clips, "teacher_bad", model, teacher=teacher, sampling=FrameSampling(2, 16, 16))


def test_a_teacher_of_one_frame_fewer_and_smaller_frames_reads_the_clips_fitted(clips, model):
    """The VideoREPA mapping at test size: 4 sampled frames of 16 x 16 -> a teacher reading 3 x 8 x 8."""
    from transformers import VideoMAEModel

    from physalign.teacher.model import fit_to_teacher

    torch.manual_seed(2)
    teacher = VideoMAEModel(teacher_config(dict(image_size=8, num_frames=3, patch_size=4, tubelet_size=1, hidden_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))).eval()
    run(clips, "teacher_fit", model, teacher=teacher, teacher_layer=0)
    batch = PrecomputedClips(clips / "teacher_fit").batch(torch.tensor([1]))
    video = fit_to_teacher(to_model_range(np.stack([read_video(clips / "clip1.mp4")[:4]])), teacher.config)
    assert video.shape == (1, 3, 3, 8, 8) and batch["teacher"].shape == (1, 3, 2, 2, 32)
    torch.testing.assert_close(batch["teacher"], teacher_features(teacher, video, 0).half().float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(batch["motion"], tubelet_motion(video, (3, 2, 2)))


def test_preference_pairs_cache_the_losers(clips, model):
    lines = [{"chosen": "clip0.mp4", "rejected": "clip1.mp4", "prompt": CAPTIONS[0]},
             {"chosen": "clip2.mp4", "prompt": CAPTIONS[1]},
             {"chosen": "clip3.mp4", "rejected": "corrupt.mp4", "prompt": CAPTIONS[2]}]
    (clips / "pairs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = precompute_clips(clips / "pairs.jsonl", clips / "pairs", model, progress=False)
    assert [s["line"] for s in summary.skipped] == [3] and summary.skipped[0]["reason"].startswith("loser ")
    batch = PrecomputedClips(clips / "pairs").batch(torch.tensor([0, 1]))
    assert batch["has_loser"].tolist() == [True, False]
    with torch.no_grad():
        loser = model.encode(to_model_range(read_video(clips / "clip1.mp4")[None, :4]))
    torch.testing.assert_close(batch["loser_latents"][:1], loser)
    assert not batch["loser_latents"][1].any()


def test_reader_is_lazy_and_checks_the_autoencoder(clips, model):
    run(clips, "reader", model)
    data = PrecomputedClips(clips / "reader", max_open=1)
    whole = data.batch(torch.arange(5))
    mixed = data.batch(torch.tensor([4, 0, 2, 0]))  # across shards, one open at a time
    assert len(data._open) == 1
    torch.testing.assert_close(mixed["latents"], whole["latents"][[4, 0, 2, 0]])
    assert data.row(3) == whole["rows"][3] and data.rows == whole["rows"]
    with pytest.raises(IndexError, match="clip 5 out of range"):
        data.batch(torch.tensor([5]))
    with pytest.raises(ValueError, match="another autoencoder"):
        PrecomputedClips(clips / "reader", fingerprint="0" * 64)


def test_cli_precompute_end_to_end(clips, model, tmp_path):
    model.save_pretrained(tmp_path / "model")
    manifest = write_csv(clips, "cli.csv")
    args = ["precompute", "--manifest", str(manifest), "--model", str(tmp_path / "model"), "--out", str(tmp_path / "out"),
            "--shard-size", "2", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "5 clips in 3 shards" in result.output and "2 skipped" in result.output
    assert "skipped line 4" in result.output and "skipped line 6" in result.output
    again = CliRunner().invoke(app, args)
    assert "reused the cache, nothing decoded" in again.output
    bad = CliRunner().invoke(app, args + ["--column", "caption=long"])
    assert bad.exit_code == 2 and "column 'long' (given for caption) is not in the manifest" in bad.output


def test_a_world_manifest_loads_as_it_is_and_matches_the_world_latent_cache(model, tmp_path):
    from physalign.train.data import encoded_videos
    from physalign.world.dataset import generate, manifest_rows

    manifest = generate(tmp_path / "world", n=3, split="train", seed=0, frames=4, resolution=16, counterfactuals=True,
                        progress=False)
    world_rows = manifest_rows(manifest)
    rows = load_clip_manifest(manifest)
    assert [r.caption for r in rows] == [r["prompt"] for r in world_rows]
    assert [r.perturbed for r in rows] == [(r["perturbed"]["prompt"],) for r in world_rows]
    assert [list(r.phenomena) for r in rows] == [r["phenomena"] for r in world_rows]
    precompute_clips(manifest, tmp_path / "out", model, progress=False)
    world_latents, _ = encoded_videos(manifest, world_rows, model, tmp_path / "cache")
    torch.testing.assert_close(PrecomputedClips(tmp_path / "out").batch(torch.arange(3))["latents"], world_latents)

"""Tiny Wan 2.1 and CogVideoX user folders trained with every method on real-format data, through the commands
a user runs on the real ones: ``physalign precompute`` on a CSV manifest of clips (captions, perturbed prompts,
phenomena, winner/loser pairs; a teacher), then ``physalign train --config configs/methods/<m>.yaml --set
data.source=precomputed ...`` for two steps. Each run must log finite terms and move the exported weights.
Also: the shards' caption embeddings stand in for the text encoder exactly, M-TSA's masks from the
precomputed motion equal masks of the decoded frames, and missing data fails naming the column and the command.
"""

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from physalign.cli import app
from physalign.data import FrameSampling, decode_clip
from physalign.models.interface import CONFIG_FILE, to_model_range
from physalign.objectives import motion_mask
from physalign.teacher.model import save_teacher, teacher_config
from physalign.train.config import load_config
from physalign.train.loop import build_run
from physalign.train.methods import DataError
from physalign.video import write_mp4

from _tiny_models import model_class, sized_options, user_folder, vlm_folder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CAPTIONS = ["a red ball falls and bounces on the floor", "a blue block slides to the left and stops",
            "a green ball rolls down a ramp", "a yellow block is thrown up and falls back"]
PERTURBED = ["a red ball falls and floats up", "a blue block slides to the left and speeds up",
             "a green ball rolls up a ramp", "a yellow block is thrown up and keeps rising"]
PHENOMENA = [["the ball falls", "the ball bounces"], ["the block slides", "the block stops"],
             ["the ball rolls"], ["the block rises", "the block falls"]]

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the user's files --------------------------------------------------------------------------------------


def clip(i: int, frozen: bool = False) -> np.ndarray:
    """uint8 (9, 32, 48, 3): a coloured 8x8 square moving across a dark background (``frozen``: it stays)."""
    video = np.full((9, 32, 48, 3), 20, np.uint8)
    colour = np.array([[220, 40, 40], [40, 40, 220], [40, 200, 40], [220, 220, 40]][i], np.uint8)
    for f in range(9):
        x, y = (2 if frozen else 2 + 4 * f), (4 + 2 * i + (0 if frozen else (f * f) % 12))
        video[f, y : y + 8, x : x + 8] = colour
    return video


def write_manifest(root: Path, pairs: bool = True, extras: bool = True) -> Path:
    """clips.csv: winner, caption and (``pairs``) loser; with ``extras`` perturbed prompts and phenomena."""
    header = ["winner", "caption"] + (["loser"] if pairs else []) + (["perturbed_prompts", "phenomena"] if extras else [])
    lines = [",".join(header)]
    for i, caption in enumerate(CAPTIONS):
        write_mp4(root / f"clips/{i}.mp4", clip(i))
        cells = [f"clips/{i}.mp4", caption]
        if pairs:
            write_mp4(root / f"clips/{i}_bad.mp4", clip(i, frozen=True))
            cells.append(f"clips/{i}_bad.mp4")
        if extras:
            cells += [PERTURBED[i], '"' + json.dumps(PHENOMENA[i]).replace('"', '""') + '"']
        lines.append(",".join(cells))
    path = root / ("clips.csv" if pairs and extras else "plain.csv")
    path.write_text("\n".join(lines) + "\n")
    return path


def sized(folder: Path) -> Path:
    """The user's options file next to model_index.json: float32 and the tiny video shape."""
    (folder / CONFIG_FILE).write_text(json.dumps({"class": model_class(folder).__name__, **sized_options(folder)}))
    return folder


def tiny_teacher(path: Path) -> Path:
    """A random VideoMAE reading 8 x 16 x 24, tokens (4, 2, 3): the 9 x 32 x 48 clips reach it as VideoREPA's
    49 x 480 x 720 reach VideoMAEv2 (frame 0 dropped, resized), and CogVideoX's (3, 2, 3) latent tokens map onto
    its grid as the real ones do (latent frame 0 dropped, x2 in time)."""
    from transformers import VideoMAEModel

    torch.manual_seed(0)
    save_teacher(VideoMAEModel(teacher_config(dict(image_size=[16, 24], num_frames=8, patch_size=8, tubelet_size=2,
                                                   hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=64))), path)
    return path


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def precompute(manifest: Path, folder: Path, out: Path, teacher: Path | None = None) -> Path:
    cli("precompute", "--manifest", manifest, "--model", folder, "--out", out, "--shard-size", 2, "--no-progress",
        *(["--teacher", teacher] if teacher else []))
    return out


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("user")
    folders = {kind: sized(user_folder(root, kind)) for kind in ("wan", "cogvideox")}
    teacher = tiny_teacher(root / "teacher")
    manifest = write_manifest(root)
    caches = {kind: precompute(manifest, folder, root / f"cache-{kind}", teacher) for kind, folder in folders.items()}
    judge = vlm_folder(root / "judge", " ".join(CAPTIONS + [f for fs in PHENOMENA for f in fs]))
    return SimpleNamespace(root=root, folders=folders, teacher=teacher, caches=caches, judge=judge, manifest=manifest)


# -- every method through the CLI ---------------------------------------------------------------------------

FROZEN_TEXT = ["--set", "model.trainable=[transformer]"]  # the shards' caption embeddings are then used


def method_args(method: str, user) -> list:
    """What a user sets for each method on a tiny model (the real configs' sizes do not fit it)."""
    align = ["--set", f"method.teacher={user.teacher}", "--set", "method.block=1", "--set", "method.projector_dim=16"]
    lora = ["--set", "method.lora_rank=4", "--set", "method.lora_alpha=4"]
    return {
        "sft": [], "fm": ["--method", "fm"], "dfm": FROZEN_TEXT,
        "direct": FROZEN_TEXT + ["--set", "method.micro=reference", "--set", "method.partition_keys=[caption]"],
        "repa": FROZEN_TEXT + align, "trd": FROZEN_TEXT + align, "tsa": FROZEN_TEXT + align, "mtsa": FROZEN_TEXT + align,
        "physhpo": lora,
        "diffphy": lora + ["--set", f"method.judge={user.judge}", "--set", "method.inject_blocks=[0, 1]",
                           "--set", "method.branch_rank=4", "--set", "method.judge_fraction=0.5"],
    }[method]


TERMS = {"sft": {"fm"}, "fm": {"fm"}, "dfm": {"fm", "neg"}, "direct": {"fm", "macro", "micro", "reg"},
         "repa": {"fm", "repa"}, "trd": {"fm", "trd"}, "tsa": {"fm", "tsa"}, "mtsa": {"fm", "mtsa"},
         "physhpo": {"fm", "instance_loss", "state_loss", "motion_loss", "semantic_loss"},
         "diffphy": {"fm", "phen", "com", "sem"}}
RUNS = [("wan", m) for m in TERMS] + [("cogvideox", m) for m in ("sft", "mtsa", "direct", "physhpo", "diffphy")]


def transformer_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")


@pytest.mark.parametrize("kind, method", RUNS, ids=[f"{k}-{m}" for k, m in RUNS])
def test_every_method_trains_on_precomputed_clips(user, kind, method, tmp_path):
    config = CONFIGS / "methods" / f"{'sft' if method == 'fm' else method}.yaml"
    cli("train", "--config", config, "--out", tmp_path / "run", "--set", f"model.init={user.folders[kind]}",
        "--set", "data.source=precomputed", "--set", f"data.precomputed={user.caches[kind]}",
        "--set", "train.steps=2", "--set", "train.batch_size=2", "--set", "train.log_every=1",
        "--set", "train.save_every=2", "--set", "train.tensorboard=false", "--set", "optim.warmup_steps=1",
        *method_args(method, user))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1] and not any("skipped" in r for r in log)
    assert TERMS[method] <= set(log[0]), sorted(log[0])
    assert all(math.isfinite(v) for r in log for v in r.values()), log
    before, after = transformer_weights(user.folders[kind]), transformer_weights(tmp_path / "run" / "model")
    assert before.keys() == after.keys()
    assert all(torch.isfinite(w).all() for w in after.values())
    assert max(float((after[k].float() - before[k].float()).abs().max()) for k in before) > 0  # the weights moved


def test_a_resumed_run_on_precomputed_clips_equals_a_straight_one(user, tmp_path):
    run = ["train", "--config", CONFIGS / "methods" / "mtsa.yaml", "--set", f"model.init={user.folders['wan']}",
           "--set", "data.source=precomputed", "--set", f"data.precomputed={user.caches['wan']}",
           "--set", "train.batch_size=2", "--set", "train.log_every=1", "--set", "train.save_every=2",
           "--set", "train.tensorboard=false", *method_args("mtsa", user)]
    cli(*run, "--out", tmp_path / "straight", "--set", "train.steps=4")
    cli(*run, "--out", tmp_path / "resumed", "--set", "train.steps=2")
    cli(*run, "--out", tmp_path / "resumed", "--set", "train.steps=4", "--resume")
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "log.jsonl").read_text().splitlines()]
              for name in ("straight", "resumed")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


# -- what the source serves -----------------------------------------------------------------------------------


def built(user, kind: str, method: str, *overrides: str):
    cfg = load_config(CONFIGS / "methods" / f"{method}.yaml", [
        f"model.init={user.folders[kind]}", "data.source=precomputed", f"data.precomputed={user.caches[kind]}",
        "train.batch_size=2", *overrides])
    return build_run(cfg)


def test_shard_caption_embeddings_stand_in_for_the_text_encoder(user):
    """With the text encoder frozen the batch carries the shards' embeddings (and the empty prompt's); the loss
    under them equals the loss with every prompt encoded live, cfg dropout included."""
    state, data = built(user, "wan", "sft", "model.trainable=[transformer]", "method.cfg_dropout=0.5")
    batch = data.batch(torch.tensor([3, 0, 2, 1]))
    assert {"text_hidden", "text_mask", "empty_text_hidden", "empty_text_mask"} <= set(batch)
    assert not {"teacher", "motion", "loser_latents"} & set(batch)  # per-method columns are read on lookup only
    live = {k: v for k, v in batch.items() if not k.endswith(("text_hidden", "text_mask"))}
    losses = []
    for b in (batch, live):
        torch.manual_seed(5)
        losses.append(state.method(state.model, b)["loss"])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    _, trained_text = built(user, "wan", "sft", "model.trainable=[transformer, text_encoder]")
    assert "text_hidden" not in trained_text.batch(torch.tensor([0]))  # it would go stale as the encoder trains


def test_mtsa_masks_from_precomputed_motion_equal_masks_of_the_decoded_frames(user):
    state, data = built(user, "cogvideox", "mtsa", f"method.teacher={user.teacher}", "method.block=1",
                        "method.projector_dim=16")
    from physalign.teacher.model import fit_to_teacher, load_teacher

    masks = state.method.masks[torch.tensor([2, 0])]  # (2, 4, 2, 3): the teacher's grid
    frames = [decode_clip(user.root / f"clips/{i}.mp4", FrameSampling(9, 32, 48))[0] for i in (2, 0)]
    fitted = fit_to_teacher(to_model_range(np.stack(frames)), load_teacher(user.teacher).config)  # (2, 3, 8, 16, 24)
    assert torch.equal(masks, motion_mask(fitted, (4, 2, 3), 0.2))
    assert masks.sum() == 2 * 4 * round(0.2 * 6)  # k = 20% of the 2 x 3 tokens in each of 4 frames


@pytest.fixture(scope="module")
def plain_cache(user) -> Path:
    """Clips with captions only: no teacher, no losers, no perturbed prompts, no phenomena."""
    root = user.root / "plain"
    return precompute(write_manifest(root, pairs=False, extras=False), user.folders["wan"], root / "cache")


@pytest.mark.parametrize("method, overrides, message", [
    ("repa", ["--set", "method.teacher={teacher}"],
     r"shards hold no teacher features .*physalign precompute .*--teacher"),
    ("physhpo", [], r"plain\.csv: preference pairs need a loser per clip; lines \[2, 3, 4, 5\] have none: fill the "
                    r"'loser' \(or 'rejected'\) column and re-run `physalign precompute"),
    ("diffphy", ["--set", "method.judge={judge}", "--set", "method.inject_blocks=[0, 1]"],
     r"plain\.csv: the judge's facts come from the 'phenomena' column; lines \[2, 3, 4, 5\]"),
    ("direct", [], r"partition keys \['kind', 'color'\] are not fields of precomputed clips.*"
                   r"method.partition_keys=\[caption\]"),
    ("direct", ["--set", "method.partition_keys=[caption]"],
     r"micro: counterfactual needs simulated counterfactual videos.*--set method.micro=reference"),
    ("direct", ["--set", "method.micro=reference", "--set", "method.partition_keys=[caption]"],
     r"micro: reference needs a perturbed prompt per clip; lines \[2, 3, 4, 5\] have none: add a 'perturbed_prompts'"),
])
def test_missing_data_fails_naming_the_column_and_the_command(user, plain_cache, tmp_path, method, overrides, message):
    result = CliRunner().invoke(app, [
        "train", "--config", str(CONFIGS / "methods" / f"{method}.yaml"), "--out", str(tmp_path / "run"),
        "--set", f"model.init={user.folders['wan']}", "--set", "data.source=precomputed",
        "--set", f"data.precomputed={plain_cache}", *(o.format(teacher=user.teacher, judge=user.judge) for o in overrides)])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, result.output + repr(result.exception)
    assert re.search(f"error: .*{message}", result.output), result.output


def test_source_config_errors(user, tmp_path):
    with pytest.raises(DataError, match="data.source precomputed needs data.precomputed"):
        build_run(load_config(CONFIGS / "methods" / "sft.yaml", [f"model.init={user.folders['wan']}",
                                                                 "data.source=precomputed"]))
    with pytest.raises(DataError, match="no precomputed index"):
        build_run(load_config(CONFIGS / "methods" / "sft.yaml", [f"model.init={user.folders['wan']}",
                                                                 "data.source=precomputed", f"data.precomputed={tmp_path}"]))
    with pytest.raises(DataError, match="latents were encoded by another autoencoder"):
        build_run(load_config(CONFIGS / "methods" / "sft.yaml", [f"model.init={user.folders['cogvideox']}",
                                                                 "data.source=precomputed",
                                                                 f"data.precomputed={user.caches['wan']}"]))
    result = CliRunner().invoke(app, ["train", "--config", str(CONFIGS / "methods" / "sft.yaml"), "--out",
                                      str(tmp_path / "r"), "--set", "data.source=webdataset"])
    assert result.exit_code == 2 and "data.source 'webdataset' does not serve 'latents' batches" in result.output


def test_two_processes_on_precomputed_clips_match_one(user, tmp_path):
    """torchrun, two CPU processes (gloo): each reads its half of the global batch from the shards; the
    weights after two steps equal one process's on the whole batch."""
    import os
    import socket
    import subprocess
    import sys

    run = ["train", "--config", CONFIGS / "methods" / "sft.yaml", "--set", f"model.init={user.folders['wan']}",
           "--set", "data.source=precomputed", "--set", f"data.precomputed={user.caches['wan']}",
           "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.save_every=2",
           "--set", "train.tensorboard=false", "--set", "optim.warmup_steps=1", "--set", "optim.lr=0.001",
           "--set", "method.per_sample_noise=true", *FROZEN_TEXT]
    cli(*run, "--out", tmp_path / "one")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "-m", "physalign.cli", *map(str, run), "--out", str(tmp_path / "two")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, two, base = (transformer_weights(p) for p in (tmp_path / "one" / "model", tmp_path / "two" / "model",
                                                       user.folders["wan"]))
    gap = max(float((one[k].float() - two[k].float()).abs().max()) for k in one)
    moved = max(float((one[k].float() - base[k].float()).abs().max()) for k in one)
    assert gap < 1e-4 < moved, (gap, moved)


# LoRA and its reference pass, a judged decode and the fact branch, a projector and taps
SHARDED = ([("fsdp", "wan", m) for m in ("physhpo", "diffphy", "mtsa")] + [("deepspeed", "wan", m) for m in ("physhpo", "diffphy")]
           + [("deepspeed", "cogvideox", "mtsa")])


def launcher(engine: str, port: int) -> list[str]:
    """The two-process CPU launch of each engine: torchrun with the variables configs/accelerate/fsdp.yaml sets
    (accelerate starts CPU processes through MPI only), or accelerate's own launch of deepspeed.yaml."""
    import sys

    if engine == "fsdp":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(CONFIGS / "accelerate" / "deepspeed.yaml"), "--num_processes", "2", "--main_process_port", str(port)]


@pytest.mark.parametrize("engine, kind, method", SHARDED, ids=[f"{e}-{k}-{m}" for e, k, m in SHARDED])
def test_methods_train_sharded_on_two_processes(user, engine, kind, method, tmp_path):
    """An FSDP2 launch of a method whose parts sit in and beside the sharded backbone, or a DeepSpeed ZeRO-2
    launch (every trainable part sharded): every term finite on both steps, the exported (whole) transformer
    moved and loadable."""
    import os
    import socket
    import subprocess

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = ["train", "--config", CONFIGS / "methods" / f"{method}.yaml", "--set", f"model.init={user.folders[kind]}",
           "--set", "data.source=precomputed", "--set", f"data.precomputed={user.caches[kind]}",
           "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.log_every=1",
           "--set", "train.save_every=2", "--set", "train.tensorboard=false", "--set", "optim.warmup_steps=1",
           *method_args(method, user), "--out", tmp_path / "run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}
                                                    if engine == "fsdp" else {})}
    done = subprocess.run([*launcher(engine, port), "-m", "physalign.cli", *map(str, run)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {"fsdp": "FSDP2: the backbone's", "deepspeed": "DeepSpeed ZeRO stage 2"}[engine] in done.stdout
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0, 1] and TERMS[method] <= set(log[0])
    assert all(math.isfinite(v) for r in log for v in r.values()), log
    before, after = transformer_weights(user.folders[kind]), transformer_weights(tmp_path / "run" / "model")
    assert before.keys() == after.keys()  # LoRA merged: a plain transformer
    assert max(float((after[k].float() - before[k].float()).abs().max()) for k in before) > 0

"""Two processes on the CPU (gloo; started by torchrun, whose environment accelerate reads: accelerate's own
launcher starts CPU processes only through MPI) train exactly what one process trains on the same global
batch, and a two-process run resumes exactly."""

import json
import math
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from physalign.models.interface import load_model
from physalign.train.config import load_config, save_config
from physalign.models.world import WorldVideoModel
from physalign.train.loop import build_run, train
from physalign.world.dataset import generate

TINY = dict(layers=2, heads=2, head_dim=16, ffn_dim=64, text_dim=32, text_layers=1, vae_channels=[16, 32], frames=4, resolution=16)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("world"), 8, "train", 0, frames=4, resolution=16, progress=False)


def config(world: Path, tmp: Path, *more):
    return load_config(None, [
        f"data.manifest={world}", f"data.cache_dir={tmp / 'cache'}", f"model.sizes={json.dumps(TINY)}",
        "train.batch_size=4", "train.steps=3", "train.log_every=1", "train.save_every=2", "train.keep_checkpoints=0",
        "train.tensorboard=false", "optim.warmup_steps=1", "optim.lr=0.01", "method.per_sample_noise=true", *more])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# what `accelerate launch --config_file configs/accelerate/fsdp.yaml` sets (accelerate.utils.launch)
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_RESHARD_AFTER_FORWARD": "true"}


def launch(cfg, tmp: Path, run: Path, resume: bool = False, env: dict | None = None, processes: int = 2) -> str:
    """Train ``cfg`` in ``run`` on ``processes`` CPU processes; return their stdout."""
    path = tmp / f"{run.name}.yaml"
    save_config(cfg, path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
           str(free_port()), "-m", "physalign.cli", "train", "--out", str(run),
           *(["--resume"] if resume else ["--config", str(path)])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def weights(folder: Path) -> dict:
    return load_model(folder).state_dict()


def gap(a: dict, b: dict) -> float:
    """Largest absolute difference between two models' weights."""
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_gradient_buckets_cut_by_size_dtype_and_order():
    from physalign.train.engine import gradient_buckets

    a, b, c, d = torch.zeros(2), torch.zeros(3), torch.zeros(2, dtype=torch.bfloat16), torch.zeros(10)
    assert [[x.numel() for x in bucket] for bucket in gradient_buckets([a, b, c, d], limit=24)] == [[2, 3], [2], [10]]
    assert [len(bucket) for bucket in gradient_buckets([a, b, d], limit=8)] == [1, 1, 1]


def test_collectives_get_tensors_on_the_engine_device(tmp_path):
    """Every tensor the engine all-reduces is on its device, not the default one (NCCL has no CPU backend; a
    CPU tensor failed every GPU launch's first step). tests/_collective_devices.py runs the engine's collectives
    with "meta" as the default device on two processes and checks the values they agree on."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(Path(__file__).parent / "_collective_devices.py"), str(tmp_path)]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [o["rank"] for o in outs] == [0, 1]
    for o in outs:
        assert o["means"] == {"loss": 0.5, "two": 2.0} and o["flagged"] is True
        assert o["grad"] == [0.5] * 3 and o["in_place"] and o["bias"] == [1.0] * 2
        assert o["unused"] == [0.0]  # a missing gradient counts as zero
        assert o["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert o["collectives"] == ["all_reduce"] * 4  # the mean, any_rank, two gradient buckets


def test_two_processes_match_one_on_the_same_global_batch(world, tmp_path):
    one = train(config(world, tmp_path), tmp_path / "one", progress=False)
    launch(config(world, tmp_path), tmp_path, tmp_path / "two")
    two = tmp_path / "two" / "model"
    # equal up to float rounding of the reduction (which Adam's normalisation turns into ~1e-5 steps on
    # near-zero gradients); a missing synchronisation moves weights by ~1e-2 (below)
    assert gap(weights(one), weights(two)) < 1e-4
    log_one = [json.loads(x) for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    log_two = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert [r["fm"] for r in log_two] == pytest.approx([r["fm"] for r in log_one], rel=1e-4)  # means over ranks
    # the test can fail: one process on half the batch (what rank 0 alone sees) ends elsewhere
    half = train(config(world, tmp_path, "train.batch_size=2"), tmp_path / "half", progress=False)
    assert gap(weights(half), weights(two)) > 1e-3


def test_a_two_process_run_resumes_exactly(world, tmp_path):
    launch(config(world, tmp_path, "train.steps=4", "method.per_sample_noise=false"), tmp_path, tmp_path / "straight")
    launch(config(world, tmp_path, "train.steps=2", "method.per_sample_noise=false"), tmp_path, tmp_path / "split")
    rank1 = tmp_path / "split" / "checkpoints" / "step_000002" / "rng_rank1.safetensors"
    assert rank1.is_file()  # each process's random state is in the checkpoint
    cfg = config(world, tmp_path, "train.steps=4", "method.per_sample_noise=false")
    save_config(cfg, tmp_path / "split" / "config.yaml")  # the resumed run continues to step 4
    launch(cfg, tmp_path, tmp_path / "split", resume=True)
    assert torch.equal(torch.cat([v.flatten() for v in weights(tmp_path / "straight" / "model").values()]),
                       torch.cat([v.flatten() for v in weights(tmp_path / "split" / "model").values()]))


@pytest.fixture(scope="module")
def init_folder(tmp_path_factory) -> Path:
    """A tiny world model saved as a folder: the ``model.init`` of a post-training run."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("init") / "model"
    WorldVideoModel.from_config(TINY).save_pretrained(folder)
    return folder


def shared_weights(cfg, tmp: Path, ckpt: Path | None = None) -> list[dict]:
    """tests/_shared_weights.py's records of building ``cfg`` (from checkpoint ``ckpt``) on two processes."""
    path, out = tmp / "shared.yaml", tmp / "shared"
    save_config(cfg, path)
    out.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(Path(__file__).parent / "_shared_weights.py"), str(path), str(out), *([str(ckpt)] if ckpt else [])]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_only_the_first_process_reads_the_weights_and_every_process_gets_them(world, init_folder, tmp_path):
    """A run from a model folder: process 0 reads each part's weights, process 1 reads none (it builds the model
    on the meta device and receives every parameter and buffer by broadcast), and both end with process 0's
    model, tied text embeddings still tied, and the same random state as one process after the same build
    (so a method's setup draws alike); the same on resuming from a trained-only checkpoint."""
    cfg = config(world, tmp_path, f"model.init={init_folder}", "model.sizes={}", "train.steps=2")
    first, second = shared_weights(cfg, tmp_path)
    assert sorted(Path(r).name for r in first["reads"]) == ["text_encoder", "transformer", "vae"]
    assert second["reads"] == []
    assert first["digest"] == second["digest"] and first["draws"] == second["draws"]
    assert first["tied"] and second["tied"]
    torch.manual_seed(123)  # build_run seeds itself: one process's draws after the build do not depend on this
    build_run(cfg)
    assert torch.rand(3).tolist() == pytest.approx(first["draws"], abs=0)

    launch(cfg, tmp_path, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoints" / "step_000002"
    assert (ckpt / "trained.safetensors").is_file() and not (ckpt / "model").exists()
    first, second = shared_weights(cfg, tmp_path, ckpt)
    assert str(ckpt / "trained.safetensors") in first["reads"] and second["reads"] == []
    assert first["digest"] == second["digest"]


def test_an_fsdp_run_from_a_model_folder_trains_like_one_process(world, init_folder, tmp_path):
    """Process 1's empty build, shared and then sharded by FSDP2, trains as one process does. (Resuming from a
    trained-only checkpoint builds bit-equal models on both processes: the test above.)"""
    cfg = config(world, tmp_path, "train.steps=3", f"model.init={init_folder}", "model.sizes={}", "optim.ema_decay=0.5")
    one = train(cfg, tmp_path / "one", progress=False)
    launch(cfg, tmp_path, tmp_path / "fsdp", env=FSDP_ENV)
    assert gap(weights(one), weights(tmp_path / "fsdp" / "model")) < 1e-4
    assert gap(weights(init_folder), weights(tmp_path / "fsdp" / "model")) > 1e-3  # it trained


def test_sharded_optimizer_state_trains_and_resumes_like_one_process(world, tmp_path):
    """train.shard_optimizer=true (ZeRO stage 1): the same weights as one process, and a run that stops and
    resumes from the consolidated optimiser state ends where an uninterrupted one does."""
    one = train(config(world, tmp_path, "train.steps=4"), tmp_path / "one", progress=False)
    shard = ("train.shard_optimizer=true",)  # per-sample noise (the default here): the same on any number of ranks
    launch(config(world, tmp_path, "train.steps=4", *shard), tmp_path, tmp_path / "straight")
    assert gap(weights(one), weights(tmp_path / "straight" / "model")) < 1e-4
    launch(config(world, tmp_path, "train.steps=2", *shard), tmp_path, tmp_path / "split")
    cfg = config(world, tmp_path, "train.steps=4", *shard)
    save_config(cfg, tmp_path / "split" / "config.yaml")
    launch(cfg, tmp_path, tmp_path / "split", resume=True)
    assert gap(weights(tmp_path / "straight" / "model"), weights(tmp_path / "split" / "model")) == 0.0


def _shard_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from physalign.train.loop import make_optimizer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (300, 200, 100, 50)]
    opt = make_optimizer(params, shard=True, lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)
    for step in range(3):
        for i, p in enumerate(params):
            p.grad = torch.full_like(p, float(step + 1)) * torch.arange(p.numel()) / (i + 1)
        opt.step()
    local = sum(v.numel() for s in opt.optim.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    torch.save({"local_state": local, "weights": [p.detach() for p in params]}, f"{out}/rank{rank}.pt")
    dist.barrier()  # as the other multi-process tests: no rank tears its gloo pairs down under the other
    dist.destroy_process_group()


def test_make_optimizer_shards_adamw_state_over_processes(tmp_path):
    torch.multiprocessing.spawn(_shard_worker, args=(free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]  # written by this test's workers
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (300, 200, 100, 50)]
    opt = torch.optim.AdamW(params, lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)
    for step in range(3):
        for i, p in enumerate(params):
            p.grad = torch.full_like(p, float(step + 1)) * torch.arange(p.numel()) / (i + 1)
        opt.step()
    for r in ranks:
        for got, want in zip(r["weights"], params):
            torch.testing.assert_close(got, want.detach())
    total = 2 * sum(p.numel() for p in params)  # exp_avg and exp_avg_sq of every parameter
    assert sum(r["local_state"] for r in ranks) == total and max(r["local_state"] for r in ranks) <= 0.6 * total


@pytest.mark.parametrize("reshard", ["true", "false"])  # false: parameters kept from forward to backward (ZeRO-2)
def test_fsdp_shards_the_backbone_and_trains_like_one_process(world, tmp_path, reshard):
    """An FSDP2 launch (configs/accelerate/fsdp.yaml) splits the backbone's parameters over the processes and
    ends at one process's weights, EMA included; gradients of parts outside the backbone (the trainable
    text encoder) are averaged as in plain data parallel, and clipping sees both."""
    more = ("train.steps=4", "optim.ema_decay=0.5", "optim.grad_clip=0.05",  # a clip that binds
            "train.validate_every=2", "train.validation_steps=2")  # every rank samples the sharded model
    one = train(config(world, tmp_path, *more), tmp_path / "one", progress=False)
    out = launch(config(world, tmp_path, *more), tmp_path, tmp_path / "fsdp",
                 env={**FSDP_ENV, "FSDP_RESHARD_AFTER_FORWARD": reshard})
    share = float(out.split("rank 0 holds")[1].split("(")[1].split("%")[0]) / 100
    assert 0.4 <= share <= 0.6, out  # about half of the backbone on each of the two processes
    assert gap(weights(one), weights(tmp_path / "fsdp" / "model")) < 1e-4  # the EMA export
    log = [json.loads(x) for x in (tmp_path / "fsdp" / "log.jsonl").read_text().splitlines()]
    log_one = [json.loads(x) for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    assert [r["grad_norm"] for r in log] == pytest.approx([r["grad_norm"] for r in log_one], rel=1e-4)
    assert min(r["grad_norm"] for r in log) > 0.05  # the clip was active
    assert (tmp_path / "fsdp" / "validation" / "step_000004" / "all.gif").is_file()
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step_000004"
    assert gap(weights(tmp_path / "one" / "checkpoints" / "step_000004" / "model"), weights(ckpt / "model")) < 1e-4


def test_fsdp_under_bf16_gathers_bf16_and_reduces_float32(world, tmp_path):
    """(Launched with train.batch_size_per_process=2, which the run resolves to the global batch of 4.)
    With train.mixed_precision=bf16 the blocks all-gather bf16 parameters and reduce-scatter float32
    gradients (MixedPrecisionPolicy), and its losses and gradient norms stay close to one bf16-autocast
    process's (weights are not compared: Adam turns bf16 noise on near-zero gradients into whole steps)."""
    more = ("train.steps=3", "train.mixed_precision=bf16")
    launch(config(world, tmp_path, *more), tmp_path, tmp_path / "one", processes=1)  # its own process: accelerate's
    one = tmp_path / "one" / "model"  # state, once made in this one without autocast, cannot be changed
    per_process = config(world, tmp_path, *more, "train.batch_size=32", "train.batch_size_per_process=2")
    out = launch(per_process, tmp_path, tmp_path / "fsdp", env=FSDP_ENV)  # 2 per process: the global batch of 4
    assert load_config(tmp_path / "fsdp" / "config.yaml").train.batch_size == 4
    assert "all-gathered in torch.bfloat16, gradients reduced in torch.float32" in out, out
    log, log_one = log_of(tmp_path / "fsdp"), log_of(one.parent)
    assert len(log) == 3 and all(math.isfinite(r["loss"]) for r in log)
    assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in log_one], rel=1e-2)
    assert [r["grad_norm"] for r in log] == pytest.approx([r["grad_norm"] for r in log_one], rel=3e-2)


def test_fsdp_checkpoints_gather_onto_the_writer_alone(world, tmp_path):
    """ShardedEngine.gathered: process 0 (the writer) holds every sharded parameter, AdamW moment and EMA
    shadow whole on the CPU; process 1 holds an empty placeholder or nothing; the shards are back afterwards."""
    path = tmp_path / "cfg.yaml"
    save_config(config(world, tmp_path, "optim.ema_decay=0.5"), path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(Path(__file__).parent / "_fsdp_gathered.py"), str(path), str(tmp_path)]
    env = {**os.environ, **FSDP_ENV, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    writer, other = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert writer["sharded"] and writer["shards_back"] and other["shards_back"]
    for name, shape in writer["sharded"].items():
        assert writer["inside"]["params"][name] == ["cpu", shape, False]  # whole, on the CPU
        assert other["inside"]["params"][name][1] == [0]  # a placeholder: nothing gathered kept
    sharded_moments = [m for m in other["inside"]["moments"] if m is None]
    assert sharded_moments and all(m is not None and m[1] is False for m in writer["inside"]["moments"])
    assert None in other["inside"]["ema"] and None not in writer["inside"]["ema"]


def test_an_fsdp_run_resumes_exactly_from_its_whole_checkpoint(world, tmp_path):
    """A sharded run saves whole tensors; it resumes on two processes to the uninterrupted run's weights, and
    one process can resume it too."""
    more = ("method.per_sample_noise=true", "optim.ema_decay=0.5")
    launch(config(world, tmp_path, "train.steps=4", *more), tmp_path, tmp_path / "straight", env=FSDP_ENV)
    launch(config(world, tmp_path, "train.steps=2", *more), tmp_path, tmp_path / "split", env=FSDP_ENV)
    cfg = config(world, tmp_path, "train.steps=4", *more)
    save_config(cfg, tmp_path / "split" / "config.yaml")
    launch(cfg, tmp_path, tmp_path / "split", resume=True, env=FSDP_ENV)
    assert gap(weights(tmp_path / "straight" / "model"), weights(tmp_path / "split" / "model")) == 0.0
    import shutil

    shutil.copytree(tmp_path / "split", tmp_path / "single", ignore=shutil.ignore_patterns("step_000004"))
    (tmp_path / "single" / "checkpoints" / "latest").write_text("step_000002")
    train(cfg, tmp_path / "single", resume=True, progress=False)  # per-sample noise: the same on one process
    assert gap(weights(tmp_path / "straight" / "model"), weights(tmp_path / "single" / "model")) < 1e-4


def test_shipped_accelerate_configs_are_what_the_engine_reads():
    from accelerate.commands.config.config_args import ClusterConfig

    root = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
    ddp, fsdp, ds = (ClusterConfig.from_yaml_file(str(root / f"{n}.yaml")) for n in ("ddp", "fsdp", "deepspeed"))
    assert (ddp.distributed_type, fsdp.distributed_type, ds.distributed_type) == ("MULTI_GPU", "FSDP", "DEEPSPEED")
    assert fsdp.fsdp_config["fsdp_version"] == 2 and fsdp.fsdp_config["fsdp_reshard_after_forward"] is True
    assert ds.deepspeed_config["zero_stage"] == 2 and ds.deepspeed_config["offload_optimizer_device"] == "none"


def test_fsdp1_launches_are_refused_not_ignored(monkeypatch, world, tmp_path):
    from physalign.train.config import ConfigError

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for FSDP1, its default
    with pytest.raises(ConfigError, match="asks for FSDP version 1.*fsdp_version: 2"):
        train(config(world, tmp_path), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


ROOT = Path(__file__).resolve().parents[1]


def deepspeed_launch(cfg, tmp: Path, run: Path, resume: bool = False, stage: int = 2,
                     main: tuple = ("-m", "physalign.cli")) -> str:
    """Train ``cfg`` in ``run`` with the command a user runs, ``accelerate launch --config_file
    configs/accelerate/deepspeed.yaml``, on two CPU processes; return their stdout."""
    path = tmp / f"{run.name}.yaml"
    save_config(cfg, path)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "deepspeed.yaml"), "--num_processes", "2", "--zero_stage", str(stage),
           "--main_process_port", str(free_port()), *main, "train", "--out", str(run),
           *(["--resume"] if resume else ["--config", str(path)])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def optimizer_state(run: Path, step: int) -> dict:
    return load_file(str(run / "checkpoints" / f"step_{step:06d}" / "optimizer.safetensors"))


def test_deepspeed_zero2_trains_and_resumes_like_one_process(world, tmp_path):
    """ZeRO stage 2 through configs/accelerate/deepspeed.yaml: two processes end at one process's weights (EMA
    export, a binding clip, validation), log its gradient norms, and checkpoint its whole AdamW state; a run
    that stops and resumes ends at the straight run's weights bit for bit, and one process resumes it too."""
    more = ("train.steps=4", "optim.ema_decay=0.5", "optim.grad_clip=0.05", "train.validate_every=2",
            "train.validation_steps=2")
    one = train(config(world, tmp_path, *more), tmp_path / "one", progress=False)
    out = deepspeed_launch(config(world, tmp_path, *more), tmp_path, tmp_path / "straight")
    assert "DeepSpeed ZeRO stage 2: the AdamW state of" in out
    assert gap(weights(one), weights(tmp_path / "straight" / "model")) < 1e-4
    log, log_one = (log_of(tmp_path / name) for name in ("straight", "one"))
    assert [r["grad_norm"] for r in log] == pytest.approx([r["grad_norm"] for r in log_one], rel=1e-4)
    assert min(r["grad_norm"] for r in log) > 0.05  # the clip was active
    assert (tmp_path / "straight" / "validation" / "step_000004" / "all.gif").is_file()
    whole, single = optimizer_state(tmp_path / "straight", 4), optimizer_state(tmp_path / "one", 4)
    assert whole.keys() == single.keys()
    assert max((whole[k] - single[k]).abs().max().item() for k in whole) < 1e-5  # moments gathered whole

    deepspeed_launch(config(world, tmp_path, *more[:-2], "train.steps=2"), tmp_path, tmp_path / "split")
    cfg = config(world, tmp_path, *more)
    save_config(cfg, tmp_path / "split" / "config.yaml")  # continue to step 4
    deepspeed_launch(cfg, tmp_path, tmp_path / "split", resume=True)
    assert gap(weights(tmp_path / "straight" / "model"), weights(tmp_path / "split" / "model")) == 0.0

    import shutil

    shutil.copytree(tmp_path / "split", tmp_path / "single", ignore=shutil.ignore_patterns("step_000004"))
    (tmp_path / "single" / "checkpoints" / "latest").write_text("step_000002")
    train(cfg, tmp_path / "single", resume=True, progress=False)  # per-sample noise: the same on one process
    assert gap(weights(tmp_path / "straight" / "model"), weights(tmp_path / "single" / "model")) < 1e-4


def test_deepspeed_zero1_skips_a_step_whose_gradient_is_not_finite_on_one_process(world, tmp_path):
    """ZeRO stage 1, with a NaN gradient on rank 1 alone at step 1 (a finite loss): DeepSpeed's overflow check
    skips the step on both processes and the loop reports it; the run ends where one process that skipped
    step 1 ends."""
    import _nan_grad  # noqa: F401  (registers test_nan_grad here too)

    more = ("train.method=test_nan_grad", "method.bad=[1]", "train.steps=3", "train.save_every=10")
    out = deepspeed_launch(config(world, tmp_path, *more, "method.ranks=[1]"), tmp_path, tmp_path / "zero", stage=1,
                           main=(str(Path(__file__).parent / "_nan_grad.py"),))
    assert "DeepSpeed ZeRO stage 1" in out
    log = log_of(tmp_path / "zero")
    assert [r.get("skipped") for r in log] == [None, 1.0, None] and math.isfinite(log[1]["loss"])
    one = train(config(world, tmp_path, *more, "method.ranks=[0]"), tmp_path / "one", progress=False)
    assert [r.get("skipped") for r in log_of(tmp_path / "one")] == [None, 1.0, None]
    assert gap(weights(one), weights(tmp_path / "zero" / "model")) < 1e-4


def log_of(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("launch, match", [
    ({"zero_optimization": {"stage": 3}}, "stage is 3.*stages 1 and 2 only.*fsdp.yaml"),
    ({"zero_optimization": {"stage": 0}}, "stage is 0.*ddp.yaml"),
    ({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}, "offload_optimizer.device is 'cpu'"),
    ({"zero_optimization": {"stage": 2}, "bf16": {"enabled": True}}, "bf16.enabled.*train.mixed_precision=bf16"),
    ({"zero_optimization": {"stage": 2}, "train_batch_size": 32}, "train_batch_size is 32 but the run's config gives 8"),
    ({"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0}, "gradient_clipping is 1.0 but .* 0.5"),
])
def test_unsupported_deepspeed_configs_are_refused_naming_the_key(launch, match):
    from physalign.train.config import ConfigError
    from physalign.train.zero import deepspeed_config

    with pytest.raises(ConfigError, match=match):
        deepspeed_config(launch, batch_size=8, world=2, grad_clip=0.5)


def test_zero_over_zero_is_refused():
    from physalign.train.config import ConfigError
    from physalign.train.zero import deepspeed_config

    with pytest.raises(ConfigError, match="ZeRO already shards the optimiser state; drop train.shard_optimizer"):
        deepspeed_config({"zero_optimization": {"stage": 2}}, 8, 2, 0.5, shard_optimizer=True)


def test_deepspeed_config_is_filled_from_the_run():
    from physalign.train.zero import deepspeed_config

    launch = {"zero_optimization": {"stage": 2, "reduce_bucket_size": 1000}, "train_batch_size": "auto",
              "gradient_clipping": 0.5}
    got = deepspeed_config(launch, batch_size=8, world=2, grad_clip=0.5)
    assert got["zero_optimization"] == launch["zero_optimization"]  # the user's ZeRO options are kept
    assert (got["train_batch_size"], got["train_micro_batch_size_per_gpu"], got["gradient_accumulation_steps"],
            got["gradient_clipping"]) == (8, 4, 1, 0.5)


def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch):
    from physalign.train import engine

    monkeypatch.setattr(engine, "native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated"):
        engine.warn_emulated_bf16("bf16")
    monkeypatch.setattr(engine, "native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.warn_emulated_bf16("bf16")
        engine.warn_emulated_bf16("no")


def test_local_engine_runs_the_forward_in_the_configured_precision():
    """The bench's step timings build LocalEngines: a bf16 config must be timed under autocast, not in fp32."""
    from physalign.train.config import ConfigError
    from physalign.train.engine import LocalEngine

    layer, x = torch.nn.Linear(4, 3), torch.randn(2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the emulated-bf16 warning on CPUs without bf16
        with LocalEngine("bf16").autocast():
            assert layer(x).dtype == torch.bfloat16
    with LocalEngine().autocast():
        assert layer(x).dtype == torch.float32
    with pytest.raises(ConfigError, match="mixed_precision"):
        LocalEngine("fp8")

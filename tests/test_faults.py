"""Faults injected on purpose (issue 16): kills at exact points, corrupted files, reruns with changed settings.
Each ends in a resumed run, a named error or a refusal, with nothing lost."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from physalign.bench import runner
from physalign.bench.profiles import get_profile
from physalign.cli import app
from physalign.models.interface import load_model
from physalign.process import PARENT_ENV
from physalign.train import checkpoint as ckpt_mod
from physalign.train.config import load_config
from physalign.train.loop import build_model, train

from test_train import TINY, overrides, write_world

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return write_world(tmp_path_factory.mktemp("world"))


def cfg_of(world, tmp, *more):
    return load_config(None, overrides(world, tmp, "train.save_every=2", "train.keep_checkpoints=1",
                                       "optim.ema_decay=0.5", *more))


@pytest.fixture(scope="module")
def straight(world, tmp_path_factory) -> dict:
    """The weights of an uninterrupted 6-step run: what every faulted run must end at."""
    tmp = tmp_path_factory.mktemp("straight")
    return load_model(train(cfg_of(world, tmp, "train.steps=6"), tmp / "run", progress=False)).state_dict()


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def resume(world, tmp, run) -> dict:
    return load_model(train(cfg_of(world, tmp, "train.steps=6"), run, resume=True, progress=False)).state_dict()


def killed_at(monkeypatch, target, name: str, on_call: int):
    """Make ``target.name`` raise KeyboardInterrupt (a kill) on its ``on_call``-th call."""
    real, calls = getattr(target, name), {"n": 0}

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, dies)
    return real


def test_a_kill_between_the_rename_and_latest_resumes_from_what_is_on_disk(world, tmp_path, monkeypatch, straight):
    run = tmp_path / "run"
    real = killed_at(monkeypatch, ckpt_mod, "_write_latest", 2)  # step 4 renamed into place, latest still step 2
    with pytest.raises(KeyboardInterrupt):
        train(cfg_of(world, tmp_path, "train.steps=6"), run, progress=False)
    root = run / "checkpoints"
    assert (root / "latest").read_text() == "step_000002" and (root / "step_000004").is_dir()
    (root / ".latest_leftover").write_text("step_0")  # a kill inside the pointer's own write leaves this
    monkeypatch.setattr(ckpt_mod, "_write_latest", real)
    assert ckpt_mod.latest_checkpoint(run).name == "step_000004"
    assert same(resume(world, tmp_path, run), straight)
    assert not list(root.glob(".latest_*")) and (root / "latest").read_text() == "step_000006"


def test_a_garbage_latest_pointer_is_not_trusted(world, tmp_path, straight):
    run = tmp_path / "run"
    train(cfg_of(world, tmp_path, "train.steps=4"), run, progress=False)
    (run / "checkpoints" / "latest").write_bytes(b"\xff\xfe\x00garbage")
    assert same(resume(world, tmp_path, run), straight)


def corrupt_with_nan(path: Path) -> None:
    """Overwrite the last 64 bytes of a safetensors file's data with float32 NaNs (its size unchanged)."""
    data = bytearray(path.read_bytes())
    data[-64:] = torch.full((16,), float("nan")).numpy().tobytes()
    path.write_bytes(bytes(data))


def test_a_corrupt_checkpoint_is_named_skipped_set_aside_and_never_costs_the_good_one(world, tmp_path, straight, capsys):
    run = tmp_path / "run"
    train(cfg_of(world, tmp_path, "train.steps=4", "train.keep_checkpoints=2"), run, progress=False)
    root = run / "checkpoints"
    corrupt_with_nan(root / "step_000004" / "optimizer.safetensors")
    assert "optimizer.safetensors: its SHA-256 differs" in ckpt_mod.checkpoint_problem(root / "step_000004")
    weights = resume(world, tmp_path, run)  # from step 2; step 4 redone
    out = capsys.readouterr().out
    assert "skipping checkpoint step_000004" in out and "optimizer.safetensors" in out
    assert same(weights, straight)
    assert (root / "bad_step_000004").is_dir()  # kept for inspection, out of the way
    assert ckpt_mod.latest_checkpoint(run).name == "step_000006"  # step 4 redone, then pruned (keep 1)


def test_no_checkpoint_is_pruned_while_the_newer_one_is_not_finite(world, tmp_path, monkeypatch, straight):
    run = tmp_path / "run"
    finite = ckpt_mod._all_finite
    monkeypatch.setattr(ckpt_mod, "_all_finite", lambda state: False if len(list(Path(run, "checkpoints").glob("step_*"))) == 1 else finite(state))
    train(cfg_of(world, tmp_path, "train.steps=4"), run, progress=False)  # keep_checkpoints=1
    root = run / "checkpoints"
    assert (root / "step_000002").is_dir() and (root / "step_000004").is_dir()  # step 2 kept: 4 is not good
    assert "non-finite" in ckpt_mod.checkpoint_problem(root / "step_000004")
    monkeypatch.setattr(ckpt_mod, "_all_finite", finite)
    assert ckpt_mod.latest_checkpoint(run).name == "step_000002"
    assert same(resume(world, tmp_path, run), straight)


@pytest.mark.parametrize("victim", ["rng.safetensors", "ema.safetensors", "optimizer.safetensors", "state.json"])
def test_truncated_files_are_named(world, tmp_path, victim):
    """With a manifest: the checkpoint is skipped naming the file. Without one (a checkpoint from before
    manifests): the load error names the file, through the CLI's one-line error."""
    run = tmp_path / "run"
    train(cfg_of(world, tmp_path, "train.steps=2"), run, progress=False)
    ckpt = run / "checkpoints" / "step_000002"
    path = ckpt / victim
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert ckpt_mod.checkpoint_problem(ckpt).startswith(f"{path}: ")
    (ckpt / "manifest.json").unlink()
    cfg = tmp_path / "cfg.yaml"
    (run / "config.yaml").rename(cfg)
    result = CliRunner().invoke(app, ["train", "--config", str(cfg), "--out", str(run), "--resume", "--set", "train.steps=4"])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and str(path) in result.output and "Traceback" not in result.output


def test_a_kill_during_the_final_export_leaves_no_half_model_and_a_rerun_finishes(world, tmp_path, monkeypatch, straight):
    run = tmp_path / "run"
    model_cls = type(build_model(cfg_of(world, tmp_path).model))
    killed_at(monkeypatch, model_cls, "save_pretrained", 4)  # 3 checkpoints, then the export
    with pytest.raises(KeyboardInterrupt):
        train(cfg_of(world, tmp_path, "train.steps=6"), run, progress=False)
    assert not (run / "model").exists()  # nothing that looks trained
    monkeypatch.undo()
    assert same(resume(world, tmp_path, run), straight)  # all steps done: it exports


def test_config_values_out_of_range_name_the_key():
    for item, key in [("train.steps=-5", "train.steps"), ("train.save_every=0", "train.save_every"),
                      ("train.batch_size=0", "train.batch_size"), ("optim.ema_decay=1.0", "optim.ema_decay"),
                      ("optim.lr=-1", "optim.lr")]:
        result = CliRunner().invoke(app, ["train", "--set", item, "--out", "/nonexistent/run"])
        assert result.exit_code == 2 and f"error: config: {key} must be" in result.output, (item, result.output)


def test_train_errors_are_one_line_and_name_the_file(world, tmp_path):
    def run(*items):
        return CliRunner().invoke(app, ["train", "--out", str(tmp_path / "r"), "--set", f"model.sizes={json.dumps(TINY)}",
                                        "--set", "train.steps=1", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                                        *[a for i in items for a in ("--set", i)]])

    cases = [(("data.manifest=/nowhere/manifest.jsonl",), "/nowhere/manifest.jsonl: no such manifest file"),
             ((f"data.manifest={world}", "data.split=test"), "no lines with split 'test'"),
             ((f"data.manifest={world}", "model.init=/nowhere/model", "model.sizes={}"), "/nowhere/model")]
    bad = tmp_path / "bad.jsonl"
    lines = world.read_text().splitlines()
    row = json.loads(lines[1])
    bad.write_text("\n".join([lines[0], json.dumps({**row, "prompt": " "})]) + "\n")
    cases.append(((f"data.manifest={bad}",), f"{bad}:2: field 'prompt' must be a non-empty string"))
    for items, message in cases:
        result = run(*items)
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, (items, result.output)


def test_a_pickled_only_model_part_is_refused_by_name(tmp_path):
    folder = tmp_path / "model"
    build_model(load_config(None, [f"model.sizes={json.dumps(TINY)}"]).model).save_pretrained(folder)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))  # as a pickled download would be named
    with pytest.raises(ValueError, match=r"transformer: holds only pickled weights \(diffusion_pytorch_model.bin\)"):
        load_model(folder)


# -- the bench --------------------------------------------------------------------------------------------

BASE = Path(__file__).resolve().parents[1] / "checkpoints" / "base"


def test_a_bench_rerun_with_other_settings_is_refused_naming_them(tmp_path):
    profile = get_profile("quick")
    settings = runner.bench_settings(profile, BASE, Path(__file__).resolve().parents[1] / "configs" / "methods")
    runner.claim(tmp_path, settings)
    runner.claim(tmp_path, settings)  # the same settings: fine
    more = runner.bench_settings(profile.with_methods(("sft", "tsa")), BASE, Path(__file__).resolve().parents[1] / "configs" / "methods")
    runner.claim(tmp_path, more)  # methods may be added or left out
    changed = runner.bench_settings(type(profile)(**{**profile.to_dict(), "steps": 20}), BASE,
                                    Path(__file__).resolve().parents[1] / "configs" / "methods")
    with pytest.raises(runner.BenchError, match=r"profile.steps: 30 -> 20"):
        runner.claim(tmp_path, changed)
    (tmp_path / "configs").mkdir()
    for method in ("sft", "tsa"):
        (tmp_path / "configs" / f"{method}.yaml").write_text((BASE.parents[1] / "configs" / "methods" / f"{method}.yaml").read_text() + "\n# edited\n")
    edited = runner.bench_settings(profile.with_methods(("sft",)), BASE, tmp_path / "configs")
    with pytest.raises(runner.BenchError, match=r"methods.sft.config"):
        runner.claim(tmp_path, edited)
    older = tmp_path / "older"  # made before a profile setting existed: it counts as that setting's default
    older.mkdir()
    (older / runner.SETTINGS_FILE).write_text(json.dumps({**settings, "profile": {
        k: v for k, v in settings["profile"].items() if k != "curve_points"}}))
    runner.claim(older, settings)
    with pytest.raises(runner.BenchError, match=r"profile.curve_points: 0 -> 4"):
        runner.claim(older, runner.bench_settings(type(profile)(**{**profile.to_dict(), "curve_points": 4}), BASE,
                                                  Path(__file__).resolve().parents[1] / "configs" / "methods"))
    legacy = tmp_path / "legacy"
    (legacy / "runs" / "sft-s0").mkdir(parents=True)
    with pytest.raises(runner.BenchError, match="without a record of its settings"):
        runner.claim(legacy, settings)


def test_run_bench_refuses_stale_settings_before_any_stage(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    out.mkdir()
    runner.claim(out, runner.bench_settings(get_profile("quick"), BASE, BASE.parents[1] / "configs" / "methods"))
    monkeypatch.setattr(runner, "post_training_data", lambda *a: pytest.fail("a stage ran"))
    with pytest.raises(runner.BenchError, match="profile.steps: 30 -> 31"):
        runner.run_bench(type(get_profile("quick"))(**{**get_profile("quick").to_dict(), "steps": 31}), out)


def test_a_second_bench_in_the_same_folder_is_refused_while_the_first_lives(tmp_path):
    with runner.bench_lock(tmp_path):
        with pytest.raises(runner.BenchError, match=f"another bench \\(pid {os.getpid()}\\)"):
            with runner.bench_lock(tmp_path):
                pass
    with runner.bench_lock(tmp_path):  # released: taken again
        pass


PARENT = """
import sys
from pathlib import Path
from physalign.bench.runner import Job, bench_lock, schedule
out = Path(sys.argv[1])
child = [sys.executable, "-m", "physalign.cli", "train", "--set", "train.steps=1000000", "--set",
         "model.sizes=" + sys.argv[2], "--set", "data.manifest=" + sys.argv[3], "--set", "data.cache_dir=" + sys.argv[4],
         "--out", str(out / "run")]
with bench_lock(out):
    schedule([Job("train", child)], 1, out / "logs")
"""


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_die_with(parent: subprocess.Popen, pids: list[int], timeout: float = 30) -> None:
    """SIGKILL ``parent``; within ``timeout`` seconds every process of ``pids`` must be gone."""
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(k) for k in pids):
        time.sleep(0.2)
    assert not any(alive(k) for k in pids), f"still alive after their parent was killed: {[k for k in pids if alive(k)]}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_killing_the_bench_kills_its_children_and_frees_its_folder(world, tmp_path):
    """A SIGKILLed bench takes its running `physalign train` child with it, and the folder's lock is free."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), json.dumps(TINY), str(world), str(tmp_path / "cache")],
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, kids = time.time() + 120, []
    while time.time() < deadline and not (tmp_path / "run" / "log.jsonl").is_file():  # the child is training
        time.sleep(0.5)
    kids = children(parent.pid)
    assert kids and (tmp_path / "run" / "log.jsonl").is_file()
    assert_die_with(parent, kids)
    with runner.bench_lock(tmp_path):  # the dead bench's lock went with it
        pass


SCORER = """
import sys, time
from functools import partial
from pathlib import Path
from physalign.bench.runner import Job, schedule
schedule([Job("wait", call=partial(time.sleep, 600))], 1, Path(sys.argv[1]) / "logs")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_killing_the_bench_kills_its_worker_processes(tmp_path):
    """A worker process running one of the bench's calls (a score, the step timing) dies with the bench too."""
    parent = subprocess.Popen([sys.executable, "-c", SCORER, str(tmp_path)], env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline, workers = time.time() + 120, []
    while time.time() < deadline and not workers:
        time.sleep(0.5)
        workers = [k for k in children(parent.pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    assert workers
    assert_die_with(parent, workers)


def test_a_child_whose_bench_is_already_gone_exits(tmp_path):
    done = subprocess.run([sys.executable, "-m", "physalign.cli", "--help"], env={**os.environ, PARENT_ENV: "1"},
                          capture_output=True, text=True, timeout=120)  # pid 1 is not its parent
    assert done.returncode == 1 and "Usage" not in done.stdout


CHURN = """
import resource, sys
from physalign.process import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else False
import torch
x = torch.ones(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):  # an activation of 40 MiB, made and freed as a training step does
    x = torch.ones(10 * 2**20)
    del x
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_is_reused_not_mapped_afresh():
    """Without reuse each 40 MiB block is mapped anew and its ~10k pages faulted in again on every round; with
    it the block comes from the heap, which keeps freed pages (a few rounds still grow the heap: torch's aligned
    allocation does not always fit the chunk the last round freed; seen: 6-8 rounds of 20)."""
    def faults(mode: str) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        applied, count = done.stdout.split()
        return applied, int(count)

    (applied, reused), (_, fresh) = faults("reuse"), faults("default")
    pages = 10 * 2**20 * 4 // os.sysconf("SC_PAGE_SIZE")
    assert applied == "True"
    assert fresh > 15 * pages  # the default allocator: most rounds fault every page in again
    assert reused < fresh / 2


def test_reuse_freed_memory_can_be_turned_off(monkeypatch):
    from physalign.process import HEAP_ENV, reuse_freed_memory

    monkeypatch.setenv(HEAP_ENV, "default")
    assert reuse_freed_memory() is False

"""The built wheel, installed into a fresh virtual environment, runs the physics world outside the checkout:
the shipped checkpoints and configs travel inside the package (physalign/_shipped, physalign.assets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, cwd, env=None, timeout=600):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv holding the wheel built from this checkout; its dependencies are read from the test venv's
    site-packages through a .pth line (no download), where physalign itself is only an editable hook that a
    plain path line does not activate."""
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist")], tmp)
    (wheel,) = (tmp / "dist").glob("physalign-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    python = venv / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)], tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return venv, env, tmp / "elsewhere"


@pytest.mark.slow
def test_wheel_carries_the_world_and_runs_the_demo_outside_the_checkout(installed):
    venv, env, elsewhere = installed
    elsewhere.mkdir()
    where = run([str(venv / "bin" / "python"), "-c", "import json, physalign, physalign.assets as a; "
                 "print(json.dumps([physalign.__file__, str(a.shipped_root()), str(a.resolve('configs/methods/tsa.yaml')), "
                 "str(a.resolve('checkpoints/teacher'))]))"], elsewhere, env)
    module, root, config, teacher = map(Path, json.loads(where))
    assert venv in module.parents and ROOT not in module.parents, module
    assert root == module.parent / "_shipped"
    assert config.is_file() and root in config.parents and teacher.is_dir() and root in teacher.parents
    run([str(venv / "bin" / "physalign"), "demo", "--n", "2", "--steps", "2", "--out", "demo"], elsewhere, env)
    report = (elsewhere / "demo" / "report.md").read_text()
    rows = [line.split(" | ")[0] for line in report.splitlines() if line.startswith("| ") and " | 2 | " in line]
    assert rows == ["| simulator", "| base model"], report  # the shipped base was found, sampled and scored
    assert str(root / "checkpoints" / "base") in report
    assert not (elsewhere / "checkpoints").exists()

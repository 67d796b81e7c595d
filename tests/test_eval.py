"""The evaluator must pass the simulator's own videos and flag corrupted ones."""

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from physalign.cli import app
from physalign.eval import evaluate_video
from physalign.eval.stats import bootstrap_ci, summarize
from physalign.world.corrupt import CORRUPTIONS, corrupt
from physalign.world.dataset import generate
from physalign.world.render import render
from physalign.world.scene import prompt_to_scene, sample_scene
from physalign.world.sim import simulate

N = 250


@pytest.fixture(scope="module")
def clean():
    rng = random.Random(11)
    scenes = [sample_scene(rng, held_out=None) for _ in range(N)]
    rollouts = [simulate(s, 1000 + i) for i, s in enumerate(scenes)]
    return scenes, rollouts


def test_simulator_videos_pass(clean):
    scenes, rollouts = clean
    results = [evaluate_video(render(s, r), s) for s, r in zip(scenes, rollouts)]
    for metric in ("pc", "sa", "joint"):
        rate = np.mean([getattr(r, metric) for r in results])
        assert rate >= 0.97, f"{metric} pass rate {rate:.3f} on simulator videos"


# Measured detection rates (see README); kinds held to the >= 95% target.
AT_TARGET = ["teleport", "vanish", "pass_through_floor", "gravity_upward", "size_change", "color_change"]


@pytest.mark.parametrize("kind", AT_TARGET)
def test_corruptions_are_flagged(clean, kind):
    scenes, rollouts = clean
    flagged = []
    for i, (s, r) in enumerate(zip(scenes, rollouts)):
        video = corrupt(s, r, kind, random.Random(i), seed=1000 + i)
        if video is not None:
            flagged.append(not evaluate_video(video, s).joint)
    assert len(flagged) >= 30, f"{kind} applied to only {len(flagged)} scenes"
    assert np.mean(flagged) >= 0.95, f"{kind}: flagged {np.mean(flagged):.3f}"


def test_every_corruption_is_flagged_more_often_than_clean_videos(clean):
    scenes, rollouts = clean
    for kind in CORRUPTIONS:
        flagged = [not evaluate_video(v, s).joint for i, (s, r) in enumerate(zip(scenes, rollouts))
                   if (v := corrupt(s, r, kind, random.Random(i), seed=1000 + i)) is not None]
        assert np.mean(flagged) >= 0.5, f"{kind}: flagged {np.mean(flagged):.3f}"


def test_checks_name_the_failure():
    s = prompt_to_scene("a small red rubber ball is dropped from high up under normal gravity, on a black background")
    r = simulate(s, 0)
    video = corrupt(s, r, "gravity_upward", random.Random(0))
    failed = {c.name for c in evaluate_video(video, s).checks if c.passed is False}
    assert "gravity" in failed or "no_hover" in failed
    wrong_bg = prompt_to_scene("a small red rubber ball is dropped from high up under normal gravity, on a gray background")
    checks = {c.name: c for c in evaluate_video(render(s, r), wrong_bg).checks}
    assert checks["background"].passed is False and "black" in checks["background"].detail


def test_bootstrap_interval():
    mean, lo, hi = bootstrap_ci(np.array([1] * 80 + [0] * 20))
    assert mean == 0.8 and 0.7 < lo < 0.8 < hi < 0.9
    assert bootstrap_ci(np.ones(10))[1:] == (1.0, 1.0)


def test_eval_cli_scores_and_reports_missing_videos(tmp_path):
    generate(tmp_path, 5, "test", seed=3, progress=False)
    (tmp_path / "videos" / "test_00001.mp4").unlink()
    res = CliRunner().invoke(app, ["eval", "--videos", str(tmp_path), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["summary"]["n"] == 4
    assert report["summary"]["errors"][0]["video"] == "videos/test_00001.mp4"
    assert "no such video file" in (tmp_path / "ev" / "eval.md").read_text()

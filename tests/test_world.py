import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from physalign.cli import app
from physalign.video import read_video
from physalign.world import spec
from physalign.world.dataset import ManifestError, generate, load_manifest
from physalign.world.phenomena import phenomena
from physalign.world.render import render
from physalign.world.scene import prompt_to_scene, sample_scene
from physalign.world.sim import simulate

DROP = "a small red rubber ball is dropped from high up under normal gravity, on a black background"


def test_free_fall_matches_gravity_and_rubber_rebounds():
    for force in ("normal", "low"):
        s = prompt_to_scene(DROP.replace("normal gravity", f"{force} gravity"))
        r = simulate(s, seed=3)
        y = r.objects[0].pos[:5, 1]  # before any impact
        accel = np.diff(y, 2) * spec.FPS**2
        assert np.allclose(accel, -spec.GRAVITY[force], rtol=0.02)
    hit = simulate(prompt_to_scene(DROP), seed=3).contacts[0]
    assert hit.b == "floor"
    assert hit.speed_out / hit.speed_in == pytest.approx(spec.MATERIALS["rubber"].restitution, abs=0.05)


def test_clay_does_not_bounce_and_zero_gravity_keeps_still():
    clay = simulate(prompt_to_scene(DROP.replace("rubber", "clay")), seed=1)
    assert all(c.speed_out < 0.5 for c in clay.contacts if c.b == "floor")
    still = simulate(prompt_to_scene(DROP.replace("under normal gravity", "in zero gravity")), seed=1)
    assert np.ptp(still.objects[0].pos, axis=0).max() < 1e-9


def test_objects_stay_in_frame_and_out_of_the_floor():
    rng, outside = random.Random(0), 0
    for i in range(400):
        r = simulate(sample_scene(rng, held_out=None), seed=i)
        for o in r.objects:
            lo, hi = o.pos - o.half_size, o.pos + o.half_size
            outside += bool(lo.min() < -0.01 or hi.max() > spec.WORLD_SIZE + 0.01)
            assert (o.pos[:, 1] - o.half_size).min() > spec.FLOOR_Y - 0.5
    assert outside <= 4  # a rubber ball rebounding off a ramp can leave the frame (about 0.4%)


def test_simulation_is_deterministic():
    s = prompt_to_scene(DROP)
    a, b = render(s, simulate(s, 7)), render(s, simulate(s, 7))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(s, simulate(s, 8)))


def test_render_places_colours_and_structures():
    s = prompt_to_scene(DROP)
    video = render(s, simulate(s, 0), 32, 32)
    assert video.shape == (16, 32, 32, 3) and video.dtype == np.uint8
    assert (video[0, -1] == spec.STRUCTURE_COLOR).all()  # the floor's bottom row
    assert (video[0, 0, 0] == spec.BACKGROUNDS["black"]).all()
    coverage = video[0, :29, :, 0].astype(float).sum() / spec.OBJECT_COLORS["red"][0]  # on black, R = 230 x coverage
    r = spec.SIZES[s.size]  # in units, which are pixels at 32 x 32
    assert coverage == pytest.approx(np.pi * r**2, rel=0.1)  # the ball's disc, anti-aliased


def test_phenomena_are_true_of_the_rollout():
    r = simulate(prompt_to_scene(DROP), seed=0)
    facts = phenomena(prompt_to_scene(DROP), r)
    assert "the red ball accelerates downward" in facts and "the red ball bounces off the floor" in facts
    clay = prompt_to_scene(DROP.replace("rubber", "clay"))
    facts = phenomena(clay, simulate(clay, 0))
    assert "the red ball bounces off the floor" not in facts
    assert "the red ball lands on the floor without bouncing" in facts


def test_generate_writes_videos_and_manifest(tmp_path):
    manifest = generate(tmp_path, 6, "test", seed=1, counterfactuals=True, progress=False)
    rows = load_manifest(manifest)
    assert [r["split"] for r in rows] == ["test"] * 6
    assert rows[2]["ood"] is True
    video = read_video(tmp_path / rows[0]["video"])
    assert video.shape == (16, 32, 32, 3)
    assert (tmp_path / rows[0]["perturbed"]["video"]).is_file()
    again = generate(tmp_path / "again", 6, "test", seed=1, progress=False).read_text()
    assert [json.loads(l)["prompt"] for l in again.splitlines()] == [r["prompt"] for r in rows]
    generate(tmp_path, 2, "train", seed=1, progress=False)
    assert len(load_manifest(manifest)) == 8  # generating a split keeps the others


def test_manifest_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"video": "a.mp4", "prompt": "p", "scene": {}, "phenomena": []}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:1: field 'scene'"):
        load_manifest(bad)
    bad.write_text('{"video": "a.mp4"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:1: missing field 'prompt'"):
        load_manifest(bad)
    bad.write_text("{oops\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:1: not valid JSON"):
        load_manifest(bad)


def test_world_cli(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["world", "generate", "--n", "3", "--split", "val", "--out", str(tmp_path), "--seed", "2"])
    assert res.exit_code == 0, res.output
    assert len(load_manifest(tmp_path / "manifest.jsonl")) == 3
    res = runner.invoke(app, ["world", "parse", "a red ball flies"])
    assert res.exit_code == 2 and "flies" in res.output
    res = runner.invoke(app, ["world", "show", DROP, "--out", str(tmp_path / "c.gif")])
    assert res.exit_code == 0 and (tmp_path / "c.gif").is_file() and "bounces" in res.output

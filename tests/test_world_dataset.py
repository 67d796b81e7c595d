"""Phenomena true of their rollouts; data sets, their manifest and its errors; the world CLI."""

import json
import random
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from physalign.cli import app
from physalign.video import read_video
from physalign.world import spec
from physalign.world.dataset import ManifestError, counterfactual_scene, generate, load_manifest, video_seed
from physalign.world.phenomena import phenomena
from physalign.world.render import render
from physalign.world.scene import PHYSICS_AXES, Scene, prompt_to_scene, sample_scene
from physalign.world.sim import Rollout, simulate

DROP = "a small red rubber ball is dropped from high up under normal gravity, on a black background"


# -- phenomena ----------------------------------------------------------------------------------------
# Each fact's evidence, read independently off the rollout: (pattern after the object's name, check).


def _hits(r: Rollout, surface: str):
    return [c for c in r.contacts if c.a == "primary" and c.b == surface]


def _downhill(r: Rollout) -> float:
    return 1.0 if r.ramp_rises_to == "left" else -1.0


def _resting(s: Scene, r: Rollout) -> bool:
    p = r.objects[0]
    still = np.abs(p.pos[-1] - p.pos[-2]).max() < 0.05
    return still and (p.pos[-1, 1] - p.half_size < spec.FLOOR_Y + 0.2 or bool(_hits(r, "ramp")))


def _away_from_wall(r: Rollout) -> float:
    """The largest step (units per frame) away from the wall after the first impact on it."""
    x = r.objects[0].pos[_hits(r, "wall")[0].frame - 1 :, 0]
    return float(({"left": 1, "right": -1}[r.wall_side] * np.diff(x)).max())


def _fell_back(r: Rollout) -> bool:
    y = r.objects[0].pos[:, 1]
    top = int(y.argmax())
    return 0 < top < len(y) - 1 and y[-1] < y[top] - 0.1


EVIDENCE = {
    r"accelerates downward": lambda s, r: (np.diff(r.objects[0].pos[:, 1], 2) * spec.FPS**2).min() < -0.3 * spec.GRAVITY[s.force],
    r"falls slowly": lambda s, r: s.force == "low" and np.diff(r.objects[0].pos[:, 1]).min() < -0.01,
    r"floats without falling": lambda s, r: s.force == "none" and np.diff(r.objects[0].pos[:, 1]).min() >= -1e-6,
    r"stays where it is": lambda s, r: np.ptp(r.objects[0].pos, axis=0).max() < 1e-6,
    r"rises and slows down": lambda s, r: r.objects[0].pos[1, 1] > r.objects[0].pos[0, 1] and r.objects[0].vel[1, 1] < r.objects[0].vel[0, 1],
    r"falls back down": lambda s, r: _fell_back(r),
    r"moves to the right": lambda s, r: (r.objects[0].pos[:, 0] - r.objects[0].pos[0, 0]).max() >= 0.5,
    r"moves to the left": lambda s, r: (r.objects[0].pos[:, 0] - r.objects[0].pos[0, 0]).min() <= -0.5,
    r"bounces off the floor": lambda s, r: any(c.speed_out > 0 for c in _hits(r, "floor")),
    r"lands on the floor without bouncing": lambda s, r: _hits(r, "floor") and all(c.speed_out < 0.5 for c in _hits(r, "floor")),
    r"hits the wall and bounces back": lambda s, r: _hits(r, "wall") and _away_from_wall(r) > 0,
    r"hits the wall without bouncing": lambda s, r: _hits(r, "wall") and _away_from_wall(r) < 0.5 / spec.FPS,
    r"lands on the ramp": lambda s, r: bool(_hits(r, "ramp")),
    r"bounces off the ramp": lambda s, r: any(c.speed_out > 0 for c in _hits(r, "ramp")),
    r"(rolls|slides) down the ramp": lambda s, r: _hits(r, "ramp")
    and _downhill(r) * (r.objects[0].pos[-1, 0] - r.objects[0].pos[_hits(r, "ramp")[0].frame, 0]) >= 1.0,
    r"collides with the \w+ ball": lambda s, r: bool(_hits(r, "other")),
    r"sets the \w+ ball moving to the right": lambda s, r: r.objects[1].pos[-1, 0] - r.objects[1].pos[0, 0] > 1.0,
    r"sets the \w+ ball moving to the left": lambda s, r: r.objects[1].pos[-1, 0] - r.objects[1].pos[0, 0] < -1.0,
    r"comes to rest": _resting,
    r"slides and stops": lambda s, r: s.kind == "block" and _resting(s, r),
}


def evidence_for(fact: str, scene: Scene):
    subject = f"the {scene.color} {scene.kind} "
    assert fact.startswith(subject), f"{fact!r} does not name {subject!r}"
    rest = fact[len(subject) :]
    matches = [check for pattern, check in EVIDENCE.items() if re.fullmatch(pattern, rest)]
    assert len(matches) == 1, f"no single evidence rule for {fact!r}"
    return matches[0]


def test_every_fact_is_true_of_its_rollout():
    rng, seen = random.Random(5), set()
    for i in range(300):
        s = sample_scene(rng, held_out=None)
        r = simulate(s, i)
        for fact in phenomena(s, r):
            assert evidence_for(fact, s)(s, r), f"seed {i}, {s}: {fact!r} is not true of the rollout"
            seen.add(fact.split(" ", 3)[3])
    assert len(seen) >= 15  # the sample exercised most kinds of fact


def test_evidence_rules_reject_false_facts():
    clay = prompt_to_scene(DROP.replace("rubber", "clay"))
    r = simulate(clay, 0)
    assert not evidence_for("the red ball bounces off the floor", clay)(clay, r)
    assert not evidence_for("the red ball floats without falling", clay)(clay, r)
    assert not evidence_for("the red ball moves to the right", clay)(clay, r)


@pytest.mark.parametrize(
    "prompt, present, absent",
    [
        (DROP, ["accelerates downward", "bounces off the floor"], ["lands on the floor without bouncing", "falls slowly"]),
        (DROP.replace("rubber", "clay"), ["lands on the floor without bouncing", "comes to rest"], ["bounces off the floor"]),
        (DROP.replace("under normal gravity", "in zero gravity"), ["floats without falling", "stays where it is"], ["accelerates downward"]),
        (DROP.replace("under normal gravity", "under low gravity"), ["accelerates downward", "falls slowly"], []),
        ("a small red wood ball is launched slowly upward under normal gravity, on a black background",
         ["rises and slows down", "falls back down"], []),
        # under low gravity a fast launch is still rising when the clip ends: no "falls back down"
        ("a small red wood ball is launched fast upward under low gravity, on a black background",
         ["rises and slows down"], ["falls back down"]),
        ("a small red rubber ball is thrown fast to the right and hits a wall under normal gravity, on a black background",
         ["moves to the right", "hits the wall and bounces back"], ["hits the wall without bouncing"]),
        ("a small red steel ball rolls fast to the left and collides with a green ball under normal gravity, on a black background",
         ["moves to the left", "sets the green ball moving to the left"], []),
        ("a small red wood ball is dropped from high up and lands on a ramp under normal gravity, on a black background",
         ["lands on the ramp", "rolls down the ramp"], []),
        ("a small red clay block slides slowly to the right under normal gravity, on a black background",
         ["moves to the right", "slides and stops"], ["accelerates downward"]),
    ],
)
def test_expected_facts(prompt, present, absent):
    s = prompt_to_scene(prompt)
    facts = phenomena(s, simulate(s, 0))
    name = f"the {s.color} {s.kind}"
    for fact in present:
        assert f"{name} {fact}" in facts, f"{fact!r} missing from {facts}"
    for fact in absent:
        assert f"{name} {fact}" not in facts, f"{fact!r} in {facts}"


# -- data sets ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return out, load_manifest(generate(out, 6, "test", seed=1, counterfactuals=True, progress=False))


def test_manifest_lines_hold_what_the_videos_show(test_split):
    out, rows = test_split
    assert [r["video"] for r in rows] == [f"videos/test_{i:05d}.mp4" for i in range(6)]
    for i, row in enumerate(rows):
        scene = Scene.from_dict(row["scene"])
        assert row["seed"] == video_seed(1, "test", i) and row["split"] == "test"
        assert prompt_to_scene(row["prompt"]) == scene and row["ood"] == scene.is_held_out
        rollout = simulate(scene, row["seed"])
        assert np.array_equal(read_video(out / row["video"]), render(scene, rollout))  # lossless
        assert np.allclose(row["truth"]["pos"]["primary"], rollout.objects[0].pos, atol=1e-4)
        assert len(row["truth"]["contacts"]) == len(rollout.contacts)
        assert row["phenomena"] == phenomena(scene, rollout)
    assert [r["ood"] for r in rows] == [False, False, True, False, False, True]


def test_counterfactuals_change_one_axis_under_the_same_seed(test_split):
    out, rows = test_split
    for row in rows:
        cf = row["perturbed"]
        original, changed = Scene.from_dict(row["scene"]), Scene.from_dict(cf["scene"])
        field = PHYSICS_AXES[cf["axis"]]
        diff = {k for k in row["scene"] if row["scene"][k] != cf["scene"][k]}
        assert field in diff and diff <= {field, "other_color"}
        assert prompt_to_scene(cf["prompt"]) == changed != original
        assert np.array_equal(read_video(out / cf["video"]), render(changed, simulate(changed, row["seed"])))


def test_generation_is_deterministic_from_the_seed(tmp_path, test_split):
    _, rows = test_split
    again = load_manifest(generate(tmp_path / "a", 6, "test", seed=1, progress=False))
    assert [(r["prompt"], r["seed"], r["truth"]) for r in again] == [(r["prompt"], r["seed"], r["truth"]) for r in rows]
    other = load_manifest(generate(tmp_path / "b", 6, "test", seed=2, progress=False))
    assert [r["prompt"] for r in other] != [r["prompt"] for r in rows]


def test_train_and_val_hold_no_held_out_combination(tmp_path):
    rows = load_manifest(generate(tmp_path, 24, "val", seed=0, progress=False, resolution=8, frames=4, counterfactuals=True))
    assert not any(r["ood"] or Scene.from_dict(r["scene"]).is_held_out for r in rows)
    assert read_video(tmp_path / rows[0]["video"]).shape == (4, 8, 8, 3)
    # nor do their counterfactuals, though perturbing often lands on one (e.g. steel -> low gravity)
    assert not any(Scene.from_dict(r["perturbed"]["scene"]).is_held_out for r in rows)
    rng, landed = random.Random(0), 0
    for _ in range(300):
        s = sample_scene(rng, held_out=False)
        landed += counterfactual_scene(s, rng, held_out_allowed=True)[1].is_held_out
        assert not counterfactual_scene(s, rng)[1].is_held_out
    assert landed > 0


def test_regenerating_a_split_replaces_it_and_keeps_the_others(tmp_path):
    manifest = generate(tmp_path, 4, "train", seed=0, progress=False, frames=4)
    generate(tmp_path, 2, "val", seed=0, progress=False, frames=4)
    generate(tmp_path, 3, "train", seed=9, progress=False, frames=4)
    rows = load_manifest(manifest)
    assert [r["split"] for r in rows] == ["val"] * 2 + ["train"] * 3
    assert sorted(p.name for p in (tmp_path / "videos").glob("train_*")) == [f"train_{i:05d}.mp4" for i in range(3)]
    with pytest.raises(ValueError, match="split must be one of"):
        generate(tmp_path, 2, "dev", seed=0, progress=False)


GOOD = {"video": "v.mp4", "prompt": "p", "phenomena": [], "scene": prompt_to_scene(DROP).to_dict()}


@pytest.mark.parametrize(
    "line, message",
    [
        ("{oops", r"m.jsonl:2: not valid JSON"),
        ("[1, 2]", r"m.jsonl:2: expected a JSON object"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "prompt"}), r"m.jsonl:2: missing field 'prompt'"),
        (json.dumps({**GOOD, "phenomena": "bounces"}), r"m.jsonl:2: field 'phenomena' must be a list, got str"),
        (json.dumps({**GOOD, "scene": {**GOOD["scene"], "color": "purple"}}), r"m.jsonl:2: field 'scene': color must be one of"),
        (json.dumps({**GOOD, "scene": {"colour": "red"}}), r"m.jsonl:2: field 'scene': unknown fields \['colour'\]"),
        (json.dumps({**GOOD, "seed": True}), r"m.jsonl:2: field 'seed' must be a int, got bool"),
        (json.dumps({**GOOD, "split": "dev"}), r"m.jsonl:2: field 'split' must be one of"),
        (json.dumps({**GOOD, "truth": {"pos": {}}}), r"m.jsonl:2: missing field 'truth.contacts'"),
        (json.dumps({**GOOD, "perturbed": {"axis": "forces", "prompt": "p", "video": "c.mp4", "scene": {}}}),
         r"m.jsonl:2: field 'perturbed.scene': unknown fields \[\], missing fields"),
    ],
)
def test_load_manifest_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n\n")
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_load_manifest_accepts_good_lines_and_reports_a_missing_file(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "seed": 3, "split": "val", "ood": False}) + "\n")
    assert [r.get("seed") for r in load_manifest(path)] == [None, 3]
    with pytest.raises(ManifestError, match="nothing.jsonl: no such manifest file"):
        load_manifest(tmp_path / "nothing.jsonl")


# -- CLI ----------------------------------------------------------------------------------------------


def test_world_cli_generate_parse_and_show(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["world", "generate", "--n", "3", "--split", "val", "--out", str(tmp_path), "--seed", "2", "--frames", "6"])
    assert res.exit_code == 0, res.output
    assert len(load_manifest(tmp_path / "manifest.jsonl")) == 3 and "videos/s" in res.output
    res = runner.invoke(app, ["world", "generate", "--n", "3", "--split", "dev", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "split must be one of" in res.output
    res = runner.invoke(app, ["world", "parse", DROP])
    assert res.exit_code == 0 and json.loads(res.output) == prompt_to_scene(DROP).to_dict()
    res = runner.invoke(app, ["world", "parse", "a small red ball flies high"])
    assert res.exit_code == 2 and "flies" in res.output
    res = runner.invoke(app, ["world", "show", DROP, "--out", str(tmp_path / "c.gif"), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "c.gif").is_file() and "the red ball bounces off the floor" in res.output
    res = runner.invoke(app, ["world", "show", "a red ball flies", "--out", str(tmp_path / "d.gif")])
    assert res.exit_code == 2 and "flies" in res.output and not (tmp_path / "d.gif").exists()


def test_a_corrupted_set_has_the_clean_sets_scenes_and_fails_physics_where_corrupted(tmp_path):
    """The negative control's training data: the same scenes and prompts as the clean set, each video a
    corrupted copy of a listed kind that applies to it, which the evaluator flags; clean where none applies."""
    from physalign.eval.score import evaluate_video

    kinds = ("teleport", "gain_energy", "freeze_midair", "weak_gravity")
    clean = load_manifest(generate(tmp_path / "clean", 8, "train", seed=3, progress=False))
    bad = load_manifest(generate(tmp_path / "bad", 8, "train", seed=3, progress=False, corrupt_kinds=kinds))
    assert [r["prompt"] for r in bad] == [r["prompt"] for r in clean]
    assert "corrupted" not in clean[0] and sum(r["corrupted"] is not None for r in bad) >= 5
    for c, b in zip(clean, bad):
        same = np.array_equal(read_video(tmp_path / "clean" / c["video"]), read_video(tmp_path / "bad" / b["video"]))
        assert same == (b["corrupted"] is None)
        assert b["corrupted"] is None or b["corrupted"] in kinds
        if b["corrupted"] is not None:
            result = evaluate_video(read_video(tmp_path / "bad" / b["video"]), Scene.from_dict(b["scene"]))
            assert not result.pc, (b["corrupted"], b["prompt"])
    with pytest.raises(ValueError, match=r"unknown corruption kinds \['melt'\]"):
        generate(tmp_path / "x", 1, "train", seed=0, progress=False, corrupt_kinds=("melt",))


def test_a_mislabelled_set_shows_its_slice_under_another_physics_and_the_evaluator_flags_it(tmp_path):
    """The positive control's breaking data: scenes whose prompt says low gravity are simulated under normal
    gravity (prompt and scene unchanged), the rest are the clean set's videos; the evaluator, told the prompted
    scene, passes the others and fails the shown slice wherever the wrong gravity is visible: every throw, drop,
    launch or landing on the ramp (free flight, hops between contacts, a block sliding down the slope), and a
    block set sliding on the floor where the two gravities' friction bends its longest slide by half a pixel or
    more (``corrupt.VISIBLE_BEND``: ``Delta(mu g) T^2 / 12``). Not asserted, because not visible in 16 frames:
    a rolled ball (gravity does not act along a flat floor; friction acts only until it rolls, at 2/3 of its
    start speed whatever g) and a shorter or slower slide."""
    from physalign.eval.score import evaluate_video
    from physalign.world.corrupt import VISIBLE_BEND
    from physalign.world.dataset import Mislabel
    from physalign.world.sim import STRUCTURE_FRICTION

    wrong = Mislabel.parse("force:low=normal")
    clean = load_manifest(generate(tmp_path / "clean", 12, "train", seed=5, progress=False))
    bad = load_manifest(generate(tmp_path / "bad", 12, "train", seed=5, progress=False, mislabel=wrong))
    assert [r["prompt"] for r in bad] == [r["prompt"] for r in clean]
    low = [b["scene"]["force"] == "low" for b in bad]
    assert 0 < sum(low) < len(bad)
    flagged = 0
    for c, b, is_low in zip(clean, bad, low):
        assert b["mislabelled"] == ({"force": "normal"} if is_low else None)
        same = np.array_equal(read_video(tmp_path / "clean" / c["video"]), read_video(tmp_path / "bad" / b["video"]))
        assert same != is_low
        scene = Scene.from_dict(b["scene"])
        result = evaluate_video(read_video(tmp_path / "bad" / b["video"]), scene)
        if not is_low:
            assert result.pc, (b["prompt"], result.failed)
            continue
        moving = np.abs(np.diff(np.array(b["truth"]["pos"]["primary"])[:, 0])) > 0.005  # (T-1,) steps that slide
        cuts = sorted({0, len(moving)} | {k["frame"] for k in b["truth"]["contacts"] if k["a"] == "primary"})
        slide = max(int(moving[i:j].sum()) for i, j in zip(cuts, cuts[1:])) / spec.FPS  # the longest, s
        friction = STRUCTURE_FRICTION * spec.MATERIALS[scene.material].friction * (spec.GRAVITY["normal"] - spec.GRAVITY["low"])
        if not scene.kinematics.startswith("rolled") or (scene.kind == "block" and friction * slide**2 / 12 >= VISIBLE_BEND):
            assert not result.pc, b["prompt"]
            flagged += 1
    assert flagged >= 2


@pytest.mark.parametrize("text, message", [
    ("force-low", "expected FIELD:PROMPTED=SHOWN"), ("mass:low=high", "unknown scene field 'mass'"),
    ("force:low=strong", "force has no value 'strong'"), ("force:low=low", "must differ"),
])
def test_a_bad_mislabel_is_refused_by_name(text, message):
    from physalign.world.dataset import Mislabel

    with pytest.raises(ValueError, match=message):
        Mislabel.parse(text)

"""Each check passes a simulator video where it applies and fails a video that breaks what it tests."""

import random
from dataclasses import replace

import numpy as np
import pytest

from physalign.eval import evaluate_video
from physalign.eval.score import CHECKS
from physalign.world import spec
from physalign.world.corrupt import corrupt
from physalign.world.render import render
from physalign.world.scene import prompt_to_scene
from physalign.world.sim import simulate

DROP = "a small red rubber ball is dropped from high up under normal gravity, on a black background"
THROW = "a large blue wood block is thrown fast to the right under low gravity, on a gray background"
ROLL_INTO_BALL = "a large green steel ball rolls fast to the right and collides with a yellow ball in zero gravity, on a navy background"


def checks(video, scene) -> dict:
    return {c.name: c for c in evaluate_video(video, scene).checks}


def clip(prompt: str, seed: int = 0):
    scene = prompt_to_scene(prompt)
    rollout = simulate(scene, seed)
    return scene, rollout, render(scene, rollout)


def moved(scene, rollout, name: str = "primary", **changes):
    """Render ``rollout`` with one object's track changed."""
    objects = tuple(replace(o, **changes) if o.name == name else o for o in rollout.objects)
    return render(scene, replace(rollout, objects=objects))


def test_every_check_passes_or_does_not_apply_on_simulator_videos():
    for prompt in (DROP, THROW, ROLL_INTO_BALL):
        scene, _, video = clip(prompt)
        got = checks(video, scene)
        assert set(got) == {c.__name__ for c in CHECKS}
        assert all(c.passed is not False for c in got.values()), [c.detail for c in got.values() if c.passed is False]


def test_permanence_fails_a_vanishing_object_but_not_one_leaving_the_view():
    scene, rollout, video = clip(DROP)
    assert checks(corrupt(video, scene, rollout, "vanish", random.Random(0)), scene)["permanence"].passed is False
    pos = rollout.objects[0].pos.copy()
    pos[10:, 1] += np.arange(1, 7) * 6.0  # flies up out of the top border
    assert checks(moved(scene, rollout, pos=pos), scene)["permanence"].passed is True
    pos = rollout.objects[0].pos.copy()
    pos[10:, 1] -= np.arange(1, 7) * 5.0  # sinks out through the bottom border, under the floor
    got = checks(moved(scene, rollout, pos=pos), scene)
    assert got["permanence"].passed is False and got["no_penetration"].passed is False


def test_size_and_colour_must_stay():
    scene, rollout, video = clip(THROW)
    assert checks(video, scene)["size_stability"].passed is True
    assert checks(corrupt(video, scene, rollout, "size_change", random.Random(0)), scene)["size_stability"].passed is False
    shaded = video.copy()
    blue = np.all(shaded[8:] == spec.OBJECT_COLORS["blue"], axis=-1)
    shaded[8:][blue] = (50, 140, 255)  # still nearest blue, 50 away from it
    got = checks(shaded, scene)
    assert got["color_stability"].passed is False and got["objects"].passed is True


def test_continuity_fails_a_teleport():
    scene, rollout, video = clip(THROW)
    assert checks(video, scene)["continuity"].passed is True
    got = checks(corrupt(video, scene, rollout, "teleport", random.Random(0)), scene)["continuity"]
    assert got.passed is False and got.value > 0


def test_gravity_measures_the_scenes_gravity():
    for force in ("normal", "low", "none"):
        scene, rollout, video = clip(THROW.replace("under low gravity", {"normal": "under normal gravity", "low": "under low gravity", "none": "in zero gravity"}[force]), 3)
        got = checks(video, scene)["gravity"]
        assert got.passed is True and got.value == pytest.approx(-spec.GRAVITY[force], abs=0.1 * spec.GRAVITY["normal"])
        wrong = checks(corrupt(video, scene, rollout, "wrong_gravity", random.Random(0)), scene)["gravity"]
        assert wrong.passed is False, wrong.detail
    scene, rollout, video = clip(DROP)
    assert checks(corrupt(video, scene, rollout, "gravity_upward", random.Random(0)), scene)["gravity"].passed is False
    scene, _, video = clip("a small red rubber ball rolls slowly to the left under normal gravity, on a black background")
    assert checks(video, scene)["gravity"].passed is None  # nothing flies


def test_free_flight_and_hover_fail_a_freeze_in_mid_air():
    scene, rollout, video = clip(DROP, 1)
    got = checks(video, scene)
    assert got["free_flight"].passed is True and got["no_hover"].passed is True
    frozen = checks(corrupt(video, scene, rollout, "freeze_midair", random.Random(0)), scene)
    assert frozen["free_flight"].passed is False
    pos = np.repeat(rollout.objects[0].pos[:1], len(rollout.times), axis=0)  # held in the air all along
    still = checks(moved(scene, rollout, pos=pos), scene)
    assert still["no_hover"].passed is False and still["gravity"].passed is False
    zero = prompt_to_scene(DROP.replace("under normal gravity", "in zero gravity"))
    assert checks(moved(zero, rollout, pos=pos), zero)["no_hover"].passed is None


def test_no_penetration_fails_an_object_in_the_floor_or_in_the_other_ball():
    scene, rollout, video = clip(DROP)
    assert checks(corrupt(video, scene, rollout, "pass_through_floor", random.Random(0)), scene)["no_penetration"].passed is False
    scene, rollout, video = clip(ROLL_INTO_BALL)
    pos = rollout.objects[1].pos.copy()
    pos[:, 0] = rollout.objects[0].pos[:, 0] + 1.0  # the second ball inside the first
    assert checks(moved(scene, rollout, "other", pos=pos), scene)["no_penetration"].passed is False


def test_bounce_follows_the_material():
    scene, rollout, video = clip(DROP, 4)
    assert checks(video, scene)["bounce"].passed is True
    assert checks(corrupt(video, scene, rollout, "gain_energy", random.Random(0)), scene)["bounce"].passed is False
    clay = replace(scene, material="clay")
    assert checks(video, clay)["bounce"].passed is False  # a clay ball must not rebound
    low = replace(scene, magnitude="low")  # lands early enough for a rubber rebound to show
    clay_video = render(replace(low, material="clay"), simulate(replace(low, material="clay"), 4))
    assert checks(clay_video, replace(low, material="clay"))["bounce"].passed is True
    assert checks(clay_video, low)["bounce"].passed is False  # a rubber ball must rebound
    zero = replace(scene, force="none")
    assert checks(video, zero)["bounce"].passed is None


def test_momentum_across_a_collision():
    scene, rollout, video = clip(ROLL_INTO_BALL, 1)  # seed 1: the collision comes after frame 2
    assert checks(video, scene)["momentum"].passed is True
    other = rollout.objects[1]
    start = int(np.argmax(np.abs(other.pos[:, 0] - other.pos[0, 0]) > 1e-6))
    pos = other.pos.copy()
    pos[start:, 0] = other.pos[start, 0] + 3 * (other.pos[start:, 0] - other.pos[start, 0])  # struck 3x too fast
    got = checks(moved(scene, rollout, "other", pos=pos), scene)["momentum"]
    assert got.passed is False, got.detail
    assert checks(*clip(DROP)[2:], prompt_to_scene(DROP))["momentum"].passed is None


def test_semantic_checks_read_what_the_prompt_names():
    scene, _, video = clip(DROP)
    assert all(checks(video, scene)[n].passed for n in ("objects", "no_stray_objects", "size", "kind", "background", "direction"))
    for field, value, failing in (("color", "blue", "objects"), ("size", "large", "size"), ("kind", "block", "kind"),
                                  ("background", "navy", "background"), ("kinematics", "launched_up", "direction")):
        got = checks(video, replace(scene, **{field: value}))[failing]
        assert got.passed is False, (field, got.detail)
    painted = video.copy()
    painted[:, :3, :3] = spec.OBJECT_COLORS["green"]
    assert checks(painted, scene)["no_stray_objects"].passed is False


def test_direction_fails_the_mirrored_video():
    scene, _, video = clip("a small red rubber ball rolls slowly to the left under normal gravity, on a black background")
    assert checks(video, scene)["direction"].passed is True
    assert checks(video[:, :, ::-1], scene)["direction"].passed is False
    still = prompt_to_scene(DROP.replace("under normal gravity", "in zero gravity"))
    _, rollout, fall = clip(DROP)
    assert checks(render(still, simulate(still, 0)), still)["direction"].passed is True
    assert checks(fall, still)["direction"].passed is False  # dropped in zero gravity stays put

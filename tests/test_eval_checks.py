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


def test_magnitude_reads_the_start_against_the_worlds_ranges():
    """The other magnitude's video (same draws) fails SA's magnitude; the prompted one passes; ranges come
    from the world's start states and do not overlap where the magnitude shows."""
    from physalign.eval.semantics import magnitude_ranges

    roll = "a small yellow wood ball rolls slowly to the left under normal gravity, on a black background"
    launch = "a large cyan clay ball is launched fast upward under low gravity, on a navy background"
    for prompt in (DROP, THROW, roll, launch):
        scene, _, video = clip(prompt)
        other = replace(scene, magnitude="low" if scene.magnitude == "high" else "high")
        ranges = magnitude_ranges(scene)
        assert ranges[scene.magnitude] != ranges[other.magnitude]
        assert checks(video, scene)["magnitude"].passed is True
        shown = render(other, simulate(other, 0))
        assert checks(shown, scene)["magnitude"].passed is False, checks(shown, scene)["magnitude"].detail
    assert magnitude_ranges(prompt_to_scene(DROP))["high"] == (spec.FLOOR_Y + 15.0 + 2.5, spec.FLOOR_Y + 20.0 + 2.5)


def test_magnitude_does_not_apply_where_the_worlds_ranges_overlap():
    scene = prompt_to_scene("a small red rubber ball is dropped from a low height and lands on a ramp under low gravity, on a black background")
    _, _, video = clip("a small red rubber ball is dropped from a low height and lands on a ramp under low gravity, on a black background")
    assert checks(video, scene)["magnitude"].passed is None


def test_bounce_checks_fail_a_bounce_above_the_floor_and_the_wrong_rebound():
    scene, rollout, video = clip(DROP)
    got = checks(corrupt(video, scene, rollout, "early_bounce", random.Random(0)), scene)
    assert got["impact_point"].passed is False or got["free_flight"].passed is False
    assert checks(video, scene)["rebound"].passed is True and checks(video, scene)["impact_point"].passed is True
    dead = corrupt(video, scene, rollout, "wrong_restitution", random.Random(0))  # a rubber ball landing as steel or clay
    assert checks(dead, scene)["rebound"].passed is False


def test_sliding_fails_a_block_that_never_slows():
    scene, rollout, video = clip("a large red rubber block slides fast to the right under normal gravity, on a black background")
    assert checks(video, scene)["sliding"].passed is True
    got = checks(corrupt(video, scene, rollout, "frictionless_slide", random.Random(0)), scene)
    assert got["sliding"].passed is False, got["sliding"].detail


def test_the_friction_fit_matches_a_plain_search():
    """_friction_fit's vectorised search equals fitting each candidate law by numpy.polyfit, one by one."""
    from physalign.eval.physics import FRAME_TIME, SLIDE_STEPS, _friction_fit

    rng = np.random.default_rng(1)
    n, mu_g = 12, 5.0
    t = np.arange(n) * FRAME_TIME
    x = 3 + 4 * t - mu_g * np.minimum(t, 0.5) ** 2 / 2 + 2 * np.maximum(t - 0.5, 0) + rng.normal(0, 0.05, n)
    for rolls in (False, True):
        best = np.inf
        for s in (1.0, -1.0):
            for tau in np.arange(n * SLIDE_STEPS + 1) * FRAME_TIME / SLIDE_STEPS:
                inside = np.minimum(t, tau)
                y = x - s * mu_g * (tau * inside - inside**2 / 2)
                fit = np.polyval(np.polyfit(t, y, 1), t) if rolls else np.full(n, y.mean())
                best = min(best, ((y - fit) ** 2).sum())
            y = x + s * mu_g * t**2 / 2
            slope, cut = np.polyfit(t, y, 1)
            if rolls or s * slope >= mu_g * t[-1]:
                best = min(best, ((y - (cut + slope * t)) ** 2).sum())
        assert _friction_fit(x, mu_g, rolls) == pytest.approx(best, rel=1e-9, abs=1e-12)


def _shown_with(prompt: str, force: str, seed: int = 0):
    """The scene of ``prompt`` and its video simulated under ``force`` instead (the prompt unchanged)."""
    scene = prompt_to_scene(prompt)
    shown = replace(scene, force=force)
    return scene, render(shown, simulate(shown, seed))


def test_gravity_uses_the_hops_down_the_ramp():
    """A ball thrown onto the ramp under low gravity hops down it in flights of 3-5 frames between contacts;
    shown under normal gravity, the shared fit over those hops tells the levels apart."""
    from physalign.world.dataset import video_seed

    prompt = "a large blue wood ball is thrown slowly to the right and lands on a ramp under low gravity, on a black background"
    seed = video_seed(5, "train", 1)  # contacts at frames 4, 9, 12, 13 under normal gravity
    scene, _, video = clip(prompt, seed)
    assert checks(video, scene)["gravity"].passed is not False
    wrong = checks(*_shown_with(prompt, "normal", seed)[::-1])
    assert wrong["gravity"].passed is False and "frames" in wrong["gravity"].detail


def test_ramp_slide_bounds_the_acceleration_down_the_slope():
    """A block dropped onto the ramp slides down no faster than g sin(theta), and no slower than friction and
    its impacts allow: under the other gravity it fails either way."""
    for prompt, force in (("a small red wood block is dropped from a low height and lands on a ramp under low gravity, "
                           "on a black background", "normal"),
                          ("a small red wood block is dropped from a low height and lands on a ramp under normal gravity, "
                           "on a black background", "low")):
        scene, _, video = clip(prompt)
        assert checks(video, scene)["ramp_slide"].passed is True
        assert checks(*_shown_with(prompt, force)[::-1])["ramp_slide"].passed is False


def test_sliding_judges_the_slide_back_from_a_wall():
    """A block that never leaves the floor is judged after it bounces off the wall too (a wall adds no friction
    impulse on the floor): shown with normal gravity's friction under a low-gravity prompt, it slows too fast."""
    prompt = "a small red rubber block slides fast to the right and hits a wall under low gravity, on a gray background"
    scene, _, video = clip(prompt, 3)
    assert checks(video, scene)["sliding"].passed is True
    got = checks(*_shown_with(prompt, "normal", 3)[::-1])["sliding"]
    assert got.passed is False and "2 slides" in got.detail


def test_a_rolled_ball_slides_until_it_rolls_at_two_thirds_of_its_speed():
    """Set moving without spin, a ball slides at mu g until it rolls with 2/3 of its start speed, later under a
    weaker gravity: a fast rubber roll of a normal-gravity prompt shown under low gravity fails ``sliding``."""
    prompt = "a large red rubber ball rolls fast to the right under normal gravity, on a black background"
    scene, _, video = clip(prompt)
    assert checks(video, scene)["sliding"].passed is True
    assert checks(*_shown_with(prompt, "low")[::-1])["sliding"].passed is False

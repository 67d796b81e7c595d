"""Corruptions: each applies only where its violation is real and visible, and its video shows it (read
here with plain colour masks, not with the evaluator)."""

import random

import numpy as np
import pytest

from physalign.world import spec
from physalign.world.corrupt import (BOUNCE_GAP, CORRUPTIONS, FREEZE_FRAMES, RESTITUTION_SHIFT, SIZE_FACTOR, SLOW_MOTION,
                                     TELEPORT_MIN, VANISH_FRAMES, NotApplicable, applicable, ballistic, corrupt)
from physalign.world.render import render
from physalign.world.scene import prompt_to_scene
from physalign.world.sim import STRUCTURE_FRICTION, simulate

DROP = "a small red rubber ball is dropped from high up under normal gravity, on a black background"
ROLL = "a large red steel block slides slowly to the right under normal gravity, on a black background"


def clip(prompt: str, seed: int = 0):
    scene = prompt_to_scene(prompt)
    rollout = simulate(scene, seed)
    return scene, rollout, render(scene, rollout)


def red_mask(video: np.ndarray) -> np.ndarray:
    return np.all(video == spec.OBJECT_COLORS["red"], axis=-1)  # (T, H, W) pixels wholly red


def centre(video: np.ndarray) -> np.ndarray:
    """(T, 2) mean (x, y) of the wholly red pixels, in world units (y up); NaN where there are none."""
    t, h, w, _ = video.shape
    mask = red_mask(video)
    count = mask.sum((1, 2))
    x = (mask.sum(1) * (np.arange(w) + 0.5)).sum(1) / np.maximum(count, 1) * spec.WORLD_SIZE / w
    y = spec.WORLD_SIZE - (mask.sum(2) * (np.arange(h) + 0.5)).sum(1) / np.maximum(count, 1) * spec.WORLD_SIZE / h
    return np.where(count[:, None] > 0, np.stack([x, y], 1), np.nan)


def test_kinds_apply_where_their_violation_can_happen():
    scene, rollout, _ = clip(DROP)
    assert set(applicable(scene, rollout)) == set(CORRUPTIONS) - {"frictionless_slide"}  # it slides on nothing
    zero, zero_rollout, zero_video = clip(DROP.replace("under normal gravity", "in zero gravity"))
    kinds = applicable(zero, zero_rollout)
    assert not {"freeze_midair", "gravity_upward", "gain_energy", "pass_through_floor"} & set(kinds)
    with pytest.raises(NotApplicable, match="freeze_midair does not apply.*gravity"):
        corrupt(zero_video, zero, zero_rollout, "freeze_midair", random.Random(0))
    roll, roll_rollout, _ = clip(ROLL)
    assert not {"freeze_midair", "gain_energy", "pass_through_floor", "wrong_gravity", "early_bounce",
                "wrong_restitution"} & set(applicable(roll, roll_rollout))
    assert "frictionless_slide" not in applicable(roll, roll_rollout)  # steel: friction bends the slide too little
    with pytest.raises(KeyError, match="unknown corruption"):
        corrupt(zero_video, zero, zero_rollout, "melt", random.Random(0))


def test_corruptions_leave_their_inputs_alone_and_keep_the_format():
    scene, rollout, video = clip(DROP)
    before, pos = video.copy(), rollout.objects[0].pos.copy()
    for kind in applicable(scene, rollout):
        bad = corrupt(video, scene, rollout, kind, random.Random(1))
        assert bad.shape == video.shape and bad.dtype == np.uint8 and (bad != video).any(), kind
    assert (video == before).all() and (rollout.objects[0].pos == pos).all()


def test_teleport_jumps_farther_than_any_motion():
    scene, rollout, video = clip(DROP)
    steps = np.hypot(*np.diff(centre(corrupt(video, scene, rollout, "teleport", random.Random(0))), axis=0).T)
    assert np.nanmax(steps) >= TELEPORT_MIN
    assert np.sort(steps)[-2] < 5.0  # one jump; every other step is the real motion


def test_freeze_holds_the_object_in_the_air():
    scene, rollout, video = clip(DROP, 1)
    pos = centre(corrupt(video, scene, rollout, "freeze_midair", random.Random(0)))
    still = np.flatnonzero(np.all(np.abs(np.diff(pos, axis=0)) < 1e-9, axis=1))
    assert len(still) >= FREEZE_FRAMES
    assert (pos[still, 1] - spec.SIZES["small"] > spec.FLOOR_Y + 1.0).all()  # in the air, clear of the floor


def test_vanish_colour_and_size():
    scene, rollout, video = clip(DROP)
    gone = red_mask(corrupt(video, scene, rollout, "vanish", random.Random(0))).any((1, 2))
    assert (~gone).sum() == VANISH_FRAMES and gone[0] and gone[-1]
    recoloured = corrupt(video, scene, rollout, "color_change", random.Random(0))
    red = red_mask(recoloured).any((1, 2))
    k = int(np.argmin(red))
    assert red[:k].all() and not red[k:].any()
    others = [np.all(recoloured[k:] == c, axis=-1).any() for n, c in spec.OBJECT_COLORS.items() if n != "red"]
    assert sum(others) == 1
    grown = red_mask(corrupt(video, scene, rollout, "size_change", random.Random(0))).sum((1, 2)).astype(float)
    plain = red_mask(video).sum((1, 2))
    assert grown.max() / plain.max() > SIZE_FACTOR**2 * 0.8


def test_pass_through_floor_sinks_below_it():
    scene, rollout, video = clip(DROP)
    bad = corrupt(video, scene, rollout, "pass_through_floor", random.Random(0))
    floor_row = int(spec.WORLD_SIZE - spec.FLOOR_Y)  # rows from here down show the floor
    assert red_mask(bad)[:, floor_row + 1 :].any() and not red_mask(video)[:, floor_row + 1 :].any()


def test_gravity_corruptions_change_the_acceleration():
    scene, rollout, video = clip("a large red wood ball is thrown fast to the right under low gravity, on a black background")
    t = np.arange(10) / spec.FPS

    def accel(video):  # of the wholly red pixels' centre over the first 10 frames
        return 2 * np.polyfit(t, centre(video)[:10, 1], 2)[0]

    assert accel(video) == pytest.approx(-spec.GRAVITY["low"], abs=5)
    assert accel(corrupt(video, scene, rollout, "gravity_upward", random.Random(0))) == pytest.approx(spec.GRAVITY["low"], abs=5)
    assert abs(accel(corrupt(video, scene, rollout, "wrong_gravity", random.Random(0))) + spec.GRAVITY["low"]) > 10


def test_gain_energy_rebounds_faster_than_the_impact():
    p = ballistic((0.0, 10.0), (1.0, 0.0), 60.0, np.linspace(0, 1.2, 200), floor=2.0, restitution=1.3)
    fall = np.sqrt(2 * 60.0 * 8.0)
    vy = np.diff(p[:, 1]) / np.diff(np.linspace(0, 1.2, 200))
    hit = int(np.argmax(vy > 0))
    assert vy[hit] == pytest.approx(1.3 * fall, rel=0.05)
    assert p[:, 1].min() >= 2.0 - 1e-9 and p[hit:, 1].max() > 10.0  # rises above where it fell from
    scene, rollout, video = clip(DROP, 4)
    assert "gain_energy" in applicable(scene, rollout)
    heights = centre(corrupt(video, scene, rollout, "gain_energy", random.Random(0)))[:, 1]
    landing = int(np.nanargmin(heights[:10]))
    assert np.nanmax(heights[landing:]) > heights[0] * 0.9  # a rubber ball would peak at 0.72 of its drop


def test_early_bounce_turns_above_the_floor():
    scene, rollout, video = clip(DROP)
    heights = centre(corrupt(video, scene, rollout, "early_bounce", random.Random(0)))[:, 1] - spec.SIZES["small"]
    low = int(np.nanargmin(heights[:12]))
    assert heights[low] >= spec.FLOOR_Y + BOUNCE_GAP - 0.5  # never nearer the floor than the gap (a pixel's rounding)
    assert np.nanmax(heights[low:]) > heights[low] + 2.0  # and it rebounds from there


def test_wrong_restitution_rebounds_as_another_material():
    scene, rollout, video = clip(DROP)
    choices = CORRUPTIONS["wrong_restitution"].candidates(scene, rollout)
    assert choices and all(abs(e - spec.MATERIALS["rubber"].restitution) >= RESTITUTION_SHIFT for _, e in choices)
    bad = centre(corrupt(video, scene, rollout, "wrong_restitution", random.Random(0)))[:, 1]
    good = centre(video)[:, 1]
    hit = choices[0][0].frame
    assert np.nanmax(np.abs(bad[hit:] - good[hit:])) >= 1.0 and np.allclose(bad[: hit - 1], good[: hit - 1])


def test_frictionless_slide_keeps_its_speed():
    scene, rollout, video = clip("a large red rubber block slides fast to the right under normal gravity, on a black background")
    t = np.arange(len(video)) / spec.FPS

    def curvature(video):  # twice the quadratic coefficient of the wholly red pixels' centre x while in view
        x = centre(video)[:, 0]
        shown = np.isfinite(x) & (x < spec.WORLD_SIZE - 5)
        return 2 * np.polyfit(t[shown], x[shown], 2)[0]

    mu_g = STRUCTURE_FRICTION * spec.MATERIALS["rubber"].friction * spec.GRAVITY["normal"]
    assert curvature(video) < -0.5 * mu_g  # the real block slows down
    assert abs(curvature(corrupt(video, scene, rollout, "frictionless_slide", random.Random(0)))) < 0.2 * mu_g


def test_slow_motion_plays_the_clip_at_half_speed():
    """The slowed drop shows the rollout's first half at every other frame, and falls at a quarter of gravity
    (read from the wholly red pixels while it falls); in zero gravity slowing is no violation."""
    scene, rollout, video = clip(DROP)
    slow = corrupt(video, scene, rollout, "slow_motion", random.Random(0))
    assert np.array_equal(slow[::2], video[: (len(video) + 1) // 2])
    first = next(c.frame for c in rollout.contacts if c.b == "floor")  # the slowed fall lasts 2 x as many frames
    t = np.arange(min(2 * first - 1, len(video))) / spec.FPS
    y = centre(slow)[: len(t), 1]
    assert 2 * np.polyfit(t, y, 2)[0] == pytest.approx(-SLOW_MOTION**2 * spec.GRAVITY["normal"], rel=0.1)
    zero, zero_rollout, _ = clip(DROP.replace("under normal gravity", "in zero gravity"))
    assert "slow_motion" not in applicable(zero, zero_rollout)

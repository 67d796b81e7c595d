"""Evaluator v2: the noise is measured from the video, tests follow from it, and the continuous physics errors.

Calibrated both ways: lawful trajectories seen through 0.1 px of per-frame centroid jitter pass, while
flights under another gravity (one of the world's levels or the base model's own 0.55) are still flagged."""

import math
import random

import numpy as np
import pytest

from physalign.eval import evaluate_video
from physalign.eval import motion, physics
from physalign.eval.checks import view
from physalign.eval.track import observe
from physalign.world.corrupt import applicable, corrupt, jittered
from physalign.world.render import render
from physalign.world.scene import sample_scene
from physalign.world.sim import simulate

N = 200


@pytest.fixture(scope="module")
def scenes():
    rng = random.Random(99)
    out = []
    for i in range(N):
        scene = sample_scene(rng, held_out=None)
        out.append((scene, simulate(scene, 50_000 + i)))
    return out


@pytest.fixture(scope="module")
def shaken(scenes):
    """The scenes' rollouts with 0.1 px of jitter, rendered: (scene, rollout, video, result)."""
    rng = np.random.default_rng(5)
    out = []
    for scene, rollout in scenes:
        moved = jittered(rollout, 0.1, rng)
        video = render(scene, moved)
        out.append((scene, moved, video, evaluate_video(video, scene)))
    return out


def test_lawful_flights_through_a_tenth_of_a_pixel_of_jitter_pass(shaken):
    rate = np.mean([r.pc for *_, r in shaken])
    assert rate >= 0.90, f"PC {rate:.3f} on jittered simulator videos"


@pytest.mark.parametrize("kind", ["wrong_gravity", "weak_gravity", "gravity_upward", "teleport"])
def test_violations_are_still_flagged_through_the_jitter(shaken, kind):
    flagged = [not evaluate_video(corrupt(video, scene, rollout, kind, random.Random(i)), scene).pc
               for i, (scene, rollout, video, _) in enumerate(shaken) if kind in applicable(scene, rollout)]
    assert len(flagged) >= 20 and np.mean(flagged) >= 0.95, (kind, len(flagged), np.mean(flagged))


def measured(video, scene) -> motion.Noise:
    return view(observe(video, scene), scene).noise


def test_the_noise_is_measured_from_the_video(scenes, shaken):
    """On jittered videos the measurement is near the jitter combined with the renderer's lattice; on clean
    ones it is small; and an impulse (a teleport) barely moves it."""
    noisy = [measured(video, scene).measured for scene, _, video, _ in shaken]
    expected = math.hypot(0.1, motion.NOISE_FLOOR / 2)
    assert 0.75 * expected <= np.nanmedian(noisy) <= 1.3 * expected, np.nanmedian(noisy)
    clean = [measured(render(s, r), s).measured for s, r in scenes[:60]]
    assert np.nanmedian(clean) < 0.6 * np.nanmedian(noisy)
    moved = []
    for i, (scene, rollout, video, _) in enumerate(shaken[:80]):
        if "teleport" in applicable(scene, rollout):
            base = measured(video, scene)
            bad = measured(corrupt(video, scene, rollout, "teleport", random.Random(i)), scene)
            if math.isfinite(base.measured) and math.isfinite(bad.measured):
                moved.append(bad.measured / base.measured)
    assert len(moved) >= 20 and np.median(moved) < 1.3, np.median(moved)


def test_noise_bounds_follow_from_alpha():
    noise = motion.Noise(0.1, 1000)
    assert noise.sigma == pytest.approx(0.1 * (1 + motion.ESTIMATE_ERROR / math.sqrt(1000 / 2.31)))
    assert noise.bound(1) == pytest.approx(2.5758 * noise.sigma, rel=1e-3)  # two-sided 1%
    assert noise.radial_bound(1) == pytest.approx(noise.sigma * math.sqrt(2 * math.log(100)))
    assert motion.Noise(math.nan, 3).sigma == motion.NOISE_FLOOR
    assert motion.Noise(5.0, 10_000).sigma == motion.NOISE_CAP


@pytest.mark.parametrize("k, want", [(10, 23.209), (30, 50.892), (60, 88.379)])
def test_chi2_quantile_against_tabulated_values(k, want):
    assert motion.chi2_quantile(0.99, k) == pytest.approx(want, rel=0.01)


def test_the_ballistic_residual_matches_a_plain_polynomial_fit():
    """Per segment: y + g t^2 / 2 and x fitted by a line (numpy.polyfit) give the same squared residuals."""
    rng = np.random.default_rng(0)
    g, n = 40.0, 16
    t = np.arange(n) * motion.FRAME_TIME
    pos = np.stack([3 + 5 * t, 20 + 2 * t - 0.5 * g * t**2], 1) + rng.normal(0, 0.1, (n, 2))
    segments = [(0, 6), (8, 16)]

    class B:  # what _ballistic_squares reads of a body
        pass

    body = B()
    body.pos = pos
    squares, frames = physics._ballistic_squares(body, g, segments)
    want = 0.0
    for a, b in segments:
        tt = t[: b - a]
        for y in (pos[a:b, 0], pos[a:b, 1] + 0.5 * g * tt**2):
            want += float(((np.polyval(np.polyfit(tt, y, 1), tt) - y) ** 2).sum())
    assert frames == 14 and squares == pytest.approx(want, rel=1e-9)


def test_continuous_errors_see_how_far_gravity_is_off(scenes):
    """gravity_ratio is about 1 on the simulator's videos and about WEAK_GRAVITY on the corrupted ones."""
    from physalign.world.corrupt import WEAK_GRAVITY

    clean, weak = [], []
    for i, (scene, rollout) in enumerate(scenes):
        video = render(scene, rollout)
        r = evaluate_video(video, scene)
        assert set(r.physics_errors) == set(physics.ERRORS)
        if r.physics_errors["gravity_ratio"] is not None:
            clean.append(r.physics_errors["gravity_ratio"])
        if "weak_gravity" in applicable(scene, rollout):
            bad = evaluate_video(corrupt(video, scene, rollout, "weak_gravity", random.Random(i)), scene)
            if bad.physics_errors["gravity_ratio"] is not None:
                weak.append(bad.physics_errors["gravity_ratio"])
    assert len(clean) >= 50 and abs(np.median(clean) - 1) < 0.05, np.median(clean)
    assert len(weak) >= 15 and abs(np.median(weak) - WEAK_GRAVITY) < 0.08, np.median(weak)

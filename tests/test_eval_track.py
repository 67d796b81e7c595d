"""The tracker: palette labels, sub-pixel centroids and areas against the simulator's ground truth."""

import random

import numpy as np
import pytest

from physalign.eval.track import COLOR_INDEX, PALETTE, PALETTE_NAMES, label_pixels, observe
from physalign.world import spec
from physalign.world.render import render
from physalign.world.scene import prompt_to_scene, sample_scene
from physalign.world.sim import simulate

DROP = "a small red rubber ball is dropped from high up under normal gravity, on a black background"


@pytest.fixture(scope="module")
def clips():
    rng = random.Random(21)
    out = []
    for i in range(60):
        scene = sample_scene(rng, held_out=None)
        rollout = simulate(scene, 500 + i)
        out.append((scene, rollout, render(scene, rollout)))
    return out


def test_labels_are_the_nearest_palette_colour_and_mixes_are_not_solid():
    exact = PALETTE.astype(np.uint8)[None, None]  # (1, 1, K, 3)
    codes = label_pixels(exact)[0, 0]
    assert [int(c) & 15 for c in codes] == list(range(len(PALETTE_NAMES)))
    assert all(c & 16 for c in codes)  # every palette colour is solid
    red, blue = PALETTE[COLOR_INDEX["red"]], PALETTE[COLOR_INDEX["blue"]]
    mix = label_pixels(np.rint((red + blue) / 2).astype(np.uint8)[None, None, None])[0, 0, 0]
    assert not mix & 16  # half red, half blue is no solid colour


def test_centroids_and_areas_match_the_simulation(clips):
    errors, area_errors = [], []
    for scene, rollout, video in clips:
        obs = observe(video, scene)
        apart = np.ones(len(rollout.times), bool)
        if len(rollout.objects) == 2:
            a, b = rollout.objects
            apart = np.hypot(*(a.pos - b.pos).T) > a.half_size * 1.5 + b.half_size + 1
        for obj in rollout.objects:
            track = obs.tracks[obj.name]
            seen = track.present & ~track.clipped
            errors.append(np.abs(track.pos[seen] - obj.pos[seen]).ravel())
            true_area = (np.pi if obj.kind == "ball" else 4.0) * obj.half_size**2
            area_errors.append(np.abs(track.area[seen & apart] / true_area - 1))
    errors, area_errors = np.concatenate(errors), np.concatenate(area_errors)
    assert errors.max() < 0.2, errors.max()  # a block's edges sit on a 1/4-pixel lattice: error <= 1/8
    assert np.percentile(errors, 90) < 0.1
    assert area_errors.max() < 0.1 and np.median(area_errors) < 0.02


def test_shape_reads_ball_or_block(clips):
    for scene, _, video in clips:
        track = observe(video, scene).tracks["primary"]
        seen = track.present & ~track.clipped
        assert (np.median(track.squareness[seen]) > 0) == (scene.kind == "block"), scene
        fill = np.median(track.fill[seen])
        assert (fill > 0.97) if scene.kind == "block" else (0.7 < fill < 0.92)


def test_stray_colour_background_and_border():
    scene = prompt_to_scene(DROP)
    rollout = simulate(scene, 1)
    video = render(scene, rollout)
    video[5, 2:5, 2:5] = spec.OBJECT_COLORS["green"]  # a 3 x 3 green blob in frame 5
    obs = observe(video, scene)
    assert obs.stray_area[5] == pytest.approx(9.0) and obs.stray_area[np.arange(16) != 5].max() == 0
    assert obs.background == "black"
    track = obs.tracks["primary"]
    assert track.present.all() and not track.clipped.any()
    assert np.isfinite(track.rgb).all(1).any() and np.allclose(track.rgb[np.isfinite(track.rgb).all(1)], spec.OBJECT_COLORS["red"])

    rollout.objects[0].pos[3] = (-1000.0, -1000.0)  # gone in frame 3
    rollout.objects[0].pos[4] = (0.5, 20.0)  # half out of the left border in frame 4
    track = observe(render(scene, rollout), scene).tracks["primary"]
    assert not track.present[3] and np.isnan(track.pos[3]).all()
    assert track.clipped[4] and not track.clipped[5]


def test_positions_are_in_world_units_at_any_resolution():
    scene = prompt_to_scene(DROP)
    rollout = simulate(scene, 2)
    track = observe(render(scene, rollout, 64, 64), scene).tracks["primary"]
    assert np.abs(track.pos - rollout.objects[0].pos).max() < 0.1
    assert np.allclose(track.area, np.pi * spec.SIZES["small"] ** 2, rtol=0.03)


def test_shared_acceleration_fit_matches_plain_least_squares():
    from physalign.eval.motion import fit_acceleration

    rng = np.random.default_rng(0)
    t = np.arange(16) / spec.FPS
    y = 20 + 3 * t - 0.5 * 15.0 * t**2 + rng.normal(0, 0.05, 16)
    y[9:] += 4.0 - 7 * t[9:]  # a second segment with its own offset and velocity
    segments = [(1, 8), (9, 15)]
    got, std = fit_acceleration(y, segments)
    design = np.zeros((13, 5))  # per segment: offset, velocity; shared: A / 2
    rows = [k for a, b in segments for k in range(a, b)]
    for i, k in enumerate(rows):
        s = 0 if k < 9 else 1
        design[i, 2 * s : 2 * s + 2] = 1.0, t[k] - t[segments[s][0]]
        design[i, 4] = (t[k] - t[segments[s][0]]) ** 2
    plain = 2 * np.linalg.lstsq(design, y[rows], rcond=None)[0][4]
    assert got == pytest.approx(plain, rel=1e-9) and got == pytest.approx(-15.0, abs=4 * std)


def test_touching_sees_an_impact_between_frames():
    from physalign.eval.motion import touching

    gap = np.array([8.0, 6.0, 3.5, 0.8, 1.6, 3.8, 5.5, 7.0])  # lands between frames 3 and 4, rebounds
    assert touching(gap, 60.0).tolist() == [False, False, False, True, True, False, False, False]
    assert touching(np.array([8.0, 6.0, np.nan, 5.0]))[1:3].all()  # unseen frames may touch

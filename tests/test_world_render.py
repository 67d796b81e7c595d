"""The renderer: colours and placement, y up, anti-aliased edges, and the fast path equal to the plain one."""

import random

import numpy as np
import pytest

from physalign.world import spec
from physalign.world.render import covers, render, static_layer, subpixel_centres
from physalign.world.scene import Scene, prompt_to_scene, sample_scene
from physalign.world.sim import ObjectTrack, Rollout, simulate

DROP = "a small red rubber ball is dropped from high up under normal gravity, on a black background"
RED = np.array(spec.OBJECT_COLORS["red"])


def reference(scene: Scene, rollout: Rollout, height: int, width: int, s: int) -> np.ndarray:
    """The plain renderer: paint every sub-pixel of every frame, then average s x s blocks."""
    sub, _ = static_layer(scene.background, rollout.wall_side, rollout.ramp_rises_to, height, width, s)
    canvas = np.repeat(sub[None], len(rollout.times), axis=0)
    x, y = subpixel_centres(height * s, width * s)
    for o in rollout.objects:
        canvas[covers(o.kind, o.pos, o.half_size, x, y[:, None])] = spec.OBJECT_COLORS[o.color]
    return np.rint(canvas.reshape(len(rollout.times), height, s, width, s, 3).mean(axis=(2, 4))).astype(np.uint8)


def still(kind: str, x: float, y: float, half: float, frames: int = 2, **geometry) -> Rollout:
    pos = np.tile([x, y], (frames, 1)).astype(float)
    track = ObjectTrack("primary", "red", kind, half, 1.0, pos, np.zeros_like(pos))
    return Rollout(np.arange(frames) / spec.FPS, (track,), [], **geometry)


def test_fast_renderer_equals_the_plain_one():
    rng = random.Random(0)
    for i in range(60):
        s = sample_scene(rng, held_out=None)
        r = simulate(s, i)
        if i % 4 == 0:  # objects partly or wholly out of the picture, as corrupted rollouts have them
            r.objects[0].pos[3:5] = [-1000.0, 5.0]
            r.objects[0].pos[6] = [spec.WORLD_SIZE - 0.3, spec.WORLD_SIZE + 0.5]
            r.objects[0].pos[7, 1] = -1.0
        height, width, ss = [(32, 32, 4), (24, 40, 3), (17, 31, 5), (64, 64, 2)][i % 4]
        assert np.array_equal(render(s, r, height, width, ss), reference(s, r, height, width, ss)), f"scene {i}"


def test_fast_renderer_equals_the_plain_one_where_the_balls_touch():
    s = prompt_to_scene("a large red rubber ball rolls fast to the right and collides with a green ball under normal gravity, on a navy background")
    r = simulate(s, 0)
    r.objects[1].pos[:] = r.objects[0].pos + [2 * 2.5 - 0.3, 0.0]  # overlapping, sharing edge pixels
    assert np.array_equal(render(s, r), reference(s, r, 32, 32, 4))


def test_shape_dtype_and_default_size():
    s = prompt_to_scene(DROP)
    video = render(s, simulate(s, 0, frames=9))
    assert video.shape == (9, spec.DEFAULT_RESOLUTION, spec.DEFAULT_RESOLUTION, 3) and video.dtype == np.uint8
    assert render(s, simulate(s, 0, frames=3), 16, 48).shape == (3, 16, 48, 3)
    with pytest.raises(ValueError, match="height, width >= 4"):
        render(s, simulate(s, 0), 2, 32)


def test_background_floor_wall_and_ramp_colours():
    s = prompt_to_scene("a small red rubber ball is thrown fast to the right and hits a wall under normal gravity, on a gray background")
    video = render(s, simulate(s, 0))
    floor_rows = int(spec.FLOOR_Y)  # 1 unit = 1 pixel at 32 x 32
    assert (video[:, -floor_rows:] == spec.STRUCTURE_COLOR).all()
    assert (video[:, : -floor_rows - 1, int(spec.WALL_X["right"]) :] == spec.STRUCTURE_COLOR).all()
    assert (video[0, 0, 0] == spec.BACKGROUNDS["gray"]).all()
    ramp = prompt_to_scene("a small red wood ball is dropped from high up and lands on a ramp under normal gravity, on a navy background")
    frame = render(ramp, simulate(ramp, 0))[0]
    # the wedge rising to the left: full at its high end just above the floor, absent right of its foot
    top = spec.WORLD_SIZE - spec.RAMP_HIGH_X
    assert (frame[-floor_rows - 2, int(top) + 1] == spec.STRUCTURE_COLOR).all()
    assert (frame[-floor_rows - 2, int(spec.WORLD_SIZE - spec.RAMP_LOW_X) + 2] == spec.BACKGROUNDS["navy"]).all()
    assert (frame[2, 2] == spec.BACKGROUNDS["navy"]).all()


def test_block_is_placed_exactly_with_y_up():
    # a block of half-side 2 centred at (10, 20): pixels x in [8, 12), rows (32 - 22, 32 - 18) = [10, 14)
    video = render(prompt_to_scene(DROP), still("block", 10.0, 20.0, 2.0))
    red = (video[0] == RED).all(-1)
    rows, cols = np.nonzero(red)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (10, 13, 8, 11)
    assert red.sum() == 16  # no other pixel is red


def test_higher_in_the_world_is_higher_on_screen():
    sky = slice(0, int(spec.WORLD_SIZE - spec.FLOOR_Y))  # rows above the floor
    low = render(prompt_to_scene(DROP), still("ball", 16.0, 8.0, 1.5))[0, sky, :, 0].astype(float)
    high = render(prompt_to_scene(DROP), still("ball", 16.0, 24.0, 1.5))[0, sky, :, 0].astype(float)
    row = lambda img: (img * (np.arange(len(img))[:, None] + 0.5)).sum() / img.sum()
    assert row(high) < row(low)
    assert row(low) == pytest.approx(spec.WORLD_SIZE - 8.0, abs=0.05)  # world y 8 -> image row 24 (centre)


def test_edges_are_anti_aliased_and_carry_the_area():
    # a ball off the pixel grid: coverage on black is R / 230 per pixel and sums to the disc's area
    sky = slice(0, int(spec.WORLD_SIZE - spec.FLOOR_Y))  # rows above the floor
    frame = render(prompt_to_scene(DROP), still("ball", 15.3, 17.7, 1.5), supersample=8)[0, sky]
    coverage = frame[..., 0].astype(float) / RED[0]
    assert ((coverage > 0.05) & (coverage < 0.95)).sum() >= 8  # partial edge pixels
    assert coverage.sum() == pytest.approx(np.pi * 1.5**2, rel=0.03)
    # its colour-weighted centroid lands on the centre, to a small fraction of a pixel
    rows, cols = np.indices(coverage.shape) + 0.5
    assert (coverage * cols).sum() / coverage.sum() == pytest.approx(15.3, abs=0.05)
    assert spec.WORLD_SIZE - (coverage * rows).sum() / coverage.sum() == pytest.approx(17.7, abs=0.05)


def test_units_scale_with_width_and_height():
    video = render(prompt_to_scene(DROP), still("block", 16.0, 16.0, 2.0), height=32, width=64)[0]
    red = (video == RED).all(-1)
    assert red.any(0).sum() == 8 and red.any(1).sum() == 4  # 4 units: 8 pixels across, 4 down

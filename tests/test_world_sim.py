"""The simulator: physics that matches spec, objects that stay in frame and out of the structures."""

import itertools
import random

import numpy as np
import pytest

from physalign.world import spec
from physalign.world.scene import Scene, perturb, prompt_to_scene, sample_scene
from physalign.world.sim import InitialDraws, Rollout, simulate

DROP = "a small red rubber ball is dropped from high up under normal gravity, on a black background"
TOLERANCE = 0.1  # units an object may overlap a surface (pymunk's collision slop and one substep of travel)


def scene(prompt: str = DROP, **changes) -> Scene:
    return Scene(**{**prompt_to_scene(prompt).to_dict(), **changes})


# -- geometry helpers: separating-axis overlap depth of convex polygons, per frame --------------------


def outline(kind: str, pos: np.ndarray, half: float) -> np.ndarray:
    """(T, n, 2) corners of the object's outline (a ball as a 64-gon inscribed in its circle)."""
    if kind == "ball":
        a = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        corners = half * np.stack([np.cos(a), np.sin(a)], 1)
    else:
        corners = half * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    return pos[:, None, :] + corners


def overlap(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Penetration depth (T,) of convex polygons p (T, n, 2) and q (T, m, 2) or (m, 2); 0 when apart."""
    q = np.broadcast_to(q, (len(p),) + q.shape[-2:])
    depth = np.full(len(p), np.inf)
    for poly in (p, q):
        edges = np.roll(poly, -1, axis=1) - poly
        normals = np.stack([-edges[..., 1], edges[..., 0]], -1)
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)  # (T, k, 2)
        a, b = p @ normals.transpose(0, 2, 1), q @ normals.transpose(0, 2, 1)  # (T, n, k), (T, m, k)
        gap = np.minimum(a.max(1), b.max(1)) - np.maximum(a.min(1), b.min(1))  # (T, k)
        depth = np.minimum(depth, gap.min(1))
    return np.maximum(depth, 0.0)


def structures(rollout: Rollout) -> dict[str, np.ndarray]:
    far, top = -50.0, spec.WORLD_SIZE + 50
    out = {"floor": np.array([[far, far], [top, far], [top, spec.FLOOR_Y], [far, spec.FLOOR_Y]])}
    if rollout.wall_side is not None:
        x = spec.WALL_X[rollout.wall_side]
        lo, hi = (x, top) if rollout.wall_side == "right" else (far, x)
        out["wall"] = np.array([[lo, far], [hi, far], [hi, top], [lo, top]])
    if rollout.ramp_rises_to is not None:
        out["ramp"] = np.array(spec.ramp_vertices(rollout.ramp_rises_to))
    return out


def problems(rollout: Rollout) -> list[str]:
    """Every way the rollout leaves the visible box or overlaps a surface or the other object."""
    found = []
    shapes = {o.name: outline(o.kind, o.pos, o.half_size) for o in rollout.objects}
    for o in rollout.objects:
        lo, hi = (o.pos - o.half_size).min(), (o.pos + o.half_size).max()
        if lo < -1e-6 or hi > spec.WORLD_SIZE + 1e-6:
            found.append(f"{o.name} leaves the box: extent [{lo:.2f}, {hi:.2f}]")
        for name, poly in structures(rollout).items():
            if (depth := overlap(shapes[o.name], poly).max()) > TOLERANCE:
                found.append(f"{o.name} is {depth:.2f} inside the {name}")
    if "other" in shapes and (depth := overlap(shapes["primary"], shapes["other"]).max()) > TOLERANCE:
        found.append(f"the balls overlap by {depth:.2f}")
    return found


def test_overlap_helper_finds_penetration_and_separation():
    square = outline("block", np.array([[0.0, 0.0]]), 1.0)
    assert overlap(square, outline("block", np.array([[1.5, 0.0]]), 1.0))[0] == pytest.approx(0.5)
    assert overlap(square, outline("block", np.array([[2.5, 0.0]]), 1.0))[0] == 0.0
    ball = outline("ball", np.array([[0.0, 2.8]]), 1.0)
    floor = np.array([[-5, -5], [5, -5], [5, 2], [-5, 2]], float)
    assert overlap(ball, floor)[0] == pytest.approx(0.2, abs=0.01)
    assert overlap(outline("ball", np.array([[0.0, 3.5]]), 1.0), floor)[0] == 0.0


# -- staying in frame ---------------------------------------------------------------------------------


def test_random_scenes_stay_in_frame_and_out_of_the_structures():
    rng = random.Random(0)
    for i in range(300):
        s = sample_scene(rng, held_out=None)
        found = problems(simulate(s, seed=i))
        assert not found, f"seed {i}, {s}: {found}"


@pytest.mark.parametrize("interaction", ["ramp", "wall", "ball"])
def test_extreme_draws_stay_in_frame(interaction):
    """Every corner of the draw cube for the riskiest scenes: fast, bouncy, large, under low and normal gravity."""
    kinematics = {"ramp": ("dropped", "thrown_right"), "wall": ("thrown_left", "rolled_right"), "ball": ("rolled_left",)}
    extra = {"other_color": "green"} if interaction == "ball" else {}
    for kin, kind, material, magnitude, force in itertools.product(
        kinematics[interaction], ("ball", "block"), ("rubber", "clay"), ("low", "high"), ("normal", "low")
    ):
        s = Scene(kind, "red", "large", "black", kin, force, material, interaction, magnitude, **extra)
        for u in itertools.product((0.0, 1.0), repeat=4):
            found = problems(simulate(s, 0, draws=InitialDraws(*u)))
            assert not found, f"draws {u}, {s}: {found}"


def test_problems_helper_sees_a_rollout_leaving_the_box_or_sinking():
    r = simulate(scene(), 0)
    r.objects[0].pos[5, 0] = spec.WORLD_SIZE - 0.5
    assert any("leaves the box" in p for p in problems(r))
    r = simulate(scene(), 0)
    r.objects[0].pos[-1, 1] = spec.FLOOR_Y
    assert any("inside the floor" in p for p in problems(r))


# -- physics ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("force", ["normal", "low"])
def test_free_fall_acceleration_matches_gravity(force):
    r = simulate(scene(force=force), seed=3)
    first_hit = min((c.frame for c in r.contacts), default=len(r.times))
    y = r.objects[0].pos[:first_hit, 1]
    accel = np.diff(y, 2) * spec.FPS**2  # second differences of positions
    assert len(accel) >= 3
    assert np.allclose(accel, -spec.GRAVITY[force], rtol=0.01)


@pytest.mark.parametrize("material", ["rubber", "wood", "steel"])
def test_bounce_restitution_matches_the_material(material):
    r = simulate(scene(material=material, magnitude="low"), seed=5, frames=36)  # long enough for the rebound apex
    hit = r.contacts[0]
    assert (hit.a, hit.b) == ("primary", "floor")
    assert hit.speed_out / hit.speed_in == pytest.approx(spec.MATERIALS[material].restitution, abs=0.03)
    # the same, measured from the trajectory: the rebound apex against the drop height, h1 / h0 = e^2
    y = r.objects[0].pos[:, 1] - r.objects[0].half_size - spec.FLOOR_Y
    after = y[hit.frame :]
    apex = after[: np.argmax(np.diff(after) < 0) + 1].max()  # first local maximum after the impact
    assert np.sqrt(apex / y[0]) == pytest.approx(spec.MATERIALS[material].restitution, abs=0.06)


def test_clay_does_not_bounce_and_stays_on_the_floor():
    r = simulate(scene(material="clay"), seed=1)
    floor = [c for c in r.contacts if c.b == "floor"]
    assert floor and all(c.speed_out < 0.5 for c in floor)
    resting = r.objects[0].pos[floor[0].frame :, 1] - r.objects[0].half_size
    assert np.abs(resting - spec.FLOOR_Y).max() < TOLERANCE


def test_zero_gravity_keeps_a_dropped_object_still():
    still = simulate(scene(force="none"), seed=1)
    assert np.ptp(still.objects[0].pos, axis=0).max() < 1e-9 and not still.contacts
    falling = simulate(scene(), seed=1)
    assert np.ptp(falling.objects[0].pos, axis=0).max() > 5


def test_sliding_block_slows_with_friction_and_ball_keeps_rolling():
    block = simulate(scene("a small red wood block slides slowly to the right under normal gravity, on a black background"), 0)
    vx = block.objects[0].vel[:, 0]
    assert vx[0] > 3 and vx[-1] == pytest.approx(0.0, abs=1e-6)
    ball = simulate(scene("a small red wood ball rolls slowly to the right under normal gravity, on a black background"), 0)
    assert ball.objects[0].vel[-1, 0] > 0.5 * ball.objects[0].vel[0, 0]


def test_mass_from_density_and_area():
    r = simulate(scene("a large red steel block slides fast to the left and collides with a green ball in zero gravity, on a black background"), 0)
    primary, other = r.objects
    assert primary.mass == pytest.approx(spec.MATERIALS["steel"].density * (2 * spec.SIZES["large"]) ** 2)
    assert other.mass == pytest.approx(spec.MATERIALS["steel"].density * np.pi * spec.SIZES["small"] ** 2)


# -- interactions: the structure is where the scene says and the event happens within the clip -----------


@pytest.mark.parametrize("direction", ["left", "right"])
def test_wall_stands_where_the_object_goes_and_is_hit(direction):
    r = simulate(scene(f"a small red rubber ball is thrown fast to the {direction} and hits a wall under normal gravity, on a black background"), 2)
    assert r.wall_side == direction and r.ramp_rises_to is None
    hit = next(c for c in r.contacts if c.b == "wall")
    assert hit.speed_out / hit.speed_in == pytest.approx(spec.MATERIALS["rubber"].restitution, abs=0.05)
    sign = 1 if direction == "right" else -1
    assert sign * r.objects[0].vel[hit.frame, 0] < 0  # bounced back


@pytest.mark.parametrize("direction", ["left", "right"])
def test_second_ball_is_struck_and_set_moving(direction):
    s = scene(f"a small red steel ball rolls fast to the {direction} and collides with a green ball under normal gravity, on a black background")
    r = simulate(s, 4)
    primary, other = r.objects
    assert (other.name, other.color, other.kind) == ("other", "green", "ball")
    x = spec.SECOND_BALL_X if direction == "right" else spec.WORLD_SIZE - spec.SECOND_BALL_X
    assert other.pos[0] == pytest.approx([x, spec.FLOOR_Y + spec.SIZES[spec.SECOND_BALL_SIZE]])
    hit = next(c for c in r.contacts if c.b == "other")
    sign = 1 if direction == "right" else -1
    assert sign * other.vel[-1, 0] > 1.0 and hit.frame < len(r.times) - 1


def test_ramp_faces_a_thrown_object_and_lies_under_a_dropped_one():
    thrown = simulate(scene("a small red wood ball is thrown slowly to the left and lands on a ramp under normal gravity, on a black background"), 0)
    assert thrown.ramp_rises_to == "left"
    dropped = simulate(scene("a small red wood ball is dropped from high up and lands on a ramp under low gravity, on a black background"), 0)
    assert dropped.ramp_rises_to == "left" and dropped.wall_side is None
    for r in (thrown, dropped):
        assert r.contacts[0].b == "ramp"


def test_every_interaction_happens_early_in_the_clip():
    rng, wanted = random.Random(3), {"wall": "wall", "ball": "other", "ramp": "ramp"}
    seen = 0
    for i in range(400):
        s = sample_scene(rng, held_out=None)
        if s.interaction == "none":
            continue
        seen += 1
        r = simulate(s, i)
        frames = [c.frame for c in r.contacts if c.a == "primary" and c.b == wanted[s.interaction]]
        assert frames and 2 <= frames[0] <= 12, f"seed {i}: {s} meets its {s.interaction} at frames {frames}"
    assert seen > 100


# -- determinism and counterfactuals --------------------------------------------------------------------


def test_same_seed_same_rollout_and_different_seed_differs():
    s = scene()
    a, b, c = simulate(s, 7), simulate(s, 7), simulate(s, 8)
    assert np.array_equal(a.objects[0].pos, b.objects[0].pos) and a.contacts == b.contacts
    assert not np.array_equal(a.objects[0].pos, c.objects[0].pos)


def test_counterfactual_reuses_the_draws():
    s = scene()
    base = simulate(s, 11)
    for axis in ("forces", "materials"):
        other = perturb(s, axis, random.Random(0))
        cf = simulate(other, 11)
        assert np.array_equal(cf.objects[0].pos[0], base.objects[0].pos[0])  # same start
        assert not np.array_equal(cf.objects[0].pos, base.objects[0].pos)  # different motion
    high = simulate(scene(DROP.replace("from high up", "from a low height")), 11)
    fraction = lambda r, lo_hi: (r.objects[0].pos[0, 1] - spec.SIZES["small"] - spec.FLOOR_Y - lo_hi[0]) / (lo_hi[1] - lo_hi[0])
    assert fraction(high, spec.DROP_HEIGHT["low"]) == pytest.approx(fraction(base, spec.DROP_HEIGHT["high"]))


def test_rollout_shapes_and_times():
    r = simulate(scene(), 0, frames=10)
    assert r.times.shape == (10,) and r.times[1] == pytest.approx(1 / spec.FPS)
    assert r.objects[0].pos.shape == (10, 2) and r.objects[0].vel.shape == (10, 2)
    assert r.objects[0].pos.dtype == np.float64
    with pytest.raises(ValueError, match="frames must be >= 2"):
        simulate(scene(), 0, frames=1)

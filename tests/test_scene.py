import random

import pytest

from physalign.world import scene as g


def _sample(n, seed=0, held_out=None):
    rng = random.Random(seed)
    return [g.sample_scene(rng, held_out=held_out) for _ in range(n)]


def test_prompt_round_trip_is_exact():
    for s in _sample(2000):
        assert g.prompt_to_scene(g.scene_to_prompt(s)) == s


def test_a_random_subset_of_all_scenes_round_trips():
    scenes = list(g.all_scenes())
    assert len(scenes) == len(set(scenes)) > 30000
    for s in random.Random(0).sample(scenes, 4000):
        assert g.prompt_to_scene(g.scene_to_prompt(s)) == s, g.scene_to_prompt(s)
    prompts = {g.scene_to_prompt(s) for s in random.Random(1).sample(scenes, 4000)}
    assert len(prompts) == 4000  # distinct scenes read differently


def test_all_scenes_holds_every_value_and_the_held_out_combinations():
    scenes = list(g.all_scenes())
    for field, values in g.FIELD_VALUES.items():
        assert {getattr(s, field) for s in scenes} == set(values), field
    for combo in g.HELD_OUT_COMBOS:
        assert any(all(getattr(s, k) == v for k, v in combo.items()) for s in scenes), combo


@pytest.mark.parametrize(
    "prompt, words",
    [
        ("a small red rubber ball flies fast to the right under normal gravity, on a black background", "flies"),
        ("a small red blue rubber ball is dropped from high up under normal gravity, on a black background", "'red', 'blue'"),
        ("a small red rubber ball is dropped fast under normal gravity, on a black background", "'is dropped', 'fast'"),
        ("a small red rubber block rolls fast to the left under normal gravity, on a black background", "'block', 'rolls'"),
        ("a small red rubber ball is dropped from high up and hits a wall under normal gravity, on a black background", "wall"),
        ("a small red rubber ball is thrown fast under normal gravity, on a black background", "needs a direction"),
        ("a small red rubber ball is dropped from high up, on a black background", "missing force"),
    ],
)
def test_bad_prompts_name_the_words(prompt, words):
    with pytest.raises(g.PromptError, match=words.replace("(", r"\(")):
        g.prompt_to_scene(prompt)


def test_contradictory_scenes_are_rejected():
    with pytest.raises(g.SceneError, match="needs gravity"):
        g.Scene("ball", "red", "small", "black", "launched_up", "none", "rubber", "none", "low")
    with pytest.raises(g.SceneError, match="other_color"):
        g.Scene("ball", "red", "small", "black", "rolled_left", "normal", "rubber", "ball", "low", other_color="red")


@pytest.mark.parametrize("axis", list(g.PHYSICS_AXES))
def test_perturb_changes_exactly_one_physics_axis(axis):
    rng = random.Random(1)
    field = g.PHYSICS_AXES[axis]
    changed = 0
    for s in _sample(300, seed=2):
        try:
            p = g.perturb(s, axis, rng)
        except g.SceneError:
            continue
        changed += 1
        diff = {k for k in s.to_dict() if getattr(s, k) != getattr(p, k)}
        assert field in diff
        assert diff <= {field, "other_color"}
        assert diff == {field} or field == "interaction"
    assert changed > 100


def test_held_out_split():
    assert not any(s.is_held_out for s in _sample(500, held_out=False))
    assert all(s.is_held_out for s in _sample(100, held_out=True))
    mixed = _sample(500, held_out=None)
    assert 0 < sum(s.is_held_out for s in mixed) < 500


def test_sampling_is_deterministic_from_the_rng():
    assert _sample(50, seed=4) == _sample(50, seed=4) != _sample(50, seed=5)


def test_from_dict_names_bad_fields():
    with pytest.raises(g.SceneError, match="unknown fields \\['colour'\\]"):
        g.Scene.from_dict({"colour": "red"}, "m.jsonl:3")

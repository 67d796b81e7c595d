"""The world judge's training and held-out data: questions about world videos with known answers.

Deterministic from ``seed``: scene ``i`` of a split is drawn and simulated as ``physalign world generate``
does (its seed is ``dataset.video_seed(seed, split, i)``), so train and val scenes never coincide by
construction of the seeds, and neither split holds the test split's held-out combinations. Each scene gives
two videos, its simulator video ("clean") and one corrupted copy (:mod:`physalign.world.corrupt`; the kind is
the least used so far among those that apply, so kinds are balanced), and these questions (:class:`Item`):

- ``fact``: the clean video with each of its own ``phenomena`` (yes) and with facts of other scenes of the
  same split that do not hold for it (no). Most false facts are *renamed* to this scene's objects ("the red
  ball bounces off the floor" asked of a red clay ball), so that the judge must check the event and not only
  the colours; the rest name an object the video does not show. A false fact is dropped when the video may
  still show it although the phenomena rules do not list it (:func:`possibly_true`).
- ``plausibility``: :data:`PLAUSIBILITY_QUESTION` of the clean video (yes) and of the corrupted one (no), for
  the kinds in ``plausibility_kinds``.
- ``prompt``: the clean video with its own prompt (yes) and with mismatched prompts (no): one physics axis
  changed with ``scene.perturb`` (kept only if the changed scene's video differs visibly), one semantic
  attribute changed, a physics and a semantic change together, another scene's prompt. Corrupted videos of a
  kind in ``prompt_kinds`` are asked their own prompt (no).

``wrong_gravity`` is a prompt-match negative by default, not a plausibility one [ours]: it shows a valid flight
under another of the world's gravities, which no video-only question can tell from a clean video of that
gravity; what is wrong is that the prompt names a different gravity.

Ratings 1..5 [ours; the papers' judges are rated by people]: facts 5 if true, 1 if false; plausibility 5
for a clean video, 2 for an appearance corruption (the motion is lawful, the object changes), 1 for a
physical one; prompt match ``RATING_BY_MISMATCHES[m]`` for ``m`` scene attributes that differ from the
video's scene (5, 4, 3, 2, 2, then 1 for five or more).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from physalign.judges.base import PLAUSIBILITY_QUESTION, fact_question, prompt_question
from physalign.world import scene as grammar
from physalign.world import spec
from physalign.world.corrupt import CORRUPTIONS, applicable, check_kinds, corrupt
from physalign.world.dataset import draw_scene, make_example, video_seed
from physalign.world.phenomena import MOVE_DISTANCE, drop, phenomena
from physalign.world.render import render
from physalign.world.sim import Rollout, simulate

KINDS = ("fact", "plausibility", "prompt")
DEFAULT_PROMPT_KINDS = ("wrong_gravity",)
# the kinds the shipped judge was trained on (kinds added to the world since are held out by default)
DEFAULT_PLAUSIBILITY_KINDS = ("teleport", "freeze_midair", "vanish", "color_change", "pass_through_floor",
                              "gain_energy", "gravity_upward", "size_change")
RATING_BY_MISMATCHES = (5, 4, 3, 2, 2)  # m = 0..4 mismatched attributes; 1 beyond
PLAUSIBILITY_RATING = {"clean": 5, "appearance": 2, "physical": 1}
RENAME_SHARE = 0.75  # of false facts, renamed to this scene's objects
VISIBLE_LEVEL = 64  # uint8 channel difference that makes a pixel differ visibly
VISIBLE_PIXELS = 4  # a changed scene looks different if one frame has this many visibly different pixels
SEMANTIC_VALUES = {"kind": grammar.KINDS, "color": grammar.COLORS, "size": grammar.SIZES,
                   "background": grammar.BACKGROUNDS, "other_color": grammar.COLORS}


@dataclass(frozen=True)
class Item:
    """One question about one video, with its answer."""

    video: int  # row of :attr:`JudgeData.videos`
    question: str
    yes: bool
    rating: int  # 1..5
    kind: str  # one of KINDS
    tag: str  # group in the held-out report: "true", a corruption kind, a physics axis, a scene field, ...


@dataclass
class SceneRecord:
    scene: grammar.Scene
    seed: int  # of its simulation
    rollout: Rollout
    facts: list[str]
    clean: int  # video rows
    corrupted: int | None
    kind: str | None  # corruption kind of ``corrupted``


@dataclass
class JudgeData:
    videos: np.ndarray  # uint8 (V, T, H, W, 3)
    items: list[Item]
    scenes: list[SceneRecord]

    def groups(self) -> list[list[list[int]]]:
        """Per scene, its items' indices grouped by (kind, answer): the training sampler's strata."""
        of_video = {}
        for s, record in enumerate(self.scenes):
            of_video[record.clean] = s
            if record.corrupted is not None:
                of_video[record.corrupted] = s
        strata = [{} for _ in self.scenes]
        for i, item in enumerate(self.items):
            strata[of_video[item.video]].setdefault((item.kind, item.yes), []).append(i)
        return [list(groups.values()) for groups in strata]


def build_split(split: str, n: int, seed: int, plausibility_kinds=DEFAULT_PLAUSIBILITY_KINDS,
                prompt_kinds=DEFAULT_PROMPT_KINDS, frames: int = spec.DEFAULT_FRAMES,
                resolution: int = spec.DEFAULT_RESOLUTION, progress: bool = False) -> JudgeData:
    """``n`` scenes of ``split`` and their questions (see the module docstring)."""
    check_kinds(set(plausibility_kinds) | set(prompt_kinds))
    kinds = tuple(plausibility_kinds) + tuple(k for k in prompt_kinds if k not in plausibility_kinds)
    videos, scenes, used = [], [], {k: 0 for k in kinds}
    for i in tqdm(range(n), desc=f"judge data {split}", unit="scene", disable=not progress):
        s = video_seed(seed, split, i)
        rng = random.Random(s)
        scene = draw_scene(split, i, rng)
        video, rollout = make_example(scene, s, frames, resolution)
        record = SceneRecord(scene, s, rollout, phenomena(scene, rollout), len(videos), None, None)
        videos.append(video)
        options = [k for k in applicable(scene, rollout) if k in used]
        if options:
            record.kind = min(options, key=lambda k: (used[k], rng.random()))
            used[record.kind] += 1
            record.corrupted = len(videos)
            videos.append(corrupt(video, scene, rollout, record.kind, rng))
        scenes.append(record)
    items = []
    for s, record in enumerate(scenes):
        rng = random.Random(video_seed(seed, split, s) + 1)  # a stream apart from the scene's own draws
        items += fact_items(record, scenes, rng)
        items += plausibility_items(record, plausibility_kinds)
        items += prompt_items(record, videos[record.clean], scenes, rng, prompt_kinds, frames, resolution)
    return JudgeData(np.stack(videos), items, scenes)


# --------------------------------------------------------------------------------------------- facts


def names(scene: grammar.Scene) -> tuple[str, str | None]:
    """How the phenomena name the scene's primary object and its second ball (None without one)."""
    other = f"the {scene.other_color} ball" if scene.other_color else None
    return f"the {scene.color} {scene.kind}", other


def rename(fact: str, source: grammar.Scene, target: grammar.Scene) -> str:
    """``fact`` of ``source`` about ``target``'s objects: its primary (and second ball, if both have one)."""
    (src, src_other), (dst, dst_other) = names(source), names(target)
    fact = fact.replace(src, "\0primary")
    if src_other and dst_other:
        fact = fact.replace(src_other, "\0other")
    return fact.replace("\0primary", dst).replace("\0other", dst_other or "")


def possibly_true(fact: str, record: SceneRecord) -> bool:
    """Whether a fact about this scene's primary object that its phenomena do not list may still show in
    the video: the rules name one reading of what happens (a ball dropped onto a ramp and rolling off it
    does move to the right, though "moves to the right" is said only of thrown and rolled objects)."""
    primary, other = names(record.scene)
    if not fact.startswith(primary + " "):
        return False
    event, own = fact[len(primary) + 1 :], " | ".join(record.facts)
    pos = record.rollout.objects[0].pos
    x, y = pos[:, 0], pos[:, 1]
    checks = {
        "moves to the right": gain(x) >= MOVE_DISTANCE,
        "moves to the left": drop(x) >= MOVE_DISTANCE,
        "rises and slows down": gain(y) >= MOVE_DISTANCE,
        "falls back down": gain(y) >= MOVE_DISTANCE,
        "accelerates downward": drop(y) >= MOVE_DISTANCE,
        "floats without falling": drop(y) < MOVE_DISTANCE,
        "stays where it is": np.ptp(pos, axis=0).max() < MOVE_DISTANCE,
        "comes to rest": "slides and stops" in own,
        "slides and stops": "comes to rest" in own,
        "rolls down the ramp": "slides down the ramp" in own,
        "slides down the ramp": "rolls down the ramp" in own,
    }
    if other and event.startswith("collides with"):
        return "sets " + other in own
    return bool(checks.get(event, False))


def gain(z: np.ndarray) -> float:
    """The largest rise (T,) -> units: how far ``z`` gets above its lowest value so far (``drop``'s mirror)."""
    return float((z - np.minimum.accumulate(z)).max())


def false_fact(record: SceneRecord, scenes: list[SceneRecord], rng: random.Random, tries: int = 50) -> tuple[str, str] | None:
    """A fact of another scene that does not hold here, and its tag ("false_renamed" or "false_object")."""
    primary, other = names(record.scene)
    present = {primary, other} - {None}
    for _ in range(tries):
        source = rng.choice(scenes)
        if source is record or not source.facts:
            continue
        fact = rng.choice(source.facts)
        if rng.random() < RENAME_SHARE:
            fact, tag = rename(fact, source.scene, record.scene), "false_renamed"
            if fact in record.facts or possibly_true(fact, record):
                continue
        else:
            tag = "false_object"
            if any(name in fact for name in present):
                continue  # it must name no object of this video, or it is a renamed fact
        return fact, tag
    return None


def fact_items(record: SceneRecord, scenes: list[SceneRecord], rng: random.Random) -> list[Item]:
    """Every own fact (yes), and as many false facts (no), at least two."""
    items = [Item(record.clean, fact_question(f), True, 5, "fact", "true") for f in record.facts]
    asked = set(record.facts)
    for _ in range(max(2, len(record.facts))):
        found = false_fact(record, scenes, rng)
        if found and found[0] not in asked:
            asked.add(found[0])
            items.append(Item(record.clean, fact_question(found[0]), False, 1, "fact", found[1]))
    return items


# -------------------------------------------------------------------------------------- plausibility


def plausibility_items(record: SceneRecord, kinds) -> list[Item]:
    items = [Item(record.clean, PLAUSIBILITY_QUESTION, True, PLAUSIBILITY_RATING["clean"], "plausibility", "clean")]
    if record.corrupted is not None and record.kind in kinds:
        rating = PLAUSIBILITY_RATING[CORRUPTIONS[record.kind].group]
        items.append(Item(record.corrupted, PLAUSIBILITY_QUESTION, False, rating, "plausibility", record.kind))
    return items


# -------------------------------------------------------------------------------------------- prompts


def mismatches(a: grammar.Scene, b: grammar.Scene) -> int:
    """Scene attributes that differ; the second ball's colour counts only when both scenes have one."""
    fields = [f for f in a.to_dict() if f != "other_color"]
    m = sum(getattr(a, f) != getattr(b, f) for f in fields)
    return m + int(a.other_color is not None and b.other_color is not None and a.other_color != b.other_color)


def prompt_rating(truth: grammar.Scene, asked: grammar.Scene) -> int:
    m = mismatches(truth, asked)
    return RATING_BY_MISMATCHES[m] if m < len(RATING_BY_MISMATCHES) else 1


def semantic_change(scene: grammar.Scene, rng: random.Random) -> tuple[str, grammar.Scene]:
    """A random semantic field set to another valid value (never a held-out combination)."""
    fields = [f for f in grammar.SEMANTIC_FIELDS if f != "other_color" or scene.other_color]
    for _ in range(50):
        field = rng.choice(fields)
        value = rng.choice([v for v in SEMANTIC_VALUES[field] if v != getattr(scene, field)])
        try:
            changed = replace(scene, **{field: value})
        except grammar.SceneError:
            continue
        if not changed.is_held_out:
            return field, changed
    raise grammar.SceneError(f"no semantic change for {grammar.scene_to_prompt(scene)!r}")


def visibly_different(a: np.ndarray, b: np.ndarray) -> bool:
    """Some frame of the two (T, H, W, 3) uint8 videos has VISIBLE_PIXELS pixels that differ by VISIBLE_LEVEL."""
    differ = (np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > VISIBLE_LEVEL).sum(axis=(1, 2))  # (T,)
    return bool(differ.max() >= VISIBLE_PIXELS)


def physics_change(record: SceneRecord, video: np.ndarray, axis: str, rng: random.Random, frames: int,
                   resolution: int) -> grammar.Scene | None:
    """``scene.perturb`` along ``axis`` (outside the held-out combinations), if its video differs visibly;
    None if the axis cannot change or the change does not show."""
    other = changed_along(record.scene, axis, rng)
    if other is None:
        return None
    shown = render(other, simulate(other, record.seed, frames), resolution, resolution)
    return other if visibly_different(video, shown) else None


def changed_along(scene: grammar.Scene, axis: str, rng: random.Random, tries: int = 10) -> grammar.Scene | None:
    """``scene.perturb(scene, axis)`` outside the held-out combinations, or None if there is none."""
    for _ in range(tries):
        try:
            other = grammar.perturb(scene, axis, rng)
        except grammar.SceneError:
            return None
        if not other.is_held_out:
            return other
    return None


def prompt_items(record: SceneRecord, video: np.ndarray, scenes: list[SceneRecord], rng: random.Random,
                 prompt_kinds, frames: int, resolution: int) -> list[Item]:
    """The own prompt (yes); up to two visible physics changes, a semantic change, a semantic and a physics
    change together, another scene's prompt (no); the own prompt of a corrupted video of ``prompt_kinds`` (no)."""
    scene = record.scene

    def ask(other: grammar.Scene, tag: str) -> Item:
        question = prompt_question(grammar.scene_to_prompt(other))
        return Item(record.clean, question, other == scene, prompt_rating(scene, other), "prompt", tag)

    items = [ask(scene, "own")]
    for axis in rng.sample(list(grammar.PHYSICS_AXES), len(grammar.PHYSICS_AXES)):  # in a random order
        other = physics_change(record, video, axis, rng, frames, resolution)
        if other is not None:
            items.append(ask(other, axis))
        if len(items) == 3:
            break
    field, changed = semantic_change(scene, rng)
    items.append(ask(changed, field))
    both = changed_along(changed, rng.choice(list(grammar.PHYSICS_AXES)), rng)
    if both is not None and mismatches(scene, both) == 2:
        items.append(ask(both, "two_attributes"))
    source = rng.choice(scenes)
    if mismatches(scene, source.scene) > 0:
        items.append(ask(source.scene, "other_scene"))
    if record.corrupted is not None and record.kind in prompt_kinds:
        question = prompt_question(grammar.scene_to_prompt(scene))
        items.append(Item(record.corrupted, question, False, RATING_BY_MISMATCHES[1], "prompt", record.kind))
    return items

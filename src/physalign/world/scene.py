"""The scene grammar: what a world video shows, and the prompt that says it.

A :class:`Scene` keeps *semantics* (what is there: object kind, colour, size, background, the colour of a
second ball) apart from five *physics axes* (what happens):

=============  ======================================================================
axis           values
=============  ======================================================================
kinematics     dropped, thrown_left, thrown_right, launched_up, rolled_left, rolled_right
forces         normal, low, none (gravity)
materials      rubber, wood, steel, clay
interactions   none, wall, ball (collides with a second ball), ramp
magnitudes     low, high (drop height for ``dropped``, speed otherwise)
=============  ======================================================================

``scene_to_prompt`` and ``prompt_to_scene`` are exact inverses on every valid scene, e.g.::

    a small red rubber ball is thrown fast to the right and hits a wall under low gravity,
    on a black background

A prompt with words the grammar cannot place, or with words that contradict each other, raises
:class:`PromptError` naming those words.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Iterator

from physalign.world import spec

KINDS = ("ball", "block")
COLORS = tuple(spec.OBJECT_COLORS)
SIZES = tuple(spec.SIZES)
BACKGROUNDS = tuple(spec.BACKGROUNDS)
KINEMATICS = ("dropped", "thrown_left", "thrown_right", "launched_up", "rolled_left", "rolled_right")
FORCES = tuple(spec.GRAVITY)
MATERIALS = tuple(spec.MATERIALS)
INTERACTIONS = ("none", "wall", "ball", "ramp")
MAGNITUDES = ("low", "high")

SEMANTIC_FIELDS = ("kind", "color", "size", "background", "other_color")
# Physics axis name (as used by ``perturb`` and the reports) -> Scene field.
PHYSICS_AXES = {
    "kinematics": "kinematics",
    "forces": "force",
    "materials": "material",
    "interactions": "interaction",
    "magnitudes": "magnitude",
}
FIELD_VALUES = {
    "kind": KINDS,
    "color": COLORS,
    "size": SIZES,
    "background": BACKGROUNDS,
    "kinematics": KINEMATICS,
    "force": FORCES,
    "material": MATERIALS,
    "interaction": INTERACTIONS,
    "magnitude": MAGNITUDES,
}

# Attribute combinations never shown in train/val: the compositional out-of-distribution test prompts.
HELD_OUT_COMBOS = (
    {"material": "steel", "force": "low"},
    {"kind": "block", "interaction": "ramp"},
    {"color": "magenta", "kinematics": "launched_up"},
)


class SceneError(ValueError):
    """A scene whose attributes are unknown or cannot happen together."""


class PromptError(ValueError):
    """A prompt the grammar cannot read; the message names the offending words."""


@dataclass(frozen=True)
class Scene:
    kind: str
    color: str
    size: str
    background: str
    kinematics: str
    force: str
    material: str
    interaction: str
    magnitude: str
    other_color: str | None = None  # the second ball's colour; set iff interaction == "ball"

    def __post_init__(self) -> None:
        validate(self)

    @property
    def direction(self) -> str | None:
        """"left"/"right" for horizontal motion, "up" for launched, "down" for dropped."""
        if self.kinematics.endswith(("_left", "_right")):
            return self.kinematics.rsplit("_", 1)[1]
        return {"dropped": "down", "launched_up": "up"}[self.kinematics]

    @property
    def semantics(self) -> tuple:
        """The semantic partition key (DiReCT's macro partitions in the world)."""
        return tuple(getattr(self, f) for f in SEMANTIC_FIELDS)

    @property
    def is_held_out(self) -> bool:
        return any(all(getattr(self, k) == v for k, v in combo.items()) for combo in HELD_OUT_COMBOS)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, where: str = "scene") -> "Scene":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        missing = sorted(names - set(d) - {"other_color"})
        if unknown or missing:
            raise SceneError(f"{where}: unknown fields {unknown}, missing fields {missing}.")
        return cls(**d)


def validate(scene: Scene) -> None:
    """Raise :class:`SceneError` if an attribute is unknown or the combination cannot happen."""
    for name, values in FIELD_VALUES.items():
        value = getattr(scene, name)
        if value not in values:
            raise SceneError(f"{name} must be one of {values}. Got {value!r}.")
    for problem in _conflicts(scene):
        raise SceneError(problem)


def _conflicts(s: Scene) -> Iterator[str]:
    horizontal = s.kinematics.startswith(("thrown", "rolled"))
    if s.interaction == "wall" and not horizontal:
        yield f"interaction 'wall' needs horizontal motion (thrown or rolled), not {s.kinematics!r}."
    if s.interaction == "ball" and not s.kinematics.startswith("rolled"):
        yield f"interaction 'ball' needs an object rolling or sliding on the floor, not {s.kinematics!r}."
    if s.interaction == "ramp" and (s.kinematics not in ("dropped", "thrown_left", "thrown_right") or s.force == "none"):
        yield f"interaction 'ramp' needs a dropped or thrown object under gravity, not {s.kinematics!r} with gravity {s.force!r}."
    if s.kinematics == "launched_up" and s.force == "none":
        yield "an object launched upward in zero gravity leaves the frame: kinematics 'launched_up' needs gravity."
    if (s.interaction == "ball") != (s.other_color is not None):
        yield "other_color must be set exactly when interaction is 'ball'."
    if s.other_color is not None and (s.other_color not in COLORS or s.other_color == s.color):
        yield f"other_color must be a colour of {COLORS} other than {s.color!r}. Got {s.other_color!r}."


# --------------------------------------------------------------------------------------------------
# scene -> prompt

_VERB = {"dropped": "is dropped", "thrown": "is thrown", "launched": "is launched"}
_DIRECTION = {"left": "to the left", "right": "to the right", "up": "upward"}
_HEIGHT = {"low": "from a low height", "high": "from high up"}
_SPEED = {"low": "slowly", "high": "fast"}
_FORCE = {"normal": "under normal gravity", "low": "under low gravity", "none": "in zero gravity"}


def scene_to_prompt(scene: Scene) -> str:
    s = scene
    words = ["a", s.size, s.color, s.material, s.kind, _motion_phrase(s)]
    if s.interaction == "wall":
        words.append("and hits a wall")
    elif s.interaction == "ball":
        words.append(f"and collides with a {s.other_color} ball")
    elif s.interaction == "ramp":
        words.append("and lands on a ramp")
    words.append(_FORCE[s.force] + ",")
    words.append(f"on a {s.background} background")
    return " ".join(words)


def _motion_phrase(s: Scene) -> str:
    if s.kinematics == "dropped":
        return f"is dropped {_HEIGHT[s.magnitude]}"
    verb, direction = s.kinematics.split("_")
    if verb == "rolled":
        head = "rolls" if s.kind == "ball" else "slides"
    else:
        head = _VERB[verb]
    return f"{head} {_SPEED[s.magnitude]} {_DIRECTION[direction]}"


# --------------------------------------------------------------------------------------------------
# prompt -> scene

# Multi-word phrases first (longest match wins); "{c}" matches any object colour, "{bg}" any background.
_PHRASES: tuple[tuple[tuple[str, ...], str, str | None], ...] = (
    (("and", "collides", "with", "a", "{c}", "ball"), "interaction", "ball"),
    (("collides", "with", "a", "{c}", "ball"), "interaction", "ball"),
    (("and", "hits", "a", "wall"), "interaction", "wall"),
    (("hits", "a", "wall"), "interaction", "wall"),
    (("and", "lands", "on", "a", "ramp"), "interaction", "ramp"),
    (("lands", "on", "a", "ramp"), "interaction", "ramp"),
    (("on", "a", "{bg}", "background"), "background", None),
    (("under", "normal", "gravity"), "force", "normal"),
    (("under", "low", "gravity"), "force", "low"),
    (("in", "zero", "gravity"), "force", "none"),
    (("from", "a", "low", "height"), "height", "low"),
    (("from", "high", "up"), "height", "high"),
    (("to", "the", "left"), "direction", "left"),
    (("to", "the", "right"), "direction", "right"),
    (("upward",), "direction", "up"),
    (("is", "dropped"), "verb", "dropped"),
    (("is", "thrown"), "verb", "thrown"),
    (("is", "launched"), "verb", "launched"),
    (("rolls",), "verb", "rolls"),
    (("slides",), "verb", "slides"),
    (("slowly",), "speed", "low"),
    (("fast",), "speed", "high"),
)
_SINGLE = {
    **{w: ("size", w) for w in SIZES},
    **{w: ("color", w) for w in COLORS},
    **{w: ("material", w) for w in MATERIALS},
    **{w: ("kind", w) for w in KINDS},
}
_ARTICLES = {"a", "an"}


def prompt_to_scene(prompt: str) -> Scene:
    """Parse a prompt of the world's grammar. Raises :class:`PromptError` naming unplaced or clashing words."""
    tokens = re.findall(r"[a-z]+", prompt.lower())
    slots, unplaced = _match(tokens)
    if unplaced:
        raise PromptError(f"could not place the words {unplaced} in prompt {prompt!r}")
    try:
        return _assemble(slots)
    except (PromptError, SceneError) as err:
        raise PromptError(f"{err} (prompt {prompt!r})") from None


def _match(tokens: list[str]) -> tuple[dict[str, list[tuple[str, str]]], list[str]]:
    """Greedy longest-phrase matching. Returns slot -> [(value, words)] and the unplaced words."""
    slots: dict[str, list[tuple[str, str]]] = {}
    unplaced: list[str] = []
    i = 0
    while i < len(tokens):
        hit = _match_at(tokens, i)
        if hit is None:
            if tokens[i] not in _ARTICLES:
                unplaced.append(tokens[i])
            i += 1
            continue
        length, assignments = hit
        words = " ".join(tokens[i : i + length])
        for slot, value in assignments:
            slots.setdefault(slot, []).append((value, words))
        i += length
    return slots, unplaced


def _match_at(tokens: list[str], i: int) -> tuple[int, list[tuple[str, str]]] | None:
    for pattern, slot, value in _PHRASES:
        got = tokens[i : i + len(pattern)]
        if len(got) != len(pattern):
            continue
        extra: list[tuple[str, str]] = []
        if all(_token_fits(p, t, extra) for p, t in zip(pattern, got)):
            if value is None:  # the slot takes the wildcard's word (the background)
                return len(pattern), [(slot, extra[0][1])]
            return len(pattern), [(slot, value)] + [(k, v) for k, v in extra if k == "other_color"]
    if tokens[i] in _SINGLE:
        return 1, [_SINGLE[tokens[i]]]
    return None


def _token_fits(pattern: str, token: str, extra: list[tuple[str, str]]) -> bool:
    if pattern == "{c}":
        extra.append(("other_color", token))
        return token in COLORS
    if pattern == "{bg}":
        extra.append(("background", token))
        return token in BACKGROUNDS
    return pattern == token


def _one(slots: dict, slot: str, required: str | None = None) -> str | None:
    values = slots.get(slot, [])
    distinct = {v for v, _ in values}
    if len(distinct) > 1:
        raise PromptError(f"contradictory words for {slot}: {[w for _, w in values]}")
    if not values and required is not None:
        raise PromptError(f"missing {slot}: expected {required}")
    return values[0][0] if values else None


def _assemble(slots: dict) -> Scene:
    kind = _one(slots, "kind", "'ball' or 'block'")
    verb = _one(slots, "verb", "'is dropped', 'is thrown', 'is launched', 'rolls' or 'slides'")
    kinematics = _kinematics(verb, _one(slots, "direction"), kind, slots)
    magnitude = _magnitude(kinematics, _one(slots, "height"), _one(slots, "speed"), slots)
    return Scene(
        kind=kind,
        color=_one(slots, "color", f"an object colour of {COLORS}"),
        size=_one(slots, "size", f"one of {SIZES}"),
        background=_one(slots, "background", "'on a <colour> background'"),
        kinematics=kinematics,
        force=_one(slots, "force", "'under normal gravity', 'under low gravity' or 'in zero gravity'"),
        material=_one(slots, "material", f"one of {MATERIALS}"),
        interaction=_one(slots, "interaction") or "none",
        magnitude=magnitude,
        other_color=_one(slots, "other_color"),
    )


def _words(slots: dict, *names: str) -> list[str]:
    return [w for n in names for _, w in slots.get(n, [])]


def _kinematics(verb: str, direction: str | None, kind: str, slots: dict) -> str:
    if verb == "dropped":
        if direction is not None:
            raise PromptError(f"contradictory words: {_words(slots, 'verb', 'direction')}")
        return "dropped"
    allowed = ("up",) if verb == "launched" else ("left", "right")
    if direction not in allowed:
        got = _words(slots, "verb", "direction")
        raise PromptError(f"{got} needs a direction of {[_DIRECTION[d] for d in allowed]}")
    if verb in ("rolls", "slides") and (verb == "rolls") != (kind == "ball"):
        raise PromptError(f"contradictory words: {_words(slots, 'kind', 'verb')} (balls roll, blocks slide)")
    base = "rolled" if verb in ("rolls", "slides") else verb
    return f"{base}_{direction}"


def _magnitude(kinematics: str, height: str | None, speed: str | None, slots: dict) -> str:
    wanted, other = ("height", "speed") if kinematics == "dropped" else ("speed", "height")
    if slots.get(other):
        raise PromptError(f"contradictory words: {_words(slots, 'verb', other)}")
    value = height if wanted == "height" else speed
    if value is None:
        options = list(_HEIGHT.values()) if wanted == "height" else list(_SPEED.values())
        raise PromptError(f"missing {wanted}: expected one of {options}")
    return value


# --------------------------------------------------------------------------------------------------
# enumeration, sampling, perturbation


def all_scenes() -> Iterator[Scene]:
    """Every valid scene of the grammar, in a fixed order."""
    names = list(FIELD_VALUES)
    for values in itertools.product(*FIELD_VALUES.values()):
        attrs = dict(zip(names, values))
        others = [c for c in COLORS if c != attrs["color"]] if attrs["interaction"] == "ball" else [None]
        for other in others:
            try:
                yield Scene(**attrs, other_color=other)
            except SceneError:
                continue


def sample_scene(rng: random.Random, held_out: bool | None = False) -> Scene:
    """A uniformly random valid scene. ``held_out``: False excludes the held-out combinations, True draws
    only from them, None draws from everything."""
    while True:
        attrs = {name: rng.choice(values) for name, values in FIELD_VALUES.items()}
        other = rng.choice([c for c in COLORS if c != attrs["color"]]) if attrs["interaction"] == "ball" else None
        try:
            scene = Scene(**attrs, other_color=other)
        except SceneError:
            continue
        if held_out is None or scene.is_held_out == held_out:
            return scene


def perturb(scene: Scene, axis: str, rng: random.Random) -> Scene:
    """The same scene with physics ``axis`` (a key of ``PHYSICS_AXES``) set to another valid value.

    Semantics stay as they are, except that switching the interaction to or from ``ball`` adds or removes
    the second ball (its colour drawn from ``rng``). Raises :class:`SceneError` if no other value is valid.
    """
    if axis not in PHYSICS_AXES:
        raise SceneError(f"axis must be one of {tuple(PHYSICS_AXES)}. Got {axis!r}.")
    field = PHYSICS_AXES[axis]
    candidates = []
    for value in FIELD_VALUES[field]:
        if value == getattr(scene, field):
            continue
        other = scene.other_color
        if field == "interaction":
            other = rng.choice([c for c in COLORS if c != scene.color]) if value == "ball" else None
        try:
            candidates.append(replace(scene, **{field: value, "other_color": other}))
        except SceneError:
            continue
    if not candidates:
        raise SceneError(f"no valid perturbation of {axis} for {scene_to_prompt(scene)!r}")
    return rng.choice(candidates)

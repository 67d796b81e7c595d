"""Prompt templates and answers for the model backends: render a template, read the JSON it asks for.

The templates are files in ``templates/`` (package data), ``string.Template`` text with ``$prompt`` (and
``$axis``, ``$original`` for ``perturb.txt``), so that the JSON examples in them need no escaping. Each
asks for its chain of thought as the first fields of one JSON object and the answer as the last ones: a
model in JSON mode still reasons before it answers.

Schemas are a small subset of JSON Schema (``type``, ``required``, ``properties``, ``items``,
``minLength``, ``minItems``), checked by :func:`validate`; the same dicts can go to an endpoint as a
``json_schema`` response format.
"""

from __future__ import annotations

import json
import re
import string
from importlib import resources

from physalign.reasoning.base import AXES, InvalidAnswer, Reasoning

_TEXT = {"type": "string", "minLength": 1}
_TEXTS = {"type": "array", "items": _TEXT}
REASON_SCHEMA = {
    "type": "object",
    "required": ["principles", "actors", "acted_on", "interactions", "attributes", "enhanced_prompt", "phenomena"],
    "properties": {
        "principles": _TEXTS,
        "actors": _TEXTS,
        "acted_on": _TEXTS,
        "interactions": _TEXTS,
        "attributes": {
            "type": "object",
            "required": [*AXES, "semantics"],
            "properties": {**{axis: _TEXT for axis in AXES}, "semantics": {"type": "object"}},
        },
        "enhanced_prompt": _TEXT,
        "phenomena": {"type": "array", "minItems": 1, "items": _TEXT},
    },
}
# "prompt" is null when no other value of the axis can happen in the scene.
PERTURB_SCHEMA = {
    "type": "object",
    "required": ["current", "changed_to", "prompt"],
    "properties": {"current": _TEXT, "changed_to": {"type": ["string", "null"]}, "prompt": {"type": ["string", "null"], "minLength": 1}},
}
# What each axis means, for the perturbation template's $axis_help.
AXIS_HELP = {
    "kinematics": "how the object moves at the start: dropped, thrown, launched, rolled or slid, and which way",
    "forces": "the forces acting, e.g. the strength of gravity",
    "materials": "what the object is made of, which decides how it bounces and slides",
    "interactions": "what the object meets: nothing, a wall, a second ball, a ramp",
    "magnitudes": "how large the motion is: the drop height or the speed",
}
_TYPES = {"object": dict, "array": list, "string": str, "null": type(None)}


def load_template(name: str) -> str:
    """The text of ``templates/<name>`` shipped with the package."""
    return resources.files("physalign.reasoning").joinpath("templates", name).read_text(encoding="utf-8")


def render(template: str, **values: str) -> str:
    """Fill ``$name`` fields; a field the template has but ``values`` lacks raises KeyError naming it."""
    return string.Template(template).substitute(values)


def extract_json(text: str):
    """The JSON value of an answer: the whole text, else a fenced ```json block, else the outermost {...}."""
    candidates = [text.strip()]
    fenced = re.search(r"```(?:json)?\s*\n?(.*?)```", text, re.DOTALL)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise InvalidAnswer(f"the answer is not JSON (nor holds a ```json block): {_clip(text)!r}")


def validate(value, schema: dict, where: str = "answer") -> None:
    """Raise :class:`InvalidAnswer` naming the first field of ``value`` that does not fit ``schema``."""
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds and not any(isinstance(value, _TYPES[k]) for k in kinds):
        raise InvalidAnswer(f"{where} must be {' or '.join(kinds)}, got {type(value).__name__}: {_clip(json.dumps(value))}")
    if isinstance(value, str) and len(value.strip()) < schema.get("minLength", 0):
        raise InvalidAnswer(f"{where} must not be empty")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise InvalidAnswer(f"{where} must have at least {schema['minItems']} items, got {len(value)}")
        for i, item in enumerate(value):
            validate(item, schema.get("items", {}), f"{where}[{i}]")
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise InvalidAnswer(f"{where} misses the fields {missing} (has {sorted(value)})")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub, f"{where}.{key}")


def read_answer(text: str, schema: dict):
    """Parse and validate a model's answer text: the JSON value, or :class:`InvalidAnswer`."""
    value = extract_json(text)
    validate(value, schema)
    return value


def to_reasoning(answer: dict) -> Reasoning:
    """A validated ``REASON_SCHEMA`` answer as a :class:`Reasoning` (the chain of thought is dropped)."""
    attributes = {axis: answer["attributes"][axis].strip() for axis in AXES}
    attributes["semantics"] = answer["attributes"]["semantics"]
    return Reasoning(attributes, answer["enhanced_prompt"].strip(), [f.strip() for f in answer["phenomena"]])


def _clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"

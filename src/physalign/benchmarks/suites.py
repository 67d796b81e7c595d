"""Prompt suites of the papers' benchmarks, read from the benchmarks' own files.

- **VideoPhy** (CSV): ``video_url, caption, states_of_matter, source, complexity, majority_sa, majority_pc``,
  one row per (caption, generator) video of the human study; the suite is the unique captions in file order
  (344 in the test file: solid_solid 143, solid_fluid 146, fluid_fluid 55). Needs ``caption`` and
  ``states_of_matter``; the rows of one caption must agree on it.
- **VideoPhy-2** (CSV): ``caption, upsampled_caption`` and optionally ``action, category, is_hard``; one row
  per prompt, captions unique.
- **PhyGenBench** (``prompts.json``): a JSON list of objects with ``caption``, ``physical_laws``,
  ``sub_category`` and ``main_category`` (extra keys, as in its ``single_question.json``, are ignored).

Every prompt gets an id ``NNNN-hhhhhhhh``: its 1-based position in the suite and the first 8 hex digits of
the SHA-1 of its caption, so a video named after an id cannot be mistaken for another caption's after the
file changes. Errors are :class:`SuiteError`, naming the file, the line and the column (for a CSV, the
field's 1-based index; for JSON, the character).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

SUITES = ("videophy", "videophy2", "phygenbench")
STATES_OF_MATTER = ("solid_solid", "solid_fluid", "fluid_fluid")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "y", "t"), ("0", "false", "no", "n", "f")


class SuiteError(ValueError):
    """A suite file that cannot be read; the message is ``path:line[:column]: what is wrong``."""

    def __init__(self, path: str | Path, line: int | None, column: int | None, message: str):
        self.path, self.line, self.column = Path(path), line, column
        where = str(path) + "".join(f":{v}" for v in (line, column) if v is not None)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class SuitePrompt:
    """One prompt of a suite. ``prompt`` is the caption the benchmark judges semantic adherence against."""

    id: str
    prompt: str
    categories: dict[str, str] = field(default_factory=dict)  # the fields the benchmark's tables group by
    upsampled: str | None = None  # VideoPhy-2: the long prompt its generators may be given instead
    physical_law: str | None = None  # PhyGenBench: the law the video should show
    action: str | None = None  # VideoPhy-2
    is_hard: bool | None = None  # VideoPhy-2: in the hard subset (None when the file does not say)
    line: int = 0  # where the prompt starts in its file

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict) -> "SuitePrompt":
        return cls(**values)


def prompt_id(index: int, caption: str) -> str:
    """``NNNN-hhhhhhhh``: 1-based position and SHA-1 prefix of the caption."""
    return f"{index:04d}-{hashlib.sha1(caption.encode()).hexdigest()[:8]}"


def load_suite(suite: str, path: str | Path) -> list[SuitePrompt]:
    """The prompts of ``suite`` (one of :data:`SUITES`) from the benchmark file ``path``."""
    loaders: dict[str, Callable[[Path], list[SuitePrompt]]] = {
        "videophy": load_videophy, "videophy2": load_videophy2, "phygenbench": load_phygenbench}
    if suite not in loaders:
        raise ValueError(f"unknown suite {suite!r}; known: {list(SUITES)}")
    prompts = loaders[suite](Path(path))
    if not prompts:
        raise SuiteError(path, None, None, f"no prompts in this {suite} file")
    return prompts


# ------------------------------------------------------------------------------------------------ CSV


def read_text(path: Path) -> str:
    """The file as text (UTF-8, an optional BOM); a decoding error names its line and column."""
    if not path.is_file():
        raise SuiteError(path, None, None, "no such file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise SuiteError(path, line, column, f"not UTF-8 text ({err.reason})") from None


def csv_records(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (start line, {column: value}) records of a CSV file with at least the ``required`` columns."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise SuiteError(path, 1, None, "empty file (expected a header line)") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise SuiteError(path, 1, None, f"missing column(s) {missing}; the header has {header}")
    records, start = [], reader.line_num + 1
    try:
        for values in reader:
            if values and any(v.strip() for v in values):
                if len(values) != len(header):
                    raise SuiteError(path, start, None, f"{len(values)} fields, the header has {len(header)}")
                records.append((start, dict(zip(header, values))))
            start = reader.line_num + 1
    except csv.Error as err:
        raise SuiteError(path, start, None, f"malformed CSV ({err})") from None
    return header, records


def field_value(path: Path, header: list[str], line: int, record: dict[str, str], name: str,
                choices: tuple[str, ...] | None = None) -> str:
    """``record[name]`` stripped, required non-empty (and among ``choices``); errors name line and column."""
    value = record[name].strip()
    column = header.index(name) + 1
    if not value:
        raise SuiteError(path, line, column, f"{name}: empty")
    if choices is not None and value not in choices:
        raise SuiteError(path, line, column, f"{name}: {value!r} is not one of {list(choices)}")
    return value


def load_videophy(path: Path) -> list[SuitePrompt]:
    """VideoPhy's CSV -> one prompt per unique caption (first-seen order), grouped by ``states_of_matter``;
    ``complexity`` is kept as a category when the file has it."""
    header, records = csv_records(path, ("caption", "states_of_matter"))
    first: dict[str, tuple[int, dict[str, str]]] = {}
    for line, record in records:
        caption = field_value(path, header, line, record, "caption")
        categories = {"states_of_matter": field_value(path, header, line, record, "states_of_matter", STATES_OF_MATTER)}
        if "complexity" in header and record["complexity"].strip():
            categories["complexity"] = record["complexity"].strip()
        if caption in first and first[caption][1] != categories:
            seen_line, seen = first[caption]
            raise SuiteError(path, line, header.index("states_of_matter") + 1,
                             f"caption {caption!r} has {categories} here but {seen} on line {seen_line}")
        first.setdefault(caption, (line, categories))
    return [SuitePrompt(prompt_id(i, c), c, categories, line=line) for i, (c, (line, categories)) in enumerate(first.items(), 1)]


def load_videophy2(path: Path) -> list[SuitePrompt]:
    """VideoPhy-2's CSV -> one prompt per row, with its upsampled caption, and ``category``, ``action`` and
    ``is_hard`` (0/1, true/false, yes/no) where the file has them."""
    header, records = csv_records(path, ("caption", "upsampled_caption"))
    prompts, lines = [], {}
    for line, record in records:
        caption = field_value(path, header, line, record, "caption")
        if caption in lines:
            raise SuiteError(path, line, header.index("caption") + 1, f"caption repeated from line {lines[caption]}")
        lines[caption] = line
        category = record.get("category", "").strip()
        prompts.append(SuitePrompt(
            prompt_id(len(prompts) + 1, caption), caption, {"category": category} if category else {},
            upsampled=record["upsampled_caption"].strip() or None, action=record.get("action", "").strip() or None,
            is_hard=_flag(path, header, line, record) if "is_hard" in header else None, line=line))
    return prompts


def _flag(path: Path, header: list[str], line: int, record: dict[str, str]) -> bool:
    value = record["is_hard"].strip().lower()
    if value in TRUE_WORDS or value in FALSE_WORDS:
        return value in TRUE_WORDS
    raise SuiteError(path, line, header.index("is_hard") + 1, f"is_hard: {record['is_hard']!r} is not 0/1, true/false or yes/no")


# ----------------------------------------------------------------------------------------------- JSON

PHYGENBENCH_FIELDS = ("caption", "physical_laws", "sub_category", "main_category")


def json_list_items(path: Path) -> list[tuple[int, int, object]]:
    """(line, column, item) of each element of the top-level JSON array in ``path``; syntax errors name the
    line and column where the parser stopped."""
    text, decoder = read_text(path), json.JSONDecoder()

    def where(pos: int) -> tuple[int, int]:
        return text.count("\n", 0, pos) + 1, pos - (text.rfind("\n", 0, pos) + 1) + 1

    def skip(pos: int) -> int:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        return pos

    pos = skip(0)
    if pos >= len(text) or text[pos] != "[":
        raise SuiteError(path, *where(pos), "expected a JSON list of prompt objects ('[')")
    items, pos = [], skip(pos + 1)
    while pos < len(text) and text[pos] != "]":
        try:
            item, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise SuiteError(path, err.lineno, err.colno, f"invalid JSON ({err.msg})") from None
        items.append((*where(pos), item))
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
        elif pos < len(text) and text[pos] != "]":
            raise SuiteError(path, *where(pos), "expected ',' or ']' after a list element")
    if pos >= len(text):
        raise SuiteError(path, *where(pos), "unterminated list (no closing ']')")
    if skip(pos + 1) < len(text):
        raise SuiteError(path, *where(skip(pos + 1)), "extra data after the list")
    return items


def load_phygenbench(path: Path) -> list[SuitePrompt]:
    """PhyGenBench's ``prompts.json`` -> one prompt per entry, grouped by ``main_category`` and
    ``sub_category``, with its ``physical_laws``."""
    prompts = []
    for n, (line, column, item) in enumerate(json_list_items(path), 1):
        if not isinstance(item, dict):
            raise SuiteError(path, line, column, f"entry {n}: expected an object, got {type(item).__name__}")
        for name in PHYGENBENCH_FIELDS:
            if not isinstance(item.get(name), str) or not item[name].strip():
                got = "missing" if name not in item else f"got {item[name]!r}"
                raise SuiteError(path, line, column, f"entry {n}: field {name!r} must be a non-empty string ({got})")
        caption = item["caption"].strip()
        categories = {"main_category": item["main_category"].strip(), "sub_category": item["sub_category"].strip()}
        prompts.append(SuitePrompt(prompt_id(n, caption), caption, categories,
                                   physical_law=item["physical_laws"].strip(), line=line))
    return prompts

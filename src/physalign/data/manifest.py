"""Manifests of real video clips, as users already have them: CSV (or TSV) and JSONL.

One row per clip: a video path and a caption, optionally perturbed prompts, phenomena and a preference
pair. Columns are found by their common names (first match in :data:`COLUMNS`), or named explicitly with
``columns={"caption": "long_caption"}``:

============  ======================================================  ==========================================
role          column names tried, in order                            value
============  ======================================================  ==========================================
video         ``video``, ``video_path``, ``path``, ``file_name``      path; relative to the manifest's folder
                                                                      (or ``video_root``)
caption       ``caption``, ``prompt``, ``text``                       non-empty string
perturbed     ``perturbed_prompts``, ``perturbed_prompt``,            list of strings (optional)
              ``perturbed``
phenomena     ``phenomena``, ``expected_phenomena``                   list of strings (optional)
winner        ``winner``, ``chosen``, ``preferred``                   path: the row's video, when there is no
                                                                      video column
loser         ``loser``, ``rejected``                                 path (optional): the dispreferred clip
============  ======================================================  ==========================================

A list cell is a JSON list of strings (``["falls", "bounces"]``); any other non-empty string is one item.
In JSONL a list may also be a JSON array, and ``perturbed`` an object with a ``prompt`` (the world's
manifests load as they are) or an object of strings (``physalign reason``'s ``{axis: prompt}``, taken in
order). Empty cells of optional columns mean "none". A preference row names its winner as its video
(in the video column or in ``winner``/``chosen``, not both) and its loser in ``loser``/``rejected``.

Every problem raises :class:`ManifestError` naming the file, the line and the column (CSV: its number and
name; JSONL: its key) and what was expected.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from physalign.world.dataset import ManifestError

COLUMNS: dict[str, tuple[str, ...]] = {
    "video": ("video", "video_path", "path", "file_name"),
    "caption": ("caption", "prompt", "text"),
    "perturbed": ("perturbed_prompts", "perturbed_prompt", "perturbed"),
    "phenomena": ("phenomena", "expected_phenomena"),  # the second: `physalign reason` output
    "winner": ("winner", "chosen", "preferred"),
    "loser": ("loser", "rejected"),
}
DELIMITERS = {".csv": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class ClipRow:
    """One clip of a manifest. ``video`` and ``loser`` are resolved paths (they may not exist)."""

    line: int  # line of the manifest the row starts on (1-based; a CSV header is line 1)
    video: Path
    caption: str
    perturbed: tuple[str, ...] = ()
    phenomena: tuple[str, ...] = ()
    loser: Path | None = None

    def record(self) -> dict:
        """The row as JSON-able values (for cache keys and the precompute index)."""
        return {"line": self.line, "video": str(self.video), "caption": self.caption,
                "perturbed": list(self.perturbed), "phenomena": list(self.phenomena),
                "loser": None if self.loser is None else str(self.loser)}


def load_clip_manifest(path: str | Path, columns: dict[str, str] | None = None,
                       video_root: str | Path | None = None) -> list[ClipRow]:
    """The rows of the CSV/TSV/JSONL manifest ``path``, checked.

    ``columns`` maps roles (keys of :data:`COLUMNS`) to column names that override the search;
    ``video_root`` resolves relative paths instead of the manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    suffix = path.suffix.lower()
    if suffix in DELIMITERS:
        header, records = _read_csv(path, DELIMITERS[suffix])
        label, where = (lambda name: f"column {header.index(name) + 1} {name!r}"), f"{path}:1"
    elif suffix == ".jsonl":
        header, records = _read_jsonl(path)
        label, where = (lambda name: f"column {name!r}"), f"{path}"
    else:
        raise ManifestError(f"{path}: unknown manifest format {suffix!r}; expected .csv, .tsv or .jsonl")
    roles = resolve_columns(header, columns or {}, where)
    root = (Path(video_root) if video_root is not None else path.parent).absolute()
    rows = [_row(cells, line, f"{path}:{line}", roles, label, root) for line, cells in records]
    if not rows:
        raise ManifestError(f"{path}: the manifest has no rows")
    return rows


def resolve_columns(header: list[str], overrides: dict[str, str], where: str) -> dict[str, str | None]:
    """Role -> column name (None for an absent optional role), from ``overrides`` or :data:`COLUMNS`."""
    unknown = sorted(set(overrides) - set(COLUMNS))
    if unknown:
        raise ManifestError(f"{where}: unknown column roles {unknown}; roles are {list(COLUMNS)}")
    roles: dict[str, str | None] = {}
    for role, names in COLUMNS.items():
        if role in overrides and overrides[role] not in header:
            raise ManifestError(f"{where}: column {overrides[role]!r} (given for {role}) is not in the manifest; "
                                f"its columns are {header}")
        roles[role] = overrides.get(role) or next((n for n in names if n in header), None)
    if roles["video"] and roles["winner"] and "winner" not in overrides and "video" in overrides:
        roles["winner"] = None  # the user named the video column: an auto-found winner column is not a role
    if roles["video"] and roles["winner"]:
        raise ManifestError(f"{where}: columns {roles['video']!r} and {roles['winner']!r} both name the row's video "
                            "(a preference row's winner is its video); keep one, or name the video column explicitly")
    roles["video"] = roles["video"] or roles.pop("winner")
    roles.pop("winner", None)
    for role in ("video", "caption"):
        if roles[role] is None:
            tried = COLUMNS[role] + (COLUMNS["winner"] if role == "video" else ())
            raise ManifestError(f"{where}: no {role} column: expected one of {list(tried)} (or name it, e.g. "
                                f"--column {role}=NAME); the manifest's columns are {header}")
    return roles


def _read_csv(path: Path, delimiter: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line, {column: cell})]); blank lines skipped, quoted cells may span lines."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [name.strip() for name in next(reader, [])]
            if not any(header):
                raise ManifestError(f"{path}:1: expected a header line naming the columns")
            duplicated = sorted({n for n in header if header.count(n) > 1})
            if duplicated:
                raise ManifestError(f"{path}:1: columns {duplicated} appear more than once in the header")
            records, line = [], reader.line_num + 1
            for cells in reader:
                if any(c.strip() for c in cells):
                    if len(cells) != len(header):
                        raise ManifestError(f"{path}:{line}: expected {len(header)} columns as in the header, got {len(cells)}")
                    records.append((line, dict(zip(header, cells))))
                line = reader.line_num + 1
        except csv.Error as err:
            raise ManifestError(f"{path}:{reader.line_num}: not valid CSV ({err})") from None
    return header, records


def _read_jsonl(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """(keys of all lines in first-seen order, [(line, object)]); blank lines skipped."""
    keys: dict[str, None] = {}
    records = []
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                cells = json.loads(text)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{path}:{line}: not valid JSON ({err.msg} at character {err.colno})") from None
            if not isinstance(cells, dict):
                raise ManifestError(f"{path}:{line}: expected a JSON object, got {type(cells).__name__}")
            keys.update(dict.fromkeys(cells))
            records.append((line, cells))
    return list(keys), records


def _row(cells: dict, line: int, where: str, roles: dict, label: Callable[[str], str], root: Path) -> ClipRow:
    def cell(role: str) -> tuple[Any, str]:
        name = roles[role]
        return (None, "") if name is None else (cells.get(name), f"{where}: {label(name)}")

    video = _path(*cell("video"), root, required=True)
    loser = _path(*cell("loser"), root, required=False)
    if loser is not None and loser == video:
        raise ManifestError(f"{cell('loser')[1]}: the loser is the row's own video {video}")
    return ClipRow(line=line, video=video, caption=_text(*cell("caption"), "caption", required=True),
                   perturbed=_items(*cell("perturbed")), phenomena=_items(*cell("phenomena")), loser=loser)


def _text(value: Any, where: str, what: str, required: bool) -> str | None:
    """A stripped string; None for an absent optional value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if not required:
            return None
        raise ManifestError(f"{where}: {'missing' if value is None else 'empty'} {what}")
    if not isinstance(value, str):
        raise ManifestError(f"{where}: expected a {what} (a string), got {type(value).__name__} {value!r}")
    return value.strip()


def _path(value: Any, where: str, root: Path, required: bool) -> Path | None:
    """The cell's path, relative ones resolved against ``root``."""
    text = _text(value, where, "video path", required)
    if text is None:
        return None
    if "://" in text:
        raise ManifestError(f"{where}: {text!r} is a URL; download the clips and give local paths")
    path = Path(text).expanduser()
    return path if path.is_absolute() else root / path


def _items(value: Any, where: str) -> tuple[str, ...]:
    """A list cell: a JSON list of strings (or a list, in JSONL), else one string; empty -> ()."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    if isinstance(value, dict) and isinstance(value.get("prompt"), str):  # the world's `perturbed` object
        return (value["prompt"],)
    if isinstance(value, dict):  # `physalign reason`'s perturbed_prompts: {axis: prompt}
        value = list(value.values())
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ManifestError(f"{where}: not a JSON list of strings ({err.msg} at character {err.colno})") from None
    if isinstance(value, str):
        return (value.strip(),)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: expected a list of strings, got {json.dumps(value)[:80]}")
    return tuple(v.strip() for v in value if v.strip())

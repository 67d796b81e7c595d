"""Add a reasoner's answers to every line of a manifest: ``physalign reason``.

Each output line is its input line (all fields kept) plus ``attributes``, ``enhanced_prompt``,
``expected_phenomena`` (the simulator's own ``phenomena`` stays as it is) and ``perturbed_prompts``
({axis: prompt}, for the axes that can change) — or, if reasoning about that prompt failed, plus
``reason_error`` (the message) instead. Line ``k`` of the output belongs to line ``k`` of the input
(blank lines skipped).

Lines are written one by one and flushed, so an interrupted run can be resumed: lines already in the
output are kept, a partly written last line is cut off, and the rest is appended. A failed line counts as
done; to retry failures, annotate into a fresh output (a model backend's cache makes the good lines free).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from physalign.reasoning.base import AXES, NoPerturbation, Reasoner, ReasoningError

ADDED_FIELDS = ("attributes", "enhanced_prompt", "expected_phenomena", "perturbed_prompts", "reason_error")


@dataclass
class Summary:
    rows: int  # lines of the input manifest
    resumed: int  # lines that were already in the output
    written: int  # lines written by this run
    errors: int  # lines of the output (old and new) with a reason_error
    messages: list[str] = field(default_factory=list)  # "line k: message" for this run's failures


def annotate_manifest(manifest: str | os.PathLike, out: str | os.PathLike, reasoner: Reasoner, progress: bool = True) -> Summary:
    """Write (or complete) ``out`` from ``manifest``; see the module docstring."""
    rows, out = read_rows(manifest), Path(out)
    if out.resolve() == Path(manifest).resolve():
        raise ValueError(f"{out}: the output must not be the input manifest")
    done = resume(out, rows)
    summary = Summary(len(rows), len(done), 0, sum("reason_error" in line for line in done))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        todo = range(len(done), len(rows))
        for k in tqdm(todo, desc=f"reason ({reasoner.kind})", unit="prompt", disable=not progress, initial=len(done), total=len(rows)):
            line = annotate_row(rows[k], reasoner)
            f.write(json.dumps(line) + "\n")
            f.flush()
            summary.written += 1
            if "reason_error" in line:
                summary.errors += 1
                summary.messages.append(f"line {k + 1}: {line['reason_error']}")
    return summary


def annotate_row(row: dict, reasoner: Reasoner) -> dict:
    """``row`` plus the reasoner's fields, or plus ``reason_error`` (earlier reasoning fields are replaced)."""
    kept = {k: v for k, v in row.items() if k not in ADDED_FIELDS}
    prompt = row["prompt"]
    try:
        reasoning = reasoner.reason(prompt)
        perturbed = {axis: text for axis in AXES if (text := _perturbed(reasoner, prompt, axis)) is not None}
    except ReasoningError as err:
        return {**kept, "reason_error": str(err)}
    return {**kept, "attributes": reasoning.attributes, "enhanced_prompt": reasoning.enhanced_prompt,
            "expected_phenomena": reasoning.phenomena, "perturbed_prompts": perturbed}


def _perturbed(reasoner: Reasoner, prompt: str, axis: str) -> str | None:
    try:
        return reasoner.perturb(prompt, axis)
    except NoPerturbation:
        return None
    except ReasoningError as err:
        raise type(err)(f"perturb {axis}: {err}") from err


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a JSONL file, each with a string ``prompt``; ValueError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such manifest file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if text.strip():
                rows.append(_row(text, f"{path}:{number}"))
    return rows


def _row(text: str, where: str) -> dict:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise ValueError(f"{where}: expected a JSON object with a string field 'prompt'")
    return row


def resume(out: Path, rows: list[dict]) -> list[dict]:
    """The complete lines already in ``out`` (cutting off a partly written last line), checked to belong
    to ``rows`` in order. ValueError if ``out`` was written from another manifest."""
    if not out.exists():
        return []
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a crash mid-line leaves a tail without its newline
    if len(complete) < len(data):
        with open(out, "r+b") as f:
            f.truncate(len(complete))
    lines = [_row(text, f"{out}:{n}") for n, text in enumerate(complete.decode("utf-8").splitlines(), start=1)]
    if len(lines) > len(rows):
        raise ValueError(f"{out} has {len(lines)} lines but the manifest only {len(rows)}: it was written from another manifest")
    for n, (line, row) in enumerate(zip(lines, rows), start=1):
        if line["prompt"] != row["prompt"]:
            raise ValueError(f"{out}:{n} is for the prompt {line['prompt']!r}, the manifest's line {n} for {row['prompt']!r}: "
                             "it was written from another manifest (choose another --out)")
    return lines

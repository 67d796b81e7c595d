"""A disk cache of validated model answers, so that a data set is reasoned about once.

One JSON file per entry, ``DIR/<key[:2]>/<key>.json``, where ``key`` is the SHA-256 of the canonical JSON
of what decides the answer: the backend's settings, the template text and the request (prompt, axis).
Writes go to a temporary file in the same folder and are renamed into place, so that concurrent writers
and a killed process leave either no entry or a whole one. Each entry also keeps the request it answers,
so a file can be read on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def cache_key(material: dict) -> str:
    """SHA-256 hex digest of ``material`` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class DiskCache:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, material: dict):
        """The answer stored for ``material``, or None. An unreadable entry counts as absent."""
        path = self._path(cache_key(material))
        try:
            return json.loads(path.read_text(encoding="utf-8"))["answer"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            return None

    def put(self, material: dict, answer) -> None:
        path = self._path(cache_key(material))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"request": material, "answer": answer}, f)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

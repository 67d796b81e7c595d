"""Writing files and folders so that a kill at any moment leaves either the old content or the new one.

A file is written to a temporary name beside it and renamed over it (:func:`atomic_write`); a folder (a model
export, a sample set) is filled under a temporary name and renamed into place once complete
(:func:`atomic_folder`), so its existence means it is whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from other users of a shared folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))


@contextlib.contextmanager
def atomic_folder(path: Path):
    """Yield a temporary folder beside ``path`` to fill; on leaving the block without an error it replaces
    ``path`` (an older folder there is removed only after the new one is complete); on an error or a kill
    ``path`` is untouched and the temporary folder is removed (or, after a kill, left as ``.tmp-<name>-*``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{path.name}-", dir=path.parent))
        os.replace(path, old / path.name)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

"""Where the files physalign ships live: the world's checkpoints (``checkpoints/base``, ``base_ae``,
``teacher``, ``judge``) and the configs (``configs/methods/*.yaml``, ...).

It stands at the package root because every layer reads it (models, teacher, judges, configs, bench) and it
imports nothing of physalign. In a checkout they are the repository's own ``checkpoints/`` and ``configs/``;
an installed wheel carries copies under ``physalign/_shipped/`` (``setup.py`` copies them at build time).

:func:`resolve` is what loaders call on a path a user wrote: a path that exists is used as it is; a
relative ``checkpoints/...`` or ``configs/...`` path that does not exist under the current folder is read
from the shipped copies, so ``physalign demo`` and a method config's ``teacher: checkpoints/teacher`` work from
any folder once the package is installed.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SHIPPED_TOPS = ("checkpoints", "configs")
# In an installed wheel, then in a source checkout (src/physalign -> the repository).
CANDIDATE_ROOTS = (PACKAGE / "_shipped", PACKAGE.parents[1])


class AssetError(FileNotFoundError):
    """The shipped files are not where an installed or checked-out physalign keeps them."""


def shipped_root() -> Path:
    """The folder that holds the shipped ``checkpoints/`` and ``configs/``."""
    for root in CANDIDATE_ROOTS:
        if (root / "checkpoints" / "base" / "physalign_model.json").is_file() and (root / "configs").is_dir():
            return root
    raise AssetError(f"physalign's shipped checkpoints and configs are in none of {[str(r) for r in CANDIDATE_ROOTS]}: "
                     "reinstall the package from a wheel built with `pip wheel .` (which copies them in) or work in "
                     "a checkout of the repository")


def shipped(relative: str | Path) -> Path:
    """A shipped file or folder, e.g. ``shipped("checkpoints/base")``; AssetError if it does not exist."""
    path = shipped_root() / relative
    if not path.exists():
        raise AssetError(f"{relative}: not among the shipped files under {shipped_root()}")
    return path


def resolve(path: str | Path) -> Path:
    """``path`` if it exists (or is absolute, or names nothing shipped); else, for a relative
    ``checkpoints/...`` or ``configs/...`` path, the shipped copy when there is one. Callers keep their own
    "not found" errors for paths that resolve to nothing."""
    path = Path(path)
    if path.exists() or path.is_absolute() or path.parts[:1] not in [(top,) for top in SHIPPED_TOPS]:
        return path
    try:
        candidate = shipped_root() / path
    except AssetError:
        return path
    return candidate if candidate.exists() else path

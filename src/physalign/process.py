"""Child processes that die with the process that started them.

``physalign bench`` runs its training and sampling jobs as ``python -m physalign.cli ...`` children and passes
its pid in :data:`PARENT_ENV`; such a child asks the kernel (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to be
killed when its parent goes, however the parent goes (a SIGKILL included), so no orphan keeps writing into a
bench folder that a rerun is using.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "PHYSALIGN_PARENT_PID"
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """If :data:`PARENT_ENV` names this process's parent, be killed when it exits; if it has exited already
    (this process was re-parented before the call), exit now."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not permitted here: the bench's lock still refuses a concurrent rerun
    if os.getppid() != int(parent):
        os._exit(1)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory(trim_threshold: int = 1 << 30) -> bool:
    """Have glibc's malloc serve every block from its heap and keep up to ``trim_threshold`` bytes of freed heap
    for reuse, instead of mapping each large block afresh (``mmap``) and unmapping it when freed.

    Why: glibc maps any block above its mmap threshold (at most 32 MiB) with ``mmap``, so each tensor that large
    (a batch of 64 x 256 tokens x 512 features in fp32 is 33.5 MiB) comes as fresh pages that the kernel zeroes
    on first touch; an elementwise op on one then costs ~8x its arithmetic (benchmarks/profile_steps.py, docs/
    speed.md). Returns False where it cannot apply (not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False

"""Child processes that die with the process that started them.

``physalign bench`` runs its training and sampling jobs as ``python -m physalign.cli ...`` children and passes
its pid in :data:`PARENT_ENV`; such a child asks the kernel (Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to be
killed when its parent goes, however the parent goes (a SIGKILL included), so no orphan keeps writing into a
bench folder that a rerun is using.

Every ``physalign`` process also keeps freed memory for reuse (:func:`reuse_freed_memory`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "PHYSALIGN_PARENT_PID"
PR_SET_PDEATHSIG = 1
HEAP_ENV = "PHYSALIGN_MALLOC"  # "default": leave glibc's allocator settings alone
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


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



def reuse_freed_memory() -> bool:
    """Ask glibc's allocator to serve every block from its heap and never return freed memory to the kernel
    (``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, 2**31 - 1)``); returns whether it applied.

    By default glibc maps each block over its mmap threshold (at most 32 MiB) afresh and unmaps it when freed,
    and trims the heap's top: the kernel then zeroes every new page on first touch. A training step or a sampled
    video allocates and frees such activations over and over, so a bench job spent 10-15% of its CPU time in the
    kernel on page faults (docs/speed.md, results/malloc). With this, freed blocks are reused; the process keeps
    its high-water mark, which it reaches anyway. Not glibc (musl, macOS), or ``PHYSALIGN_MALLOC=default``:
    nothing changes.
    """
    if os.environ.get(HEAP_ENV) == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))

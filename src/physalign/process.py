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


"""Child processes die with the server, however it dies (SIGKILL and OOM kill included).

A process the server starts (the large-image worker) calls ``die_with_parent`` first thing. On
Linux the kernel then sends it SIGKILL when its parent exits (``prctl(PR_SET_PDEATHSIG)``); the
parent may already have died between the fork and that call, so the parent pid is checked after
it. Elsewhere a daemon thread polls the parent pid. Either way no worker outlives the server, and
multiprocessing's resource tracker, which lives until every holder of its pipe is gone, follows.

The death signal is tied to the *thread* that forked the child: the server forks its workers from
the event-loop thread, which lives as long as the server.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_POLL_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Arrange for this process to end when ``parent_pid`` (the process that started it) ends."""
    if sys.platform.startswith("linux") and _set_parent_death_signal(signal.SIGKILL):
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="lifeline", daemon=True).start()


def _set_parent_death_signal(signum: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0:
            return True
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        logger.warning("prctl unavailable (%s); watching the parent pid instead", exc)
    return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_POLL_S)
    os._exit(1)

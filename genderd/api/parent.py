"""The API processes of ``genderd serve --workers N`` do not outlive their parent.

uvicorn's supervisor (the `serve` process) stops its worker processes when it is stopped; killed
(SIGKILL, the OOM killer), it cannot, and they went on serving the old settings on its port, so
that a new `serve` found the port taken. `serve` names its own pid in the environment
(:data:`PARENT_ENV`) before uvicorn starts them; a process whose parent has that pid then

- asks the kernel for SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``, through
  ctypes), and
- elsewhere (or when ``prctl`` fails), checks its parent pid every :data:`PARENT_POLL_S` from
  its event loop (:func:`watch_parent`): a process whose parent died is adopted by another
  (init, a subreaper), so its parent pid changes.

Either way it gets SIGTERM: uvicorn's graceful shutdown (requests in flight finish, the
lifespan closes the Redis links). A process started otherwise (``serve`` with one process, an
embedded app, tests) watches nothing: a `serve` started with ``nohup`` keeps running when its
shell exits.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

log = logging.getLogger(__name__)

#: the environment variable `serve` sets to its pid for its worker processes
PARENT_ENV = "GENDERD_SERVE_PARENT_PID"
#: how often a worker process checks that its parent still lives (the portable fallback)
PARENT_POLL_S = 1.0
#: prctl(2) option: the signal this process gets when its parent dies (linux/prctl.h)
PR_SET_PDEATHSIG = 1


def supervisor() -> int | None:
    """The pid of the `serve` process that started this one, when it did (see the module),
    even if it has died since: uvicorn starts its workers with multiprocessing, which tells
    a process its parent's pid."""
    named = os.environ.get(PARENT_ENV, "")
    if not named.isdigit():
        return None
    parent = int(named)
    started_by = multiprocessing.parent_process()
    if os.getppid() == parent or (started_by is not None and started_by.pid == parent):
        return parent
    return None


@asynccontextmanager
async def following_parent() -> AsyncIterator[None]:
    """While inside (an API process's lifespan): stop this process when the `serve` process
    that started it dies, by the kernel's signal where there is one, else by
    :func:`watch_parent` on this event loop. Nothing for a process `serve` did not start."""
    parent = supervisor()
    if parent is None or die_with(parent):
        yield
        return
    watch = asyncio.create_task(watch_parent(parent))
    try:
        yield
    finally:
        watch.cancel()
        with suppress(asyncio.CancelledError):
            await watch


def die_with(parent: int) -> bool:
    """Have this process get SIGTERM when ``parent`` dies. Whether the kernel does it (Linux's
    ``PR_SET_PDEATHSIG``); else the caller watches. A parent that died already: SIGTERM now."""
    armed = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)  # this process: libc is loaded, no search
        armed = bool(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0)
        if not armed:
            log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before the kernel watched it
        _orphaned(parent)
        return True
    return armed


async def watch_parent(parent: int, poll_s: float = PARENT_POLL_S) -> None:
    """Until cancelled: every ``poll_s``, check that ``parent`` is still this process's parent;
    when it is not, stop this process (SIGTERM to itself) and return."""
    while os.getppid() == parent:
        await asyncio.sleep(poll_s)
    _orphaned(parent)


def _orphaned(parent: int) -> None:
    log.warning("the serve process %d is gone: this API process stops", parent)
    os.kill(os.getpid(), signal.SIGTERM)

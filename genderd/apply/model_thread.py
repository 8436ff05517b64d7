"""Running a Python model's computation off the event loop, with a per-event time limit.

A worker's shard loops, its heartbeat (the reads that keep its consumers alive) and its
metrics all run on one asyncio loop. A Python model's ``identify_gender`` runs in a helper
thread instead (one per worker: :class:`ModelThread`), one batch's computation at a time, so
a slow or stuck model never blocks the loop.

The thread marks each model call it makes in a :class:`Progress`. The loop waits for the
batch's result; when a call has run longer than ``model_timeout_ms``, the loop stops waiting
(:class:`Overrun`, naming the event) and starts a fresh helper thread. Python cannot kill a
thread: the stuck call keeps its thread until it returns, then that thread sees the batch was
abandoned and ends, and its result is discarded (commits happen on the loop, from a result
the loop received, so an abandoned computation never commits). At most
:data:`MAX_STUCK_THREADS` threads may be stuck at once; beyond that the worker waits for one
of them to return before computing again (its entries wait, and ``status`` shows the model
``STALLED``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from genderd.errors import GenderdError
from genderd.events import Event

log = logging.getLogger(__name__)
T = TypeVar("T")

#: abandoned helper threads whose model call has not returned yet, at most (per worker)
MAX_STUCK_THREADS = 8
_CHECK_MIN_S = 0.001  # the loop never re-checks a running call sooner than this


class Abandoned(GenderdError):
    """Raised in the helper thread, between two model calls (never inside one, so that no
    ``except`` of a model's can catch it), when the loop gave up on the batch it computes."""


class Progress:
    """The model call a helper thread is in, shared with the loop that waits for it."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # (event, perf_counter at its start): one attribute, so that the loop reads a
        # consistent pair without a lock
        self.current: tuple[Event, float] | None = None
        self.abandoned = False

    def begin(self, event: Event) -> None:
        """Mark the start of a model call on ``event`` (raises :class:`Abandoned`)."""
        if self.abandoned:
            raise Abandoned
        self.current = (event, time.perf_counter())

    def end(self) -> float:
        """Mark the end of the current call: how long it took, in seconds."""
        current, self.current = self.current, None
        return 0.0 if current is None else time.perf_counter() - current[1]

    def overrun(self) -> Event | None:
        """The event whose call has run past the limit, if any (read by the loop)."""
        current = self.current
        if current is not None and time.perf_counter() - current[1] > self.timeout_s:
            return current[0]
        return None

    def check_in_s(self) -> float:
        """How long the loop may wait before the current call could overrun."""
        current = self.current
        if current is None:
            return self.timeout_s
        return max(_CHECK_MIN_S, self.timeout_s - (time.perf_counter() - current[1]))


def timeout_detail(timeout_s: float) -> str:
    """The ``model_error`` detail of an event whose model call took too long."""
    return f"the model took longer than {timeout_s * 1000:g} ms on this event (timeout)"


@dataclass(frozen=True)
class Overrun:
    """A batch's computation the loop abandoned: the call on ``event`` did not return."""

    event: Event


class _Helper(threading.Thread):
    """A daemon thread running jobs one at a time (daemon: a stuck model call never keeps a
    stopping worker's process alive)."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            queue.SimpleQueue()
        )
        self.retired = False

    def run(self) -> None:
        while not self.retired:
            job, future = self.jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except Abandoned:
                future.set_result(None)  # nobody waits for it any more
            except Exception as error:  # the framework's, not the model's: the loop logs it
                future.set_exception(error)
            except BaseException as error:  # never a CancelledError the loop would obey
                future.set_exception(RuntimeError(f"model computation raised {error!r}"))


class ModelThread(Generic[T]):
    """One worker's helper thread for a Python model's computations (see the module)."""

    def __init__(self, name: str, timeout_s: float) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._helper: _Helper | None = None  # started at the first call
        self._stuck: list[_Helper] = []

    def _start(self) -> _Helper:
        helper = _Helper(f"genderd-model-{self.name}")
        helper.start()
        return helper

    async def call(self, work: Callable[[Progress], T]) -> T | Overrun:
        """``work(progress)`` run in the helper thread, or the :class:`Overrun` of a call of
        the model that took longer than the limit (then ``work`` is abandoned)."""
        async with self._lock:
            await self._wait_for_stuck()
            progress = Progress(self.timeout_s)
            future: concurrent.futures.Future[T] = concurrent.futures.Future()
            if self._helper is None:
                self._helper = self._start()
            self._helper.jobs.put((lambda: work(progress), future))
            waiting = asyncio.wrap_future(future)
            try:
                while True:
                    done, _ = await asyncio.wait({waiting}, timeout=progress.check_in_s())
                    if done:
                        return waiting.result()
                    event = progress.overrun()
                    if event is not None:
                        self._replace()
                        return Overrun(event)
            finally:
                progress.abandoned = True  # a no-op once it is done

    def _replace(self) -> None:
        """Retire the helper stuck in a model call and start a fresh one."""
        stuck, self._helper = self._helper, None
        if stuck is not None:
            stuck.retired = True
            self._stuck.append(stuck)
        log.warning(
            "%s: a model call runs past %g s; it keeps its thread until it returns "
            "(%d such threads now)",
            self.name,
            self.timeout_s,
            len(self._alive_stuck()),
        )

    def _alive_stuck(self) -> list[_Helper]:
        self._stuck = [t for t in self._stuck if t.is_alive()]
        return self._stuck

    async def _wait_for_stuck(self) -> None:
        """Wait while :data:`MAX_STUCK_THREADS` threads are stuck in calls of the model."""
        warned = False
        while len(self._alive_stuck()) >= MAX_STUCK_THREADS:
            if not warned:
                log.error(
                    "%s: %d model calls are stuck; computing waits until one returns",
                    self.name,
                    MAX_STUCK_THREADS,
                )
                warned = True
            await asyncio.sleep(self.timeout_s)


__all__ = [
    "MAX_STUCK_THREADS",
    "Abandoned",
    "ModelThread",
    "Overrun",
    "Progress",
    "timeout_detail",
]

"""The consume loop of one model and its lifecycle: signals, shutdown, backoff, reclaiming.

One asyncio task per shard reads the shard's stream through the model's consumer group and
hands batches to the :class:`~genderd.processor.Processor`; every so often it reclaims entries
that a dead consumer left pending. Several workers of a model share its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ResponseError

from genderd import catalog, pause, streams
from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment, open_deployment
from genderd.erasure import Scrubber
from genderd.errors import UnavailableError
from genderd.grading.plan import Grading
from genderd.health import FLUSH_INTERVAL_S, HealthRecorder
from genderd.layout import claim_layout
from genderd.models.base import Model
from genderd.processor import Outcome, Processor
from genderd.settings import Settings
from genderd.transport import Links, connect, translate
from genderd.worker_metrics import REFRESH_S, WorkerMetrics

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 10.0
SHUTDOWN_GRACE_S = 10.0
TRIM_INTERVAL_S = 60.0
RECLAIM_INTERVAL_MIN_S = 0.05
RECLAIM_INTERVAL_MAX_S = 15.0


def reclaim_interval_s(settings: Settings) -> float:
    """How often a worker reclaims idle pending entries (also re-driven ones: how soon a
    ``dead redrive --model`` is applied)."""
    half_idle = settings.claim_idle_ms / 2000
    return min(max(half_idle, RECLAIM_INTERVAL_MIN_S), RECLAIM_INTERVAL_MAX_S)


def consumer_name() -> str:
    """``host-pid``: unique per process, readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** min(self.failures, 30)))

    async def sleep(self, stop: asyncio.Event) -> None:
        """Sleep the next delay, or less if ``stop`` is set meanwhile."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), self.next_delay())


async def until_served(
    attempt: Callable[[], Awaitable[T]], what: str, stop: asyncio.Event
) -> T | None:
    """``attempt()``'s result, retried with :class:`Backoff` while Redis cannot serve it
    (logging "cannot ``what`` yet"); None when ``stop`` is set first. Other errors propagate."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            return await attempt()
        except Exception as raised:
            error = translate(raised)
            if not isinstance(error, UnavailableError):
                raise
            log.warning("cannot %s yet (%s); retrying", what, error)
            await backoff.sleep(stop)
    return None


class Worker:
    """One worker of one model over all shards."""

    def __init__(
        self,
        deployment: Deployment,
        links: Links,
        model: Model,
        *,
        consumer: str | None = None,
        stop_event: asyncio.Event | None = None,
        metrics: WorkerMetrics | None = None,
        grading: bool = True,
    ) -> None:
        """``grading``: grade the events applied (SPEC §14) when the settings say so; a
        replay's worker does not."""
        self.deployment = deployment
        self.metrics = metrics
        self.links = links
        self.client = links.client  # typed stream commands and blocking reads: the pool
        streams.keep_raw_entries(self.client)
        self.model = model
        self.settings = deployment.settings
        self.keys = deployment.keys
        self.consumer = consumer or consumer_name()
        self.clock = deployment.clock
        # Script calls go on the fast transport (the pipelined connection when there is one).
        settings = deployment.settings
        grades = (
            Grading(deployment.keys, settings.shards, settings.grading_max_delay_s * 1000)
            if grading and settings.grading
            else None
        )
        self.processor = Processor(deployment, links.fast, model, self.consumer, grades)
        self.totals = Outcome()
        self.health = HealthRecorder(self.keys, model.name)  # for status's FAILING
        self.stop_event = stop_event or asyncio.Event()
        # the pause of the model during a replay: looked at once a second, not per batch
        self.gate = pause.Gate(self.client, self.keys, model.name, self.consumer)
        self._last_reclaim: dict[int, float] = {}

    def __repr__(self) -> str:
        t = self.totals
        return (
            f"<Worker model={self.model.name} consumer={self.consumer} applied={t.applied} "
            f"dead={t.dead} failed={t.failed}>"
        )

    @property
    def shards(self) -> range:
        return self.deployment.shards

    @property
    def reclaim_interval_s(self) -> float:
        return reclaim_interval_s(self.settings)

    async def ensure_groups(self) -> None:
        """Record the model in the deployment (:mod:`genderd.catalog`), then create its group
        on every shard that lacks it (at id 0: full replay): no group without a record."""
        await catalog.record(self.client, self.deployment, self.model)
        created = [
            shard
            for shard in self.shards
            if await streams.ensure_group(self.client, self.keys.stream(shard), self.model.name)
        ]
        if created:
            log.info("created group %s at id 0 on %d shards", self.model.name, len(created))

    async def _handle(
        self, shard: int, entries: list[streams.Entry], deliveries: dict[str, int] | None = None
    ) -> Outcome:
        started = time.perf_counter()
        outcome = await self.processor.process(shard, entries, deliveries)
        if self.metrics is not None:
            self.metrics.batch(outcome, time.perf_counter() - started, self.clock())
        outcome.done = []  # per batch only: totals (and replay's) must not keep every event
        self.totals += outcome
        self.health.add(outcome, self.clock())
        await self.health.flush(self.client)
        return outcome

    # -- single steps (also used by tests and replay) -------------------------------------
    async def poll(self, shard: int, block_ms: int | None = None) -> Outcome:
        """Read and process one batch of new entries of ``shard``."""
        entries = await streams.read_new(
            self.client,
            self.keys.stream(shard),
            self.model.name,
            self.consumer,
            self.settings.batch_size,
            block_ms,
        )
        return await self._handle(shard, entries) if entries else Outcome()

    async def reclaim(self, shard: int, min_idle_ms: int | None = None) -> Outcome:
        """Take over and process entries idle longer than ``claim_idle_ms`` on ``shard``."""
        idle = self.settings.claim_idle_ms if min_idle_ms is None else min_idle_ms
        total, start = Outcome(), "0-0"
        while True:
            claimed = await streams.reclaim(
                self.client,
                self.keys.stream(shard),
                self.model.name,
                self.consumer,
                idle,
                self.settings.batch_size,
                start,
            )
            for entry_id in claimed.deleted:
                log.info(  # by an erasure (SPEC 9), or by hand
                    "%s: pending entry %s was deleted from shard %d",
                    self.model.name,
                    entry_id,
                    shard,
                )
            if claimed.entries:
                if self.metrics is not None:
                    self.metrics.reclaimed.inc(len(claimed.entries))
                log.info(
                    "%s: reclaimed %d entries on shard %d",
                    self.model.name,
                    len(claimed.entries),
                    shard,
                )
                total += await self._handle(shard, claimed.entries, claimed.deliveries)
            start = claimed.next_start
            if start == "0-0" or self.stop_event.is_set() or self.gate.pausing:
                return total

    async def resume_own(self, shard: int) -> Outcome:
        """Process entries this consumer name received before and never acknowledged."""
        entries = await streams.read_own_pending(
            self.client,
            self.keys.stream(shard),
            self.model.name,
            self.consumer,
            self.settings.batch_size,
        )
        return await self._handle(shard, entries) if entries else Outcome()

    async def drain(self) -> Outcome:
        """Process new entries of every shard until none is left (no blocking)."""
        total = Outcome()
        busy = True
        while busy:
            busy = False
            for shard in self.shards:
                outcome = await self.poll(shard)
                busy = busy or outcome.handled > 0
                total += outcome
        await self.health.flush(self.client, force=True)
        return total

    # -- the loop ----------------------------------------------------------------------------
    async def _shard_loop(self, shard: int) -> None:
        backoff = Backoff()
        resumed = False
        # Each step passes the gate: under a pause the loop finishes the step in hand and
        # waits there, reading, reclaiming and recreating nothing until the pause is lifted.
        while await self.gate.enter(self.stop_event):
            failed = False
            try:
                if not resumed:
                    await self.resume_own(shard)
                    resumed = True
                if time.monotonic() - self._last_reclaim.get(shard, 0.0) >= self.reclaim_interval_s:
                    self._last_reclaim[shard] = time.monotonic()
                    await self.reclaim(shard)
                await self.poll(shard, self.settings.block_ms)
                backoff.reset()
            except Exception as raised:
                failed = True
                await self._recover(shard, translate(raised))
            finally:
                self.gate.leave()
            if failed:
                await backoff.sleep(self.stop_event)

    async def _recover(self, shard: int, error: BaseException) -> None:
        """Log what stopped a shard's step (one line for a "not now" server state) and repair
        what can be repaired before the shard loop backs off and retries."""
        if self.metrics is not None:
            self.metrics.error(
                "unavailable" if isinstance(error, UnavailableError) else "unexpected"
            )
        if isinstance(error, UnavailableError):
            log.warning("%s: shard %d: %s; retrying", self.model.name, shard, error)
        elif isinstance(error, ResponseError) and "NOGROUP" in str(error):
            with contextlib.suppress(Exception):
                if await self.gate.paused_now():  # a replay deleted it and recreates it
                    log.info("%s: group missing on shard %d under a replay", self.model.name, shard)
                    return
            log.warning("%s: group missing on shard %d; recreating", self.model.name, shard)
            with contextlib.suppress(Exception):
                await streams.ensure_group(self.client, self.keys.stream(shard), self.model.name)
        else:
            log.error(
                "%s: shard %d: unexpected error; retrying",
                self.model.name,
                shard,
                exc_info=error,
            )

    async def _health_loop(self) -> None:
        """Write the model's failure counts every :data:`~genderd.health.FLUSH_INTERVAL_S`,
        whether batches come or not: after a burst of failures and no event since, ``status``
        still shows the model FAILING within seconds (the batches write them too, at most as
        often)."""
        while not self.stop_event.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), FLUSH_INTERVAL_S)
                return  # stopping: run() writes what is left
            await self.health.flush(self.client, force=True)

    async def _backlog_loop(self) -> None:
        """Read the model's lag and pending every REFRESH_S for the metrics' gauges."""
        assert self.metrics is not None
        while not self.stop_event.is_set():
            with contextlib.suppress(Exception):  # a gauge left as it was is fine
                lag = pending = 0
                for shard in self.shards:
                    for info in await streams.groups(self.client, self.keys, shard):
                        if info.group == self.model.name:
                            lag, pending = lag + info.lag, pending + info.pending
                self.metrics.backlog.lag, self.metrics.backlog.pending = lag, pending
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), REFRESH_S)

    async def _trim_loop(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), TRIM_INTERVAL_S)
                return
            cutoff = self.clock() - self.settings.retention_days * MS_PER_DAY
            for shard in self.shards:
                try:
                    removed = await streams.trim(self.client, self.keys, shard, cutoff)
                except Exception as error:  # trimming is housekeeping: never stop the worker
                    log.warning("trimming shard %d failed: %s", shard, error)
                    continue
                if removed:
                    log.info("trimmed %d entries from shard %d", removed, shard)

    def _scrubber(self) -> Scrubber:
        """This process's scrubber of erased clients' entries (genderd.erasure.scrub): it
        steps the scrubs while it holds their lease, one process of the deployment at a time."""
        return Scrubber(self.links.fast, self.deployment, self.consumer)

    async def _prepare(self) -> None:
        """Claim the data layout and create the groups (once, at start)."""
        await claim_layout(self.client, self.deployment)
        await self.ensure_groups()

    async def _prepare_unpaused(self) -> bool:
        """:meth:`_prepare` once no pause holds the model (a replay may be deleting its
        groups); False when stopped first."""
        if not await self.gate.enter(self.stop_event):
            return False
        try:
            await until_served(
                self._prepare, f"create the groups of {self.model.name}", self.stop_event
            )
        finally:
            self.gate.leave()
        return True

    async def run(self) -> None:
        """Consume until :meth:`stop` is called (or ``stop_event`` is set)."""
        gate = asyncio.create_task(self.gate.run(self.stop_event, self.settings.stall_after_s))
        await self._prepare_unpaused()
        log.info(
            "worker %s of model %s consuming %d shards",
            self.consumer,
            self.model.name,
            self.settings.shards,
        )
        tasks = [asyncio.create_task(self._shard_loop(shard)) for shard in self.shards]
        tasks.append(gate)
        tasks.append(asyncio.create_task(self._trim_loop()))
        tasks.append(asyncio.create_task(self._health_loop()))
        tasks.append(asyncio.create_task(self._scrubber().run(self.stop_event)))
        if self.metrics is not None:
            tasks.append(asyncio.create_task(self._backlog_loop()))
        await self.stop_event.wait()
        # Each shard loop finishes the batch in hand (a read blocks at most block_ms).
        _, pending = await asyncio.wait(
            tasks, timeout=self.settings.block_ms / 1000 + SHUTDOWN_GRACE_S
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.health.flush(self.client, force=True)
        await self.forget()
        log.info("stopped %r", self)

    async def forget(self) -> None:
        """Remove this consumer from the groups where it holds nothing pending."""
        for shard in self.shards:
            stream = self.keys.stream(shard)
            with contextlib.suppress(Exception):
                mine = await self.client.xpending_range(
                    stream, self.model.name, "-", "+", 1, consumername=self.consumer
                )
                if not mine:
                    await self.client.xgroup_delconsumer(stream, self.model.name, self.consumer)

    def stop(self) -> None:
        """Ask the worker to stop after the batches in hand; idempotent."""
        self.stop_event.set()


async def run_worker(
    settings: Settings,
    model_name: str,
    consumer: str | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> Worker | None:
    """Connect (retrying while Redis cannot serve) and run one worker until SIGTERM/SIGINT.

    ``settings.redis_url`` is resolved already (by the command line: :mod:`genderd.discovery`).

    The signal handlers stay installed until the connections are closed, so a second signal
    during shutdown does not kill the process halfway. Returns the worker (None if stopped
    before Redis could be reached).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    links = connect(settings)
    try:
        opening = functools.partial(open_deployment, links.client, settings)
        deployment = await until_served(opening, "open the deployment", stop)
        if deployment is None:
            return None
        model = deployment.model(model_name)
        metrics = None
        if metrics_port is not None:
            metrics = WorkerMetrics(model.name)
            metrics.serve(metrics_port, metrics_host)
        worker = Worker(
            deployment, links, model, consumer=consumer, stop_event=stop, metrics=metrics
        )
        await worker.run()
        return worker
    finally:
        await links.close()
        for sig in installed:
            loop.remove_signal_handler(sig)

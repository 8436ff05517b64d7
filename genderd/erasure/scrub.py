"""The scrub: deleting erased clients' stream entries and dead letters in the background, in
bounded steps shared by every pending erasure (SPEC §9).

Each shard has one scrub (its state in :meth:`genderd.keys.Keys.scrub`). ``erase.lua`` adds
each erased client to the shard's pending clients, to be completed by the shard's *next pass*.
A pass reads the shard's stream, the stream set aside if any, and the dead-letter stream, from
the start, :data:`STEP_COUNT` entries per script call (``scrub_step.lua``: about a
millisecond of server time), deleting the entries of every pending client written before its
erasure; then its *tidy* (``scrub_tidy.lua``, a page of clients per call) lets the clients it
completed go and gives their markers their lifetime; then each erasure it completed is recorded
done in that shard (:func:`genderd.erasure.records.shard_done`). However many erasures wait,
a pass reads each stream once: its cost grows with the history, not with the erasures.

Who steps it: every worker process runs a :class:`Scrubber` (``genderd up`` runs workers, so
it scrubs too), and ``genderd erase --wait`` runs one until its erasure is done. One process
at a time holds the *lease* (``scrub_lease.lua``; :data:`LEASE_MS`) and steps the shards
round-robin; the others look every :data:`POLL_S` whether it is free. Everything a scrub
knows is in Redis, each step is one atomic script call, and the steps that span calls (a
tidy page read then applied, an erasure recorded done then forgotten) are safe to repeat: a
scrubber killed at any point is taken over by another once its lease runs out, from where the
state says. Two processes stepping at once (one without the lease) share the work, never
double it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from genderd.deployment import Deployment
from genderd.erasure import records
from genderd.errors import UnavailableError
from genderd.events import text
from genderd.lua import Script
from genderd.transport import ScriptCall, Transport, translate

log = logging.getLogger(__name__)

SCRUB_STEP = Script.from_files("scrub_step.lua")
SCRUB_TIDY = Script.from_files("scrub_tidy.lua")
SCRUB_LEASE = Script.from_files("scrub_lease.lua")

STEP_COUNT = 500  # entries read per step (about a millisecond of server time)
#: after each step, a pause of this many times the step's round trip: a scrub takes at most
#: about half the server's time, leaving the rest to ingest and lookups however long it runs
PAUSE_RATIO = 1.0
TIDY_COUNT = 500  # pending clients looked at per tidy call
FINISH_COUNT = 100  # erasures recorded done per read of a shard's pending erasures
LEASE_MS = 3_000  # how long the lease outlives its holder
RENEW_S = 1.0  # how often the holder renews it (and looks for new work)
POLL_S = 1.0  # how often a process without work, or without the lease, looks again
BACKOFF_S = 5.0  # wait after a step failed (Redis unreachable, a key of the wrong type)
TIDY = "tidy"


@dataclass(frozen=True)
class Step:
    """What one step (or a peek) of a shard's scrub said."""

    phase: str  # after the step: events, aside, dead, tidy; "" between passes; "start" (peek)
    number: int  # the pass running, or the last one
    read: int  # entries read in that pass
    deleted: int  # entries deleted by this step
    waiting: int | None  # the lowest pass an erasure of the shard waits for

    @classmethod
    def of(cls, reply: Any) -> Step:
        phase, number, read, deleted, waiting = reply
        waiting_text = text(waiting)
        return cls(
            text(phase),
            int(number),
            int(read),
            int(deleted),
            int(float(waiting_text)) if waiting_text else None,
        )

    @property
    def finish_due(self) -> bool:
        """Between passes, with erasures the passes so far completed, not yet recorded."""
        return self.phase == "" and self.waiting is not None and self.waiting <= self.number

    @property
    def idle(self) -> bool:
        return self.phase == "" and not self.finish_due


class Scrubber:
    """Steps the shards' scrubs (see the module docstring); one per process."""

    def __init__(self, transport: Transport, deployment: Deployment, name: str) -> None:
        self.transport = transport
        self.deployment = deployment
        self.keys = deployment.keys
        self.name = name  # the lease holder's name: host-pid, as consumers are named
        self.steps = 0  # scrub_step.lua calls made (peeks not counted)
        self.deleted = 0  # entries and dead letters deleted

    def __repr__(self) -> str:
        return f"<Scrubber {self.name} steps={self.steps} deleted={self.deleted}>"

    def _call(self, shard: int, peek: bool = False) -> ScriptCall:
        keys = self.keys
        script_keys = [
            keys.stream(shard),
            keys.stream_aside(shard),
            keys.dead(shard),
            keys.stats(shard),
            keys.scrub(shard),
            keys.scrub_clients(shard),
            keys.scrub_erasures(shard),
        ]
        return ScriptCall(SCRUB_STEP, script_keys, [STEP_COUNT, "peek" if peek else "step"])

    async def peek(self) -> list[int]:
        """The shards whose scrub has work now (one round trip, nothing changed)."""
        calls = [self._call(shard, peek=True) for shard in self.deployment.shards]
        replies = await self.transport.execute_many(calls)
        return [
            shard
            for shard, reply in zip(self.deployment.shards, replies, strict=True)
            if not Step.of(reply).idle
        ]

    async def step(self, shard: int) -> Step:
        """One bounded step of ``shard``'s scrub: a read of its streams, or a tidy page; the
        erasures a pass completed are recorded done when it ends."""
        call = self._call(shard)
        step = Step.of(await self.transport.call(call.script, call.keys, call.args))
        self.steps += 1
        self.deleted += step.deleted
        if step.phase == TIDY:
            phase = await self._tidy(shard, step.number)
            if phase == TIDY:
                return step
            step = Step("", step.number, step.read, step.deleted, step.waiting)
            await self._finish(shard, step.number)
        elif step.finish_due:
            await self._finish(shard, step.number)
        return step

    async def _tidy(self, shard: int, number: int) -> str:
        """One page of pass ``number``'s tidy (scrub_tidy.lua); the phase after it."""
        keys = self.keys
        cursor = await self.transport.execute("HGET", keys.scrub(shard), "after")
        reply = await self.transport.execute(
            "HSCAN", keys.scrub_clients(shard), text(cursor or b"0"), "COUNT", TIDY_COUNT
        )
        after, page = text(reply[0]), reply[1]
        pairs = page.items() if isinstance(page, dict) else zip(page[::2], page[1::2], strict=True)
        fields: list[str] = []
        markers: list[str] = []
        for field, value in pairs:
            _, _, waits_for, _, client_digest = text(value).split()
            if int(waits_for) <= number:  # scrub_tidy.lua checks again
                fields.append(text(field))
                markers.append(keys.erased(shard, client_digest))
        done = await self.transport.call(
            SCRUB_TIDY,
            [keys.scrub(shard), keys.scrub_clients(shard), keys.erasures(shard), *markers],
            [number, after, records.lifetime_ms(self.deployment), *fields],
        )
        return text(done[0])

    async def _finish(self, shard: int, finished: int) -> None:
        """Record done in ``shard`` every erasure the passes up to ``finished`` completed, with
        what they deleted; then forget them there (in that order: a repeat records nothing
        twice)."""
        keys = self.keys
        while True:
            ids = await self.transport.execute(
                "ZRANGEBYSCORE", keys.scrub_erasures(shard), "-inf", finished,
                "LIMIT", 0, FINISH_COUNT,
            )  # fmt: skip
            for raw in ids:
                erasure_id = text(raw)
                counts = [f"{erasure_id}:entries", f"{erasure_id}:dead_letters"]
                entries, dead_letters = await self.transport.execute(
                    "HMGET", keys.scrub(shard), *counts
                )
                totals = (int(text(entries or b"0")), int(text(dead_letters or b"0")))
                everywhere = await records.shard_done(
                    self.transport, self.deployment, erasure_id, shard, totals
                )
                await self.transport.execute("HDEL", keys.scrub(shard), *counts)
                await self.transport.execute("ZREM", keys.scrub_erasures(shard), erasure_id)
                if everywhere:
                    await self._log_done(erasure_id)
            if len(ids) < FINISH_COUNT:
                return

    async def _log_done(self, erasure_id: str) -> None:
        found = await records.status(self.transport, self.deployment, erasure_id)
        if found is not None:
            log.info(
                "erasure %s done: %d stream entries, %d dead letters scrubbed",
                erasure_id,
                found.entries,
                found.dead_letters,
            )

    async def work(self, budget_s: float) -> bool:
        """Step the shards with work round-robin for up to ``budget_s``; whether there was
        any."""
        busy = await self.peek()
        deadline = time.monotonic() + budget_s
        worked = bool(busy)
        while busy and time.monotonic() < deadline:
            for shard in list(busy):
                started = time.monotonic()
                if (await self.step(shard)).idle:
                    busy.remove(shard)
                await asyncio.sleep((time.monotonic() - started) * PAUSE_RATIO)
        return worked

    async def drain(self) -> None:
        """Step until no scrub has work (without the lease: for ``erase --wait`` alone on a
        deployment, tests and benchmarks)."""
        while await self.work(RENEW_S):
            pass

    async def _lease(self, step: str) -> bool:
        held = await self.transport.call(
            SCRUB_LEASE, [self.keys.scrubber], [self.name, LEASE_MS, step]
        )
        return bool(int(held))

    async def run(self, stop: asyncio.Event) -> None:
        """Step the scrubs while holding the lease, until ``stop`` is set; look again every
        :data:`POLL_S` otherwise. Never raises: a failed step is logged and tried again after
        :data:`BACKOFF_S` (scrubbing is housekeeping; it must not stop a worker)."""
        try:
            while not stop.is_set():
                pause = POLL_S
                try:
                    if await self._lease("hold") and await self.work(RENEW_S):
                        continue
                except Exception as raised:
                    error = translate(raised)
                    if isinstance(error, UnavailableError):
                        log.warning("cannot scrub now (%s); trying again", error)
                    else:  # a server's refusal in one line; anything else with its traceback
                        log.error(
                            "scrubbing failed: %s; trying again",
                            error,
                            exc_info=not isinstance(error, RedisError),
                        )
                    pause = BACKOFF_S
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
        finally:
            with contextlib.suppress(Exception):
                await self._lease("release")


#: progress(status): an erasure's status, each time it is read while waiting for it
Watch = Callable[[records.ErasureStatus], None]
WAIT_POLL_S = 0.5  # how often a wait reads the erasure's status


async def wait(
    transport: Transport,
    deployment: Deployment,
    erasure_id: str,
    name: str,
    watch: Watch | None = None,
) -> records.ErasureStatus | None:
    """Follow an erasure until its scrub is done, scrubbing meanwhile (a :class:`Scrubber`
    named ``name`` that takes the lease when no one else holds it: a worker that holds it goes
    on, one that dies is taken over); its final status, or None for an unknown id."""
    stop = asyncio.Event()
    scrubber = asyncio.create_task(Scrubber(transport, deployment, name).run(stop))
    try:
        while True:
            found = await records.status(transport, deployment, erasure_id)
            if found is None or found.state == records.DONE:
                return found
            if watch is not None:
                watch(found)
            await asyncio.sleep(WAIT_POLL_S)
    finally:
        stop.set()
        await scrubber


SCRUB_REBASE = Script.from_files("scrub_rebase.lua")


async def rebase(transport: Transport, deployment: Deployment, shard: int) -> int:
    """After ``shard``'s stream was set aside (:mod:`genderd.aside`): re-base the scrub's
    cutoffs that are ids of the old stream (``scrub_rebase.lua``, a page of pending clients
    per call), so that the scrub keeps the new stream's entries; how many were re-based."""
    keys = deployment.keys
    script_keys = [keys.stream(shard), keys.scrub(shard), keys.scrub_clients(shard)]
    rebased, cursor = 0, "0"
    while True:
        reply = await transport.execute(
            "HSCAN", keys.scrub_clients(shard), cursor, "COUNT", TIDY_COUNT
        )
        cursor, page = text(reply[0]), reply[1]
        fields = list(page) if isinstance(page, dict) else page[::2]
        rebased += int(await transport.call(SCRUB_REBASE, script_keys, fields))
        if cursor == "0":
            return rebased

"""Pausing one model's workers while a replay rebuilds the model (docs/operations.md, Replay).

The protocol, in Redis (every key from :class:`~genderd.keys.Keys`):

- The replay takes the model's *pause* (``SET NX PX``: one replay of a model at a time) with a
  token of its own, and refreshes its TTL while it runs (:data:`PAUSE_TTL_MS`), so a replay that
  dies releases the pause by itself.
- Every worker of the model writes a heartbeat to the model's *workers* hash about once a second
  (:data:`CHECK_INTERVAL_S`) and reads the pause in the same round trip: nothing per event. On
  seeing a pause it finishes the batches in hand, stops reading, reclaiming and creating groups
  on every shard, then acknowledges: its heartbeat says ``paused <token>``. It stays alive and
  keeps heartbeating as paused; it resumes when the pause is gone.
- The replay waits until every live consumer of the model has acknowledged its token. Live: a
  heartbeat, or a read of the model's group, within ``stall_after_s``; what is silent longer is
  gone. A live consumer that does not acknowledge within the deadline (an earlier release that
  knows no pause, a hung process) makes the replay refuse, naming it, before anything changed.
- Just before deleting the model's groups and state the replay sets the *rebuilding* marker,
  which does not expire, and deletes it once the groups are back. A worker stays paused while
  the marker exists, so a replay that dies between the two leaves the model paused (``status``
  says "replay interrupted") until a replay runs to its end, never half-wiped and consumed.
  A replay that dies later leaves groups that are whole: the workers resume on them once the
  pause expires and apply what the replay had not, each entry once (the apply scripts' XACK).

A worker that fails to see a pause (hung longer than ``stall_after_s`` and woken mid-replay) does
no harm either: a batch applied on a destroyed group acknowledges nothing and so changes
nothing, and a worker never recreates a missing group while the pause or the marker exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from genderd import streams
from genderd.clock import wall_clock_ms
from genderd.errors import GenderdError, UnavailableError
from genderd.events import text
from genderd.keys import Keys
from genderd.lua import Script
from genderd.transport import AsyncClient, Transport, translate

log = logging.getLogger(__name__)

HOLD = Script.from_files("pause_hold.lua")
#: how often a worker heartbeats and looks for a pause (one round trip)
CHECK_INTERVAL_S = 1.0
#: how long a pause lives without its replay refreshing it
PAUSE_TTL_MS = 15_000
#: how often a replay refreshes its pause
REFRESH_INTERVAL_S = 2.0
#: how often a replay looks whether the workers have paused
WAIT_POLL_S = 0.2
#: how long past ``stall_after_s`` a replay waits for the workers to pause (by then every
#: consumer that stopped before the pause counts as gone)
ACK_MARGIN_S = 10.0
#: the consumer name under which `genderd replay` reads the model's groups
REPLAY_CONSUMER = "replay"
#: the token a worker acknowledges while only the rebuilding marker pauses it
MARKER_ONLY = "-"
RUNNING = "running"
PAUSED = "paused"


class ReplayRunningError(GenderdError, RuntimeError):
    """Another replay of the model holds its pause."""

    def __init__(self, model: str, holder: str) -> None:
        super().__init__(f"a replay of {model} is running ({holder}); wait for it to end")


class NotPausedError(GenderdError, RuntimeError):
    """Live consumers of the model did not pause in time; nothing was changed."""

    def __init__(self, model: str, consumers: list[str], waited_s: float) -> None:
        super().__init__(
            f"workers of {model} did not pause within {waited_s:g} s ({', '.join(consumers)}): "
            "an earlier genderd release or a hung process; stop them, then replay again"
        )
        self.consumers = consumers


class PauseLostError(GenderdError, RuntimeError):
    """The replay's pause expired under it (the replay stalled past its TTL)."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"the replay of {model} lost its pause (it stalled longer than "
            f"{PAUSE_TTL_MS / 1000:g} s); run it again"
        )


def heartbeat(state: str, now_ms: int | None = None) -> str:
    """A worker's entry in the workers hash: ``<wall ms> <state>``."""
    return f"{wall_clock_ms() if now_ms is None else now_ms} {state}"


@dataclass(frozen=True)
class Beat:
    """One worker's last heartbeat."""

    consumer: str
    at_ms: int
    state: str  # "running", or "paused <token>"


def parse_beats(raw: dict[bytes | str, bytes | str]) -> list[Beat]:
    beats = []
    for name, value in raw.items():
        at, _, state = text(value).partition(" ")
        with contextlib.suppress(ValueError):
            beats.append(Beat(text(name), int(at), state))
    return beats


@dataclass(frozen=True)
class PauseState:
    """What ``status`` shows of a model's pause, and of its workers' heartbeats."""

    paused: bool  # a replay holds the pause, or an interrupted one left the marker
    interrupted: bool  # the marker without a pause: a replay died mid-wipe
    #: workers heartbeating within stall_after_s, running or paused (a paused one goes on
    #: within a second of the pause's end)
    workers: int = 0


async def state_of(client: AsyncClient, keys: Keys, model: str, stall_ms: float) -> PauseState:
    pipe = client.pipeline(transaction=False)
    pipe.exists(keys.pause(model))
    pipe.exists(keys.rebuilding(model))
    pipe.hgetall(keys.workers(model))
    held, marked, raw = await pipe.execute()
    now = wall_clock_ms()
    workers = sum(1 for b in parse_beats(raw) if now - b.at_ms <= stall_ms)
    return PauseState(bool(held or marked), bool(marked and not held), workers)


class Gate:
    """A worker's side: shard loops pass through it for each step; :meth:`run` (a task of
    its own) heartbeats, sees pauses, waits for the steps in hand and acknowledges."""

    def __init__(self, client: AsyncClient, keys: Keys, model: str, consumer: str) -> None:
        self.client = client
        self.keys = keys
        self.model = model
        self.consumer = consumer
        self.ttl_ms = 0  # the workers hash's expiry; set by run()
        self.paused_by: str | None = None  # the token acknowledged (or to be)
        self._open = asyncio.Event()  # closed until the first look, and while paused
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = 0

    @property
    def pausing(self) -> bool:
        """A pause was seen: loops finish the batch in hand and take no next one."""
        return self.paused_by is not None

    async def enter(self, stop: asyncio.Event) -> bool:
        """Wait while paused; then count one step in hand. False: ``stop`` was set first."""
        while not self._open.is_set():
            if stop.is_set():
                return False
            opened = asyncio.create_task(self._open.wait())
            stopped = asyncio.create_task(stop.wait())
            _, pending = await asyncio.wait({opened, stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        if stop.is_set():
            return False
        self._busy += 1
        self._idle.clear()
        return True

    def leave(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    async def paused_now(self) -> bool:
        """Whether the pause or the rebuilding marker exists now (asked of Redis, not the last
        look): before recreating a group, which must not happen under a replay."""
        found = int(await self.client.exists(self.keys.pause(self.model)))
        found += int(await self.client.exists(self.keys.rebuilding(self.model)))
        return found > 0

    async def look(self) -> str | None:
        """Heartbeat and read the pause in one round trip; the token pausing now (None: none)."""
        state = f"{PAUSED} {self.paused_by}" if self.paused_by and not self._busy else RUNNING
        workers = self.keys.workers(self.model)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(workers, self.consumer, heartbeat(state))
        pipe.pexpire(workers, self.ttl_ms)
        pipe.get(self.keys.pause(self.model))
        pipe.exists(self.keys.rebuilding(self.model))
        _, _, token, marked = await pipe.execute()
        if token is not None:
            return text(token)
        return MARKER_ONLY if marked else None

    async def run(self, stop: asyncio.Event, stall_after_s: float) -> None:
        """Until ``stop``: look every :data:`CHECK_INTERVAL_S`, pause and resume."""
        self.ttl_ms = int(max(stall_after_s * 4, 60) * 1000)
        warned = False
        while not stop.is_set():
            try:
                token = await self.look()
                warned = False
            except Exception as raised:
                error = translate(raised)
                if not isinstance(error, UnavailableError) or not warned:
                    log.warning("%s: cannot look for a pause: %s", self.model, error)
                warned = True
            else:
                await self._follow(token, stop)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), CHECK_INTERVAL_S)
        with contextlib.suppress(Exception):
            await self.client.hdel(self.keys.workers(self.model), self.consumer)

    async def _follow(self, token: str | None, stop: asyncio.Event) -> None:
        if token is None:
            if self.paused_by is not None:
                log.info("%s: the pause is lifted; consuming again", self.model)
                self.paused_by = None
                self._open.set()
                await self.client.hset(
                    self.keys.workers(self.model), self.consumer, heartbeat(RUNNING)
                )
            self._open.set()
            return
        if token == self.paused_by:
            return
        first = self.paused_by is None
        self.paused_by = token
        self._open.clear()
        if first:
            log.info(
                "%s: paused (%s); finishing the batches in hand",
                self.model,
                "an interrupted replay left the model half rebuilt: run `genderd replay "
                f"--model {self.model}` to finish it"
                if token == MARKER_ONLY
                else "a replay rebuilds the model",
            )
        # the steps in hand end within a read's block_ms and their batch; until then the next
        # looks heartbeat as running, and the first look after writes the acknowledgement
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), CHECK_INTERVAL_S)
        if self._idle.is_set() and not stop.is_set():
            await self.client.hset(
                self.keys.workers(self.model), self.consumer, heartbeat(f"{PAUSED} {token}")
            )


async def replay_of(transport: Transport, keys: Keys, model: str) -> str | None:
    """What pauses ``model`` now: the token of the replay holding its pause,
    :data:`MARKER_ONLY` when only an interrupted replay's marker is left, or None."""
    token = await transport.execute("GET", keys.pause(model))
    if token is not None:
        return text(token)
    return MARKER_ONLY if int(await transport.execute("EXISTS", keys.rebuilding(model))) else None


def new_token() -> str:
    """A replay's token: who holds the pause, unique per run."""
    return f"{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}"


class Hold:
    """A replay's side: the pause it holds on one model, refreshed by a task of its own."""

    def __init__(
        self, client: AsyncClient, fast: Transport, keys: Keys, model: str, token: str
    ) -> None:
        self.client = client
        self.fast = fast
        self.keys = keys
        self.model = model
        self.token = token
        self.lost = False

    async def step(self, step: str) -> None:
        """Run one step of ``pause_hold.lua``; :class:`PauseLostError` when not held."""
        done = await self.fast.call(
            HOLD,
            [self.keys.pause(self.model), self.keys.rebuilding(self.model)],
            [self.token, PAUSE_TTL_MS, step],
        )
        if not int(done):
            self.lost = True
            raise PauseLostError(self.model)

    async def keep(self) -> None:
        """Refresh the pause until cancelled (or lost)."""
        while not self.lost:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            try:
                await self.step("refresh")
            except PauseLostError:
                log.warning("the replay of %s lost its pause", self.model)
            except Exception as error:  # the next refresh may get through: the TTL allows it
                log.warning("cannot refresh the pause of %s: %s", self.model, translate(error))

    async def unpaused(self, shards: range, stall_ms: int) -> list[str]:
        """The model's live consumers that have not acknowledged this pause."""
        now = wall_clock_ms()
        beats = parse_beats(await self.client.hgetall(self.keys.workers(self.model)))
        stale = [b.consumer for b in beats if now - b.at_ms > stall_ms]
        if stale:  # workers that stopped without saying so (kill -9): forget them
            await self.client.hdel(self.keys.workers(self.model), *stale)
        fresh = [b for b in beats if now - b.at_ms <= stall_ms]
        acked = {b.consumer for b in fresh if b.state == f"{PAUSED} {self.token}"}
        reading = await streams.live_consumers(
            self.client, self.keys, shards, [self.model], stall_ms
        )
        live = {b.consumer for b in fresh} | set(reading)
        return sorted(live - acked - {REPLAY_CONSUMER})

    async def acknowledged(self, stall_ms: int) -> list[str]:
        """The live workers that have acknowledged this pause."""
        now = wall_clock_ms()
        beats = parse_beats(await self.client.hgetall(self.keys.workers(self.model)))
        paused = f"{PAUSED} {self.token}"
        return sorted(b.consumer for b in beats if b.state == paused and now - b.at_ms <= stall_ms)

    async def wait_for_workers(self, shards: range, stall_ms: int, timeout_s: float) -> None:
        """Until every live consumer has paused; :class:`NotPausedError` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while waiting := await self.unpaused(shards, stall_ms):
            if self.lost:
                raise PauseLostError(self.model)
            if time.monotonic() >= deadline:
                raise NotPausedError(self.model, waiting, timeout_s)
            await asyncio.sleep(WAIT_POLL_S)


@contextlib.asynccontextmanager
async def held(client: AsyncClient, fast: Transport, keys: Keys, model: str) -> AsyncIterator[Hold]:
    """Take the model's pause for the block (refreshed meanwhile), then lift it."""
    hold = Hold(client, fast, keys, model, new_token())
    taken = await client.set(keys.pause(model), hold.token, nx=True, px=PAUSE_TTL_MS)
    if not taken:
        holder = await client.get(keys.pause(model))
        raise ReplayRunningError(model, "pause held by " + (text(holder) if holder else "?"))
    keeper = asyncio.create_task(hold.keep())
    try:
        yield hold
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        with contextlib.suppress(PauseLostError):
            await hold.step("release")

"""Writing events: a batching producer (with idempotency keys) and synthetic traffic."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from genderd.clock import MS_PER_DAY, MS_PER_MINUTE, MS_PER_SECOND, Clock, day_of, wall_clock_ms
from genderd.deployment import Deployment
from genderd.events import check_event
from genderd.ingest import Event, IdempotencyKeyError, check_key, plan, write_sync
from genderd.transport import SyncClient

DEFAULT_BATCH = 500
PACED_FLUSH_S = 0.1  # paced traffic (a --rate) is sent this often rather than a batch at a time
PACE_SLICE_S = 0.1  # a paced wait that may be cut short looks this often whether it should


def checked(deployment: Deployment, fields: Mapping[str, Any]) -> Event:
    """The event of producer fields, validated (raises ``EventError``) at the deployment's
    clock; a missing ``ts`` is written as now."""
    now = deployment.clock()
    settings = deployment.settings
    cid, gender, ts = check_event(fields, settings.genders, now, settings.max_future_ms)
    # An explicit ts always: the entry id's time (the server's clock) can be wrong (an entry
    # written with an explicit future id pushes every later id into the future).
    return cid, gender, ts, now if ts is None else ts


class Producer:
    """Validates events and writes them to their shard streams, a batch at a time.

    Events are buffered and sent ``batch_size`` at a time (one round trip per batch on a single
    server: one ``ingest.lua`` call per shard); :meth:`flush` sends what is buffered, and
    leaving the ``with`` block flushes. A bad event raises :class:`genderd.events.EventError`
    and is not buffered.

    A batch may carry an idempotency key (:meth:`flush` with ``key``, :meth:`send_batch`):
    sending it again with the same key, after a failure or from a re-run, writes none of the
    events an earlier attempt wrote and all of those it did not, within
    ``GENDERD_IDEMPOTENCY_TTL_S`` (:mod:`genderd.ingest`). Without a key, a batch sent again is
    written again (at-least-once).
    """

    def __init__(
        self, client: SyncClient, deployment: Deployment, *, batch_size: int = DEFAULT_BATCH
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.settings = deployment.settings
        self.batch_size = batch_size
        self.clock = deployment.clock
        self.sent = 0  # events of the batches sent (a repeat of a keyed batch included)
        self.written = 0  # events written to the streams (a keyed repeat writes fewer)
        self._buffer: list[Event] = []
        self._buffer_key: str | None = None  # of a keyed batch whose sending failed

    def __repr__(self) -> str:
        return f"<Producer sent={self.sent} written={self.written} buffered={len(self._buffer)}>"

    def send(self, cid: str, gender: str, ts: int | None = None) -> None:
        """Queue one event (``ts`` in ms; None: now, by the producer's clock)."""
        self.send_fields(
            {"cid": cid, "gender": gender}
            if ts is None
            else {"cid": cid, "gender": gender, "ts": ts}
        )

    def send_fields(self, fields: Mapping[str, Any]) -> None:
        """Queue one event given as producer fields (``cid``, ``gender``, optional ``ts``)."""
        self._buffer.append(self.check(fields))
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def check(self, fields: Mapping[str, Any]) -> Event:
        """The event of producer fields, validated (raises ``EventError``), as :meth:`write`
        takes it; a missing ``ts`` is now, by the producer's clock."""
        return checked(self.deployment, fields)

    def flush(self, key: str | None = None) -> int:
        """Send the buffered events as one batch, with the idempotency ``key`` when given;
        return how many events the batch held. When sending fails the events stay buffered
        with their key, so that ``flush()`` retries the same batch (send nothing else first:
        a keyed batch with other events is another body, refused); a batch refused because
        its key was used for another body is dropped."""
        if not self._buffer:
            return 0
        key = self._buffer_key if key is None else check_key(key)
        batch = plan(self.deployment, self._buffer, key, self.settings.idempotency_ttl_s)
        self._buffer_key = key
        try:
            self.written += write_sync(self.client, batch)
        except IdempotencyKeyError:  # the key is another body's: this batch never will be
            self._buffer, self._buffer_key = [], None
            raise
        self.sent += batch.count
        self._buffer, self._buffer_key = [], None
        return batch.count

    def write(self, events: Sequence[Event], key: str | None = None) -> int:
        """Send what is buffered, then ``events`` (from :meth:`check`) as one batch with the
        idempotency ``key``; return how many events that batch held."""
        if key is not None:
            check_key(key)
        self.flush()
        self._buffer = list(events)
        return self.flush(key)

    def send_batch(self, events: Iterable[Mapping[str, Any]], key: str | None = None) -> int:
        """:meth:`write` of events given as producer fields; a bad one raises
        ``EventError`` and nothing of the batch is sent."""
        return self.write([self.check(fields) for fields in events], key)

    def __enter__(self) -> Producer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self.flush()


# -- synthetic traffic ---------------------------------------------------------------------------
# Shoppers whose interest differs over time, so that the models differ in how well they predict
# the next visit (docs/running.md, "Demo traffic"). Each client's kind and departments follow
# from its number and the seed alone; the views themselves from the seeded generator.
SHOPPER_KINDS = ("loyal", "drifting", "browsing", "mixed")
SHOPPER_SHARES = (0.40, 0.30, 0.20, 0.10)  # of clients, in SHOPPER_KINDS order
LOYAL_SHARE = 0.8  # of a loyal or drifting shopper's views in its (current) department
SESSION_SHARE = 0.9  # of a browsing shopper's views in its session's department
MIXED_SHARE = 0.45  # of a mixed shopper's views in each of its two departments
DRIFT_PERIOD_MS = 10 * MS_PER_DAY  # a drifting shopper moves on to the next department
SESSION_VIEWS = (1, 7)  # views per session, uniform
VIEW_GAP_MS = (10 * MS_PER_SECOND, 3 * MS_PER_MINUTE)  # between views of a session, uniform
LIVE_SESSIONS = 64  # sessions open at once in live traffic (at most a quarter of the clients)
PROFILE_SEED = 0  # the shoppers of an unseeded run: every unseeded producer agrees on them

_LOYAL, _DRIFTING, _BROWSING, _MIXED = range(4)
_Profile = tuple[int, int, int, int]  # kind, first, second, phase_ms: Shopper, for the hot loop
_M64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: a fast, well-spread 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


@dataclass(frozen=True)
class Shopper:
    """How synthetic client ``C<n>`` shops (see :func:`synthetic`).

    ``first`` is a loyal shopper's department, a mixed shopper's first one and a drifting
    shopper's department at time ``-phase_ms``; ``second`` is a mixed shopper's other
    department, else the one after ``first`` in ``genders``. A drifting shopper moves on to
    the next department in ``genders`` (cyclically) at the times ``k * DRIFT_PERIOD_MS -
    phase_ms``; a browsing shopper's department is its session's.
    """

    kind: str
    first: str
    second: str
    phase_ms: int
    genders: tuple[str, ...]

    def department_at(self, ts_ms: int) -> str | None:
        """The department most views go to at ``ts_ms`` (None for a browsing or mixed one)."""
        if self.kind == "loyal":
            return self.first
        if self.kind == "drifting":
            first = self.genders.index(self.first)
            return self.genders[_drift_index(first, self.phase_ms, ts_ms, len(self.genders))]
        return None

    def last_switch_ms(self, ts_ms: int) -> int:
        """A drifting shopper's latest move to another department at or before ``ts_ms``."""
        return ts_ms - (ts_ms + self.phase_ms) % DRIFT_PERIOD_MS


def _drift_index(first: int, phase_ms: int, ts_ms: int, n_genders: int) -> int:
    return (first + (ts_ms + phase_ms) // DRIFT_PERIOD_MS) % n_genders


def shopper(
    n: int, genders: tuple[str, ...], seed: int | None = None, anchor_ms: int | None = None
) -> Shopper:
    """The shopper ``C<n>`` of :func:`synthetic` with ``seed`` (None: ``PROFILE_SEED``) and
    ``anchor_ms``."""
    kind, first, second, phase_ms = _profile(_seed_hash(seed), n, len(genders), anchor_ms or 0)
    return Shopper(SHOPPER_KINDS[kind], genders[first], genders[second], phase_ms, genders)


def _seed_hash(seed: int | None) -> int:
    return _mix64((PROFILE_SEED if seed is None else seed) & _M64)


def _profile(seed_hash: int, n: int, n_genders: int, anchor_ms: int = 0) -> _Profile:
    """Client ``n``'s kind, departments and drift phase: a hash of the seed and ``n``, the
    drift counted from ``anchor_ms`` (returned as the same moves in absolute time)."""
    h = _mix64(seed_hash ^ n)
    u = (h >> 11) / 9_007_199_254_740_992  # uniform in [0, 1)
    kind = len(SHOPPER_KINDS) - 1
    for i, share in enumerate(SHOPPER_SHARES):
        if u < share:
            kind = i
            break
        u -= share
    first = (h := _mix64(h)) % n_genders
    if kind == _MIXED:  # any other department
        second = (first + 1 + (h := _mix64(h)) % max(1, n_genders - 1)) % n_genders
    else:  # the next one
        second = (first + 1) % n_genders
    phase = _mix64(h) % DRIFT_PERIOD_MS
    if kind == _DRIFTING and anchor_ms:
        # moves at anchor + k * period - phase: the same moves at phase - anchor (mod the
        # period), from the department the whole periods between them lead to
        turns, phase = divmod(phase - anchor_ms, DRIFT_PERIOD_MS)
        first = (first + turns) % n_genders
        second = (first + 1) % n_genders
    return kind, first, second, phase


def synthetic(
    count: int | None,
    clients: int,
    genders: tuple[str, ...],
    *,
    days: int = 0,
    seed: int | None = None,
    clock: Clock = wall_clock_ms,
    anchor_ms: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Synthetic events: ``count`` of them (None: endless) over ``clients`` clients ``C1..Cn``.

    Each client is a :func:`shopper` of one kind, chosen from its number and the seed (an
    unseeded run uses ``PROFILE_SEED``, so that the history of ``up --demo`` and its live
    producer agree); the shares of clients are ``SHOPPER_SHARES``:

    - *loyal* (40%): ``LOYAL_SHARE`` (80%) of views in one department, the rest in the others;
    - *drifting* (30%): the same, but the department moves on to the next one every 10 days
      (``DRIFT_PERIOD_MS``) at a client-specific time, by event time (by the clock for live
      traffic), so any 10-day history holds exactly one move: ``top`` lags, ``last`` follows
      at once, ``top7d`` and ``recency`` after a few days;
    - *browsing* (20%): each session picks a department at random and keeps ``SESSION_SHARE``
      (90%) of its views there: ``last`` does well within a session, poorly across sessions;
    - *mixed* (10%): views split between two departments (45% each, the rest in the others;
      50/50 with two genders): nothing predicts them well.

    Every shopper visits in sessions of 1 to 7 views. With ``days`` > 0 a session starts at a
    uniform time within the last ``days`` days and its views, yielded together, are 10 s to
    3 min apart, never ahead of ``clock()``. Otherwise the times are left to the stream
    (arrival time): up to ``LIVE_SESSIONS`` sessions are open at once and each event continues
    one of them, so a session's views arrive close together. The same ``seed`` and clock give
    the same events.

    ``anchor_ms`` (a time not ahead of ``clock()``, e.g. :func:`day_start`) makes the events
    depend on the seed alone, relative to it: a history ends there instead of at ``clock()``,
    and drifting shoppers move at the same times relative to it (not to the epoch). Live
    traffic anchored at the same time agrees with that history on every shopper. So a history
    anchored at the start of the current UTC day (``genderd up --demo``) is the same on every
    machine, shifted by whole days: the same counts, the same answers of every model on the
    day it is written, ``top7d``'s window included.
    """
    traffic = _Traffic(clients, genders, seed, clock, anchor_ms)
    events = traffic.history(days) if days > 0 else traffic.live()
    return events if count is None else itertools.islice(events, count)


_Session = tuple[str, _Profile, int, int]  # cid, profile, the session's department, views left


class _Traffic:
    """The state of one :func:`synthetic` run: its generator and the shoppers met so far."""

    def __init__(
        self,
        clients: int,
        genders: tuple[str, ...],
        seed: int | None,
        clock: Clock,
        anchor_ms: int | None,
    ) -> None:
        self.clients = clients
        self.genders = genders
        self.clock = clock
        self.anchor_ms = anchor_ms
        self.rand = random.Random(seed).random
        self.seed_hash = _seed_hash(seed)
        self.profiles: dict[int, _Profile] = {}

    def session(self) -> _Session:
        """A new session: its client, the client's profile, its department and its views."""
        rand = self.rand
        n = int(rand() * self.clients) + 1
        p = self.profiles.get(n)
        if p is None:
            p = self.profiles[n] = _profile(
                self.seed_hash, n, len(self.genders), self.anchor_ms or 0
            )
        low, high = SESSION_VIEWS
        return f"C{n}", p, int(rand() * len(self.genders)), low + int(rand() * (high - low + 1))

    def view(self, p: _Profile, session_dept: int, ts: int | None) -> str:
        """One view's department (one draw whatever the kind); ``ts`` None: now, by the clock."""
        genders = self.genders
        n_genders = len(genders)
        kind, first, second, phase = p
        r = self.rand()
        if kind == _BROWSING:
            home, share = session_dept, SESSION_SHARE
        elif kind == _MIXED:
            if n_genders <= 2:
                return genders[first if r < 0.5 else second]
            if r < 2 * MIXED_SHARE:
                return genders[first if r < MIXED_SHARE else second]
            rest = [i for i in range(n_genders) if i not in (first, second)]
            return genders[rest[int((r - 2 * MIXED_SHARE) / (1 - 2 * MIXED_SHARE) * len(rest))]]
        elif kind == _DRIFTING:
            at = self.clock() if ts is None else ts
            home, share = _drift_index(first, phase, at, n_genders), LOYAL_SHARE
        else:
            home, share = first, LOYAL_SHARE
        if r < share:
            return genders[home]
        others = max(1, n_genders - 1)
        return genders[(home + 1 + int((r - share) / (1 - share) * others)) % n_genders]

    def history(self, days: int) -> Iterator[dict[str, Any]]:
        """Endless sessions at times within the last ``days`` days, each yielded whole."""
        rand = self.rand
        history_ms = days * MS_PER_DAY
        low_gap, high_gap = VIEW_GAP_MS
        anchor = self.anchor_ms
        while True:
            cid, p, dept, views = self.session()
            gaps = [low_gap + int(rand() * (high_gap - low_gap)) for _ in range(views - 1)]
            span = sum(gaps)
            end = self.clock() if anchor is None else anchor
            ts = end - span - int(rand() * (history_ms - span))  # last view <= end
            for gap in (0, *gaps):
                ts += gap
                yield {"cid": cid, "gender": self.view(p, dept, ts), "ts": ts}

    def live(self) -> Iterator[dict[str, Any]]:
        """Endless events without ``ts``: each continues one of the open sessions, at random."""
        rand = self.rand
        sessions = [self.session() for _ in range(max(1, min(LIVE_SESSIONS, self.clients // 4)))]
        while True:
            i = int(rand() * len(sessions))
            cid, p, dept, views = sessions[i]
            sessions[i] = self.session() if views == 1 else (cid, p, dept, views - 1)
            yield {"cid": cid, "gender": self.view(p, dept, None)}


def day_start(ms: int) -> int:
    """The start of the UTC day of ``ms``: the anchor of a reproducible history."""
    return day_of(ms) * MS_PER_DAY


class RateLimiter:
    """Paces a loop to ``rate`` iterations per second (None or 0: unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    def wait(self, stopped: Callable[[], bool] | None = None) -> None:
        """Wait for the next iteration's turn; with ``stopped``, return early once it says
        so (looked at every PACE_SLICE_S)."""
        if not self.interval:
            return
        self.next_at += self.interval
        delay = self.next_at - time.monotonic()
        if delay < -1.0:  # far behind (e.g. after a stall): do not burst to catch up
            self.next_at = time.monotonic()
        while delay > 0 and not (stopped and stopped()):
            time.sleep(min(delay, PACE_SLICE_S) if stopped else delay)
            delay = self.next_at - time.monotonic()

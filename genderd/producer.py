"""Writing events: a batching, pipelining producer and a synthetic traffic generator."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from genderd.clock import MS_PER_DAY, Clock, wall_clock_ms
from genderd.deployment import Deployment
from genderd.events import check_event
from genderd.transport import SyncClient

DEFAULT_BATCH = 500


def stream_entry(
    deployment: Deployment, cid: str, gender: str, ts: int | None
) -> tuple[str, dict[str, str]]:
    """The stream and fields of a validated event, as every genderd producer writes them."""
    fields = {"cid": cid, "gender": gender}
    if ts is not None:
        fields["ts"] = str(ts)
    return deployment.keys.stream(deployment.shard_of(cid)), fields


class Producer:
    """Validates events and writes them to their shard streams with pipelined ``XADD``.

    Events are buffered and sent ``batch_size`` at a time (one round trip per batch on a single
    server); :meth:`flush` sends what is buffered, and leaving the ``with`` block flushes.
    A bad event raises :class:`genderd.events.EventError` and is not buffered.
    """

    def __init__(
        self, client: SyncClient, deployment: Deployment, *, batch_size: int = DEFAULT_BATCH
    ) -> None:
        self.client = client
        self.deployment = deployment
        self.settings = deployment.settings
        self.batch_size = batch_size
        self.clock = deployment.clock
        self.sent = 0
        self._buffer: list[tuple[str, dict[str, str]]] = []

    def __repr__(self) -> str:
        return f"<Producer sent={self.sent} buffered={len(self._buffer)}>"

    def send(self, cid: str, gender: str, ts: int | None = None) -> None:
        """Queue one event (``ts`` in ms; None: now, by the producer's clock)."""
        self.send_fields(
            {"cid": cid, "gender": gender}
            if ts is None
            else {"cid": cid, "gender": gender, "ts": ts}
        )

    def send_fields(self, fields: Mapping[str, Any]) -> None:
        """Queue one event given as producer fields (``cid``, ``gender``, optional ``ts``)."""
        now = self.clock()
        cid, gender, ts = check_event(
            fields, self.settings.genders, now, self.settings.max_future_ms
        )
        # An explicit ts always: the entry id's time (the server's clock) can be wrong (an
        # entry written with an explicit future id pushes every later id into the future).
        self._buffer.append(stream_entry(self.deployment, cid, gender, now if ts is None else ts))
        if len(self._buffer) >= self.batch_size:
            self.flush()

    def flush(self) -> int:
        """Send the buffered events; return how many were sent."""
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        pipe = self.client.pipeline(transaction=False)
        for stream, entry in batch:
            pipe.xadd(stream, entry)  # type: ignore[arg-type]
        pipe.execute()
        self.sent += len(batch)
        return len(batch)

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


def synthetic(
    count: int | None,
    clients: int,
    genders: tuple[str, ...],
    *,
    days: int = 0,
    seed: int | None = None,
    clock: Clock = wall_clock_ms,
) -> Iterator[dict[str, Any]]:
    """Synthetic events: ``count`` of them (None: endless) over ``clients`` clients ``C1..Cn``.

    Each client has a favourite gender that 70% of its views go to. With ``days`` > 0, event
    times are spread uniformly over the last ``days`` days; otherwise they are left to the
    stream (arrival time).
    """
    rng = random.Random(seed)
    produced = 0
    while count is None or produced < count:
        n = rng.randint(1, clients)
        favourite = genders[n % len(genders)]
        gender = favourite if rng.random() < 0.7 else rng.choice(genders)
        event: dict[str, Any] = {"cid": f"C{n}", "gender": gender}
        if days > 0:
            event["ts"] = clock() - rng.randrange(days * MS_PER_DAY)
        produced += 1
        yield event


class RateLimiter:
    """Paces a loop to ``rate`` iterations per second (None or 0: unlimited)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        self.next_at += self.interval
        delay = self.next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:  # far behind (e.g. after a stall): do not burst to catch up
            self.next_at = time.monotonic()

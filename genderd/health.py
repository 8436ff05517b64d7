"""A model's recent failure rate (SPEC §13): how many of the events it handled in the last few
minutes its code failed on (``model_error``), for ``genderd status`` to mark it ``FAILING``.

Workers count, per minute, the events their model applied and those it failed on, and add
their counts to one hash per model and minute (:meth:`Keys.health`) every
:data:`FLUSH_INTERVAL_S`, on a timer of their own whether more events come or not (so that a
burst of failures shows within seconds when traffic stops), and when they stop; the hashes
expire after :data:`KEY_TTL_S`.
``status`` sums the last :data:`WINDOW_MINUTES` (the current minute included) of every
worker. Other dead letters (a bad ``cid``, an unknown gender) are the producer's, not the
model's, and are not counted. The rate is a rate only over at least :data:`MIN_EVENTS`
events: a model that failed on 1 of 3 events is not ``FAILING``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisError

from genderd.apply import Outcome
from genderd.keys import Keys
from genderd.transport import AsyncClient

log = logging.getLogger(__name__)

MS_PER_MINUTE = 60_000
WINDOW_MINUTES = 5
MIN_EVENTS = 20
FLUSH_INTERVAL_S = 5.0
KEY_TTL_S = 3600
EVENTS, MODEL_ERRORS = "events", "model_errors"


@dataclass(frozen=True)
class Health:
    """A model's events and failures over the last :data:`WINDOW_MINUTES`."""

    events: int  # applied or failed on by the model's code
    model_errors: int

    @property
    def failure_rate(self) -> float:
        """``model_errors / events``; 0.0 below :data:`MIN_EVENTS` events."""
        if self.events < MIN_EVENTS:
            return 0.0
        return self.model_errors / self.events


class HealthRecorder:
    """A worker's per-minute counts of one model, added to Redis now and then."""

    def __init__(self, keys: Keys, model: str) -> None:
        self.keys = keys
        self.model = model
        self._counts: dict[int, list[int]] = {}  # minute -> [events, model errors]
        self._flushed_at = time.monotonic()

    def add(self, outcome: Outcome, now_ms: int) -> None:
        failed = outcome.reasons.get("model_error", 0)
        if outcome.applied or failed:
            counts = self._counts.setdefault(now_ms // MS_PER_MINUTE, [0, 0])
            counts[0] += outcome.applied + failed
            counts[1] += failed

    async def flush(self, client: AsyncClient, *, force: bool = False) -> None:
        """Add the counts to Redis when :data:`FLUSH_INTERVAL_S` has passed (or ``force``)."""
        if not self._counts or (
            not force and time.monotonic() - self._flushed_at < FLUSH_INTERVAL_S
        ):
            return
        counts, self._counts = self._counts, {}
        self._flushed_at = time.monotonic()
        pipe = client.pipeline(transaction=False)
        for minute, (events, failed) in counts.items():
            key = self.keys.health(self.model, minute)
            pipe.hincrby(key, EVENTS, events)
            if failed:
                pipe.hincrby(key, MODEL_ERRORS, failed)
            pipe.expire(key, KEY_TTL_S)
        try:
            await pipe.execute()
        except (RedisError, OSError) as error:  # advisory counts: the batch is applied anyway
            log.debug("%s: health counts not written: %s", self.model, error)


async def recent(client: AsyncClient, keys: Keys, model: str, now_ms: int) -> Health:
    """``model``'s counts over the last :data:`WINDOW_MINUTES`, all workers together."""
    minute = now_ms // MS_PER_MINUTE
    pipe = client.pipeline(transaction=False)
    for m in range(minute - WINDOW_MINUTES + 1, minute + 1):
        pipe.hmget(keys.health(model, m), [EVENTS, MODEL_ERRORS])
    events = failed = 0
    for got_events, got_failed in await pipe.execute():
        events += int(got_events or 0)
        failed += int(got_failed or 0)
    return Health(events, failed)

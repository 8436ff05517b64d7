"""Turning a batch of one shard's stream entries into model effects, exactly once.

Valid entries go to the model's apply script, invalid ones (and entries delivered too often)
to the dead-letter script; each script acknowledges what it handles in the same atomic call,
so a batch that is delivered twice has its effect once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from genderd.events import Event, Invalid, Reason, parse_entry
from genderd.keys import Keys
from genderd.models.base import Model
from genderd.multiplex import MultiplexedConnection
from genderd.scripts import source
from genderd.settings import Settings
from genderd.streams import AsyncClient, Entry

log = logging.getLogger(__name__)

DEAD_LETTER_MAXLEN = 1_000_000  # approximate cap per shard; dead letters are for inspection
DETAIL_MAX_CHARS = 200

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Outcome:
    """What one call of :meth:`Processor.process` did."""

    applied: int = 0
    dead: int = 0
    failed: int = 0  # left pending after a script error; reclaimed and retried later

    def __iadd__(self, other: Outcome) -> Outcome:
        self.applied += other.applied
        self.dead += other.dead
        self.failed += other.failed
        return self


class Processor:
    """Applies batches of entries for one model."""

    def __init__(
        self,
        client: AsyncClient,
        model: Model,
        settings: Settings,
        clock: Clock = wall_clock_ms,
        multiplexed: MultiplexedConnection | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.clock = clock
        self.multiplexed = multiplexed
        self._apply = client.register_script(model.apply_source())
        self._dead = client.register_script(source("deadletter.lua"))

    async def _run(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """Run a script: on the pipelined connection when there is one (packed by hiredis,
        several shards' calls in flight at once), else through redis-py's pool."""
        if self.multiplexed is None:
            return await script(keys=keys, args=args)
        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await self.multiplexed.execute(*call)
        except NoScriptError:  # first use, or the server lost its script cache
            await self.multiplexed.execute("SCRIPT", "LOAD", script.script)
            return await self.multiplexed.execute(*call)

    async def process(
        self, shard: int, entries: Sequence[Entry], deliveries: dict[str, int] | None = None
    ) -> Outcome:
        """Validate, dead-letter and apply ``entries`` of ``shard``."""
        now = self.clock()
        valid: list[Event] = []
        dead: list[tuple[Invalid, dict[bytes, bytes]]] = []
        for entry_id, fields in entries:
            delivered = deliveries.get(entry_id, 1) if deliveries else 1
            if delivered > self.settings.max_deliveries:
                detail = (
                    f"delivered {delivered} times (max_deliveries={self.settings.max_deliveries})"
                )
                dead.append((Invalid(entry_id, Reason.MAX_DELIVERIES, detail), fields))
                continue
            parsed = parse_entry(
                entry_id, fields, self.settings.genders, now, self.settings.max_future_ms
            )
            if isinstance(parsed, Invalid):
                dead.append((parsed, fields))
            else:
                valid.append(parsed)
        outcome = Outcome()
        if dead:
            outcome.dead = await self._dead_letter(shard, dead)
        if valid:
            outcome += await self._apply_all(shard, valid, now)
        return outcome

    async def _dead_letter(self, shard: int, dead: list[tuple[Invalid, dict[bytes, bytes]]]) -> int:
        args: list[Any] = [self.model.name, DEAD_LETTER_MAXLEN]
        for invalid, fields in dead:
            log.info(
                "dead-lettering %s for %s: %s", invalid.id, self.model.name, invalid.reason.value
            )
            args += [
                invalid.id,
                invalid.reason.value,
                invalid.detail[:DETAIL_MAX_CHARS],
                len(fields),
            ]
            for name, value in fields.items():
                args += [name, value]
        keys = [self.keys.stream(shard), self.keys.dead(shard), self.keys.stats(shard)]
        return int(await self._run(self._dead, keys, args))

    async def _call_apply(self, shard: int, events: Sequence[Event], now: int) -> Outcome:
        keys = [self.keys.stream(shard), self.keys.stats(shard)]
        args: list[str] = [self.model.name, str(now), *self.model.params()]
        for event in events:
            keys += self.model.event_keys(shard, event, now)
            args += self.model.event_args(event)
        applied, *skipped = await self._run(self._apply, keys, args)
        for entry_id in skipped:
            log.error(
                "%s: entry %s left pending: a key of its client holds a non-hash value",
                self.model.name,
                entry_id.decode(),
            )
        return Outcome(applied=int(applied), failed=len(skipped))

    async def _apply_all(self, shard: int, events: list[Event], now: int) -> Outcome:
        try:
            return await self._call_apply(shard, events, now)
        except ResponseError:
            if len(events) == 1:
                log.exception("%s: applying entry %s failed", self.model.name, events[0].id)
                return Outcome(failed=1)
        # One entry spoiled the batch: apply one by one so the others go through; the failing
        # entry stays pending and is dead-lettered after max_deliveries attempts.
        outcome = Outcome()
        for event in events:
            outcome += await self._apply_all(shard, [event], now)
        return outcome

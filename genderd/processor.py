"""Turning a batch of one shard's stream entries into model effects, exactly once.

Valid entries go to the model's applier (:mod:`genderd.apply`: each kind of model brings its
own), invalid ones (entries delivered too often, and events the model failed on) to the
dead-letter script; each script acknowledges what it handles in the same atomic call, so a
batch that is delivered twice has its effect once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from genderd.apply import Applier, ModelErrors, Outcome
from genderd.deployment import Deployment
from genderd.events import DETAIL_MAX_CHARS, Event, Invalid, Reason, parse_entry, text
from genderd.grading.plan import Grading
from genderd.keys import digest
from genderd.lua import Script
from genderd.models.base import Model
from genderd.ratelog import RateLimitedLog
from genderd.streams import Entry, Fields
from genderd.transport import Transport

log = logging.getLogger(__name__)

DEAD_LETTER_MAXLEN = 1_000_000  # cap per shard (deadletter.lua); dead letters are for inspection
DEAD_LETTER = Script.from_files("deadletter.lua")


def _cid_in(pairs: Sequence[tuple[Any, Any]]) -> str | None:
    """The client id an entry's fields name, if any (the first ``cid`` field, as text)."""
    for name, value in pairs:
        if name in (b"cid", "cid"):
            try:
                return text(value)
            except UnicodeDecodeError:
                return None
    return None


class Processor:
    """Applies batches of entries for one model."""

    def __init__(
        self,
        deployment: Deployment,
        transport: Transport,
        model: Model,
        consumer: str,
        grading: Grading | None = None,
    ) -> None:
        self.deployment = deployment
        #: how the applied events are graded (None: not at all, as in a replay)
        self.grading = grading
        self.transport = transport
        self.model = model
        self.consumer = consumer
        self.settings = deployment.settings
        self.keys = deployment.keys
        self.clock = deployment.clock
        self.applier: Applier = model.applier(deployment, transport, consumer)
        # a failing model's events: one line per kind of error and interval, with a count
        self.errors_log = RateLimitedLog(log)

    async def process(
        self, shard: int, entries: Sequence[Entry], deliveries: dict[str, int] | None = None
    ) -> Outcome:
        """Validate, dead-letter and apply ``entries`` of ``shard``."""
        now = self.clock()
        valid: list[Event] = []
        dead: list[tuple[Invalid, Fields]] = []
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
            if isinstance(parsed, Event):
                parsed = self._on_its_shard(parsed, shard)
            if isinstance(parsed, Invalid):
                dead.append((parsed, fields))
            else:
                valid.append(parsed)
        outcome = Outcome()
        if dead:
            await self._dead_letter(shard, dead, outcome)
        if valid:
            # reclaimed entries (``deliveries`` given) may have been re-driven to this model
            reclaimed = deliveries is not None
            applied, errors = await self.applier.apply(shard, valid, now, self.grading, reclaimed)
            outcome += applied
            if errors:
                await self._model_errors(shard, errors, dict(entries), outcome)
        return outcome

    async def _model_errors(
        self, shard: int, errors: ModelErrors, fields_of: Mapping[str, Fields], outcome: Outcome
    ) -> None:
        """Dead-letter the events the model failed on (reason ``model_error``)."""
        dead = [
            (Invalid(e.id, Reason.MODEL_ERROR, detail), fields_of[e.id]) for e, detail in errors
        ]
        for invalid, _ in dead:
            kind = invalid.detail.split(":", 1)[0]  # e.g. the exception's type
            self.errors_log.warning(
                (self.model.name, kind), f"{self.model.name}: entry {invalid.id}: {invalid.detail}"
            )
        await self._dead_letter(shard, dead, outcome)

    def _on_its_shard(self, event: Event, shard: int) -> Event | Invalid:
        """The event, or ``wrong_shard`` when its client belongs to another shard's stream (a
        producer with the wrong shard rule: applied here, no lookup would ever find it)."""
        right = self.deployment.shard_of(event.cid)
        if right == shard:
            return event
        return Invalid(
            event.id,
            Reason.WRONG_SHARD,
            f"cid {event.cid!r} belongs on {self.keys.stream(right)} (shard {right}), "
            f"not shard {shard}: crc32(cid) mod {self.settings.shards}",
        )

    async def _dead_letter(
        self, shard: int, dead: list[tuple[Invalid, Fields]], outcome: Outcome
    ) -> None:
        """Dead-letter ``dead`` (each acknowledged in the same call), counted in ``outcome``."""
        done, erased = await self._dead_letter_call(shard, dead)
        outcome.dead += done
        outcome.erased += len(erased)
        for invalid, _ in dead:
            if invalid.id in erased:
                continue
            reason = invalid.reason.value
            outcome.reasons[reason] = outcome.reasons.get(reason, 0) + 1

    async def _dead_letter_call(
        self, shard: int, dead: list[tuple[Invalid, Fields]]
    ) -> tuple[int, set[str]]:
        """Dead-letter ``dead``: (entries dead-lettered, ids of erased clients' dropped)."""
        keys = [
            self.keys.stream(shard),
            self.keys.dead(shard),
            self.keys.stats(shard),
            self.keys.erasures(shard),
        ]
        args: list[Any] = [self.model.name, DEAD_LETTER_MAXLEN]
        markers: dict[str, int] = {}  # client -> index of its erasure marker in keys
        for invalid, fields in dead:
            if invalid.reason is not Reason.MODEL_ERROR:  # logged, rate-limited, by the caller
                log.info(
                    "dead-lettering %s for %s: %s",
                    invalid.id,
                    self.model.name,
                    invalid.reason.value,
                )
            pairs = list(fields.items() if isinstance(fields, Mapping) else fields)
            cid = _cid_in(pairs)
            marker = 0
            # every erased client has a marker in every shard, in this shard's ids: an entry
            # written to the wrong shard is compared with it too (see genderd/erasure/__init__.py)
            if cid is not None:
                if cid not in markers:
                    keys.append(self.keys.erased(shard, digest(cid)))
                    markers[cid] = len(keys)
                marker = markers[cid]
            args += [
                invalid.id,
                invalid.reason.value,
                invalid.detail[:DETAIL_MAX_CHARS],
                marker,
                len(pairs),
            ]
            for name, value in pairs:
                args += [name, value]
        done, *erased = await self.transport.call(DEAD_LETTER, keys, args)
        return int(done), {text(i) for i in erased}


__all__ = ["DEAD_LETTER", "DEAD_LETTER_MAXLEN", "Outcome", "Processor"]

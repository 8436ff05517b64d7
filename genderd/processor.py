"""Turning a batch of one shard's stream entries into model effects, exactly once.

Valid entries go to the model's apply script, invalid ones (and entries delivered too often)
to the dead-letter script; each script acknowledges what it handles in the same atomic call,
so a batch that is delivered twice has its effect once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from genderd.clock import client_expiry_ms
from genderd.deployment import Deployment
from genderd.events import Event, Invalid, Reason, parse_entry
from genderd.keys import digest, result_field
from genderd.lua import Script
from genderd.models.base import Model
from genderd.models.python import PythonModel
from genderd.streams import Entry, Fields, parse_id
from genderd.transport import Transport

log = logging.getLogger(__name__)

DEAD_LETTER_MAXLEN = 1_000_000  # approximate cap per shard; dead letters are for inspection
DETAIL_MAX_CHARS = 200
DEAD_LETTER = Script.from_files("deadletter.lua")
PYTHON_READ = Script.from_files("python_read.lua")
COMMIT_ATTEMPTS = 5  # a Python model's client computed again after a conflicting commit


def _cid_in(pairs: Sequence[tuple[Any, Any]]) -> str | None:
    """The client id an entry's fields name, if any (the first ``cid`` field, as text)."""
    for name, value in pairs:
        if name in (b"cid", "cid"):
            try:
                return value.decode() if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                return None
    return None


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class Outcome:
    """What one call of :meth:`Processor.process` did."""

    applied: int = 0
    dead: int = 0
    failed: int = 0  # left pending after a script error; reclaimed and retried later
    erased: int = 0  # acknowledged unapplied: their client was erased after they were written
    reasons: dict[str, int] = field(default_factory=dict)  # dead-letter reason -> entries
    # the events the calls acknowledged (applied, or found applied by a stale twin): what
    # event-to-answer latency is measured from. Per batch: the worker hands them to its
    # metrics and drops them, so that running totals never hold events.
    done: list[Event] = field(default_factory=list)

    @property
    def handled(self) -> int:
        """Entries this call handled one way or another (0: it found nothing to do)."""
        return self.applied + self.dead + self.failed + self.erased

    def __iadd__(self, other: Outcome) -> Outcome:
        self.applied += other.applied
        self.dead += other.dead
        self.failed += other.failed
        self.erased += other.erased
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n
        self.done += other.done
        return self


class Processor:
    """Applies batches of entries for one model."""

    def __init__(
        self, deployment: Deployment, transport: Transport, model: Model, consumer: str
    ) -> None:
        self.deployment = deployment
        self.transport = transport
        self.model = model
        self.consumer = consumer  # a Python model's commit claims its entries for it
        self.settings = deployment.settings
        self.keys = deployment.keys
        self.clock = deployment.clock
        # per shard: the erasure sentinel's value as last read ("": none; see _call_apply)
        self._sentinels: dict[int, str] = {}

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
        if valid and isinstance(self.model, PythonModel):
            fields_of = dict(entries)
            outcome += await self._apply_python(shard, self.model, valid, fields_of, now)
        elif valid:
            outcome += await self._apply_all(shard, valid, now)
        return outcome

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
            log.info(
                "dead-lettering %s for %s: %s", invalid.id, self.model.name, invalid.reason.value
            )
            pairs = list(fields.items() if isinstance(fields, Mapping) else fields)
            cid = _cid_in(pairs)
            marker = 0
            # a client of another shard has no marker here (see docs/operations.md, Erasing)
            if cid is not None and self.deployment.shard_of(cid) == shard:
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
        return int(done), {_text(i) for i in erased}

    async def _call_apply(self, shard: int, events: Sequence[Event], now: int) -> Outcome:
        """One call of the model's apply script for ``events``, grouped per client (the
        batch frame's contract in ``_lib.lua``): each client's keys once, then its entries.
        A client with an entry written before the shard's latest erasure also gets its
        erasure marker; when the shard's erasure sentinel has moved since it was last read,
        the frame does nothing and says so, and the call is made again."""
        per_client: dict[str, list[Event]] = {}
        for event in events:
            per_client.setdefault(event.cid, []).append(event)
        while True:
            known = self._sentinels.get(shard, "")
            reply = await self._apply_call(shard, per_client, now, known)
            if reply[0] != -1:
                break
            self._sentinels[shard] = _text(reply[1])
        applied, erased_n, *skipped = reply
        for entry_id in skipped:
            log.error(
                "%s: entry %s left pending: a key of its client holds a non-hash value",
                self.model.name,
                entry_id.decode(),
            )
        if skipped:
            left = {i.decode() if isinstance(i, bytes) else str(i) for i in skipped}
            done = [e for e in events if e.id not in left]
        else:
            done = list(events)
        return Outcome(applied=int(applied), failed=len(skipped), erased=int(erased_n), done=done)

    async def _apply_call(
        self, shard: int, per_client: dict[str, list[Event]], now: int, known: str
    ) -> Any:
        model = self.model
        keys = [self.keys.stream(shard), self.keys.stats(shard), self.keys.erasures(shard)]
        args: list[str] = [model.name, str(now), self._expiry(now), known, *model.params()]
        before = parse_id(known) if known else None
        for cid, own in per_client.items():
            if before is not None and any(parse_id(e.id) <= before for e in own):
                keys.append(self.keys.erased(shard, digest(cid)))
                args.append(str(-len(own)))
            else:
                args.append(str(len(own)))
            keys += model.client_keys(shard, cid, own, now)
            for event in own:
                args += (event.id, event.gender, str(event.ts))
        return await self.transport.call(model.apply_script, keys, args)

    def _expiry(self, now: int) -> str:
        """ARGV of the apply scripts: when the clients they touch expire (0: never)."""
        return str(client_expiry_ms(now, self.settings.client_ttl_days))

    async def _apply_python(
        self,
        shard: int,
        model: PythonModel,
        events: list[Event],
        fields_of: Mapping[str, Fields],
        now: int,
    ) -> Outcome:
        """A Python model's batch: read the clients' states, run the model, commit (see
        ``python_commit.lua``). A client whose state or entries changed under it (another
        worker committed, or reclaimed and applied an entry) is computed again from the state
        as it is now, with its entries still pending, up to COMMIT_ATTEMPTS times; after that
        its entries stay pending and are reclaimed later."""
        per_client: dict[str, list[Event]] = {}
        for event in events:
            per_client.setdefault(event.cid, []).append(event)
        outcome = Outcome()
        state_field, version_field = model.state_field, model.version_field
        ts_field = result_field(model.name, "ts")
        for _ in range(COMMIT_ATTEMPTS):
            cids = list(per_client)
            keys = [self.keys.result(shard, cid) for cid in cids]
            flat = await self.transport.call(
                PYTHON_READ, keys, [state_field, version_field, ts_field]
            )
            stored = [flat[i : i + 3] for i in range(0, len(flat), 3)]
            args: list[str] = [model.name, self.consumer, self._expiry(now)]
            committed_keys: list[str] = []
            committed: list[str] = []
            applied_of: dict[str, list[Event]] = {}
            failed: list[tuple[Event, str]] = []
            for cid, key, (state, version, ts) in zip(cids, keys, stored, strict=True):
                done = model.run(state, per_client[cid])
                failed += done.failed
                if not done.applied:
                    continue
                set_, delete = model.answer_fields_of(done, None if ts is None else int(ts), now)
                ids = [e.id for e in done.applied]
                applied_of[cid] = done.applied
                args += [_text(version), str(len(ids)), *ids, str(len(set_) // 2), *set_]
                args += [str(len(delete)), *delete]
                committed_keys += (self.keys.erased(shard, digest(cid)), key)
                committed.append(cid)
            retry: dict[str, list[Event]] = {}
            if committed:
                reply = await self.transport.call(
                    model.apply_script,
                    [
                        self.keys.stream(shard),
                        self.keys.stats(shard),
                        self.keys.erasures(shard),
                        *committed_keys,
                    ],
                    args,
                )
                applied, erased, skipped = int(reply[0]), int(reply[1]), int(reply[2])
                rest = reply[3:]
                outcome.applied += applied
                outcome.erased += erased
                outcome.failed += skipped
                rest = rest[skipped:]
                while rest:
                    index, count = int(rest[0]), int(rest[1])
                    pending = {_text(i) for i in rest[2 : 2 + count]}
                    rest = rest[2 + count :]
                    cid = committed[index - 1]
                    retry[cid] = [e for e in per_client[cid] if e.id in pending]
            outcome.done += [e for cid in committed if cid not in retry for e in applied_of[cid]]
            # a failure is dead-lettered once its client's commit went through (a client
            # computed again may not fail on the state as it is now)
            dead = [
                (Invalid(e.id, Reason.MODEL_ERROR, detail), fields_of[e.id])
                for e, detail in failed
                if e.cid not in retry
            ]
            if dead:
                for invalid, _ in dead:
                    log.warning("%s: entry %s: %s", model.name, invalid.id, invalid.detail)
                await self._dead_letter(shard, dead, outcome)
            per_client = {cid: own for cid, own in retry.items() if own}
            if not per_client:
                break
        else:
            outcome.failed += sum(len(own) for own in per_client.values())
        return outcome

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

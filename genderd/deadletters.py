"""Dead letters (SPEC §2): list them, show them, re-drive them once fixed, purge them.

A worker copies an entry it cannot apply to its shard's dead-letter stream
(``<prefix>:{sN}:dead``) with the original fields plus ``_id`` (the entry id), ``_model``,
``_reason`` and ``_detail``. An entry that fails validation is dead-lettered by every model,
so it stands there once per model.

Re-driving takes an original entry (all its copies) and writes its event again, to the stream
of the shard its client belongs to, once the cause is fixed: a producer that used the wrong
shard rule, a gender added to ``GENDERD_GENDERS``. The event keeps its time: its ``ts``, or the
original entry id's time. An entry is re-driven only when every model dead-lettered it;
otherwise some model applied it, and writing it again would count it twice there. The write is
guarded by a marker for the original entry, so an interrupted re-drive run again adds nothing
twice; the dead letters are deleted after the write.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.events import Event, Invalid, Reason, parse_entry, text

__all__ = ["DeadLetter", "Event", "Redriven", "parse_entry", "purge", "redrive", "scan", "summary"]
from genderd.keys import digest
from genderd.lua import Script
from genderd.streams import Fields
from genderd.transport import AsyncClient, Transport

PAGE = 1_000
META = (b"_id", b"_model", b"_reason", b"_detail")
REDRIVE = Script.from_files("redrive.lua")


@dataclass(frozen=True)
class DeadLetter:
    """One copy of a dead-lettered entry."""

    shard: int
    dead_id: str  # the copy's id in the dead-letter stream
    entry_id: str  # the original entry's id in the shard's stream
    model: str
    reason: str
    detail: str
    fields: Fields  # the original fields, in order

    def event_fields(self) -> dict[str, str]:
        """The original fields as text (for display)."""
        return {
            name.decode(errors="replace"): value.decode(errors="replace")
            for name, value in self.fields
        }


def _letter(shard: int, dead_id: Any, raw: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        shard=shard,
        dead_id=text(dead_id),
        entry_id=text(raw.get(b"_id", b"")),
        model=text(raw.get(b"_model", b"")),
        reason=text(raw.get(b"_reason", b"")),
        detail=raw.get(b"_detail", b"").decode(errors="replace"),
        fields=[(k, v) for k, v in raw.items() if k not in META],
    )


async def scan(
    client: AsyncClient,
    deployment: Deployment,
    *,
    shards: Sequence[int] | None = None,
    reason: str | None = None,
    model: str | None = None,
) -> AsyncIterator[DeadLetter]:
    """Every dead letter of ``shards`` (default: all), oldest first per shard, filtered."""
    for shard in deployment.shards if shards is None else shards:
        key, start = deployment.keys.dead(shard), "-"
        while True:
            page: Any = await client.xrange(key, min=start, max="+", count=PAGE)
            for dead_id, raw in page:
                letter = _letter(shard, dead_id, raw)
                if (reason is None or letter.reason == reason) and (
                    model is None or letter.model == model
                ):
                    yield letter
            if len(page) < PAGE:
                break
            start = f"({text(page[-1][0])}"


async def summary(
    client: AsyncClient, deployment: Deployment, shards: Sequence[int] | None = None
) -> Counter[tuple[str, int]]:
    """How many dead letters there are per (reason, shard)."""
    counts: Counter[tuple[str, int]] = Counter()
    async for letter in scan(client, deployment, shards=shards):
        counts[(letter.reason, letter.shard)] += 1
    return counts


@dataclass
class Redriven:
    """What a re-drive did, per original entry."""

    written: list[str] = field(default_factory=list)  # entry ids written again
    before: list[str] = field(default_factory=list)  # written by an earlier (interrupted) run
    partial: list[str] = field(default_factory=list)  # some model applied it: left alone
    invalid: dict[str, str] = field(default_factory=dict)  # still invalid: id -> why
    erased: list[str] = field(default_factory=list)  # its client was erased since: dropped
    deleted: int = 0  # dead-letter copies deleted


async def redrive(
    client: AsyncClient,
    transport: Transport,
    deployment: Deployment,
    letters: Sequence[DeadLetter],
    *,
    dry_run: bool = False,
) -> Redriven:
    """Write the events of ``letters`` again, to their client's shard, at most once each
    (see the module docstring); delete the dead letters of those written."""
    settings = deployment.settings
    now = deployment.clock()
    models = set(deployment.registry.names())
    ttl_ms = settings.retention_days * MS_PER_DAY
    by_entry = await _all_copies(client, deployment, letters, models)
    done = Redriven()
    for (shard, entry_id), copies in by_entry.items():
        if {c.model for c in copies} != models:
            done.partial.append(entry_id)
            continue
        if copies[0].reason == Reason.DUPLICATE_FIELD.value:
            # the dead letter keeps one value per name: which one was meant is unknown
            done.invalid[entry_id] = "duplicate_field: resend it from the producer"
            continue
        parsed = parse_entry(
            entry_id, copies[0].fields, settings.genders, now, settings.max_future_ms
        )
        if isinstance(parsed, Invalid):
            done.invalid[entry_id] = f"{parsed.reason.value}: {parsed.detail}"
            continue
        if dry_run:
            done.written.append(entry_id)
            continue
        written = await _write(transport, deployment, shard, parsed, ttl_ms)
        if written is None:
            done.erased.append(entry_id)
        else:
            (done.written if written else done.before).append(entry_id)
        done.deleted += int(
            await client.xdel(deployment.keys.dead(shard), *(c.dead_id for c in copies))
        )
    return done


async def _all_copies(
    client: AsyncClient, deployment: Deployment, letters: Sequence[DeadLetter], models: set[str]
) -> dict[tuple[int, str], list[DeadLetter]]:
    """The chosen letters grouped by original entry, with every other copy of the same entries
    (one per model): the shards of entries that lack a model's copy (chosen by ``--model``)
    are scanned again; the others are complete already."""
    by_entry: dict[tuple[int, str], list[DeadLetter]] = defaultdict(list)
    for letter in letters:
        by_entry[(letter.shard, letter.entry_id)].append(letter)
    lacking = {key for key, copies in by_entry.items() if {c.model for c in copies} != models}
    if lacking:
        for key in lacking:
            by_entry[key] = []
        async for letter in scan(client, deployment, shards=sorted({s for s, _ in lacking})):
            key = (letter.shard, letter.entry_id)
            if key in lacking:
                by_entry[key].append(letter)
    return by_entry


async def _write(
    transport: Transport, deployment: Deployment, source: int, event: Event, ttl_ms: int
) -> bool | None:
    """True: written; False: written by an earlier run; None: its client was erased since."""
    target = deployment.shard_of(event.cid)
    keys = [
        deployment.keys.stream(target),
        deployment.keys.redriven(target, source, event.id),
        deployment.keys.erased(target, digest(event.cid)),
    ]
    # The event keeps its time: its ts, or the time of the entry id it first arrived with.
    # (parse_entry gave it the entry id's time when the entry had no ts)
    args = [ttl_ms, event.id, "cid", event.cid, "gender", event.gender, "ts", event.ts]
    reply = await transport.call(REDRIVE, keys, args)
    return None if reply in (b"erased", "erased") else bool(reply)


async def purge(client: AsyncClient, deployment: Deployment, letters: Sequence[DeadLetter]) -> int:
    """Delete ``letters`` from the dead-letter streams; return how many were deleted."""
    by_shard: dict[int, list[str]] = defaultdict(list)
    for letter in letters:
        by_shard[letter.shard].append(letter.dead_id)
    deleted = 0
    for shard, ids in by_shard.items():
        for start in range(0, len(ids), PAGE):
            deleted += int(
                await client.xdel(deployment.keys.dead(shard), *ids[start : start + PAGE])
            )
    return deleted

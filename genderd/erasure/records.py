"""The record of each erasure, and its progress (``genderd erase --status``,
``GET /v1/erasures/{id}``).

An erasure's record (:meth:`genderd.keys.Keys.erasure`) is written before its first marker and
holds no client id (SPEC §9): when it was made, how many clients it erases (with the digest
when it is one, the digest its log line names), how many keys it deleted, when the marking was
done, and, per shard whose scrub has completed it, what that scrub deleted there. While a
shard's scrub is still running for it, its progress and counts so far are read from the
shard's scrub (:mod:`genderd.erasure.scrub`). Records expire with the markers' lifetime after
they were made; a sorted set of ids by time lists the recent ones.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.events import text
from genderd.transport import Command, Transport

#: an erasure's id: 16 hex digits (64 random bits)
ID_PATTERN = re.compile(r"[0-9a-f]{16}")

#: what an erasure is doing: its keys and markers being written, its entries being scrubbed,
#: nothing left
MARKING, SCRUBBING, DONE = "marking", "scrubbing", "done"


def new_id() -> str:
    """A new erasure id (random: it says nothing about the clients)."""
    return secrets.token_hex(8)


def lifetime_ms(deployment: Deployment) -> int:
    """How long an erasure marker lives once its scrub is done, and how long a record lives:
    the retention plus a day (by then no entry written before the erasure can be left)."""
    return (deployment.settings.retention_days + 1) * MS_PER_DAY


def _shard_field(shard: int) -> str:
    return f"s{shard}"


@dataclass
class ShardScrub:
    """Where one shard's scrub is for one erasure."""

    shard: int
    done: bool
    entries: int = 0  # stream entries deleted for the erasure (so far)
    dead_letters: int = 0  # dead letters deleted for the erasure (so far)
    waits_for: int = 0  # the pass that completes the erasure here (0: done, or unknown)
    running: int = 0  # the pass running now, or the last one
    phase: str = ""  # where that pass is: events, aside, dead, tidy ("": between passes)
    read: int = 0  # entries that pass has read

    def as_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "pass": self.running,
            "waits_for_pass": self.waits_for,
            "phase": self.phase or "waiting",
            "read": self.read,
        }


@dataclass
class ErasureStatus:
    """An erasure's record and its scrub's progress."""

    id: str
    created_ms: int
    clients: int
    digest: str | None  # the client's digest when it erases one client
    keys: int
    marked: bool
    done_ms: int | None
    shards: list[ShardScrub] = field(default_factory=list)

    @property
    def state(self) -> str:
        if not self.marked:
            return MARKING
        return DONE if all(s.done for s in self.shards) else SCRUBBING

    @property
    def entries(self) -> int:
        return sum(s.entries for s in self.shards)

    @property
    def dead_letters(self) -> int:
        return sum(s.dead_letters for s in self.shards)

    @property
    def pending(self) -> list[ShardScrub]:
        return [s for s in self.shards if not s.done]

    def as_dict(self) -> dict[str, Any]:
        """The answer of ``GET /v1/erasures/{id}`` and of ``erase --status --json``."""
        return {
            "id": self.id,
            "state": self.state,
            "created_ms": self.created_ms,
            "done_ms": self.done_ms,
            "clients": self.clients,
            "digest": self.digest,
            "keys": self.keys,
            "entries": self.entries,
            "dead_letters": self.dead_letters,
            "shards": len(self.shards),
            "shards_scrubbed": len(self.shards) - len(self.pending),
            "scrubbing": [s.as_dict() for s in self.pending],
        }


def opening(deployment: Deployment, erasure_id: str, digests: Sequence[str]) -> list[Command]:
    """The commands that write the record of a new erasure of clients of ``digests``. Sent
    with its first markers: a scrubber that records a shard done before they arrive finds no
    record and makes one (see :func:`shard_done`), which these complete."""
    keys, now = deployment.keys, deployment.clock()
    fields: list[Any] = ["created_ms", now, "clients", len(digests)]
    if len(digests) == 1:
        fields += ["digest", digests[0]]
    lifetime = lifetime_ms(deployment)
    return [
        ("HSET", keys.erasure(erasure_id), *fields),
        ("PEXPIRE", keys.erasure(erasure_id), lifetime),
        ("ZADD", keys.erasure_ids, now, erasure_id),
        ("ZREMRANGEBYSCORE", keys.erasure_ids, "-inf", now - lifetime),
    ]


async def close_marking(
    transport: Transport, deployment: Deployment, erasure_id: str, deleted_keys: int
) -> None:
    """Record that every marker of the erasure is set and its clients' keys are deleted."""
    await transport.execute(
        "HSET",
        deployment.keys.erasure(erasure_id),
        "keys",
        deleted_keys,
        "marked_ms",
        deployment.clock(),
    )


async def shard_done(
    transport: Transport,
    deployment: Deployment,
    erasure_id: str,
    shard: int,
    counts: tuple[int, int],
) -> bool:
    """Record that ``shard``'s scrub completed the erasure, with what it deleted (``counts``:
    stream entries, dead letters); whether the erasure is now done in every shard. Written
    once: a scrubber that repeats this after a crash keeps the first counts."""
    key, lifetime = deployment.keys.erasure(erasure_id), lifetime_ms(deployment)
    entries, dead_letters = counts
    await transport.execute_many(
        [
            ("HSETNX", key, _shard_field(shard), f"{entries} {dead_letters}"),
            ("PEXPIRE", key, lifetime, "NX"),  # a record gone meanwhile gets its lifetime back
        ]
    )
    fields = [_shard_field(s) for s in deployment.shards]
    if None in await transport.execute("HMGET", key, *fields):
        return False
    return bool(await transport.execute("HSETNX", key, "done_ms", deployment.clock()))


async def status(
    transport: Transport, deployment: Deployment, erasure_id: str
) -> ErasureStatus | None:
    """The erasure's record and progress, or None for an id with no record (never made, or
    expired)."""
    if not ID_PATTERN.fullmatch(erasure_id):
        return None
    raw = await transport.execute("HGETALL", deployment.keys.erasure(erasure_id))
    record = _mapping(raw)
    if "created_ms" not in record:
        return None
    found = ErasureStatus(
        id=erasure_id,
        created_ms=int(record["created_ms"]),
        clients=int(record.get("clients", 0)),
        digest=record.get("digest"),
        keys=int(record.get("keys", 0)),
        marked="marked_ms" in record,
        done_ms=int(record["done_ms"]) if "done_ms" in record else None,
    )
    pending: list[int] = []
    for shard in deployment.shards:
        done = record.get(_shard_field(shard))
        if done is None:
            pending.append(shard)
            found.shards.append(ShardScrub(shard, done=False))
        else:
            entries, dead_letters = (int(n) for n in done.split())
            found.shards.append(ShardScrub(shard, True, entries, dead_letters))
    if pending:
        await _progress(transport, deployment, erasure_id, found, pending)
    return found


async def _progress(
    transport: Transport,
    deployment: Deployment,
    erasure_id: str,
    found: ErasureStatus,
    pending: list[int],
) -> None:
    """Fill in where the scrubs of the ``pending`` shards are for the erasure."""
    keys = deployment.keys
    calls: list[Any] = []
    for shard in pending:
        fields = ("pass", "phase", "read", f"{erasure_id}:entries", f"{erasure_id}:dead_letters")
        calls += [
            ("HMGET", keys.scrub(shard), *fields),
            ("ZSCORE", keys.scrub_erasures(shard), erasure_id),
        ]
    replies = await transport.execute_many(calls)
    for shard, state, waits_for in zip(pending, replies[::2], replies[1::2], strict=True):
        running, phase, read, entries, dead_letters = state
        scrub = found.shards[shard]
        scrub.running, scrub.phase, scrub.read = _int(running), text(phase or b""), _int(read)
        scrub.entries, scrub.dead_letters = _int(entries), _int(dead_letters)
        scrub.waits_for = _int(waits_for)


async def recent(transport: Transport, deployment: Deployment, count: int) -> list[ErasureStatus]:
    """The ``count`` newest erasures still recorded, newest first."""
    ids = await transport.execute("ZREVRANGE", deployment.keys.erasure_ids, 0, count - 1)
    found = [await status(transport, deployment, text(erasure_id)) for erasure_id in ids]
    return [erasure for erasure in found if erasure is not None]


def _int(value: Any) -> int:
    return 0 if value is None else int(float(text(value)))


def _mapping(reply: Any) -> dict[str, str]:
    """A hash reply (a dict, or a flat list of pairs) as text."""
    if isinstance(reply, dict):
        return {text(k): text(v) for k, v in reply.items()}
    return {text(k): text(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}

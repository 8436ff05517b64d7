"""Consumer-group plumbing over the shard streams: groups, reads, reclaims, trimming, stats.

Everything here works one shard (one hash tag) at a time, so it runs unchanged on Cluster.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from genderd.events import text
from genderd.keys import Keys
from genderd.transport.pool import AsyncClient

# An entry's field/value pairs in stream order, a name given twice kept twice (a dict would
# silently keep the last one; SPEC §2 dead-letters such an entry as duplicate_field).
Fields = Sequence[tuple[bytes, bytes]]
Entry = tuple[str, Fields]
LAG_COUNT_CAP = 100_000  # counting lag by XRANGE (when XINFO cannot tell) stops here
#: the consumer that holds entries re-driven to one model (``genderd dead redrive --model``)
#: until a worker of the model reclaims them: no process, so never counted as alive
REDRIVE_CONSUMER = "genderd-redrive"


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def format_id(parts: tuple[int, int]) -> str:
    return f"{parts[0]}-{parts[1]}"


async def ensure_group(client: AsyncClient, stream: str, group: str) -> bool:
    """Create ``group`` on ``stream`` at id 0 (replaying all retained history); True if new."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise
        return False
    return True


def _raw(response: Any, **options: Any) -> Any:
    return response


def keep_raw_entries(client: AsyncClient) -> None:
    """Have ``client`` return XREADGROUP and XAUTOCLAIM replies unparsed, so that the entries'
    fields stay pairs (redis-py would fold them into a dict, losing a name given twice)."""
    for command in ("XREADGROUP", "XAUTOCLAIM"):
        client.set_response_callback(command, _raw)


def _pairs(fields: Any) -> Fields:
    if isinstance(fields, dict):  # a client that parsed the reply after all
        return list(fields.items())
    return list(zip(fields[::2], fields[1::2], strict=True))


def _entries(raw: Sequence[Any]) -> list[Entry]:
    return [(text(entry_id), _pairs(fields)) for entry_id, fields in raw if fields is not None]


def _read_reply(reply: Any) -> list[Entry]:
    """Entries of an XREADGROUP reply (RESP2: [[stream, [[id, fields], ...]], ...]; RESP3: a
    map of stream to entries)."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (messages for _, messages in reply)
    return [entry for messages in streams for entry in _entries(messages)]


async def read_new(
    client: AsyncClient, stream: str, group: str, consumer: str, count: int, block_ms: int | None
) -> list[Entry]:
    """New entries for ``consumer`` (XREADGROUP ``>``); they become pending until acked."""
    reply = await client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
    return _read_reply(reply)


async def read_own_pending(
    client: AsyncClient, stream: str, group: str, consumer: str, count: int
) -> list[Entry]:
    """Entries already delivered to ``consumer`` and not acknowledged (XREADGROUP ``0``)."""
    reply = await client.xreadgroup(group, consumer, {stream: "0"}, count=count)
    return _read_reply(reply)


@dataclass(frozen=True)
class Claimed:
    """Entries taken over from idle consumers, with how often each has been delivered."""

    entries: list[Entry]
    deliveries: dict[str, int]
    next_start: str
    deleted: list[str]


async def reclaim(
    client: AsyncClient,
    stream: str,
    group: str,
    consumer: str,
    min_idle_ms: int,
    count: int,
    start: str = "0-0",
) -> Claimed:
    """XAUTOCLAIM entries idle for ``min_idle_ms``; look up their delivery counts."""
    reply: Any = await client.xautoclaim(stream, group, consumer, min_idle_ms, start, count=count)
    next_start = text(reply[0])
    entries = _entries(reply[1])
    deleted = [text(i) for i in reply[2]] if len(reply) > 2 else []
    deliveries: dict[str, int] = {}
    if entries:
        pending: Any = await client.xpending_range(
            stream, group, entries[0][0], entries[-1][0], len(entries) + 16, consumername=consumer
        )
        for row in pending:
            deliveries[text(row["message_id"])] = int(row["times_delivered"])
    return Claimed(entries, deliveries, next_start, deleted)


@dataclass(frozen=True)
class GroupInfo:
    """One consumer group on one shard stream."""

    shard: int
    group: str
    pending: int
    lag: int
    last_delivered: str
    consumers: int
    min_idle_ms: int | None  # the most recently active consumer's idle time


def field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


async def _lag(client: AsyncClient, stream: str, info: dict[Any, Any]) -> int:
    lag = field(info, "lag")
    last = text(field(info, "last-delivered-id"))
    if lag is not None:
        if int(lag) == 0:
            return 0
        # Valkey keeps counting entries deleted after the last delivered one (an erasure's
        # XDEL) as lag, with nothing left to deliver: look whether anything follows it.
        following: Any = await client.xrange(stream, min=f"({last}", max="+", count=1)
        return int(lag) if following else 0
    # XINFO cannot tell after deletions; count what follows the last delivered id.
    rows: Any = await client.xrange(stream, min=f"({last}", max="+", count=LAG_COUNT_CAP)
    return len(rows)


async def groups(client: AsyncClient, keys: Keys, shard: int) -> list[GroupInfo]:
    """Every consumer group of the shard's stream, with lag, pending and liveness."""
    stream = keys.stream(shard)
    try:
        infos = await client.xinfo_groups(stream)
    except ResponseError as error:
        if "no such key" in str(error).lower():
            return []
        raise
    result = []
    for info in infos:
        name = text(field(info, "name"))
        every = await client.xinfo_consumers(stream, name) if field(info, "consumers") else []
        consumers = [c for c in every if text(field(c, "name")) != REDRIVE_CONSUMER]
        idle = [int(field(c, "idle")) for c in consumers]
        result.append(
            GroupInfo(
                shard=shard,
                group=name,
                pending=int(field(info, "pending")),
                lag=await _lag(client, stream, info),
                last_delivered=text(field(info, "last-delivered-id")),
                consumers=len(consumers),
                min_idle_ms=min(idle) if idle else None,
            )
        )
    return result


async def live_consumers(
    client: AsyncClient, keys: Keys, shards: range, groups: Collection[str], idle_ms: int
) -> list[str]:
    """Consumers of any of ``groups`` on any of ``shards`` that talked to Redis within
    ``idle_ms`` (one XINFO GROUPS per shard, XINFO CONSUMERS per group found)."""
    live = set()
    for shard in shards:
        stream = keys.stream(shard)
        try:
            infos = await client.xinfo_groups(stream)
        except ResponseError as error:
            if "no such key" in str(error).lower():
                continue
            raise
        for name in {text(field(info, "name")) for info in infos} & set(groups):
            consumers: Any = await client.xinfo_consumers(stream, name)
            for consumer in consumers:
                who = text(field(consumer, "name"))
                if who != REDRIVE_CONSUMER and int(field(consumer, "idle")) <= idle_ms:
                    live.add(who)
    return sorted(live)


async def safe_trim_id(client: AsyncClient, keys: Keys, shard: int, cutoff_ms: int) -> str | None:
    """The MINID up to which the shard's stream may be trimmed, or None when nothing may go.

    Entries older than ``cutoff_ms`` go, except any that some group has not acknowledged:
    pending entries and entries after a group's last delivered id are always kept.
    """
    stream = keys.stream(shard)
    limit = (cutoff_ms, 0)
    infos = await groups(client, keys, shard)
    if not infos:
        return None
    for info in infos:
        ms, seq = parse_id(info.last_delivered)
        limit = min(limit, (ms, seq + 1))
        if info.pending:
            summary: Any = await client.xpending(stream, info.group)
            oldest = summary.get("min")
            if oldest:
                limit = min(limit, parse_id(text(oldest)))
    return format_id(limit) if limit > (0, 0) else None


async def trim(client: AsyncClient, keys: Keys, shard: int, cutoff_ms: int) -> int:
    """Trim the shard's stream to retention without losing unacknowledged entries."""
    minid = await safe_trim_id(client, keys, shard, cutoff_ms)
    if minid is None:
        return 0
    return int(await client.xtrim(keys.stream(shard), minid=minid, approximate=True))

"""Writing validated events to the shard streams, at most once per request with a key (SPEC §12).

Every genderd producer (``POST /v1/events``, :class:`genderd.producer.Producer`, ``genderd
produce``) writes a batch the same way: the events are grouped by shard and each shard's part
is one call of ``ingest.lua`` (``produce --file``: of ``ingest_lines.lua``, which remembers
lines rather than requests; see :mod:`genderd.imports`). A batch may carry an *idempotency
key* (the ``Idempotency-Key`` header; 1-255 printable ASCII characters). Then each part's
call also checks and sets the request's record on its shard (``<prefix>:{sN}:idem:<digest of
the key>``, holding the digest of the body, expiring after ``GENDERD_IDEMPOTENCY_TTL_S``) in
the same atomic step as its ``XADD``\\ s: a repeat of the request writes exactly the parts
no earlier attempt wrote, whatever stopped that attempt (a crash, a timeout, a failover), and
concurrent repeats write each part once. Every attempt sets each part's record (and the
claim) again, so they expire ``GENDERD_IDEMPOTENCY_TTL_S`` after the latest attempt.

A different body under a key already used is refused (422) before any of its parts is written:
the key has a *claim* holding the body first written under it. On a standalone server every
part's call checks and sets it (``<prefix>:idem:<digest>``) in its atomic step, so all parts go
in one round trip. On Cluster a script cannot reach a key of another slot, so the key's *home
shard* (from its digest) is written first, alone, and its record is the claim; the other
parts follow in one round trip. A record stores digests only: the key
itself is never stored. Without a key a batch is written as it comes; a repeat writes it
again (at-least-once, as for raw ``XADD`` producers: see docs/delivery.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from genderd.deployment import Deployment
from genderd.errors import InputError
from genderd.keys import digest
from genderd.lua import Script
from genderd.transport import SyncClient, Transport, translate
from genderd.transport.interface import ScriptCall
from genderd.transport.unavailable import is_no_script, wrong_type

INGEST = Script.from_files("ingest.lua")

MAX_KEY_LENGTH = 255  # SPEC §12; the IETF draft and payment APIs accept about as much
KEY_REUSED = -1  # ingest.lua: the key's record holds another body

#: an event to write: cid, gender (both validated), ts as given (None: absent), ts written
Event = tuple[str, str, int | None, int]


class IdempotencyKeyError(InputError, ValueError):
    """A bad idempotency key, or one used within its lifetime for another body."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # machine-readable: bad_idempotency_key, idempotency_key_reused


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an idempotency key, or None."""
    if not key:
        return "the Idempotency-Key is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"the Idempotency-Key is {len(key)} characters long; at most {MAX_KEY_LENGTH}"
    for position, char in enumerate(key):
        if not " " <= char <= "~":
            return (
                f"the Idempotency-Key has a character that is not printable ASCII "
                f"({char!r} at position {position})"
            )
    return None


def check_key(key: str) -> str:
    """``key``, or :class:`IdempotencyKeyError` saying why it cannot be one."""
    problem = key_problem(key)
    if problem:
        raise IdempotencyKeyError(problem, "bad_idempotency_key")
    return key


def body_digest(events: Sequence[Event]) -> str:
    """What identifies a batch's body: the events as given (a ``ts`` left out stays left out,
    so a repeat made later is the same body), in order; 128 bits of SHA-256."""
    text = "\n".join(f"{cid} {gender} {'' if ts is None else ts}" for cid, gender, ts, _ in events)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Batch:
    """The calls that write a batch: ``first`` alone (with a key: the home shard's part, the
    key's claim), then ``rest`` in one round trip. ``count``: the events of the batch."""

    first: ScriptCall | None
    rest: list[ScriptCall]
    count: int
    key: str | None


def plan(
    deployment: Deployment, events: Sequence[Event], key: str | None = None, ttl_s: int = 0
) -> Batch:
    """The calls that write ``events`` (validated), with the idempotency ``key`` (checked by
    :func:`check_key`) remembered for ``ttl_s`` seconds, or without a key."""
    parts: dict[int, list[str | int]] = {}
    for cid, gender, _, ts in events:
        parts.setdefault(deployment.shard_of(cid), []).extend((cid, gender, ts))
    keys = deployment.keys
    if key is None:
        calls = [ScriptCall(INGEST, [keys.stream(s)], ["", 0, *a]) for s, a in parts.items()]
        return Batch(None, calls, len(events), None)
    key_digest = digest(key)
    body = body_digest(events)
    ttl_ms = ttl_s * 1000

    def call(shard: int, args: list[str | int], *claim: str) -> ScriptCall:
        record = keys.idempotency_record(shard, key_digest)
        return ScriptCall(INGEST, [keys.stream(shard), record, *claim], [body, ttl_ms, *args])

    if not deployment.settings.cluster:  # every part checks the claim: one round trip
        claim = keys.idempotency_claim(key_digest)
        return Batch(None, [call(s, a, claim) for s, a in parts.items()], len(events), key)
    home = int(key_digest[:8], 16) % deployment.settings.shards
    first = call(home, parts.pop(home, []))
    return Batch(first, [call(s, a) for s, a in parts.items()], len(events), key)


def _written(batch: Batch, replies: Sequence[Any]) -> int:
    written = sum(max(0, int(reply)) for reply in replies)
    if any(int(reply) == KEY_REUSED for reply in replies):
        # Every attempt renews every record of its parts, so a part is written before another
        # part refuses the body only where its record was lost or outlived by the others
        # (by a failover, or by milliseconds on Cluster): say what was written then.
        outcome = (
            f"{written} of its {batch.count} events were written before that was found "
            "(their shard had no record of the key), the others not"
            if written
            else "nothing was written"
        )
        raise IdempotencyKeyError(
            "this Idempotency-Key was used for another request body within its lifetime "
            f"(GENDERD_IDEMPOTENCY_TTL_S); {outcome}",
            "idempotency_key_reused",
        )
    return written


async def write(transport: Transport, batch: Batch) -> int:
    """Write ``batch``; return how many events were written now (fewer than ``batch.count``
    when it repeats a keyed request that was written in part or whole).

    Raises:
        IdempotencyKeyError: the key was used for another body (nothing written).
        WrongTypeError: a key of a part holds another type (that part not written).
        RedisUnavailableError: Redis cannot serve the request now (parts may be written).
    """
    replies: list[Any] = []
    try:
        if batch.first is not None:
            first = batch.first
            replies.append(await transport.call(first.script, first.keys, first.args))
            _written(batch, replies)  # another body: refused before any other part
        if batch.rest:
            replies += await transport.execute_many(batch.rest)
    except ResponseError as error:
        raise wrong_type(error) or error from error
    return _written(batch, replies)


def write_sync(client: SyncClient, batch: Batch) -> int:
    """:func:`write` on a blocking redis-py client (the Python producer)."""
    replies: list[Any] = []
    if batch.first is not None:
        replies += _send_sync(client, [batch.first])
        _written(batch, replies)
    if batch.rest:
        replies += _send_sync(client, batch.rest)
    return _written(batch, replies)


def _send_sync(client: SyncClient, calls: Sequence[ScriptCall]) -> list[Any]:
    """Replies of ``calls`` (pipelined on a standalone server, each to its node on Cluster);
    a script the server lacks is loaded and its calls sent again; the first error raised
    after every reply is in, as the async transports do."""
    if isinstance(client, RedisCluster) or len(calls) == 1:
        replies = [_one_sync(client, call) for call in calls]
    else:
        pipe = client.pipeline(transaction=False)
        for call in calls:
            pipe.execute_command(*call.command())  # type: ignore[no-untyped-call]
        replies = list(pipe.execute(raise_on_error=False))
        missing = [i for i, r in enumerate(replies) if isinstance(r, Exception) and is_no_script(r)]
        for source in {calls[i].script.source for i in missing}:
            client.script_load(source)
        for i in missing:
            replies[i] = _one_sync(client, calls[i])
    for call, reply in zip(calls, replies, strict=True):
        if isinstance(reply, Exception):
            located = call.script.locate(reply)
            raise wrong_type(located) or translate(located) from reply
    return replies


def _one_sync(client: SyncClient, call: ScriptCall) -> Any:
    try:
        try:
            return client.execute_command(*call.command())  # type: ignore[no-untyped-call]
        except ResponseError as error:
            if not is_no_script(error):
                raise
            client.script_load(call.script.source)
            return client.execute_command(*call.command())  # type: ignore[no-untyped-call]
    except Exception as error:
        return error

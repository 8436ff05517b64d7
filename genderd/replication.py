"""Acknowledged means replicated, when asked: ``GENDERD_INGEST_REPLICAS`` (SPEC §12).

With ``GENDERD_INGEST_REPLICAS=N`` (N > 0) an ingest is acknowledged only once its writes
reached N replicas of every master it wrote to: :func:`confirm` sends ``WAIT N
GENDERD_INGEST_WAIT_MS`` to each of those masters (on Cluster, each node owning a written
shard; on one server, that server) and raises :class:`ReplicasShortError` (a
:class:`~genderd.transport.unavailable.RedisUnavailableError`: the API answers 503 with
``Retry-After``) when fewer replicas confirmed in time. The events are written then, on the
master: a client that retries with its ``Idempotency-Key`` writes nothing twice, and its retry
waits for the replicas again.

``WAIT`` counts the replicas that acknowledged the *calling connection's* last write. The
request's writes went out on pooled connections (one per node on Cluster, concurrently), so
``WAIT`` is sent right after a small write of its own on the same connection, in one round
trip: the shard's :meth:`~genderd.keys.Keys.replicated` marker. Replication is in order, so a
replica that has the marker has every write the master made before it, the request's among
them. ``WAIT`` alone on another connection would count replicas against that connection's
(older or absent) writes, and could answer at once with replicas that have none of the events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from genderd.keys import Keys
from genderd.settings import Settings
from genderd.transport import PoolTransport, RedisUnavailableError, translate


class ReplicasShortError(RedisUnavailableError):
    """The request's writes did not reach ``GENDERD_INGEST_REPLICAS`` replicas in time."""

    state = "short of replicas"

    def __init__(self, message: str, reached: int, replicas: int) -> None:
        super().__init__(message)
        # what the 503's detail says: "Redis is <state>; retry shortly"
        self.state = f"short of replicas: the events reached {reached} of {replicas}"


def _marker_and_wait(marker: str, replicas: int, wait_ms: int) -> list[tuple[Any, ...]]:
    return [("SET", marker, int(time.time() * 1000)), ("WAIT", replicas, wait_ms)]


def _check(where: str, replies: list[Any], replicas: int, wait_ms: int) -> None:
    for reply in replies:
        if isinstance(reply, BaseException):
            translated = translate(reply)
            if isinstance(translated, RedisUnavailableError):
                raise translated from reply
            raise RedisUnavailableError(
                f"cannot confirm the writes reached replicas on {where}: {reply}"
            ) from reply
    reached = int(replies[-1])
    if reached < replicas:
        raise ReplicasShortError(
            f"the events were written on {where} but reached {reached} of the {replicas} "
            f"replica(s) GENDERD_INGEST_REPLICAS asks for within {wait_ms} ms "
            "(GENDERD_INGEST_WAIT_MS); retry with the same Idempotency-Key",
            reached,
            replicas,
        )


async def _confirm_standalone(
    transport: PoolTransport, marker: str, replicas: int, wait_ms: int
) -> None:
    pipe = transport.client.pipeline(transaction=False)
    for command in _marker_and_wait(marker, replicas, wait_ms):
        pipe.execute_command(*command)
    try:
        replies = list(await pipe.execute(raise_on_error=False))
    except Exception as error:
        replies = [error]
    _check("the server", replies, replicas, wait_ms)


async def _confirm_node(node: ClusterNode, marker: str, replicas: int, wait_ms: int) -> None:
    # One connection of the node for both commands (not the cluster pipeline: it may resend
    # a command alone, on another connection, which would make WAIT meaningless).
    commands = [
        PipelineCommand(n, *command)
        for n, command in enumerate(_marker_and_wait(marker, replicas, wait_ms))
    ]
    try:
        await node.execute_pipeline(commands)
        replies = [command.result for command in commands]
    except Exception as error:
        replies = [error]
    _check(f"master {node.name}", replies, replicas, wait_ms)


async def confirm(
    transport: PoolTransport, keys: Keys, shards: Iterable[int], settings: Settings
) -> None:
    """Return once the writes made so far to ``shards`` reached ``settings.ingest_replicas``
    replicas of each master holding them (at once when it is 0 or no shard was written).

    Raises:
        ReplicasShortError: fewer replicas confirmed within ``settings.ingest_wait_ms``.
        RedisUnavailableError: a master could not be asked (down, failing over).
    """
    replicas, wait_ms = settings.ingest_replicas, settings.ingest_wait_ms
    markers = [keys.replicated(shard) for shard in sorted(set(shards))]
    if replicas <= 0 or not markers:
        return
    client = transport.client
    if not isinstance(client, AsyncRedisCluster):
        await _confirm_standalone(transport, markers[0], replicas, wait_ms)
        return
    by_node: dict[str, tuple[ClusterNode, str]] = {}
    try:
        for marker in markers:
            node = client.get_node_from_key(marker)
            if node is None:
                raise RedisUnavailableError(f"no master holds {marker}")
            by_node.setdefault(node.name, (node, marker))
    except Exception as error:
        raise RedisUnavailableError(f"cannot find the masters written: {error}") from error
    await asyncio.gather(
        *(_confirm_node(node, marker, replicas, wait_ms) for node, marker in by_node.values())
    )

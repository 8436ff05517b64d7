"""The transport over redis-py's connection pool: standalone servers and Redis Cluster.

Used where the pipelined connection does not fit: on Cluster (commands go to the slot's
node), for blocking stream reads (they would hold up a shared connection), and for the typed
stream and admin commands of :mod:`genderd.streams`, :mod:`genderd.status` and
:mod:`genderd.replay`, which use :attr:`PoolTransport.client` (redis-py parses those replies).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from genderd.lua import Script
from genderd.transport.interface import Command, Transport

AsyncClient = aioredis.Redis | AsyncRedisCluster


class PoolTransport(Transport):
    """Commands through a redis-py asyncio client (its pool, or its cluster nodes)."""

    kind = "pool"

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.cluster = isinstance(client, AsyncRedisCluster)

    def __repr__(self) -> str:
        return f"<PoolTransport cluster={self.cluster}>"

    async def _send(self, command: Command) -> Any:
        return await self.client.execute_command(*command)

    async def _send_many(self, commands: Sequence[Command]) -> list[Any]:
        if self.cluster:  # each command to its node; cluster pipelines refuse scripts
            return list(
                await asyncio.gather(
                    *(self.client.execute_command(*c) for c in commands), return_exceptions=True
                )
            )
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))

    async def _script_load(self, script: Script) -> None:
        await self.client.script_load(script.source)  # redis-py sends it to every primary

    async def close(self) -> None:
        await self.client.aclose()

"""Reading clients' answers: one round trip, right at read time.

Every model's answer lives in the client's result hash. A lookup is one command on the
client's shard: ``HGETALL`` of the result hash, or, when a model whose answer changes without
events (``top7d``) is asked for, that model's refresh script, which returns the same hash after
recomputing and writing back the model's answer if its window has moved since it was stored.
A batch lookup sends one such command per client in a single pipeline (one round trip on a
single server; on Cluster the commands go to their nodes concurrently).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from genderd.events import cid_problem
from genderd.keys import Keys, shard_of
from genderd.models.base import Answer, Model
from genderd.models.registry import Registry
from genderd.multiplex import MultiplexedConnection
from genderd.processor import Clock, wall_clock_ms
from genderd.settings import Settings
from genderd.streams import AsyncClient

Fields = dict[str, str]


class BadClientIdError(ValueError):
    """A client id that no event could have (SPEC §2)."""


def _hash(reply: Any) -> Fields:
    """A result hash from HGETALL (a dict) or from a script (a flat list)."""
    if isinstance(reply, dict):
        return {k.decode(): v.decode() for k, v in reply.items()}
    return {reply[i].decode(): reply[i + 1].decode() for i in range(0, len(reply or ()), 2)}


class Reader:
    """Reads answers for a deployment."""

    def __init__(
        self,
        client: AsyncClient,
        registry: Registry,
        settings: Settings,
        clock: Clock = wall_clock_ms,
        multiplexed: MultiplexedConnection | None = None,
    ) -> None:
        self.client = client
        self.multiplexed = multiplexed
        self.registry = registry
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.clock = clock
        self._cluster = isinstance(client, AsyncRedisCluster)
        self._refresh: dict[str, AsyncScript] = {}
        for model in registry:
            refresh = model.refresh_source()
            if refresh is not None:
                self._refresh[model.name] = client.register_script(refresh)

    async def _send_all(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Replies of ``commands``, sent in one round trip (on Cluster: concurrently)."""
        if self.multiplexed is not None:
            if len(commands) == 1:
                return [await self.multiplexed.execute(*commands[0])]
            return await self.multiplexed.execute_many(commands)
        if self._cluster:  # each command to its node; cluster pipelines refuse scripts
            return list(await asyncio.gather(*(self.client.execute_command(*c) for c in commands)))
        if len(commands) == 1:
            return [await self.client.execute_command(*commands[0])]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())

    async def load_scripts(self) -> None:
        """Make sure the server has the refresh scripts (after a restart or SCRIPT FLUSH)."""
        for script in self._refresh.values():
            if not all(await self.client.script_exists(script.sha)):
                await self.client.script_load(script.script)

    def _commands(self, cid: str, models: Sequence[Model], now: int) -> list[tuple[Any, ...]]:
        """What reads ``cid``: HGETALL of its result hash or, when a model whose answer can
        expire is asked for, that model's refresh script, which returns the same hash after
        recomputing the expired answer (one script per such model; the last reply is the
        freshest)."""
        shard = shard_of(cid, self.settings.shards)
        commands: list[tuple[Any, ...]] = []
        for model in models:
            script = self._refresh.get(model.name)
            if script is not None:
                keys = model.refresh_keys(shard, cid, now)
                commands.append(("EVALSHA", script.sha, len(keys), *keys, model.name, now))
        return commands or [("HGETALL", self.keys.result(shard, cid))]

    def _validate(self, cids: Sequence[str]) -> None:
        for cid in cids:
            problem = cid_problem(cid)
            if problem:
                raise BadClientIdError(problem)

    async def fields_many(
        self, cids: Sequence[str], models: Sequence[Model], *, validated: bool = False
    ) -> list[Fields]:
        """The result hashes of ``cids``, right at read time for ``models``, in one round
        trip (on Cluster: one concurrent command per client). ``validated``: the caller has
        checked the cids already."""
        if not validated:
            self._validate(cids)
        now = self.clock()
        per_cid = [self._commands(cid, models, now) for cid in cids]
        commands = [command for group in per_cid for command in group]
        try:
            replies = await self._send_all(commands)
        except NoScriptError:  # the server lost its script cache (restart, SCRIPT FLUSH)
            await self.load_scripts()
            replies = await self._send_all(commands)
        hashes, at = [], 0
        for group in per_cid:
            at += len(group)
            hashes.append(_hash(replies[at - 1]))
        return hashes

    async def lookup_many(
        self, cids: Sequence[str], models: Iterable[Model] | None = None
    ) -> list[dict[str, Answer | None]]:
        """Every requested model's answer for each client, in one round trip."""
        chosen = list(self.registry if models is None else models)
        hashes = await self.fields_many(cids, chosen)
        return [{model.name: model.answer(fields) for model in chosen} for fields in hashes]

    async def lookup(
        self, cid: str, models: Iterable[Model] | None = None
    ) -> dict[str, Answer | None]:
        """Every requested model's answer for one client (all models by default)."""
        return (await self.lookup_many([cid], models))[0]

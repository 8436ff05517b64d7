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
    ) -> None:
        self.client = client
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

    def _calls(self, cid: str, models: Sequence[Model], now: int) -> list[tuple[Any, ...]]:
        """The commands that read ``cid``: an HGETALL, or one refresh script per model that
        has one (each returns the whole hash; the last one's reply is the freshest)."""
        shard = shard_of(cid, self.settings.shards)
        refreshed = [m for m in models if m.name in self._refresh]
        if not refreshed:
            return [("HGETALL", self.keys.result(shard, cid))]
        calls = []
        for model in refreshed:
            keys = model.refresh_keys(shard, cid, now)
            calls.append(
                ("EVALSHA", self._refresh[model.name].sha, len(keys), *keys, model.name, now)
            )
        return calls

    async def _one(self, calls: list[tuple[Any, ...]]) -> Fields:
        reply: Any = None
        for call in calls:
            if call[0] == "HGETALL":
                reply = await self.client.hgetall(call[1])
            else:
                script = next(s for s in self._refresh.values() if s.sha == call[1])
                reply = await script(keys=call[3 : 3 + call[2]], args=call[3 + call[2] :])
        return _hash(reply)

    async def _pipelined(self, calls: list[list[tuple[Any, ...]]]) -> list[Fields]:
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for per_cid in calls:
                for call in per_cid:
                    pipe.execute_command(*call)
            try:
                replies = await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                for script in self._refresh.values():  # the server lost its script cache
                    await self.client.script_load(script.script)
                continue
            fields, at = [], 0
            for per_cid in calls:
                at += len(per_cid)
                fields.append(_hash(replies[at - 1]))
            return fields
        raise AssertionError("unreachable")  # pragma: no cover

    async def load_scripts(self) -> None:
        """Make sure the server has the refresh scripts (after a restart or SCRIPT FLUSH)."""
        for script in self._refresh.values():
            if not all(await self.client.script_exists(script.sha)):
                await self.client.script_load(script.script)

    def _validate(self, cids: Sequence[str]) -> None:
        for cid in cids:
            problem = cid_problem(cid)
            if problem:
                raise BadClientIdError(problem)

    async def fields_many(self, cids: Sequence[str], models: Sequence[Model]) -> list[Fields]:
        """The result hashes of ``cids``, up to date for ``models``, in one round trip."""
        self._validate(cids)
        now = self.clock()
        calls = [self._calls(cid, models, now) for cid in cids]
        if len(cids) == 1:
            return [await self._one(calls[0])]
        if self._cluster:  # Cluster pipelines refuse scripts: concurrent single calls instead
            return list(await asyncio.gather(*(self._one(c) for c in calls)))
        return await self._pipelined(calls)

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

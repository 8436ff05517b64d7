"""Reading clients' answers: one round trip, right at read time.

A lookup is one pipeline on the client's shard: ``HGETALL`` of the result hash, plus, for each
model whose answer can change without events (``top7d``), its refresh script, which returns
the stored answer while it is valid and recomputes and writes it back once the window moved.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.commands.core import AsyncScript

from genderd.events import cid_problem
from genderd.keys import Keys, result_field, shard_of
from genderd.models.base import Answer, Model
from genderd.models.registry import Registry
from genderd.processor import Clock, wall_clock_ms
from genderd.settings import Settings
from genderd.streams import AsyncClient

REFRESH_PARTS = ("", "s", "ts", "at")


class BadClientIdError(ValueError):
    """A client id that no event could have (SPEC §2)."""


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
        self._refresh: dict[str, AsyncScript] = {}
        for model in registry:
            refresh = model.refresh_source()
            if refresh is not None:
                self._refresh[model.name] = client.register_script(refresh)

    async def _queue(self, pipe: Any, cid: str, models: Sequence[Model], now: int) -> None:
        shard = shard_of(cid, self.settings.shards)
        pipe.hgetall(self.keys.result(shard, cid))
        for model in models:
            script = self._refresh.get(model.name)
            if script is not None:
                await script(
                    keys=model.refresh_keys(shard, cid, now), args=[model.name, now], client=pipe
                )

    @staticmethod
    def _fields(replies: list[Any], refreshed: Sequence[Model]) -> dict[str, str]:
        raw = replies[0] or {}
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        for model, reply in zip(refreshed, replies[1:], strict=True):
            for part in REFRESH_PARTS:
                fields.pop(result_field(model.name, part), None)
            if reply:
                for part, value in zip(REFRESH_PARTS, reply, strict=True):
                    if value is not None:
                        fields[result_field(model.name, part)] = value.decode()
        return fields

    async def lookup_many(
        self, cids: Sequence[str], models: Iterable[Model] | None = None
    ) -> list[dict[str, Answer | None]]:
        """Every requested model's answer for each client, in one round trip."""
        chosen = list(self.registry if models is None else models)
        for cid in cids:
            problem = cid_problem(cid)
            if problem:
                raise BadClientIdError(problem)
        refreshed = [m for m in chosen if m.name in self._refresh]
        per_cid = 1 + len(refreshed)
        now = self.clock()
        pipe = self.client.pipeline(transaction=False)
        for cid in cids:
            await self._queue(pipe, cid, refreshed, now)
        replies = await pipe.execute()
        answers = []
        for i in range(len(cids)):
            fields = self._fields(replies[i * per_cid : (i + 1) * per_cid], refreshed)
            answers.append({model.name: model.answer(fields) for model in chosen})
        return answers

    async def lookup(
        self, cid: str, models: Iterable[Model] | None = None
    ) -> dict[str, Answer | None]:
        """Every requested model's answer for one client (all models by default)."""
        return (await self.lookup_many([cid], models))[0]

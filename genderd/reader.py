"""Reading clients' answers: one round trip, right at read time.

Every model's answer lives in the client's result hash. A lookup is one command on the
client's shard: ``HMGET`` of the requested models' answer fields, or, when a model whose answer
changes without events (``top7d``) is asked for, that model's refresh script, which returns the
same fields after recomputing and writing back the model's answer if its window has moved
since it was stored.
A batch lookup sends one such command per client in a single round trip (on Cluster the
commands go to their nodes concurrently).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from genderd.deployment import Deployment
from genderd.errors import InputError
from genderd.events import cid_problem
from genderd.models.base import Answer, Model, ResultHash
from genderd.transport import Command, RedisReadOnlyError, ScriptCall, Transport

log = logging.getLogger(__name__)


class BadClientIdError(InputError, ValueError):
    """A client id that no event could have (SPEC §2)."""


class Reader:
    """Reads answers of a deployment over one transport."""

    def __init__(self, deployment: Deployment, transport: Transport) -> None:
        self.deployment = deployment
        self.transport = transport
        self.keys = deployment.keys
        self.clock = deployment.clock
        # Answers recomputed at read time are written back, until the server refuses writes
        # (a read replica): from then on they are computed only (see top7d_read.lua).
        self.write_back = True
        self._fields: dict[tuple[str, ...], list[bytes]] = {}  # models -> their answer fields

    async def load_scripts(self) -> None:
        """Make sure the server has the refresh scripts (readiness checks call this)."""
        await self.transport.load(
            model.refresh_script
            for model in self.deployment.registry
            if model.refresh_script is not None
        )

    def _calls(
        self, cid: str, models: Sequence[Model], fields: Sequence[bytes], now: int
    ) -> list[Command | ScriptCall]:
        """What reads ``cid``'s ``fields``: HMGET of its result hash or, when a model whose
        answer can expire is asked for, that model's refresh script, which returns the same
        fields after recomputing the expired answer (one script per such model)."""
        shard = self.deployment.shard_of(cid)
        calls: list[Command | ScriptCall] = []
        for model in models:
            if model.refresh_script is not None:
                keys = model.refresh_keys(shard, cid, now)
                args = (
                    model.name,
                    now,
                    "1" if self.write_back else "0",
                    *model.refresh_params,
                    *fields,
                    *model.refresh_tail,
                )
                calls.append(ScriptCall(model.refresh_script, keys, args))
        return calls or [("HMGET", self.keys.result(shard, cid), *fields)]

    def _answer_fields(self, models: Sequence[Model]) -> list[bytes]:
        key = tuple(model.name for model in models)
        fields = self._fields.get(key)
        if fields is None:  # once per combination of models asked for
            fields = [name for model in models for name in model.answer_fields]
            self._fields[key] = fields
        return fields

    @staticmethod
    def _merged(
        calls: Sequence[Command | ScriptCall],
        replies: Sequence[list[bytes | None]],
        models: Sequence[Model],
        fields: Sequence[bytes],
    ) -> ResultHash:
        """One client's fields from its calls' replies: the last reply, except that each
        refresh script's own model is taken from its own reply (on a replica each script
        recomputes its model only)."""
        values = list(replies[-1])
        if len(calls) > 1:
            at, refreshing = 0, [m for m in models if m.refresh_script is not None]
            for model, reply in zip(refreshing, replies, strict=True):
                while fields[at] != model.answer_fields[0]:
                    at += 1
                values[at : at + len(model.answer_fields)] = reply[
                    at : at + len(model.answer_fields)
                ]
        return {
            name: value for name, value in zip(fields, values, strict=True) if value is not None
        }

    async def fields_many(
        self, cids: Sequence[str], models: Sequence[Model], *, validated: bool = False
    ) -> list[ResultHash]:
        """The result hashes of ``cids``, right at read time for ``models``, in one round
        trip. ``validated``: the caller has checked the cids already."""
        if not validated:
            for cid in cids:
                problem = cid_problem(cid)
                if problem:
                    raise BadClientIdError(problem)
        now = self.clock()
        fields = self._answer_fields(models)
        per_cid = [self._calls(cid, models, fields, now) for cid in cids]
        try:
            replies = await self.transport.execute_many([c for calls in per_cid for c in calls])
        except RedisReadOnlyError:
            if not self.write_back:
                raise
            log.warning(
                "Redis is a read-only replica: answers recomputed at read time are "
                "served without being written back"
            )
            self.write_back = False
            per_cid = [self._calls(cid, models, fields, now) for cid in cids]
            replies = await self.transport.execute_many([c for calls in per_cid for c in calls])
        hashes, at = [], 0
        for calls in per_cid:
            hashes.append(self._merged(calls, replies[at : at + len(calls)], models, fields))
            at += len(calls)
        return hashes

    async def lookup_many(
        self, cids: Sequence[str], models: Iterable[Model] | None = None
    ) -> list[dict[str, Answer | None]]:
        """Every requested model's answer for each client, in one round trip."""
        chosen = list(self.deployment.registry if models is None else models)
        hashes = await self.fields_many(cids, chosen)
        return [{model.name: model.answer(fields) for model in chosen} for fields in hashes]

    async def lookup(
        self, cid: str, models: Iterable[Model] | None = None
    ) -> dict[str, Answer | None]:
        """Every requested model's answer for one client (all models by default)."""
        return (await self.lookup_many([cid], models))[0]

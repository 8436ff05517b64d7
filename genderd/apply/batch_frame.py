"""Applying a batch with the model's Lua apply script on the shared batch frame
(``_frame.lua``): one script call per batch, every client's keys and entries in it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from genderd.apply import ModelErrors, Outcome, expiry_arg
from genderd.events import Event, by_client, text
from genderd.keys import digest
from genderd.streams import parse_id

if TYPE_CHECKING:
    from genderd.deployment import Deployment
    from genderd.models.base import Model
    from genderd.transport import Transport

log = logging.getLogger(__name__)


class LuaApplier:
    """Applies batches of one Lua-backed model (see :class:`genderd.apply.Applier`)."""

    def __init__(self, deployment: Deployment, transport: Transport, model: Model) -> None:
        self.transport = transport
        self.model = model
        self.keys = deployment.keys
        self.client_ttl_days = deployment.settings.client_ttl_days
        # per shard: the erasure sentinel's value as last read ("": none; see _call)
        self._sentinels: dict[int, str] = {}

    async def apply(
        self, shard: int, events: Sequence[Event], now: int
    ) -> tuple[Outcome, ModelErrors]:
        """One call for ``events``; when the script fails (one entry spoiled the batch), one
        call per event so that the others go through: the failing entry stays pending and is
        dead-lettered after max_deliveries attempts."""
        try:
            return await self._call(shard, events, now), []
        except ResponseError:
            if len(events) == 1:
                log.exception("%s: applying entry %s failed", self.model.name, events[0].id)
                return Outcome(failed=1), []
        outcome = Outcome()
        for event in events:
            outcome += (await self.apply(shard, [event], now))[0]
        return outcome, []

    async def _call(self, shard: int, events: Sequence[Event], now: int) -> Outcome:
        """One call of the model's apply script for ``events``, grouped per client (the
        batch frame's contract in ``_frame.lua``): each client's keys once, then its entries.
        A client with an entry written before the shard's latest erasure also gets its
        erasure marker; when the shard's erasure sentinel has moved since it was last read,
        the frame does nothing and says so, and the call is made again."""
        per_client = by_client(events)
        while True:
            known = self._sentinels.get(shard, "")
            reply = await self._frame_call(shard, per_client, now, known)
            if reply[0] != -1:
                break
            self._sentinels[shard] = text(reply[1])
        applied, erased_n, *skipped = reply
        for entry_id in skipped:
            log.error(
                "%s: entry %s left pending: a key of its client holds a non-hash value",
                self.model.name,
                text(entry_id),
            )
        if skipped:
            left = {text(i) for i in skipped}
            done = [e for e in events if e.id not in left]
        else:
            done = list(events)
        return Outcome(applied=int(applied), failed=len(skipped), erased=int(erased_n), done=done)

    async def _frame_call(
        self, shard: int, per_client: dict[str, list[Event]], now: int, known: str
    ) -> Any:
        model = self.model
        keys = [self.keys.stream(shard), self.keys.stats(shard), self.keys.erasures(shard)]
        args: list[str] = [
            model.name,
            str(now),
            expiry_arg(now, self.client_ttl_days),
            known,
            *model.params(),
        ]
        before = parse_id(known) if known else None
        for cid, own in per_client.items():
            if before is not None and any(parse_id(e.id) <= before for e in own):
                keys.append(self.keys.erased(shard, digest(cid)))
                args.append(str(-len(own)))
            else:
                args.append(str(len(own)))
            keys += model.client_keys(shard, cid, own, now)
            for event in own:
                args += (event.id, event.gender, str(event.ts))
        return await self.transport.call(model.apply_script, keys, args)


__all__ = ["LuaApplier"]

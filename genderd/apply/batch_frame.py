"""Applying a batch with the model's Lua apply script on the shared batch frame
(``_frame.lua``): one script call per batch, every client's keys and entries in it, and the
batch's grades (SPEC §14) in the same call. A client the model cannot grade from what it read
(``top7d`` whose stored counters are of another day) is deferred by the frame and applied by a
second call with the keys the model asks for (:meth:`~genderd.models.base.Model.grading_keys`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from genderd.apply import ModelErrors, Outcome, expiry_arg
from genderd.events import Event, by_client, text
from genderd.grading.plan import NO_BLOCK, Block, Grading
from genderd.keys import digest
from genderd.streams import parse_id

if TYPE_CHECKING:
    from genderd.deployment import Deployment
    from genderd.models.base import Model
    from genderd.transport import Transport

#: the frame's reply before its variable parts: applied, erased, graded, predicted, correct, D
_REPLY_HEAD = 6

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
        self,
        shard: int,
        events: Sequence[Event],
        now: int,
        grading: Grading | None = None,
        reclaimed: bool = False,
    ) -> tuple[Outcome, ModelErrors]:
        """One call for ``events``; when the script fails (one entry spoiled the batch), one
        call per event so that the others go through: the failing entry stays pending and is
        dead-lettered after max_deliveries attempts."""
        if not self.model.grades:
            grading = None
        try:
            return await self._call(shard, events, now, grading, reclaimed), []
        except ResponseError:
            if len(events) == 1:
                log.exception("%s: applying entry %s failed", self.model.name, events[0].id)
                return Outcome(failed=1), []
        outcome = Outcome()
        for event in events:
            outcome += (await self.apply(shard, [event], now, grading, reclaimed))[0]
        return outcome, []

    async def _call(
        self,
        shard: int,
        events: Sequence[Event],
        now: int,
        grading: Grading | None,
        reclaimed: bool,
    ) -> Outcome:
        """The model's apply script for ``events``, grouped per client: one call, and one
        more for the clients the frame deferred (their grading needs the model's extra keys)."""
        per_client = by_client(events)
        block = (
            NO_BLOCK
            if grading is None
            else grading.call(shard, self.model.name, per_client, now, reclaimed)
        )
        outcome, deferred = await self._frame(shard, per_client, now, grading, block, False)
        if deferred:
            again = {cid: per_client[cid] for cid in deferred}
            more, left = await self._frame(shard, again, now, grading, block, True)
            if left:  # the model asked for keys and then did not take them
                raise RuntimeError(f"{self.model.name}: grading_keys do not satisfy its script")
            outcome += more
        return outcome

    async def _frame(
        self,
        shard: int,
        per_client: dict[str, list[Event]],
        now: int,
        grading: Grading | None,
        block: Block,
        extra: bool,
    ) -> tuple[Outcome, list[str]]:
        """One call of the batch frame (its contract is in ``_frame.lua``): each client's keys
        once, then its entries (with ``extra``: and the keys the model needs to grade). A client
        with an entry written before the shard's latest erasure also gets its erasure marker;
        when the shard's erasure sentinel has moved since it was last read, the frame does
        nothing and says so, and the call is made again. Returns the outcome and the clients
        the frame deferred."""
        while True:
            known = self._sentinels.get(shard, "")
            reply = await self._frame_call(shard, per_client, now, known, grading, block, extra)
            if reply[0] != -1:
                break
            self._sentinels[shard] = text(reply[1])
        applied, erased_n, graded, predicted, correct, count = (int(v) for v in reply[:_REPLY_HEAD])
        cids = list(per_client)
        deferred = [cids[int(c) - 1] for c in reply[_REPLY_HEAD : _REPLY_HEAD + count]]
        skipped = reply[_REPLY_HEAD + count :]
        for entry_id in skipped:
            log.error(
                "%s: entry %s left pending: a key of its client holds a non-hash value",
                self.model.name,
                text(entry_id),
            )
        left = {text(i) for i in skipped}
        later = set(deferred)
        done = [
            e
            for cid, own in per_client.items()
            if cid not in later
            for e in own
            if e.id not in left
        ]
        outcome = Outcome(
            applied=applied,
            failed=len(skipped),
            erased=erased_n,
            graded=graded,
            predicted=predicted,
            correct=correct,
            done=done,
        )
        return outcome, deferred

    async def _frame_call(
        self,
        shard: int,
        per_client: dict[str, list[Event]],
        now: int,
        known: str,
        grading: Grading | None,
        block: Block,
        extra: bool,
    ) -> Any:
        model = self.model
        keys = [self.keys.stream(shard), self.keys.stats(shard), self.keys.erasures(shard)]
        keys += block.keys
        args: list[str] = [
            model.name,
            str(now),
            expiry_arg(now, self.client_ttl_days),
            known,
            *model.params(),
        ]
        before = parse_id(known) if known else None
        for cid, own in per_client.items():
            more = model.grading_keys(shard, cid, own, grading) if extra and grading else []
            marked = before is not None and any(parse_id(e.id) <= before for e in own)
            if marked:
                keys.append(self.keys.erased(shard, digest(cid)))
            if block.grades:  # its grading holds its count
                args.append(block.client(cid, len(own), len(more), marked=marked))
            else:
                args.append(str(-len(own) if marked else len(own)))
            keys += model.client_keys(shard, cid, own, now)
            keys += more
            for event in own:
                args += (event.id, event.gender, str(event.ts))
        args += block.args
        return await self.transport.call(model.apply_script, keys, args)


__all__ = ["LuaApplier"]

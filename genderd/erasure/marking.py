"""The first step of an erasure, done before ``DELETE`` or ``genderd erase`` answers: mark the
clients in every shard, delete their keys, and hand them to the shards' scrubs (``erase.lua``,
atomically per shard). Its cost does not depend on the history retained: a few script calls
per shard, whatever the streams hold (see :mod:`genderd.erasure`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from genderd import catalog
from genderd.deployment import Deployment
from genderd.erasure import records
from genderd.keys import digest, scrub_digest
from genderd.lua import Script
from genderd.transport import Command, ScriptCall, Transport

log = logging.getLogger(__name__)

ERASE = Script.from_files("erase.lua")
MARK_CLIENTS = 100  # clients marked per erase.lua call
MARK_CALLS = 16  # erase.lua calls sent in one round trip

#: progress(done, total): clients marked in their own shard so far, of all
Progress = Callable[[int, int], None]


@dataclass(eq=False)  # one per client: hashed by identity
class Erased:
    """One client of an erasure: its digest (what logs and records name) and the keys of
    its data deleted."""

    cid: str
    digest: str
    keys: int = 0


@dataclass
class Erasure:
    """An erasure just made: its id (for its status) and its clients, in the order given."""

    id: str
    clients: list[Erased] = field(default_factory=list)

    @property
    def keys(self) -> int:
        return sum(erased.keys for erased in self.clients)


async def erase(
    transport: Transport,
    deployment: Deployment,
    cids: Iterable[str],
    progress: Progress | None = None,
) -> Erasure:
    """Erase ``cids`` (one :class:`Erased` per distinct id): every model's keys of them are
    gone and their markers set when this returns; their stream entries and dead letters are
    scrubbed in the background (:mod:`genderd.erasure.scrub`). Refused
    (:class:`catalog.ErasureRefused`) before anything is written when a model's keys cannot be
    named here. Erasing a client genderd does not know deletes no key."""
    # the keys of the deployment's other models too: recorded, or loaded but left out
    others = catalog.erasure_keys(deployment, await catalog.read(transport, deployment))
    erasure = Erasure(records.new_id())
    done = {cid: Erased(cid, digest(cid)) for cid in cids}
    erasure.clients = list(done.values())
    # the record goes with the first markers (one round trip less before the answer)
    first: list[Command] = records.opening(
        deployment, erasure.id, [e.digest for e in done.values()]
    )
    home = {erased: deployment.shard_of(erased.cid) for erased in erasure.clients}
    marked = 0
    # every other shard first, the client's own shard (its keys) last: see the package docs
    for own in (False, True):
        calls: list[tuple[ScriptCall, Sequence[Erased]]] = []
        for shard in deployment.shards:
            clients = [erased for erased in erasure.clients if (home[erased] == shard) == own]
            for start in range(0, len(clients), MARK_CLIENTS):
                chunk = clients[start : start + MARK_CLIENTS]
                calls.append((_mark(deployment, erasure.id, shard, chunk, others, own), chunk))
        for start in range(0, len(calls), MARK_CALLS):
            batch = calls[start : start + MARK_CALLS]
            replies = await transport.execute_many([*first, *(call for call, _ in batch)])
            replies, first = replies[len(first) :], []
            for (_, part), reply in zip(batch, replies, strict=True):
                for erased, deleted in zip(part, reply[3:], strict=True):
                    erased.keys += int(deleted)
                if own:
                    marked += len(part)
            if own and progress:
                progress(marked, len(erasure.clients))
    await records.close_marking(transport, deployment, erasure.id, erasure.keys)
    for erased in erasure.clients:
        log.info(
            "erasure %s: client %s: %d keys deleted, marked in every shard; its stream entries "
            "and dead letters are being scrubbed",
            erasure.id,
            erased.digest,
            erased.keys,
        )
    return erasure


def _mark(
    deployment: Deployment,
    erasure_id: str,
    shard: int,
    clients: Sequence[Erased],
    others: Sequence[catalog.ClientKeys],
    data: bool,
) -> ScriptCall:
    """The erase.lua call marking ``clients`` in ``shard`` and, with ``data`` (their own
    shard), deleting their keys, every model's (``others``: those of the models not served
    here)."""
    keys = deployment.keys
    now = deployment.clock()
    script_keys = [
        keys.stream(shard),
        keys.erasures(shard),
        keys.dead(shard),
        keys.scrub(shard),
        keys.scrub_clients(shard),
        keys.scrub_erasures(shard),
    ]
    args: list[str | int] = [erasure_id]
    for erased in clients:
        mine: dict[str, None] = {}  # ordered, each key once (models share the result hash)
        if data:
            for model in deployment.registry:
                mine.update(dict.fromkeys(model.client_data_keys(shard, erased.cid, now)))
            for client_keys in others:
                mine.update(dict.fromkeys(client_keys(shard, erased.cid, now)))
        script_keys += [keys.erased(shard, erased.digest), *mine]
        args += [len(mine), scrub_digest(erased.cid), erased.digest]
    return ScriptCall(ERASE, script_keys, args)

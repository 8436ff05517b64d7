"""Erasing clients on request (SPEC §9): every key of their data, their entries in the shard
streams and their dead letters, with nothing brought back afterwards.

An erasure is two steps per shard:

1. **Mark and delete**, atomically (``erase.lua``): each client gets an erasure marker holding
   the last id of its shard stream at that moment, and every key of its data is deleted
   (:meth:`Model.client_data_keys` of each model). From then on, every script that would
   apply or dead-letter one of the client's entries written before the erasure acknowledges
   it and changes nothing (the batch frame in ``_frame.lua``, ``python_commit.lua``,
   ``deadletter.lua``, ``redrive.lua``): batches in hand, reclaims, stale batches and replay
   alike. The marker is keyed by a digest of the id (:func:`genderd.keys.digest`) and expires
   after the retention plus a day, when no entry written before the erasure can be left in
   the stream.
2. **Scan** the shard stream up to the marker's id, and every dead-letter stream, in bounded
   steps (``erase_scan.lua``: at most :data:`SCAN_COUNT` entries per call, so the server never
   stalls), deleting the clients' entries. Clients of one shard are scanned for together, so
   a file of ids costs one pass per stream, not one per id.

Events that arrive after the erasure have ids after the marker's: they are applied as usual.
Each erased client is logged once, by digest, with its counts: the operator's proof.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from genderd import catalog
from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.events import text
from genderd.keys import digest
from genderd.lua import Script
from genderd.streams import parse_id
from genderd.transport import Transport

log = logging.getLogger(__name__)

ERASE = Script.from_files("erase.lua")
ERASE_SCAN = Script.from_files("erase_scan.lua")
SCAN_COUNT = 1_000  # entries read per scan call (about a millisecond of server time)
MARK_CLIENTS = 100  # clients marked per erase.lua call

#: progress(what, done, total): what is "mark" (done of total clients marked), or "stream <n>"
#: / "dead <n>" (done: entries of that stream read so far; total: 0, unknown)
Progress = Callable[[str, int, int], None]


@dataclass(eq=False)  # one per client: hashed by identity
class Erased:
    """What the erasure of one client removed."""

    cid: str
    digest: str
    keys: int = 0  # keys deleted (result hash, counters, day buckets)
    entries: int = 0  # entries deleted from its shard stream
    dead_letters: int = 0  # dead letters deleted

    def as_dict(self) -> dict[str, int]:
        return {"keys": self.keys, "entries": self.entries, "dead_letters": self.dead_letters}


def marker_lifetime_ms(deployment: Deployment) -> int:
    """How long an erasure marker lives: the retention plus a day (after it, no entry written
    before the erasure is left in the stream; see the module docstring)."""
    return (deployment.settings.retention_days + 1) * MS_PER_DAY


async def erase(
    transport: Transport,
    deployment: Deployment,
    cids: Iterable[str],
    progress: Progress | None = None,
) -> list[Erased]:
    """Erase ``cids`` (see the module docstring); one :class:`Erased` per distinct id, in
    the order given. Erasing a client genderd does not know removes nothing (zero counts)."""
    # the keys of the deployment's other models too: recorded, or loaded but left out
    others = catalog.erasure_keys(deployment, await catalog.read_names(transport, deployment))
    done = {cid: Erased(cid, digest(cid)) for cid in cids}
    by_shard: dict[int, list[Erased]] = defaultdict(list)
    for erased in done.values():
        by_shard[deployment.shard_of(erased.cid)].append(erased)
    cutoffs: dict[str, str] = {}
    marked = 0
    for shard, clients in sorted(by_shard.items()):
        for start in range(0, len(clients), MARK_CLIENTS):
            chunk = clients[start : start + MARK_CLIENTS]
            cutoffs.update(await _mark(transport, deployment, shard, chunk, others))
            marked += len(chunk)
            if progress:
                progress("mark", marked, len(done))
    keys = deployment.keys
    for shard, clients in sorted(by_shard.items()):
        pairs = [(erased, cutoffs[erased.cid]) for erased in clients]
        upto = max((cutoff for _, cutoff in pairs), key=parse_id)
        if upto == "0-0":
            continue  # the stream did not exist when the clients were marked
        stream = [keys.stream(shard)]
        counts = await _scan(transport, stream, upto, "", pairs, progress, shard)
        for erased, n in counts.items():
            erased.entries += n
    # dead letters: of every shard (an entry of the wrong shard is dead-lettered there),
    # compared by their original id
    every = [(erased, cutoffs[erased.cid]) for erased in done.values()]
    for shard in deployment.shards:
        dead = [keys.dead(shard), keys.stats(shard)]
        counts = await _scan(transport, dead, "+", "_id", every, progress, shard)
        for erased, n in counts.items():
            erased.dead_letters += n
    for erased in done.values():
        log.info(
            "erased client %s: %d keys, %d stream entries, %d dead letters",
            erased.digest,
            erased.keys,
            erased.entries,
            erased.dead_letters,
        )
    return list(done.values())


async def _mark(
    transport: Transport,
    deployment: Deployment,
    shard: int,
    clients: Sequence[Erased],
    others: Sequence[catalog.ClientKeys],
) -> dict[str, str]:
    """Mark ``clients`` of ``shard`` and delete their keys (erase.lua); their markers' ids."""
    keys = deployment.keys
    now = deployment.clock()
    script_keys = [keys.stream(shard), keys.erasures(shard)]
    args: list[str | int] = [marker_lifetime_ms(deployment)]
    for erased in clients:
        data: dict[str, None] = {}  # ordered, each key once (models share the result hash)
        for model in deployment.registry:
            data.update(dict.fromkeys(model.client_data_keys(shard, erased.cid, now)))
        for client_keys in others:
            data.update(dict.fromkeys(client_keys(shard, erased.cid, now)))
        script_keys += [keys.erased(shard, erased.digest), *data]
        args.append(len(data))
    reply = await transport.call(ERASE, script_keys, args)
    cutoffs = {}
    for erased, cutoff, deleted in zip(clients, reply[::2], reply[1::2], strict=True):
        cutoffs[erased.cid] = text(cutoff)
        erased.keys += int(deleted)
    return cutoffs


async def _scan(
    transport: Transport,
    stream: list[str],
    upto: str,
    id_field: str,
    pairs: Sequence[tuple[Erased, str]],
    progress: Progress | None,
    shard: int,
) -> dict[Erased, int]:
    """Delete the entries of ``pairs``' clients from ``stream`` (its key, and with dead letters
    the shard's stats hash) up to ``upto`` in bounded steps (erase_scan.lua); entries deleted
    per client."""
    flat: list[str] = []
    for erased, cutoff in pairs:
        flat += (erased.cid, cutoff)
    counts: dict[Erased, int] = defaultdict(int)
    after, read = "-", 0
    what = f"{'stream' if id_field == '' else 'dead'} {shard}"
    while True:
        reply = await transport.call(ERASE_SCAN, stream, [after, upto, SCAN_COUNT, id_field, *flat])
        last = text(reply[0])
        read += int(reply[1])
        for number, n in zip(reply[2::2], reply[3::2], strict=True):
            counts[pairs[int(number) - 1][0]] += int(n)
        if progress:
            progress(what, read, 0)
        if not last:
            return counts
        after = last

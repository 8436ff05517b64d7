"""Erasing clients on request (SPEC §9): every key of their data, their entries in the shard
streams and their dead letters, wherever they are, with nothing brought back afterwards.

An erasure is two steps:

1. **Mark and delete**, atomically per shard (``erase.lua``): in *every* shard, each client
   gets an erasure marker holding the last id of *that shard's* stream at that moment; in the
   client's own shard, every key of its data is deleted in the same call
   (:meth:`Model.client_data_keys` of each model). From then on, every script that would
   apply, dead-letter or re-drive one of the client's entries written before the erasure
   acknowledges it and changes nothing (the batch frame in ``_frame.lua``,
   ``python_commit.lua``, ``deadletter.lua``, ``redrive.lua``): batches in hand, reclaims,
   stale batches and replay alike. The marker is keyed by a digest of the id
   (:func:`genderd.keys.digest`) and expires after the retention plus a day, when no entry
   written before the erasure can be left in the stream.
2. **Scan**, in bounded steps (``erase_scan.lua``: at most :data:`SCAN_COUNT` entries per
   call, so the server never stalls), every shard's stream up to that shard's marker id, the
   stream set aside there if any (``genderd stream set-aside``), and every shard's dead-letter
   stream up to its last id at the mark, deleting every entry that names one of the clients.
   Clients are scanned for together, so a file of ids costs one pass per stream, not one per
   id.

Why every shard, and why each stream against its own ids: a producer with the wrong shard
rule writes a client's entries to another shard's stream, where every model dead-letters them
(``wrong_shard``). Stream ids are ordered only within one stream, so the client's marker in
its own shard (an id of that stream) says nothing about an entry of another shard's stream:
comparing the two kept such entries and let ``genderd dead redrive`` bring the client back.
Now each shard holds its own marker for the client, in its own ids, so:

- an entry of the client in shard 3's stream, written before the erasure, is acknowledged and
  dropped by ``deadletter.lua`` there (the processor passes the marker of every entry's
  client, of this shard or not): no dead letter of it can appear after the mark;
- a dead letter in shard 3 was written before the mark, or is of an entry written after the
  erasure; the scan deletes every dead letter of the client up to the dead-letter stream's
  last id at the mark, so none of the first kind is left;
- ``genderd dead redrive`` re-drives a dead letter of shard 3 into the client's shard 9 only
  when shard 3's marker says its entry was written after the erasure; it reads shard 9's
  marker first and ``redrive.lua`` writes only if that marker is unchanged, and an erasure
  marks the other shards before the client's own, so an erasure that runs meanwhile is
  either seen by the check or covers the written entry (see :mod:`genderd.deadletters`).

The price: a client costs one marker per shard (about 100 bytes each, for the retention plus
a day), and an erasure reads every shard's stream, not only the client's (a batch of ids
still costs one pass per stream).

Events that arrive after the erasure have ids after the markers': they are applied as usual.
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

#: progress(what, done, total): what is "mark" (done of total clients marked in their own
#: shard), or "stream <n>" / "aside <n>" / "dead <n>" (done: entries of that stream read so
#: far; total: 0, unknown)
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


#: greater than every stream id: everything in a stream set aside precedes every erasure
MAX_ID = "18446744073709551615-18446744073709551615"


@dataclass(frozen=True)
class _Cut:
    """Where one client was marked in one shard: that shard's stream and dead-letter stream
    last ids at that moment."""

    erased: Erased
    stream: str
    dead: str


async def erase(
    transport: Transport,
    deployment: Deployment,
    cids: Iterable[str],
    progress: Progress | None = None,
) -> list[Erased]:
    """Erase ``cids`` (see the module docstring); one :class:`Erased` per distinct id, in
    the order given. Erasing a client genderd does not know removes nothing (zero counts)."""
    # the keys of the deployment's other models too: recorded, or loaded but left out
    others = catalog.erasure_keys(deployment, await catalog.read(transport, deployment))
    done = {cid: Erased(cid, digest(cid)) for cid in cids}
    home = {erased: deployment.shard_of(erased.cid) for erased in done.values()}
    cuts: dict[int, list[_Cut]] = defaultdict(list)
    marked = 0
    # every other shard first, the client's own shard (its keys) last: see the docstring
    for own in (False, True):
        for shard in deployment.shards:
            clients = [erased for erased in done.values() if (home[erased] == shard) == own]
            for start in range(0, len(clients), MARK_CLIENTS):
                chunk = clients[start : start + MARK_CLIENTS]
                cuts[shard] += await _mark(transport, deployment, shard, chunk, others, data=own)
                if own:
                    marked += len(chunk)
                    if progress:
                        progress("mark", marked, len(done))
    keys = deployment.keys
    for shard in deployment.shards:
        marks = cuts[shard]
        scans = [
            ("stream", [keys.stream(shard)], [(c.erased, c.stream) for c in marks], "entries"),
            ("aside", [keys.stream_aside(shard)], [(c.erased, MAX_ID) for c in marks], "entries"),
            (
                "dead",
                [keys.dead(shard), keys.stats(shard)],
                [(c.erased, c.dead) for c in marks],
                "dead_letters",
            ),
        ]
        for what, stream, pairs, kind in scans:
            upto = max((cutoff for _, cutoff in pairs), key=parse_id, default="0-0")
            if upto == "0-0":
                continue  # the stream did not exist when the clients were marked
            counts = await _scan(transport, stream, upto, pairs, progress, f"{what} {shard}")
            for erased, n in counts.items():
                setattr(erased, kind, getattr(erased, kind) + n)
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
    *,
    data: bool,
) -> list[_Cut]:
    """Mark ``clients`` in ``shard``, and with ``data`` (their own shard) delete their keys,
    every model's (``others``: those of the models not served here) (erase.lua); where each
    was marked."""
    keys = deployment.keys
    now = deployment.clock()
    script_keys = [keys.stream(shard), keys.erasures(shard), keys.dead(shard)]
    args: list[str | int] = [marker_lifetime_ms(deployment)]
    for erased in clients:
        mine: dict[str, None] = {}  # ordered, each key once (models share the result hash)
        if data:
            for model in deployment.registry:
                mine.update(dict.fromkeys(model.client_data_keys(shard, erased.cid, now)))
            for client_keys in others:
                mine.update(dict.fromkeys(client_keys(shard, erased.cid, now)))
        script_keys += [keys.erased(shard, erased.digest), *mine]
        args.append(len(mine))
    reply = await transport.call(ERASE, script_keys, args)
    stream, dead = text(reply[0]), text(reply[1])
    for erased, deleted in zip(clients, reply[2:], strict=True):
        erased.keys += int(deleted)
    return [_Cut(erased, stream, dead) for erased in clients]


async def _scan(
    transport: Transport,
    stream: list[str],
    upto: str,
    pairs: Sequence[tuple[Erased, str]],
    progress: Progress | None,
    what: str,
) -> dict[Erased, int]:
    """Delete the entries of ``pairs``' clients (each with its cutoff in this stream) from
    ``stream`` (its key, and with dead letters the shard's stats hash) up to ``upto`` in
    bounded steps (erase_scan.lua); entries deleted per client."""
    flat: list[str] = []
    for erased, cutoff in pairs:
        flat += (erased.cid, cutoff)
    counts: dict[Erased, int] = defaultdict(int)
    after, read = "-", 0
    while True:
        reply = await transport.call(ERASE_SCAN, stream, [after, upto, SCAN_COUNT, *flat])
        last = text(reply[0])
        read += int(reply[1])
        for number, n in zip(reply[2::2], reply[3::2], strict=True):
            counts[pairs[int(number) - 1][0]] += int(n)
        if progress:
            progress(what, read, 0)
        if not last:
            return counts
        after = last

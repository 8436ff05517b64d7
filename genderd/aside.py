"""Setting a shard's stream aside when its last id is in the future (``genderd stream
set-aside``; docs/operations.md, "A stream id in the future").

A producer that writes an explicit id far in the future (``XADD ... 99999999999999-0``) moves
the stream's last id there for good: every later entry gets an id after it. Renaming the
stream aside lets new entries take ids from now again, but every id the shard kept from the
old stream is then in the future of the new one. The ones that matter are the erasure markers
(:mod:`genderd.erasure`): a client erased while the stream was ahead has a marker holding the
future id, so every new entry of the client would look written before its erasure and be
dropped until the marker expires (the retention plus a day), and the shard's sentinel would
make the workers look every client's marker up meanwhile.

So the set-aside is one command, in two steps, after a check: a model the deployment records
(or has a group of on another shard) without a group on this one would have the whole stream
still to read, and never see it once set aside, so the command refuses, naming it, while the
stream holds entries.

1. ``stream_aside.lua``, atomically: refuse while any consumer group has entries pending or
   not yet delivered (they would be lost with the old stream); rename the stream to its
   aside key (:meth:`genderd.keys.Keys.stream_aside`), expiring after the retention; create
   the new stream with every group of the old one at id 0, so events written from then on
   are all delivered, whether or not the workers run yet; and set the shard's erasure
   sentinel to ``0-0`` (every entry of the new stream is written after every erasure so far).
2. ``markers_rebase.lua``, in pages of the shard's markers (found with ``SCAN``): a marker
   whose id is after the new stream's last id holds an id of the old stream; it becomes
   ``0-0``, keeping its lifetime. A marker set by an erasure after step 1 holds an id of the
   new stream and is left alone. An erasure running meanwhile sets its markers itself; the
   writers are stopped during the recovery, so no entry of a client is waiting between the
   two steps. The cutoffs of the clients still waiting for the shard's scrub are re-based the
   same way (``scrub_rebase.lua``).

The aside stream keeps the old entries until it expires: the erasures' scrub still reads it
(:mod:`genderd.erasure`), ``replay`` no longer sees it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from genderd import catalog, status, streams
from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.erasure import scrub
from genderd.errors import InputError, UnavailableError
from genderd.events import text
from genderd.lua import Script
from genderd.transport import AsyncClient, Transport

log = logging.getLogger(__name__)

STREAM_ASIDE = Script.from_files("stream_aside.lua")
MARKERS_REBASE = Script.from_files("markers_rebase.lua")
SCAN_COUNT = 1_000  # markers per SCAN step and per markers_rebase.lua call


class StreamBusyError(UnavailableError):
    """The shard's stream still has entries pending or not yet delivered: the workers must
    finish them (with the writers stopped) before it can be set aside."""


@dataclass
class SetAside:
    """What ``genderd stream set-aside`` did."""

    shard: int
    aside: str  # the key the old stream was renamed to
    last_id: str  # the old stream's last id (the one in the future)
    groups: list[str] = field(default_factory=list)  # groups created on the new stream
    rebased: int = 0  # erasure markers re-based to 0-0


async def set_aside(
    client: AsyncClient, transport: Transport, deployment: Deployment, shard: int
) -> SetAside:
    """Set ``shard``'s stream aside and re-base its erasure markers (see the module
    docstring). Refused (:class:`InputError`) unless the stream's last id is ahead of the
    clock by more than ``max_future_ms``; refused (:class:`StreamBusyError`) while entries are
    pending or undelivered."""
    keys = deployment.keys
    if shard not in deployment.shards:
        raise InputError(f"no shard {shard}: the deployment has shards 0-{deployment.shards[-1]}")
    ahead = [s for s in await status.streams_ahead(client, deployment) if s.shard == shard]
    if not ahead:
        raise InputError(
            f"the stream of shard {shard} is not ahead of the clock: nothing to set aside"
        )
    await _refuse_models_without_group(client, transport, deployment, shard)
    retention_ms = deployment.settings.retention_days * MS_PER_DAY
    reply = await transport.call(
        STREAM_ASIDE,
        [keys.stream(shard), keys.stream_aside(shard), keys.erasures(shard)],
        [retention_ms],
    )
    verdict = text(reply[0])
    if verdict == "no_stream":
        raise InputError(f"shard {shard} has no stream")
    if verdict == "aside_exists":
        days = int(reply[1]) / MS_PER_DAY
        raise InputError(
            f"{keys.stream_aside(shard)} is still there (it expires in {days:.1f} days): "
            "delete it first (its entries are lost to replay either way)"
        )
    if verdict == "busy":
        raise StreamBusyError(
            f"group {text(reply[1])} of shard {shard} has {int(reply[2])} entries pending"
            + (" and entries not yet delivered" if int(reply[3]) else "")
            + ": stop the writers, let the workers finish (genderd status: lag and pending 0), "
            "then run this again"
        )
    done = SetAside(shard, keys.stream_aside(shard), text(reply[1]), [text(g) for g in reply[2:]])
    done.rebased = await rebase_markers(client, transport, deployment, shard)
    await scrub.rebase(transport, deployment, shard)  # the pending scrub's cutoffs alike
    log.info(
        "set aside the stream of shard %d (last id %s) as %s; re-based %d erasure markers",
        shard,
        done.last_id,
        done.aside,
        done.rebased,
    )
    return done


async def _refuse_models_without_group(
    client: AsyncClient, transport: Transport, deployment: Deployment, shard: int
) -> None:
    """:class:`StreamBusyError` while the shard's stream holds entries and models of the
    deployment (recorded, or with a group on another shard; not retired) have no group on
    it: the stream set aside, those entries would never reach them."""
    stream = deployment.keys.stream(shard)
    length = int(await client.xlen(stream))
    here = {info.group for info in await streams.groups(client, deployment.keys, shard)}
    records = await catalog.read(transport, deployment)
    missing = [n for n, r in records.items() if n not in here and not r.retired]
    if length and missing:
        raise StreamBusyError(
            f"models {', '.join(missing)} have no group on shard {shard}: the {length} "
            "entries of its stream would never reach them once set aside. Start their "
            "workers and let them catch up (genderd status: lag and pending 0), or retire the "
            "ones that no longer run (genderd models retire NAME), then run this again"
        )


async def rebase_markers(
    client: AsyncClient, transport: Transport, deployment: Deployment, shard: int
) -> int:
    """Re-base the erasure markers of ``shard`` that hold an id after its stream's last id
    (``markers_rebase.lua``, a page per call); how many were re-based."""
    keys = deployment.keys
    rebased = 0
    page: list[str] = []
    async for key in client.scan_iter(match=keys.erased_pattern(shard), count=SCAN_COUNT):
        page.append(text(key))
        if len(page) >= SCAN_COUNT:
            rebased += int(await transport.call(MARKERS_REBASE, [keys.stream(shard), *page], []))
            page = []
    if page:
        rebased += int(await transport.call(MARKERS_REBASE, [keys.stream(shard), *page], []))
    return rebased

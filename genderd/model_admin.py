"""What an operator decides about a recorded model (``genderd models``; docs/operations.md,
"Switching a model off, retiring it"): switch it off or on, or retire it.

Nothing switches a model off or retires it implicitly: ``GENDERD_MODELS`` says what one
process runs, and workers of the other models may run elsewhere, so their death must show as
``STALLED``. Both decisions are refused while workers of the model are alive (a heartbeat, or
a read of its group, within ``stall_after_s``): stop them first. A worker of the model that
starts afterwards records it again, switched on, and recreates its groups.

- *Off* keeps the model's groups where they are (lag grows; switched on again within the
  retention, it catches up): ``status`` shows it ``off``, never ``STALLED`` nor ``FAILING``.
- *Retire* destroys its group on every shard (its lag no longer holds back trimming), its
  stats counters, its workers' heartbeats and an interrupted replay's marker; its dead letters
  stay (``genderd dead``). Its record stays, marked retired, so that erasure still deletes
  its clients' keys from the recorded shape (they also expire with the clients,
  ``GENDERD_CLIENT_TTL_DAYS``); nothing else shows it. With ``forget``, or when there is no
  readable record to keep, the record goes too: erasure then no longer knows its keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from redis.exceptions import ResponseError

from genderd import catalog, pause, streams
from genderd.catalog import ModelRecord
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.errors import InputError, UnavailableError
from genderd.keys import STATS_COUNTERS
from genderd.transport import AsyncClient, Transport


class ModelRunningError(UnavailableError):
    """Workers of the model are alive (or a replay of it runs): stop them, then try again."""


@dataclass(frozen=True)
class Retired:
    """What :func:`retire` did."""

    name: str
    groups: int  # consumer groups destroyed
    kept: bool  # the record stays, marked retired (erasure still finds its keys)


async def live_workers(client: AsyncClient, deployment: Deployment, name: str) -> list[str]:
    """The consumers of model ``name`` alive now: a heartbeat (:mod:`genderd.pause`) or a read
    of its group within ``stall_after_s``."""
    stall_ms = int(deployment.settings.stall_after_s * 1000)
    now = wall_clock_ms()
    beats = pause.parse_beats(await client.hgetall(deployment.keys.workers(name)))
    beating = {beat.consumer for beat in beats if now - beat.at_ms <= stall_ms}
    reading = await streams.live_consumers(
        client, deployment.keys, deployment.shards, [name], stall_ms
    )
    return sorted(beating | set(reading))


async def _known(
    client: AsyncClient, transport: Transport, deployment: Deployment, name: str
) -> ModelRecord:
    """The record (or bare group) of model ``name`` (or a recorded alias), refused while
    workers of it are alive; :class:`InputError` when the deployment has neither."""
    records = await catalog.read(transport, deployment)
    found = records.get(name) or catalog.find(records, name)
    if found is None:
        known = ", ".join(records) or "none"
        raise InputError(f"no model {name!r} in this deployment (it has: {known})")
    alive = await live_workers(client, deployment, found.name)
    if alive:
        raise ModelRunningError(
            f"workers of {found.name} are alive ({', '.join(alive)}): stop them, then run "
            "this again (a worker killed without stopping counts as alive for "
            f"GENDERD_STALL_AFTER_S, {deployment.settings.stall_after_s:g} s)"
        )
    return found


async def switch(
    client: AsyncClient, transport: Transport, deployment: Deployment, name: str, on: bool
) -> bool:
    """Switch model ``name`` on or off; whether that changed its record."""
    found = await _known(client, transport, deployment, name)
    if not found.recorded or found.unreadable or found.retired:
        why = found.unreadable or ("retired" if found.retired else "only a consumer group")
        raise InputError(
            f"model {found.name!r} has no record to switch ({why}): start a worker of it, "
            f"which records it, or retire it (genderd models retire {found.name})"
        )
    if found.on == on:
        return False
    changed = dataclasses.replace(found, on=on)
    await client.hset(deployment.keys.models, found.name, changed.to_json())
    return True


async def retire(
    client: AsyncClient,
    transport: Transport,
    deployment: Deployment,
    name: str,
    *,
    forget: bool = False,
) -> Retired:
    """Retire model ``name`` (see the module docstring); refused while workers of it are
    alive or a replay of it holds its pause."""
    found = await _known(client, transport, deployment, name)
    keys, name = deployment.keys, found.name
    if await client.exists(keys.pause(name)):
        raise ModelRunningError(f"a replay of {name} is running: wait for it to end")
    destroyed = 0
    for shard in deployment.shards:
        try:
            destroyed += int(await client.xgroup_destroy(keys.stream(shard), name))
        except ResponseError as error:  # no stream on that shard yet
            if "no such key" not in str(error).lower():
                raise
        await client.hdel(keys.stats(shard), *(f"{name}:{c}" for c in STATS_COUNTERS))
    await client.delete(keys.workers(name), keys.rebuilding(name))
    keep = found.recorded and not found.unreadable and not forget
    if keep:
        tombstone = dataclasses.replace(found, on=False, retired=True)
        await client.hset(keys.models, name, tombstone.to_json())
    else:
        await client.hdel(keys.models, name)
    return Retired(name, destroyed, keep)

"""Giving clients written before client expiry existed their expiry (SPEC §10).

The apply scripts set a client's expiry whenever they apply its events (the batch frame,
``_expiry.lua``). Clients of a deployment upgraded from a release without it, which never come
back, would keep their keys forever; :func:`backfill` gives each result hash that has no expiry
the one it would have had: ``GENDERD_CLIENT_TTL_DAYS`` after its latest applied event (its
models' greatest as-of time), deleting at once those inactive for longer
(``expire_backfill.lua``, one atomic call per client, so a worker applying an event meanwhile
wins).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from genderd.deployment import Deployment
from genderd.keys import result_field
from genderd.lua import Script
from genderd.transport import AsyncClient

BACKFILL = Script.from_files("expire_backfill.lua")
SCAN_COUNT = 1_000  # result hashes per SCAN step and per pipeline


@dataclass
class Backfilled:
    """What :func:`backfill` did."""

    set: int = 0  # clients given an expiry
    gone: int = 0  # clients whose expiry had passed: deleted
    left: int = 0  # result hashes with an expiry already, or with no answer


async def backfill(
    client: AsyncClient,
    deployment: Deployment,
    progress: Callable[[int, Backfilled], None] | None = None,
) -> Backfilled:
    """Give every result hash without an expiry its expiry; ``progress(shard, so_far)``
    after each shard. The TTL must not be 0."""
    ttl = deployment.settings.client_ttl_days
    if ttl <= 0:
        raise ValueError("GENDERD_CLIENT_TTL_DAYS is 0: clients are kept forever")
    keys = deployment.keys
    at_fields = [result_field(model.name, "at") for model in deployment.registry]
    await client.script_load(BACKFILL.source)
    done = Backfilled()
    for shard in deployment.shards:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=keys.result_pattern(shard), count=SCAN_COUNT):
            batch.append(key)
            if len(batch) >= SCAN_COUNT:
                await _run(client, deployment, shard, batch, ttl, at_fields, done)
                batch = []
        if batch:
            await _run(client, deployment, shard, batch, ttl, at_fields, done)
        if progress:
            progress(shard, done)
    return done


async def _run(
    client: AsyncClient,
    deployment: Deployment,
    shard: int,
    batch: list[bytes],
    ttl: int,
    at_fields: list[str],
    done: Backfilled,
) -> None:
    keys = deployment.keys
    head = len(keys.result(shard, ""))
    pipe = client.pipeline(transaction=False)
    for key in batch:
        cid = key.decode()[head:]
        pipe.evalsha(BACKFILL.sha, 2, key, keys.state(shard, "top", cid), ttl, *at_fields)
    try:
        outcomes = await pipe.execute()
    except ResponseError as error:  # named by the script's file and line, as the transports do
        raise BACKFILL.locate(error) from error
    for outcome in outcomes:
        if outcome == 1:
            done.set += 1
        elif outcome == 2:
            done.gone += 1
        else:
            done.left += 1

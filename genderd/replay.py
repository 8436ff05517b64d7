"""Rebuilding one model's state from the retained streams.

The model's consumer group is destroyed on every shard (so no live worker keeps applying),
its state keys and result fields are deleted, the group is recreated at id 0 and the retained
history is applied again. Events already trimmed away are gone: replay rebuilds what the
streams retain (``GENDERD_RETENTION_DAYS``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from genderd import deadletters, streams
from genderd.deployment import Deployment
from genderd.errors import GenderdError
from genderd.layout import claim_layout
from genderd.models.base import Model
from genderd.processor import Outcome
from genderd.transport import AsyncClient
from genderd.worker import Worker

log = logging.getLogger(__name__)

SCAN_COUNT = 1_000
Progress = Callable[[int], None]


class LiveConsumersError(GenderdError, RuntimeError):
    """Workers of the model are running; replaying under them would race."""

    def __init__(self, model: str, consumers: list[str]) -> None:
        super().__init__(
            f"workers of {model} are running ({', '.join(consumers)}); stop them or use --force"
        )
        self.consumers = consumers


async def wipe(client: AsyncClient, deployment: Deployment, model: Model) -> int:
    """Delete the model's groups, state keys and result fields; return keys deleted."""
    keys = deployment.keys
    deleted = 0
    fields = list(model.result_fields())
    for shard in deployment.shards:
        stream = keys.stream(shard)
        if await client.exists(stream):
            await client.xgroup_destroy(stream, model.name)
        await client.hdel(
            keys.stats(shard), *(f"{model.name}:{kind}" for kind in ("applied", "dead", "erased"))
        )
        batch: list[bytes] = []
        async for key in client.scan_iter(
            match=keys.model_pattern(shard, model.name), count=SCAN_COUNT
        ):
            batch.append(key)
            if len(batch) >= SCAN_COUNT:
                deleted += int(await client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await client.unlink(*batch))
        pipe = client.pipeline(transaction=False)
        queued = 0
        async for key in client.scan_iter(match=keys.result_pattern(shard), count=SCAN_COUNT):
            pipe.hdel(key, *fields)
            queued += 1
            if queued >= SCAN_COUNT:
                await pipe.execute()
                pipe, queued = client.pipeline(transaction=False), 0
        if queued:
            await pipe.execute()
    return deleted


async def backlog(client: AsyncClient, deployment: Deployment) -> int:
    """Entries retained over all shards: what a replay will go through."""
    pipe = client.pipeline(transaction=False)
    for shard in deployment.shards:
        pipe.xlen(deployment.keys.stream(shard))
    return sum(int(n) for n in await pipe.execute())


async def replay(
    worker: Worker, progress: Progress | None = None, *, force: bool = False
) -> Outcome:
    """Rebuild ``worker.model`` from the retained streams; ``progress`` gets entries done.

    Raises :class:`LiveConsumersError` (before touching anything) while workers of the model
    have talked to Redis within ``stall_after_s``, unless ``force``.
    """
    model, deployment, client = worker.model, worker.deployment, worker.client
    if not force:
        idle_ms = int(deployment.settings.stall_after_s * 1000)
        live = await streams.live_consumers(
            client, deployment.keys, deployment.shards, [model.name], idle_ms
        )
        if live:
            raise LiveConsumersError(model.name, live)
    await claim_layout(client, deployment, force=force)
    deleted = await wipe(client, deployment, model)
    # its dead letters of retained entries go: the replay dead-letters again what still fails
    # (and applies what a fixed model no longer fails on, re-driven or not)
    dropped, _ = await deadletters.reset_model(worker.links.fast, deployment, model.name)
    log.info(
        "replay of %s: deleted %d state keys and %d dead letters; re-reading the streams",
        model.name,
        deleted,
        dropped,
    )
    await worker.ensure_groups()
    total = Outcome()
    busy = True
    while busy:
        busy = False
        for shard in deployment.shards:
            outcome = await worker.poll(shard)
            done = outcome.handled
            if done:
                busy = True
                total += outcome
                if progress is not None:
                    progress(done)
    await worker.forget()
    return total

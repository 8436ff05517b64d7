"""Rebuilding one model's state from the retained streams, while its workers run.

The replay pauses the model's workers (:mod:`genderd.pause`: they finish their batches in
hand and wait), then destroys the model's consumer group on every shard, deletes its state
keys and result fields, recreates the group at id 0, applies the retained history again and
lifts the pause: the workers go on from where the replay ended. Events already trimmed away
are gone: replay rebuilds what the streams retain (``GENDERD_RETENTION_DAYS``).

Interrupted (killed) at any step, nothing is applied twice or lost:

- while waiting for the workers to pause: nothing changed; the pause expires and they resume;
- after the wipe began and before the groups were back: the rebuilding marker keeps the
  workers paused (``status``: replay interrupted) until a replay of the model runs to its end;
- while applying the history: the groups are whole; when the pause expires the workers resume
  on them and apply the rest, each entry once (entries the replay held pending they reclaim).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from genderd import deadletters, pause
from genderd.deployment import Deployment
from genderd.keys import STATS_COUNTERS
from genderd.layout import claim_layout
from genderd.models.base import Model
from genderd.processor import Outcome
from genderd.transport import AsyncClient
from genderd.worker import Worker

log = logging.getLogger(__name__)

SCAN_COUNT = 1_000
Progress = Callable[[int], None]
Paused = Callable[[list[str]], None]


async def wipe(client: AsyncClient, deployment: Deployment, model: Model) -> int:
    """Delete the model's groups, state keys and result fields; return keys deleted."""
    keys = deployment.keys
    deleted = 0
    fields = list(model.result_fields())
    for shard in deployment.shards:
        stream = keys.stream(shard)
        if await client.exists(stream):
            await client.xgroup_destroy(stream, model.name)
        await client.hdel(keys.stats(shard), *(f"{model.name}:{kind}" for kind in STATS_COUNTERS))
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
    worker: Worker,
    progress: Progress | None = None,
    *,
    force: bool = False,
    paused: Paused | None = None,
    wait_s: float | None = None,
) -> Outcome:
    """Rebuild ``worker.model`` from the retained streams; ``progress`` gets entries done.

    Takes the model's pause and waits until its live workers have paused (``paused`` gets
    their names), at most ``wait_s`` (default: ``stall_after_s`` plus
    :data:`~genderd.pause.ACK_MARGIN_S`, by when every stopped worker counts as gone). Raises
    :class:`~genderd.pause.NotPausedError` when some did not, and
    :class:`~genderd.pause.ReplayRunningError` while another replay of the model runs, both
    before anything changed. ``force`` only lets the replay record this release's data layout
    while consumers of an earlier release seem alive (:func:`~genderd.layout.claim_layout`).
    """
    model, deployment, client = worker.model, worker.deployment, worker.client
    settings = deployment.settings
    stall_ms = int(settings.stall_after_s * 1000)
    timeout_s = settings.stall_after_s + pause.ACK_MARGIN_S if wait_s is None else wait_s
    await claim_layout(client, deployment, force=force)
    async with pause.held(client, worker.links.fast, deployment.keys, model.name) as hold:
        await hold.wait_for_workers(deployment.shards, stall_ms, timeout_s)
        if paused is not None:
            paused(await hold.acknowledged(stall_ms))
        await hold.step("mark")  # from here until the groups are back: nobody consumes
        deleted = await wipe(client, deployment, model)
        # its dead letters of retained entries go: the replay dead-letters again what still
        # fails (and applies what a fixed model no longer fails on, re-driven or not)
        dropped, _ = await deadletters.reset_model(worker.links.fast, deployment, model.name)
        log.info(
            "replay of %s: deleted %d state keys and %d dead letters; re-reading the streams",
            model.name,
            deleted,
            dropped,
        )
        await worker.ensure_groups()
        await hold.step("unmark")
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

"""Failover is a tested path (SPEC §12): a master killed -9 under ingest and workers.

A local cluster of three masters with one replica each (``cluster-node-timeout`` lowered so
that the cluster's own failover starts within a second or two), the API in process with
``GENDERD_INGEST_REPLICAS=1``, a worker per model running throughout. Senders post 20-event
batches, each with its own ``Idempotency-Key``, and retry every failure (503, a lost
connection) with the same key until it is acknowledged. A third of the way through, the
master owning the most shards is killed -9. The test checks that the API and the workers
recover without a restart, that ``/readyz`` said 503 (with a reason) during the outage and 200
after, and that every model applied every event sent exactly once (each model's answer equals
the oracle's). Once the replica is promoted, the killed node is started again, as a supervisor
would, and rejoins as the new master's replica: until then the new master has no replica, and
``GENDERD_INGEST_REPLICAS=1`` refuses (503) what it cannot have copied. Run with ``-s`` to see
the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis

from genderd import status
from genderd.api import create_app
from genderd.bundled import BundledServer, LocalCluster, find_binary
from genderd.clock import MS_PER_DAY
from genderd.deployment import Deployment
from genderd.settings import Settings
from genderd.transport import async_client

from .support import oracle
from .support.factories import make_reader, make_worker

SENDERS = 4
BATCHES = 30  # per sender
BATCH = 20
CLIENTS = 60
KILL_AFTER = SENDERS * BATCHES // 3  # acknowledged batches before the kill
RETRY_S = 0.1
DEADLINE_S = 45.0  # only turns a hang into a failure


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    binary = find_binary(os.environ.get("GENDERD_REDIS_SERVER"))
    data = tmp_path_factory.mktemp("failover")
    with LocalCluster(binary, data, masters=3, replicas=1, node_timeout_ms=1000) as nodes:
        yield nodes


@dataclass
class Figures:
    sent: int = 0  # events acknowledged (each batch once)
    refused: int = 0  # 503 answers
    failed: int = 0  # requests that got no answer (connection lost mid-request)
    retries: int = 0
    killed_at: float = 0.0
    promoted_at: float = 0.0  # the replica is master (seen by ROLE)
    recovered_at: float = 0.0  # first 202 after the kill
    ready: list[tuple[float, int, str]] = field(default_factory=list)


def owner_of_most_shards(cluster: LocalCluster, settings: Settings) -> BundledServer:
    keys = Deployment.build(settings).keys
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        owners = Counter(
            client.get_node_from_key(keys.stream(shard)).port for shard in range(settings.shards)
        )
    finally:
        client.close()
    port = owners.most_common(1)[0][0]
    return next(s for s in cluster.servers if s.port == port)


@pytest.mark.slow
def test_a_master_killed_under_ingest_loses_nothing_and_counts_nothing_twice(
    cluster: LocalCluster,
) -> None:
    settings = Settings(
        redis_url=cluster.url,
        cluster=True,
        shards=8,
        batch_size=50,
        block_ms=200,
        claim_idle_ms=1_000,
        ingest_replicas=1,
        ingest_wait_ms=500,
    )
    victim = owner_of_most_shards(cluster, settings)
    now = int(time.time() * 1000)
    rng = random.Random(20)
    batches = [
        [
            {
                "cid": f"F{rng.randrange(CLIENTS)}",
                "gender": rng.choice(settings.genders),
                "ts": now - rng.randrange(2 * MS_PER_DAY),
            }
            for _ in range(BATCH)
        ]
        for _ in range(SENDERS * BATCHES)
    ]
    figures = Figures()
    acknowledged: list[dict[str, object]] = []

    async def scenario() -> None:
        app = create_app(settings)
        client = async_client(settings)
        registry = Deployment.build(settings).registry
        workers = [make_worker(client, model, settings) for model in registry]
        for worker in workers:
            await worker.ensure_groups()
        running = [asyncio.create_task(w.run()) for w in workers]
        started = time.monotonic()
        done = asyncio.Event()
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:

            async def send(n: int) -> None:
                body = {"events": batches[n]}
                headers = {"Idempotency-Key": f"failover-batch-{n}"}
                tries = 0
                while True:
                    tries += 1
                    try:
                        answer = await http.post("/v1/events", json=body, headers=headers)
                    except httpx.HTTPError:
                        figures.failed += 1
                    else:
                        if answer.status_code == 202:
                            assert answer.json() == {"accepted": BATCH}
                            break
                        assert answer.status_code == 503, answer.text
                        assert answer.headers["retry-after"]
                        figures.refused += 1
                    figures.retries += 1
                    await asyncio.sleep(RETRY_S)
                acknowledged.extend(batches[n])
                figures.sent += BATCH
                if figures.killed_at and not figures.recovered_at and tries > 1:
                    figures.recovered_at = time.monotonic()
                if len(acknowledged) // BATCH == KILL_AFTER and not figures.killed_at:
                    victim.kill()
                    figures.killed_at = time.monotonic()
                    supervisor.append(asyncio.create_task(rejoin()))

            async def rejoin() -> None:
                # As a supervisor would, once the cluster promoted the replica (not before:
                # an empty master back in time would have its replica resync to nothing),
                # the killed node is started again and rejoins as the new master's replica,
                # so that the new master has a replica for GENDERD_INGEST_REPLICAS=1 again.
                while len(await asyncio.to_thread(cluster.masters_now)) < 3:
                    await asyncio.sleep(0.1)
                figures.promoted_at = time.monotonic()
                await asyncio.to_thread(victim.start)

            async def sender(first: int) -> None:
                for n in range(first, len(batches), SENDERS):
                    await send(n)

            async def probe() -> None:
                while not done.is_set():
                    answer = await http.get("/readyz")
                    detail = "" if answer.status_code == 200 else answer.json().get("detail", "")
                    figures.ready.append((time.monotonic(), answer.status_code, detail))
                    await asyncio.sleep(0.1)

            supervisor: list[asyncio.Task[None]] = []
            prober = asyncio.create_task(probe())
            await asyncio.wait_for(
                asyncio.gather(*(sender(n) for n in range(SENDERS))), DEADLINE_S
            )
            # readiness comes back after the outage, without a restart
            while figures.ready[-1][1] != 200:
                assert time.monotonic() - started < DEADLINE_S, figures.ready[-3:]
                await asyncio.sleep(0.1)
            done.set()
            await prober
            await asyncio.gather(*supervisor)
        # the workers, never restarted, catch up with everything acknowledged
        deployment = Deployment.build(settings)
        while True:
            rows = await status.collect(client, deployment)
            if all(r.applied == len(acknowledged) and r.lag == 0 for r in rows):
                break
            if time.monotonic() - started > DEADLINE_S:
                raise AssertionError([(r.name, r.applied, r.lag, r.pending) for r in rows])
            await asyncio.sleep(0.2)
        for worker in workers:
            worker.stop()
        await asyncio.gather(*running)
        answers = await make_reader(client, settings).lookup_many(
            [f"F{n}" for n in range(CLIENTS)]
        )
        entries = 0
        for shard in range(settings.shards):
            entries += await client.xlen(deployment.keys.stream(shard))
        await client.aclose()
        check(answers, entries)

    def check(answers: list[dict[str, object]], entries: int) -> None:
        assert entries == len(acknowledged) == len(batches) * BATCH  # none lost, none twice
        read_at = int(time.time() * 1000)
        for n, got in enumerate(answers):
            mine = [
                oracle.Ev("0-0", str(e["cid"]), str(e["gender"]), int(e["ts"]))  # type: ignore[call-overload]
                for e in acknowledged
                if e["cid"] == f"F{n}"
            ]
            want = {
                "last": oracle.last(mine),
                "top": oracle.top(mine),
                "top7d": oracle.top_window(mine, read_at, read_at, settings.window_days),
            }
            for model, expected in want.items():
                answer = got[model]
                if expected is None:
                    assert answer is None
                    continue
                assert answer is not None, (n, model)
                assert answer.gender == expected.gender, (n, model)  # type: ignore[attr-defined]
                if expected.scores is not None:
                    assert answer.scores == expected.scores, (n, model)  # type: ignore[attr-defined]

    asyncio.run(scenario())

    outage = [r for r in figures.ready if r[1] != 200]
    assert outage, "readyz never saw the outage"
    assert all(r[1] == 503 and r[2] for r in outage)  # 503 with a reason
    assert figures.ready[-1][1] == 200
    assert figures.recovered_at > figures.killed_at > 0
    with contextlib.suppress(Exception):
        print(
            "\nfailover figures (3 masters + 3 replicas, GENDERD_INGEST_REPLICAS=1, "
            f"{SENDERS} senders x {BATCHES} batches of {BATCH}, master killed -9 after "
            f"{KILL_AFTER} batches)\n"
            f"  events sent (acknowledged)   {figures.sent}\n"
            f"  503 answers                  {figures.refused}\n"
            f"  requests with no answer      {figures.failed}\n"
            f"  retries (same key)           {figures.retries}\n"
            f"  kill -> replica promoted      {figures.promoted_at - figures.killed_at:.2f} s\n"
            f"  time to recover (kill -> first 202 after a retry)  "
            f"{figures.recovered_at - figures.killed_at:.2f} s\n"
            f"  /readyz 503 samples          {len(outage)} (e.g. {outage[0][2]!r})\n"
            f"  lost                         0\n"
            f"  double-counted               0"
        )

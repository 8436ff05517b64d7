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
from genderd.models import Answer
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


class Drill:
    """The senders, the /readyz probe and the supervisor of one run, and what they saw."""

    def __init__(self, cluster: LocalCluster, settings: Settings) -> None:
        self.cluster = cluster
        self.settings = settings
        self.victim = owner_of_most_shards(cluster, settings)
        now = int(time.time() * 1000)
        rng = random.Random(20)
        self.batches = [
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
        self.figures = Figures()
        self.acknowledged: list[dict[str, object]] = []
        self.supervisor: list[asyncio.Task[None]] = []
        self.done = asyncio.Event()

    async def send(self, http: httpx.AsyncClient, n: int) -> None:
        """Post batch ``n`` with its key until it is acknowledged."""
        figures = self.figures
        body = {"events": self.batches[n]}
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
        self.acknowledged.extend(self.batches[n])
        figures.sent += BATCH
        if figures.killed_at and not figures.recovered_at and tries > 1:
            figures.recovered_at = time.monotonic()
        if len(self.acknowledged) // BATCH == KILL_AFTER and not figures.killed_at:
            self.victim.kill()
            figures.killed_at = time.monotonic()
            self.supervisor.append(asyncio.create_task(self.rejoin()))

    async def sender(self, http: httpx.AsyncClient, first: int) -> None:
        for n in range(first, len(self.batches), SENDERS):
            await self.send(http, n)

    async def rejoin(self) -> None:
        """As a supervisor would, once the cluster promoted the replica (not before: an empty
        master back in time would have its replica resync to nothing), start the killed node
        again: it rejoins as the new master's replica, so that the new master has a replica
        for GENDERD_INGEST_REPLICAS=1 again."""
        while len(await asyncio.to_thread(self.cluster.masters_now)) < 3:
            await asyncio.sleep(0.1)
        self.figures.promoted_at = time.monotonic()
        await asyncio.to_thread(self.victim.start)

    async def probe(self, http: httpx.AsyncClient) -> None:
        while not self.done.is_set():
            answer = await http.get("/readyz")
            reason = "" if answer.status_code == 200 else answer.json()["reason"]
            self.figures.ready.append((time.monotonic(), answer.status_code, reason))
            await asyncio.sleep(0.1)

    async def ingest(self) -> None:
        """The senders and the probe against the API, until every batch is acknowledged and
        /readyz says 200 again."""
        app = create_app(self.settings)
        started = time.monotonic()
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as http,
        ):
            prober = asyncio.create_task(self.probe(http))
            senders = (self.sender(http, n) for n in range(SENDERS))
            await asyncio.wait_for(asyncio.gather(*senders), DEADLINE_S)
            while not self.figures.ready or self.figures.ready[-1][1] != 200:
                assert time.monotonic() - started < DEADLINE_S, self.figures.ready[-3:]
                await asyncio.sleep(0.1)
            self.done.set()
            await prober
            await asyncio.gather(*self.supervisor)

    async def run(self) -> tuple[list[dict[str, Answer | None]], int]:
        """Workers of every model throughout; the answers and stream entries at the end."""
        settings = self.settings
        client = async_client(settings)
        deployment = Deployment.build(settings)
        workers = [make_worker(client, model, settings) for model in deployment.registry]
        for worker in workers:
            await worker.ensure_groups()
        running = [asyncio.create_task(w.run()) for w in workers]
        started = time.monotonic()
        await self.ingest()
        # the workers, never restarted, catch up with everything acknowledged
        while True:
            rows = await status.collect(client, deployment)
            if all(r.applied == len(self.acknowledged) and r.lag == 0 for r in rows):
                break
            assert time.monotonic() - started < 2 * DEADLINE_S, [
                (r.name, r.applied, r.lag, r.pending) for r in rows
            ]
            await asyncio.sleep(0.2)
        for worker in workers:
            worker.stop()
        await asyncio.gather(*running)
        answers = await make_reader(client, settings).lookup_many([f"F{n}" for n in range(CLIENTS)])
        entries = 0
        for shard in range(settings.shards):
            entries += await client.xlen(deployment.keys.stream(shard))
        await client.aclose()
        return answers, entries

    def check(self, answers: list[dict[str, Answer | None]]) -> None:
        """Each client's answer of every model with an oracle equals the oracle's."""
        read_at = int(time.time() * 1000)
        for n, got in enumerate(answers):
            mine = [
                oracle.Ev("0-0", str(e["cid"]), str(e["gender"]), int(str(e["ts"])))
                for e in self.acknowledged
                if e["cid"] == f"F{n}"
            ]
            want = {
                "last": oracle.last(mine),
                "top": oracle.top(mine),
                "top7d": oracle.top_window(mine, read_at, read_at, self.settings.window_days),
            }
            for model, expected in want.items():
                answer = got[model]
                if expected is None:
                    assert answer is None, (n, model)
                    continue
                assert answer is not None, (n, model)
                assert answer.gender == expected.gender, (n, model)
                if expected.scores is not None:
                    assert answer.scores == expected.scores, (n, model)

    def report(self) -> str:
        figures = self.figures
        outage = [r for r in figures.ready if r[1] != 200]
        return (
            "\nfailover figures (3 masters + 3 replicas, GENDERD_INGEST_REPLICAS=1, "
            f"{SENDERS} senders x {BATCHES} batches of {BATCH}, master killed -9 after "
            f"{KILL_AFTER} batches)\n"
            f"  events sent (acknowledged)   {figures.sent}\n"
            f"  503 answers                  {figures.refused}\n"
            f"  requests with no answer      {figures.failed}\n"
            f"  retries (same key)           {figures.retries}\n"
            f"  kill -> replica promoted     {figures.promoted_at - figures.killed_at:.2f} s\n"
            f"  kill -> first 202 of a retried batch  "
            f"{figures.recovered_at - figures.killed_at:.2f} s\n"
            f"  /readyz 503 samples          {len(outage)} (e.g. {outage[0][2]!r})\n"
            f"  lost                         0\n"
            f"  double-counted               0"
        )


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
    drill = Drill(cluster, settings)
    answers, entries = asyncio.run(drill.run())
    sent = len(drill.batches) * BATCH
    assert entries == len(drill.acknowledged) == sent  # none lost, none written twice
    drill.check(answers)  # none applied twice, none missed, by any model
    figures = drill.figures
    outage = [r for r in figures.ready if r[1] != 200]
    assert outage, "/readyz never saw the outage"
    assert all(code == 503 and reason for _, code, reason in outage)  # with a reason
    assert figures.ready[-1][1] == 200
    assert figures.recovered_at > figures.killed_at > 0
    print(drill.report())

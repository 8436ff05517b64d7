"""Redis Cluster (SPEC §4): every key a script touches shares the shard's hash tag, so the
pipeline runs unchanged on a three-node cluster started from the bundled binary."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import pytest

from genderd import erasure, replay, status
from genderd.api import create_app
from genderd.bundled import LocalCluster, find_binary
from genderd.deployment import Deployment, open_deployment_sync
from genderd.ingest import IdempotencyKeyError, plan, write_sync
from genderd.models import Answer
from genderd.producer import synthetic
from genderd.settings import Settings
from genderd.transport import Links, async_client, sync_client

from .support import oracle
from .support.api_helpers import ApiClient
from .support.commands import wait_until
from .support.factories import make_producer, make_reader, make_worker, stopped
from .support.runtime import FakeClock


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalCluster(find_binary(), tmp_path_factory.mktemp("cluster"), masters=3) as nodes:
        yield nodes.url


def core(lookups: list[dict[str, Answer | None]]) -> list[tuple[object, ...] | None]:
    return [(a["top"].gender, a["top"].scores) if a["top"] else None for a in lookups]


@pytest.mark.slow
def test_pipeline_on_a_three_node_cluster(cluster: str) -> None:
    settings = Settings(redis_url=cluster, cluster=True, shards=8, batch_size=50)
    clock = FakeClock(int(time.time() * 1000))
    sync = sync_client(settings)
    assert open_deployment_sync(sync, settings).settings.shards == 8
    events = list(synthetic(1500, 60, settings.genders, days=9, seed=5, clock=clock))
    with make_producer(sync, settings, clock=clock) as producer:
        for event in events:
            producer.send_fields(event)
    sync.close()

    async def run() -> tuple[list[dict[str, object]], list[status.ModelStatus], int]:
        client = async_client(settings)
        registry = Deployment.build(settings).registry
        for model in registry:
            worker = make_worker(client, model, settings, clock=clock)
            await worker.ensure_groups()
            await worker.drain()
        reader = make_reader(client, settings, clock=clock)
        answers = await reader.lookup_many([f"C{n}" for n in range(1, 61)])
        models = await status.collect(client, Deployment.build(settings))
        await stopped(client, settings, "top")
        replayed = await replay.replay(
            make_worker(client, registry.get("top"), settings, clock=clock), force=True
        )
        again = await reader.lookup_many([f"C{n}" for n in range(1, 61)])
        await client.aclose()
        assert core(again) == core(answers)
        return answers, models, replayed.applied  # type: ignore[return-value]

    answers, models, replayed = asyncio.run(run())
    assert replayed == 1500
    assert all((m.applied, m.lag, m.pending) == (1500, 0, 0) for m in models)
    for n, got in enumerate(answers, 1):
        mine = [
            oracle.Ev("0-0", e["cid"], e["gender"], e["ts"]) for e in events if e["cid"] == f"C{n}"
        ]
        want_top = oracle.top(mine)
        top = got["top"]
        assert want_top is not None and top is not None
        assert (top.gender, top.scores) == (want_top.gender, want_top.scores)  # type: ignore[attr-defined]
        want_window = oracle.top_window(mine, clock.now_ms, clock.now_ms, settings.window_days)
        window = got["top7d"]
        assert (window and (window.gender, window.scores)) == (  # type: ignore[attr-defined]
            want_window and (want_window.gender, want_window.scores)
        )


@pytest.mark.slow
def test_http_api_on_the_cluster(cluster: str) -> None:
    """The API on Cluster: redis-py's cluster client (no pipelined lookup connection)."""
    # A prefix of its own: the cluster is shared with the other test of this module.
    settings = Settings(redis_url=cluster, cluster=True, shards=8, batch_size=50, prefix="api")
    loop = asyncio.new_event_loop()
    client = ApiClient(create_app(settings), loop)
    try:
        events = [{"cid": f"K{n}", "gender": "female" if n % 3 else "male"} for n in range(30)]
        accepted = client.request("POST", "/v1/events", json={"events": events})
        assert accepted.status_code == 202 and accepted.json() == {"accepted": 30}

        async def drain() -> None:
            redis_client = async_client(settings)
            for model in Deployment.build(settings).registry:
                worker = make_worker(redis_client, model, settings)
                await worker.ensure_groups()
                await worker.drain()
            await redis_client.aclose()

        loop.run_until_complete(drain())
        single = client.request("GET", "/v1/clients/K1/gender?model=model3")
        assert single.status_code == 200 and single.json()["gender"] == "female"
        every = client.request("GET", "/v1/clients/K3").json()["models"]
        assert every["last"]["gender"] == "male" and every["top"]["scores"] == {"male": 1}
        batch = client.request(
            "POST", "/v1/lookup", json={"cids": ["K0", "nobody", "K2"], "model": "top"}
        ).json()["results"]
        assert [r["gender"] for r in batch] == ["male", None, "female"]
        models = {m["name"]: m for m in client.request("GET", "/v1/models").json()["models"]}
        assert all(m["applied"] == 30 and m["lag"] == 0 for m in models.values())
        assert client.request("GET", "/readyz").status_code == 200
        # erasure: every script's keys share the shard's tag (markers, scrub, dead streams)
        erased = client.request("DELETE", "/v1/clients/K3")
        assert erased.status_code == 202 and erased.json()["keys"] == 2
        assert client.request("GET", "/v1/clients/K3").status_code == 404
        assert client.request("GET", "/v1/clients/K4").status_code == 200

        async def scrub() -> None:
            redis_client = async_client(settings)
            deployment = Deployment.build(settings)
            await erasure.Scrubber(Links.over(redis_client).fast, deployment, "test").drain()
            await redis_client.aclose()

        loop.run_until_complete(scrub())
        done = client.request("GET", erased.json()["status"]).json()
        assert (done["state"], done["entries"], done["dead_letters"]) == ("done", 1, 0)
    finally:
        client.close()
        loop.close()


@pytest.mark.slow
def test_keyed_retries_renew_every_record_and_a_refusal_says_what_was_written(
    cluster: str,
) -> None:
    """Issue 27: an early attempt wrote the key's home part only (its record the key's claim);
    a later one wrote the rest. The home record lives from the later attempt, so another body
    after the early attempt's lifetime is refused with nothing written; with the home record
    lost (a failover), the home part of another body is written first, and the 422 says so."""
    settings = Settings(redis_url=cluster, cluster=True, shards=8, prefix="idem")
    sync = sync_client(settings)
    try:
        deployment = open_deployment_sync(sync, settings)
        ts = int(time.time() * 1000)
        events = [(f"K{n}", "female", ts + n, ts + n) for n in range(40)]
        batch = plan(deployment, events, "retry-1", 60)
        assert batch.first is not None and batch.first.args[2:]  # the home shard has events
        home = write_sync(sync, dataclasses.replace(batch, rest=[]))
        home_record = batch.first.keys[1]
        sync.pexpire(home_record, 200)  # as if the early attempt were 59.8 s ago
        sync.set("{idem}:probe", 1, px=200)
        assert write_sync(sync, batch) == 40 - home
        assert sync.pttl(home_record) > 55_000

        def total() -> int:
            return sum(int(sync.xlen(deployment.keys.stream(s))) for s in deployment.shards)

        wait_until(lambda: not sync.exists("{idem}:probe"), "the early attempt's lifetime")
        other = plan(deployment, [(c, "male", t, w) for c, _, t, w in events], "retry-1", 60)
        with pytest.raises(IdempotencyKeyError, match=r"; nothing was written$"):
            write_sync(sync, other)
        assert total() == 40
        sync.delete(home_record)
        with pytest.raises(IdempotencyKeyError, match=f"; {home} of its 40 events were written"):
            write_sync(sync, other)
        assert total() == 40 + home
    finally:
        sync.close()

"""`genderd worker --metrics-port` (SPEC §8): the worker's own counters, latency and process
metrics over HTTP, from a real worker process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from genderd.bundled import free_port
from genderd.keys import Keys, shard_of
from genderd.settings import Settings

from .support.factories import make_worker
from .support.runtime import Loop
from .test_e2e_worker import log_path, stop_process, worker_env, worker_log, write

pytestmark = pytest.mark.slow
TIMEOUT_S = 30.0


def _samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_worker_serves_its_metrics(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"genders": ("female", "male")})
    url = settings.redis_url or ""
    port = free_port()
    events = [(f"C{n % 7}", "male" if n % 3 else "female") for n in range(40)]
    write(settings, events)
    client = redis.Redis.from_url(url)
    keys = Keys(settings.prefix)
    client.xadd(keys.stream(shard_of("C1", settings.shards)), {"cid": "C1", "gender": "robot"})
    with log_path(tmp_path, "top", "m").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "genderd",
                "worker",
                "--model",
                "top",
                "--metrics-port",
                str(port),
            ],
            env=worker_env(url),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        top = frozenset({("model", "top")})
        deadline = time.monotonic() + TIMEOUT_S
        got: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        # (lag and pending are read every few seconds: the first read may predate the work)
        while (
            got.get(("genderd_events_applied_total", top)) != len(events)
            or got.get(("genderd_lag", top)) != 0
            or got.get(("genderd_pending", top)) != 0
        ):
            assert process.poll() is None, worker_log(tmp_path, "top", "m")
            assert time.monotonic() < deadline, (got, worker_log(tmp_path, "top", "m"))
            time.sleep(0.1)
            try:
                got = _samples(port)
            except OSError:
                continue
        dead = frozenset({("model", "top"), ("reason", "unknown_gender")})
        assert got[("genderd_events_dead_total", dead)] == 1
        assert got[("genderd_event_to_answer_seconds_count", top)] == len(events)
        assert got[("genderd_event_to_answer_seconds_bucket", top | {("le", "+Inf")})] == len(
            events
        )
        assert got[("genderd_batch_duration_seconds_count", top)] >= 1
        assert got[("process_cpu_seconds_total", frozenset())] > 0
    finally:
        stop_process(process)
        client.close()


def test_a_taken_metrics_port_is_one_line(settings: Settings) -> None:
    from click.testing import CliRunner

    from genderd.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main,
            ["worker", "--model", "top", "--metrics-port", str(port)],
            env={"GENDERD_REDIS_URL": settings.redis_url or ""},
        )
    assert result.exit_code == 2
    assert f"--metrics-port {port} is taken" in result.output


def test_a_long_running_worker_keeps_counts_not_events(aio: Loop, sync_redis: redis.Redis) -> None:
    """What the metrics need per batch (the acknowledged events) is dropped after each batch:
    a worker's running totals stay counts however long it runs."""
    keys = Keys(aio.settings.prefix)
    for n in range(30):
        sync_redis.xadd(keys.stream(n % aio.settings.shards), {"cid": f"C{n}", "gender": "male"})
    worker = make_worker(aio.client, "top", aio.settings)
    aio.run(worker.ensure_groups())
    outcome = aio.run(worker.drain())
    assert outcome.applied + outcome.dead == 30
    assert outcome.done == [] and worker.totals.done == []

"""The Locust load test runs clean against a real `genderd serve` (a short smoke run).

Speed is not asserted here (bench/api.py measures it); this proves the locustfile works
against the API as it is: every request answered, no failures.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from genderd.bundled import free_port
from genderd.producer import synthetic
from genderd.settings import Settings

from .support.factories import make_producer

LOCUSTFILE = Path(__file__).parent.parent / "loadtests" / "locustfile.py"
READY_TIMEOUT_S = 30.0
RUN_S = 6


@pytest.mark.slow
def test_locustfile_runs_without_failures(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    settings = Settings(redis_url=redis_url)
    with make_producer(sync_redis, settings) as producer:
        for event in synthetic(2_000, 100, settings.genders, days=3, seed=2):
            producer.send_fields(event)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDERD_")}
    env.update(GENDERD_REDIS_URL=redis_url, GENDERD_CLIENTS="100")
    api = subprocess.Popen(
        [sys.executable, "-m", "genderd", "--log-level", "WARNING", "serve", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the API did not become ready"
                time.sleep(0.1)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--host",
                f"http://127.0.0.1:{port}",
                "--headless",
                "--users",
                "8",
                "--spawn-rate",
                "8",
                "--run-time",
                f"{RUN_S}s",
                "--csv",
                str(tmp_path / "run"),
                "--only-summary",
                "--exit-code-on-error",
                "1",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_S + 60,
            stdin=subprocess.DEVNULL,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        with (tmp_path / "run_stats.csv").open() as stats:
            rows = {row["Name"]: row for row in csv.DictReader(stats)}
        total = rows["Aggregated"]
        assert int(total["Request Count"]) > 50
        assert int(total["Failure Count"]) == 0
        assert int(rows["/v1/clients/[cid]/gender"]["Request Count"]) > 0
        assert int(rows["/v1/events"]["Request Count"]) > 0
    finally:
        api.terminate()
        try:
            api.wait(20)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()

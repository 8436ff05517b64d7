"""A model from a file outside the package (SPEC §7, issue 9's done-when): named in
GENDERD_PLUGINS, applied by two competing `genderd worker` processes while one is killed -9
again and again; every client's answer over HTTP equals a reference computed independently."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from genderd.api import create_app
from genderd.keys import Keys
from genderd.settings import Settings

from .support.api_helpers import ApiClient
from .support.runtime import Loop
from .test_e2e_worker import log_path, plan_events, stop_process, worker_env, worker_log, write

pytestmark = pytest.mark.fault

MODEL_FILE = """
from genderd.models import PythonModel


class Tally(PythonModel):
    name = "tally"
    description = "female after an even number of page views"

    def identify_gender(self, state, event):
        state["n"] = state.get("n", 0) + 1
        return "female" if state["n"] % 2 == 0 else "male"

    def scores(self, state):
        return {"n": state["n"]}
"""
EVENTS = 2_400
SLICE = 20  # events written at a time; the victim is killed when it holds some
KILLS = 3
CATCH_UP_TIMEOUT_S = 90.0
START_TIMEOUT_S = 60.0


def _start(url: str, log_dir: Path, tag: str) -> subprocess.Popen[bytes]:
    with log_path(log_dir, "tally", tag).open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "genderd", "worker", "--model", "tally"],
            env=worker_env(url, GENDERD_PLUGINS="tally_model:Tally"),
            cwd=log_dir,  # the plug-in's file is here, and only here
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _pending_of(client: redis.Redis, keys: Keys, shards: int, pid: int) -> int:
    """Entries a worker process holds (its consumer is named host-pid)."""
    held = 0
    for shard in range(shards):
        if not client.exists(keys.stream(shard)):
            continue
        try:
            summary = client.xpending(keys.stream(shard), "tally")
        except redis.ResponseError:  # no group yet
            continue
        for consumer in summary.get("consumers") or []:
            if consumer["name"].decode().endswith(f"-{pid}"):
                held += int(consumer["pending"])
    return held


def _wait_consuming(
    client: redis.Redis, keys: Keys, worker: subprocess.Popen[bytes], log_dir: Path, tag: str
) -> None:
    """Until ``worker`` heartbeats as a running consumer of tally (its consumer is host-pid)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(
        name.decode().endswith(f"-{worker.pid}") and beat.decode().endswith(" running")
        for name, beat in client.hgetall(keys.workers("tally")).items()
    ):
        assert worker.poll() is None, worker_log(log_dir, "tally", tag)
        assert time.monotonic() < deadline, worker_log(log_dir, "tally", tag)
        time.sleep(0.05)


def _applied_and_pending(client: redis.Redis, keys: Keys, shards: int) -> tuple[int, int]:
    applied = pending = 0
    for shard in range(shards):
        applied += int(client.hget(keys.stats(shard), "tally:applied") or 0)
        groups = (
            client.xinfo_groups(keys.stream(shard)) if client.exists(keys.stream(shard)) else []
        )
        pending += sum(int(g["pending"]) for g in groups if g["name"] == b"tally")
    return applied, pending


def test_a_plugin_model_killed_repeatedly_answers_like_its_reference(
    settings: Settings, tmp_path: Path, aio: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tally_model.py").write_text(MODEL_FILE)
    url = settings.redis_url or ""
    settings = settings.model_copy(update={"genders": ("female", "male")})
    plan = plan_events(EVENTS, 150, seed=9)
    keys = Keys(settings.prefix)
    client = redis.Redis.from_url(url)
    with ExitStack() as stack:
        steady = _start(url, tmp_path, "steady")
        stack.callback(stop_process, steady)
        victim = _start(url, tmp_path, "victim-0")
        stack.callback(lambda: stop_process(victim))
        held = kills = 0  # entries the victim held (read, not acknowledged) when killed
        for start in range(0, len(plan), SLICE):
            if kills < KILLS:  # each victim takes part from its start, however slow it is
                _wait_consuming(client, keys, victim, tmp_path, f"victim-{kills}")
            write(settings, plan[start : start + SLICE])
            pending = _pending_of(client, keys, settings.shards, victim.pid)
            if pending and kills < KILLS:
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                held, kills = held + pending, kills + 1
                victim = _start(url, tmp_path, f"victim-{kills}")
            time.sleep(0.01)
        assert kills == KILLS and held > 0, (kills, held)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while _applied_and_pending(client, keys, settings.shards) != (len(plan), 0):
            assert steady.poll() is None, worker_log(tmp_path, "tally", "steady")
            assert time.monotonic() < deadline, (
                _applied_and_pending(client, keys, settings.shards),
                worker_log(tmp_path, "tally", "steady"),
            )
            time.sleep(0.1)

    # The API, loading the same plug-in from the same directory, answers each client.
    monkeypatch.chdir(tmp_path)
    api = ApiClient(
        create_app(settings.model_copy(update={"plugins": ("tally_model:Tally",)})), aio.loop
    )
    try:
        for cid, n in Counter(cid for cid, _ in plan).items():
            response = api.get(f"/v1/clients/{cid}/gender?model=tally")
            assert response.status_code == 200, (cid, response.text)
            body = response.json()
            assert (body["gender"], body["scores"]) == (
                "female" if n % 2 == 0 else "male",
                {"n": n},
            ), cid
    finally:
        api.close()
        client.close()

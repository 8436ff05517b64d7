"""`genderd replay` while `genderd up` runs (issue 19): the replay pauses the model's workers
instead of racing them, they are never restarted, and afterwards every model's answers are
the oracle's over the events written (none lost, none counted twice), new events included."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from genderd.keys import Keys
from genderd.settings import Settings

from .support import oracle, scenario
from .support.held_replay import HELD
from .support.runtime import FakeClock, Loop
from .test_e2e_up import (
    MODELS,
    Up,
    caught_up,
    clean_env,
    genderd,
    genderd_up,
    server_state,
    status_by_model,
)

pytestmark = pytest.mark.slow

CLIENTS = 60
WORKERS_PER_MODEL = 2
REPLAY_TIMEOUT_S = 120.0


def produce(workdir: Path, count: int, seed: int, *more: str) -> None:
    done = genderd(
        workdir,
        "produce",
        "--count",
        str(count),
        "--clients",
        str(CLIENTS),
        "--seed",
        str(seed),
        "--quiet",
        *more,
    )
    assert done.returncode == 0, done.stderr


def replay(workdir: Path, model: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genderd", "replay", "--model", model],
        cwd=workdir,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=REPLAY_TIMEOUT_S,
        check=False,
    )


def written(loop: Loop) -> list[oracle.Ev]:
    """Every event in the shard streams (nothing is trimmed here), for the oracle."""
    keys = Keys(loop.settings.prefix)
    events = []
    for shard in range(loop.settings.shards):
        for entry_id, fields in loop.run(loop.client.xrange(keys.stream(shard))):
            eid = entry_id.decode()
            ts = int(fields.get(b"ts", eid.split("-")[0]))
            gender = fields[b"gender"].decode().strip().lower()
            events.append(oracle.Ev(eid, fields[b"cid"].decode(), gender, ts))
    return events


def assert_answers_are_the_oracles(workdir: Path) -> None:
    state = server_state(workdir)
    assert state is not None
    # shards and genders: what `up` runs with (no GENDERD_* settings)
    loop = Loop(Settings(redis_url=state["url"]))
    try:
        events = written(loop)
        cids = sorted({e.cid for e in events})
        now = FakeClock(max(e.ts for e in events) + 1)
        got = loop.run(scenario.answers(loop.client, loop.settings, loop.registry, now, cids))
        problems = []
        for cid, answer in zip(cids, got, strict=True):
            want = scenario.expected(events, cid, now.now_ms, now.now_ms, 7)
            problems += [f"{cid}: {p}" for p in scenario.mismatches(answer, want)]
        assert problems == []
    finally:
        loop.close()


def wait_caught_up(up: Up, total: int) -> None:
    up.wait_until(lambda: caught_up(up.workdir, total), f"{total} applied by every model", 90.0)


def test_replay_under_up_pauses_the_workers_and_counts_each_event_once(tmp_path: Path) -> None:
    with genderd_up(tmp_path, "--workers", str(WORKERS_PER_MODEL), "--no-api") as up:
        up.wait_ready()
        produce(tmp_path, 3000, 11)
        wait_caught_up(up, 3000)
        workers = up.workers()
        assert len(workers) == WORKERS_PER_MODEL * len(MODELS)

        # traffic keeps coming while `top` is replayed
        paced = ("--count", "1500", "--clients", str(CLIENTS), "--seed", "12", "--rate", "500")
        traffic = subprocess.Popen(
            [sys.executable, "-m", "genderd", "produce", *paced, "--quiet"],
            cwd=tmp_path,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            done = replay(tmp_path, "top")
        finally:
            try:
                _, traffic_err = traffic.communicate(timeout=REPLAY_TIMEOUT_S)
            finally:  # reaped, its pipe closed, whatever happened
                if traffic.poll() is None:
                    traffic.kill()
                    traffic.communicate()
        assert traffic.returncode == 0, traffic_err
        assert done.returncode == 0, done.stdout + done.stderr + up.output()
        host = socket.gethostname()
        top_workers = sorted(f"{host}-{pid}" for pid, m in workers.items() if m == "top")
        assert f"paused the workers of the model: {', '.join(top_workers)}" in done.stdout
        assert "replayed:" in done.stdout

        # and `last` too, then events after both replays
        again = replay(tmp_path, "last")
        assert again.returncode == 0, again.stdout + again.stderr
        produce(tmp_path, 500, 13)
        wait_caught_up(up, 5000)

        assert up.workers() == workers  # the same processes: none stopped or restarted
        errors = up.err.read_text()
        assert "recreating" not in errors and "exited with" not in errors, up.output()
        assert "paused" in errors and "consuming again" in errors  # the workers' own log
        status = status_by_model(tmp_path)
        for model in MODELS:
            assert status[model]["applied"] == 5000  # replayed or not: each event once
            assert status[model]["dead"] == 0 and status[model]["paused"] is False
        assert_answers_are_the_oracles(tmp_path)
        up.interrupt_and_expect_clean_stop()


def test_a_replay_killed_mid_rebuild_under_up_leaves_the_rest_to_the_workers(
    tmp_path: Path,
) -> None:
    """kill -9 of `genderd replay` while it re-applies the history: its pause expires, the
    workers (never restarted) resume on the recreated groups, reclaim what it held pending and
    apply the rest, each event once. The replay is held after its first re-applied batch
    (tests.support.held_replay), so that it is killed mid-rebuild however fast it runs."""
    total = 3_000
    quick = {"GENDERD_CLAIM_IDLE_MS": "1000"}  # the replay's batch in hand, reclaimed soon
    with genderd_up(tmp_path, "--no-api", settings=quick) as up:
        up.wait_ready()
        produce(tmp_path, total, 21)
        wait_caught_up(up, total)
        workers = up.workers()
        state = server_state(tmp_path)
        assert state is not None
        keys = Keys()
        client = redis.Redis.from_url(state["url"])
        shards = Settings().shards

        def top_applied() -> int:
            return sum(int(client.hget(keys.stats(s), "top:applied") or 0) for s in range(shards))

        said = tmp_path / "replay.out"
        with said.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.held_replay", "replay", "--model", "top"],
                cwd=tmp_path,
                env=clean_env() | {"PYTHONPATH": str(Path(__file__).parents[1])},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:

            def held() -> bool:
                assert process.poll() is None, said.read_text()
                return HELD in said.read_text()

            up.wait_until(held, "the replay held after its first re-applied batch")
            # re-applying: the pause held, the groups back (no marker), the count rebuilding
            assert client.exists(keys.pause("top")) and not client.exists(keys.rebuilding("top"))
            assert 0 < top_applied() < total
            process.send_signal(signal.SIGKILL)
            process.wait(REPLAY_TIMEOUT_S)
            assert process.returncode == -signal.SIGKILL, said.read_text()
            assert top_applied() < total
            assert status_by_model(tmp_path)["top"]["paused"] is True  # until the TTL ends
            wait_caught_up(up, total)
            assert not client.exists(keys.pause("top"), keys.rebuilding("top"))
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(REPLAY_TIMEOUT_S)
            client.close()
        produce(tmp_path, 300, 22)
        wait_caught_up(up, total + 300)
        assert up.workers() == workers
        errors = up.err.read_text()
        assert "recreating" not in errors and "exited with" not in errors, up.output()
        assert_answers_are_the_oracles(tmp_path)
        up.interrupt_and_expect_clean_stop()

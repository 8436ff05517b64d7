"""Offline equals live (SPEC §14, issue 26): `genderd evaluate --order arrival` over the same
streams and window, with the same delay rule, gives exactly the counts the workers graded, for
the built-ins, a `TopWindow` plug-in and an order-dependent `PythonModel` whose worker is
killed -9 with a batch in hand (no event graded twice, none lost).

The events arrive out of time order (up to 4 minutes late, one in ten more than the 5-minute
delay limit: applied, not graded) with entry ids of their arrival times.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from genderd.cli import main
from genderd.keys import Keys, shard_of
from genderd.settings import Settings

from .test_e2e_worker import log_path, stop_process, worker_env, worker_log

pytestmark = [pytest.mark.slow, pytest.mark.fault]

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = "tests.support.pymodels:Top3,tests.support.pymodels:HeldStreak"
MODELS = ("last", "top", "top7d", "recency", "top3d", "held-streak")
HELD = "held-streak"
MINUTE = 60_000
MAX_DELAY_MS = 300_000
CLIENTS = 150
CATCH_UP_TIMEOUT_S = 120.0
HOLD_TIMEOUT_S = 60.0
CLAIM_IDLE_MS = 1_000  # worker_env's GENDERD_CLAIM_IDLE_MS


def history(now: int) -> list[tuple[str, str, int, int]]:
    """(cid, gender, ts, arrival ms) of events that arrived over the last 40 minutes."""
    rnd = random.Random(26)
    events = []
    for c in range(CLIENTS):
        home = rnd.choice(("female", "male"))
        for _ in range(rnd.randint(2, 16)):
            arrival = now - rnd.randrange(60_000, 40 * MINUTE)
            late = rnd.random() < 0.1
            delay = rnd.randrange(6 * MINUTE, 20 * MINUTE) if late else rnd.randrange(4 * MINUTE)
            gender = home if rnd.random() < 0.7 else rnd.choice(("female", "male"))
            events.append((f"o{c}", gender, arrival - delay, arrival))
    # the held client's events, in the middle of the stream
    events += [("hold-me", "male", now - 20 * MINUTE - k, now - 20 * MINUTE + k) for k in range(3)]
    return sorted(events, key=lambda e: e[3])


def write(client: redis.Redis, settings: Settings, events: list[tuple[str, str, int, int]]) -> None:
    keys = Keys(settings.prefix)
    for seq, (cid, gender, ts, arrival) in enumerate(events):
        stream = keys.stream(shard_of(cid, settings.shards))
        client.xadd(stream, {"cid": cid, "gender": gender, "ts": ts}, id=f"{arrival}-{seq}")


def start(model: str, url: str, log_dir: Path, tag: str, **env: str) -> subprocess.Popen[bytes]:
    with log_path(log_dir, model, tag).open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "genderd", "worker", "--model", model],
            env=worker_env(url, GENDERD_PLUGINS=PLUGINS, **env),
            cwd=ROOT,  # tests.support.pymodels is importable from here
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def idle_enough(client: redis.Redis, keys: Keys, shards: int) -> bool:
    """Every entry pending for the held model has been idle past the claim time (1 s)."""
    for shard in range(shards):
        entries = client.xpending_range(keys.stream(shard), HELD, "-", "+", 1_000)
        if any(int(e["time_since_delivered"]) <= CLAIM_IDLE_MS for e in entries):
            return False
    return True


def caught_up(client: redis.Redis, keys: Keys, shards: int, total: int) -> bool:
    """Every model applied every entry, and nothing is pending."""
    for model in MODELS:
        applied = sum(
            int(client.hget(keys.stats(s), f"{model}:applied") or 0) for s in range(shards)
        )
        if applied != total:
            return False
    for shard in range(shards):
        if client.exists(keys.stream(shard)):
            if any(int(g["pending"]) for g in client.xinfo_groups(keys.stream(shard))):
                return False
    return True


def cli(*args: str, url: str) -> dict:  # type: ignore[type-arg]
    env = {"GENDERD_REDIS_URL": url, "GENDERD_SHARDS": "4", "GENDERD_PLUGINS": PLUGINS}
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_evaluate_in_arrival_order_gives_the_live_counts_through_a_kill_9(
    settings: Settings, tmp_path: Path
) -> None:
    url = settings.redis_url or ""
    settings = settings.model_copy(update={"genders": ("female", "male")})
    keys = Keys(settings.prefix)
    client = redis.Redis.from_url(url)
    events = history(int(time.time() * 1000))
    write(client, settings, events)
    hold = tmp_path / "hold"
    hold.touch()
    with ExitStack() as stack:
        stack.callback(client.close)
        for model in MODELS:
            if model != HELD:
                worker = start(model, url, tmp_path, "1")
                stack.callback(stop_process, worker)
        # the held model's worker holds the batch with hold-me's event: killed -9 with it
        victim = start(
            HELD,
            url,
            tmp_path,
            "victim",
            GENDERD_TEST_HOLD=str(hold),
            GENDERD_MODEL_TIMEOUT_MS="120000",
        )
        stack.callback(stop_process, victim)
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        while not Path(f"{hold}.held").exists():
            assert victim.poll() is None, worker_log(tmp_path, HELD, "victim")
            assert time.monotonic() < deadline, worker_log(tmp_path, HELD, "victim")
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        hold.unlink()
        # its successor takes over what it held before it reads anything new (its first step
        # reclaims entries idle for GENDERD_CLAIM_IDLE_MS): each client's events keep their
        # arrival order, as `evaluate --order arrival` applies them
        deadline = time.monotonic() + HOLD_TIMEOUT_S
        while not idle_enough(client, keys, settings.shards):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        successor = start(HELD, url, tmp_path, "successor")
        stack.callback(stop_process, successor)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while not caught_up(client, keys, settings.shards, len(events)):
            logs = "\n".join(worker_log(tmp_path, m, "1") for m in MODELS if m != HELD)
            assert time.monotonic() < deadline, logs + worker_log(tmp_path, HELD, "successor")
            assert successor.poll() is None, worker_log(tmp_path, HELD, "successor")
            time.sleep(0.1)

    live = cli("grades", "--json", url=url)
    since, until = str(live["since_ms"]), str(live["until_ms"])
    offline = cli(
        "evaluate", "--order", "arrival", "--max-delay", "300",
        "--since", since, "--until", until, "--json", url=url,
    )  # fmt: skip
    scores = {row["model"]: row for row in offline["models"]}
    gradable = sum(1 for _, _, ts, arrival in events if arrival - ts <= MAX_DELAY_MS)
    for model in MODELS:
        graded = live["models"][model]
        row = scores[model]
        correct = round((row["accuracy_all"] or 0.0) * row["events"])
        assert (graded["events"], graded["predicted"], graded["correct"]) == (
            row["events"],
            row["predicted"],
            correct,
        ), model
        assert graded["events"] == gradable, model  # each graded once, none lost
    assert live["models"][HELD]["predicted"] > 0 and live["models"]["top3d"]["correct"] > 0

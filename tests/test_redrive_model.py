"""`genderd dead redrive --model M`: M's failures applied to M only, exactly once, however the
re-drive is interrupted or repeated, and with an erased client never brought back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result

from genderd import catalog, deadletters, erasure, streams
from genderd.cli import main
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of
from genderd.replay import replay
from genderd.settings import Settings
from genderd.status import collect
from genderd.transport import Links

from .support import paced_redrive
from .support.factories import make_worker, stopped
from .support.pymodels import Flaky
from .support.runtime import FakeClock, Loop

PLUGIN = "tests.support.pymodels:Flaky"
GOOD = ["ok1", "ok2", "ok:3"]
BAD = ["bad1", "bad2", "bad3", "bad4"]
ERASED = "bad-erased"
EVENTS_PER_CLIENT = 3
KILL_WAIT_S = 60.0


@pytest.fixture
def flaky_loop(settings: Settings) -> Iterator[Loop]:
    Flaky.fixed = False
    loop = Loop(settings.model_copy(update={"plugins": (PLUGIN,)}))
    yield loop
    loop.close()
    Flaky.fixed = False


def cli(loop: Loop, *args: str) -> Result:
    s = loop.settings
    env = {
        "GENDERD_REDIS_URL": s.redis_url or "",
        "GENDERD_SHARDS": str(s.shards),
        "GENDERD_PLUGINS": PLUGIN,
        "GENDERD_CLAIM_IDLE_MS": str(s.claim_idle_ms),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def produce(sync_redis: redis.Redis, settings: Settings, now: int) -> None:
    keys = Keys(settings.prefix)
    genders = ["female", "male", "female"]
    for n in range(EVENTS_PER_CLIENT):
        for cid in [*GOOD, *BAD, ERASED]:
            shard = shard_of(cid, settings.shards)
            sync_redis.xadd(keys.stream(shard), {"cid": cid, "gender": genders[n], "ts": now + n})


def drain_all(loop: Loop, clock: FakeClock) -> None:
    for model in loop.registry:
        worker = make_worker(loop.client, model.name, loop.settings, clock=clock)
        loop.run(worker.ensure_groups())
        loop.run(worker.drain())


def dead_by_model(loop: Loop, deployment: Deployment) -> Counter[str]:
    async def count() -> Counter[str]:
        return Counter([letter.model async for letter in deadletters.scan(loop.client, deployment)])

    return loop.run(count())


def assert_status_agrees_with_dead(loop: Loop, deployment: Deployment) -> None:
    listed = dead_by_model(loop, deployment)
    status = {m.name: m.dead for m in loop.run(collect(loop.client, deployment))}
    assert status == {name: listed.get(name, 0) for name in status}


def others_applied(loop: Loop, deployment: Deployment) -> dict[str, int]:
    status = loop.run(collect(loop.client, deployment))
    return {m.name: m.applied for m in status if m.name != "flaky"}


def flaky_count(sync_redis: redis.Redis, settings: Settings, cid: str) -> int | None:
    raw = sync_redis.hget(
        Keys(settings.prefix).result(shard_of(cid, settings.shards), cid), "flaky:j"
    )
    return None if raw is None else int(raw.decode().split(":")[1].strip(" }"))


def test_redrive_applies_a_models_failures_to_it_once_and_to_no_other(
    flaky_loop: Loop, sync_redis: redis.Redis
) -> None:
    loop, settings = flaky_loop, flaky_loop.settings
    clock = FakeClock(wall_clock_ms())
    deployment = Deployment.build(settings, clock)
    links = Links.over(loop.client)
    produce(sync_redis, settings, clock.now_ms - 1_000)
    drain_all(loop, clock)
    failed = (len(BAD) + 1) * EVENTS_PER_CLIENT
    assert dead_by_model(loop, deployment) == {"flaky": failed}  # the others applied them all
    assert_status_agrees_with_dead(loop, deployment)
    before = others_applied(loop, deployment)
    results_before = {
        cid: sync_redis.hgetall(Keys().result(shard_of(cid, settings.shards), cid))
        for cid in GOOD + BAD
    }
    Flaky.fixed = True  # the model is fixed (and deployed again)

    # 1. A re-drive interrupted after its first page: only those dead letters moved.
    async def first_page() -> list[str]:
        chosen = [
            letter async for letter in deadletters.scan(loop.client, deployment, model="flaky")
        ]
        done = await deadletters.redrive_model(links.fast, deployment, "flaky", chosen[:5])
        return done.redriven

    assert len(loop.run(first_page())) == 5
    assert_status_agrees_with_dead(loop, deployment)
    # 2. A worker of flaky takes them and is killed -9 before its commit: they stay pending
    # under it (its state change and XACK are one call, so it did all or nothing).
    taken = 0
    for shard in deployment.shards:
        claimed = loop.run(
            streams.reclaim(loop.client, Keys().stream(shard), "flaky", "killed-worker", 0, 100)
        )
        taken += len(claimed.entries)
    assert taken == 5
    # 3. The erased client: some of its failures re-driven (pending), some still dead letters;
    # its scrub waits (no worker runs here).
    loop.run(erasure.erase(links.fast, deployment, [ERASED]))
    # 4. The command repeated (twice): each remaining dead letter re-driven once.
    done = cli(loop, "dead", "redrive", "--model", "flaky", "--reason", "model_error")
    assert done.exit_code == 0, done.output
    assert "re-drove" in done.output and "to flaky only" in done.output
    again = cli(loop, "dead", "redrive", "--model", "flaky")
    assert again.exit_code == 0 and "re-drove 0 dead letters" in again.output
    assert dead_by_model(loop, deployment) == {}
    # 5. flaky's live worker reclaims what was re-driven and what the killed worker held.
    time.sleep(settings.claim_idle_ms / 1000 * 1.5)
    worker = make_worker(loop.client, "flaky", settings, clock=clock)
    for shard in deployment.shards:
        loop.run(worker.reclaim(shard))
    loop.run(worker.drain())
    for cid in GOOD + BAD:  # the oracle: each event once
        assert flaky_count(sync_redis, settings, cid) == EVENTS_PER_CLIENT, cid
    assert others_applied(loop, deployment) == before  # zero times by the others
    for cid in GOOD + BAD:
        after = sync_redis.hgetall(Keys().result(shard_of(cid, settings.shards), cid))
        others = {k: v for k, v in after.items() if not k.startswith(b"flaky")}
        assert others == {
            k: v for k, v in results_before[cid].items() if not k.startswith(b"flaky")
        }
    # the erased client's scrub had not run: its re-driven entries were dropped all the same
    assert not sync_redis.exists(Keys().result(shard_of(ERASED, settings.shards), ERASED))
    # 6. The scrub runs: no entry of the erased client is left anywhere.
    loop.run(erasure.Scrubber(links.fast, deployment, "test").drain())
    for key in sync_redis.scan_iter():
        if sync_redis.type(key) == b"stream":
            for _, fields in sync_redis.xrange(key):
                assert fields.get(b"cid") != ERASED.encode(), key
    assert_status_agrees_with_dead(loop, deployment)
    pending = sum(
        info.pending
        for shard in deployment.shards
        for info in loop.run(streams.groups(loop.client, Keys(), shard))
    )
    assert pending == 0


def test_status_and_dead_agree_after_a_replay(flaky_loop: Loop, sync_redis: redis.Redis) -> None:
    loop, settings = flaky_loop, flaky_loop.settings
    clock = FakeClock(wall_clock_ms())
    deployment = Deployment.build(settings, clock)
    produce(sync_redis, settings, clock.now_ms - 1_000)
    drain_all(loop, clock)
    failed = (len(BAD) + 1) * EVENTS_PER_CLIENT
    # an old dead letter whose entry is trimmed away: kept and counted by the replay
    keys = Keys()
    sync_redis.xadd(
        keys.dead(0),
        {
            "cid": "gone",
            "gender": "male",
            "_id": "1-0",
            "_model": "flaky",
            "_reason": "model_error",
        },
    )
    sync_redis.hincrby(keys.stats(0), "flaky:dead", 1)
    worker = make_worker(loop.client, "flaky", settings, clock=clock)
    loop.run(stopped(loop.client, settings, "flaky"))
    loop.run(replay(worker, force=True))  # still broken: the same failures, once each
    assert dead_by_model(loop, deployment) == {"flaky": failed + 1}
    assert_status_agrees_with_dead(loop, deployment)
    Flaky.fixed = True
    loop.run(stopped(loop.client, settings, "flaky"))
    loop.run(replay(make_worker(loop.client, "flaky", settings, clock=clock), force=True))
    assert dead_by_model(loop, deployment) == {"flaky": 1}
    assert_status_agrees_with_dead(loop, deployment)
    for cid in BAD:
        assert flaky_count(sync_redis, settings, cid) == EVENTS_PER_CLIENT


def test_redrive_model_leaves_what_it_cannot_redrive(
    flaky_loop: Loop, sync_redis: redis.Redis
) -> None:
    loop = flaky_loop
    keys = Keys()
    sync_redis.xadd(keys.stream(0), {"cid": "x"})  # a group to claim into
    loop.run(streams.ensure_group(loop.client, keys.stream(0), "flaky"))
    for fields in (
        {"cid": "bad9", "gender": "unicorn", "_id": "5-0", "_reason": "unknown_gender"},
        {"cid": "bad9", "gender": "male", "_id": "6-0", "_reason": "model_error"},
    ):
        cid_shard = shard_of("bad9", loop.settings.shards)
        sync_redis.xadd(keys.dead(cid_shard), {**fields, "_model": "flaky"})
    dry = cli(loop, "dead", "redrive", "--model", "flaky", "--dry-run")
    assert "would re-drive 1 dead letters" in dry.output and dry.exit_code == 1
    result = cli(loop, "dead", "redrive", "--model", "flaky", "--since", "1d")
    assert result.exit_code == 1
    assert "left 5-0: still invalid: unknown_gender" in result.output
    assert "left 6-0: no longer in its shard stream" in result.output
    assert sync_redis.xlen(keys.dead(shard_of("bad9", loop.settings.shards))) == 2
    none = cli(loop, "dead", "redrive", "--model", "flaky", "--since", "2999-01-01")
    assert "re-drove 0 dead letters" in none.output


KILL_BAD_CLIENTS = 300
KILL_EVENTS_PER_CLIENT = 10
KILL_GOOD_CLIENTS = 40


def redrive_process(loop: Loop, *extra: str, hold: str | None = None) -> list[str]:
    """The command line of a real `genderd dead redrive --model flaky` process (paced;
    ``hold``: paced_redrive's --hold-after=N)."""
    s = loop.settings
    return [
        sys.executable,
        "-m",
        "tests.support.paced_redrive",
        *([hold] if hold else []),
        "--redis-url",
        s.redis_url or "",
        "dead",
        "redrive",
        "--model",
        "flaky",
        *extra,
    ]


def redrive_env(loop: Loop) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENDERD_")}
    env.update(
        GENDERD_SHARDS=str(loop.settings.shards),
        GENDERD_GENDERS=",".join(loop.settings.genders),
        GENDERD_PLUGINS=PLUGIN,
        GENDERD_CLAIM_IDLE_MS=str(loop.settings.claim_idle_ms),
    )
    return env


def dead_total(sync_redis: redis.Redis, settings: Settings) -> int:
    keys = Keys(settings.prefix)
    return sum(int(sync_redis.xlen(keys.dead(s))) for s in range(settings.shards))


@pytest.mark.slow
def test_a_redrive_killed_mid_way_and_repeated_applies_each_entry_once(
    flaky_loop: Loop, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """kill -9 of a real `dead redrive --model flaky` part-way through thousands of dead
    letters, then the command again, then flaky's workers: each entry applied once by flaky and
    not again by any other model; `status` and `dead` agree."""
    loop, settings = flaky_loop, flaky_loop.settings
    clock = FakeClock(wall_clock_ms())
    deployment = Deployment.build(settings, clock)
    keys = Keys(settings.prefix)
    bad = [f"bad{n}" for n in range(KILL_BAD_CLIENTS)]
    good = [f"good{n}" for n in range(KILL_GOOD_CLIENTS)]
    pipe = sync_redis.pipeline(transaction=False)
    for n in range(KILL_EVENTS_PER_CLIENT):
        for cid in bad + good:
            gender = ("female", "male", "kids")[(n + len(cid)) % 3]
            fields = {"cid": cid, "gender": gender, "ts": clock.now_ms - 10_000 + n}
            pipe.xadd(keys.stream(shard_of(cid, settings.shards)), fields)
    pipe.execute()
    total = (KILL_BAD_CLIENTS + KILL_GOOD_CLIENTS) * KILL_EVENTS_PER_CLIENT
    failed = KILL_BAD_CLIENTS * KILL_EVENTS_PER_CLIENT
    drain_all(loop, clock)
    assert dead_by_model(loop, deployment) == {"flaky": failed}
    assert_status_agrees_with_dead(loop, deployment)
    before = others_applied(loop, deployment)
    assert before == {name: total for name in before}
    results_before = {
        cid: {
            k: v
            for k, v in sync_redis.hgetall(keys.result(shard_of(cid, settings.shards), cid)).items()
            if not k.startswith(b"flaky")
        }
        for cid in bad
    }
    Flaky.fixed = True

    # 1. a real re-drive, killed -9 once it has moved some pages and not all (held there)
    said = tmp_path / "redrive.out"
    hold = f"{paced_redrive.HOLD_FLAG}{failed // deadletters.REDRIVE_PAGE // 2}"
    with said.open("wb") as out:
        process = subprocess.Popen(
            redrive_process(loop, hold=hold),
            env=redrive_env(loop),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + KILL_WAIT_S
        while paced_redrive.HELD not in said.read_text():
            assert process.poll() is None, said.read_text()
            assert time.monotonic() < deadline, "the re-drive was not held part-way"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(KILL_WAIT_S)
    assert process.returncode == -signal.SIGKILL
    left = dead_total(sync_redis, settings)
    assert 0 < left < failed  # part-way
    assert_status_agrees_with_dead(loop, deployment)  # each step moved and counted at once

    # 2. the command again, to its end: only what the killed one had not moved
    again = subprocess.run(
        redrive_process(loop, "--reason", "model_error"),
        env=redrive_env(loop),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=KILL_WAIT_S,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert f"re-drove {left} dead letters" in again.stdout, again.stdout
    assert dead_by_model(loop, deployment) == {}

    # 3. flaky's workers take every re-driven entry (pending under genderd-redrive) once
    time.sleep(settings.claim_idle_ms / 1000 * 1.5)
    worker = make_worker(loop.client, "flaky", settings, clock=clock)
    for shard in deployment.shards:
        loop.run(worker.reclaim(shard))
    loop.run(worker.drain())
    assert worker.totals.applied == failed and worker.totals.dead == 0
    for cid in bad + good:  # the oracle: each of the client's events counted once
        assert flaky_count(sync_redis, settings, cid) == KILL_EVENTS_PER_CLIENT, cid
    status = {m.name: m for m in loop.run(collect(loop.client, deployment))}
    assert status["flaky"].applied == total
    assert others_applied(loop, deployment) == before  # zero times by the others
    for cid in bad:
        after = sync_redis.hgetall(keys.result(shard_of(cid, settings.shards), cid))
        assert {k: v for k, v in after.items() if not k.startswith(b"flaky")} == results_before[cid]
    assert all(m.dead == 0 and m.pending == 0 and m.lag == 0 for m in status.values())
    assert_status_agrees_with_dead(loop, deployment)
    listed = cli(loop, "dead", "list", "--by-model", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output) == []
    shown = cli(loop, "status", "--json")
    assert shown.exit_code == 0, shown.output
    assert {m["model"]: m["dead"] for m in json.loads(shown.output)} == dict.fromkeys(status, 0)


def dead_letter(sync_redis: redis.Redis, settings: Settings, cid: str, model: str) -> str:
    """An event of ``cid`` in its shard's stream and ``model``'s dead letter of it; its id."""
    keys = Keys(settings.prefix)
    shard = shard_of(cid, settings.shards)
    entry = sync_redis.xadd(keys.stream(shard), {"cid": cid, "gender": "male"}).decode()
    fields = {"cid": cid, "gender": "male", "_id": entry, "_model": model}
    sync_redis.xadd(keys.dead(shard), {**fields, "_reason": "model_error", "_detail": "x"})
    sync_redis.hincrby(keys.stats(shard), f"{model}:dead", 1)
    return entry


def two_shards(settings: Settings) -> tuple[str, str]:
    """Two client ids of different shards."""
    first = "bad-a"
    second = next(
        f"bad-{n}"
        for n in range(1_000)
        if shard_of(f"bad-{n}", settings.shards) != shard_of(first, settings.shards)
    )
    return first, second


def test_redrive_model_leaves_the_dead_letters_of_a_shard_without_its_group(
    flaky_loop: Loop, sync_redis: redis.Redis
) -> None:
    """A shard where the model has no consumer group (never started there, or its group
    deleted): its dead letters stay, said in one line, and the other shards' are re-driven."""
    loop, settings = flaky_loop, flaky_loop.settings
    keys = Keys(settings.prefix)
    with_group, without = two_shards(settings)
    moved = dead_letter(sync_redis, settings, with_group, "flaky")
    kept = dead_letter(sync_redis, settings, without, "flaky")
    stream = keys.stream(shard_of(with_group, settings.shards))
    loop.run(streams.ensure_group(loop.client, stream, "flaky"))
    result = cli(loop, "dead", "redrive", "--model", "flaky")
    assert result.exit_code == 1, result.output
    assert "re-drove 1 dead letters of flaky" in result.output
    shard = shard_of(without, settings.shards)
    assert f"left {kept}: flaky has no consumer group on shard {shard}" in result.output
    assert "Traceback" not in result.output
    assert sync_redis.xlen(keys.dead(shard)) == 1
    pending = sync_redis.xpending_range(stream, "flaky", "-", "+", 10)
    assert [p["message_id"].decode() for p in pending] == [moved]


def test_redrive_model_refuses_while_a_replay_of_the_model_runs(
    flaky_loop: Loop, sync_redis: redis.Redis
) -> None:
    """A replay re-applies the model's retained entries, its dead letters' included: a re-drive
    meanwhile is refused, nothing moved; an interrupted replay's marker refuses it too."""
    loop, settings = flaky_loop, flaky_loop.settings
    keys = Keys(settings.prefix)
    cid = "bad-replayed"
    dead_letter(sync_redis, settings, cid, "flaky")
    loop.run(
        streams.ensure_group(loop.client, keys.stream(shard_of(cid, settings.shards)), "flaky")
    )
    sync_redis.set(keys.pause("flaky"), "host-1-2", px=60_000)
    result = cli(loop, "dead", "redrive", "--model", "flaky")
    assert result.exit_code == 1
    assert "a replay of flaky is running (host-1-2)" in result.output
    assert sync_redis.xlen(keys.dead(shard_of(cid, settings.shards))) == 1
    sync_redis.delete(keys.pause("flaky"))
    sync_redis.set(keys.rebuilding("flaky"), "host-1-2")
    result = cli(loop, "dead", "redrive", "--model", "flaky", "--dry-run")
    assert result.exit_code == 1
    assert "genderd replay --model flaky" in result.output
    sync_redis.delete(keys.rebuilding("flaky"))
    assert "re-drove 1 dead letters" in cli(loop, "dead", "redrive", "--model", "flaky").output
    # another model's replay does not hold this one back
    sync_redis.set(keys.pause("top"), "host-1-2", px=60_000)
    assert cli(loop, "dead", "redrive", "--model", "flaky").exit_code == 0


def test_redrive_model_takes_an_alias_and_refuses_a_name_that_is_no_model(
    flaky_loop: Loop, sync_redis: redis.Redis
) -> None:
    loop, settings = flaky_loop, flaky_loop.settings
    keys = Keys(settings.prefix)
    cid = "bad-aliased"
    dead_letter(sync_redis, settings, cid, "top")
    loop.run(streams.ensure_group(loop.client, keys.stream(shard_of(cid, settings.shards)), "top"))
    result = cli(loop, "dead", "redrive", "--model", "model2")  # top's alias
    assert result.exit_code == 0, result.output
    assert "re-drove 1 dead letters of top to top only" in result.output
    typo = cli(loop, "dead", "redrive", "--model", "topp")
    assert typo.exit_code == 2
    assert len(typo.output.strip().splitlines()) == 1, typo.output
    assert "unknown model 'topp'" in typo.output
    assert "flaky" in typo.output and "top7d" in typo.output  # the known models
    # a model this process has not loaded, named by its recorded alias
    other = catalog.ModelRecord("theirs", "python", aliases=("mine",))
    sync_redis.hset(keys.models, "theirs", other.to_json())
    dead_letter(sync_redis, settings, cid, "theirs")
    stream = keys.stream(shard_of(cid, settings.shards))
    loop.run(streams.ensure_group(loop.client, stream, "theirs"))
    result = cli(loop, "dead", "redrive", "--model", "mine")
    assert result.exit_code == 0, result.output
    assert "re-drove 1 dead letters of theirs to theirs only" in result.output


def test_dead_list_show_and_purge_take_an_alias_for_model(
    flaky_loop: Loop, sync_redis: redis.Redis
) -> None:
    loop, settings = flaky_loop, flaky_loop.settings
    dead_letter(sync_redis, settings, "bad-aliased", "top")
    dead_letter(sync_redis, settings, "bad-other", "top7d")
    by_name = json.loads(cli(loop, "dead", "list", "--model", "top", "--json").output)
    by_alias = json.loads(cli(loop, "dead", "list", "--model", "model2", "--json").output)
    assert by_alias == by_name and sum(row["count"] for row in by_name) == 1
    shown = cli(loop, "dead", "show", "--model", "model2")
    assert shown.exit_code == 0 and "bad-aliased" in shown.output
    assert "bad-other" not in shown.output
    # a name no model answers to still filters the letters as written (none here)
    gone = json.loads(cli(loop, "dead", "list", "--model", "retired", "--json").output)
    assert gone == []
    purged = cli(loop, "dead", "purge", "--model", "model2", "--yes")
    assert purged.exit_code == 0, purged.output
    left = json.loads(cli(loop, "dead", "list", "--by-model", "--json").output)
    assert [row["model"] for row in left] == ["top7d"]

"""The pause of a model's workers during its replay (genderd.pause): running workers pause and
resume, a consumer that never pauses makes the replay refuse, and a replay that dies at any
step leaves every entry applied exactly once once the workers go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from genderd import pause, replay, streams
from genderd.cli.render import model_state
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.keys import Keys
from genderd.status import collect
from genderd.transport import Links
from genderd.worker import Worker

from .support import oracle, scenario
from .support.factories import make_worker
from .support.runtime import FakeClock, Loop

MODEL = "top"
WAIT_S = 20.0
CIDS = [f"P{n}" for n in range(12)]


def batch(count: int, offset: int = 0) -> list[dict[str, Any]]:
    genders = ("female", "male", "kids")
    now = wall_clock_ms()
    return [
        {"cid": CIDS[n % len(CIDS)], "gender": genders[(n * 7 + offset) % 3], "ts": now + n}
        for n in range(count)
    ]


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def applied(aio: Loop) -> int:
    return (await scenario.applied_counts(aio.client, aio.settings))[MODEL]


async def wrong_answers(aio: Loop, written: list[oracle.Ev]) -> list[str]:
    clock = FakeClock(wall_clock_ms())
    got = await scenario.answers(aio.client, aio.settings, aio.registry, clock, CIDS)
    problems = []
    for cid, answer in zip(CIDS, got, strict=True):
        want = {MODEL: oracle.top(e for e in written if e.cid == cid)}
        problems += [f"{cid}: {p}" for p in scenario.mismatches(answer, want)]
    return problems


async def acknowledged(aio: Loop, consumer: str) -> str | None:
    raw = await aio.client.hget(Keys(aio.settings.prefix).workers(MODEL), consumer)
    return None if raw is None else raw.decode().partition(" ")[2]


def start(aio: Loop, consumer: str) -> tuple[Worker, asyncio.Task[None]]:
    worker = make_worker(aio.client, MODEL, aio.settings, consumer=consumer)
    return worker, asyncio.ensure_future(worker.run())


async def stop(worker: Worker, task: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(task, WAIT_S)


def test_a_running_worker_pauses_acknowledges_and_resumes(aio: Loop) -> None:
    keys = Keys(aio.settings.prefix)
    deployment = Deployment.build(aio.settings)

    async def go() -> None:
        written = await scenario.write(aio.client, aio.settings, batch(40))
        worker, task = start(aio, "w1")

        async def all_applied() -> bool:
            return await applied(aio) == len(written)

        await until(all_applied, "the first events applied")
        links = Links.over(aio.client)
        async with pause.held(aio.client, links.fast, keys, MODEL) as hold:
            await hold.wait_for_workers(deployment.shards, 30_000, WAIT_S)
            assert await hold.acknowledged(30_000) == ["w1"]
            assert await acknowledged(aio, "w1") == f"paused {hold.token}"
            more = await scenario.write(aio.client, aio.settings, batch(30, 1))
            # paused: it reads nothing (a few of its looks go by), and status says so
            await asyncio.sleep(pause.CHECK_INTERVAL_S * 2)
            assert await applied(aio) == len(written)
            (top,) = [m for m in await collect(aio.client, deployment) if m.name == MODEL]
            assert top.pause.paused and not top.pause.interrupted and not top.stalled
            assert top.lag == len(more)
            assert model_state(top) == "paused (replay)"
            assert not task.done()  # paused, not stopped
        written += more
        await until(all_applied, "the events written while paused applied")
        assert await acknowledged(aio, "w1") == "running"
        assert await wrong_answers(aio, written) == []
        await stop(worker, task)
        assert await acknowledged(aio, "w1") is None  # a stopped worker leaves the hash

    aio.run(go())


def test_replay_refuses_a_live_consumer_that_never_pauses(aio: Loop) -> None:
    """A consumer that reads the model's group and knows no pause (an earlier release, a hung
    process): the replay waits, then refuses naming it, with or without force, having changed
    nothing."""
    settings = aio.settings

    async def go() -> None:
        written = await scenario.write(aio.client, settings, batch(25))
        # it read and applied, recording the data layout, and never looks for a pause
        hung = make_worker(aio.client, MODEL, settings, consumer="hung-worker")
        await hung._prepare()
        assert (await hung.drain()).applied == len(written)
        before = await scenario.answers(
            aio.client, settings, aio.registry, FakeClock(wall_clock_ms()), CIDS
        )
        for force in (False, True):
            again = make_worker(aio.client, MODEL, settings, consumer=pause.REPLAY_CONSUMER)
            with pytest.raises(pause.NotPausedError, match="hung-worker") as raised:
                await replay.replay(again, force=force, wait_s=0.5)
            assert "did not pause within 0.5 s" in str(raised.value)
        keys = Keys(settings.prefix)
        assert not await aio.client.exists(keys.pause(MODEL), keys.rebuilding(MODEL))
        assert await applied(aio) == len(written)
        after = await scenario.answers(
            aio.client, settings, aio.registry, FakeClock(wall_clock_ms()), CIDS
        )
        assert [a[MODEL] for a in after] == [b[MODEL] for b in before]

    aio.run(go())


def test_a_second_replay_of_the_model_is_refused_while_one_runs(aio: Loop) -> None:
    keys = Keys(aio.settings.prefix)

    async def go() -> None:
        links = Links.over(aio.client)
        async with pause.held(aio.client, links.fast, keys, MODEL):
            second = make_worker(aio.client, MODEL, aio.settings, consumer="replay")
            with pytest.raises(pause.ReplayRunningError, match="a replay of top is running"):
                await replay.replay(second)
        assert not await aio.client.exists(keys.pause(MODEL))

    aio.run(go())


def test_the_pause_of_a_replay_that_died_expires_and_the_workers_go_on(aio: Loop) -> None:
    keys = Keys(aio.settings.prefix)

    async def go() -> None:
        written = await scenario.write(aio.client, aio.settings, batch(20))
        worker, task = start(aio, "w1")

        async def all_applied() -> bool:
            return await applied(aio) == len(written)

        await until(all_applied, "the first events applied")
        # a replay took the pause and was killed -9: nobody refreshes it
        await aio.client.set(keys.pause(MODEL), "dead-replay", px=3_000)

        async def paused() -> bool:
            return await acknowledged(aio, "w1") == "paused dead-replay"

        await until(paused, "the worker's acknowledgement")
        written += await scenario.write(aio.client, aio.settings, batch(20, 2))
        await until(all_applied, "the worker going on once the pause expired")
        assert await wrong_answers(aio, written) == []
        await stop(worker, task)

    aio.run(go())


class Killed(BaseException):
    """Stands for a kill -9 of the replay at one of its steps."""


def test_a_replay_killed_mid_wipe_keeps_the_workers_paused_until_a_replay_ends(
    aio: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(aio.settings.prefix)
    deployment = Deployment.build(aio.settings)

    async def go() -> None:
        written = await scenario.write(aio.client, aio.settings, batch(60))
        worker, task = start(aio, "w1")

        async def all_applied() -> bool:
            return await applied(aio) == len(written)

        await until(all_applied, "the first events applied")
        real_wipe = replay.wipe

        async def wipe_half(client: Any, deployment: Deployment, model: Any) -> int:
            await client.xgroup_destroy(keys.stream(0), MODEL)  # the first shard's group goes
            raise Killed

        monkeypatch.setattr(replay, "wipe", wipe_half)
        first = make_worker(aio.client, MODEL, aio.settings, consumer=pause.REPLAY_CONSUMER)
        with pytest.raises(Killed):
            await replay.replay(first)
        monkeypatch.setattr(replay, "wipe", real_wipe)
        # the pause is gone (here released; after a kill -9 it expires), the marker stays
        assert not await aio.client.exists(keys.pause(MODEL))
        assert await aio.client.exists(keys.rebuilding(MODEL))

        async def paused() -> bool:
            return await acknowledged(aio, "w1") == f"paused {pause.MARKER_ONLY}"

        await until(paused, "the worker paused by the marker")
        more = await scenario.write(aio.client, aio.settings, batch(20, 1))
        await asyncio.sleep(pause.CHECK_INTERVAL_S * 2)
        groups = {g.group for g in await streams.groups(aio.client, keys, 0)}
        assert MODEL not in groups  # the worker recreated nothing on the wiped shard
        (top,) = [m for m in await collect(aio.client, deployment) if m.name == MODEL]
        assert top.pause.interrupted and not top.stalled
        assert model_state(top).startswith("REPLAY INTERRUPTED")
        # a replay run to its end: the worker (alive all along) takes it from there
        second = make_worker(aio.client, MODEL, aio.settings, consumer=pause.REPLAY_CONSUMER)
        outcome = await replay.replay(second, wait_s=WAIT_S)
        assert outcome.applied == len(written) + len(more)
        written += more
        written += await scenario.write(aio.client, aio.settings, batch(10, 2))
        await until(all_applied, "the events after the replay applied")
        assert not await aio.client.exists(keys.pause(MODEL), keys.rebuilding(MODEL))
        assert await wrong_answers(aio, written) == []
        assert not task.done()
        await stop(worker, task)

    aio.run(go())


def test_a_replay_killed_mid_rebuild_leaves_the_rest_to_the_workers(aio: Loop) -> None:
    keys = Keys(aio.settings.prefix)

    async def go() -> None:
        written = await scenario.write(aio.client, aio.settings, batch(80))
        worker, task = start(aio, "w1")

        async def all_applied() -> bool:
            return await applied(aio) == len(written)

        await until(all_applied, "the first events applied")

        def killed_after_first_batch(done: int) -> None:
            raise Killed

        first = make_worker(aio.client, MODEL, aio.settings, consumer=pause.REPLAY_CONSUMER)
        with pytest.raises(Killed):
            await replay.replay(first, killed_after_first_batch)
        assert not await aio.client.exists(keys.rebuilding(MODEL))  # the groups were back
        written += await scenario.write(aio.client, aio.settings, batch(15, 1))
        # the worker applies the rest of the history, the new events and the batch the
        # replay held pending (reclaimed): each once
        await until(all_applied, "every event applied once")
        assert await wrong_answers(aio, written) == []
        assert await scenario.pending_and_lag(aio.client, aio.settings) == (0, 0)
        await stop(worker, task)

    aio.run(go())

"""End-to-end fault tests of `genderd worker` run as real processes (SPEC §4).

Each test starts `python -m genderd worker` subprocesses against a real server, writes events
with :class:`genderd.producer.Producer`, injects a fault (SIGTERM mid-stream, the server going
away) and checks the outcome in Redis: every event applied exactly once, nothing left pending.
Every process a test starts is stopped by its pid in a ``finally`` block.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import redis

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.deployment import Deployment
from genderd.models.base import Answer
from genderd.settings import Settings
from genderd.status import ModelStatus, collect
from genderd.transport import async_client

from .support.factories import make_producer, make_reader

pytestmark = pytest.mark.fault

GENDERS = ("female", "male")  # the default: the workers of most tests get no GENDERD_GENDERS
MODELS = ("top", "last")
WORKER_BATCH_SIZE = 5
EXIT_TIMEOUT_S = 30.0
CATCH_UP_TIMEOUT_S = 60.0
POLL_S = 0.05

Plan = list[tuple[str, str]]  # (cid, gender) in the order written
Processes = Mapping[str, subprocess.Popen[bytes]]


# -- processes ---------------------------------------------------------------------------------
def worker_env(url: str, **extra: str) -> dict[str, str]:
    """This process's environment without GENDERD_* settings (but the server binary), plus
    the deployment under test and ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GENDERD_") or k == "GENDERD_REDIS_SERVER"
    }
    env.update(
        GENDERD_REDIS_URL=url,
        GENDERD_SHARDS="4",
        GENDERD_BATCH_SIZE=str(WORKER_BATCH_SIZE),
        GENDERD_BLOCK_MS="50",
        # A consumer's leftovers are taken over quickly by the next worker; the tests still
        # check that a cleanly stopped worker leaves nothing pending.
        GENDERD_CLAIM_IDLE_MS="1000",
    )
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Terminate by pid, kill after ``timeout_s``; always reap."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def log_path(log_dir: Path, model: str, tag: str) -> Path:
    return log_dir / f"worker-{model}-{tag}.log"


def worker_log(log_dir: Path, model: str, tag: str, tail: int = 4000) -> str:
    path = log_path(log_dir, model, tag)
    text = path.read_text(errors="replace") if path.exists() else ""
    return f"--- worker {model} #{tag}:\n{text[-tail:]}"


@contextmanager
def worker_process(
    model: str, url: str, log_dir: Path, tag: str, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A `genderd worker --model <model>` process, logging to ``log_dir``; stopped on exit."""
    with log_path(log_dir, model, tag).open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "genderd", "worker", "--model", model],
            env=worker_env(url, **env),
            cwd=log_dir,  # no .genderd/ here: the URL is the only way to the server
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            stop_process(process)


def sigterm_and_expect_clean_exit(
    workers: Processes, log_dir: Path, tag: str, *, sent: bool = False
) -> None:
    """SIGTERM every worker (unless ``sent``); each must exit 0 within EXIT_TIMEOUT_S."""
    for process in workers.values():
        if not sent:
            process.send_signal(signal.SIGTERM)
    for model, process in workers.items():
        try:
            code = process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"worker {model} did not exit within {EXIT_TIMEOUT_S}s of SIGTERM\n"
                + worker_log(log_dir, model, tag)
            )
        assert code == 0, worker_log(log_dir, model, tag)


# -- events and state --------------------------------------------------------------------------
def plan_events(count: int, clients: int, seed: int, genders: Sequence[str] = GENDERS) -> Plan:
    rng = random.Random(seed)
    return [(f"C{rng.randint(1, clients)}", rng.choice(genders)) for _ in range(count)]


def write(settings: Settings, events: Sequence[tuple[str, str]]) -> None:
    """Write ``events`` in order (no ``ts``: arrival time, so stream order is event order)."""
    client = redis.Redis.from_url(settings.redis_url or "")
    try:
        with make_producer(client, settings, batch_size=50) as producer:
            for cid, gender in events:
                producer.send(cid, gender)
    finally:
        client.close()


def statuses(settings: Settings) -> dict[str, ModelStatus]:
    """What `genderd status` reports for every model, by name."""

    async def go() -> list[ModelStatus]:
        client = async_client(settings)
        try:
            return await collect(client, Deployment.build(settings))
        finally:
            await client.aclose()

    return {m.name: m for m in asyncio.run(go())}


def answers(settings: Settings, cids: Sequence[str], model: str) -> dict[str, Answer | None]:
    """One model's answers for ``cids``, read the way lookups read them."""

    async def go() -> list[dict[str, Answer | None]]:
        client = async_client(settings)
        try:
            registry = Deployment.build(settings).registry
            return await make_reader(client, settings).lookup_many(cids, [registry.get(model)])
        finally:
            await client.aclose()

    return {cid: found[model] for cid, found in zip(cids, asyncio.run(go()), strict=True)}


def progress(settings: Settings, log_dir: Path, tags: Sequence[str] = ()) -> Callable[[], str]:
    """A description of where the models are (and the workers' logs) for failure messages."""

    def text() -> str:
        found = statuses(settings)
        lines = [
            f"{m}: lag={found[m].lag} pending={found[m].pending} applied={found[m].applied} "
            f"dead={found[m].dead}"
            for m in MODELS
        ]
        lines += [worker_log(log_dir, m, tag) for tag in tags for m in MODELS]
        return "\n".join(lines)

    return text


def wait_for(
    condition: Callable[[], bool],
    what: str,
    detail: Callable[[], str],
    running: Processes | None = None,
    timeout_s: float = CATCH_UP_TIMEOUT_S,
) -> None:
    """Poll ``condition`` until ``timeout_s``; fail at once if a ``running`` process exits."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for name, process in (running or {}).items():
            if process.poll() is not None:
                pytest.fail(
                    f"worker {name} exited with {process.returncode} while waiting for {what}\n"
                    + detail()
                )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}\n{detail()}")
        time.sleep(POLL_S)


def caught_up(settings: Settings, applied: int) -> Callable[[], bool]:
    """True once every model in MODELS has no lag, nothing pending and ``applied`` applied."""

    def check() -> bool:
        found = statuses(settings)
        return all(
            found[m].lag == 0 and found[m].pending == 0 and found[m].applied >= applied
            for m in MODELS
        )

    return check


def check_exactly_once(settings: Settings, plan: Plan) -> None:
    """`top` scores count every written event exactly once, `last` answers each client's last
    written gender, and every model's applied counter equals the number written."""
    per_client: dict[str, Counter[str]] = {}
    last_gender: dict[str, str] = {}
    for cid, gender in plan:
        per_client.setdefault(cid, Counter())[gender] += 1
        last_gender[cid] = gender
    cids = sorted(per_client)

    top = answers(settings, cids, "top")
    total = 0
    for cid in cids:
        answer = top[cid]
        assert answer is not None, f"top has no answer for {cid}"
        assert answer.scores == dict(per_client[cid]), cid
        assert per_client[cid][answer.gender] == max(per_client[cid].values()), cid
        total += sum(answer.scores.values())
    assert total == len(plan)

    last = answers(settings, cids, "last")
    for cid in cids:
        answer = last[cid]
        assert answer is not None, f"last has no answer for {cid}"
        assert answer.gender == last_gender[cid], cid

    found = statuses(settings)
    for model in MODELS:
        assert found[model].applied == len(plan), model
        assert (found[model].lag, found[model].pending, found[model].dead) == (0, 0, 0), model


# -- tests -------------------------------------------------------------------------------------
def test_worker_sigterm_mid_stream_loses_and_duplicates_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"genders": GENDERS})  # as the workers have them
    url = settings.redis_url or ""
    plan = plan_events(3_000, 200, seed=7)
    head, middle, tail = plan[:1_000], plan[1_000:2_500], plan[2_500:]
    terminated = threading.Event()

    def keep_writing() -> None:
        """Write ``middle`` in small chunks; its second part only once SIGTERM was sent."""
        for start in range(0, len(middle), 50):
            if start == 500:
                terminated.wait(EXIT_TIMEOUT_S)
            write(settings, middle[start : start + 50])
            time.sleep(0.01)

    with ThreadPoolExecutor(1) as pool, ExitStack() as stack:
        stack.callback(terminated.set)  # never leave the writer waiting when the test fails
        first = {m: stack.enter_context(worker_process(m, url, tmp_path, "1")) for m in MODELS}
        write(settings, head)
        writing = pool.submit(keep_writing)

        # Stop the first workers once they are well into the stream, while events arrive.
        wait_for(
            lambda: all(statuses(settings)[m].applied >= 200 for m in MODELS),
            "the first workers to apply events",
            progress(settings, tmp_path, ["1"]),
            first,
        )
        for process in first.values():
            process.send_signal(signal.SIGTERM)
        terminated.set()
        sigterm_and_expect_clean_exit(first, tmp_path, "1", sent=True)
        writing.result(timeout=EXIT_TIMEOUT_S)

        # A cleanly stopped worker finished and acknowledged its batches: nothing pending.
        stopped = statuses(settings)
        for model in MODELS:
            assert stopped[model].pending == 0, progress(settings, tmp_path, ["1"])()
            assert 0 < stopped[model].applied < len(plan), progress(settings, tmp_path)()

        # The rest arrives while no worker runs; a second worker of each model finishes it.
        write(settings, tail)
        second = {m: stack.enter_context(worker_process(m, url, tmp_path, "2")) for m in MODELS}
        wait_for(
            caught_up(settings, len(plan)),
            "the second workers to catch up",
            progress(settings, tmp_path, ["1", "2"]),
            second,
        )
        sigterm_and_expect_clean_exit(second, tmp_path, "2")

    check_exactly_once(settings, plan)


def test_worker_survives_server_restart_and_reconnects(tmp_path: Path) -> None:
    binary = find_binary(os.environ.get("GENDERD_REDIS_SERVER"))
    port = free_port()
    data = tmp_path / "data"
    server = BundledServer(binary, port, data, persistent=True).start()
    settings = Settings(redis_url=server.url, shards=4, genders=GENDERS)
    describe = progress(settings, tmp_path, ["1"])
    before = plan_events(300, 40, seed=11)
    after = plan_events(300, 40, seed=12)
    try:
        with ExitStack() as stack:
            workers = {
                m: stack.enter_context(worker_process(m, server.url, tmp_path, "1")) for m in MODELS
            }
            write(settings, before)
            wait_for(
                caught_up(settings, len(before)),
                "the workers to apply the first events",
                describe,
                workers,
            )

            server.stop()  # SIGTERM: the server writes its AOF and exits
            # The workers ride out the outage: some seconds without Redis, still running.
            outage_end = time.monotonic() + 3.0
            while time.monotonic() < outage_end:
                for model, process in workers.items():
                    assert process.poll() is None, (
                        f"worker {model} exited with {process.returncode} while Redis was down\n"
                        + worker_log(tmp_path, model, "1")
                    )
                time.sleep(0.1)

            server = BundledServer(binary, port, data, persistent=True).start()
            restarted = statuses(settings)
            for model in MODELS:  # the AOF kept everything applied before the outage
                assert restarted[model].applied == len(before), describe()

            write(settings, after)
            wait_for(
                caught_up(settings, len(before) + len(after)),
                "the workers to reconnect and apply events written after the restart",
                describe,
                workers,
            )
            check_exactly_once(settings, before + after)
            sigterm_and_expect_clean_exit(workers, tmp_path, "1")
    finally:
        server.stop()


def test_worker_sigterm_while_server_is_down_exits_cleanly(tmp_path: Path) -> None:
    """SPEC §4: workers stop cleanly on SIGTERM, also while they wait for a lost Redis."""
    binary = find_binary(os.environ.get("GENDERD_REDIS_SERVER"))
    server = BundledServer(binary, free_port(), tmp_path / "data", persistent=True).start()
    settings = Settings(redis_url=server.url, shards=4, genders=GENDERS)
    plan = plan_events(100, 10, seed=13)
    try:
        with ExitStack() as stack:
            workers = {
                m: stack.enter_context(worker_process(m, server.url, tmp_path, "1")) for m in MODELS
            }
            write(settings, plan)
            wait_for(
                caught_up(settings, len(plan)),
                "the workers to apply the events",
                progress(settings, tmp_path, ["1"]),
                workers,
            )
            server.stop()
            time.sleep(1.0)  # let the workers notice: they are retrying now
            for model, process in workers.items():
                assert process.poll() is None, worker_log(tmp_path, model, "1")
            sigterm_and_expect_clean_exit(workers, tmp_path, "1")
    finally:
        server.stop()


def test_worker_takes_configured_genders_from_the_environment(
    settings: Settings, tmp_path: Path
) -> None:
    """SPEC §2/§6: GENDERD_GENDERS lists the accepted genders ("default `female,male`; e.g.
    add `kids`"); a worker started with it applies events of every listed gender."""
    genders = ("female", "kids", "male")
    settings = settings.model_copy(update={"genders": genders})
    plan = plan_events(200, 20, seed=5, genders=genders)
    assert "kids" in {gender for _, gender in plan}
    with ExitStack() as stack:
        workers = {
            m: stack.enter_context(
                worker_process(
                    m, settings.redis_url or "", tmp_path, "1", GENDERD_GENDERS="female,male,kids"
                )
            )
            for m in MODELS
        }
        write(settings, plan)
        wait_for(
            caught_up(settings, len(plan)),
            "workers with GENDERD_GENDERS=female,male,kids to apply every event",
            progress(settings, tmp_path, ["1"]),
            workers,
        )
        sigterm_and_expect_clean_exit(workers, tmp_path, "1")
    check_exactly_once(settings, plan)


FAILING_PLUGIN = "tests.support.failing:Exits"  # fails on the events of clients named bad*
BURST, BURST_BAD = 3_000, 300
FAILING_WITHIN_S = 15.0  # SPEC 13: FAILING shows this soon after the failures
WARM_UP_EVERY_S = 0.2


def test_a_burst_of_failures_shows_failing_without_further_traffic(
    settings: Settings, tmp_path: Path
) -> None:
    """A model that failed on 300 of 3,000 events is FAILING within 15 s, although no event
    comes after the burst: a worker writes its failure counts on a timer, not only after its
    next batch. The burst comes right after the worker has written counts (so that a worker
    writing only after a batch, and at most every 5 s, keeps the burst's counts to itself)."""
    settings = settings.model_copy(update={"plugins": (FAILING_PLUGIN,)})
    extra = {
        "GENDERD_PLUGINS": FAILING_PLUGIN,
        "GENDERD_GENDERS": ",".join(settings.genders),
        "GENDERD_BATCH_SIZE": "256",  # the burst in a few batches
        "PYTHONPATH": str(Path(__file__).parents[1]),  # tests.support, from the worker's cwd
    }
    with worker_process("exits", settings.redis_url or "", tmp_path, "1", **extra) as process:

        def detail() -> str:
            return worker_log(tmp_path, "exits", "1")

        warm_up = iter(range(1_000_000))

        def counted() -> bool:  # one good event at a time until the worker wrote counts
            write(settings, [(f"warm{next(warm_up)}", "male")])
            time.sleep(WARM_UP_EVERY_S)
            return statuses(settings)["exits"].recent.events > 0

        wait_for(counted, "the worker's first counts", detail, {"exits": process})
        burst = [(f"bad{n}" if n < BURST_BAD else f"good{n}", GENDERS[n % 2]) for n in range(BURST)]
        write(settings, burst)

        def handled() -> bool:
            found = statuses(settings)["exits"]
            return found.lag == 0 and found.pending == 0

        wait_for(handled, "the burst to be handled", detail, {"exits": process})
        assert statuses(settings)["exits"].dead == BURST_BAD
        wait_for(
            lambda: statuses(settings)["exits"].failing,
            "status to show the model FAILING",
            detail,
            {"exits": process},
            timeout_s=FAILING_WITHIN_S,
        )
        found = statuses(settings)["exits"].recent
        assert found.model_errors == BURST_BAD and found.events > BURST

"""`genderd serve --workers 2`: one scrape of /metrics sees every process's counts (SPEC 8).

The server runs as a subprocess on a free loopback port; its worker processes are found by
their metrics files (``counter_http-<pid>.db`` in the directory `serve` creates under TMPDIR),
and everything it starts is stopped by pid when the test ends.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from genderd.bundled import free_port, port_is_free

WORKERS = 2
CONNECTIONS = 40  # new connections, so that the kernel hands some to each process
PER_CONNECTION = 5
SCRAPES = 8
# Starting an API process (a new Python, FastAPI, the models) takes seconds; on a busy machine
# over a minute was seen. A generous bound: it catches a process that never comes up.
START_TIMEOUT_S = 180.0
# the parent watch polls each second; a worker then shuts down (open connections: 10 s)
ORPHAN_EXIT_S = 30.0
# a stop: uvicorn's graceful shutdown of each process (up to 10 s), slower on a busy machine
STOP_TIMEOUT_S = 60.0
# three starts of `serve` and its processes, each within START_TIMEOUT_S at worst
pytestmark = pytest.mark.timeout(3 * (START_TIMEOUT_S + STOP_TIMEOUT_S))
HEALTHZ = re.compile(
    r'^genderd_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', re.M
)


def get(port: int, path: str, times: int = 1) -> str:
    """``times`` GETs of ``path`` over one new connection; the last answer's body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = b""
        for _ in range(times):
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, body
        return body.decode()
    finally:
        connection.close()


def healthz_count(port: int) -> float:
    found = HEALTHZ.search(get(port, "/metrics"))
    return float(found.group(1)) if found else 0.0


def stop(pid: int, also: Iterable[int] = ()) -> None:
    """SIGTERM `serve` (it stops its workers), SIGKILL whatever is left of it and of ``also``
    (the workers of a `serve` that was killed, which are no longer its children)."""
    with_children = []
    try:
        process = psutil.Process(pid)
        with_children = [process, *process.children(recursive=True)]
        process.terminate()
        process.wait(STOP_TIMEOUT_S)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        pass
    for other in also:
        try:
            with_children.append(psutil.Process(other))
        except psutil.NoSuchProcess:
            pass
    for process in with_children:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Served:
    def __init__(self, port: int, tmp: Path, process: subprocess.Popen[bytes]) -> None:
        self.port, self.tmp, self.process = port, tmp, process
        self.started: set[int] = set()  # every worker pid seen, to stop them by pid at the end

    def directory(self) -> Path:
        (found,) = self.tmp.glob("genderd-metrics-*")
        return found

    def worker_pids(self) -> set[int]:
        files = self.directory().glob("counter_http-*.db")
        pids = {int(f.stem.split("-")[1]) for f in files}
        self.started |= pids
        return pids

    def live_workers(self) -> set[int]:
        return {pid for pid in self.worker_pids() if psutil.pid_exists(pid)}

    def wait_for(self, n_live: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "serve exited"
            try:
                if len(self.live_workers()) >= n_live:
                    get(self.port, "/metrics")
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"{n_live} live API processes did not come up")


@contextmanager
def serving(redis_url: str, tmp: Path, port: int) -> Iterator[Served]:
    """`genderd serve --workers 2` on ``port`` with ``tmp`` as its TMPDIR, up and answering;
    stopped by pid (with the workers of a killed one) on the way out."""
    env = dict(os.environ, GENDERD_REDIS_URL=redis_url, TMPDIR=str(tmp))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "genderd", "serve", "--port", str(port), "--workers", str(WORKERS)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Served(port, tmp, process)
    try:
        server.wait_for(WORKERS)
        yield server
    finally:
        stop(process.pid, server.started)
        process.wait(10)


@pytest.fixture
def served(redis_url: str, tmp_path: Path) -> Iterator[Served]:
    with serving(redis_url, tmp_path, free_port()) as server:
        yield server
    assert not list(tmp_path.glob("genderd-metrics-*")), "serve left its metrics directory"


def test_every_scrape_counts_every_process(served: Served) -> None:
    requests = CONNECTIONS * PER_CONNECTION
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: get(served.port, "/healthz", PER_CONNECTION), range(CONNECTIONS)))
    # every process served some (each has counted into its own file)
    assert len(served.live_workers()) == WORKERS
    counts = [healthz_count(served.port) for _ in range(SCRAPES)]
    assert counts == [requests] * SCRAPES


def test_counts_survive_a_killed_process(served: Served) -> None:
    requests = CONNECTIONS * PER_CONNECTION
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: get(served.port, "/healthz", PER_CONNECTION), range(CONNECTIONS)))
    before = served.live_workers()
    victim = min(before)
    psutil.Process(victim).kill()  # uvicorn's supervisor starts a replacement
    deadline = time.monotonic() + START_TIMEOUT_S
    while served.live_workers() - before == set() or len(served.live_workers()) < WORKERS:
        assert time.monotonic() < deadline, "the killed process was not replaced"
        time.sleep(0.2)
    counts = [healthz_count(served.port) for _ in range(SCRAPES)]
    assert counts == [requests] * SCRAPES  # the dead process's counts stay
    get(served.port, "/healthz")
    assert healthz_count(served.port) == requests + 1


@pytest.mark.fault
def test_a_killed_serve_leaves_no_worker_port_or_metrics_directory(
    redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL of `serve`'s parent: its workers exit by themselves, the port is free again, and
    the next `serve` on it starts and removes the dead one's metrics directory."""
    port = free_port()
    with serving(redis_url, tmp_path, port) as first:
        workers = first.live_workers()
        old = first.directory()
        first.process.kill()
        first.process.wait(10)
        deadline = time.monotonic() + ORPHAN_EXIT_S
        while not (all(gone(pid) for pid in workers) and port_is_free(port)):
            left = {pid for pid in workers if not gone(pid)}
            assert time.monotonic() < deadline, f"workers {left} outlived their parent"
            time.sleep(0.1)
    with serving(redis_url, tmp_path, port) as second:
        assert second.directory() != old  # the only one left: the dead serve's was removed
        assert second.live_workers().isdisjoint(workers)
        get(port, "/healthz")
    assert not list(tmp_path.glob("genderd-metrics-*")), "serve left its metrics directory"

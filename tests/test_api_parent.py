"""The pieces that keep a killed `genderd serve` from leaving anything behind: the parent watch
of its worker processes (the fallback where the kernel cannot signal them) and the removal of
a dead serve's metrics directory. The whole, with a real `serve`, is in test_api_processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil

from genderd.api.metrics import METRICS_DIR_PREFIX, OWNER_FILE, remove_stale_metrics

EXIT_TIMEOUT_S = 30.0

# A middle process that starts a grandchild watching it with watch_parent alone (no prctl),
# prints the grandchild's pid and waits to be killed. The grandchild says when it watches.
MIDDLE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
    print(child.pid, flush=True)
    time.sleep(600)
    """
)
WATCHER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from genderd.api.parent import watch_parent

    async def main():
        watch = asyncio.create_task(watch_parent(int(sys.argv[1]), 0.05))
        await asyncio.sleep(0)
        print("watching", flush=True)
        await watch

    asyncio.run(main())
    time.sleep(600)  # not reached: watch_parent's SIGTERM ends the process
    """
)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_parent_watch_stops_a_process_whose_parent_died() -> None:
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, WATCHER], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    watcher = None
    try:
        assert middle.stdout is not None
        watcher = int(middle.stdout.readline())
        assert middle.stdout.readline() == b"watching\n"
        middle.kill()
        middle.wait(10)
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while not gone(watcher):
            assert time.monotonic() < deadline, "the watcher outlived its parent"
            time.sleep(0.05)
    finally:
        middle.kill()
        middle.wait(10)
        if middle.stdout is not None:
            middle.stdout.close()
        if watcher is not None and not gone(watcher):
            psutil.Process(watcher).kill()


def _directory(tmp: Path, name: str, owned: bool) -> Path:
    directory = tmp / f"{METRICS_DIR_PREFIX}{name}"
    directory.mkdir()
    (directory / "counter_http-1.db").write_bytes(b"")
    if owned:
        (directory / OWNER_FILE).write_text("1\n")
    return directory


def test_only_the_metrics_directories_of_dead_serves_are_removed(tmp_path: Path) -> None:
    dead = _directory(tmp_path, "dead", owned=True)
    unmarked = _directory(tmp_path, "new", owned=False)  # being set up, or an older release's
    live = _directory(tmp_path, "live", owned=True)
    other = tmp_path / "genderd-other"
    other.mkdir()
    # a live serve: another process holding the lock on its directory
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n",
            str(live),
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        assert remove_stale_metrics(tmp_path) == [dead]
        assert not dead.exists()
        assert unmarked.exists() and live.exists() and other.exists()
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    assert remove_stale_metrics(tmp_path) == [live]  # its holder is gone now
    assert sorted(os.listdir(tmp_path)) == sorted([unmarked.name, other.name])

"""`genderd` commands against a test's server: in-process (click's runner) or as processes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from genderd.cli import main
from genderd.settings import Settings

WAIT_S = 30.0  # a condition a test waits on (a subprocess started, a line written)
POLL_S = 0.02


def cli(redis_url: str, settings: Settings, *args: str, genders: str | None = None) -> Result:
    """`genderd ARGS` with ``settings``' shard count and genders (``genders``: others, as the
    GENDERD_GENDERS of this command only), over the server at ``redis_url``."""
    env = {
        "GENDERD_REDIS_URL": redis_url,
        "GENDERD_SHARDS": str(settings.shards),
        "GENDERD_GENDERS": genders or ",".join(settings.genders),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def genderd_process(
    redis_url: str, *args: str, limit_bytes: int | None = None, **env: str
) -> subprocess.Popen[bytes]:
    """`python -m genderd ARGS` in a process of its own, stdin a pipe the test writes to,
    stdout and stderr pipes; ``limit_bytes``: its address space (RLIMIT_AS), so that a
    process that reads without bound fails with MemoryError instead of taking the machine."""

    def limited() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    environment = {**os.environ, "GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": "4", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "genderd", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        preexec_fn=limited,
    )


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(POLL_S)

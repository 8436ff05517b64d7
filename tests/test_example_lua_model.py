"""The example plug-in package, examples/lua-model (issue 28), as a user ships it: its wheel is
built, installed into a fresh virtual environment beside genderd, and run from another
directory: its own tests, `genderd worker`, `status`, `lookup` and `evaluate`.

The fresh environment sees genderd and its dependencies through a `.pth` file that adds this
interpreter's site-packages (``site.addsitedir``, so that genderd's own editable install works
there too); the plug-in itself is only in the wheel installed into it. So a wheel without its
Lua file (package data) or its entry point fails here, as it would for a user.
"""

from __future__ import annotations

import json
import random
import shutil
import site
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from genderd.clock import wall_clock_ms
from genderd.keys import Keys
from genderd.settings import Settings

from .support.factories import make_producer
from .test_e2e_worker import stop_process, worker_env

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lua-model"
COMMAND_TIMEOUT_S = 120.0
CATCH_UP_TIMEOUT_S = 60.0
EVENTS = 200
CLIENTS = 20
MINUTE_MS = 60_000


@dataclass(frozen=True)
class Installed:
    """The fresh environment with the example's wheel installed, and a directory elsewhere."""

    python: Path
    wheel: Path
    elsewhere: Path

    def run(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        """``python args`` of the fresh environment, run from the other directory."""
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.elsewhere,
            env=worker_env(url or "redis://unused.invalid", GENDERD_GENDERS="female,male"),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )


def _checked(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    home = tmp_path_factory.mktemp("example")
    source = home / "source"  # a copy: building in the tree would leave build/ and egg-info
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    dist = home / "dist"
    python = sys.executable
    _checked(
        *(python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"),
        *("--wheel-dir", dist, source),
    )
    (wheel,) = dist.glob("genderd_first-*.whl")
    venv = home / "venv"
    _checked(python, "-m", "venv", "--without-pip", venv)
    fresh = venv / "bin" / "python"
    purelib = Path(
        _checked(fresh, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    )
    beside = "".join(f"import site; site.addsitedir({path!r})\n" for path in site.getsitepackages())
    (purelib / "genderd_beside.pth").write_text(beside)
    _checked(fresh, "-m", "pip", "install", "--no-deps", "--no-index", wheel)
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    return Installed(fresh, wheel, elsewhere)


def test_the_wheel_holds_the_lua_file_and_the_entry_point(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        assert "genderd_first/first.lua" in names, names
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = wheel.read(entry_points).decode()
    assert "[genderd.models]\nfirst = genderd_first:First" in text, text
    where = installed.run("-c", "import genderd_first; print(genderd_first.__file__)")
    assert where.returncode == 0, where.stderr
    assert str(installed.python.parents[1]) in where.stdout  # the installed copy, not a source


def test_its_own_tests_pass_in_the_fresh_environment(installed: Installed) -> None:
    tests = installed.elsewhere / "tests"
    shutil.copytree(EXAMPLE / "tests", tests, dirs_exist_ok=True)
    done = installed.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout


def _history(now: int) -> list[dict[str, object]]:
    """Events whose times are not in their arrival order: the first visit is not the first
    event written."""
    rand = random.Random(28)
    return [
        {
            "cid": f"C{rand.randint(1, CLIENTS)}",
            "gender": rand.choice(["female", "male"]),
            "ts": now - rand.randint(1, 5_000) * MINUTE_MS,
        }
        for _ in range(EVENTS)
    ]


def _first_visits(events: list[dict[str, object]]) -> dict[str, str]:
    """The gender of each client's first event."""
    return {cid: str(events[n]["gender"]) for n, cid in _first_events(events).items()}


@pytest.fixture
def worker(installed: Installed, settings: Settings) -> Iterator[None]:
    url = settings.redis_url or ""
    log = installed.elsewhere / "worker-first.log"
    with ExitStack() as stack, log.open("wb") as out:
        process = subprocess.Popen(
            [str(installed.python), "-m", "genderd", "worker", "--model", "first"],
            cwd=installed.elsewhere,
            env=worker_env(url, GENDERD_GENDERS="female,male"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        stack.callback(stop_process, process)
        yield


def test_worker_status_lookup_and_evaluate_run_it_from_another_directory(
    installed: Installed, settings: Settings, worker: None
) -> None:
    url = settings.redis_url or ""
    settings = settings.model_copy(update={"genders": ("female", "male")})
    events = _history(wall_clock_ms())
    client = redis.Redis.from_url(url)
    try:
        with make_producer(client, settings, batch_size=50) as producer:
            for event in events:
                producer.send_fields(event)
        keys = Keys(settings.prefix)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while sum(int(client.hget(keys.stats(s), "first:applied") or 0) for s in range(4)) < EVENTS:
            log = (installed.elsewhere / "worker-first.log").read_text()
            assert time.monotonic() < deadline, log
            time.sleep(0.1)
    finally:
        client.close()

    status = installed.run("-m", "genderd", "status", "--json", url=url)
    assert status.returncode in (0, 1), status.stderr  # 1: the other models run nowhere here
    rows = {row["model"]: row for row in json.loads(status.stdout)}
    assert rows["first"]["applied"] == EVENTS and rows["first"]["dead"] == 0, rows["first"]

    expected = _first_visits(events)
    for cid in sorted(expected)[:5]:
        found = installed.run("-m", "genderd", "lookup", cid, "--model", "first", "--json", url=url)
        assert found.returncode == 0, found.stderr
        answer = json.loads(found.stdout)["models"]["first"]
        assert answer["gender"] == expected[cid], cid
        newest = max(int(str(e["ts"])) for e in events if e["cid"] == cid)
        assert answer["last_event_ts"] == newest  # first.lua's first:ts field

    history = installed.elsewhere / "history.jsonl"
    history.write_text("".join(json.dumps(event) + "\n" for event in events))
    scored = installed.run(
        "-m", "genderd", "evaluate", "--events", str(history), "--models", "first,top", "--json"
    )
    assert scored.returncode == 0, scored.stderr
    first = {row["model"]: row for row in json.loads(scored.stdout)["models"]}["first"]
    # scored by its predictor(): an answer from each client's second event on, the first visit
    firsts = _first_events(events)
    later = [e for n, e in enumerate(events) if n not in firsts]
    assert first["predicted"] == len(later) == EVENTS - len(expected), first
    hits = sum(e["gender"] == expected[str(e["cid"])] for e in later)
    assert first["accuracy"] == pytest.approx(hits / len(later)), first


def _first_events(events: list[dict[str, object]]) -> dict[int, str]:
    """Each client's first event (least ts, then position): its index -> its client."""
    first: dict[str, tuple[int, int]] = {}
    for n, event in enumerate(events):
        cid, key = str(event["cid"]), (int(str(event["ts"])), n)
        first[cid] = min(first.get(cid, key), key)
    return {n: cid for cid, (_, n) in first.items()}

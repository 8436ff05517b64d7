"""End-to-end tests of `genderd up` and the commands run next to it (SPEC §6).

Each test runs `python -m genderd up` in its own temporary directory with no Redis URL
configured, so that it starts the bundled server under ``./.genderd/``; the other commands
run from that directory find the server through ``.genderd/server.json``. Every process a test
starts (and every process `up` started) is stopped by its pid when the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from genderd.bundled import free_port, port_is_free
from genderd.clock import MS_PER_DAY, wall_clock_ms
from genderd.deployment import Deployment
from genderd.producer import synthetic
from genderd.settings import Settings

from .support.demo_history import shown_lookups

pytestmark = pytest.mark.slow

STATE_DIR = ".genderd"
GENDERS = ("female", "male")  # the default genders: `up` runs with no GENDERD_* settings
MODELS = tuple(Deployment.build(Settings()).registry.names())  # every registered model
COMMAND_TIMEOUT_S = 30.0
WAIT_S = 30.0
STOP_TIMEOUT_S = 30.0
POLL_S = 0.2


# -- processes ---------------------------------------------------------------------------------
def clean_env() -> dict[str, str]:
    """This process's environment without GENDERD_* settings (the server binary may stay):
    no Redis URL, so `up` starts the bundled server and commands find it by directory."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GENDERD_") or k == "GENDERD_REDIS_SERVER"
    }


def genderd(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one `genderd` command in ``cwd`` to completion (``env``: settings added)."""
    return subprocess.run(
        [sys.executable, "-m", "genderd", *args],
        cwd=cwd,
        env=clean_env() | (env or {}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def kill_pid(pid: int) -> None:
    """SIGTERM a leftover process by pid, SIGKILL it if it does not go."""
    try:
        process = psutil.Process(pid)
        process.terminate()
        process.wait(10)
    except psutil.TimeoutExpired:
        with suppress(psutil.NoSuchProcess):
            process.kill()
    except psutil.NoSuchProcess:
        pass


def descendants(pid: int) -> list[int]:
    with suppress(psutil.NoSuchProcess):
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    return []


def alive(pid: int) -> bool:
    """True for a running process (a zombie, exited but not reaped, does not count)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def server_state(workdir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads((workdir / STATE_DIR / "server.json").read_text()))
    except (OSError, ValueError):
        return None


@dataclass
class Up:
    """A running `genderd up` and where its output goes."""

    process: subprocess.Popen[bytes]
    workdir: Path
    out: Path
    err: Path
    api_port: int

    def output(self) -> str:
        return (
            f"--- up stdout:\n{self.out.read_text(errors='replace')}\n"
            f"--- up stderr:\n{self.err.read_text(errors='replace')[-6000:]}"
        )

    def workers(self) -> dict[int, str]:
        """Live worker children of `up`: pid -> model name."""
        found: dict[int, str] = {}
        with suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.process.pid).children():
                try:
                    if child.status() == psutil.STATUS_ZOMBIE:
                        continue
                    args = child.cmdline()
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
                if "worker" in args and "--model" in args:
                    found[child.pid] = args[args.index("--model") + 1]
        return found

    def wait_until(
        self, condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S
    ) -> None:
        """Poll ``condition`` for ``timeout_s``; fail at once if `up` exits meanwhile."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(
                    f"genderd up exited with {self.process.returncode} while waiting for "
                    f"{what}\n{self.output()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s}s waiting for {what}\n{self.output()}")
            time.sleep(POLL_S)

    def wait_ready(self, models: tuple[str, ...] = MODELS) -> None:
        """Until the server is recorded, `genderd status` answers and each of ``models`` has a
        worker."""
        self.wait_until(lambda: server_state(self.workdir) is not None, "server.json")
        self.wait_until(lambda: genderd(self.workdir, "status").returncode == 0, "status exit 0")
        self.wait_until(lambda: set(self.workers().values()) == set(models), "a worker per model")

    def interrupt_and_expect_clean_stop(self) -> None:
        """Ctrl-C: `up` exits 0, its server and workers are gone, server.json is removed and
        the data stays under .genderd/."""
        state = server_state(self.workdir)
        assert state is not None, self.output()
        children = descendants(self.process.pid)
        assert int(state["pid"]) in children, (state, children)
        self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"genderd up did not stop within {STOP_TIMEOUT_S}s\n{self.output()}")
        assert code == 0, self.output()
        for pid in children:
            assert not alive(pid), f"pid {pid} (a child of up) still runs\n{self.output()}"
        assert not (self.workdir / STATE_DIR / "server.json").exists()
        assert (self.workdir / STATE_DIR / "appendonlydir").is_dir()


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(100):
        base = free_port()
        if base + count <= 65_535 and all(port_is_free(p) for p in range(base, base + count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports")


@contextmanager
def genderd_up(
    workdir: Path,
    *args: str,
    api_port: int | None = None,
    settings: dict[str, str] | None = None,
) -> Iterator[Up]:
    """`genderd up --port <free port> ARGS` in ``workdir`` (with ``settings``, GENDERD_*
    variables, for it and its children); stops it and everything it started (by pid) when the
    block ends."""
    out, err = workdir / "up.out", workdir / "up.err"
    api_port = api_port or free_port()
    with out.open("wb") as out_file, err.open("wb") as err_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "genderd",
                "up",
                "--port",
                str(free_port()),
                "--api-port",
                str(api_port),
                *args,
            ],
            cwd=workdir,
            env={**clean_env(), **(settings or {})},
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=err_file,
        )
        up = Up(process, workdir, out, err, api_port)
        started: set[int] = set()
        try:
            yield up
        finally:
            state = server_state(workdir)  # still there if `up` did not stop cleanly
            if state is not None:
                started.add(int(state["pid"]))
            if process.poll() is None:
                started.update(descendants(process.pid))
                process.terminate()  # SIGTERM: the supervisor stops its children and server
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.wait()
            for pid in started:
                kill_pid(pid)


def status_by_model(workdir: Path, exits: tuple[int, ...] = (0,)) -> dict[str, dict[str, Any]]:
    result = genderd(workdir, "status", "--json")
    assert result.returncode in exits, result.stderr
    return {m["model"]: m for m in json.loads(result.stdout)}


def caught_up(
    workdir: Path, applied: int, models: tuple[str, ...] = MODELS, exits: tuple[int, ...] = (0,)
) -> bool:
    """Whether ``models`` applied ``applied`` events and have nothing waiting (``exits``: the
    exit codes of `status` allowed, 1 when other models are stalled)."""
    found = status_by_model(workdir, exits)
    return all(
        found[m]["applied"] == applied and found[m]["lag"] == 0 and found[m]["pending"] == 0
        for m in models
    )


def lookup_json(workdir: Path, cid: str) -> dict[str, Any] | None:
    """`genderd lookup CID --json`: the answers by model, or None while no model has one."""
    result = genderd(workdir, "lookup", cid, "--json")
    if result.returncode == 1:
        return None
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["cid"] == cid
    return dict(parsed["models"])


# -- tests -------------------------------------------------------------------------------------
def test_up_serves_produce_lookup_status_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    # What `produce --count 500 --clients 50 --seed 1` writes for C1 (arrival times, in order).
    c1 = [e["gender"] for e in synthetic(500, 50, GENDERS, seed=1) if e["cid"] == "C1"]
    assert c1, "the seed gives C1 no event: pick another client"
    counts = dict(Counter(c1))

    metrics_base = free_ports(len(MODELS))
    with genderd_up(tmp_path, "--metrics-port", str(metrics_base)) as up:
        up.wait_ready()
        state = server_state(tmp_path)
        assert state is not None and state["url"].startswith("redis://127.0.0.1:")

        produced = genderd(
            tmp_path, "produce", "--count", "500", "--clients", "50", "--seed", "1", "--quiet"
        )
        assert produced.returncode == 0, produced.stderr

        found: dict[str, Any] = {}

        def c1_answered() -> bool:
            found.update(lookup_json(tmp_path, "C1") or {})
            return any(answer is not None for answer in found.values())

        up.wait_until(c1_answered, "an answer for C1")
        assert set(found) == set(MODELS)
        up.wait_until(lambda: caught_up(tmp_path, 500), "status: 500 applied by every model")

        status = status_by_model(tmp_path)
        assert set(status) == set(MODELS)
        for model in MODELS:
            assert status[model]["applied"] == 500
            assert status[model]["dead"] == 0
            assert status[model]["stalled"] is False
        # each worker serves its own metrics, one port each from --metrics-port up
        applied: Counter[str] = Counter()
        for port in range(metrics_base, metrics_base + len(MODELS)):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                for family in text_string_to_metric_families(r.read().decode()):
                    for sample in family.samples:
                        if sample.name == "genderd_events_applied_total":
                            applied[sample.labels["model"]] += int(sample.value)
        assert applied == dict.fromkeys(MODELS, 500)

        answers = lookup_json(tmp_path, "C1")
        assert answers is not None
        assert answers["last"]["gender"] == c1[-1]
        assert answers["top"]["scores"] == counts
        assert answers["top7d"]["scores"] == counts  # every event is from now: in the window
        assert counts[answers["top"]["gender"]] == max(counts.values())
        assert answers["top7d"]["gender"] == answers["top"]["gender"]

        alias = genderd(tmp_path, "lookup", "C1", "--model", "model3")
        assert alias.returncode == 0, alias.stderr
        assert alias.stdout.split()[:2] == ["top7d", answers["top7d"]["gender"]], alias.stdout

        bad = genderd(tmp_path, "lookup", "bad cid")
        assert bad.returncode == 2, (bad.stdout, bad.stderr)
        assert "cid" in bad.stderr.lower()
        assert "Traceback" not in bad.stderr

        up.interrupt_and_expect_clean_stop()


def test_up_demo_prints_examples_and_answers_lookups(tmp_path: Path) -> None:
    """`--rate 0`: the demo's history alone, whose answers the README shows (issue 28)."""
    day = wall_clock_ms() // MS_PER_DAY
    with genderd_up(tmp_path, "--demo", "--rate", "0") as up:
        up.wait_until(lambda: "Ctrl-C stops it all" in up.out.read_text(), "the demo banner")
        banner = up.out.read_text()
        # The banner comes once everything answers: the API is ready and every model's
        # worker consumes (its group exists), right now, without waiting.
        base = f"http://127.0.0.1:{up.api_port}"
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            assert response.status == 200
        assert genderd(tmp_path, "status").returncode == 0  # nothing stalled
        groups = genderd(tmp_path, "redis-cli", "XINFO", "GROUPS", "genderd:{s0}:events")
        assert groups.returncode == 0 and all(m in groups.stdout for m in MODELS), groups
        assert "demo: wrote 20000 events (seed 0) of the 10 days before today" in banner
        assert "no live traffic (--rate 0)" in banner
        assert "genderd lookup C42" in banner
        assert "genderd status" in banner
        assert "pids: worker last #1 " in banner and "demo traffic" not in banner
        up.wait_ready()
        up.wait_until(lambda: caught_up(tmp_path, 20_000), "the history applied by every model")

        # the README's lookups, as the service gives them (the same UTC day: top7d's window)
        shown = shown_lookups((Path(__file__).parents[1] / "README.md").read_text())
        for cid, models in shown.items():
            found = lookup_json(tmp_path, cid)
            assert found is not None, cid
            for model, answer in models.items():
                if model == "top7d" and wall_clock_ms() // MS_PER_DAY != day:
                    continue  # midnight passed during the test: the window moved
                served = found[model]
                assert (served["gender"], served["scores"]) == (answer.gender, answer.scores)
                same_time = (
                    served["last_event_ts"] % MS_PER_DAY == answer.last_event_ts % MS_PER_DAY
                )
                assert same_time, (cid, model)

        # The API runs too, and the banner shows how to call it.
        base = f"http://127.0.0.1:{up.api_port}"
        assert f"curl -s '{base}/v1/clients/C42/gender?model=top7d'" in banner
        answer: dict[str, Any] = {}

        def api_answers() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/v1/clients/C42", timeout=5) as response:
                    answer.update(json.loads(response.read()))
            except OSError:
                return False
            return True

        up.wait_until(api_answers, "the API's answer for C42")
        assert answer["cid"] == "C42"
        assert answer["models"]["top"]["gender"] in GENDERS

        up.interrupt_and_expect_clean_stop()

    # Ctrl-C and up again at once: the port in TIME-WAIT is free, and the kept data is not
    # seeded a second time.
    with genderd_up(tmp_path, "--demo", api_port=up.api_port) as again:
        again.wait_until(lambda: "Ctrl-C stops it all" in again.out.read_text(), "the banner")
        banner = again.out.read_text()
        assert "demo: kept the" in banner and "no history added" in banner, banner
        again.interrupt_and_expect_clean_stop()


def test_up_restarts_a_killed_worker(tmp_path: Path) -> None:
    with genderd_up(tmp_path) as up:
        up.wait_ready()
        before = up.workers()
        (killed,) = [pid for pid, model in before.items() if model == "top"]
        os.kill(killed, signal.SIGKILL)

        def replaced() -> bool:
            now = up.workers()
            return killed not in now and "top" in now.values()

        up.wait_until(replaced, "a new top worker")
        after = up.workers()
        assert sorted(after.values()) == sorted(MODELS)
        # The other models' workers were left alone.
        assert {p: m for p, m in before.items() if m != "top"} == {
            p: m for p, m in after.items() if m != "top"
        }

        # The new worker does the work.
        produced = genderd(
            tmp_path, "produce", "--count", "200", "--clients", "20", "--seed", "3", "--quiet"
        )
        assert produced.returncode == 0, produced.stderr
        up.wait_until(lambda: caught_up(tmp_path, 200), "200 events applied by every model")
        assert "worker top #1 exited with -9" in up.err.read_text()

        up.interrupt_and_expect_clean_stop()


DEMO_HISTORY_EVENTS = 20_000  # what `up --demo` writes before its live traffic starts


def test_up_demo_keeps_feeding_live_traffic(tmp_path: Path) -> None:
    """SPEC §6: `up --demo` "also feeds synthetic traffic": after the initial history, events
    keep arriving (from its `demo traffic` child) and are applied."""
    with genderd_up(tmp_path, "--demo", "--rate", "500") as up:
        up.wait_until(lambda: "Ctrl-C stops it all" in up.out.read_text(), "the demo banner")
        up.wait_ready()

        def live_events_applied() -> bool:
            if "demo traffic exited" in up.err.read_text():
                pytest.fail(f"the demo traffic child died\n{up.output()}")
            return bool(status_by_model(tmp_path)["top"]["applied"] > DEMO_HISTORY_EVENTS)

        up.wait_until(
            live_events_applied, "live demo events beyond the initial history", timeout_s=60.0
        )
        up.interrupt_and_expect_clean_stop()


def test_produce_from_a_json_lines_file_next_to_up(tmp_path: Path) -> None:
    """SPEC §6: `genderd produce` writes events from a JSON Lines file (or stdin)."""
    lines = [
        {"cid": "F1", "gender": "female"},
        {"cid": "F1", "gender": "male"},
        {"cid": "F1", "gender": "female"},
        {"cid": "F2", "gender": " MALE "},
    ]
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with genderd_up(tmp_path) as up:
        up.wait_ready()
        produced = genderd(tmp_path, "produce", "--file", str(source), "--quiet")
        assert produced.returncode == 0, produced.stderr
        up.wait_until(lambda: caught_up(tmp_path, len(lines)), "the file's events applied")
        f1 = lookup_json(tmp_path, "F1")
        assert f1 is not None
        assert f1["top"]["scores"] == {"female": 2, "male": 1}
        assert f1["last"]["gender"] == "female"
        f2 = lookup_json(tmp_path, "F2")
        assert f2 is not None and f2["top"]["gender"] == "male"
        up.interrupt_and_expect_clean_stop()


def test_up_runs_and_serves_only_the_models_of_genderd_models(tmp_path: Path) -> None:
    """SPEC §13: GENDERD_MODELS selects the models a process runs and serves; `up` switches
    none of the others off (workers of them may run elsewhere: issue 27, finding 5), it names
    them, and `genderd models off` does it."""
    with genderd_up(tmp_path) as up:  # every model runs once: each is recorded
        up.wait_ready()
        up.interrupt_and_expect_clean_stop()
    chosen = {"GENDERD_MODELS": "last,top"}
    with genderd_up(tmp_path, settings=chosen) as up:
        up.wait_ready(("last", "top"))
        produced = genderd(tmp_path, "produce", "--count", "200", "--clients", "20", "--quiet")
        assert produced.returncode == 0, produced.stderr
        both = ("last", "top")
        up.wait_until(lambda: caught_up(tmp_path, 200, both, (0, 1)), "last and top applied")
        assert sorted(set(up.workers().values())) == ["last", "top"]
        left_out = sorted(set(MODELS) - {"last", "top"})
        assert f"left out by GENDERD_MODELS here: {', '.join(left_out)}" in up.output()

        # without GENDERD_MODELS: all named; the first up's workers stopped seconds ago
        quick = {"GENDERD_STALL_AFTER_S": "0.5"}
        shown = genderd(tmp_path, "status", "--json", env=quick)
        rows = {m["model"]: m for m in json.loads(shown.stdout)}
        assert set(rows) == set(MODELS)
        for name in left_out:  # no worker of them runs anywhere: STALLED, not hidden
            assert rows[name]["off"] is False and rows[name]["stalled"] is True
            assert rows[name]["lag"] == 200  # its group keeps its place in the streams
        assert rows["top"]["off"] is False and rows["top"]["applied"] == 200
        for name in left_out:
            switched = genderd(tmp_path, "models", "off", name, env=quick)
            assert switched.returncode == 0, switched.stderr
        shown = genderd(tmp_path, "status", "--json", env=quick)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        rows = {m["model"]: m for m in json.loads(shown.stdout)}
        assert all(rows[name]["off"] and not rows[name]["stalled"] for name in left_out)

        left = genderd(tmp_path, "lookup", "C1", "--model", "recency", env=chosen)
        assert left.returncode == 2 and "left out by GENDERD_MODELS" in left.stderr
        url = f"http://127.0.0.1:{up.api_port}/v1/clients/C1"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert set(json.loads(response.read())["models"]) == {"last", "top"}
        up.interrupt_and_expect_clean_stop()

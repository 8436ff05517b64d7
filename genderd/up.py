"""`genderd up`: one machine runs it all — a bundled server, a worker per model, (demo) traffic.

The supervisor starts the server unless a Redis URL is configured, starts each child as its
own process (``python -m genderd ...``), restarts a child that dies, and on Ctrl-C/SIGTERM
stops the children first (they finish their batches), then the server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from genderd import bundled, catalog, runstate
from genderd.deployment import Deployment, open_deployment_sync
from genderd.errors import ConfigurationError
from genderd.events import entry_ms, text
from genderd.producer import Producer, day_start, synthetic
from genderd.settings import Settings
from genderd.transport import SyncClient, sync_client

log = logging.getLogger(__name__)

POLL_S = 0.2
RESTART_DELAY_S = 1.0
RESTART_DELAY_MAX_S = 30.0
CHILD_STOP_TIMEOUT_S = 20.0
LAST_PORT = 65_535


@dataclass
class Child:
    """A supervised process and its restart bookkeeping."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float = 0.0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "genderd", *self.args],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the supervisor decides when children stop
        )
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)


@dataclass
class Plan:
    """The processes `genderd up` supervises, and the metrics port of each worker that has one."""

    children: list[Child]
    metrics_ports: dict[str, int] = field(default_factory=dict)


def plan(
    names: Sequence[str],
    workers_per_model: int,
    *,
    metrics_port: int | None = None,
    api_port: int | None = None,
) -> Plan:
    """``workers_per_model`` workers of each model, one metrics port each from
    ``metrics_port`` up, and the API on ``api_port`` (None: no API).

    Raises:
        ConfigurationError: a port needed is taken or out of range.
    """
    children = [
        Child(f"worker {name} #{n + 1}", ["worker", "--model", name])
        for name in names
        for n in range(workers_per_model)
    ]
    planned = Plan(children)
    if metrics_port is not None:
        last = metrics_port + len(children) - 1
        if last > LAST_PORT:
            raise ConfigurationError(f"--metrics-port {metrics_port}: {len(children)} ports needed")
        taken = [p for p in range(metrics_port, last + 1) if not bundled.port_is_free(p)]
        if taken:
            raise ConfigurationError(f"metrics port {taken[0]} is taken: pick another start")
        for offset, child in enumerate(children):
            child.args.extend(["--metrics-port", str(metrics_port + offset)])
            planned.metrics_ports[child.name] = metrics_port + offset
    if api_port is not None:
        if not bundled.port_is_free(api_port):
            raise ConfigurationError(f"port {api_port} is taken: pick another with --api-port")
        children.append(Child("api", ["serve", "--host", "127.0.0.1", "--port", str(api_port)]))
    return planned


class Supervisor:
    """Runs the server and children until :meth:`stop`."""

    def __init__(
        self, settings: Settings, children: Sequence[Child], *, port: int | None = None
    ) -> None:
        self.settings = settings
        self.children = list(children)
        self.port = port
        self.server: bundled.BundledServer | None = None
        self.state_dir = Path(settings.state_dir)
        self.url = settings.redis_url
        self._stopping = False

    def start_server(self) -> str:
        """Start the bundled server under the state dir unless a Redis URL is configured."""
        if self.url:
            return self.url
        running = runstate.read_state(self.state_dir)
        if running is not None:
            raise bundled.BundledServerError(
                f"a genderd server already runs from this directory (pid {running.pid}, "
                f"{running.url}); stop that `genderd up` first"
            )
        binary = bundled.find_binary(self.settings.redis_server)
        port = self.port or (
            bundled.DEFAULT_PORT
            if bundled.port_is_free(bundled.DEFAULT_PORT)
            else bundled.free_port()
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.server = bundled.BundledServer(
            binary, port, self.state_dir, persistent=True, log_file=self.state_dir / "server.log"
        ).start()
        self.server.write_state(self.state_dir)
        self.url = self.server.url
        log.info(
            "started %s on %s (pid %d), data in %s/",
            Path(binary).name,
            self.url,
            self.server.pid,
            self.state_dir,
        )
        return self.url

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        assert self.url is not None
        env["GENDERD_REDIS_URL"] = self.url
        return env

    def _check(self, env: dict[str, str]) -> None:
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if process is None:
                if now >= child.restart_at:
                    child.start(env)
                continue
            code = process.poll()
            if code is None:
                continue
            child.process = None
            # Quick deaths back off; a child that ran a while restarts at once.
            ran = now - child.started_at
            delay = (
                0.0
                if ran > RESTART_DELAY_MAX_S
                else min(RESTART_DELAY_MAX_S, RESTART_DELAY_S * 2 ** min(child.restarts, 5))
            )
            child.restarts += 1
            child.restart_at = now + delay
            log.warning("%s exited with %s; restarting in %.1fs", child.name, code, delay)

    def run(
        self,
        ready: Callable[[], bool] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        """Supervise until SIGINT/SIGTERM; call ``on_ready`` once, when ``ready()`` first
        says everything answers (checked every poll until then)."""
        self.start_server()
        env = self.child_env()
        previous = {
            sig: signal.signal(sig, lambda *_: self.request_stop())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        waiting = ready is not None
        try:
            while not self._stopping:
                self._check(env)
                if waiting and ready is not None and ready():
                    waiting = False
                    if on_ready is not None:
                        on_ready()
                time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.shutdown()

    def pids(self) -> str:
        """The running children and their pids, in one line for the user: a child that exits
        is started again, so killing a model's worker restarts it (e.g. on fixed code)."""
        running = ", ".join(
            f"{child.name} {child.process.pid}"
            for child in self.children
            if child.process is not None
        )
        return f"pids: {running} (`kill PID` restarts one: `up` starts it again)"

    def request_stop(self) -> None:
        self._stopping = True

    def shutdown(self) -> None:
        """Stop children (SIGTERM, then SIGKILL after a timeout), then the server. Idempotent."""
        running = [
            c.process for c in self.children if c.process is not None and c.process.poll() is None
        ]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
        for child in self.children:
            child.process = None
        if self.server is not None:
            self.server.stop()
            runstate.clear_state(self.state_dir)
            self.server = None
            log.info("server stopped; data kept in %s/", self.state_dir)


@dataclass(frozen=True)
class Started:
    """What :func:`start` opened: the server's URL, a client, the deployment, the demo tips."""

    url: str
    client: SyncClient
    deployment: Deployment
    tips: str


def start(
    supervisor: Supervisor, configured: Deployment, demo: Demo | None, api_port: int | None
) -> Started:
    """Start the server (unless a URL is configured), open the deployment and, with a
    ``demo``, start it; on any failure stop what was started."""
    try:
        url = supervisor.start_server()
        client = sync_client(configured.settings, url)
        deployment = open_deployment_sync(client, configured)
        if deployment.settings.models:
            name_left_out(client, deployment)
        tips = ""
        if demo is not None:
            tips = start_demo(supervisor, client, deployment, demo, api_port)
    except BaseException:
        supervisor.shutdown()  # never leave a server behind
        raise
    return Started(url, client, deployment, tips)


def name_left_out(client: SyncClient, deployment: Deployment) -> list[str]:
    """Name, in one line, the recorded models switched on that ``GENDERD_MODELS`` leaves out
    here, and the operator's choices; switch none off (their workers may run elsewhere)."""
    records = catalog.recorded(client.hgetall(deployment.keys.models))
    names = sorted(catalog.left_out(deployment, records))
    if names:
        log.warning(
            "models recorded in this deployment but left out by GENDERD_MODELS here: %s; "
            "status shows each STALLED while events wait for it and no worker of it runs "
            "elsewhere: `genderd models off NAME` (it keeps its place in the streams) or "
            "`genderd models retire NAME`",
            ", ".join(names),
        )
    return names


DEMO_HISTORY_EVENTS = 20_000
DEMO_HISTORY_DAYS = 10
DEMO_CLIENTS = 1_000
DEMO_SEED = 0  # the demo's history is the same on every machine (`up --demo --seed N`)


@dataclass(frozen=True)
class Demo:
    """What `up --demo` writes: a seeded history, then ``rate`` live events/s (0: none)."""

    rate: float
    seed: int = DEMO_SEED


def demo_anchor(client: SyncClient, deployment: Deployment) -> tuple[int, int]:
    """(events kept in the streams, the demo's anchor): the start of the current UTC day for a
    new history; for kept events, the start of the day the oldest of them arrived (the day
    an earlier demo wrote its history), so that live traffic agrees with that history."""
    kept = 0
    first: int | None = None
    for shard in deployment.shards:
        stream = deployment.keys.stream(shard)
        kept += int(client.xlen(stream))
        oldest = client.xrange(stream, count=1)
        if oldest:
            arrived = entry_ms(text(oldest[0][0]))
            first = arrived if first is None else min(first, arrived)
    return kept, day_start(deployment.clock() if first is None else first)


def start_demo(
    supervisor: Supervisor,
    client: SyncClient,
    deployment: Deployment,
    demo: Demo,
    api_port: int | None,
) -> str:
    """Write the seeded history (into an empty deployment only), let a supervised producer
    feed live traffic (unless the rate is 0); return what to try."""
    genders = deployment.settings.genders
    kept, anchor = demo_anchor(client, deployment)
    if kept:
        history = (
            f"demo: kept the {kept} events already in the streams (no history added; "
            f"`rm -r {supervisor.state_dir}` starts afresh)"
        )
    else:
        with Producer(client, deployment) as producer:
            for event in synthetic(
                DEMO_HISTORY_EVENTS,
                DEMO_CLIENTS,
                genders,
                days=DEMO_HISTORY_DAYS,
                seed=demo.seed,
                anchor_ms=anchor,
            ):
                producer.send_fields(event)
        history = (
            f"demo: wrote {DEMO_HISTORY_EVENTS} events (seed {demo.seed}) of the "
            f"{DEMO_HISTORY_DAYS} days before today"
        )
    live = "no live traffic (--rate 0)"
    if demo.rate:
        args = ["produce", "--count", "0", "--clients", str(DEMO_CLIENTS), "--quiet"]
        args += ["--rate", f"{demo.rate:g}", "--seed", str(demo.seed), "--anchor", str(anchor)]
        supervisor.children.append(Child("demo traffic", args))
        live = f"now {demo.rate:g} events/s"
    return _tips(deployment, f"{history} for clients C1..C{DEMO_CLIENTS}, {live}", api_port)


def _tips(deployment: Deployment, history: str, api_port: int | None) -> str:
    stream = deployment.keys.stream(deployment.shard_of("C42"))
    lines = [
        f"{history}. Try, from this directory:",
        "  genderd lookup C42",
        "  genderd lookup C42 --model top7d",
        "  genderd status",
        "  genderd grades      # how well each model predicts the next visit, live",
    ]
    if api_port is not None:
        base = f"http://127.0.0.1:{api_port}"
        json_header = "-H 'content-type: application/json'"
        lines += [
            f"  curl -s {base}/v1/clients/C42/gender   # the champion's answer (genderd champion)",
            f"  curl -s '{base}/v1/clients/C42/gender?model=top7d'",
            f"  curl -s {base}/v1/clients/C42",
            f"  curl -s -XPOST {base}/v1/lookup {json_header} "
            """-d '{"cids":["C1","C2"],"model":"top"}'""",
            f"  curl -s -XPOST {base}/v1/events {json_header} "
            """-d '{"cid":"C9","gender":"female"}'""",
            f"  open {base}/docs",
        ]
    lines += [
        "or write an event with any Redis client (the shard is crc32(cid) mod shards), e.g. "
        "the bundled valkey-cli:",
        f"  genderd redis-cli XADD '{stream}' '*' cid C42 gender male ts $(date +%s000)",
    ]
    return "\n".join(lines)


READY_TIMEOUT_S = 1.0


def everything_answers(
    client: SyncClient, deployment: Deployment, api_port: int | None
) -> Callable[[], bool]:
    """A check for :meth:`Supervisor.run`: every model's group exists on every shard (its
    worker is consuming) and, with an API, ``/readyz`` answers 200."""
    streams = [deployment.keys.stream(shard) for shard in deployment.shards]
    models = set(deployment.registry.names())

    def ready() -> bool:
        try:
            for stream in streams:
                groups = {text(g["name"]) for g in client.xinfo_groups(stream)}
                if not models <= groups:
                    return False
        except Exception:  # no stream yet, or the server is busy: not ready
            return False
        if api_port is None:
            return True
        url = f"http://127.0.0.1:{api_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=READY_TIMEOUT_S) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    return ready

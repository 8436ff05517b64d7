"""The record a `genderd up` keeps of its bundled server (``<state_dir>/server.json``).

`up` writes it when its server is running and removes it when the server stops; every other
command run from the same directory reads it to find the server without configuration. It
sits below both :mod:`genderd.bundled` (which starts servers) and :mod:`genderd.transport`
(which connects to them).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_FILE = "server.json"


@dataclass(frozen=True)
class ServerState:
    """What `genderd up` records about its server."""

    url: str
    pid: int
    port: int


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(state_dir: Path) -> ServerState | None:
    """The recorded server of ``state_dir`` if its process is still alive."""
    try:
        data = json.loads((state_dir / STATE_FILE).read_text())
        state = ServerState(url=str(data["url"]), pid=int(data["pid"]), port=int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state if pid_alive(state.pid) else None


def write_state(state_dir: Path, state: ServerState) -> None:
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(state)))


def clear_state(state_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (state_dir / STATE_FILE).unlink()

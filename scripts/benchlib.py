"""What the benchmark scripts share: the machine they ran on, as a line for their tables, the
server's CPU time, read from the server itself, and an in-process worker that drains the
streams."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from genderd.transport import connect
from genderd.worker import Worker


def machine() -> str:
    """CPU model, core count and Python version of this machine."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def server_cpu_s(client: Any) -> float:
    """The server's main-thread CPU seconds (``INFO cpu``; all threads when the server does
    not report its main thread apart), from a blocking redis-py client."""
    info = client.info("cpu")
    if "used_cpu_user_main_thread" in info:
        return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def drain_worker(deployment: Any, model: Any, grading: bool = True) -> Any:
    """An in-process worker of ``model`` (over ``deployment``, its clock included) applies
    every entry of the streams not yet applied; returns its totals (an ``Outcome``)."""

    async def run() -> Any:
        links = connect(deployment.settings)
        try:
            worker = Worker(deployment, links, model, grading=grading)
            await worker.ensure_groups()
            await worker.drain()
            return worker.totals
        finally:
            await links.close()

    return asyncio.run(run())


def bar_chart(
    path: str,
    title: str,
    labels: list[str],
    series: dict[str, list[float]],
    ylabel: str,
    *,
    line: tuple[float, str] | None = None,
    notes: list[str] | None = None,
) -> None:
    """A bar chart (one group of bars per label, one bar per series) saved as a PNG at
    ``path``, titled with ``title`` and the machine it ran on; ``line``: a horizontal
    reference (value, label); ``notes``: a text above each group. Needs matplotlib
    (``pip install -e '.[bench]'``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, values, width, label=name)
    if line is not None:
        ax.axhline(line[0], color="black", linestyle="--", linewidth=1, label=line[1])
    if notes:
        top = max(max(v) for v in series.values())
        for x, note in enumerate(notes):
            own = max(values[x] for values in series.values())
            ax.text(x, own + top * 0.02, note, ha="center", va="bottom", fontsize=9)
        ax.set_ylim(0, top * 1.15)
    ax.set_xticks(range(len(labels)), labels, fontsize=9)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{machine()}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def wait_ready(base: str, timeout_s: float = 30.0) -> None:
    """Until the API at ``base`` answers ``/readyz`` with 200 (exit after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the API did not become ready")
        time.sleep(0.1)


def start_api(url: str, port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    """`genderd serve` on 127.0.0.1:``port`` over the server at ``url`` (WARNING logs), with
    ``workers`` uvicorn processes; the caller waits for it (:func:`wait_ready`) and stops it."""
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "genderd", "--log-level", "WARNING", "serve"),
            *("--port", str(port), "--workers", str(workers)),
        ],
        env=dict(os.environ, GENDERD_REDIS_URL=url),
    )


def run_wrk(url: str, script: str, connections: int, duration_s: int, *flags: str) -> str:
    """wrk's report of one run (1 thread) of the Lua ``script`` against ``url``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        return subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", *flags, "-s", handle.name, url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        os.unlink(handle.name)


def wrk_rate(report: str) -> float:
    """Requests per second of a wrk report."""
    return float(re.search(r"Requests/sec:\s+([\d.]+)", report).group(1))  # type: ignore[union-attr]

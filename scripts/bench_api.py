"""API benchmark: the lookup endpoint against a no-I/O route of the same app, same server.

Starts its own Redis-compatible server from the bundled binary and `genderd serve` (one
uvicorn worker) on free loopback ports, fills the store (events over N clients, applied by
in-process workers), then loads each route with wrk (https://github.com/wg/wrk, `apt-get
install wrk`): first closed-loop at full speed (the maximum rate), then paced at half that rate
(each connection waits between requests, wrk's `delay()`), and prints requests/s, p50 and p99
for both and the lookup/no-I/O ratio. Asserts nothing about speed.

    python scripts/bench_api.py --clients 10000 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
from benchlib import bar_chart, machine, run_wrk, start_api, wait_ready, wrk_rate

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.deployment import Deployment, open_deployment_sync
from genderd.producer import Producer, synthetic
from genderd.settings import Settings
from genderd.transport import connect
from genderd.worker import Worker

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors and timeouts


def median(runs: list[Run]) -> Run:
    """The per-figure median of several runs."""
    return Run(
        statistics.median(r.rate for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.errors for r in runs),
    )


def lua(path_expr: str, delay_ms: float | None) -> str:
    """A wrk script: random clients; with ``delay_ms``, each connection paces itself."""
    script = f"""
math.randomseed(42)
request = function()
  return wrk.format("GET", {path_expr})
end
"""
    if delay_ms is not None:
        script += f"delay = function() return {delay_ms:.3f} end\n"
    return script


def wrk(url: str, script: str, connections: int, duration_s: int) -> Run:
    out = run_wrk(url, script, connections, duration_s, "--latency")
    rate = wrk_rate(out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
        return float(value) * UNITS[unit]

    # 404s are answers (clients without one); socket errors and timeouts are errors.
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Run(rate, percentile("50"), percentile("99"), errors)


def fill(deployment: Deployment, events: int, clients: int) -> None:
    sync = redis.Redis.from_url(deployment.settings.redis_url or "")
    with Producer(sync, deployment) as producer:
        for event in synthetic(events, clients, deployment.settings.genders, days=10, seed=1):
            producer.send_fields(event)
    sync.close()

    async def apply() -> None:
        links = connect(deployment.settings)
        for model in deployment.registry:
            worker = Worker(deployment, links, model)
            await worker.ensure_groups()
            await worker.drain()
        await links.close()

    asyncio.run(apply())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds over all routes; the median is shown"
    )
    parser.add_argument("--plot", help="also draw the max req/s per route as a PNG here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    with (
        tempfile.TemporaryDirectory() as data,
        BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server,
    ):
        sync = redis.Redis.from_url(server.url)
        deployment = open_deployment_sync(sync, Settings(redis_url=server.url))
        sync.close()
        fill(deployment, args.events, args.clients)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api = start_api(server.url, port, args.workers)
        try:
            wait_ready(base)
            # Every route's wrk script has the same shape (a random client id and the same
            # string work), so that the load generator costs the same for each.
            cid = f'"C" .. math.random(1, {args.clients})'
            client = f'"/v1/clients/" .. {cid}'
            routes = {
                "no-I/O route `GET /healthz`": f'"/healthz?cid=" .. {cid}',
                "lookup `GET /v1/clients/{cid}/gender` (top)": f'{client} .. "/gender"',
                "lookup `GET /v1/clients/{cid}/gender?model=top7d`": (
                    f'{client} .. "/gender?model=top7d"'
                ),
                "lookup `GET /v1/clients/{cid}` (all models)": client,
            }
            rounds: dict[str, list[tuple[Run, Run]]] = {name: [] for name in routes}
            for _ in range(args.repeat):  # interleaved, so that drift hits every route alike
                for name, path in routes.items():
                    wrk(base, lua(path, None), args.connections, 2)  # warm-up
                    full = wrk(base, lua(path, None), args.connections, args.duration)
                    # Pace each connection so that together they ask for half the maximum.
                    delay_ms = args.connections / (full.rate / 2) * 1000
                    half = wrk(base, lua(path, delay_ms), args.connections, args.duration)
                    rounds[name].append((full, half))
            results = {
                name: (median([f for f, _ in runs]), median([h for _, h in runs]))
                for name, runs in rounds.items()
            }
        finally:
            api.terminate()
            api.wait(30)

    healthz = next(iter(results.values()))[0].rate
    print(
        f"\n{args.clients:,} clients, {args.events:,} events; `genderd serve` with "
        f"{args.workers} uvicorn worker(s); wrk 1 thread, {args.connections} connections, "
        f"{args.duration} s per run, "
        f"median of {args.repeat} rounds; server, API and wrk on the same machine: {machine()}\n"
    )
    print(
        "| route | max req/s | ratio to no-I/O | p50 / p99 at max (ms) "
        "| paced req/s | p50 / p99 at half max (ms) | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (full, half) in results.items():
        print(
            f"| {name} | {full.rate:,.0f} | {full.rate / healthz:.2f} | "
            f"{full.p50_ms:.2f} / {full.p99_ms:.2f} | {half.rate:,.0f} | "
            f"{half.p50_ms:.2f} / {half.p99_ms:.2f} | {full.errors + half.errors} |"
        )
    if args.plot:
        names = [name.split("`")[1] if "`" in name else name for name in results]
        rates = [full.rate for full, _ in results.values()]
        bar_chart(
            args.plot,
            "HTTP API: max requests/s per route (1 uvicorn worker, wrk)",
            [n.replace("GET ", "").replace("/v1/clients/{cid}", "…/{cid}") for n in names],
            {"max req/s": rates},
            "requests/s",
            notes=[f"{rate / healthz:.2f}x" for rate in rates],
        )
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()

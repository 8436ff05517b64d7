"""Same-server A/B of the apply scripts: this tree's batch frame against a baseline revision's,
alternating batch by batch on one server, so that the machine's swings hit both alike.

For each of ``last``, ``top``, ``top7d``: two streams get the same N events over C clients (ts
over the last 3 days); batches of B entries are read with XREADGROUP and given to the two
versions' apply scripts in turn, each call timed by the server's main-thread CPU (``INFO
cpu`` before and after it). Prints µs of server CPU per event and the ratio per round.

The baseline may speak any of the frame contracts this script knows, told apart by its script
text: engine v2's before client data lifecycle (no erasure sentinel, expiry or marker
arguments; revision 26034d9), lifecycle's with data layout 2 (11bbc4a), or layout 3's (the
counting models take the oldest layout the deployment may hold). Both sides are called as in a
deployment created with their own layout (no layout-1 key for ``top``) where nobody was erased
yet.

    python scripts/bench_frame_ab.py --base 11bbc4a --rounds 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from benchlib import machine, server_cpu_s

from genderd.bundled import BundledServer, find_binary, free_port
from genderd.clock import client_expiry_ms, day_of
from genderd.keys import Keys
from genderd.lua import LIB, assemble, source

MODELS = ("last", "top", "top7d")
GENDERS = ["female", "kids", "male"]
GENDER_PARAMS = [str(len(GENDERS)), *GENDERS]  # G, then the names, sorted


@dataclass
class Contract:
    """How a revision's apply scripts are called (see the module's docstring)."""

    lifecycle: bool  # KEYS[3] = the erasure sentinel; ARGV[3] expiry, ARGV[4] sentinel value
    params: dict[str, list[str]]  # the model parameters, per model


def contract_of(sources: dict[str, str]) -> Contract:
    lifecycle = "erasure sentinel" in sources["last"]
    if "oldest data layout" in sources["top"]:  # layout 3, in a deployment created with it
        return Contract(
            lifecycle,
            {"last": [], "top": ["3", *GENDER_PARAMS], "top7d": ["3", "7", *GENDER_PARAMS]},
        )
    flag = ["0"] if 'ARGV[5] = "1" when layout 1' in sources["top"] else []  # no layout-1 key
    return Contract(
        lifecycle, {"last": [], "top": [*flag, *GENDER_PARAMS], "top7d": ["7", *GENDER_PARAMS]}
    )


def base_source(rev: str, model: str) -> str:
    """The revision's apply script of ``model``, glued as that revision's loader did: from the
    chunks its file names (a "uses" line), or after the whole ``_lib.lua`` (before them)."""

    def read(package: str, name: str) -> str:
        return subprocess.run(
            ["git", "show", f"{rev}:genderd/lua/{name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    script = f"{model}.lua"
    names = (script,) if "-- uses:" in read("", script) else (LIB, script)
    return assemble(*names, read=read)[0]


def fill(client: redis.Redis, model: str, prefix: str, args: argparse.Namespace, seed: int) -> None:
    stream = Keys(prefix).stream(0)
    client.xgroup_create(stream, model, id="0", mkstream=True)
    rnd, now = random.Random(seed), int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for _ in range(args.events):
        event = {
            "cid": f"C{rnd.randrange(args.clients)}",
            "gender": rnd.choice(GENDERS),
            "ts": str(now - rnd.randrange(3) * 86_400_000),
        }
        pipe.xadd(stream, event)  # type: ignore[arg-type]
    pipe.execute()


def next_call(
    client: redis.Redis, contract: Contract, model: str, prefix: str, batch: int, now: int
) -> tuple[list[str], list[str], int] | None:
    """KEYS and ARGV of the next batch for ``contract``, and its size."""
    keys = Keys(prefix)
    stream = keys.stream(0)
    reply: Any = client.xreadgroup(model, "c", {stream: ">"}, count=batch)
    if not reply:
        return None
    per: dict[str, list[tuple[str, str, str]]] = {}
    for entry_id, fields in reply[0][1]:
        per.setdefault(fields[b"cid"].decode(), []).append(
            (entry_id.decode(), fields[b"gender"].decode(), fields[b"ts"].decode())
        )
    if not contract.lifecycle:
        call_keys, call_args = [stream, keys.stats(0)], [model, str(now)]
    else:  # no erasure in the shard: no sentinel value, no markers
        call_keys = [stream, keys.stats(0), keys.erasures(0)]
        call_args = [model, str(now), str(client_expiry_ms(now, 365)), ""]
    call_args += contract.params[model]
    for cid, own in per.items():
        call_keys.append(keys.result(0, cid))
        if model == "top" and not contract.lifecycle:  # engine v2 always took layout 1's key
            call_keys.append(keys.state(0, "top", cid))
        elif model == "top7d":
            call_keys += [keys.day_bucket(0, "top7d", day_of(int(e[2])), cid) for e in own]
        call_args.append(str(len(own)))
        for event in own:
            call_args += event
    return call_keys, call_args, len(reply[0][1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="11bbc4a", help="baseline git revision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--clients", type=int, default=6_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    print(
        f"machine: {machine()}; baseline {args.base}; {args.events:,} events over "
        f"{args.clients:,} clients, batches of {args.batch}, alternating batch by batch"
    )
    print(f"| model | {args.base}, µs/event | this tree, µs/event | this tree / base, per round |")
    print("|---|---:|---:|---|")
    all_sources = {
        "base": {model: base_source(args.base, model) for model in MODELS},
        "new": {model: source(f"{model}.lua") for model in MODELS},
    }
    contracts = {variant: contract_of(of) for variant, of in all_sources.items()}
    with tempfile.TemporaryDirectory() as data:
        with BundledServer(find_binary(), free_port(), Path(data), persistent=False) as server:
            client = redis.Redis.from_url(server.url)
            for model in MODELS:
                sources = {variant: of[model] for variant, of in all_sources.items()}
                totals = {"base": [0.0, 0], "new": [0.0, 0]}
                ratios = []
                for round_ in range(args.rounds):
                    client.flushall()
                    scripts = {v: client.register_script(src) for v, src in sources.items()}
                    for variant in scripts:
                        fill(client, model, f"{variant}{round_}", args, round_)
                    run = {"base": [0.0, 0], "new": [0.0, 0]}
                    order, now = ["base", "new"], int(time.time() * 1000)
                    busy = True
                    while busy:
                        busy = False
                        for variant in order:
                            call = next_call(
                                client,
                                contracts[variant],
                                model,
                                f"{variant}{round_}",
                                args.batch,
                                now,
                            )
                            if call is None:
                                continue
                            busy = True
                            cpu = server_cpu_s(client)
                            scripts[variant](keys=call[0], args=call[1])
                            run[variant][0] += server_cpu_s(client) - cpu
                            run[variant][1] += call[2]
                        order.reverse()
                    ratios.append(
                        (run["new"][0] / run["new"][1]) / (run["base"][0] / run["base"][1])
                    )
                    for variant, (seconds, events) in run.items():
                        totals[variant][0] += seconds
                        totals[variant][1] += events
                per_event = {v: s / n * 1e6 for v, (s, n) in totals.items()}
                print(
                    f"| `{model}` | {per_event['base']:.2f} | {per_event['new']:.2f} | "
                    f"{', '.join(f'{r:.3f}' for r in ratios)} "
                    f"(median {statistics.median(ratios):.3f}) |"
                )
            client.close()


if __name__ == "__main__":
    main()

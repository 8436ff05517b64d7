"""`genderd export` (issue 28): the retained history in the format `evaluate --events` reads,
read-only; `evaluate` of the exported file gives the same figures as `evaluate` on the streams."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from genderd.cli import main
from genderd.clock import MS_PER_DAY, wall_clock_ms
from genderd.keys import Keys, shard_of

SHARDS = 4
ODD_CID = 'C,"1'  # a valid id that CSV must quote


def run(redis_url: str, *args: str) -> Result:
    environment = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": str(SHARDS)}
    return CliRunner().invoke(main, list(args), env=environment, catch_exceptions=False)


def _state(client: redis.Redis) -> dict[Any, Any]:
    """Every key with its type and, for a stream, its length and consumer groups."""
    state: dict[Any, Any] = {}
    for key in client.keys("*"):
        kind = client.type(key)
        state[key] = (
            (kind, client.xlen(key), len(client.xinfo_groups(key))) if kind == b"stream" else kind
        )
    return state


@pytest.fixture
def history(redis_url: str, sync_redis: redis.Redis) -> int:
    """3,000 synthetic events over 10 days, an event without `ts`, one of a client whose id
    CSV quotes, and three invalid entries; returns the number of valid events."""
    produced = run(
        redis_url,
        "produce",
        "--count",
        "3000",
        "--clients",
        "150",
        "--days",
        "10",
        "--seed",
        "7",
        "--quiet",
    )
    assert produced.exit_code == 0, produced.output
    keys = Keys()
    now = wall_clock_ms()
    odd = keys.stream(shard_of(ODD_CID, SHARDS))
    sync_redis.xadd(odd, {"cid": ODD_CID, "gender": "female", "ts": str(now - MS_PER_DAY)})
    sync_redis.xadd(odd, {"cid": ODD_CID, "gender": "male"})  # ts: its arrival time
    sync_redis.xadd(keys.stream(0), {"cid": "C1", "gender": "shoes", "ts": str(now)})
    sync_redis.xadd(keys.stream(0), {"cid": "C1", "gender": "male", "ts": "-5"})
    wrong = keys.stream((shard_of("C2", SHARDS) + 1) % SHARDS)
    sync_redis.xadd(wrong, {"cid": "C2", "gender": "male", "ts": str(now)})
    return 3002


def _models(report: Result) -> list[dict[str, Any]]:
    assert report.exit_code == 0, report.output
    return list(json.loads(report.stdout)["models"])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_evaluate_of_the_export_gives_the_figures_of_evaluate_on_the_streams(
    redis_url: str, sync_redis: redis.Redis, history: int, tmp_path: Path, fmt: str
) -> None:
    before = _state(sync_redis)
    path = tmp_path / f"history.{fmt}"
    exported = run(redis_url, "export", "--format", fmt, "-o", str(path))
    assert exported.exit_code == 0, exported.output
    assert exported.stdout == ""
    assert (
        f"exported {history:,} events of {history + 3:,} entries to {path}; 3 invalid left out "
        "(bad_ts 1, unknown_gender 1, wrong_shard 1)"
    ) in exported.stderr
    assert _state(sync_redis) == before  # read-only: no key, entry or group written

    on_streams = _models(run(redis_url, "evaluate", "--json"))
    from_file = _models(run(redis_url, "evaluate", "--events", str(path), "--json"))
    assert from_file == on_streams
    assert on_streams[0]["events"] == history

    lines = path.read_text().splitlines()
    assert len(lines) == history + (fmt == "csv")
    if fmt == "csv":
        rows = list(csv.reader(lines))
        assert rows[0] == ["cid", "gender", "ts"]
        assert sum(row[0] == ODD_CID for row in rows) == 2
    else:
        assert sum(json.loads(line)["cid"] == ODD_CID for line in lines) == 2
        assert all(set(json.loads(line)) == {"cid", "gender", "ts"} for line in lines)


def test_export_to_stdout_keeps_the_times_between_since_and_until(
    redis_url: str, history: int
) -> None:
    everything = [json.loads(line) for line in run(redis_url, "export").stdout.splitlines()]
    assert len(everything) == history
    times = sorted(event["ts"] for event in everything)
    since, until = times[len(times) // 4], times[len(times) // 2]
    kept = run(redis_url, "export", "--since", str(since), "--until", str(until))
    assert kept.exit_code == 0, kept.output
    expected = [e for e in everything if since <= e["ts"] < until]
    assert [json.loads(line) for line in kept.stdout.splitlines()] == expected


def test_an_export_that_fails_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    failed = run("redis://127.0.0.1:1/0", "export", "-o", str(path))
    assert failed.exit_code == 1, failed.output
    assert len(failed.stderr.splitlines()) == 1, failed.stderr
    assert list(tmp_path.iterdir()) == []

"""`genderd evaluate`'s order, warm-up, predictions file, provenance and invalid-input warning
(SPEC §11), end to end on small files (no Redis) and on the streams (read-only)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from genderd.deployment import Deployment, open_deployment_sync
from genderd.evaluation import InputSummary, render, stream_chunks
from genderd.evaluation.inputs import in_time_order, read_file
from genderd.evaluation.provenance import server_address
from genderd.evaluation.report import Provenance, Source
from genderd.keys import Keys
from genderd.settings import Settings
from genderd.transport import connect

from .support.evalreports import sample_report
from .test_evaluate_cli import DAY1, DAY2, evaluate, history

HOUR = 3_600_000
SETTINGS = Settings(genders="female,male,kids")


def write(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def late_history() -> list[dict[str, Any]]:
    """history() in arrival order: each client's third event of the first day arrives after
    its first event of the second day (a day late)."""
    events = history()
    for n in range(30):
        at = 6 * n
        events[at + 2], events[at + 3] = events[at + 3], events[at + 2]
    return events


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


# -- --order -----------------------------------------------------------------------------------
def test_arrival_order_applies_a_files_lines_in_their_order(tmp_path: Path) -> None:
    lines = [("male", 10), ("female", 12), ("kids", 11), ("male", 13)]  # kids: a late line
    path = write(
        tmp_path / "late.jsonl",
        [{"cid": "a", "gender": g, "ts": DAY1 + h * HOUR} for g, h in lines] + history(),
    )
    by_time, by_arrival = tmp_path / "time.csv", tmp_path / "arrival.csv"
    common = ("--events", str(path), "--models", "last,top7d", "--json")
    timed = evaluate(*common, "--predictions", str(by_time))
    arrived = evaluate(*common, "--order", "arrival", "--predictions", str(by_arrival))
    assert timed.exit_code == 0 and arrived.exit_code == 0, timed.output + arrived.output
    assert json.loads(timed.stdout)["order"] == "time"
    report = json.loads(arrived.stdout)
    assert (report["order"], report["events"], report["clients"]) == ("arrival", 184, 31)

    def last(found: list[dict[str, str]]) -> list[tuple[str, str, str]]:
        return [
            (r["entry_id"], r["gender"], r["prediction"])
            for r in found
            if r["cid"] == "a" and r["model"] == "last"
        ]

    at = [str(DAY1 + h * HOUR) for h in (10, 11, 12, 13)]
    # time order: the lines sorted by ts; the late kids line sees only the first one
    assert last(rows(by_time)) == [
        (f"{at[0]}-1", "male", ""),
        (f"{at[2]}-3", "kids", "male"),
        (f"{at[2]}-2", "female", "kids"),
        (f"{at[3]}-4", "male", "female"),
    ]
    # arrival order: the lines in their order (ids: the newest ts before them, then the line);
    # the late line leaves last as it was (its ts is not the greatest)
    assert last(rows(by_arrival)) == [
        (f"{at[0]}-1", "male", ""),
        (f"{at[2]}-2", "female", "male"),
        (f"{at[2]}-3", "kids", "female"),
        (f"{at[3]}-4", "male", "female"),
    ]
    assert "in arrival order" in evaluate("--events", str(path), "--order", "arrival").stdout


def test_a_file_in_time_order_is_evaluated_as_it_is_read(tmp_path: Path) -> None:
    ordered = write(tmp_path / "ordered.jsonl", sorted(history(), key=lambda e: e["ts"]))
    late = write(tmp_path / "late.jsonl", late_history())
    assert in_time_order(str(ordered), now_ms=DAY2)
    assert not in_time_order(str(late), now_ms=DAY2)
    # same figures either way
    one = json.loads(evaluate("--events", str(ordered), "--json").stdout)["models"]
    other = json.loads(evaluate("--events", str(late), "--json").stdout)["models"]
    assert one == other


def test_file_ids_carry_the_arrival_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"cid": "a", "gender": "male", "ts": 50}\n'
        '{"cid": "a", "gender": "male", "ts": 20}\n'
        '{"cid": "a", "gender": "male"}\n'
        '{"cid": "a", "gender": "male", "ts": 60}\n'
    )
    read = read_file(str(path), SETTINGS, now_ms=1000, summary=InputSummary())
    assert [(e.id, e.ts) for e in read] == [
        ("50-1", 50),
        ("50-2", 20),
        ("1000-3", 1000),
        ("60-4", 60),
    ]


# -- --warmup ----------------------------------------------------------------------------------
def test_warmup_needs_since_and_applies_the_history_before_it(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", history())
    lonely = evaluate("--events", str(path), "--warmup")
    assert lonely.exit_code == 2 and "--warmup applies the history before --since" in lonely.output
    predictions = tmp_path / "p.jsonl"
    cold = json.loads(evaluate("--events", str(path), "--since", str(DAY2), "--json").stdout)
    result = evaluate(
        "--events", str(path), "--since", str(DAY2), "--warmup", "--json",
        "--predictions", str(predictions),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    warm = json.loads(result.stdout)
    assert (cold["events"], cold["warmup_events"]) == (90, 0)
    assert (warm["events"], warm["warmup_events"], warm["first_ts"]) == (180, 90, DAY1)
    assert warm["provenance"]["warmup"] is True and warm["provenance"]["since_ms"] == DAY2
    top = {m["model"]: m for m in warm["models"]}["top"]
    assert top["events"] == 90 and top["coverage"] == 1.0  # every client has a history
    found = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert {row["earlier_events"] for row in found} == {3, 4, 5}
    assert min(row["ts"] for row in found) >= DAY2
    assert (
        "warm-up: 90 events before --since, not scored"
        in evaluate("--events", str(path), "--since", str(DAY2), "--warmup").stdout
    )


# -- --predictions -----------------------------------------------------------------------------
def test_predictions_are_one_row_per_scored_event_and_model(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", history())
    out = tmp_path / "p.csv"
    result = evaluate(
        "--events", str(path), "--models", "last,top", "--session-gap", "30",
        "--predictions", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = rows(out)
    assert list(found[0]) == [
        "entry_id", "cid", "ts", "gender", "model", "prediction", "correct", "earlier_events"
    ]  # fmt: skip
    scored = {r["entry_id"] for r in found}
    assert len(found) == 3 * len(scored) == 3 * 60  # two sessions of 30 clients, 3 rows each
    first = [r for r in found if r["cid"] == "C0" and r["earlier_events"] == "0"]
    assert [(r["model"], r["prediction"], r["correct"]) for r in first] == [
        ("majority", "", "False"),
        ("last", "", "False"),
        ("top", "", "False"),
    ]
    second = [r for r in found if r["cid"] == "C0" and r["earlier_events"] == "3"]
    assert [(r["model"], r["prediction"], r["gender"]) for r in second][1:] == [
        ("last", "female", "female"),
        ("top", "female", "female"),
    ]
    assert all(r["correct"] == str(r["prediction"] == r["gender"]) for r in found)
    assert not (tmp_path / "p.csv.partial").exists()


def test_a_predictions_file_is_written_only_by_a_successful_evaluation(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", history())
    bad = evaluate("--events", str(path), "--predictions", str(tmp_path / "p.parquet"))
    assert bad.exit_code == 2
    assert bad.output == (
        f"Error: --predictions {tmp_path / 'p.parquet'}: the file name must end with .csv, "
        ".jsonl or .json (the format)\n"
    )
    labels = tmp_path / "labels.csv"
    labels.write_text("X1,male\n")
    out = tmp_path / "p.jsonl"
    failed = evaluate("--events", str(path), "--labels", str(labels), "--predictions", str(out))
    assert failed.exit_code == 2 and len(failed.output.splitlines()) == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["e.jsonl", "labels.csv"]  # no p.*
    nowhere = evaluate("--events", str(path), "--predictions", str(tmp_path / "no" / "p.csv"))
    assert nowhere.exit_code == 2 and nowhere.output.startswith("Error: cannot write ")
    assert len(nowhere.output.splitlines()) == 1


# -- provenance ----------------------------------------------------------------------------------
def test_json_says_what_was_evaluated(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", history())
    result = evaluate(
        "--events", str(path), "--json", "--until", str(DAY2), "--session-gap", "30",
        "--max-delay", "300", GENDERD_PLUGINS="tests.support.evalplugins:LuaOnly",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["provenance"]
    assert found["input"] == {
        "kind": "file",
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "size": path.stat().st_size,
        "server": None,
        "prefix": None,
        "shards": [],
    }
    assert (found["since_ms"], found["until_ms"], found["warmup"]) == (None, DAY2, False)
    assert (found["order"], found["session_gap_ms"], found["max_delay_ms"]) == (
        "time",
        30 * 60_000,
        300_000,
    )
    assert (found["window_days"], found["genders"]) == (7, ["female", "kids", "male"])
    assert found["version"] and found["evaluated_at_ms"] > 0
    models = {m["name"]: m for m in found["models"]}
    assert models["top7d"] == {
        "name": "top7d",
        "kind": "window",
        "cls": "genderd.models.top7d.Top7dModel",
        "loaded_from": "entry point 'top7d'",
        "window_days": 7,
    }
    assert (models["recency"]["kind"], models["luaonly"]["kind"]) == ("python", "lua")
    assert models["luaonly"]["loaded_from"] == "GENDERD_PLUGINS: tests.support.evalplugins:LuaOnly"

    csv_text = "\n".join(f"{e['cid']},{e['gender']},{e['ts']}" for e in history()) + "\n"
    piped = json.loads(evaluate("--events", "-", "--json", stdin=csv_text).stdout)["provenance"]
    assert piped["input"]["kind"] == "stdin" and piped["input"]["path"] is None
    assert piped["input"]["sha256"] == hashlib.sha256(csv_text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:secret@db.example:6380/2", "redis://db.example:6380/2"),
        ("rediss://:secret@10.0.0.1/0?password=x", "rediss://10.0.0.1/0"),
        ("redis://[::1]:7000", "redis://[::1]:7000"),
        ("unix:///run/redis.sock?password=x", "unix:///run/redis.sock"),
    ],
)
def test_the_server_is_named_without_credentials(url: str, shown: str) -> None:
    assert server_address(url) == shown


def test_the_streams_are_read_merged_by_id_and_their_ranges_recorded(
    settings: Settings, sync_redis: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("genderd.evaluation.inputs.STREAM_PAGE", 2)
    open_deployment_sync(sync_redis, settings)
    keys = Keys(settings.prefix)
    deployment = Deployment.build(settings)
    written = []
    for n in range(12):  # ids ascending across shards, ts not
        cid = f"C{n}"
        entry = sync_redis.xadd(
            keys.stream(deployment.shard_of(cid)),
            {"cid": cid, "gender": "male", "ts": DAY1 + 1000 * (n % 5)},
            id=f"{DAY1 + n}-0",
        )
        written.append(entry.decode())

    async def read() -> tuple[list[str], InputSummary]:
        links = connect(settings)
        summary = InputSummary()
        try:
            chunks = stream_chunks(links.client, deployment, summary=summary)
            return [e.id async for chunk in chunks for e in chunk], summary
        finally:
            await links.close()

    ids, summary = asyncio.run(read())
    assert ids == written
    assert sum(s.entries for s in summary.streams) == 12
    env = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": "4"}
    result = evaluate("--json", "--order", "arrival", "--models", "last", **env)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["provenance"]["input"]
    assert (found["kind"], found["server"], found["prefix"]) == (
        "streams",
        redis_url.split("?")[0],
        settings.prefix,
    )
    ranges = {s["stream"]: s for s in found["shards"]}
    assert set(ranges) == {keys.stream(shard) for shard in range(4)}
    for shard in range(4):
        mine = [
            e for e in written if deployment.shard_of(f"C{int(e.split('-')[0]) - DAY1}") == shard
        ]
        got = ranges[keys.stream(shard)]
        assert (got["entries"], got["first_id"], got["last_id"]) == (
            len(mine),
            mine[0] if mine else None,
            mine[-1] if mine else None,
        )


# -- invalid input -------------------------------------------------------------------------------
def test_much_invalid_input_is_one_warning_naming_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path / "e.jsonl", history())
    kids = sum(e["gender"] == "kids" for e in history())
    assert kids == 48
    result = evaluate("--events", str(path), GENDERD_GENDERS="female,male")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: 48 of 180 events (26.7%) are invalid and not evaluated; 48 unknown_gender: "
        "gender 'kids' is not configured: GENDERD_GENDERS=female,male,kids would admit them"
    ]
    future = [{"cid": "x", "gender": "male", "ts": 10**14}] * 2 + history()
    ahead = evaluate("--events", str(write(tmp_path / "f.jsonl", future)))
    assert "2 future_ts: their time is more than GENDERD_MAX_FUTURE_MS (300,000 ms)" in ahead.stderr
    few = evaluate("--events", str(write(tmp_path / "g.jsonl", [*history(), {"cid": ""}])))
    assert few.exit_code == 0 and "warning" not in few.stderr  # 1 of 181: under 1%


def test_the_plot_title_names_the_order_window_and_period() -> None:
    report = sample_report()
    assert render.plot_title(report).splitlines() == [
        "next-visit accuracy_all by history length, 95% CI",
        "400 scored events of 30 clients, every event scored, time order",
        "2024-01-01 00:00 to 2024-01-02 00:00 UTC",
    ]
    settings = Provenance(
        input=Source(kind="file"),
        since_ms=DAY1 + 12 * HOUR,
        until_ms=None,
        warmup=True,
        order="arrival",
        session_gap_ms=None,
        max_delay_ms=None,
        window_days=30,
        genders=("female", "male"),
        version="0",
        models=(),
        evaluated_at_ms=DAY2,
    )
    warm = dataclasses.replace(report, order="arrival", warmup_events=25, provenance=settings)
    assert render.plot_title(warm).splitlines()[1:] == [
        "400 scored events of 30 clients, every event scored, arrival order, window 30 d",
        "scored 2024-01-01 12:00 to 2024-01-02 00:00 UTC, after a warm-up of 25 events from "
        "2024-01-01 00:00",
    ]

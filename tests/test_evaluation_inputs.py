"""What `genderd evaluate` reads (genderd.evaluation.inputs): files, stdin, streams, labels.

Every line is validated by the workers' rules and counted per reason when invalid; reading
the streams writes nothing.
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import tracemalloc
from pathlib import Path

import pytest
import redis

from genderd.deployment import Deployment, open_deployment_sync
from genderd.errors import InputError
from genderd.evaluation.inputs import InputSummary, read_file, read_labels, read_streams
from genderd.events import Event
from genderd.lines import MAX_LINE_BYTES, TOO_LONG
from genderd.settings import Settings
from genderd.transport import connect

from .support.factories import make_producer

NOW = 1_795_000_000_000
SETTINGS = Settings(genders="female,male,kids", max_future_ms=300_000)


def read(tmp_path: Path, content: str, name: str = "events") -> tuple[list[Event], InputSummary]:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    summary = InputSummary()
    events = list(read_file(str(path), SETTINGS, now_ms=NOW, summary=summary))
    return events, summary


def test_json_lines_are_validated_like_events_and_line_order_breaks_ties(tmp_path: Path) -> None:
    events, summary = read(
        tmp_path,
        '{"cid": "C1", "gender": " Female ", "ts": 1794999000000}\n'
        "\n"
        '{"cid": "C2", "gender": "kids", "ts": "1794999000000", "page": "/x"}\n'
        '{"cid": "C1", "gender": "male"}\n',
    )
    assert events == [
        Event("1794999000000-1", "C1", "female", 1794999000000),
        Event("1794999000000-3", "C2", "kids", 1794999000000),
        Event(f"{NOW}-4", "C1", "male", NOW),  # no ts: written now
    ]
    assert (summary.read, summary.invalid, summary.reasons) == (3, 0, {})


def test_every_invalid_reason_is_counted_and_skipped(tmp_path: Path) -> None:
    events, summary = read(
        tmp_path,
        '{"cid": "C1", "gender": "female", "ts": 1}\n'
        "not json\n"
        "[1, 2]\n"
        '{"gender": "female"}\n'
        '{"cid": "C 1", "gender": "female"}\n'
        '{"cid": "C1"}\n'
        '{"cid": "C1", "gender": "robot"}\n'
        '{"cid": "C1", "gender": "male", "ts": "-5"}\n'
        '{"cid": "C1", "gender": "male", "ts": 1.5}\n'
        f'{{"cid": "C1", "gender": "male", "ts": {NOW + 300_001}}}\n'
        f'{{"cid": "C1", "gender": "male", "ts": {NOW + 300_000}}}\n',
    )
    assert [e.ts for e in events] == [1, NOW + 300_000]
    assert summary.read == 11 and summary.invalid == 9
    assert summary.reasons == {
        "malformed": 2,
        "missing_cid": 1,
        "bad_cid": 1,
        "missing_gender": 1,
        "unknown_gender": 1,
        "bad_ts": 2,
        "future_ts": 1,
    }


@pytest.mark.parametrize("header", ["", "cid,gender,ts\n", "CID, Gender\n"])
def test_csv_with_or_without_a_header(tmp_path: Path, header: str) -> None:
    events, summary = read(
        tmp_path,
        header + "C1,female,1794999000000\nC2,Male\nC3,kids,\nC4,female,1,extra\nC5\n",
        name="events.csv",
    )
    assert [(e.cid, e.gender, e.ts) for e in events] == [
        ("C1", "female", 1794999000000),
        ("C2", "male", NOW),
        ("C3", "kids", NOW),  # an empty ts column: no ts
    ]
    assert summary.reasons == {"malformed": 2}


def test_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"C1,female,5\nC1,male,6\n"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    summary = InputSummary()
    events = list(read_file("-", SETTINGS, now_ms=NOW, summary=summary))
    assert [(e.id, e.gender) for e in events] == [("5-1", "female"), ("6-2", "male")]


def test_a_missing_file_is_one_line_at_once(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^cannot read .*nope\.jsonl: No such file"):
        read_file(str(tmp_path / "nope.jsonl"), SETTINGS, now_ms=NOW, summary=InputSummary())


def test_labels_csv_and_json_lines(tmp_path: Path) -> None:
    csv_labels = tmp_path / "labels.csv"
    csv_labels.write_text("cid,gender\nC1, Female\nC2,kids\nC1,female\n")
    assert read_labels(str(csv_labels), SETTINGS) == {"C1": "female", "C2": "kids"}
    json_labels = tmp_path / "labels.jsonl"
    json_labels.write_text('{"cid": "C1", "gender": "MALE"}\n')
    assert read_labels(str(json_labels), SETTINGS) == {"C1": "male"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("C1,female\nC2,robot\n", r"line 2: gender 'robot' is not one of female, kids, male"),
        ("C1,female\nC 2,male\n", r"line 2: cid contains whitespace"),
        ("C1,female,x\n", r"line 1: expected cid,gender"),
        ('{"cid": "C1"}\n', r"line 1: expected cid,gender"),
        ("C1,female\nC1,male\n", r"line 2: client 'C1' is labelled both 'female' and 'male'"),
    ],
)
def test_a_bad_label_line_is_an_error_naming_it(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(InputError, match=problem):
        read_labels(str(path), SETTINGS)


def _read_streams(
    settings: Settings, since: int | None = None, until: int | None = None
) -> tuple[list[Event], InputSummary]:
    async def go() -> tuple[list[Event], InputSummary]:
        links = connect(settings)
        try:
            summary = InputSummary()
            deployment = Deployment.build(settings, clock=lambda: NOW)
            events = await read_streams(
                links.client, deployment, since_ms=since, until_ms=until, summary=summary
            )
            return events, summary
        finally:
            await links.close()

    return asyncio.run(go())


def _snapshot(client: redis.Redis) -> dict[bytes, object]:
    """Every key with its type and size: what a read-only reader must leave as it was."""
    found: dict[bytes, object] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        size = client.xlen(key) if kind == b"stream" else None
        groups = client.xinfo_groups(key) if kind == b"stream" else None
        found[key] = (kind, size, groups)
    return found


def test_streams_are_read_in_pages_validated_like_the_worker_and_left_alone(
    settings: Settings, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("genderd.evaluation.inputs.STREAM_PAGE", 3)  # several pages per shard
    deployment = open_deployment_sync(sync_redis, settings)
    with make_producer(sync_redis, settings) as producer:
        for n in range(20):
            producer.send(f"C{n}", ("female", "male", "kids")[n % 3], ts=NOW - 1000 * n)
    keys = deployment.keys
    c1 = deployment.shard_of("C1")
    other = (c1 + 1) % settings.shards
    sync_redis.xadd(keys.stream(c1), {"cid": "C1", "gender": "robot", "ts": NOW})
    sync_redis.xadd(keys.stream(c1), {"cid": "C1", "gender": "male", "ts": NOW + 10**9})
    sync_redis.xadd(keys.stream(other), {"cid": "C1", "gender": "male", "ts": NOW})
    before = _snapshot(sync_redis)

    events, summary = _read_streams(settings)
    assert sorted(e.cid for e in events) == sorted(f"C{n}" for n in range(20))
    assert summary.read == 23
    assert summary.reasons == {"unknown_gender": 1, "future_ts": 1, "wrong_shard": 1}
    assert _snapshot(sync_redis) == before

    # since inclusive, until exclusive, on the events' own time
    window, _ = _read_streams(settings, since=NOW - 5000, until=NOW - 1000)
    assert sorted(e.ts for e in window) == [NOW - 5000, NOW - 4000, NOW - 3000, NOW - 2000]


def test_an_endless_line_is_counted_as_too_long_in_bounded_memory(tmp_path: Path) -> None:
    """A pipe that gives 32 MiB of one line, then a valid one: the long line is counted as
    ``line_too_long`` (a malformed line) without being held, and the file read on."""
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    chunk = b"x" * 65_536

    def feed() -> None:
        with open(fifo, "wb", buffering=0) as pipe:
            for _ in range(512):
                pipe.write(chunk)
            pipe.write(b'\n{"cid": "C1", "gender": "male", "ts": 5}\n')

    feeder = threading.Thread(target=feed)
    feeder.start()
    summary = InputSummary()
    tracemalloc.start()
    try:
        events = list(read_file(str(fifo), SETTINGS, now_ms=NOW, summary=summary))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        feeder.join(30)
    assert events == [Event("5-2", "C1", "male", 5)]
    assert summary.reasons == {TOO_LONG: 1} and summary.read == 2
    assert peak < 4 * MAX_LINE_BYTES, peak

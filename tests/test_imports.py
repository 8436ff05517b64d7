"""`genderd produce --file` (genderd.imports): each line written once, whatever batches the runs
sent (SPEC §12), a slow pipe's lines sent within a second and on SIGINT/SIGTERM, bad and
over-long lines stopped at with their number. Every check reads what the streams hold."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest
import redis

from genderd.imports import BLOCK_LINES, FLUSH_S
from genderd.keys import Keys
from genderd.lines import MAX_LINE_BYTES, READ_BYTES

from .support.commands import genderd_process, wait_until
from .test_cli import run

TS = 1_795_000_000_000
SHARDS = 4
MEMORY_CAP = 1 << 30  # the address space of a process reading an endless line


def line(n: int, gender: str = "male") -> str:
    return f'{{"cid": "L{n}", "gender": "{gender}", "ts": {TS + n}}}\n'


def lines(first: int, last: int) -> str:
    return "".join(line(n) for n in range(first, last + 1))


def written(sync_redis: redis.Redis) -> Counter[tuple[str, str]]:
    """(cid, gender) of every entry of every shard stream, counted."""
    found: Counter[tuple[str, str]] = Counter()
    for shard in range(SHARDS):
        for _, fields in sync_redis.xrange(Keys().stream(shard)):
            found[(fields[b"cid"].decode(), fields[b"gender"].decode())] += 1
    return found


def once(first: int, last: int) -> Counter[tuple[str, str]]:
    return Counter({(f"L{n}", "male"): 1 for n in range(first, last + 1)})


def produce(redis_url: str, source: Path, *options: str) -> str:
    result = run(redis_url, "produce", "--file", str(source), *options)
    assert result.exit_code == 0, result.output
    return result.stderr


# -- re-runs (finding 3) --------------------------------------------------------------------------


def test_a_rerun_with_another_rate_writes_nothing_twice(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """The batches of a paced run (the lines of 0.1 s) and of an unpaced one (blocks) differ;
    the lines they hold are the same."""
    source = tmp_path / "events.jsonl"
    source.write_text(lines(1, 300))
    produce(redis_url, source, "--rate", "1000", "--quiet")
    assert produce(redis_url, source).splitlines()[-1] == (
        "wrote 0 events; 300 more had been written by an earlier run (skipped)"
    )
    produce(redis_url, source, "--rate", "2000", "--quiet")
    assert written(sync_redis) == once(1, 300)


def test_a_grown_file_writes_only_its_new_lines(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(lines(1, 1200))  # two whole blocks and part of a third
    produce(redis_url, source, "--quiet")
    source.write_text(lines(1, 1300))
    said = produce(redis_url, source)
    assert "wrote 100 events; 1200 more had been written by an earlier run" in said
    assert written(sync_redis) == once(1, 1300)


def test_an_edit_that_leaves_the_events_as_they_were_writes_nothing(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """Spaces in and around lines, blank lines, the fields' order, the case of a gender and
    fields the workers ignore are no change of an event (docs/delivery.md)."""
    source = tmp_path / "events.jsonl"
    source.write_text(lines(1, 600))
    produce(redis_url, source, "--quiet")
    edited = [
        f'  {{ "gender" : " MALE ",  "ts": {TS + n}, "cid": "L{n}", "page": "/x" }}  \n\n'
        for n in range(1, 601)
    ]
    source.write_text("\n" + "".join(edited))
    assert "wrote 0 events; 600 more" in produce(redis_url, source)
    assert written(sync_redis) == once(1, 600)


def test_an_edited_event_is_written_again_and_nothing_else(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(lines(1, 600))
    produce(redis_url, source, "--quiet")
    source.write_text(lines(1, 9) + line(10, "female") + lines(11, 600))
    assert "wrote 1 events; 599 more" in produce(redis_url, source)
    assert written(sync_redis) == once(1, 600) + Counter({("L10", "female"): 1})


def test_the_same_line_twice_is_two_events_and_a_record_per_block_expires(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """Two identical lines are two views (two positions); the lines' records are one set per
    block and shard, living GENDERD_IDEMPOTENCY_TTL_S from the block's latest write."""
    source = tmp_path / "events.jsonl"
    source.write_text('{"cid": "T1", "gender": "kids"}\n' * 3 + lines(1, BLOCK_LINES))
    result = run(
        redis_url, "produce", "--file", str(source), "--quiet", GENDERD_GENDERS="male,kids"
    )
    assert result.exit_code == 0, result.output
    assert written(sync_redis)[("T1", "kids")] == 3
    records = sync_redis.keys("genderd:*:lines:*")
    assert 2 <= len(records) <= 2 * SHARDS  # two blocks
    assert all(sync_redis.type(key) == b"set" for key in records)
    assert sum(sync_redis.scard(key) for key in records) == BLOCK_LINES + 3
    assert all(86_000_000 < sync_redis.pttl(key) <= 86_400_000 for key in records)


# -- slow pipes and signals (finding 2) ----------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_slow_pipe_is_sent_within_a_second_and_what_was_read_on_a_signal(
    redis_url: str, sync_redis: redis.Redis, signum: signal.Signals
) -> None:
    """A line read from a pipe waits at most FLUSH_S; on SIGTERM or SIGINT the lines read
    are written, and the message says how far: what the streams hold."""
    process = genderd_process(redis_url, "produce", "--file", "-")
    try:
        assert process.stdin is not None
        process.stdin.write(line(1).encode())
        process.stdin.flush()  # and no more for now: the pipe stays open
        wait_until(lambda: written(sync_redis) == once(1, 1), f"line 1 within {FLUSH_S} s")
        process.stdin.write(lines(2, 300).encode())
        process.stdin.flush()
        process.send_signal(signum)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    message = err.decode().strip().splitlines()[-1]
    assert message.startswith("interrupted after line "), message
    last = int(message.removeprefix("interrupted after line ").split(":")[0])
    assert f": wrote {last} events; no line after it was written (run the same" in message
    assert written(sync_redis) == once(1, last)


def test_an_import_from_a_pipe_goes_on_where_it_stopped(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    first = run(redis_url, "produce", "--file", "-", "--quiet", stdin=lines(1, 700))
    assert first.exit_code == 0, first.output
    again = run(redis_url, "produce", "--file", "-", stdin=lines(1, 1000))
    assert "wrote 300 events; 700 more had been written by an earlier run" in again.stderr
    assert written(sync_redis) == once(1, 1000)


# -- lines that stop an import (findings 8 and 9) -------------------------------------------------


def test_an_endless_line_from_dev_zero_stops_at_once_with_its_number(redis_url: str) -> None:
    """The reader holds at most MAX_LINE_BYTES of a line (plus one read): under an address
    space of 1 GiB it stops with one line, where an unbounded reader fails for memory."""
    process = genderd_process(redis_url, "produce", "--file", "/dev/zero", limit_bytes=MEMORY_CAP)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2, err.decode()
    assert err.decode().strip().splitlines()[-1] == (
        f"Error: line 1: longer than {MAX_LINE_BYTES:,} bytes; stopped there, after the lines "
        "before it: wrote 0 events. Fix the line and run again: no line is written twice"
    )


def test_an_over_long_line_stops_after_the_lines_before_it_without_reading_it_whole(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """A pipe that offers 64 MiB of one line: the import stops after reading no more than
    the cap and one read of it (the writer finds the pipe closed)."""
    fifo = tmp_path / "events.pipe"
    os.mkfifo(fifo)
    offered = 64 << 20
    taken: list[int] = []

    def feed() -> None:
        pipe = os.open(fifo, os.O_WRONLY)  # unbuffered: nothing left to flush at the end
        sent = 0
        try:
            os.write(pipe, lines(1, 3).encode())
            while sent < offered:
                sent += os.write(pipe, b"x" * 65_536)
        except BrokenPipeError:
            pass
        finally:
            os.close(pipe)
            taken.append(sent)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        result = run(redis_url, "produce", "--file", str(fifo), "--quiet")
    finally:
        feeder.join(30)
    assert result.exit_code == 2
    assert f"line 4: longer than {MAX_LINE_BYTES:,} bytes" in result.output
    assert "wrote 3 events" in result.output
    assert written(sync_redis) == once(1, 3)
    # what the writer got rid of: the cap and a read, plus what the pipe's buffer holds
    assert taken and taken[0] <= MAX_LINE_BYTES + READ_BYTES + (4 << 20)


def test_a_line_that_is_not_utf8_is_one_line(redis_url: str, sync_redis: redis.Redis) -> None:
    result = run(
        redis_url,
        "produce",
        "--file",
        "-",
        "--quiet",
        stdin=lines(1, 2).encode() + b'{"cid": "L\xff", "gender": "male"}\n',  # type: ignore[arg-type]
    )
    assert result.exit_code == 2
    assert "line 3: not UTF-8 (byte 0xff at position 11)" in result.output
    assert "Traceback" not in result.output
    assert written(sync_redis) == once(1, 2)


@pytest.mark.parametrize("rate", ["nan", "inf", "-1"])
def test_a_rate_that_is_not_a_finite_number_is_a_usage_error(redis_url: str, rate: str) -> None:
    result = run(redis_url, "produce", "--rate", rate, "--count", "1")
    assert result.exit_code == 2
    assert "Invalid value for '--rate'" in result.output and "Traceback" not in result.output


def test_a_bad_line_leaves_a_process_exit_code_of_two(redis_url: str) -> None:
    process = genderd_process(redis_url, "produce", "--file", "-")
    _, err = process.communicate(lines(1, 2).encode() + b"\xfe\xff\n", timeout=60)
    assert process.returncode == 2
    assert err.decode().strip().splitlines()[-1].startswith("Error: line 3: not UTF-8")

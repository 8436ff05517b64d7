"""The command line, in process (click's runner), against the session's real server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from genderd.bundled import free_port
from genderd.cli import main
from genderd.keys import Keys, shard_of
from genderd.lines import Line


def run(redis_url: str, *args: str, stdin: str | None = None, **env: str):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    environment = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": "4", **env}
    return runner.invoke(main, list(args), env=environment, input=stdin, catch_exceptions=False)


def test_produce_status_replay_and_lookup(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"cid": "C1", "gender": "female", "ts": 1795000000000}\n'
        '{"cid": "C1", "gender": "male", "ts": 1795000000001}\n'
        "\n"
        '{"cid": "C2", "gender": "Female"}\n'
    )
    produced = run(redis_url, "produce", "--file", str(events), "--quiet")
    assert produced.exit_code == 0, produced.output
    assert sum(sync_redis.xlen(Keys().stream(s)) for s in range(4)) == 3
    # Without --quiet: progress and the summary go to stderr, nothing to stdout. The same
    # file again writes nothing twice (its batches' keys are remembered: SPEC §12).
    again = run(redis_url, "produce", "--file", str(events))
    assert again.exit_code == 0 and again.stdout == ""
    assert "wrote 0 events; 3 more had been written by an earlier run" in again.stderr
    assert sum(sync_redis.xlen(Keys().stream(s)) for s in range(4)) == 3

    # Nobody consumes yet: every model is stalled, and status says so with exit code 1.
    stalled = run(redis_url, "status", "--json", GENDERD_STALL_AFTER_S="0.01")
    assert stalled.exit_code == 1
    rows = {row["model"]: row for row in json.loads(stalled.output)}
    assert rows["top"]["lag"] == 3 and rows["top"]["stalled"] is True

    # replay applies the retained history of one model, with progress, in its own process
    replayed = run(redis_url, "replay", "--model", "model2")
    assert replayed.exit_code == 0, replayed.output
    assert "replayed: 3 applied, 0 dead-lettered, 0 failed" in replayed.output
    answer = run(redis_url, "lookup", "C1", "--model", "top", "--json")
    assert answer.exit_code == 0
    top = json.loads(answer.output)["models"]["top"]
    assert (top["gender"], top["scores"]) == ("male", {"female": 1, "male": 1})
    # `last` has not run: it has no answer for C2 (exit 1), and the model is still stalled
    assert run(redis_url, "lookup", "C2", "--model", "last").exit_code == 1
    assert run(redis_url, "status", GENDERD_STALL_AFTER_S="0.01").exit_code == 1


def lines(first: int, last: int) -> str:
    """JSON Lines of one event per line, each with its own client ``L<n>``."""
    return "".join(
        f'{{"cid": "L{n}", "gender": "male", "ts": {1795000000000 + n}}}\n'
        for n in range(first, last + 1)
    )


def written_per_client(sync_redis: redis.Redis) -> dict[str, int]:
    counts: dict[str, int] = {}
    for shard in range(4):
        for _, fields in sync_redis.xrange(Keys().stream(shard)):
            cid = fields[b"cid"].decode()
            counts[cid] = counts.get(cid, 0) + 1
    return counts


def test_produce_stops_at_a_bad_line_after_the_lines_before_it(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    good = lines(1, 600)
    result = run(
        redis_url,
        "produce",
        "--file",
        "-",
        "--quiet",
        stdin=good + '\n{"cid": "C1", "gender": "robot"}\n',
    )
    assert result.exit_code == 2  # an input error
    # the line number counts blank lines; every line before the bad one went out, and the
    # fixed file's run writes the fixed line only
    assert "line 602: unknown_gender" in result.output
    assert "stopped there, after the lines before it: wrote 600 events" in result.output
    assert written_per_client(sync_redis) == {f"L{n}": 1 for n in range(1, 601)}
    fixed = run(
        redis_url,
        "produce",
        "--file",
        "-",
        stdin=good + '\n{"cid": "C1", "gender": "female"}\n',
    )
    assert fixed.exit_code == 0, fixed.output
    assert "wrote 1 events; 600 more had been written by an earlier run" in fixed.stderr
    assert written_per_client(sync_redis) == {"C1": 1, **{f"L{n}": 1 for n in range(1, 601)}}


def test_produce_stops_at_a_line_that_is_not_json(redis_url: str, sync_redis: redis.Redis) -> None:
    good = '{"cid": "C1", "gender": "male"}\n'
    result = run(redis_url, "produce", "--file", "-", "--quiet", stdin=good * 2 + "{oops\n")
    assert result.exit_code == 2
    assert "line 3: not JSON" in result.output and "wrote 2 events" in result.output
    # the same line twice is two events (two views): two positions
    assert sync_redis.xlen(Keys().stream(shard_of("C1", 4))) == 2


def test_an_import_interrupted_by_a_server_error_then_run_again_writes_each_line_once(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    """The second batch fails half-way (one shard's stream holds a string: its part is
    refused, the others are written); once that is fixed, the same command writes the rest,
    and no line twice."""
    source = tmp_path / "events.jsonl"
    source.write_text(lines(1, 1200))
    broken = Keys().stream(shard_of("L700", 4))
    sync_redis.set(broken, "not a stream")
    failed = run(redis_url, "produce", "--file", str(source), "--quiet")
    assert failed.exit_code == 1 and broken in failed.output
    sync_redis.delete(broken)
    done = run(redis_url, "produce", "--file", str(source))
    assert done.exit_code == 0, done.output
    assert written_per_client(sync_redis) == {f"L{n}": 1 for n in range(1, 1201)}
    assert run(redis_url, "produce", "--file", str(source), "--quiet").exit_code == 0
    assert written_per_client(sync_redis) == {f"L{n}": 1 for n in range(1, 1201)}


def test_an_import_stopped_by_ctrl_c_then_run_again_writes_each_line_once(
    redis_url: str, sync_redis: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genderd import imports

    source = tmp_path / "events.jsonl"
    source.write_text(lines(1, 1200))
    parsed = imports._parsed

    def interrupted(line: Line) -> dict[str, object] | None:
        if line.number == 777:
            signal.raise_signal(signal.SIGINT)  # noted: this line is still imported
        return parsed(line)

    monkeypatch.setattr(imports, "_parsed", interrupted)
    stopped = run(redis_url, "produce", "--file", str(source))
    assert stopped.exit_code == 0
    # the lines already read when the signal came are imported too (from a pipe, they are
    # gone once read), and the message says up to which line
    said = re.search(
        r"interrupted after line (\d+): wrote (\d+) events; no line after", stopped.stderr
    )
    assert said is not None, stopped.stderr
    last = int(said[1])
    assert 777 <= last < 1200 and int(said[2]) == last
    assert written_per_client(sync_redis) == {f"L{n}": 1 for n in range(1, last + 1)}
    monkeypatch.setattr(imports, "_parsed", parsed)
    done = run(redis_url, "produce", "--file", str(source))
    assert f"wrote {1200 - last} events; {last} more had been written by an earlier run" in (
        done.stderr
    )
    assert written_per_client(sync_redis) == {f"L{n}": 1 for n in range(1, 1201)}


def test_usage_errors_are_one_line_not_tracebacks(redis_url: str) -> None:
    bad_model = run(redis_url, "lookup", "C1", "--model", "nope")
    assert bad_model.exit_code == 2 and "unknown model 'nope'" in bad_model.output
    bad_cid = run(redis_url, "lookup", "C 1")
    assert bad_cid.exit_code == 2 and "whitespace" in bad_cid.output
    bad_genders = run(redis_url, "status", GENDERD_GENDERS="Fe male")
    assert bad_genders.exit_code == 2 and "bad configuration" in bad_genders.output
    unreachable = run("redis://127.0.0.1:1/0", "status")
    assert unreachable.exit_code == 1 and "cannot reach Redis" in unreachable.output
    no_scheme = run("localhost:6390", "status")
    assert no_scheme.exit_code == 2 and "must start with redis://" in no_scheme.output
    empty_token = run(redis_url, "status", GENDERD_API_TOKEN="")
    assert empty_token.exit_code == 2 and "must not be empty" in empty_token.output
    pipelined_option = run(f"{redis_url}?protocol=3", "status")
    assert pipelined_option.exit_code == 2  # a configuration error
    assert "GENDERD_PIPELINED=false" in pipelined_option.output


def test_a_url_that_is_not_redis_is_one_line() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_like_http() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")

        server = threading.Thread(target=answer_like_http, daemon=True)
        server.start()
        result = run(f"redis://127.0.0.1:{port}/0", "status")
        server.join(5)
    assert result.exit_code == 2, result.output  # a configuration error
    assert "does not answer like Redis" in result.output
    assert "Traceback" not in result.output


def test_a_prefix_with_glob_characters_is_refused_before_any_key_is_touched(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    sync_redis.hset("genderd:{s0}:m:top:C1", "female", 1)  # another deployment's state
    for prefix in ("g*", "a?b", "x[1]", "sp ace", "ta{g}"):
        result = run(redis_url, "--prefix", prefix, "replay", "--model", "top")
        assert result.exit_code == 2 and "may only contain" in result.output, prefix
    assert sync_redis.hget("genderd:{s0}:m:top:C1", "female") == b"1"


def test_lookup_of_an_unknown_client_says_so(redis_url: str) -> None:
    result = run(redis_url, "lookup", "nobody")
    assert result.exit_code == 1
    assert "no answer for 'nobody'" in result.output


def test_serve_on_a_taken_port_is_one_line(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run(redis_url, "serve", "--port", str(taken.getsockname()[1]))
    assert result.exit_code == 2 and "is taken" in result.output


def test_commands_without_a_server_say_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.genderd/server.json here
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("GENDERD_")}
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 2  # a configuration error, not a server state
    assert "run `genderd up` in this directory" in result.output


def test_serve_bounds_concurrency(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    port = str(free_port())
    assert run(redis_url, "serve", "--port", port).exit_code == 0
    assert seen["limit_concurrency"] == 1024  # a sane default
    assert run(redis_url, "serve", "--port", port, "--limit-concurrency", "50").exit_code == 0
    assert seen["limit_concurrency"] == 50


@pytest.mark.parametrize(
    ("key", "commands"),
    [
        ("genderd:{s3}:events", [["status"], ["evaluate"], ["status", "--json"]]),
        ("genderd:{s3}:dead", [["dead", "list"], ["dead", "show"]]),
    ],
)
def test_a_key_of_the_wrong_type_is_one_line_naming_it(
    redis_url: str, sync_redis: redis.Redis, key: str, commands: list[list[str]]
) -> None:
    """A key genderd reads as a stream holding a string (written by something else): every
    command that meets it says which, in one line (exit 1: the invocation is fine, and works
    once the key is removed), as ingest does."""
    assert run(redis_url, "produce", "--count", "40", "--quiet").exit_code == 0
    sync_redis.delete(key)
    sync_redis.set(key, "x")
    for command in commands:
        result = run(redis_url, *command)
        assert result.exit_code == 1, (command, result.output)
        assert result.output == f"Error: {key} holds a string, not a stream\n", command

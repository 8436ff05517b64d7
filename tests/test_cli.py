"""The command line, in process (click's runner), against the session's real server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from genderd.cli import main
from genderd.keys import Keys, shard_of


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


def test_produce_stops_at_a_bad_line_after_writing_the_ones_before(
    redis_url: str, sync_redis: redis.Redis
) -> None:
    result = run(
        redis_url,
        "produce",
        "--file",
        "-",
        "--quiet",
        stdin='{"cid": "C1", "gender": "male"}\n{"cid": "C1", "gender": "robot"}\n',
    )
    assert result.exit_code == 1
    assert "event 2: unknown_gender" in result.output
    assert sync_redis.xlen(Keys().stream(shard_of("C1", 4))) == 1


def test_usage_errors_are_one_line_not_tracebacks(redis_url: str) -> None:
    bad_model = run(redis_url, "lookup", "C1", "--model", "nope")
    assert bad_model.exit_code == 2 and "unknown model 'nope'" in bad_model.output
    bad_cid = run(redis_url, "lookup", "C 1")
    assert bad_cid.exit_code == 2 and "whitespace" in bad_cid.output
    bad_genders = run(redis_url, "status", GENDERD_GENDERS="Fe male")
    assert bad_genders.exit_code == 2 and "bad configuration" in bad_genders.output
    unreachable = run("redis://127.0.0.1:1/0", "status")
    assert unreachable.exit_code == 1 and "cannot reach Redis" in unreachable.output


def test_commands_without_a_server_say_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./.genderd/server.json here
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("GENDERD_")}
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 1
    assert "run `genderd up` in this directory" in result.output

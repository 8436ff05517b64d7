"""`genderd dead`: list, show, re-drive (at most once, even when interrupted), purge."""

from __future__ import annotations

import json

import redis
from click.testing import CliRunner, Result

from genderd import deadletters
from genderd.cli import main
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of
from genderd.transport import Links

from .support.api_helpers import drain
from .support.factories import make_reader
from .support.runtime import FakeClock, Loop

OLD = "female,male"
NEW = "female,male,kids"


def cli(redis_url: str, *args: str, genders: str = OLD) -> Result:
    env = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": "4", "GENDERD_GENDERS": genders}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_list_show_redrive_once_and_purge(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    clock = FakeClock(wall_clock_ms())  # the CLI reads the wall clock too
    old = aio.settings.model_copy(update={"genders": ("female", "male")})
    new = aio.settings.model_copy(update={"genders": ("female", "kids", "male")})
    keys = Keys()
    right = shard_of("C42", 4)
    kids = sync_redis.xadd(
        keys.stream(shard_of("C1", 4)), {"cid": "C1", "gender": "kids", "ts": clock.now_ms - 5}
    ).decode()
    misplaced = sync_redis.xadd(
        keys.stream((right + 1) % 4), {"cid": "C42", "gender": "male", "ts": clock.now_ms - 9}
    ).decode()
    bad_ts = sync_redis.xadd(keys.stream(0), {"cid": "C0", "gender": "male", "ts": "soon"})
    drain(aio.loop, aio.client, old, clock)  # every model dead-letters all three

    listed = cli(redis_url, "dead", "list", "--json")
    rows = json.loads(listed.output)
    by_reason = {r["reason"]: 0 for r in rows}
    for row in rows:
        by_reason[row["reason"]] += row["count"]
    per_reason = len(aio.registry)  # every model dead-letters each of the three
    assert by_reason == {
        "unknown_gender": per_reason,
        "wrong_shard": per_reason,
        "bad_ts": per_reason,
    }
    assert "total" in cli(redis_url, "dead").output  # `dead` alone is `dead list`
    # filters, and counts by model and reason
    only = json.loads(cli(redis_url, "dead", "list", "--json", "--reason", "bad_ts").output)
    assert {r["reason"] for r in only} == {"bad_ts"} and only[0]["shard"] == 0
    by_model = json.loads(cli(redis_url, "dead", "list", "--json", "--by-model").output)
    assert {(r["model"], r["reason"]): r["count"] for r in by_model} == {
        (model.name, reason): 1
        for model in aio.registry
        for reason in ("unknown_gender", "wrong_shard", "bad_ts")
    }
    one = cli(redis_url, "dead", "list", "--by-model", "--model", "last", "--reason", "bad_ts")
    assert one.output.splitlines()[1].split() == ["last", "bad_ts", "1"]

    wrong = cli(redis_url, "dead", "show", "--reason", "wrong_shard", "--model", "last")
    assert json.loads(wrong.output)["entry_id"] == misplaced
    shown = cli(redis_url, "dead", "show", "--reason", "unknown_gender", "--model", "top")
    [row] = [json.loads(line) for line in shown.output.splitlines()]
    assert row["entry_id"] == kids and row["fields"]["gender"] == "kids"

    # The operator adds the gender; a dry run says what would happen and writes nothing.
    lengths = [sync_redis.xlen(keys.stream(s)) for s in range(4)]
    dry = cli(redis_url, "dead", "redrive", "--dry-run", genders=NEW)
    assert "would re-drive 2 entries" in dry.output and dry.exit_code == 1
    assert f"left {bad_ts.decode()}: still invalid: bad_ts" in dry.output
    assert [sync_redis.xlen(keys.stream(s)) for s in range(4)] == lengths

    # A re-drive interrupted after writing the kids event, before deleting its dead letters:
    async def interrupted() -> None:
        deployment = Deployment.build(new, clock)
        letters = [
            letter
            async for letter in deadletters.scan(aio.client, deployment, reason="unknown_gender")
        ]
        event = deadletters.parse_entry(
            kids, letters[0].fields, new.genders, clock.now_ms, new.max_future_ms
        )
        assert isinstance(event, deadletters.Event)
        links = Links.over(aio.client)
        assert await deadletters._write(
            aio.client, links.fast, deployment, letters[0].shard, event, 60_000
        )

    aio.run(interrupted())
    done = cli(redis_url, "dead", "redrive", genders=NEW)
    assert done.exit_code == 1  # bad_ts is left
    deleted = 2 * per_reason  # both re-driven entries' copies, one per model
    assert (
        f"re-drove 1 entries (1 more had been re-driven before); deleted {deleted}" in done.output
    )
    again = cli(redis_url, "dead", "redrive", "--reason", "unknown_gender", genders=NEW)
    assert again.exit_code == 0 and "re-drove 0 entries" in again.output
    # each event is in its client's stream once more, with its original time
    added = [sync_redis.xlen(keys.stream(s)) - n for s, n in enumerate(lengths)]
    assert sum(added) == 2
    drain(aio.loop, aio.client, new, clock)
    answers = aio.run(make_reader(aio.client, new, clock=clock).lookup_many(["C1", "C42"]))
    assert answers[0]["top"] is not None and answers[0]["top"].scores == {"kids": 1}
    assert answers[1]["last"] is not None
    assert answers[1]["last"].last_event_ts == clock.now_ms - 9

    # purge: a count first, then --yes
    matched = cli(redis_url, "dead", "purge", "--reason", "bad_ts")
    assert f"{per_reason} dead letters match" in matched.output
    assert matched.exit_code == 1  # nothing done for want of --yes (stdin is no terminal)
    assert f"deleted {per_reason}" in cli(redis_url, "dead", "purge", "--yes").output
    assert cli(redis_url, "dead", "list").output.strip() == "no dead letters"
    assert cli(redis_url, "dead", "purge").exit_code == 0  # nothing to delete: nothing to confirm


def test_an_entry_some_model_applied_is_not_redriven(
    aio: Loop, sync_redis: redis.Redis, redis_url: str
) -> None:
    clock = FakeClock(wall_clock_ms())
    keys = Keys()
    shard = shard_of("C7", 4)
    entry = sync_redis.xadd(keys.stream(shard), {"cid": "C7", "gender": "male"}).decode()
    drain(aio.loop, aio.client, aio.settings, clock)  # applied by every model
    # as if `top` had dead-lettered it after too many deliveries
    sync_redis.xadd(
        keys.dead(shard),
        {
            "cid": "C7",
            "gender": "male",
            "_id": entry,
            "_model": "top",
            "_reason": "max_deliveries",
            "_detail": "delivered 6 times",
        },
    )
    result = cli(redis_url, "dead", "redrive", genders=NEW)
    assert (
        result.exit_code == 1 and f"left {entry}: not dead-lettered by every model" in result.output
    )
    assert sync_redis.xlen(keys.stream(shard)) == 1

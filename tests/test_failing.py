"""A failing model is visible (SPEC §13): `genderd status` marks a model FAILING, exit 1, when
its code failed on more than GENDERD_FAILING_RATE of the events it handled in the last
minutes; a healthy model beside it stays ok; a few failures over few events are no rate."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from click.testing import CliRunner
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from genderd import health, status
from genderd.cli import main
from genderd.clock import wall_clock_ms
from genderd.deployment import Deployment
from genderd.keys import Keys, shard_of
from genderd.settings import Settings
from genderd.worker_metrics import WorkerMetrics

from .support.factories import make_worker
from .support.runtime import FakeClock, Loop

PLUGIN = "tests.support.pymodels:Picky"  # fails on kids' pages
ALERTS = Path(__file__).parents[1] / "deploy" / "prometheus" / "alerts.yml"


@pytest.fixture
def loop(settings: Settings) -> Loop:
    made = Loop(settings.model_copy(update={"plugins": [PLUGIN]}))
    yield made
    made.close()


def _write(sync_redis: redis.Redis, settings: Settings, events: list[tuple[str, str]]) -> None:
    keys = Keys(settings.prefix)
    for cid, gender in events:
        stream = keys.stream(shard_of(cid, settings.shards))
        sync_redis.xadd(stream, {"cid": cid, "gender": gender})


def _drain(loop: Loop, clock: FakeClock, *names: str) -> None:
    for name in names:
        worker = make_worker(loop.client, loop.registry.get(name), loop.settings, clock=clock)
        loop.run(worker.ensure_groups())
        loop.run(worker.drain())


def test_a_model_failing_on_a_sixth_of_its_events_is_failing(
    loop: Loop, sync_redis: redis.Redis
) -> None:
    clock = FakeClock(wall_clock_ms())  # the command below reads the minutes of real time
    events = [(f"C{n}", "kids" if n % 6 == 0 else "male") for n in range(60)]
    _write(sync_redis, loop.settings, events)
    _drain(loop, clock, *loop.registry.names())  # every model: none is stalled

    deployment = Deployment.build(loop.settings, clock)
    models = {m.name: m for m in loop.run(status.collect(loop.client, deployment))}
    picky, last = models["picky"], models["last"]
    assert (picky.recent.events, picky.recent.model_errors) == (60, 10)
    assert picky.failing and picky.recent.failure_rate == pytest.approx(10 / 60)
    assert not last.failing and last.recent == health.Health(60, 0)

    env = {"GENDERD_REDIS_URL": loop.settings.redis_url, "GENDERD_PLUGINS": PLUGIN}
    env |= {"GENDERD_SHARDS": str(loop.settings.shards), "GENDERD_GENDERS": "female,male,kids"}
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 1, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("picky"))
    assert "FAILING: 16.7% model_error" in row
    assert next(line for line in result.output.splitlines() if line.startswith("last")).endswith(
        " ok"
    )
    as_json = CliRunner().invoke(main, ["status", "--json"], env=env)
    picky_json = next(m for m in json.loads(as_json.output) if m["model"] == "picky")
    assert picky_json["failing"] and picky_json["recent_model_errors"] == 10

    # its failures re-driven (after a fix): no longer failing, though the window still counts
    # them, until new failures come
    redriven = CliRunner().invoke(main, ["dead", "redrive", "--model", "picky"], env=env)
    assert redriven.exit_code == 0, redriven.output
    [picky] = [m for m in loop.run(status.collect(loop.client, deployment)) if m.name == "picky"]
    assert picky.recent.model_errors == 10 and not picky.failing


def test_few_events_are_no_rate_and_old_minutes_are_left_out(
    loop: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    _write(sync_redis, loop.settings, [("C1", "kids"), ("C2", "male"), ("C3", "male")])
    _drain(loop, clock, "picky")
    deployment = Deployment.build(loop.settings, clock)
    [picky] = [m for m in loop.run(status.collect(loop.client, deployment)) if m.name == "picky"]
    assert picky.recent == health.Health(3, 1) and not picky.failing  # under MIN_EVENTS

    clock.advance(health.WINDOW_MINUTES * health.MS_PER_MINUTE)  # those minutes are past
    [picky] = [m for m in loop.run(status.collect(loop.client, deployment)) if m.name == "picky"]
    assert picky.recent == health.Health(0, 0)


def _alert_rule() -> dict[str, Any]:
    rules = yaml.safe_load(ALERTS.read_text())
    return next(
        rule
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "GenderdModelFailing"
    )


def _increase(before: str, after: str, name: str, **labels: str) -> float:
    """How much the samples called ``name`` with ``labels`` grew between two scrapes."""

    def total(scrape: str) -> float:
        return sum(
            sample.value
            for family in text_string_to_metric_families(scrape)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    return total(after) - total(before)


def test_the_alert_fires_on_a_failing_workers_metrics(
    loop: Loop, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    rule = _alert_rule()
    expr = " ".join(rule["expr"].split())
    dead = 'genderd_events_dead_total{job="genderd-workers",reason="model_error"}'
    applied = 'genderd_events_applied_total{job="genderd-workers"}'
    assert expr.count(dead) == 2 and applied in expr  # errors / (applied + errors)
    threshold = float(re.search(r"> ([0-9.]+)$", expr).group(1))  # type: ignore[union-attr]

    def ratio(model: str, events: list[tuple[str, str]]) -> float:
        worker = make_worker(loop.client, model, loop.settings, clock=clock)
        worker.metrics = WorkerMetrics(model)
        loop.run(worker.ensure_groups())
        before = generate_latest(worker.metrics.registry).decode()
        _write(sync_redis, loop.settings, events)
        loop.run(worker.drain())
        after = generate_latest(worker.metrics.registry).decode()
        # what the job label selects in Prometheus is the scrape target: this worker
        errors = _increase(before, after, "genderd_events_dead_total", reason="model_error")
        ok = _increase(before, after, "genderd_events_applied_total", model=model)
        return errors / (ok + errors)

    failing = ratio("picky", [(f"C{n}", "kids" if n % 6 == 0 else "male") for n in range(60)])
    assert failing == pytest.approx(10 / 60) and failing > threshold
    healthy = ratio("last", [(f"D{n}", "male") for n in range(60)])
    assert healthy == 0 and not healthy > threshold

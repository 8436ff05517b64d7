"""The shipped monitoring (deploy/): every metric the Grafana dashboard and the alert rules use
is one the API or a worker exports, and Prometheus scrapes every service that exports them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from genderd.api.metrics import ChampionSnapshot, Metrics
from genderd.events import Event
from genderd.processor import Outcome
from genderd.status import ModelStatus, ShardStatus
from genderd.worker_metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
METRIC = re.compile(r"\b((?:genderd|process)_[a-z0-9_]+)")


def _names(text: str) -> set[str]:
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def exported() -> set[str]:
    """Every sample name the API and a worker export, with data in every family."""
    api = Metrics()
    api.lookup_time("client_gender").observe(0.001)
    api.http.count("/v1/clients/{cid}/gender", "GET", 200, 0.001)
    shard = ShardStatus(0, 1, 0, 0, 1, 1, False, True, None, (3, 2, 1))
    champion = ChampionSnapshot("top", "top", 1)
    names = _names(api.render([ModelStatus("top", (), "", [shard])], champion).decode())
    worker = WorkerMetrics("top")
    done = [Event("5-0", "C1", "male", 5)]
    worker.batch(Outcome(applied=1, dead=1, reasons={"bad_ts": 1}, done=done), 0.01, 10)
    worker.reclaimed.inc()
    worker.error("unavailable")
    worker.backlog.lag, worker.backlog.pending = 0, 0
    return names | _names(generate_latest(worker.registry).decode())


def used() -> dict[str, set[str]]:
    """Metric names per place that uses them (dashboard panels, alert rules)."""
    dashboard = json.loads((DEPLOY / "grafana/dashboards/genderd.json").read_text())
    found: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found.setdefault(f"panel {panel['title']!r}", set()).update(
                METRIC.findall(target["expr"])
            )
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            found[f"alert {rule['alert']}"] = set(METRIC.findall(rule["expr"]))
    return found


def test_every_metric_the_dashboard_and_alerts_use_is_exported() -> None:
    names = exported()
    places = used()
    assert len(places) >= 15  # every panel and rule was read
    missing = {place: metrics - names for place, metrics in places.items() if metrics - names}
    assert not missing, missing
    for place, metrics in places.items():
        assert metrics, f"{place} uses no genderd metric"


def test_prometheus_scrapes_the_api_and_every_worker_of_the_compose_stack() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = {
        job["job_name"]: {t for c in job["static_configs"] for t in c["targets"]}
        for job in config["scrape_configs"]
    }
    workers = {name for name in compose["services"] if name.startswith("worker-")}
    assert targets["genderd-workers"] == {f"{name}:9101" for name in workers}
    for name in workers:
        command = compose["services"][name]["command"]
        assert command[command.index("--metrics-port") + 1] == "9101", name
        assert "0.0.0.0" in command, name
    assert targets["genderd-api"] == {"api:8000"}
    # one worker service per model the package registers
    models = {
        c[c.index("--model") + 1]
        for n, c in ((n, compose["services"][n]["command"]) for n in workers)
    }
    assert models == {"last", "recency", "top", "top7d"}
    mounted = {v.split(":")[0] for v in compose["services"]["prometheus"]["volumes"]}
    assert {"./deploy/prometheus/prometheus.yml", "./deploy/prometheus/alerts.yml"} <= mounted


def test_the_api_service_has_the_shared_settings_the_workers_have() -> None:
    """The settings the compose file says to set once (x-environment) reach the API too, even
    with its own `environment:` (issue 19): uncommented there, every genderd service has them."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert "  # GENDERD_SHARDS: " in text
    set_once = text.replace("  # GENDERD_SHARDS: ", "  GENDERD_SHARDS: ", 1)
    for compose in (yaml.safe_load(text), yaml.safe_load(set_once)):
        shared = compose["x-environment"]
        assert shared["GENDERD_REDIS_URL"] == "redis://redis:6379/0"
        genderd = [n for n in compose["services"] if n == "api" or n.startswith("worker-")]
        assert len(genderd) == 5
        for name in genderd:
            environment = compose["services"][name]["environment"]
            assert shared.items() <= environment.items(), name
    assert yaml.safe_load(set_once)["services"]["api"]["environment"]["GENDERD_SHARDS"] == "16"

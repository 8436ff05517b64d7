# ruff: noqa: E501 - one PromQL expression per line reads better than split strings
"""Writes deploy/grafana/dashboards/genderd.json: the Grafana dashboard of genderd, one panel
per entry of PANELS (title, type, [(PromQL, legend)], unit). Edit PANELS and run it again
(tests/test_dashboard.py checks that every metric a panel uses is exported).

    python scripts/make_dashboard.py
"""

import json
from pathlib import Path

PANELS = [
    # (title, type, [(PromQL, legend)], unit)
    (
        "Events applied per second, per model",
        "timeseries",
        [
            (
                'sum by (model) (rate(genderd_events_applied_total{job="genderd-workers"}[1m]))',
                "{{model}}",
            )
        ],
        "ops",
    ),
    (
        "Event to answer, p50 and p99",
        "timeseries",
        [
            (
                'histogram_quantile(0.5, sum by (model, le) (rate(genderd_event_to_answer_seconds_bucket{job="genderd-workers"}[5m])))',
                "{{model}} p50",
            ),
            (
                'histogram_quantile(0.99, sum by (model, le) (rate(genderd_event_to_answer_seconds_bucket{job="genderd-workers"}[5m])))',
                "{{model}} p99",
            ),
        ],
        "s",
    ),
    (
        "Lag (entries not yet delivered)",
        "timeseries",
        [('max by (model) (genderd_lag{job="genderd-api"})', "{{model}}")],
        "short",
    ),
    (
        "Pending (delivered, not yet acknowledged)",
        "timeseries",
        [('max by (model) (genderd_pending{job="genderd-api"})', "{{model}}")],
        "short",
    ),
    (
        "Stalled models",
        "stat",
        [('sum(max by (model) (genderd_stalled{job="genderd-api"}))', "stalled")],
        "short",
    ),
    (
        "Dead letters per minute, by reason",
        "timeseries",
        [
            (
                'sum by (model, reason) (rate(genderd_events_dead_total{job="genderd-workers"}[5m])) * 60',
                "{{model}} {{reason}}",
            )
        ],
        "short",
    ),
    (
        "Reclaimed entries and worker errors per minute",
        "timeseries",
        [
            (
                'sum by (model) (rate(genderd_reclaimed_entries_total{job="genderd-workers"}[5m])) * 60',
                "{{model}} reclaimed",
            ),
            (
                'sum by (model, kind) (rate(genderd_worker_errors_total{job="genderd-workers"}[5m])) * 60',
                "{{model}} {{kind}} errors",
            ),
        ],
        "short",
    ),
    (
        "Events ingested and refused per second (POST /v1/events)",
        "timeseries",
        [
            ('sum(rate(genderd_events_ingested_total{job="genderd-api"}[1m]))', "ingested"),
            ('sum(rate(genderd_events_rejected_total{job="genderd-api"}[1m]))', "refused"),
        ],
        "ops",
    ),
    (
        "Erasures (SPEC 9): clients erased and erased clients' entries dropped, per hour",
        "timeseries",
        [
            (
                'sum(increase(genderd_erasures_total{job="genderd-api"}[1h]))',
                "clients erased (API)",
            ),
            (
                'sum by (model) (increase(genderd_events_erased_total{job="genderd-workers"}[1h]))',
                "{{model}} entries dropped",
            ),
        ],
        "short",
    ),
    (
        "HTTP requests per second, by route and status",
        "timeseries",
        [
            (
                "sum by (route, status) (rate(genderd_http_requests_total[1m]))",
                "{{route}} {{status}}",
            )
        ],
        "reqps",
    ),
    (
        "HTTP errors per second (4xx, 5xx)",
        "timeseries",
        [
            (
                'sum by (status) (rate(genderd_http_requests_total{status=~"4..|5.."}[1m]))',
                "{{status}}",
            )
        ],
        "reqps",
    ),
    (
        "HTTP latency p99, per route",
        "timeseries",
        [
            (
                "histogram_quantile(0.99, sum by (route, le) (rate(genderd_http_request_duration_seconds_bucket[5m])))",
                "{{route}}",
            )
        ],
        "s",
    ),
    (
        "Lookup round trip to Redis, p99",
        "timeseries",
        [
            (
                "histogram_quantile(0.99, sum by (endpoint, le) (rate(genderd_lookup_seconds_bucket[5m])))",
                "{{endpoint}}",
            )
        ],
        "s",
    ),
    (
        "Batch duration p99 and worker CPU",
        "timeseries",
        [
            (
                'histogram_quantile(0.99, sum by (model, le) (rate(genderd_batch_duration_seconds_bucket{job="genderd-workers"}[5m])))',
                "{{model}} batch p99",
            ),
            (
                'sum by (instance) (rate(process_cpu_seconds_total{job="genderd-workers"}[1m]))',
                "{{instance}} CPU",
            ),
        ],
        "s",
    ),
    (
        "Live accuracy per model (accuracy_all, 1 h)",
        "timeseries",
        [
            (
                'max by (model) (increase(genderd_correct_predictions_total{job="genderd-api"}[1h])) / max by (model) (increase(genderd_graded_events_total{job="genderd-api"}[1h]))',
                "{{model}}",
            )
        ],
        "percentunit",
    ),
    (
        "Champion (1: answers lookups with GENDERD_DEFAULT_MODEL=best) and its changes",
        "timeseries",
        [
            ('max by (model) (genderd_champion{job="genderd-api"})', "{{model}}"),
            (
                'max(increase(genderd_champion_changes_total{job="genderd-api"}[1h]))',
                "changes in the last hour",
            ),
        ],
        "short",
    ),
]
panels = []
for n, (title, kind, targets, unit) in enumerate(PANELS):
    panels.append(
        {
            "id": n + 1,
            "title": title,
            "type": kind,
            "datasource": {"type": "prometheus", "uid": "prometheus"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {
                    "refId": chr(65 + i),
                    "expr": expr,
                    "legendFormat": legend,
                    "datasource": {"type": "prometheus", "uid": "prometheus"},
                }
                for i, (expr, legend) in enumerate(targets)
            ],
        }
    )
dashboard = {
    "uid": "genderd",
    "title": "genderd",
    "description": "Throughput, freshness, backlog, dead letters and the HTTP API of genderd (every metric is exported by the API or the workers: tests/test_dashboard.py).",
    "tags": ["genderd"],
    "timezone": "utc",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "10s",
    "time": {"from": "now-1h", "to": "now"},
    "panels": panels,
}
OUT = Path(__file__).resolve().parent.parent / "deploy/grafana/dashboards/genderd.json"
OUT.write_text(json.dumps(dashboard, indent=2) + "\n")
print(f"{OUT}: {len(panels)} panels")

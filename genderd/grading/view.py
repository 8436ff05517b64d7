"""What operators see of live grading: every graded model's grades over a window against the
champion, as ``genderd grades``, ``genderd status`` and ``GET /v1/models`` show them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson

from genderd.deployment import Deployment
from genderd.evaluation import render
from genderd.evaluation.report import Interval
from genderd.evaluation.stats import FRAGILE_BELOW
from genderd.grading.champion import Champion, read_champion
from genderd.grading.live import Grade, Grades, read_window, score
from genderd.transport import Links

#: an API process that serves the champion says so every check interval: seen within this
#: many intervals, it still does
SERVED_INTERVALS = 3


@dataclass(frozen=True)
class LiveView:
    """The grades of every graded model served here over one window, and the champion."""

    grades: Grades
    champion: Champion
    #: lookups that name no model answer from the champion: this process's setting
    #: (GENDERD_DEFAULT_MODEL=best), or an API process said so lately
    serving_best: bool


async def live_view(links: Links, deployment: Deployment, window_s: int, now: int) -> LiveView:
    """Read the champion and the window's grades (one call per shard), and compare."""
    settings = deployment.settings
    champion = await read_champion(links, deployment)
    models = [m.name for m in deployment.registry if m.grades]
    window = await read_window(links.fast, deployment, models, window_s, now)
    reference = champion.model if champion.model in models else None
    lately = now - SERVED_INTERVALS * settings.champion_check_s * 1000
    serving = settings.serves_best or (champion.served_ms or 0) >= lately
    return LiveView(score(window, models, reference), champion, serving)


def _interval(interval: Interval | None) -> dict[str, float] | None:
    return None if interval is None else {"low": interval.low, "high": interval.high}


def grading_of(grade: Grade, window_s: int) -> dict[str, Any]:
    """A model's ``grading`` object (``GET /v1/models``, ``genderd grades --json``)."""
    versus = grade.versus
    return {
        "window_s": window_s,
        "events": grade.events,
        "predicted": grade.predicted,
        "correct": grade.correct,
        "client_groups": grade.clusters,
        "accuracy": grade.accuracy,
        "accuracy_interval": _interval(grade.accuracy_interval),
        "accuracy_all": grade.accuracy_all,
        "accuracy_all_interval": _interval(grade.accuracy_all_interval),
        "versus_champion": None
        if versus is None
        else {
            "champion": versus.reference,
            "difference": versus.difference,
            "interval": _interval(versus.interval),
            "p_value": versus.p_value,
            "p_adjusted": versus.p_adjusted,
            "significant": versus.significant,
            "challengers": versus.challengers,
        },
    }


def champion_of(view: LiveView) -> dict[str, Any]:
    """The ``champion`` object: the stored champion, whether lookups follow it."""
    return {**view.champion.to_dict(), "served_by_default": view.serving_best}


def to_json(view: LiveView) -> str:
    """``genderd grades --json``."""
    window = view.grades.window
    return orjson.dumps(
        {
            "window_s": window.window_s,
            "since_ms": window.since_ms,
            "until_ms": window.until_ms,
            "client_groups": len(window.clusters()),
            "fragile": view.grades.fragile,
            "champion": champion_of(view),
            "models": {g.model: grading_of(g, window.window_s) for g in view.grades.models},
        },
        option=orjson.OPT_INDENT_2,
    ).decode()


def _row(grade: Grade, champion: str) -> list[str]:
    versus = grade.versus
    if grade.model == champion:
        cell = "champion"
    elif versus is None:
        cell = ""
    else:
        cell = render.difference(versus.difference, versus.interval, versus.significant)
    return [
        grade.model,
        f"{grade.events:,}",
        render.percent(grade.coverage) if grade.events else "-",
        render.with_interval(grade.accuracy, grade.accuracy_interval),
        render.with_interval(grade.accuracy_all, grade.accuracy_all_interval),
        cell,
    ]


def champion_line(view: LiveView) -> str:
    """One line: who the champion is, since when, pinned or not, and whether it is served."""
    champion = view.champion
    since = "" if champion.since_ms is None else f" since {_when(champion.since_ms)}"
    pinned = ", pinned" if champion.pinned else ""
    served = (
        "lookups that name no model answer from it"
        if view.serving_best
        else "not served by default (no API with GENDERD_DEFAULT_MODEL=best seen lately)"
    )
    behind = (
        f"; at the last check it was significantly behind {champion.behind}"
        if champion.behind
        else ""
    )
    return f"champion: {champion.model}{since}{pinned}; {served}{behind}"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def table(view: LiveView) -> str:
    """``genderd grades``: the evaluate table, live, against the champion."""
    grades, window = view.grades, view.grades.window
    header = ["model", "events", "coverage", "accuracy [95% CI]", "accuracy_all [95% CI]"]
    rows = [[*header, "vs champion [95% CI]"]]
    rows += [_row(grade, view.champion.model) for grade in grades.models]
    lines = render.aligned(rows, text_last=True)
    compared = [g.versus for g in grades.models if g.versus is not None]
    if compared:
        lines.append(
            f"vs champion: difference from {view.champion.model} on the same client groups; "
            f"intervals hold together over the {compared[0].challengers} challengers"
        )
    if any(v.significant for v in compared):
        lines.append(f"* significantly different from {view.champion.model} after adjustment")
    if not window.clusters():
        lines.append(
            "no event graded in this window: events are graded as workers apply them, when "
            "they arrive within GENDERD_GRADING_MAX_DELAY_S of their time"
        )
    elif grades.fragile:
        lines.append(
            f"fragile: graded events from only {len(window.clusters())} client groups (fewer "
            f"than {FRAGILE_BELOW}): the intervals and verdicts are not to be trusted"
        )
    lines += [
        "",
        champion_line(view),
        f"live grades of {_when(window.since_ms)} to {_when(window.until_ms)} "
        f"({window.window_s // 3600:,} h), {len(window.clusters()):,} client groups",
    ]
    return "\n".join(lines)


__all__ = [
    "LiveView",
    "champion_line",
    "champion_of",
    "grading_of",
    "live_view",
    "table",
    "to_json",
]

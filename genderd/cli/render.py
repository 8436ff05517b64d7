"""How `genderd status` shows a deployment's state: the table, the JSON, the live view."""

from __future__ import annotations

import json
import time

from genderd.clock import MS_PER_DAY
from genderd.grading.view import LiveView, champion_line, grading_of
from genderd.health import WINDOW_MINUTES
from genderd.status import ModelStatus, StreamAhead

BEHIND_IN_MINUTES_S = 120


def _row(*cells: object) -> str:
    name, shard, lag, pending, dead, applied, live, state = cells
    return f"{name:<10}{shard:>6}{lag:>10}{pending:>9}{dead:>8}{applied:>12}{live:>10}  {state}"


def _live(view: LiveView | None, m: ModelStatus) -> str:
    """The model's live accuracy_all over the view's window: "-" without graded events (or
    not loaded here), "not graded" for a model loaded here whose Lua gives no prediction."""
    if view is None:
        return "-"
    try:
        value = view.grades.grade(m.name).accuracy_all
    except KeyError:
        return "not graded" if m.loaded and m.not_served is None else "-"
    return "-" if value is None else f"{100 * value:.1f}%"


def model_state(m: ModelStatus) -> str:
    """REPLAY INTERRUPTED, paused, off, STALLED, FAILING (with the rate) or ok; a rate under
    the threshold is shown too, and a model not loaded here says so."""
    if m.pause.interrupted:
        state = f"REPLAY INTERRUPTED: paused until `genderd replay --model {m.name}` ends"
    elif m.pause.paused:
        state = "paused (replay)"
    elif m.off:
        state = "off (switched off: genderd models on)"
    elif m.stalled:
        state = "STALLED"
    elif m.failing:
        state = f"FAILING: {m.recent.failure_rate:.1%} model_error (last {WINDOW_MINUTES} min)"
    elif m.recent.failure_rate:
        state = f"ok, {m.recent.failure_rate:.1%} model_error"
    else:
        state = "ok"
    if m.unreadable:
        state += f"; unreadable record ({m.unreadable})"
    elif not m.loaded:
        state += f"; not loaded here ({m.kind}{', ' + m.loaded_from if m.loaded_from else ''})"
    return state


def status_table(models: list[ModelStatus], per_shard: bool, view: LiveView | None = None) -> str:
    """One row per model (and per shard with ``per_shard``): lag, pending, dead, applied,
    the live accuracy (``accuracy_all`` of the last 24 h of grades), state; then the champion
    line."""
    lines = [_row("model", "shard", "lag", "pending", "dead", "applied", "live acc", "state")]
    for m in models:
        state = model_state(m)
        live = _live(view, m)
        lines.append(_row(m.name, "all", m.lag, m.pending, m.dead, m.applied, live, state))
        for s in m.shards if per_shard else []:
            state = "STALLED" if s.stalled else f"consumers: {s.consumers}"
            if m.pause.paused:
                state = "paused"
            if not s.grouped:
                state = "no group yet"
            lines.append(_row("", s.shard, s.lag, s.pending, s.dead, s.applied, "", state))
    if view is not None:
        lines.append(champion_line(view))
    return "\n".join(lines)


def status_json(models: list[ModelStatus], per_shard: bool, view: LiveView | None = None) -> str:
    """The same as :func:`status_table`, machine-readable (``grading``: as ``GET
    /v1/models`` gives it; ``champion``: whether the model is the champion)."""
    grading = (
        {}
        if view is None
        else {g.model: grading_of(g, view.grades.window.window_s) for g in view.grades.models}
    )
    champion = None if view is None else view.champion.model
    return json.dumps(
        [
            {
                "model": m.name,
                "aliases": list(m.aliases),
                "lag": m.lag,
                "pending": m.pending,
                "dead": m.dead,
                "applied": m.applied,
                "stalled": m.stalled,
                "failing": m.failing,
                "paused": m.pause.paused,
                "replay_interrupted": m.pause.interrupted,
                "recent_events": m.recent.events,
                "recent_model_errors": m.recent.model_errors,
                "failure_rate": m.recent.failure_rate,
                "off": m.off,
                "unreadable_record": m.unreadable or None,
                "kind": m.kind,
                "loaded_from": m.loaded_from,
                "served_here": m.not_served is None,
                "not_served": m.not_served,
                "grading": grading.get(m.name),
                "champion": m.name == champion,
                "shards": [vars(s) for s in m.shards] if per_shard else None,
            }
            for m in models
        ],
        indent=2,
    )


def ahead_warning(stream: StreamAhead) -> str:
    """The warning about a shard whose stream's last id is ahead of the clock."""
    return (
        f"warning: shard {stream.shard}: the stream's last id {stream.last_id} is "
        f"{stream.ahead_ms / MS_PER_DAY:,.1f} days ahead of the clock (an entry was written "
        "with an explicit id). Entries without ts are dead-lettered as future_ts there and "
        "age-based trimming stops; genderd's producers and API send ts and are not "
        "affected. To recover (writers stopped, lag and pending 0): "
        f"'genderd stream set-aside {stream.shard}'; see 'A stream id in the future' in the "
        "operations docs."
    )


def _behind(oldest_ms: int | None, now_ms: int) -> str:
    if oldest_ms is None:
        return "up to date"
    seconds = max(0, now_ms - oldest_ms) / 1000
    return f"{seconds:,.1f} s" if seconds < BEHIND_IN_MINUTES_S else f"{seconds / 60:,.1f} min"


class WatchView:
    """The frames of `genderd status --watch`: rates from one frame to the next."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._previous: dict[str, tuple[float, int]] = {}

    def frame(self, models: list[ModelStatus], now_ms: int) -> str:
        """The view of ``models`` now (``now_ms``: the deployment's clock)."""
        now = time.monotonic()
        lines = [
            f"genderd status  {time.strftime('%H:%M:%S')}  every {self.interval_s:g} s, "
            "Ctrl-C stops",
            "",
            f"{'model':<10}{'applied/s':>11}{'lag':>10}{'pending':>9}{'dead':>8}"
            f"{'applied':>12}  {'behind':<12}state",
        ]
        for m in models:
            was = self._previous.get(m.name)
            rate = "" if was is None else f"{(m.applied - was[1]) / (now - was[0]):,.0f}"
            self._previous[m.name] = (now, m.applied)
            behind = _behind(m.oldest_waiting_ms, now_ms)
            state = model_state(m)
            lines.append(
                f"{m.name:<10}{rate:>11}{m.lag:>10}{m.pending:>9}{m.dead:>8}"
                f"{m.applied:>12}  {behind:<12}{state}"
            )
        return "\n".join(lines)

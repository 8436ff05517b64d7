"""How an evaluation is shown: the aligned table, the JSON text and the PNG plot.

The table reads top to bottom as a data scientist asks: which model predicts the next visit
best, and is the difference real (the scores, with the majority baseline first); where it
wins (the breakdown by how many earlier events the client had); how the answers compare with
known labels, when given; and what was read (the footer).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import orjson

from genderd.errors import ConfigurationError, InputError
from genderd.evaluation.report import Bucket, Interval, LabelScore, ModelScore, Report
from genderd.evaluation.stats import ALPHA, FRAGILE_BELOW

PLOT_EXTRA = "pip install 'genderd[plot]'"
NONE = "none"  # the confusion column of clients a model has no answer for
PLOT_SIZE_IN = (8.0, 4.5)
PLOT_DPI = 120
PLOT_DODGE = 0.06  # how far apart the models' points sit within a history bucket (x units)
NO_HISTORY = "0"  # the history bucket of a client's first event


# -- cells ---------------------------------------------------------------------------------------
def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def with_interval(value: float | None, interval: Interval | None) -> str:
    if value is None:
        return "-"
    if interval is None:
        return percent(value)
    return f"{percent(value)} [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def difference(value: float, interval: Interval, significant: bool) -> str:
    """A difference of accuracies in points with its interval, and ``*`` when significant."""
    star = "  *" if significant else ""
    return f"{100 * value:+.1f} pts [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]{star}"


def _versus(score: ModelScore, best: str | None) -> str:
    if score.model == best:
        return "best"
    versus = score.versus_best
    if versus is None:
        return ""
    return difference(versus.difference, versus.interval, versus.significant)


def aligned(rows: Sequence[Sequence[str]], text_last: bool = False) -> list[str]:
    """``rows`` as lines of columns two spaces apart: the first column (and the last, with
    ``text_last``) aligned left, the others right (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = {0, len(widths) - 1} if text_last else {0}
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if i in left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


# -- sections ------------------------------------------------------------------------------------
def _scores(report: Report) -> list[str]:
    header = [
        "model",
        "events",
        "coverage",
        "accuracy [95% CI]",
        "accuracy_all [95% CI]",
        "log-loss",
        "vs best [95% CI]",
    ]
    rows = [header]
    for score in report.models:
        rows.append(
            [
                score.model,
                f"{score.events:,}",
                percent(score.coverage),
                with_interval(score.accuracy, score.accuracy_interval),
                with_interval(score.accuracy_all, score.accuracy_all_interval),
                "" if score.log_loss is None else f"{score.log_loss:.3f}",
                _versus(score, report.best),
            ]
        )
    lines = aligned(rows, text_last=True)
    compared = [s.versus_best for s in report.models if s.versus_best is not None]
    if compared:
        lines.append(
            f"vs best: difference from {report.best} on the same events, paired and clustered "
            f"by client; intervals hold together over the {compared[0].pairs} pairs of rows"
        )
    if any(versus.significant for versus in compared):
        lines.append(
            f"* significantly behind {report.best} after adjustment for the "
            f"{compared[0].pairs} pairs compared (Holm, p < 0.05)"
        )
    baseline = report.models[0].versus_best
    if baseline is not None and baseline.difference > 0 and baseline.p_adjusted < ALPHA:
        lines.append(
            f"! {report.models[0].model} (the baseline) is significantly ahead of {report.best}: "
            "the models do worse than knowing nothing about the shopper"
        )
    if report.fragile:
        lines.append(fragile_note(report.clients))
    return lines


def fragile_note(clients: int) -> str:
    """The warning of an evaluation on too few clients."""
    return (
        f"fragile: only {clients:,} client{'s' if clients != 1 else ''} (fewer than "
        f"{FRAGILE_BELOW}): the intervals and verdicts rest on too few shoppers to be trusted"
    )


def _by_history(report: Report) -> list[str]:
    first = report.models[0]
    histories = [bucket.history for bucket in first.by_history]
    rows = [
        ["earlier events", *histories],
        ["events", *(f"{b.events:,}" for b in first.by_history)],
    ]
    for score in report.models:
        buckets = score.by_history
        rows.append(
            [
                score.model,
                *(with_interval(b.accuracy_all, b.accuracy_all_interval) for b in buckets),
            ]
        )
    return [
        "accuracy_all [95% CI] by history length (the client's earlier events):",
        *aligned(rows),
    ]


def _labels(report: Report, labels: Sequence[LabelScore]) -> list[str]:
    rows = [["model", "clients", "answered", "coverage", "accuracy [95% CI]"]]
    for label in labels:
        rows.append(
            [
                label.model,
                f"{label.clients:,}",
                f"{label.answered:,}",
                percent(label.coverage),
                with_interval(label.accuracy, label.accuracy_interval),
            ]
        )
    unknown = (
        f"; {report.labels_unknown:,} without events, not scored" if report.labels_unknown else ""
    )
    lines = [f"known labels, answers at the end of the history{unknown}:", *aligned(rows)]
    for label in labels:
        lines += ["", *_confusion(label)]
    return lines


def _confusion(label: LabelScore) -> list[str]:
    predicted = sorted({p for row in label.confusion.values() for p in row} - {NONE})
    columns = [*predicted, NONE]
    rows = [[f"{label.model}: true \\ answer", *columns]]
    for true, counts in sorted(label.confusion.items()):
        rows.append([true, *(f"{counts.get(column, 0):,}" for column in columns)])
    return aligned(rows)


def date(ts: int | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _footer(report: Report) -> str:
    parts = [
        f"{report.events:,} events of {report.clients:,} clients, "
        f"{date(report.first_ts)} to {date(report.last_ts)} UTC"
        + ("" if report.order == "time" else f", in {report.order} order")
    ]
    if report.warmup_events:
        parts.append(f"warm-up: {report.warmup_events:,} events before --since, not scored")
    if report.session_gap_ms is not None:
        parts.append(
            f"scored: first event of each session (gap {report.session_gap_ms / 60_000:g} min)"
        )
    invalid = ", ".join(
        f"{reason} {count:,}" for reason, count in sorted(report.invalid_reasons.items())
    )
    parts.append(f"invalid: {report.events_invalid:,}" + (f" ({invalid})" if invalid else ""))
    if report.refused:
        parts.append("not evaluated: " + ", ".join(sorted(report.refused)))
    return "; ".join(parts)


def table(report: Report) -> str:
    """The report as aligned text for a terminal (stdout)."""
    lines: list[str] = []
    if report.models:
        lines += _scores(report)
        lines += ["", *_by_history(report)]
    if report.labels:
        lines += ["", *_labels(report, report.labels)]
    lines += ["", _footer(report)]
    return "\n".join(lines)


def to_json(report: Report) -> str:
    """The report as indented JSON (:meth:`Report.to_dict`)."""
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode()


# -- plot ----------------------------------------------------------------------------------------
def plot_title(report: Report) -> str:
    """The plot's title: what is drawn, the events scored and the settings that shaped them."""
    scored = report.models[0].events if report.models else 0
    settings = [f"{scored:,} scored events of {report.clients:,} clients"]
    if report.session_gap_ms is not None:
        settings.append(f"session gap {report.session_gap_ms / 60_000:g} min")
    else:
        settings.append("every event scored")
    settings.append(f"{report.order} order")
    if report.provenance is not None:
        settings.append(f"window {report.provenance.window_days} d")
    period = f"{date(report.first_ts)} to {date(report.last_ts)} UTC"
    since = report.provenance.since_ms if report.provenance else None
    if report.warmup_events and since is not None:
        period = (
            f"scored {date(since)} to {date(report.last_ts)} UTC, after a warm-up of "
            f"{report.warmup_events:,} events from {date(report.first_ts)}"
        )
    return "\n".join(
        ["next-visit accuracy_all by history length, 95% CI", ", ".join(settings), period]
    )


def _error_bar(bucket: Bucket) -> tuple[float, float, float]:
    """A bucket's accuracy_all in percent and its interval's extent below and above it."""
    value, interval = bucket.accuracy_all, bucket.accuracy_all_interval
    if value is None:
        return math.nan, 0.0, 0.0
    if interval is None:
        return 100 * value, 0.0, 0.0
    return 100 * value, 100 * (value - interval.low), 100 * (interval.high - value)


def plot(report: Report, path: str | Path) -> None:
    """A PNG of accuracy_all by history length with 95% intervals as error bars, one line per
    model (the baseline dashed). Clients' first events (no earlier event) are left out: no
    model can answer them, and their 0% would squash the scale.

    Needs matplotlib (``pip install 'genderd[plot]'``), imported only here.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed, whatever the environment says
        from matplotlib import pyplot
    except ImportError:
        raise ConfigurationError(f"--plot needs matplotlib: {PLOT_EXTRA}") from None
    figure, axes = pyplot.subplots(figsize=PLOT_SIZE_IN)
    try:
        rows = len(report.models)
        for index, score in enumerate(report.models):
            shown = [b for b in score.by_history if b.history != NO_HISTORY]
            # side by side within a bucket, so that the error bars do not hide each other
            offset = (index - (rows - 1) / 2) * PLOT_DODGE
            xs = [position + offset for position in range(len(shown))]
            values, below, above = zip(*(_error_bar(bucket) for bucket in shown), strict=True)
            axes.errorbar(
                xs,
                values,
                yerr=[below, above],
                marker="o",
                capsize=3,
                label=score.model,
                linestyle="--" if index == 0 else "-",
            )
            axes.set_xticks(range(len(shown)), [bucket.history for bucket in shown])
        axes.set_xlabel("earlier events of the client (first events left out: no model answers)")
        axes.set_ylabel("next-visit accuracy_all (%)")
        axes.set_title(plot_title(report), fontsize="medium")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the lines, not on them
        figure.tight_layout()
        try:
            figure.savefig(path, dpi=PLOT_DPI, format="png")
        except OSError as error:
            raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        pyplot.close(figure)

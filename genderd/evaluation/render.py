"""How an evaluation is shown: the aligned table, the JSON text and the PNG plot.

The table reads top to bottom as a data scientist asks: which model predicts the next visit
best, and is the difference real (the scores, with the majority baseline first); where it
wins (the breakdown by how many earlier events the client had); how the answers compare with
known labels, when given; and what was read (the footer).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import orjson

from genderd.errors import ConfigurationError, InputError
from genderd.evaluation.report import Interval, LabelScore, ModelScore, Report

PLOT_EXTRA = "pip install 'genderd[plot]'"
NONE = "none"  # the confusion column of clients a model has no answer for
P_SHOWN_BELOW = 0.001  # smaller p-values are shown as "p<0.001"
PLOT_SIZE_IN = (8.0, 4.5)
PLOT_DPI = 120


# -- cells ---------------------------------------------------------------------------------------
def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _with_interval(value: float | None, interval: Interval | None) -> str:
    if value is None:
        return "-"
    if interval is None:
        return _percent(value)
    return f"{_percent(value)} [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def _versus(score: ModelScore, best: str | None) -> str:
    if score.model == best:
        return "best"
    versus = score.versus_best
    if versus is None:
        return ""
    p = f"p<{P_SHOWN_BELOW:g}" if versus.p_value < P_SHOWN_BELOW else f"p={versus.p_value:.3f}"
    return f"{100 * versus.difference:+.1f} pts  {p}{'  *' if versus.significant else ''}"


def _aligned(rows: Sequence[Sequence[str]], text_last: bool = False) -> list[str]:
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
        "vs best",
    ]
    rows = [header]
    for score in report.models:
        rows.append(
            [
                score.model,
                f"{score.events:,}",
                _percent(score.coverage),
                _with_interval(score.accuracy, score.accuracy_interval),
                _with_interval(score.accuracy_all, score.accuracy_all_interval),
                "" if score.log_loss is None else f"{score.log_loss:.3f}",
                _versus(score, report.best),
            ]
        )
    lines = _aligned(rows, text_last=True)
    if any(s.versus_best and s.versus_best.significant for s in report.models):
        lines.append(
            f"* significantly behind {report.best} (p < 0.05, paired, clustered by client)"
        )
    return lines


def _by_history(report: Report) -> list[str]:
    first = report.models[0]
    histories = [bucket.history for bucket in first.by_history]
    rows = [
        ["earlier events", *histories],
        ["events", *(f"{b.events:,}" for b in first.by_history)],
    ]
    for score in report.models:
        rows.append([score.model, *(_percent(b.accuracy_all) for b in score.by_history)])
    return ["accuracy_all by history length (the client's earlier events):", *_aligned(rows)]


def _labels(report: Report, labels: Sequence[LabelScore]) -> list[str]:
    rows = [["model", "clients", "answered", "coverage", "accuracy"]]
    for label in labels:
        rows.append(
            [
                label.model,
                f"{label.clients:,}",
                f"{label.answered:,}",
                _percent(label.coverage),
                _percent(label.accuracy),
            ]
        )
    unknown = (
        f"; {report.labels_unknown:,} without events, not scored" if report.labels_unknown else ""
    )
    lines = [f"known labels, answers at the end of the history{unknown}:", *_aligned(rows)]
    for label in labels:
        lines += ["", *_confusion(label)]
    return lines


def _confusion(label: LabelScore) -> list[str]:
    predicted = sorted({p for row in label.confusion.values() for p in row} - {NONE})
    columns = [*predicted, NONE]
    rows = [[f"{label.model}: true \\ answer", *columns]]
    for true, counts in sorted(label.confusion.items()):
        rows.append([true, *(f"{counts.get(column, 0):,}" for column in columns)])
    return _aligned(rows)


def _date(ts: int | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _footer(report: Report) -> str:
    parts = [
        f"{report.events:,} events of {report.clients:,} clients, "
        f"{_date(report.first_ts)} to {_date(report.last_ts)} UTC"
    ]
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
def plot(report: Report, path: str | Path) -> None:
    """A PNG of accuracy_all by history length, one line per model (the baseline dashed).

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
        for index, score in enumerate(report.models):
            histories = [bucket.history for bucket in score.by_history]
            values = [
                float("nan") if b.accuracy_all is None else 100 * b.accuracy_all
                for b in score.by_history
            ]
            axes.plot(
                histories,
                values,
                marker="o",
                label=score.model,
                linestyle="--" if index == 0 else "-",
            )
        axes.set_xlabel("earlier events of the client")
        axes.set_ylabel("next-visit accuracy_all (%)")
        axes.set_title(f"next-visit accuracy by history length ({report.events:,} events)")
        axes.grid(True, alpha=0.3)
        axes.legend()
        figure.tight_layout()
        try:
            figure.savefig(path, dpi=PLOT_DPI, format="png")
        except OSError as error:
            raise InputError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        pyplot.close(figure)

"""`genderd evaluate`: score the models on history, prequentially (SPEC §11).

The command resolves what to read and which models to score, then hands over to
:mod:`genderd.evaluation`: :mod:`~genderd.evaluation.inputs` reads, ``evaluate`` scores,
:mod:`~genderd.evaluation.render` shows. Reading a file needs no Redis; reading the
deployment's streams writes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from genderd.cli.common import INSTANT, FiniteRange, ModelOption, opened, run, settings_of
from genderd.deployment import Deployment
from genderd.errors import InputError
from genderd.evaluation import render
from genderd.evaluation.digest import file_digest, spooled_stdin
from genderd.evaluation.inputs import (
    STDIN,
    InputSummary,
    in_time_order,
    read_file,
    read_labels,
    stream_chunks,
)
from genderd.evaluation.invalid import invalid_warning
from genderd.evaluation.prediction_file import format_of, prediction_file
from genderd.evaluation.predictors import ORDERS, TIME, Order
from genderd.evaluation.provenance import file_source, provenance, streams_source
from genderd.evaluation.report import Report, Source
from genderd.evaluation.selection import Selection
from genderd.models.base import Model
from genderd.settings import Settings

if TYPE_CHECKING:
    from genderd.evaluation.prequential import Evaluation, Sink

MS_PER_MINUTE = 60_000
UNKNOWN_LABELS_SHOWN = 3  # examples named when labelled clients have no events
Progress = Callable[[int, int], None]


def chosen_models(deployment: Deployment, names: str | None) -> tuple[list[Model], bool]:
    """The models to score and whether the user named them. Named: each must exist and be
    evaluable (one line otherwise); by default every registered model, the ones that cannot
    be evaluated skipped by ``evaluate`` (listed in ``Report.refused``)."""
    if names is None:
        return list(deployment.registry), False
    models: dict[str, Model] = {}
    for name in (part.strip() for part in names.split(",")):
        if name:
            model = deployment.model(name)  # UnknownModelError: one line naming the known ones
            models.setdefault(model.name, model)
    if not models:
        raise click.BadParameter("name at least one model", param_hint="--models")
    for model in models.values():
        model.predictor()  # raises NotEvaluable (an InputError) with the reason
    return list(models.values()), True


def check_labels(labels: dict[str, str], known: Callable[[str], bool]) -> None:
    """Labelled clients without events cannot be scored: one line with their count and a
    few of them (``--skip-unknown-labels`` scores the others)."""
    unknown = [cid for cid in labels if not known(cid)]
    if unknown:
        examples = ", ".join(repr(cid) for cid in unknown[:UNKNOWN_LABELS_SHOWN])
        more = ", ..." if len(unknown) > UNKNOWN_LABELS_SHOWN else ""
        clients = "client has" if len(unknown) == 1 else "clients have"
        raise InputError(
            f"{len(unknown):,} labelled {clients} no events in the history "
            f"({examples}{more}); --skip-unknown-labels scores the others"
        )


def no_valid_events(summary: InputSummary) -> InputError:
    """The error of a history with nothing to evaluate."""
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(summary.reasons.items()))
    return InputError(
        f"no valid events: {summary.read:,} read, {summary.invalid:,} invalid"
        + (f" ({reasons})" if reasons else "")
    )


class _Bar:
    """A progress bar on stderr when it is a terminal, made at the first report (when the
    total is known: a time-order evaluation knows it once it has read everything)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not total:
            return
        if self._bar is None:
            self._bar = self._stack.enter_context(
                click.progressbar(length=total, label="evaluating", file=sys.stderr, show_pos=True)
            )
        self._bar.update(done - self._bar.pos)


@dataclasses.dataclass(frozen=True)
class Options:
    """What the command evaluates, resolved from its options."""

    names: str | None
    order: Order
    selection: Selection
    labels: dict[str, str] | None
    progress: Progress | None
    sink: Sink | None


def _evaluation(
    models: list[Model], settings: Settings, options: Options, *, presorted: bool, expected: int
) -> Evaluation:
    from genderd.evaluation.prequential import Evaluation

    return Evaluation(
        models,
        genders=settings.genders,
        order=options.order,
        selection=options.selection,
        presorted=presorted,
        sink=options.sink,
        progress=options.progress,
        expected=expected,
    )


async def _from_streams(
    settings: Settings, options: Options, summary: InputSummary
) -> tuple[Deployment, list[Model], bool, Evaluation, Source]:
    async with opened(settings, read_only=True) as (deployment, links):
        models, named = chosen_models(deployment, options.names)
        client = links.client
        expected = sum([await client.xlen(deployment.keys.stream(s)) for s in deployment.shards])
        evaluation = _evaluation(models, settings, options, presorted=False, expected=expected)
        async for chunk in stream_chunks(client, deployment, summary=summary):
            evaluation.feed(chunk)
        return deployment, models, named, evaluation, streams_source(deployment, summary)


def _from_file(
    path: str, settings: Settings, options: Options, summary: InputSummary
) -> tuple[Deployment, list[Model], bool, Evaluation, Source]:
    deployment = Deployment.build(settings)  # no Redis: the configured deployment
    models, named = chosen_models(deployment, options.names)
    now = deployment.clock()
    with contextlib.ExitStack() as stack:
        if path == STDIN:  # spooled: hashed, and read twice where needed
            path, digest = stack.enter_context(spooled_stdin())
            source = file_source(path, digest, stdin=True)
        else:
            digest = file_digest(path)
            source = file_source(path, digest)
        # a file in time order is evaluated as it is read (memory: the clients, not the events)
        presorted = options.order == TIME and in_time_order(path, now_ms=now)
        evaluation = _evaluation(
            models, settings, options, presorted=presorted, expected=digest.lines
        )
        evaluation.feed(read_file(path, settings, now_ms=now, summary=summary))
    return deployment, models, named, evaluation, source


def _minutes_ms(minutes: float | None) -> int | None:
    return None if minutes is None else round(minutes * MS_PER_MINUTE)


def _checked(since: int | None, until: int | None, warmup: bool) -> None:
    """Options that cannot go together: a usage error each."""
    if since is not None and until is not None and since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    if warmup and since is None:
        raise click.BadParameter(
            "--warmup applies the history before --since: give --since", param_hint="--warmup"
        )


@click.command()
@click.option(
    "--events",
    "events_path",
    metavar="FILE",
    help="JSON Lines or CSV of events ('-': stdin); no Redis needed. "
    "[default: the deployment's retained streams, read-only]",
)
@click.option("--since", type=INSTANT, help="Events at or after this time (ms or ISO, UTC).")
@click.option("--until", type=INSTANT, help="Events before this time (ms or ISO, UTC).")
@click.option(
    "--warmup",
    is_flag=True,
    help="With --since: apply all the history before it to the models, without scoring it.",
)
@click.option(
    "--order",
    type=click.Choice(ORDERS),
    default=TIME,
    show_default=True,
    help="Apply each client's events by event time, or as they arrived (stream ids, a "
    "file's lines), as the workers did.",
)
@click.option(
    "--models",
    "names",
    cls=ModelOption,
    metavar="A,B",
    help="Models to score, names or aliases [default: all].",
)
@click.option(
    "--session-gap",
    type=FiniteRange(0, min_open=True),
    metavar="MINUTES",
    help="Score only a client's first event after this much inactivity [default: every event].",
)
@click.option(
    "--max-delay",
    type=FiniteRange(0),
    metavar="SECONDS",
    help="Score only events that arrived at most this long after their time (entry id time "
    "minus ts; a file's line: the newest ts before it) [default: every event].",
)
@click.option("--labels", "labels_path", metavar="FILE", help="Known genders: cid,gender.")
@click.option(
    "--skip-unknown-labels", is_flag=True, help="Ignore labelled clients that have no events."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", "plot_path", metavar="PNG", help="Draw accuracy by history length.")
@click.option(
    "--predictions",
    "predictions_path",
    metavar="FILE",
    help="Write every scored event's prediction per model (.csv, or .jsonl/.json: JSON Lines).",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    events_path: str | None,
    since: int | None,
    until: int | None,
    warmup: bool,
    order: Order,
    names: str | None,
    session_gap: float | None,
    max_delay: float | None,
    labels_path: str | None,
    skip_unknown_labels: bool,
    as_json: bool,
    plot_path: str | None,
    predictions_path: str | None,
) -> None:
    """Score the models on history: how well each predicts a shopper's next page view.

    Events are replayed in time order (or, with --order arrival, as they arrived); before
    each event, each model's answer from the client's earlier events (as the live service
    would have served it then) is compared with the event's gender. Shows coverage, accuracy
    with 95% intervals clustered by client, the comparison with the best model, a majority
    baseline, and accuracy by history length.
    """
    _checked(since, until, warmup)
    if events_path == STDIN and labels_path == STDIN:
        raise click.BadParameter("only one of --events and --labels can read stdin")
    if predictions_path is not None:
        format_of(predictions_path)  # a bad extension: one line before anything is read
    settings = settings_of(ctx, find_server=events_path is None)
    labels = read_labels(labels_path, settings) if labels_path else None
    selection = Selection(
        since_ms=since,
        until_ms=until,
        warmup=warmup,
        session_gap_ms=_minutes_ms(session_gap),
        max_delay_ms=None if max_delay is None else round(max_delay * 1000),
    )
    summary = InputSummary()
    with contextlib.ExitStack() as stack:
        sink = None
        if predictions_path is not None:
            sink = stack.enter_context(prediction_file(predictions_path)).through
        progress = _Bar(stack) if sys.stderr.isatty() else None
        options = Options(names, order, selection, labels, progress, sink)
        if events_path is None:
            found = run(_from_streams(settings, options, summary))
        else:
            found = _from_file(events_path, settings, options, summary)
        report = _reported(found, options, summary, skip_unknown_labels)
    warning = invalid_warning(summary, settings)
    if warning:
        click.echo(warning, err=True)
    click.echo(render.to_json(report) if as_json else render.table(report))
    if plot_path:
        render.plot(report, plot_path)


def _reported(
    found: tuple[Deployment, list[Model], bool, Evaluation, Source],
    options: Options,
    summary: InputSummary,
    skip_unknown_labels: bool,
) -> Report:
    """The report of an evaluation that read its input, with what was read and evaluated."""
    deployment, models, named, evaluation, source = found
    report = evaluation.report(options.labels)
    if not report.events:
        raise no_valid_events(summary)
    if options.labels and not skip_unknown_labels:
        check_labels(options.labels, evaluation.run.knows)
    _refusals(report, named)
    return dataclasses.replace(
        report,
        events_invalid=summary.invalid,
        invalid_reasons=dict(summary.reasons),
        provenance=provenance(
            source,
            deployment,
            models,
            order=options.order,
            selection=options.selection,
            evaluated_at_ms=deployment.clock(),
        ),
    )


def _refusals(report: Report, named: bool) -> None:
    """Models ``evaluate`` refused: an error when the user named them, else a note each."""
    for name, reason in sorted(report.refused.items()):
        if named:
            raise InputError(reason)
        click.echo(f"note: {name} is not evaluated: {reason}", err=True)

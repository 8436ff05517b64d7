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
from collections.abc import Callable, Iterator, Sequence

import click

from genderd.cli.common import INSTANT, FiniteRange, ModelOption, opened, run, settings_of
from genderd.deployment import Deployment
from genderd.errors import InputError
from genderd.evaluation import render
from genderd.evaluation.inputs import STDIN, InputSummary, read_file, read_labels, read_streams
from genderd.evaluation.report import Report
from genderd.events import Event
from genderd.models.base import Model
from genderd.settings import Settings

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


def _within(events: Iterator[Event], since: int | None, until: int | None) -> list[Event]:
    return [
        e for e in events if (since is None or e.ts >= since) and (until is None or e.ts < until)
    ]


def check_labels(labels: dict[str, str], events: Sequence[Event]) -> None:
    """Labelled clients without events cannot be scored: one line with their count and a
    few of them (``--skip-unknown-labels`` scores the others)."""
    seen = {event.cid for event in events}
    unknown = [cid for cid in labels if cid not in seen]
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


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Progress | None]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label="evaluating", file=sys.stderr, show_pos=True) as bar:

        def update(done: int, _total: int) -> None:
            bar.update(done - bar.pos)

        yield update


async def _from_streams(
    settings: Settings,
    names: str | None,
    since: int | None,
    until: int | None,
    summary: InputSummary,
) -> tuple[list[Model], bool, list[Event]]:
    async with opened(settings, read_only=True) as (deployment, links):
        models, named = chosen_models(deployment, names)
        events = await read_streams(
            links.client, deployment, since_ms=since, until_ms=until, summary=summary
        )
        return models, named, events


def _scored(
    events: list[Event],
    models: list[Model],
    settings: Settings,
    session_gap: float | None,
    labels: dict[str, str] | None,
) -> Report:
    from genderd.evaluation.prequential import evaluate as evaluate_events

    with _progress(len(events)) as progress:
        return evaluate_events(
            events,
            models,
            genders=settings.genders,
            session_gap_ms=None if session_gap is None else round(session_gap * MS_PER_MINUTE),
            labels=labels,
            progress=progress,
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
@click.option("--labels", "labels_path", metavar="FILE", help="Known genders: cid,gender.")
@click.option(
    "--skip-unknown-labels", is_flag=True, help="Ignore labelled clients that have no events."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", "plot_path", metavar="PNG", help="Draw accuracy by history length.")
@click.pass_context
def evaluate(
    ctx: click.Context,
    events_path: str | None,
    since: int | None,
    until: int | None,
    names: str | None,
    session_gap: float | None,
    labels_path: str | None,
    skip_unknown_labels: bool,
    as_json: bool,
    plot_path: str | None,
) -> None:
    """Score the models on history: how well each predicts a shopper's next page view.

    Events are replayed in time order; before each event, each model's answer from the
    client's earlier events (as the live service would have served it then) is compared with
    the event's gender. Shows coverage, accuracy with 95% intervals clustered by client, the
    comparison with the best model, a majority baseline, and accuracy by history length.
    """
    if since is not None and until is not None and since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    if events_path == STDIN and labels_path == STDIN:
        raise click.BadParameter("only one of --events and --labels can read stdin")
    settings = settings_of(ctx, find_server=events_path is None)
    summary = InputSummary()
    labels = read_labels(labels_path, settings) if labels_path else None
    if events_path is None:
        models, named, events = run(_from_streams(settings, names, since, until, summary))
    else:
        deployment = Deployment.build(settings)  # no Redis: the configured deployment
        models, named = chosen_models(deployment, names)
        read = read_file(events_path, settings, now_ms=deployment.clock(), summary=summary)
        events = _within(read, since, until)
    if not events:
        raise no_valid_events(summary)
    if labels and not skip_unknown_labels:
        check_labels(labels, events)
    report = _scored(events, models, settings, session_gap, labels)
    report = dataclasses.replace(
        report, events_invalid=summary.invalid, invalid_reasons=dict(summary.reasons)
    )
    _refusals(report, named)
    click.echo(render.to_json(report) if as_json else render.table(report))
    if plot_path:
        render.plot(report, plot_path)


def _refusals(report: Report, named: bool) -> None:
    """Models ``evaluate`` refused: an error when the user named them, else a note each."""
    for name, reason in sorted(report.refused.items()):
        if named:
            raise InputError(reason)
        click.echo(f"note: {name} is not evaluated: {reason}", err=True)

"""Commands over a deployment's data: `produce`, `status`, `lookup`, `replay`."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import click

from genderd import pause
from genderd import replay as replay_mod
from genderd import status as status_mod
from genderd.cli import render
from genderd.cli.common import (
    INSTANT,
    FiniteRange,
    ModelOption,
    opened,
    run,
    served_model,
    settings_of,
)
from genderd.deployment import Deployment, open_deployment_sync
from genderd.events import EventError
from genderd.grading.live import DEFAULT_WINDOW_S
from genderd.grading.view import LiveView, live_view
from genderd.imports import BadInputError, Import, Stop
from genderd.lines import LineReader
from genderd.models.base import Answer
from genderd.processor import Outcome
from genderd.producer import PACED_FLUSH_S, Producer, RateLimiter, synthetic
from genderd.reader import Reader
from genderd.settings import Settings
from genderd.transport import SyncClient, sync_client
from genderd.worker import Worker


def _numbered(events: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, event in enumerate(events, 1):
        yield f"event {number}", event


@click.command()
@click.option(
    "--count",
    default=1000,
    show_default=True,
    type=click.IntRange(0),
    help="Synthetic events to write (0: until stopped).",
)
@click.option(
    "--clients",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Synthetic clients C1..CN.",
)
@click.option("--rate", type=FiniteRange(0), help="Events per second [unlimited].")
@click.option(
    "--days",
    default=0,
    show_default=True,
    type=click.IntRange(0, 3650),
    help="Spread synthetic event times over the last N days (0: arrival time).",
)
@click.option("--seed", type=int, help="Random seed for reproducible synthetic traffic.")
@click.option(
    "--anchor",
    type=INSTANT,
    help="Anchor synthetic traffic at this time (ms or ISO, UTC; not ahead of now): a history "
    "ends there and drifting shoppers move at the same times relative to it, so that a seeded "
    "history is the same, shifted, whatever the day [default: none, a history ends now].",
)
@click.option(
    "--file",
    "source",
    type=click.File("rb"),
    help='JSON Lines of events ({"cid", "gender", "ts"?}); \'-\' reads stdin.',
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def produce(
    ctx: click.Context,
    count: int,
    clients: int,
    rate: float | None,
    days: int,
    seed: int | None,
    anchor: int | None,
    source: BinaryIO | None,
    quiet: bool,
) -> None:
    """Write events: synthetic ones, or JSON Lines from a file or stdin.

    Every event is validated first (SPEC §2). Synthetic events stop after the events before a
    bad one were written. A file (or stdin) is written once per line: running the same import
    again, after an interruption or a failure, or on the file grown since, writes only the
    lines no run wrote before (within GENDERD_IDEMPOTENCY_TTL_S), whatever --rate the runs
    used. A line waits at most 1 s before it is sent (0.1 s with --rate); Ctrl-C or SIGTERM
    sends what was read, then stops. A bad line (not UTF-8, not JSON, an invalid event, longer
    than 64 KiB) stops the run, exit 2, after the lines before it were written.
    """
    settings = settings_of(ctx)
    client = sync_client(settings)
    deployment = open_deployment_sync(client, settings)
    if source:
        try:
            _import(client, deployment, source, rate, quiet)
        finally:
            client.close()
        return
    if anchor is not None and anchor > deployment.clock():
        raise click.BadParameter("the anchor is ahead of now", param_hint="--anchor")
    events = _numbered(
        synthetic(count or None, clients, settings.genders, days=days, seed=seed, anchor_ms=anchor)
    )
    length = count or None
    bar: Any
    with (
        Producer(client, deployment) as producer,
        click.progressbar(
            events,
            length=length,
            label="events",
            file=sys.stderr,  # progress is no output: `produce ... > out` writes nothing there
            hidden=quiet,
            show_pos=True,
            show_eta=length is not None,
            update_min_steps=100,
        ) as bar,
    ):
        _pace(producer, bar, rate)
    client.close()
    if not quiet:
        click.echo(f"wrote {producer.sent} events", err=True)


def _import(
    client: SyncClient, deployment: Deployment, source: BinaryIO, rate: float | None, quiet: bool
) -> None:
    """Write the JSON Lines of ``source`` once each (see :mod:`genderd.imports`), with a
    progress bar on stderr; on SIGINT or SIGTERM, what was read is written, then it stops."""
    bar: Any
    with (
        click.progressbar(
            itertools.count(),  # of unknown length: advanced by hand, as events are sent
            label="events",
            file=sys.stderr,
            hidden=quiet,
            show_pos=True,
            update_min_steps=100,
        ) as bar,
        Stop() as stop,
    ):
        job = Import(client, deployment, rate=rate, progress=bar.update)
        reader = LineReader(source)
        try:
            job.run(reader, stop)
        except BadInputError as error:
            raise BadInputError(
                f"{error}; stopped there, after the lines before it: {_counts(job)}. Fix the "
                "line and run again: no line is written twice"
            ) from None
    if stop.requested:
        click.echo(
            f"interrupted after line {job.line}: {_counts(job)}; no line after it was written "
            "(run the same command on the same input again: it writes only the rest)",
            err=True,
        )
    elif not quiet:
        click.echo(_counts(job), err=True)


def _counts(job: Import) -> str:
    repeated = job.sent - job.written
    again = f"; {repeated} more had been written by an earlier run (skipped)" if repeated else ""
    return f"wrote {job.written} events{again}"


def _pace(
    producer: Producer, events: Iterable[tuple[str, dict[str, Any]]], rate: float | None
) -> None:
    """Send ``events`` ((where, event) pairs) at ``rate`` per second (None: as fast as
    possible) until exhausted or interrupted; paced traffic is flushed every PACED_FLUSH_S
    rather than a batch at a time. A bad line or event stops the run after the events before
    it are written, and the error says where and how many were written."""
    limiter = RateLimiter(rate)
    last_flush = time.monotonic()
    try:
        for where, event in events:
            limiter.wait()
            try:
                producer.send_fields(event)
            except EventError as error:
                raise BadInputError(f"{where}: {error}") from None
            if rate and time.monotonic() - last_flush >= PACED_FLUSH_S:
                producer.flush()
                last_flush = time.monotonic()
    except BadInputError as error:
        producer.flush()
        raise BadInputError(
            f"{error}; stopped there, after writing the {producer.sent} events before it"
        ) from None
    except KeyboardInterrupt:
        producer.flush()


# -- status ------------------------------------------------------------------------------------
@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--shards/--no-shards", "per_shard", default=False, help="One row per shard too.")
@click.option(
    "--watch", is_flag=True, help="A live view, refreshed in place: rates, lag, how far behind."
)
@click.option(
    "--interval",
    type=FiniteRange(0.1, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes of --watch.",
)
@click.option(
    "--count", type=click.IntRange(1), default=None, help="Stop --watch after this many views."
)
@click.pass_context
def status(
    ctx: click.Context,
    as_json: bool,
    per_shard: bool,
    watch: bool,
    interval: float,
    count: int | None,
) -> None:
    """Lag, pending and dead letters per model (and shard); exit 1 when a model is stalled
    or failing, or a replay of it was interrupted.

    A model is stalled when entries wait for it (lag or pending) and none of its workers has
    talked to Redis for GENDERD_STALL_AFTER_S seconds (default 30). It is failing when its
    code failed (model_error) on more than GENDERD_FAILING_RATE (default 1%) of the events it
    handled in the last 5 minutes, over at least 20 events. With --watch, a live view
    until Ctrl-C: events applied per second, lag, pending, dead letters and how long ago the
    oldest entry still waiting for the model was written. A model whose workers a replay
    pauses is shown as paused, not stalled.
    """
    settings = settings_of(ctx)
    if watch:
        run(_watch(settings, interval, count))
        return

    async def go() -> tuple[
        list[status_mod.ModelStatus], list[status_mod.StreamAhead], LiveView | None
    ]:
        async with opened(settings) as (deployment, links):
            models = await status_mod.collect(links.client, deployment)
            ahead = await status_mod.streams_ahead(links.client, deployment)
            view = await live_view(links, deployment, DEFAULT_WINDOW_S, deployment.clock())
            return models, ahead, view

    models, ahead, view = run(go())
    for stream in ahead:  # on stderr: the table (or JSON) on stdout stays as it is
        click.echo(render.ahead_warning(stream), err=True)
    click.echo((render.status_json if as_json else render.status_table)(models, per_shard, view))
    if any(m.stalled or m.failing or m.pause.interrupted for m in models):
        sys.exit(1)


async def _watch(settings: Settings, interval: float, count: int | None) -> None:
    """Refresh a status view every ``interval`` seconds (in place on a terminal), ``count``
    times or until Ctrl-C."""
    in_place = sys.stdout.isatty()
    view = render.WatchView(interval)
    shown = 0
    async with opened(settings) as (deployment, links):
        try:
            while count is None or shown < count:
                models = await status_mod.collect(links.client, deployment)
                frame = view.frame(models, deployment.clock())
                click.echo(f"\x1b[H\x1b[2J{frame}" if in_place else f"{frame}\n")
                shown += 1
                if count is None or shown < count:
                    await asyncio.sleep(interval)
        except (KeyboardInterrupt, asyncio.CancelledError):
            return


# -- lookup ------------------------------------------------------------------------------------
@click.command()
@click.argument("cid")
@click.option(
    "--model",
    "model_name",
    cls=ModelOption,
    help="Model name or alias [default: every model].",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def lookup(ctx: click.Context, cid: str, model_name: str | None, as_json: bool) -> None:
    """Print a client's answer; exit 1 when no model has one."""
    settings = settings_of(ctx)

    async def go() -> dict[str, Answer | None]:
        async with opened(settings) as (deployment, links):
            models = [await served_model(deployment, links, model_name)] if model_name else None
            return await Reader(deployment, links.fast).lookup(cid, models)

    answers = run(go())
    if as_json:
        click.echo(
            json.dumps(
                {
                    "cid": cid,
                    "models": {
                        name: answer and answer.to_dict() for name, answer in answers.items()
                    },
                },
                indent=2,
            )
        )
    else:
        width = max(6, *(len(name) for name in answers))  # model names line up
        for name, answer in answers.items():
            if answer is None:
                click.echo(f"{name:<{width}} -")
            else:
                scores = f"  scores {json.dumps(answer.scores)}" if answer.scores else ""
                click.echo(
                    f"{name:<{width}} {answer.gender}{scores}  last_event_ts {answer.last_event_ts}"
                )
    if all(answer is None for answer in answers.values()):
        click.echo(f"no answer for {cid!r}: no model has seen an event of this client", err=True)
        sys.exit(1)


# -- replay ------------------------------------------------------------------------------------
@click.command()
@click.option("--model", "model_name", cls=ModelOption, required=True, help="Model name or alias.")
@click.option(
    "--force",
    is_flag=True,
    help="Record this release's data layout even while consumers of an earlier release seem "
    "alive (they were stopped less than GENDERD_STALL_AFTER_S ago). Never replays under live "
    "workers of the model.",
)
@click.pass_context
def replay(ctx: click.Context, model_name: str, force: bool) -> None:
    """Rebuild one model's state from the retained streams, with progress.

    Runs next to the model's workers (under `genderd up` or any orchestrator): it pauses them,
    deletes the model's groups, state and answers, applies every retained entry again, then
    lets them go on. Workers that do not pause in time (an earlier release, a hung process)
    make it refuse, naming them, before anything changed. Other models are untouched.
    """
    settings = settings_of(ctx)

    def paused(workers: list[str]) -> None:
        click.echo(
            f"paused the workers of the model: {', '.join(workers)}"
            if workers
            else "no worker of the model is running"
        )

    async def go() -> Outcome:
        async with opened(settings) as (deployment, links):
            model = await served_model(deployment, links, model_name)
            total = await replay_mod.backlog(links.client, deployment)
            worker = Worker(deployment, links, model, consumer=pause.REPLAY_CONSUMER, grading=False)
            click.echo(f"pausing the workers of {model.name}")
            with click.progressbar(
                length=total, label=f"replaying {model.name}", show_pos=True
            ) as bar:
                return await replay_mod.replay(worker, bar.update, force=force, paused=paused)

    outcome = run(go())
    click.echo(
        f"replayed: {outcome.applied} applied, {outcome.dead} dead-lettered, "
        f"{outcome.failed} failed (left pending for the workers)"
        + (f", {outcome.erased} of erased clients dropped" if outcome.erased else "")
    )

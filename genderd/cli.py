"""The ``genderd`` command line: thin click commands over importable functions.

Configuration comes from ``GENDERD_*`` environment variables; the flags here override them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

import click
import orjson
import redis
from pydantic import ValidationError
from pydantic_settings import SettingsError

from genderd import connection
from genderd import replay as replay_mod
from genderd import status as status_mod
from genderd.events import ValidationError as EventError
from genderd.lookup import BadClientIdError, Reader
from genderd.models.registry import Registry, UnknownModelError
from genderd.processor import Outcome
from genderd.producer import Producer, RateLimiter, synthetic
from genderd.server import ServerError, port_is_free
from genderd.settings import Settings
from genderd.up import Child, Supervisor, start_demo
from genderd.worker import Worker, run_worker

T = TypeVar("T")
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"
DEMO_RATE = 200.0
SERVE_GRACE_S = 10
PACED_FLUSH_S = 0.1


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    """Settings from the environment, overridden by the group's and the command's flags."""
    given = {**ctx.obj, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return Settings(**given)
    except (ValidationError, SettingsError) as error:
        raise click.UsageError(f"bad configuration: {error}") from None


@contextlib.contextmanager
def _friendly_errors() -> Iterator[None]:
    """Turn "no server" and "Redis unreachable" into one-line errors instead of tracebacks."""
    try:
        yield
    except connection.NoServerError as error:
        raise click.ClickException(str(error)) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
        raise click.ClickException(f"cannot reach Redis: {error}") from None


def _run(coro: Awaitable[T]) -> T:
    with _friendly_errors():
        return asyncio.run(coro)  # type: ignore[arg-type]


async def _deployment(settings: Settings) -> tuple[Settings, Any]:
    """Connect, and fix the settings to the deployment's stored shard count."""
    client = connection.async_client(settings)
    shards = await connection.ainit_deployment(client, settings)
    return settings.model_copy(update={"shards": shards}), client


def _model(registry: Registry, name: str) -> Any:
    try:
        return registry.get(name)
    except UnknownModelError as error:
        raise click.BadParameter(str(error), param_hint="--model") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--redis-url",
    envvar=None,
    help="Redis URL [env GENDERD_REDIS_URL; default: the "
    "server of a `genderd up` in this directory].",
)
@click.option("--prefix", help="Key prefix [env GENDERD_PREFIX; default genderd].")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.version_option(package_name="genderd")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None, prefix: str | None, log_level: str) -> None:
    """genderd: which department (women's, men's, kids') each shopper prefers, in real time.

    Page-view events go into Redis Streams; a worker per model turns them into per-client
    answers; `lookup` (and the HTTP API) reads them. Start with `genderd up --demo`.
    """
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    ctx.obj = {k: v for k, v in {"redis_url": redis_url, "prefix": prefix}.items() if v}


# -- up ----------------------------------------------------------------------------------------
@main.command()
@click.option("--demo", is_flag=True, help="Also feed synthetic traffic and print example calls.")
@click.option(
    "--workers",
    "workers_per_model",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes per model.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port of the bundled server [default 6390, or a free one].",
)
@click.option(
    "--rate",
    default=DEMO_RATE,
    show_default=True,
    type=click.FloatRange(0.1),
    help="Demo events per second after the initial history.",
)
@click.option(
    "--api-port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port of the HTTP API (on 127.0.0.1).",
)
@click.option("--no-api", is_flag=True, help="Do not run the HTTP API.")
@click.pass_context
def up(
    ctx: click.Context,
    demo: bool,
    workers_per_model: int,
    port: int | None,
    rate: float,
    api_port: int,
    no_api: bool,
) -> None:
    """Run everything on this machine until Ctrl-C.

    Starts a Redis-compatible server from the bundled binary (unless GENDERD_REDIS_URL is
    set), with its data and AOF under ./.genderd/, a worker per model and the HTTP API on
    127.0.0.1:8000. Other genderd commands run from this directory find the server by
    themselves.
    """
    settings = _settings(ctx)
    registry = Registry.load(settings)
    children = [
        Child(f"worker {model.name} #{n + 1}", ["worker", "--model", model.name])
        for model in registry
        for n in range(workers_per_model)
    ]
    if not no_api:
        if not port_is_free(api_port):
            raise click.UsageError(f"port {api_port} is taken: pick another with --api-port")
        children.append(Child("api", ["serve", "--host", "127.0.0.1", "--port", str(api_port)]))
    supervisor = Supervisor(settings, children, port=port)
    try:
        url = supervisor.start_server()
        with _friendly_errors():
            client = connection.sync_client(settings, url)
            shards = connection.init_deployment(client, settings)
            api = "" if no_api else f", API on http://127.0.0.1:{api_port}"
            click.echo(
                f"genderd is up: {url}, {shards} shards, models: {', '.join(registry.names())}{api}"
            )
            if demo:
                deployed = settings.model_copy(update={"shards": shards})
                click.echo(
                    start_demo(supervisor, client, deployed, rate, None if no_api else api_port)
                )
            client.close()
    except ServerError as error:
        supervisor.shutdown()
        raise click.ClickException(str(error)) from None
    except BaseException:
        supervisor.shutdown()  # never leave a server behind
        raise
    click.echo("Ctrl-C stops it all.")
    supervisor.run()


# -- serve -------------------------------------------------------------------------------------
@main.command()
@click.option("--host", help="Address to bind [env GENDERD_API_HOST; default 127.0.0.1].")
@click.option(
    "--port", type=click.IntRange(1, 65535), help="Port [env GENDERD_API_PORT; default 8000]."
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="uvicorn worker processes.",
)
@click.option(
    "--access-log/--no-access-log", default=False, show_default=True, help="Log every request."
)
@click.pass_context
def serve(
    ctx: click.Context, host: str | None, port: int | None, workers: int, access_log: bool
) -> None:
    """Serve the HTTP API (uvicorn) until SIGTERM/SIGINT.

    Docs at /docs (OpenAPI at /openapi.json). Each worker process holds one Redis pool.
    """
    import uvicorn

    settings = _settings(ctx, api_host=host, api_port=port)
    with _friendly_errors():
        url = connection.resolve_url(settings)
    try:
        Registry.load(settings).get(settings.default_model)
    except UnknownModelError as error:
        raise click.UsageError(f"GENDERD_DEFAULT_MODEL: {error}") from None
    # uvicorn's worker processes build their own app from the environment.
    os.environ["GENDERD_REDIS_URL"] = url
    os.environ["GENDERD_PREFIX"] = settings.prefix
    uvicorn.run(
        "genderd.api:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=workers,
        access_log=access_log,
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        timeout_graceful_shutdown=SERVE_GRACE_S,
    )


# -- worker ------------------------------------------------------------------------------------
@main.command()
@click.option(
    "--model", "model_name", required=True, help="Model name or alias (last, top, top7d)."
)
@click.option("--consumer", help="Consumer name in the group [default host-pid].")
@click.option("--batch-size", type=click.IntRange(1, 10_000), help="Entries per read [256].")
@click.pass_context
def worker(
    ctx: click.Context, model_name: str, consumer: str | None, batch_size: int | None
) -> None:
    """Run one worker of one model over all shards until SIGTERM/SIGINT.

    Several workers of the same model share its consumer group; a stopped worker finishes and
    acknowledges the batch in hand, then exits 0.
    """
    settings = _settings(ctx, batch_size=batch_size)
    model = _model(Registry.load(settings), model_name)
    _run(run_worker(settings, type(model), consumer))


# -- produce -----------------------------------------------------------------------------------
def _json_lines(stream: TextIO) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise click.ClickException(f"line {number}: not JSON: {error}") from None
        if not isinstance(event, dict):
            raise click.ClickException(f"line {number}: expected a JSON object")
        yield event


@main.command()
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
@click.option("--rate", type=click.FloatRange(0), help="Events per second [unlimited].")
@click.option(
    "--days",
    default=0,
    show_default=True,
    type=click.IntRange(0, 3650),
    help="Spread synthetic event times over the last N days (0: arrival time).",
)
@click.option("--seed", type=int, help="Random seed for reproducible synthetic traffic.")
@click.option(
    "--file",
    "source",
    type=click.File("r"),
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
    source: TextIO | None,
    quiet: bool,
) -> None:
    """Write events: synthetic ones, or JSON Lines from a file or stdin.

    Every event is validated first (SPEC §2); a bad line stops the run with its line number,
    after the events before it were written.
    """
    settings = _settings(ctx)
    with _friendly_errors():
        client = connection.sync_client(settings)
        shards = connection.init_deployment(client, settings)
    settings = settings.model_copy(update={"shards": shards})
    events = (
        _json_lines(source)
        if source
        else synthetic(count or None, clients, settings.genders, days=days, seed=seed)
    )
    length = None if source or not count else count
    bar: Any
    with (
        _friendly_errors(),
        Producer(client, settings) as producer,
        click.progressbar(
            events,
            length=length,
            label="events",
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


def _pace(producer: Producer, events: Iterable[dict[str, Any]], rate: float | None) -> None:
    """Send ``events`` at ``rate`` per second (None: as fast as possible) until exhausted or
    interrupted; paced traffic is flushed every PACED_FLUSH_S rather than a batch at a time."""
    limiter = RateLimiter(rate)
    last_flush = time.monotonic()
    try:
        for number, event in enumerate(events, 1):
            limiter.wait()
            try:
                producer.send_fields(event)
            except EventError as error:
                producer.flush()
                raise click.ClickException(f"event {number}: {error}") from None
            if rate and time.monotonic() - last_flush >= PACED_FLUSH_S:
                producer.flush()
                last_flush = time.monotonic()
    except KeyboardInterrupt:
        producer.flush()


def _row(*cells: object) -> str:
    name, shard, lag, pending, dead, applied, state = cells
    return f"{name:<10}{shard:>6}{lag:>10}{pending:>9}{dead:>8}{applied:>12}  {state}"


# -- status ------------------------------------------------------------------------------------
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--shards/--no-shards", "per_shard", default=False, help="One row per shard too.")
@click.pass_context
def status(ctx: click.Context, as_json: bool, per_shard: bool) -> None:
    """Lag, pending and dead letters per model (and shard); exit 1 when a model is stalled.

    A model is stalled when entries wait for it (lag or pending) and none of its workers has
    talked to Redis for GENDERD_STALL_AFTER_S seconds (default 30).
    """
    settings = _settings(ctx)

    async def go() -> list[status_mod.ModelStatus]:
        fixed, client = await _deployment(settings)
        try:
            return await status_mod.collect(client, Registry.load(fixed), fixed)
        finally:
            await client.aclose()

    models = _run(go())
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "model": m.name,
                        "aliases": list(m.aliases),
                        "lag": m.lag,
                        "pending": m.pending,
                        "dead": m.dead,
                        "applied": m.applied,
                        "stalled": m.stalled,
                        "shards": [vars(s) for s in m.shards] if per_shard else None,
                    }
                    for m in models
                ],
                indent=2,
            )
        )
    else:
        click.echo(_row("model", "shard", "lag", "pending", "dead", "applied", "state"))
        for m in models:
            state = "STALLED" if m.stalled else "ok"
            click.echo(_row(m.name, "all", m.lag, m.pending, m.dead, m.applied, state))
            for s in m.shards if per_shard else []:
                state = "STALLED" if s.stalled else f"consumers: {s.consumers}"
                if not s.grouped:
                    state = "no group yet"
                click.echo(_row("", s.shard, s.lag, s.pending, s.dead, s.applied, state))
    if any(m.stalled for m in models):
        sys.exit(1)


# -- lookup ------------------------------------------------------------------------------------
@main.command()
@click.argument("cid")
@click.option("--model", "model_name", help="Model name or alias [default: every model].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def lookup(ctx: click.Context, cid: str, model_name: str | None, as_json: bool) -> None:
    """Print a client's answer; exit 1 when no model has one."""
    settings = _settings(ctx)

    async def go() -> dict[str, Any]:
        fixed, client = await _deployment(settings)
        try:
            registry = Registry.load(fixed)
            models = [_model(registry, model_name)] if model_name else None
            return await Reader(client, registry, fixed).lookup(cid, models)
        finally:
            await client.aclose()

    try:
        answers = _run(go())
    except BadClientIdError as error:
        raise click.BadParameter(str(error), param_hint="CID") from None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "cid": cid,
                    "models": {
                        name: answer.to_dict() if answer else None
                        for name, answer in answers.items()
                    },
                },
                indent=2,
            )
        )
    else:
        for name, answer in answers.items():
            if answer is None:
                click.echo(f"{name:<6} -")
            else:
                scores = f"  scores {json.dumps(answer.scores)}" if answer.scores else ""
                click.echo(
                    f"{name:<6} {answer.gender}{scores}  last_event_ts {answer.last_event_ts}"
                )
    if all(answer is None for answer in answers.values()):
        sys.exit(1)


# -- replay ------------------------------------------------------------------------------------
@main.command()
@click.option("--model", "model_name", required=True, help="Model name or alias.")
@click.option("--force", is_flag=True, help="Replay even while workers of the model seem alive.")
@click.pass_context
def replay(ctx: click.Context, model_name: str, force: bool) -> None:
    """Rebuild one model's state from the retained streams, with progress.

    Stop the model's workers first: replay deletes the model's group, state and answers, then
    applies every retained entry again. Other models are untouched.
    """
    settings = _settings(ctx)

    async def go() -> Outcome:
        fixed, client = await _deployment(settings)
        try:
            model = type(_model(Registry.load(fixed), model_name))(fixed)
            live = await replay_mod.live_consumers(
                client, model, fixed, int(fixed.stall_after_s * 1000)
            )
            if live and not force:
                raise click.ClickException(
                    f"workers of {model.name} are running ({', '.join(live)}); "
                    "stop them or use --force"
                )
            total = await replay_mod.backlog(client, fixed)
            worker = Worker(client, model, fixed, consumer="replay")
            with click.progressbar(
                length=total, label=f"replaying {model.name}", show_pos=True
            ) as bar:
                return await replay_mod.replay(worker, bar.update)
        finally:
            await client.aclose()

    outcome = _run(go())
    click.echo(
        f"replayed: {outcome.applied} applied, {outcome.dead} dead-lettered, "
        f"{outcome.failed} failed (left pending for the workers)"
    )

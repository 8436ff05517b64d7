"""Commands that run genderd's processes: `up` (everything), `serve` (the API), `worker`."""

from __future__ import annotations

import logging
import os

import click

from genderd.bundled import find_cli, port_is_free
from genderd.cli.common import FiniteRange, ModelOption, model_of, run, settings_of
from genderd.deployment import Deployment
from genderd.errors import ConfigurationError
from genderd.settings import BEST
from genderd.transport.connect import check_url
from genderd.up import DEMO_SEED, Demo, Supervisor, everything_answers, plan, start
from genderd.worker import run_worker

DEMO_RATE = 200.0
LOOPBACK = ("127.0.0.1", "localhost")
SERVE_GRACE_S = 10


@click.command()
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
    type=FiniteRange(0),
    help="Demo events per second after the initial history (0: none, the history alone).",
)
@click.option(
    "--seed",
    default=DEMO_SEED,
    show_default=True,
    type=int,
    help="Seed of the demo's history (and live traffic): the same history on every machine.",
)
@click.option(
    "--api-port",
    default=8000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port of the HTTP API (on 127.0.0.1).",
)
@click.option("--no-api", is_flag=True, help="Do not run the HTTP API.")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65_535),
    help="Serve each worker's metrics on 127.0.0.1 from this port up, one port per worker "
    "(printed at start).",
)
@click.pass_context
def up(
    ctx: click.Context,
    demo: bool,
    workers_per_model: int,
    port: int | None,
    rate: float,
    seed: int,
    api_port: int,
    no_api: bool,
    metrics_port: int | None,
) -> None:
    """Run everything on this machine until Ctrl-C.

    Starts a Redis-compatible server from the bundled binary (unless GENDERD_REDIS_URL is
    set), with its data and AOF under ./.genderd/, a worker per model and the HTTP API on
    127.0.0.1:8000. Other genderd commands run from this directory find the server by
    themselves. With --demo, lookups that name no model answer from the champion of live
    grading (GENDERD_DEFAULT_MODEL=best, unless it is set).
    """
    if demo:  # the demo serves the champion of live grading, unless told otherwise
        os.environ.setdefault("GENDERD_DEFAULT_MODEL", BEST)
    settings = settings_of(ctx, find_server=False)  # no URL: up starts the server
    configured = Deployment.build(settings)
    names = configured.registry.names()
    served_port = None if no_api else api_port
    problem = None if no_api else settings.erasure_problem()
    if problem:
        raise ConfigurationError(problem)
    planned = plan(names, workers_per_model, metrics_port=metrics_port, api_port=served_port)
    for name, metrics in planned.metrics_ports.items():
        click.echo(f"metrics of {name}: http://127.0.0.1:{metrics}/metrics")
    supervisor = Supervisor(settings, planned.children, port=port)
    started = start(supervisor, configured, Demo(rate, seed) if demo else None, served_port)
    api = "" if no_api else f", API on http://127.0.0.1:{api_port}"

    def announce() -> None:  # once every worker consumes and the API answers
        click.echo(
            f"genderd is up: {started.url}, {started.deployment.settings.shards} shards, "
            f"models: {', '.join(names)}{api}"
        )
        if started.tips:
            click.echo(started.tips)
        click.echo(supervisor.pids())
        click.echo("Ctrl-C stops it all.")

    click.echo(f"starting genderd on {started.url}: a worker per model{api and ' and the API'} ...")
    try:
        ready = everything_answers(started.client, started.deployment, served_port)
        supervisor.run(ready, announce)
    finally:
        started.client.close()


@click.command()
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
@click.option(
    "--limit-concurrency",
    type=click.IntRange(1),
    help="Connections at once per process, beyond which uvicorn answers 503 "
    "[env GENDERD_API_LIMIT_CONCURRENCY; default 1024].",
)
@click.pass_context
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    workers: int,
    access_log: bool,
    limit_concurrency: int | None,
) -> None:
    """Serve the HTTP API (uvicorn) until SIGTERM/SIGINT.

    Docs at /docs (OpenAPI at /openapi.json). Each worker process holds one Redis pool and one
    pipelined connection. uvicorn has no timeout for request headers: in production put a
    reverse proxy in front (it also terminates TLS).
    """
    import uvicorn

    from genderd.api.metrics import shared_metrics
    from genderd.api.parent import PARENT_ENV
    from genderd.api.protocol import BoundedHttpToolsProtocol

    settings = settings_of(
        ctx, api_host=host, api_port=port, api_limit_concurrency=limit_concurrency
    )
    url = settings.redis_url
    assert url is not None  # resolved by settings_of
    check_url(settings, url)
    # the default model as the API will take it (GENDERD_DEFAULT_MODEL): one line, now
    Deployment.build(settings).registry.default(settings)
    problem = settings.erasure_problem()
    if problem:  # checked here too, so that it is one line before uvicorn starts
        raise ConfigurationError(problem)
    if settings.api_host in LOOPBACK and not port_is_free(settings.api_port):
        raise click.UsageError(f"port {settings.api_port} is taken: pick another with --port")
    # uvicorn's worker processes build their own app from the environment.
    os.environ["GENDERD_REDIS_URL"] = url
    os.environ["GENDERD_PREFIX"] = settings.prefix
    if workers > 1:  # they stop by themselves if this process is killed (genderd.api.parent)
        os.environ[PARENT_ENV] = str(os.getpid())
    # One scrape must see every process's counts: a fresh shared directory per start.
    with shared_metrics(workers):
        uvicorn.run(
            "genderd.api:create_app",
            factory=True,
            http=BoundedHttpToolsProtocol,  # the request head bounded (431): genderd.api.protocol
            host=settings.api_host,
            port=settings.api_port,
            workers=workers,
            access_log=access_log,
            log_level=logging.getLevelName(logging.getLogger().level).lower(),
            timeout_graceful_shutdown=SERVE_GRACE_S,
            limit_concurrency=settings.api_limit_concurrency,
        )


@click.command()
@click.option("--model", "model_name", cls=ModelOption, required=True, help="Model name or alias.")
@click.option("--consumer", help="Consumer name in the group [default host-pid].")
@click.option("--batch-size", type=click.IntRange(1, 10_000), help="Entries per read [256].")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65_535),
    help="Serve this worker's Prometheus metrics on this port (/metrics).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address of --metrics-port (0.0.0.0 in a container).",
)
@click.pass_context
def worker(
    ctx: click.Context,
    model_name: str,
    consumer: str | None,
    batch_size: int | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run one worker of one model over all shards until SIGTERM/SIGINT.

    Several workers of the same model share its consumer group; a stopped worker finishes and
    acknowledges the batch in hand, then exits 0.
    """
    settings = settings_of(ctx, batch_size=batch_size)
    model = model_of(Deployment.build(settings), model_name)
    if metrics_port is not None and metrics_host == "127.0.0.1" and not port_is_free(metrics_port):
        raise click.UsageError(f"--metrics-port {metrics_port} is taken: pick another")
    run(run_worker(settings, model.name, consumer, metrics_port, metrics_host))


@click.command(
    "redis-cli",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def redis_cli(ctx: click.Context, args: tuple[str, ...]) -> None:
    """The bundled valkey-cli, connected to this deployment's Redis (GENDERD_REDIS_URL, or the
    server of a `genderd up` in this directory). Arguments go to valkey-cli, e.g.
    `genderd redis-cli XLEN 'genderd:{s12}:events'`."""
    url = settings_of(ctx).redis_url
    assert url is not None  # resolved by settings_of
    binary = find_cli()
    os.execv(binary, [binary, "-u", url, *args])

"""The ``genderd`` command line: thin click commands over importable functions.

Configuration comes from ``GENDERD_*`` environment variables; the flags here override them.
Commands live by concern: :mod:`~genderd.cli.run` (processes: up, serve, worker) and
:mod:`~genderd.cli.data` (a deployment's data: produce, status, lookup, replay),
:mod:`~genderd.cli.evaluate` (scoring the models on history); a new
command goes in one of them (or a module of its own) and is added to :func:`main` below.
Errors are mapped once, by the group (:func:`~genderd.cli.common.friendly_errors`): a command
raises genderd's errors and catches none of them.
"""

from __future__ import annotations

import logging
import sys

import click

from genderd.cli import data, dead, evaluate, export, grading, lifecycle, models, run, stream
from genderd.cli.common import Group

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s[%(process)d]: %(message)s"


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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


for command in (
    run.up,
    run.serve,
    run.worker,
    data.produce,
    data.status,
    data.lookup,
    data.replay,
    lifecycle.erase,
    lifecycle.backfill_expiry,
    dead.dead,
    stream.stream,
    models.models,
    evaluate.evaluate,
    grading.grades,
    grading.champion,
    export.export,
    run.redis_cli,
):
    main.add_command(command)

__all__ = ["main"]

"""`genderd export`: the deployment's retained history to a file, in the format
`genderd evaluate --events` reads (:mod:`genderd.evaluation.export`).

Read-only (``XRANGE`` in pages, no consumer group, nothing written), in one pass with bounded
memory: the shards' streams are read a page at a time, side by side, and merged by entry id,
so the file is in arrival order (each client's events in the order workers apply them, for
`evaluate --order arrival`); `evaluate --order time` sorts it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from genderd.cli.common import INSTANT, opened, run, settings_of
from genderd.evaluation.export import FORMATS, JSON_LINES, event_writer
from genderd.evaluation.inputs import STDIN, InputSummary, stream_events
from genderd.settings import Settings

PROGRESS_STEP = 10_000  # entries read between two updates of the progress bar


@contextlib.contextmanager
def _output(path: str) -> Iterator[TextIO]:
    """stdout for "-"; else a file written beside ``path`` and renamed to it once complete,
    so that an interrupted export leaves no truncated file behind."""
    if path == STDIN:
        yield sys.stdout
        return
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(descriptor, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
    try:
        with open(descriptor, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


async def _export(
    settings: Settings,
    out: TextIO,
    fmt: str,
    since: int | None,
    until: int | None,
    summary: InputSummary,
) -> int:
    """Write every valid retained event to ``out``; return how many."""
    async with opened(settings, read_only=True) as (deployment, links):
        total = 0
        for shard in deployment.shards:
            total += int(await links.client.xlen(deployment.keys.stream(shard)))
        write = event_writer(out, fmt)
        written = 0
        bar: Any
        with click.progressbar(
            length=total,
            label="exporting",
            file=sys.stderr,
            hidden=not sys.stderr.isatty(),  # progress is no output: never in a pipe or log
            show_pos=True,
        ) as bar:
            async for event in stream_events(
                links.client, deployment, since_ms=since, until_ms=until, summary=summary
            ):
                write(event)
                written += 1
                if summary.read - bar.pos >= PROGRESS_STEP:
                    bar.update(summary.read - bar.pos)
            bar.update(summary.read - bar.pos)
        return written


@click.command()
@click.option("--since", type=INSTANT, help="Events at or after this time (ms or ISO, UTC).")
@click.option("--until", type=INSTANT, help="Events before this time (ms or ISO, UTC).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=JSON_LINES,
    show_default=True,
    help='JSON Lines ({"cid", "gender", "ts"}) or CSV (cid,gender,ts, with a header row).',
)
@click.option(
    "-o",
    "--output",
    default=STDIN,
    metavar="FILE",
    help="Where to write ('-': stdout) [default: stdout].",
)
@click.pass_context
def export(ctx: click.Context, since: int | None, until: int | None, fmt: str, output: str) -> None:
    """Write the deployment's retained history to a file, for `genderd evaluate --events` or
    pandas.

    Read-only: no consumer group, nothing written to Redis. Every entry is validated as the
    workers do; invalid ones are left out and counted per reason on stderr. One pass, a shard
    after the other: the file is in arrival order per shard.
    """
    if since is not None and until is not None and since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    settings = settings_of(ctx)
    summary = InputSummary()
    with _output(output) as out:
        written = run(_export(settings, out, fmt, since, until, summary))
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(summary.reasons.items()))
    where = "" if output == STDIN else f" to {output}"
    click.echo(
        f"exported {written:,} events of {summary.read:,} entries{where}; "
        f"{summary.invalid:,} invalid left out" + (f" ({reasons})" if reasons else ""),
        err=True,
    )

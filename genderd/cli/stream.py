"""`genderd stream`: a shard's stream as a whole (`stream set-aside`)."""

from __future__ import annotations

import click

from genderd import aside
from genderd.cli.common import opened, run, settings_of


@click.group()
def stream() -> None:
    """A shard's stream as a whole: `stream set-aside` after an id in the future."""


@stream.command("set-aside")
@click.argument("shard", type=click.IntRange(0))
@click.pass_context
def set_aside(ctx: click.Context, shard: int) -> None:
    """Set SHARD's stream aside when its last id is in the future (see 'A stream id in the
    future' in the operations docs): the stream is renamed to <prefix>:{sN}:events:aside
    (kept for the retention, erasure still scans it), a new one takes its place with the
    same consumer groups, and the shard's erasure markers are re-based, so that new events
    of a client erased meanwhile are applied.

    Run it with the writers stopped and the workers done (`genderd status`: lag and pending
    0); it refuses while entries are pending or undelivered (exit 1).
    """
    settings = settings_of(ctx)

    async def go() -> aside.SetAside:
        async with opened(settings) as (deployment, links):
            return await aside.set_aside(links.client, links.fast, deployment, shard)

    done = run(go())
    click.echo(
        f"set aside the stream of shard {done.shard} (last id {done.last_id}) as {done.aside}, "
        f"kept for {settings.retention_days} days; new stream with groups "
        f"{', '.join(done.groups) or '(none)'}; re-based {done.rebased} erasure markers"
    )

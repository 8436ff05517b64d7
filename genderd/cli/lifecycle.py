"""The client data lifecycle: `genderd erase` (SPEC §9: clients on request, one or a file of
ids) and `genderd backfill-expiry` (SPEC §10: clients written before expiry existed)."""

from __future__ import annotations

import json
import sys
from typing import TextIO

import click

from genderd import erasure, expiry
from genderd.cli.common import opened, run, settings_of
from genderd.events import cid_problem


def _ids(cids: tuple[str, ...], file: TextIO | None) -> list[str]:
    """The ids of the arguments, then of the file (one per line; blank lines skipped), each
    checked as lookups check them; a bad one stops the command before anything is erased."""
    given = [(f"argument {n}", cid) for n, cid in enumerate(cids, 1)]
    if file is not None:
        given += [
            (f"{file.name}:{n}", line.strip()) for n, line in enumerate(file, 1) if line.strip()
        ]
    for where, cid in given:
        problem = cid_problem(cid)
        if problem:
            raise click.BadParameter(f"{where}: {problem}")
    return [cid for _, cid in given]


@click.command()
@click.argument("cids", nargs=-1)
@click.option(
    "--file",
    type=click.File("r", encoding="utf-8"),
    help="Also erase the ids in this file, one per line ('-': standard input).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON line per client on stdout.")
@click.pass_context
def erase(ctx: click.Context, cids: tuple[str, ...], file: TextIO | None, as_json: bool) -> None:
    """Erase clients: every model's answer, state, counters and day buckets, and the client's
    entries in every shard stream and its dead letters. Entries written before the erasure are
    never applied afterwards, by any worker or replay; later events are new data.

    The clients of one run are erased together: a file of many ids costs one pass over each
    stream. Progress goes to stderr; each client's counts to stdout, with the digest the
    log line names (keep it as proof that the request was honoured).
    """
    settings = settings_of(ctx)
    ids = _ids(cids, file)
    if not ids:
        raise click.UsageError("name at least one client id, or --file")

    live = sys.stderr.isatty()  # progress is redrawn in place on a terminal
    started: set[str] = set()  # elsewhere (a log, a pipe): a line as each step starts

    def progress(what: str, done: int, total: int) -> None:
        if not live:
            if what not in started:
                started.add(what)
                click.echo(f"{'marking' if what == 'mark' else 'scanning ' + what}", err=True)
            return
        if what == "mark":
            line = f"marked and deleted the keys of {done:,}/{total:,} clients"
        else:
            line = f"scanning {what}: {done:,} entries read"
        click.echo(f"\r{line:<60}", nl=False, err=True)

    async def go() -> list[erasure.Erased]:
        async with opened(settings) as (deployment, links):
            return await erasure.erase(links.fast, deployment, ids, progress)

    done = run(go())
    if live:
        click.echo("", err=True)
    for erased in done:
        if as_json:
            click.echo(json.dumps({"cid": erased.cid, "digest": erased.digest, **erased.as_dict()}))
        else:
            click.echo(
                f"erased {erased.cid!r} (digest {erased.digest}): {erased.keys} keys, "
                f"{erased.entries} stream entries, {erased.dead_letters} dead letters"
            )
    totals = [sum(getattr(e, kind) for e in done) for kind in ("keys", "entries", "dead_letters")]
    click.echo(
        f"erased {len(done)} clients: {totals[0]} keys, {totals[1]} stream entries, "
        f"{totals[2]} dead letters",
        err=True,
    )
    sys.stdout.flush()


@click.command("backfill-expiry")
@click.pass_context
def backfill_expiry(ctx: click.Context) -> None:
    """Give clients written before client expiry existed (an upgraded deployment) the expiry
    the workers give every client they apply: GENDERD_CLIENT_TTL_DAYS after its latest
    applied event. Clients inactive for longer are deleted now. Safe to run while workers run,
    and to run again."""
    settings = settings_of(ctx)
    if not settings.client_ttl_days:
        raise click.UsageError("GENDERD_CLIENT_TTL_DAYS is 0: clients are kept forever")

    before = expiry.Backfilled()

    def progress(shard: int, so_far: expiry.Backfilled) -> None:
        # backfill reports running totals; each line says what this shard did
        click.echo(
            f"shard {shard}: {so_far.set - before.set:,} given an expiry, "
            f"{so_far.gone - before.gone:,} inactive too long and deleted, "
            f"{so_far.left - before.left:,} left as they were",
            err=True,
        )
        before.set, before.gone, before.left = so_far.set, so_far.gone, so_far.left

    async def go() -> expiry.Backfilled:
        async with opened(settings) as (deployment, links):
            return await expiry.backfill(links.client, deployment, progress)

    done = run(go())
    click.echo(
        f"{done.set} clients given an expiry, {done.gone} deleted (inactive for longer than "
        f"{settings.client_ttl_days} days), {done.left} left as they were"
    )

"""The client data lifecycle: `genderd erase` (SPEC §9: clients on request, one or a file of
ids) and `genderd backfill-expiry` (SPEC §10: clients written before expiry existed)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import TextIO

import click

from genderd import erasure, expiry
from genderd.cli.common import opened, run, settings_of
from genderd.deployment import Deployment
from genderd.events import cid_problem
from genderd.settings import Settings
from genderd.transport import Transport
from genderd.worker import consumer_name

RECENT = 20  # erasures listed by `erase --status`


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
@click.option(
    "--wait",
    is_flag=True,
    help="Wait until the stream entries and dead letters are scrubbed too, scrubbing "
    "meanwhile when no worker does.",
)
@click.option(
    "--status",
    "status_id",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ID]",
    help="Show an erasure's progress (with --wait: wait for it), or the recent ones.",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout.")
@click.pass_context
def erase(
    ctx: click.Context,
    cids: tuple[str, ...],
    file: TextIO | None,
    wait: bool,
    status_id: str | None,
    as_json: bool,
) -> None:
    """Erase clients: every model's answer, state, counters and day buckets now, and the
    client's entries in every shard stream and its dead letters in the background. Entries
    written before the erasure are never applied afterwards, by any worker, replay or re-drive,
    scrubbed or not; later events are new data.

    The clients of one run are one erasure, with an id: its scrub, shared with every other
    erasure pending, reads each stream once however many clients it holds. The workers scrub;
    --wait waits for it (and scrubs itself when no worker does). Each client's keys go to
    stdout with the digest the log names (keep it as proof that the request was honoured);
    --status ID shows how far an erasure is.
    """
    settings = settings_of(ctx)
    if status_id is not None:
        if cids or file is not None:
            raise click.UsageError("--status takes an erasure id, not client ids")
        run(_show(settings, status_id, wait, as_json))
        return
    ids = _ids(cids, file)
    if not ids:
        raise click.UsageError("name at least one client id, or --file")
    done, final = run(_erase(settings, ids, wait))
    for erased in done.clients:
        if as_json:
            row = {"cid": erased.cid, "digest": erased.digest, "keys": erased.keys}
            click.echo(json.dumps({**row, "erasure": done.id}))
        else:
            click.echo(f"erased {erased.cid!r} (digest {erased.digest}): {erased.keys} keys")
    click.echo(
        f"erasure {done.id}: {_clients(len(done.clients))}, {done.keys} keys deleted", err=True
    )
    if final is None:
        click.echo(
            "their stream entries and dead letters are being scrubbed by the workers: "
            f"genderd erase --status {done.id}",
            err=True,
        )
    else:
        _print_status(final, as_json)
    sys.stdout.flush()


async def _erase(
    settings: Settings, ids: list[str], wait: bool
) -> tuple[erasure.Erasure, erasure.ErasureStatus | None]:
    """Erase ``ids``; with ``wait``, follow the erasure to its end."""
    live = sys.stderr.isatty()  # progress is redrawn in place on a terminal

    def marking(done: int, total: int) -> None:
        if live:
            line = f"marked and deleted the keys of {done:,}/{total:,} clients"
            click.echo(f"\r{line:<60}", nl=False, err=True)

    async with opened(settings) as (deployment, links):
        done = await erasure.erase(links.fast, deployment, ids, marking)
        if live:
            click.echo("", err=True)
        if not wait:
            return done, None
        return done, await _follow(links.fast, deployment, done.id)


async def _follow(
    transport: Transport, deployment: Deployment, erasure_id: str
) -> erasure.ErasureStatus | None:
    """Wait for an erasure's scrub, with its progress on stderr (one line per change)."""
    shown = ""

    def watch(found: erasure.ErasureStatus) -> None:
        nonlocal shown
        line = _progress_line(found)
        if line != shown:
            click.echo(line, err=True)
            shown = line

    return await erasure.wait(transport, deployment, erasure_id, consumer_name(), watch)


async def _show(settings: Settings, status_id: str, wait: bool, as_json: bool) -> None:
    """``--status [ID]``: one erasure (waited for with ``wait``), or the recent ones."""
    async with opened(settings, read_only=True) as (deployment, links):
        if not status_id:
            if wait:
                raise click.UsageError("--wait with --status needs an erasure id")
            shown = await erasure.recent(links.fast, deployment, RECENT)
            if as_json:
                for row in shown:
                    click.echo(json.dumps(row.as_dict()))
            else:
                click.echo(_table(shown))
            return
        if wait:
            found = await _follow(links.fast, deployment, status_id)
        else:
            found = await erasure.status(links.fast, deployment, status_id)
    if found is None:
        click.echo(
            f"no erasure {status_id!r}: unknown, or its record expired (records live "
            f"GENDERD_RETENTION_DAYS + 1 days)",
            err=True,
        )
        sys.exit(1)
    _print_status(found, as_json)


def _progress_line(found: erasure.ErasureStatus) -> str:
    """Where an erasure's scrub is, in one line."""
    pending = found.pending
    line = (
        f"erasure {found.id}: {found.state}, {len(found.shards) - len(pending)}/"
        f"{len(found.shards)} shards scrubbed, {found.entries:,} stream entries and "
        f"{found.dead_letters:,} dead letters deleted"
    )
    running = [s for s in pending if s.phase]
    if running:
        first = running[0]
        line += f"; shard {first.shard}: pass {first.running}, {first.phase}, {first.read:,} read"
    return line


def _print_status(found: erasure.ErasureStatus, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(found.as_dict()))
        return
    who = f"1 client (digest {found.digest})" if found.digest else _clients(found.clients)
    done = f", done {_utc(found.done_ms)} UTC" if found.done_ms else ""
    click.echo(
        "\n".join(
            [
                _progress_line(found),
                f"  made {_utc(found.created_ms)} UTC{done}",
                f"  {who}: {found.keys} keys, {found.entries} stream entries, "
                f"{found.dead_letters} dead letters deleted",
            ]
        )
    )


def _table(shown: list[erasure.ErasureStatus]) -> str:
    if not shown:
        return "no erasures recorded"
    rows = [("ID", "STATE", "MADE (UTC)", "CLIENTS", "KEYS", "ENTRIES", "DEAD")]
    rows += [
        (
            e.id,
            e.state,
            _utc(e.created_ms),
            str(e.clients),
            str(e.keys),
            str(e.entries),
            str(e.dead_letters),
        )
        for e in shown
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _utc(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _clients(n: int) -> str:
    return f"{n} client" if n == 1 else f"{n} clients"


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

"""`genderd dead`: the dead letters by reason and shard, their entries, re-drive, purge."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import click

from genderd import deadletters
from genderd.cli.common import opened, run, settings_of
from genderd.deadletters import DeadLetter
from genderd.deployment import Deployment
from genderd.settings import Settings
from genderd.transport import Links

SHOW_LIMIT = 20


def _filters(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option("--reason", help="Only this reason (e.g. unknown_gender)."),
            click.option("--shard", type=click.IntRange(0), multiple=True, help="Only shard N."),
            click.option("--model", "model_name", help="Only copies written by this model."),
            click.option("--id", "entry_ids", multiple=True, help="Only this original entry id."),
        ]
    ):
        func = option(func)
    return func


async def _select(
    deployment: Deployment,
    links: Links,
    reason: str | None,
    shard: Sequence[int],
    model_name: str | None,
    entry_ids: Sequence[str],
) -> list[DeadLetter]:
    chosen = []
    async for letter in deadletters.scan(
        links.client, deployment, shards=shard or None, reason=reason, model=model_name
    ):
        if not entry_ids or letter.entry_id in entry_ids:
            chosen.append(letter)
    return chosen


@click.group(invoke_without_command=True)
@click.pass_context
def dead(ctx: click.Context) -> None:
    """Dead letters: counts by reason and shard (`dead list`, the default), entries
    (`dead show`), re-drive once the cause is fixed (`dead redrive`), `dead purge`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)


@dead.command("list")
@click.option("--reason", help="Only this reason (e.g. model_error).")
@click.option("--shard", type=click.IntRange(0), multiple=True, help="Only shard N.")
@click.option("--model", "model_name", help="Only copies written by this model.")
@click.option(
    "--by-model", is_flag=True, help="Count by model and reason (default: by reason and shard)."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_(
    ctx: click.Context,
    reason: str | None,
    shard: tuple[int, ...],
    model_name: str | None,
    by_model: bool,
    as_json: bool,
) -> None:
    """How many dead letters there are, by reason and shard, or by model and reason
    (--by-model); each model writes its own copy of an entry it could not apply."""
    settings: Settings = settings_of(ctx)

    async def go() -> list[DeadLetter]:
        async with opened(settings) as (deployment, links):
            return await _select(deployment, links, reason, shard, model_name, ())

    letters = run(go())
    counts = Counter(
        (letter.model if by_model else letter.reason, letter.reason if by_model else letter.shard)
        for letter in letters
    )
    if as_json:
        names = ("model", "reason") if by_model else ("reason", "shard")
        rows = [{names[0]: a, names[1]: b, "count": n} for (a, b), n in sorted(counts.items())]
        click.echo(json.dumps(rows, indent=2))
        return
    if not counts:
        click.echo("no dead letters")
        return
    _print_counts(counts, ("model", "reason") if by_model else ("reason", "shard"))


def _print_counts(counts: Counter[tuple[Any, Any]], names: tuple[str, str]) -> None:
    first, second = names
    click.echo(f"{first:<18}{second:>16}{'count':>9}")
    for (a, b), count in sorted(counts.items()):
        click.echo(f"{a!s:<18}{b!s:>16}{count:>9}")
    click.echo(f"{'total':<18}{'':>16}{sum(counts.values()):>9}")


@dead.command()
@_filters
@click.option("--limit", default=SHOW_LIMIT, show_default=True, type=click.IntRange(1))
@click.pass_context
def show(
    ctx: click.Context,
    reason: str | None,
    shard: tuple[int, ...],
    model_name: str | None,
    entry_ids: tuple[str, ...],
    limit: int,
) -> None:
    """Dead letters as JSON Lines: shard, ids, model, reason, detail, original fields."""
    settings = settings_of(ctx)

    async def go() -> list[DeadLetter]:
        async with opened(settings) as (deployment, links):
            return await _select(deployment, links, reason, shard, model_name, entry_ids)

    letters = run(go())
    for letter in letters[:limit]:
        row = {
            "shard": letter.shard,
            "entry_id": letter.entry_id,
            "dead_id": letter.dead_id,
            "model": letter.model,
            "reason": letter.reason,
            "detail": letter.detail,
            "fields": letter.event_fields(),
        }
        click.echo(json.dumps(row, ensure_ascii=False))
    if len(letters) > limit:
        click.echo(f"... and {len(letters) - limit} more (--limit)", err=True)


@dead.command()
@_filters
@click.option("--dry-run", is_flag=True, help="Say what would be re-driven; write nothing.")
@click.pass_context
def redrive(
    ctx: click.Context,
    reason: str | None,
    shard: tuple[int, ...],
    model_name: str | None,
    entry_ids: tuple[str, ...],
    dry_run: bool,
) -> None:
    """Write dead-lettered events again, to the shard of their client, once the cause is fixed
    (a producer's shard rule, a gender added to GENDERD_GENDERS).

    Each original entry is written at most once, even when an interrupted run is repeated;
    entries still invalid, or applied by some model, are left where they are. Exit 1 when
    some were left.
    """
    settings = settings_of(ctx)

    async def go() -> deadletters.Redriven:
        async with opened(settings) as (deployment, links):
            chosen = await _select(deployment, links, reason, shard, model_name, entry_ids)
            return await deadletters.redrive(
                links.client, links.fast, deployment, chosen, dry_run=dry_run
            )

    done = run(go())
    verb = "would re-drive" if dry_run else "re-drove"
    click.echo(
        f"{verb} {len(done.written)} entries"
        + (f" ({len(done.before)} more had been re-driven before)" if done.before else "")
        + (f" (dropped {len(done.erased)} of erased clients)" if done.erased else "")
        + ("" if dry_run else f"; deleted {done.deleted} dead letters")
    )
    for entry_id, why in done.invalid.items():
        click.echo(f"left {entry_id}: still invalid: {why}", err=True)
    for entry_id in done.partial:
        click.echo(
            f"left {entry_id}: not dead-lettered by every model (some applied it, or has not "
            "reached it yet); re-driving it would count it twice there",
            err=True,
        )
    if done.invalid or done.partial:
        sys.exit(1)


@dead.command()
@_filters
@click.option("--yes", is_flag=True, help="Do it (without it, only say how many would go).")
@click.pass_context
def purge(
    ctx: click.Context,
    reason: str | None,
    shard: tuple[int, ...],
    model_name: str | None,
    entry_ids: tuple[str, ...],
    yes: bool,
) -> None:
    """Delete dead letters (all, or those chosen by the filters).

    Without --yes it asks on a terminal; otherwise (a script, a pipe) it only says how many
    match, deletes nothing, and exits 1 so that a script notices it did nothing (1, not 2:
    the command was understood; exit 2 is for mistakes in flags or settings).
    """
    settings = settings_of(ctx)

    async def choose() -> list[DeadLetter]:
        async with opened(settings) as (deployment, links):
            return await _select(deployment, links, reason, shard, model_name, entry_ids)

    async def delete(chosen: list[DeadLetter]) -> int:
        async with opened(settings) as (deployment, links):
            return await deadletters.purge(links.client, deployment, chosen)

    chosen = run(choose())
    if not chosen:
        click.echo("no dead letters match")
        return
    if not yes and sys.stdin.isatty():
        yes = click.confirm(f"delete {len(chosen)} dead letters?", default=False)
    if not yes:
        click.echo(f"{len(chosen)} dead letters match; run again with --yes to delete them")
        sys.exit(1)
    click.echo(f"deleted {run(delete(chosen))} dead letters")

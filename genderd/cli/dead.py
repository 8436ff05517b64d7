"""`genderd dead`: the dead letters by reason and shard, their entries, re-drive, purge."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import click

from genderd import catalog, deadletters
from genderd.cli.common import opened, run, settings_of
from genderd.clock import wall_clock_ms
from genderd.deadletters import DeadLetter
from genderd.deployment import Deployment
from genderd.models.registry import UnknownModelError
from genderd.settings import Settings
from genderd.transport import Links
from genderd.worker import reclaim_interval_s

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
            model = await _filter_name(deployment, links, model_name)
            return await _select(deployment, links, reason, shard, model, ())

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
            model = await _filter_name(deployment, links, model_name)
            return await _select(deployment, links, reason, shard, model, entry_ids)

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
@click.option(
    "--since",
    callback=lambda ctx, param, value: None if value is None else parse_since(value),
    help="Only dead letters written since: ms since the epoch, an ISO time (UTC unless it "
    "says), or an age such as 30m, 2h, 1d.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be re-driven; write nothing.")
@click.pass_context
def redrive(
    ctx: click.Context,
    reason: str | None,
    shard: tuple[int, ...],
    model_name: str | None,
    entry_ids: tuple[str, ...],
    since: int | None,
    dry_run: bool,
) -> None:
    """Re-drive dead letters once the cause is fixed.

    With --model M: apply M's dead letters (its model_error ones once the model is fixed) to M
    only, exactly once: each becomes pending again in M's group atomically with its removal
    from the dead letters, and M's workers apply it; the other models are not touched.

    Without --model: write the dead-lettered events again, to the shard of their client (a
    producer's shard rule fixed, a gender added to GENDERD_GENDERS), for entries that every
    model dead-lettered, each at most once even when an interrupted run is repeated.

    Entries still invalid, or that cannot be re-driven, are left where they are: exit 1.
    """
    settings = settings_of(ctx)
    if model_name is not None:
        _redrive_model(settings, model_name, reason, shard, entry_ids, since, dry_run)
        return

    async def go() -> deadletters.Redriven:
        async with opened(settings) as (deployment, links):
            chosen = await _select(deployment, links, reason, shard, model_name, entry_ids)
            chosen = _since(chosen, since)
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
            "reached it yet); re-drive it to one model with --model",
            err=True,
        )
    if done.invalid or done.partial:
        sys.exit(1)


AGE_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_since(value: str, now_ms: int | None = None) -> int:
    """``--since``: ms since the epoch, an ISO time (UTC unless it names a zone), or an age
    (``30m``, ``2h``, ``1d``) before ``now_ms`` (default: the wall clock)."""
    value = value.strip()
    if value.isdigit():
        return int(value)
    unit = AGE_UNITS_MS.get(value[-1:])
    if unit is not None and value[:-1].isdigit():
        now = wall_clock_ms() if now_ms is None else now_ms
        return now - int(value[:-1]) * unit
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not ms since the epoch, an ISO time or an age such as 2h"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def _since(letters: list[DeadLetter], since: int | None) -> list[DeadLetter]:
    if since is None:
        return letters
    return [letter for letter in letters if deadletters.since_ms(letter) >= since]


def _redrive_model(
    settings: Settings,
    model: str,
    reason: str | None,
    shard: tuple[int, ...],
    entry_ids: tuple[str, ...],
    since: int | None,
    dry_run: bool,
) -> None:
    """``dead redrive --model M``: M's dead letters to M only (see :func:`redrive`)."""

    async def go() -> tuple[str, deadletters.ModelRedriven]:
        async with opened(settings) as (deployment, links):
            name = await _model_named(deployment, links, model)
            chosen = await _select(deployment, links, reason, shard, name, entry_ids)
            done = await deadletters.redrive_model(
                links.fast, deployment, name, _since(chosen, since), dry_run=dry_run
            )
            return name, done

    model, done = run(go())
    verb = "would re-drive" if dry_run else "re-drove"
    click.echo(
        f"{verb} {len(done.redriven)} dead letters of {model} to {model} only"
        + ("" if dry_run else f" (its workers apply them within {_within(settings)})")
        + (f"; {done.missing} were gone meanwhile" if done.missing else "")
    )
    for entry_id, why in done.invalid.items():
        click.echo(f"left {entry_id}: still invalid: {why}", err=True)
    for entry_id in done.gone:
        click.echo(
            f"left {entry_id}: no longer in its shard stream (trimmed past the retention, or "
            "its client erased): it cannot be re-driven",
            err=True,
        )
    for entry_id, on in done.no_group.items():
        click.echo(
            f"left {entry_id}: {model} has no consumer group on shard {on}; the group its "
            "workers create there reads the retained stream from the start, this entry "
            f"included: delete this dead letter (dead purge --model {model} --shard {on} "
            f"--id {entry_id} --yes)",
            err=True,
        )
    if done.invalid or done.gone or done.no_group:
        sys.exit(1)


async def _model_named(deployment: Deployment, links: Links, name: str) -> str:
    """The name of the deployment's model called ``name`` or answering to it as an alias:
    loaded here (served or left out by GENDERD_MODELS), or recorded by a worker elsewhere.
    Else :class:`UnknownModelError` (exit 2), naming the known models."""
    try:
        return deployment.model(name).name
    except UnknownModelError as error:
        if error.left_out is not None:
            return error.left_out
    records = await catalog.read(links.fast, deployment)
    found = catalog.find(records, name)
    if found is not None:
        return found.name
    raise UnknownModelError(name, sorted(set(deployment.registry.loaded) | set(records)))


async def _filter_name(deployment: Deployment, links: Links, name: str | None) -> str | None:
    """The model a ``--model`` filter of list, show or purge means: as :func:`_model_named`
    (an alias names its model), else ``name`` as given: the dead letters of a model no longer
    loaded nor recorded here can still be listed and purged. None: no filter."""
    if name is None:
        return None
    try:
        return await _model_named(deployment, links, name)
    except UnknownModelError:
        return name


def _within(settings: Settings) -> str:
    """How soon a worker reclaims re-driven entries (its reclaim interval)."""
    return f"{reclaim_interval_s(settings):g} s"


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
            model = await _filter_name(deployment, links, model_name)
            return await _select(deployment, links, reason, shard, model, entry_ids)

    async def delete(chosen: list[DeadLetter]) -> int:
        async with opened(settings) as (deployment, links):
            return await deadletters.purge(links.fast, deployment, chosen)

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

"""`genderd models`: the deployment's models as recorded, and what an operator decides about
them (`models list`, `off`, `on`, `retire`; :mod:`genderd.model_admin`)."""

from __future__ import annotations

import json
import time

import click

from genderd import catalog, model_admin
from genderd.catalog import ModelRecord
from genderd.cli.common import opened, run, settings_of

NAME = click.argument("name")


@click.group()
def models() -> None:
    """The deployment's models as recorded: list them, switch one off or on, retire one.

    Nothing else switches a model off or retires it (GENDERD_MODELS only says what one
    process runs). `off` and `retire` are refused while workers of the model are alive: stop
    them first. A worker of the model that starts later records it again, switched on.
    """


def _state(found: ModelRecord) -> str:
    if found.unreadable:
        return f"unreadable record ({found.unreadable})"
    if not found.recorded:
        return "a consumer group without a record"
    return "retired" if found.retired else "on" if found.on else "off"


def _started(found: ModelRecord) -> str:
    if not found.started_ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(found.started_ms / 1000))


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_models(ctx: click.Context, as_json: bool) -> None:
    """Every model the deployment records or has a consumer group of, retired ones too: its
    kind, state (on, off, retired, unreadable record), whether it has groups, when a worker of
    it last started (UTC) and where it was loaded from."""
    settings = settings_of(ctx)

    async def go() -> dict[str, ModelRecord]:
        async with opened(settings) as (deployment, links):
            return await catalog.read(links.fast, deployment)

    records = run(go())
    if as_json:
        rows = [
            {
                "model": r.name,
                "kind": r.kind,
                "state": _state(r),
                "grouped": r.grouped,
                "started_ms": r.started_ms or None,
                "loaded_from": r.loaded_from,
            }
            for r in records.values()
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'model':<12}{'kind':<10}{'groups':<8}{'started (UTC)':<18}state; loaded from")
    for r in records.values():
        where = f"; {r.loaded_from}" if r.loaded_from else ""
        click.echo(
            f"{r.name:<12}{r.kind:<10}{'yes' if r.grouped else 'no':<8}{_started(r):<18}"
            f"{_state(r)}{where}"
        )


def _switch(ctx: click.Context, name: str, on: bool) -> None:
    settings = settings_of(ctx)

    async def go() -> bool:
        async with opened(settings) as (deployment, links):
            return await model_admin.switch(links.client, links.fast, deployment, name, on)

    changed = run(go())
    state = "on" if on else "off"
    click.echo(f"model {name} switched {state}" if changed else f"model {name} was {state} already")


@models.command("off")
@NAME
@click.pass_context
def off(ctx: click.Context, name: str) -> None:
    """Switch model NAME off: `status` shows it off, never STALLED nor FAILING, and its
    groups keep their place in the streams (switched on again within the retention, it
    catches up). Refused while workers of it are alive (exit 1)."""
    _switch(ctx, name, on=False)


@models.command("on")
@NAME
@click.pass_context
def on(ctx: click.Context, name: str) -> None:
    """Switch model NAME on again without starting a worker of it (`status` then shows it
    STALLED while events wait for it). A worker of it that starts does the same."""
    _switch(ctx, name, on=True)


@models.command("retire")
@NAME
@click.option(
    "--forget",
    is_flag=True,
    help="Delete its record too: erasure then no longer deletes its clients' keys (they "
    "expire with the clients).",
)
@click.pass_context
def retire(ctx: click.Context, name: str, forget: bool) -> None:
    """Retire model NAME: destroy its consumer group on every shard (its lag no longer holds
    back trimming), its stats counters and its workers' heartbeats; its dead letters stay.
    Its record stays, marked retired, so that erasure still deletes its clients' keys;
    `status` and the API no longer show it. Refused while workers of it are alive or a
    replay of it runs (exit 1). A worker of it that starts later brings it back."""
    settings = settings_of(ctx)

    async def go() -> model_admin.Retired:
        async with opened(settings) as (deployment, links):
            return await model_admin.retire(
                links.client, links.fast, deployment, name, forget=forget
            )

    done = run(go())
    kept = (
        "its record is kept, marked retired, for erasure"
        if done.kept
        else "its record is deleted: erasure no longer knows its keys"
    )
    click.echo(f"retired model {done.name}: {done.groups} consumer groups destroyed; {kept}")

"""`genderd grades` and `genderd champion`: live grading and the champion (SPEC §14)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
import orjson

from genderd.cli.common import model_of, opened, run, settings_of
from genderd.grading import champion as champions
from genderd.grading.live import DEFAULT_WINDOW_S, parse_window
from genderd.grading.view import champion_line, live_view, table, to_json
from genderd.settings import Settings

HISTORY_SHOWN = 10


class Window(click.ParamType[int]):
    """A window such as 24h or 7d (1h to 30d), as seconds."""

    name = "WINDOW"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_window(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


WINDOW = Window()


@click.command()
@click.option(
    "--window",
    "window_s",
    type=WINDOW,
    default=f"{DEFAULT_WINDOW_S // 3600}h",
    show_default=True,
    help="How far back: hours or days, 1h to 30d.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def grades(ctx: click.Context, window_s: int, as_json: bool) -> None:
    """Each model's live grades: how well the answers it served predicted the next visit.

    Every worker grades each event it applies against the model's answer just before it (read
    at the event's time). Shows `genderd evaluate`'s table on those grades over the window,
    each model compared with the champion (95% intervals valid over clients, adjusted for the
    number of challengers), and the champion line.
    """
    settings = settings_of(ctx)

    async def go() -> str:
        async with opened(settings, read_only=True) as (deployment, links):
            view = await live_view(links, deployment, window_s, deployment.clock())
            return to_json(view) if as_json else table(view)

    click.echo(run(go()))


def _change_line(change: dict[str, Any]) -> str:
    when = dt.datetime.fromtimestamp(change["at"] / 1000, dt.timezone.utc)
    evidence = change.get("evidence") or {}
    what = change["what"]
    if what == "change":
        low, high = evidence.get("interval", [0.0, 0.0])
        why = (
            f"{100 * evidence.get('difference', 0.0):+.1f} pts [{100 * low:+.1f}, "
            f"{100 * high:+.1f}] over {evidence.get('events', 0):,} events, "
            f"{evidence.get('client_groups', 0):,} client groups"
        )
    else:
        why = evidence.get("reason", "")
    source = change["from"] or "(start)"
    return f"{when:%Y-%m-%d %H:%M} UTC  {what:<6}  {source} -> {change['to']}  {why}"


async def _champion(settings: Settings, pin: str | None, unpin: bool, count: int) -> dict[str, Any]:
    async with opened(settings) as (deployment, links):
        now = deployment.clock()
        if pin is not None:
            model = model_of(deployment, pin)
            await champions.pin(links, deployment, model.name, now, "pinned by an operator")
        elif unpin:
            await champions.unpin(links, deployment, now, "unpinned by an operator")
        view = await live_view(links, deployment, settings.champion_window_s, now)
        changes = await champions.history(links, deployment, count)
        return {"view": view, "history": changes}


@click.command()
@click.option("--pin", "pin", metavar="MODEL", help="Make MODEL the champion and keep it.")
@click.option("--unpin", is_flag=True, help="Let the evidence change the champion again.")
@click.option(
    "--history",
    "count",
    type=click.IntRange(0),
    default=HISTORY_SHOWN,
    show_default=True,
    help="Changes to show, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def champion(ctx: click.Context, pin: str | None, unpin: bool, count: int, as_json: bool) -> None:
    """The champion: the model lookups answer from with GENDERD_DEFAULT_MODEL=best.

    It starts as GENDERD_CHAMPION_START and passes to another model only when, over
    GENDERD_CHAMPION_WINDOW_S of live grades, that model is significantly better (its
    advantage's 95% interval above zero after adjustment for the number of challengers, over
    GENDERD_CHAMPION_MIN_EVENTS graded events and 50 clients), and neither failing nor
    stalled. Shows the champion and its history; --pin and --unpin let an operator decide.
    """
    if pin is not None and unpin:
        raise click.UsageError("give --pin or --unpin, not both")
    settings = settings_of(ctx)
    found = run(_champion(settings, pin, unpin, count))
    view, changes = found["view"], found["history"]
    if as_json:
        data = {"champion": view.champion.to_dict(), "history": changes}
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(champion_line(view))
    if changes and changes[0]["what"] == "change" and changes[0]["to"] == view.champion.model:
        click.echo(f"why: {_change_line(changes[0])}")
    click.echo("")
    click.echo("history (newest first):" if changes else "history: no change yet")
    for change in changes:
        click.echo(f"  {_change_line(change)}")

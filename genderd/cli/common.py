"""What every `genderd` command shares: settings from flags, one-line errors, connecting."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError
from redis.exceptions import InvalidResponse, RedisError, ResponseError

from genderd import catalog, discovery
from genderd.deployment import Deployment, open_deployment, read_deployment
from genderd.errors import ConfigurationError, GenderdError, InputError, UnavailableError
from genderd.events import text
from genderd.models.base import Model
from genderd.models.registry import (
    PluginError,
    UnknownModelError,
    check_models,
    discover,
    labels,
)
from genderd.settings import Settings
from genderd.transport import AsyncClient, Links, WrongTypeError, connect, translate, wrong_type

T = TypeVar("T")

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_MS = dt.timedelta(milliseconds=1)


def settings_of(ctx: click.Context, *, find_server: bool = True, **overrides: Any) -> Settings:
    """Settings from the environment, overridden by the group's and the command's flags; a
    mistake is one line naming the variable, before anything touches Redis.

    With ``find_server`` (every command but `up`, which starts one), ``redis_url`` is resolved
    here, at the edge: the configured URL, else the server of a `genderd up` in this directory.
    """
    given = {**ctx.obj, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        settings = Settings(**given)
    except ValidationError as error:
        problems = "; ".join(
            (f"GENDERD_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in error.errors(include_url=False)
        )
        raise ConfigurationError(f"bad configuration: {problems}") from None
    except SettingsError as error:
        raise ConfigurationError(f"bad configuration: {error}") from None
    found = check_models(settings)  # a bad plugin or a name used twice: one line, now
    for problem in found.broken.values():  # an installed model that cannot load: warn, go on
        click.echo(f"warning: {problem}; commands that do not use it go on", err=True)
    return discovery.resolved(settings) if find_server else settings


class FiniteRange(click.FloatRange):
    """A number in a range, as :class:`click.FloatRange`, that is also finite: ``nan`` (which
    no range comparison refuses) and ``inf`` are a usage error, one line."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _mistake(message: str) -> click.ClickException:
    """A configuration or input mistake: exit 2, like a usage error. Without a context, click
    prints it as the one line "Error: ..." (no usage text)."""
    return click.UsageError(message)


def _one_line(error: GenderdError) -> click.ClickException:
    """The one line of ``error``: exit 2 for a configuration or input mistake, else 1."""
    if isinstance(error, ConfigurationError | InputError):
        return _mistake(str(error))
    return click.ClickException(str(error))


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Every error genderd raises on purpose, and every "Redis cannot serve this now" state,
    as one line on stderr instead of a traceback: exit 2 for a configuration or input
    mistake (like a usage error), 1 otherwise. The command group runs every command in it."""
    try:
        yield
    except GenderdError as error:
        raise _one_line(error) from None
    except InvalidResponse as error:  # e.g. an HTTP server on that port: a configuration mistake
        raise _mistake(f"the server at the Redis URL does not answer like Redis: {error}") from None
    except (RedisError, ConnectionError, TimeoutError) as raised:
        state = translate(raised)
        if not isinstance(state, UnavailableError):
            state = wrong_type(raised) or state  # a key of another type (opened() names it)
        if not isinstance(state, UnavailableError):
            raise
        raise _one_line(state) from None


class Group(click.Group):
    """The `genderd` group: runs each command under :func:`friendly_errors` (mapped once)."""

    def invoke(self, ctx: click.Context) -> Any:
        with friendly_errors():
            return super().invoke(ctx)


def run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine (its errors are mapped by the group)."""
    return asyncio.run(coro)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def opened(
    settings: Settings, *, read_only: bool = False
) -> AsyncIterator[tuple[Deployment, Links]]:
    """Connect and open the deployment (``read_only``: as stored, writing nothing, and only
    if there is one); close the connections afterwards."""
    links = connect(settings)
    try:
        open_ = read_deployment if read_only else open_deployment
        deployment = await open_(links.client, settings)
        try:
            yield deployment, links
        except ResponseError as error:
            wrong = wrong_type(error)
            if wrong is None:
                raise
            raise await _named(wrong, links.client, deployment) from None
    finally:
        await links.close()


async def _named(error: WrongTypeError, client: AsyncClient, deployment: Deployment) -> Exception:
    """``error`` (a command's WRONGTYPE, which names no key) naming the keys of the deployment
    that hold another type than genderd keeps there (its streams and their counters, the meta
    and models hashes), when it finds one."""
    keys = deployment.keys
    expected = {keys.meta: "hash", keys.models: "hash"}
    for shard in deployment.shards:
        expected |= {keys.stream(shard): "stream", keys.dead(shard): "stream"}
        expected[keys.stats(shard)] = "hash"
    pipe = client.pipeline(transaction=False)
    for key in expected:
        pipe.type(key)
    try:
        found = await pipe.execute()
    except RedisError:
        return error
    wrong = [
        f"{key} holds a {text(kind)}, not a {want}"
        for (key, want), kind in zip(expected.items(), found, strict=True)
        if text(kind) not in (want, "none")
    ]
    return WrongTypeError("; ".join(wrong)) if wrong else error


def loaded_models() -> str:
    """Every model this environment loads (the installed ones and ``GENDERD_PLUGINS``), its
    aliases as aliases, for a command's help: read when the help is shown."""
    try:
        found = discover(Settings().plugins)
    except (GenderdError, ValidationError, SettingsError):
        return "see `genderd status` (GENDERD_PLUGINS or the settings have a problem)"
    return ", ".join(labels(found.found))


class ModelOption(click.Option):
    """An option that names models: its help ends with every model loaded, plug-ins
    included (:func:`loaded_models`, built when the help is shown, not when imported)."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        given = self.help or ""
        self.help = f"{given} Models: {loaded_models()}."
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = given


def model_of(deployment: Deployment, name: str) -> Model:
    """The model called ``name``, or a usage error naming the known ones (one line when its
    installed entry point is broken: not a usage mistake)."""
    try:
        return deployment.model(name)
    except UnknownModelError as error:
        if error.broken is not None:
            raise PluginError(str(error)) from None
        raise click.BadParameter(str(error), param_hint="--model") from None


async def served_model(deployment: Deployment, links: Links, name: str) -> Model:
    """The model called ``name``, or a usage error: for a model the deployment runs but this
    process has not loaded, saying so and how to load it (:mod:`genderd.catalog`)."""
    try:
        return deployment.model(name)
    except UnknownModelError as error:
        if error.broken is not None:
            raise PluginError(str(error)) from None
        if error.left_out is None:
            found = catalog.find(await catalog.read(links.fast, deployment), name)
            if found is not None:
                why = catalog.not_served(deployment, found)
                raise click.BadParameter(why, param_hint="--model") from None
        raise click.BadParameter(str(error), param_hint="--model") from None


class Instant(click.ParamType[int]):
    """A time: milliseconds since the epoch, or an ISO date or datetime (UTC unless it says
    otherwise), as milliseconds since the epoch."""

    name = "TIME"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        given = str(value).strip()
        if given.isdigit():
            return int(given)
        try:
            # Python 3.10's fromisoformat knows neither "Z" nor a bare date with a time part
            parsed = dt.datetime.fromisoformat(given.removesuffix("Z").removesuffix("z"))
        except ValueError:
            self.fail(
                f"{given!r} is neither milliseconds since the epoch nor an ISO date or "
                "datetime (2026-01-31, 2026-01-31T12:00:00)",
                param,
                ctx,
            )
        if parsed.tzinfo is None or given[-1:] in ("Z", "z"):
            parsed = parsed.replace(tzinfo=dt.timezone.utc)
        return (parsed - _EPOCH) // _ONE_MS


INSTANT = Instant()

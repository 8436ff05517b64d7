"""What every `genderd` command shares: settings from flags, one-line errors, connecting."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError
from redis.exceptions import InvalidResponse, RedisError

from genderd import catalog, discovery
from genderd.deployment import Deployment, open_deployment, read_deployment
from genderd.errors import ConfigurationError, GenderdError, InputError, UnavailableError
from genderd.models.base import Model
from genderd.models.registry import UnknownModelError, check_models
from genderd.settings import Settings
from genderd.transport import Links, connect, translate
from genderd.transport.unavailable import wrong_type

T = TypeVar("T")


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
    check_models(settings)  # a bad plugin or a name used twice: one line, now
    return discovery.resolved(settings) if find_server else settings


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
    """Every error genderd raises on purpose, every "Redis cannot serve this now" state, and a
    key of the wrong type, as one line on stderr instead of a traceback: exit 2 for a
    configuration or input mistake (a key of the wrong type is one), like a usage error, 1
    otherwise. The command group runs every command in it."""
    try:
        yield
    except GenderdError as error:
        raise _one_line(error) from None
    except InvalidResponse as error:  # e.g. an HTTP server on that port: a configuration mistake
        raise _mistake(f"the server at the Redis URL does not answer like Redis: {error}") from None
    except (RedisError, ConnectionError, TimeoutError) as raised:
        state = translate(raised)
        if isinstance(state, UnavailableError):
            raise _one_line(state) from None
        wrong = wrong_type(raised)
        if wrong is None:
            raise
        raise _one_line(wrong) from None


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
        yield await open_(links.client, settings), links
    finally:
        await links.close()


def model_of(deployment: Deployment, name: str) -> Model:
    """The model called ``name``, or a usage error naming the known ones."""
    try:
        return deployment.model(name)
    except UnknownModelError as error:
        raise click.BadParameter(str(error), param_hint="--model") from None


async def served_model(deployment: Deployment, links: Links, name: str) -> Model:
    """The model called ``name``, or a usage error: for a model the deployment runs but this
    process has not loaded, saying so and how to load it (:mod:`genderd.catalog`)."""
    try:
        return deployment.model(name)
    except UnknownModelError as error:
        if error.left_out is None:
            found = catalog.find(await catalog.read(links.fast, deployment), name)
            if found is not None:
                why = catalog.not_served(deployment, found)
                raise click.BadParameter(why, param_hint="--model") from None
        raise click.BadParameter(str(error), param_hint="--model") from None

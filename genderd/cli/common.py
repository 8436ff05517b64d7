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

from genderd.deployment import Deployment, open_deployment
from genderd.layout import LayoutError
from genderd.models.base import Model
from genderd.models.registry import PluginError, UnknownModelError, check_models
from genderd.settings import Settings
from genderd.transport import (
    Links,
    RedisUnavailableError,
    UnsupportedURLError,
    connect,
    translate,
)

T = TypeVar("T")


class ConfigurationError(click.ClickException):
    """A configuration mistake: one line on stderr, exit 2 (like a usage error)."""

    exit_code = 2


def settings_of(ctx: click.Context, **overrides: Any) -> Settings:
    """Settings from the environment, overridden by the group's and the command's flags; a
    mistake is one line naming the variable, before anything touches Redis."""
    given = {**ctx.obj, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        settings = Settings(**given)
        check_models(settings)  # a bad plugin or a name used twice: one line, now
        return settings
    except PluginError as error:
        raise ConfigurationError(str(error)) from None
    except ValidationError as error:
        problems = "; ".join(
            (f"GENDERD_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in error.errors(include_url=False)
        )
        raise ConfigurationError(f"bad configuration: {problems}") from None
    except SettingsError as error:
        raise ConfigurationError(f"bad configuration: {error}") from None


@contextlib.contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn every "Redis cannot serve this now" state and configuration mistake into one line
    on stderr (and exit 1) instead of a traceback."""
    try:
        yield
    except (UnsupportedURLError, LayoutError) as error:
        raise click.ClickException(str(error)) from None
    except InvalidResponse as error:  # e.g. an HTTP server on that port
        raise click.ClickException(
            f"the server at the Redis URL does not answer like Redis: {error}"
        ) from None
    except (RedisError, RedisUnavailableError, ConnectionError, TimeoutError) as raised:
        state = translate(raised)
        if not isinstance(state, RedisUnavailableError):
            raise
        raise click.ClickException(str(state)) from None


def run(coro: Awaitable[T]) -> T:
    """Run a command's coroutine with one-line errors."""
    with friendly_errors():
        return asyncio.run(coro)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[tuple[Deployment, Links]]:
    """Connect and open the deployment; close the connections afterwards."""
    links = connect(settings)
    try:
        yield await open_deployment(links.client, settings), links
    finally:
        await links.close()


def model_of(deployment: Deployment, name: str) -> Model:
    """The model called ``name``, or a usage error naming the known ones."""
    try:
        return deployment.model(name)
    except UnknownModelError as error:
        raise click.BadParameter(str(error), param_hint="--model") from None

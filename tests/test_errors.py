"""genderd's errors: one base, a few families, mapped once at each edge."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from click.testing import CliRunner

import genderd
from genderd.cli import main
from genderd.cli.common import friendly_errors
from genderd.errors import (
    ConfigurationError,
    GenderdError,
    InputError,
    ModelError,
    UnavailableError,
)


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    prefix = f"{genderd.__name__}."
    for info in pkgutil.walk_packages(genderd.__path__, prefix):
        if info.name.endswith(".__main__"):  # runs the command line when imported
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith(prefix):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_exception_genderd_defines_derives_from_genderd_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 21  # the walk found them
    strays = [c.__qualname__ for c in classes if not issubclass(c, GenderdError)]
    assert strays == []


@pytest.mark.parametrize(
    ("name", "family", "builtin"),
    [
        ("genderd.transport.unavailable.RedisLoadingError", UnavailableError, Exception),
        ("genderd.transport.unavailable.NoServerError", ConfigurationError, Exception),
        ("genderd.transport.pipelined.UnsupportedURLError", ConfigurationError, ValueError),
        ("genderd.models.registry.PluginError", ConfigurationError, ValueError),
        ("genderd.bundled.BundledServerError", ConfigurationError, RuntimeError),
        ("genderd.layout.LayoutError", ConfigurationError, RuntimeError),
        ("genderd.events.EventError", InputError, ValueError),
        ("genderd.models.registry.UnknownModelError", InputError, KeyError),
        ("genderd.reader.BadClientIdError", InputError, ValueError),
        ("genderd.api.responses.ApiError", InputError, Exception),
        ("genderd.testing.ModelFailure", ModelError, AssertionError),
    ],
)
def test_each_error_is_in_its_family_and_keeps_its_builtin_base(
    name: str, family: type[GenderdError], builtin: type[Exception]
) -> None:
    module, _, cls = name.rpartition(".")
    error = getattr(importlib.import_module(module), cls)
    assert issubclass(error, family) and issubclass(error, builtin)


def test_no_server_is_a_configuration_error_not_a_server_state() -> None:
    from genderd.transport import NoServerError, RedisUnavailableError

    assert not issubclass(NoServerError, RedisUnavailableError)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigurationError("bad"), 2),
        (InputError("bad"), 2),
        (UnavailableError("down"), 1),
        (ModelError("broke"), 1),
        (GenderdError("no"), 1),
    ],
)
def test_the_cli_maps_each_family_once(error: GenderdError, code: int) -> None:
    import click

    with pytest.raises(click.ClickException) as raised, friendly_errors():
        raise error
    assert raised.value.exit_code == code and raised.value.message == str(error)


def test_a_configuration_error_is_one_line_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENDERD_REDIS_URL", "redis://127.0.0.1:1/0?protocol=3")
    result = CliRunner().invoke(main, ["lookup", "C1"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert "GENDERD_PIPELINED=false" in result.output

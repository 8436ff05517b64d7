"""Loading models (issue 27): a name breaking the naming rule is refused at load in one line
(finding 11); one installed entry point that cannot be loaded is a one-line warning for the
commands that do not use it and a one-line error for those that do (finding 18); `serve`
checks its default model as the API does, naming GENDERD_DEFAULT_MODEL (finding 15)."""

from __future__ import annotations

import logging
import socket
import subprocess
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from genderd.cli import main
from genderd.models import registry
from genderd.models.registry import NAME_RULE, PluginError, Registration
from genderd.settings import Settings

from .support import loadplugins
from .support.api_helpers import MakeApi
from .test_e2e_up import genderd as run_genderd

#: installed entry points that cannot be loaded, by name: what each one's warning says
BROKEN = {
    "broken": ("nosuch_module:Broken", "ModuleNotFoundError: No module named 'nosuch_module'"),
    "nolua": ("tests.support.loadplugins:NoLua", "cannot load its Lua files"),
    "shout": ("tests.support.loadplugins:Shout", "'Shout' is not a valid model name"),
    "widened": ("tests.support.loadplugins:Widened", "window_days must be a whole number"),
}


def _genderd(settings: Settings, *args: str, **env: str) -> Result:
    base = {
        "GENDERD_REDIS_URL": settings.redis_url or "",
        "GENDERD_SHARDS": str(settings.shards),
        "GENDERD_PLUGINS": "",
        "GENDERD_MODELS": "",
    }
    return CliRunner().invoke(main, list(args), env=base | env)


@pytest.mark.parametrize(
    ("plugin", "said"),
    [
        ("Shout", "'Shout' is not a valid model name"),
        ("Spaced", "'two words' is not a valid model name"),
    ],
)
def test_a_model_name_breaking_the_rule_is_refused_at_load_in_one_line(
    settings: Settings, plugin: str, said: str
) -> None:
    """`Shout` showed "ok" in status, while `worker --model Shout` failed "unknown model
    'Shout'; known: Shout" (names are matched lowercased)."""
    done = _genderd(settings, "status", GENDERD_PLUGINS=f"tests.support.loadplugins:{plugin}")
    assert done.exit_code == 2, done.output
    assert said in done.stderr and NAME_RULE in done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stdout == ""
    with pytest.raises(PluginError, match="lowercase letters, digits"):
        Registration.of(loadplugins.Shout, "here")


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The installed entry points, and the broken ones of :data:`BROKEN`."""
    extra = [
        EntryPoint(name, value, registry.ENTRY_POINT_GROUP) for name, (value, _) in BROKEN.items()
    ]

    def points(**selection: Any) -> list[EntryPoint]:
        return [*entry_points(**selection), *extra]

    monkeypatch.setattr(registry, "entry_points", points)
    yield


def _warnings(done: Result) -> list[str]:
    lines = done.stderr.splitlines()
    assert "Traceback" not in done.output
    return [line for line in lines if line.startswith("warning: ")]


def test_a_broken_entry_point_is_one_warning_for_the_commands_that_do_not_use_it(
    installed: None, settings: Settings
) -> None:
    shown = _genderd(settings, "status", "--json")
    assert shown.exit_code == 0, shown.output
    warned = _warnings(shown)
    assert len(warned) == len(BROKEN) == len(shown.stderr.splitlines())
    for name, (value, said) in BROKEN.items():
        line = next(line for line in warned if f"entry point {name!r} ({value})" in line)
        assert said in line and "commands that do not use it go on" in line
    assert '"model": "top"' in shown.stdout
    produced = _genderd(settings, "produce", "--count", "5", "--quiet")
    assert produced.exit_code == 0 and len(_warnings(produced)) == len(BROKEN)
    looked = _genderd(settings, "lookup", "C1", "--model", "top")
    assert looked.exit_code in (0, 1) and "Traceback" not in looked.output


@pytest.mark.parametrize(
    "args",
    [
        ("worker", "--model", "broken"),
        ("lookup", "C1", "--model", "nolua"),
        ("replay", "--model", "broken"),
    ],
)
def test_a_command_that_needs_the_broken_model_fails_in_one_line(
    installed: None, settings: Settings, args: tuple[str, ...]
) -> None:
    done = _genderd(settings, *args)
    assert done.exit_code == 2, done.output
    errors = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(errors) == 1 and "Traceback" not in done.output
    assert f"model {args[-1]!r} cannot be loaded in this process: entry point" in errors[0]


def test_genderd_models_naming_a_broken_model_is_refused(
    installed: None, settings: Settings
) -> None:
    done = _genderd(settings, "status", GENDERD_MODELS="top,broken")
    assert done.exit_code == 2
    assert "GENDERD_MODELS: model 'broken' cannot be loaded in this process" in done.stderr


def test_an_entry_point_that_cannot_be_built_is_left_out_too(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Its class loads but its ``__init__`` raises: a warning, the other models go on; named
    in GENDERD_PLUGINS instead, one line and exit 2 (it was a traceback)."""
    raising = EntryPoint("raising", "tests.support.loadplugins:Raising", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(
        registry, "entry_points", lambda **selection: [*entry_points(**selection), raising]
    )
    with caplog.at_level(logging.WARNING, logger="genderd.models.registry"):
        shown = _genderd(settings, "status")
    assert shown.exit_code == 0, shown.output
    said = "entry point 'raising': cannot be built: RuntimeError: no config"
    assert said in caplog.text
    needed = _genderd(settings, "worker", "--model", "raising")
    assert needed.exit_code == 2 and said in needed.stderr
    monkeypatch.undo()
    named = _genderd(settings, "status", GENDERD_PLUGINS="tests.support.loadplugins:Raising")
    assert named.exit_code == 2 and len(named.stderr.splitlines()) == 1
    assert "GENDERD_PLUGINS: tests.support.loadplugins:Raising: cannot be built" in named.stderr


def test_the_api_goes_on_without_a_broken_model(installed: None, make_api: MakeApi) -> None:
    api = make_api()
    assert api.get("/v1/clients/C1").status_code == 404  # unknown client: answered
    refused = api.get("/v1/clients/C1/gender?model=broken")
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["type"] == "model_not_served"
    assert "cannot be loaded" in refused.json()["detail"][0]["msg"]


@pytest.mark.slow
def test_a_really_installed_broken_entry_point_warns_once(
    settings: Settings, tmp_path: Path
) -> None:
    """The finding as reported: a distribution whose entry point names a missing module
    ended `genderd status` in a ModuleNotFoundError traceback."""
    site = tmp_path / "site"  # not the working directory, which `python -m genderd` drops
    dist = site / "brokenplugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[genderd.models]\nbroken = nosuch_module:Broken\n")
    env = {
        "PYTHONPATH": str(site),
        "GENDERD_REDIS_URL": settings.redis_url or "",
        "GENDERD_SHARDS": str(settings.shards),
    }

    def genderd(*args: str) -> subprocess.CompletedProcess[str]:
        return run_genderd(tmp_path, *args, env=env)

    shown = genderd("status")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.count("\n") == 1 and shown.stderr.startswith("warning: entry point")
    needed = genderd("worker", "--model", "broken")
    assert needed.returncode == 2 and "Traceback" not in needed.stderr
    assert "model 'broken' cannot be loaded in this process" in needed.stderr


def _taken_port() -> socket.socket:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    return held


def test_serve_checks_its_default_model_as_the_api_does(settings: Settings) -> None:
    """With GENDERD_MODELS=last and no default set, the API serves `last` by default, but
    serve refused: "Invalid value for --model: model 'top' is left out by GENDERD_MODELS"
    (serve has no --model)."""
    held = _taken_port()
    try:
        port = str(held.getsockname()[1])
        past = _genderd(settings, "serve", "--port", port, GENDERD_MODELS="last")
        assert past.exit_code == 2 and f"port {port} is taken" in past.output, past.output
    finally:
        held.close()
    unknown = _genderd(settings, "serve", GENDERD_DEFAULT_MODEL="nope")
    assert unknown.exit_code == 2 and "--model" not in unknown.output
    assert "GENDERD_DEFAULT_MODEL: unknown model 'nope'" in unknown.output
    left_out = _genderd(settings, "serve", GENDERD_MODELS="last", GENDERD_DEFAULT_MODEL="top")
    assert left_out.exit_code == 2 and "--model" not in left_out.output
    assert "GENDERD_DEFAULT_MODEL 'top' is not among GENDERD_MODELS" in left_out.output

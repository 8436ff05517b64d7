"""The Python API's errors (issue 28): where the CLI prints one line, a Python caller gets one
of genderd's own exceptions whose message is that line (docs/cli.md, "Errors")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from genderd.deployment import Deployment
from genderd.errors import ConfigurationError, InputError
from genderd.models import PluginError, UnknownModelError
from genderd.settings import Settings

LUA_MODEL = """
from genderd.models import Model


class Nowhere(Model):
    name = "nowhere"
    description = "its Lua files are in no package"
    script_package = "no_such_package"
    apply_files = ("nowhere.lua",)

    def client_keys(self, shard, cid, events, now_ms):
        return [self.keys.result(shard, cid)]
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory of its own, importable as GENDERD_PLUGINS makes it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        ("mymodels:Streak", "GENDERD_PLUGINS: cannot import 'mymodels': ModuleNotFoundError"),
        ("luamodels:Nowhere", "cannot load its Lua files (package 'no_such_package')"),
    ],
)
def test_a_model_that_cannot_be_loaded_is_a_configuration_error_in_one_line(
    here: Path, plugins: str, message: str
) -> None:
    (here / "luamodels.py").write_text(LUA_MODEL)
    with pytest.raises(ConfigurationError) as raised:
        Deployment.build(Settings(plugins=(plugins,)))
    assert isinstance(raised.value, PluginError)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_unknown_model_is_an_input_error() -> None:
    deployment = Deployment.build(Settings())
    with pytest.raises(InputError) as raised:
        deployment.model("shoes")
    assert isinstance(raised.value, UnknownModelError)
    assert str(raised.value).startswith("unknown model 'shoes'; known: ")


def test_an_installed_entry_point_that_cannot_be_imported_is_one_line(here: Path) -> None:
    """A package installed without a module its entry point names (or left behind by an
    uninstall): left out with its reason in one line, not a raw ModuleNotFoundError; asking
    for it is an input error saying why (issue 27, finding 18)."""
    info = here / "stale-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stale\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[genderd.models]\nstale = stale_models:Stale\n")
    sys.path.append(str(here))  # as if installed: importlib.metadata finds the dist-info
    deployment = Deployment.build(Settings())
    said = deployment.registry.broken["stale"]
    assert "entry point 'stale'" in said and "cannot import" in said
    assert "ModuleNotFoundError" in said and "\n" not in said
    with pytest.raises(UnknownModelError) as raised:
        deployment.model("stale")
    assert "cannot be loaded in this process" in str(raised.value)

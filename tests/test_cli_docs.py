"""docs/cli.md documents the command line as it is (issue 28): every command and every option.

The rule, for whoever adds a command or an option: docs/cli.md's command table has one row per
top-level command, its first cell starting with `` `genderd <command>``; that row names each
subcommand of the command (as a word) and each option of the command and of its subcommands
(as ``--option``). An option of the `genderd` group itself is named before the table. A row
naming an option or a command that no longer exists fails too; another command's option is
named in code with its command (`` `genderd evaluate --events` ``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from genderd.cli import main
from genderd.deployment import Deployment
from genderd.models.registry import UnknownModelError
from genderd.settings import Settings

CLI_MD = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
_ROW = re.compile(r"^\| `genderd ([a-z][a-z-]*)[^|]*\|.*$", re.MULTILINE)
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_REFERENCE = re.compile(r"`genderd ([a-z][a-z-]*)[^`]*`")  # a command in code, its options too
HELP = "--help"


def _options(command: click.Command) -> tuple[set[str], set[str]]:
    """(the long name each option must be documented under, every long name it accepts)."""
    required: set[str] = set()
    accepted: set[str] = set()
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        names = [n for n in (*param.opts, *param.secondary_opts) if n.startswith("--")]
        if HELP in names or not names:
            continue
        required.add(names[0])
        accepted.update(names)
    return required, accepted


def _tree(command: click.Command) -> Iterator[tuple[str, click.Command]]:
    """``command`` and its subcommands, recursively, with their names."""
    yield command.name or "", command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _tree(sub)


def _others_removed(name: str) -> Callable[[re.Match[str]], str]:
    """For ``re.sub``: a reference in code to another command than ``name`` removed."""
    return lambda ref: ref.group(0) if ref.group(1) == name else ""


def _rows() -> dict[str, str]:
    text = CLI_MD.read_text()
    rows: dict[str, str] = {}
    for found in _ROW.finditer(text):
        name = found.group(1)
        assert name not in rows, f"docs/cli.md: two rows for `genderd {name}`"
        rows[name] = found.group(0)
    return rows


def test_every_command_has_a_row_and_every_row_a_command() -> None:
    rows = _rows()
    assert set(rows) == set(main.commands), (
        f"commands without a row in docs/cli.md: {sorted(set(main.commands) - set(rows))}; "
        f"rows of commands that do not exist: {sorted(set(rows) - set(main.commands))}"
    )


def test_every_option_and_subcommand_is_documented_in_its_commands_row() -> None:
    rows = _rows()
    missing: list[str] = []
    for name, command in sorted(main.commands.items()):
        row = rows.get(name, "")
        named = set(_OPTION.findall(row))
        words = set(re.findall(r"[a-z][a-z-]*", row))
        for sub_name, sub in _tree(command):
            path = name if sub is command else f"{name} {sub_name}"
            if sub is not command and sub_name not in words:
                missing.append(f"genderd {path}")
            required, _ = _options(sub)
            missing += [f"genderd {path} {option}" for option in sorted(required - named)]
    assert not missing, f"undocumented in docs/cli.md: {missing}"


def test_every_option_a_row_names_exists() -> None:
    rows = _rows()
    gone: list[str] = []
    for name, row in rows.items():
        command = main.commands.get(name)
        if command is None:
            continue
        accepted: set[str] = set()
        for _, sub in _tree(command):
            accepted |= _options(sub)[1]
        own = _REFERENCE.sub(_others_removed(name), row)
        gone += [f"genderd {name} {o}" for o in sorted(set(_OPTION.findall(own)) - accepted)]
    assert not gone, f"docs/cli.md names options that do not exist: {gone}"


def test_the_groups_own_options_are_documented_before_the_table() -> None:
    text = CLI_MD.read_text()
    head = text[: text.index("| command |")]
    required, accepted = _options(main)
    accepted.add(HELP)
    assert required <= set(_OPTION.findall(head)), sorted(required - set(_OPTION.findall(head)))
    assert set(_OPTION.findall(head)) <= accepted, sorted(set(_OPTION.findall(head)) - accepted)


MODEL_OPTIONS = (("worker", "--model"), ("lookup", "--model"), ("replay", "--model"))
LOADED = "last (alias model1), recency, top (alias model2), top3d, top7d (alias model3)"


@pytest.mark.parametrize(("command", "option"), [*MODEL_OPTIONS, ("evaluate", "--models")])
def test_a_model_options_help_names_every_model_loaded_aliases_as_aliases(
    command: str, option: str
) -> None:
    """Plug-ins included, read when the help is shown (GENDERD_PLUGINS of the environment)."""
    shown = CliRunner().invoke(
        main, [command, "--help"], env={"GENDERD_PLUGINS": "tests.support.pymodels:Top3"}
    )
    assert shown.exit_code == 0, shown.output
    said = " ".join(shown.output.split())  # as wrapped by click
    assert f"Models: {LOADED}." in said[said.index(option) :], said


def test_an_unknown_model_is_told_the_models_with_their_aliases() -> None:
    deployment = Deployment.build(Settings(redis_url="redis://unused.invalid"))
    with pytest.raises(UnknownModelError) as raised:
        deployment.model("shoes")
    known = "last (alias model1), recency, top (alias model2), top7d (alias model3)"
    assert str(raised.value) == f"unknown model 'shoes'; known: {known}"

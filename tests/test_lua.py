"""The Lua loader: each file says what it uses, the loader glues a script from it, and a line
of the glued script is named by the file and line it comes from."""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pytest

from genderd.events import Event
from genderd.keys import Keys
from genderd.lua import LIB, Script, assemble, read_resource
from genderd.models.base import Model
from genderd.settings import Settings

LUA = resources.files("genderd.lua")
FILES = sorted(f.name for f in LUA.iterdir() if f.name.endswith(".lua"))
CHUNKS = [name for name in FILES if name.startswith("_") and name != LIB]
SCRIPTS = [name for name in FILES if not name.startswith("_")]


def code(name: str) -> str:
    """The file's Lua without comments and string literals."""
    text = read_resource("genderd.lua", name)
    text = re.sub(r"--[^\n]*", "", text)
    return re.sub(r"'[^'\n]*'|\"[^\"\n]*\"", "''", text)


def defined(name: str) -> set[str]:
    """The names the file defines at its top level."""
    names = set(re.findall(r"^local function (\w+)", code(name), re.M))
    for group in re.findall(r"^local ([\w, ]+?)\s*=", code(name), re.M):
        names.update(n.strip() for n in group.split(","))
    return names


def uses(name: str) -> list[str]:
    lines = read_resource("genderd.lua", name).splitlines()
    return [u for line in lines if line.startswith("-- uses:") for u in line[8:].split()]


DEFINED_BY = {chunk: defined(chunk) for chunk in CHUNKS}


def test_no_two_chunks_define_the_same_name() -> None:
    seen: dict[str, str] = {}
    for chunk, names in DEFINED_BY.items():
        for name in names:
            assert name not in seen, f"{name} is defined by {seen.get(name)} and {chunk}"
            seen[name] = chunk


@pytest.mark.parametrize("name", [*SCRIPTS, *CHUNKS])
def test_a_file_names_each_chunk_it_uses_and_no_other(name: str) -> None:
    used = set(re.findall(r"(?<![.:\w])([A-Za-z_]\w*)", code(name)))
    needs = {
        chunk
        for chunk, names in DEFINED_BY.items()
        if chunk != name and names & used - defined(name)
    }
    assert set(uses(name)) == needs


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_line_of_a_script_is_named_by_its_file_and_line(name: str) -> None:
    script = Script.from_files(name)
    lines = script.source.split("\n")
    assert lines[-1] == ""  # the source ends with a newline
    for number, text in enumerate(lines[:-1], start=1):
        file, line = script.where(number).rsplit(":", 1)
        assert read_resource("genderd.lua", file).split("\n")[int(line) - 1] == text


def test_uses_come_first_once_each_in_dependency_order() -> None:
    files = [part.file for part in Script.from_files("top7d.lua").parts]
    assert files == [
        "_basics.lua",
        "_expiry.lua",
        "_grades.lua",
        "_frame.lua",
        "_counters.lua",
        "_window.lua",
        "top7d.lua",
    ]
    assert [part.file for part in Script.from_files("erase.lua").parts] == [
        "_basics.lua",
        "erase.lua",
    ]
    # the older way: LIB (every chunk) first, then the model's file; still each chunk once
    old = [part.file for part in Script.from_files(LIB, "top.lua").parts]
    assert sorted(old) == sorted([*CHUNKS, LIB, "top.lua"])
    assert old[-1] == "top.lua"


def test_the_lookup_fast_path_returns_before_the_chunks() -> None:
    parts = Script.from_files("top7d_read.lua").parts
    assert [part.file for part in parts] == [
        "top7d_read.lua",
        "_basics.lua",
        "_counters.lua",
        "_window.lua",
        "top7d_read.lua",
    ]
    fast = read_resource("genderd.lua", "top7d_read.lua").split("\n")[: parts[0].count]
    assert fast[-1].startswith("-- uses here")
    assert "  return stored  -- the wanted fields, as stored" in fast
    fast_locals = set(re.findall(r"^local ([\w, ]+?)\s*=", "\n".join(fast), re.M))
    names = {n.strip() for group in fast_locals for n in group.split(",")}
    assert names >= {"result", "stored", "n", "stored_w"}
    for chunk in ("_basics.lua", "_counters.lua", "_window.lua"):
        assert not names & DEFINED_BY[chunk]  # no chunk shadows what the rest reads


def test_a_plug_in_package_gets_its_own_files_and_genderd_s_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "mylua"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mine.lua").write_text(
        "-- a plug-in model's apply script\n"
        "-- uses: _frame.lua helpers.lua\n"
        "return apply_batch({})\n"
    )
    (package / "helpers.lua").write_text("-- uses: _counters.lua\nlocal x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    files = [part.file for part in Script.from_files("mine.lua", package="mylua").parts]
    assert files == [
        "_basics.lua",
        "_expiry.lua",
        "_grades.lua",
        "_frame.lua",
        "_counters.lua",
        "helpers.lua",
        "mine.lua",
    ]

    class Mine(Model):
        name = "mine"
        description = "a plug-in model written the older way"
        apply_files = (LIB, "mine.lua")  # LIB: genderd's chunks, not mylua's
        script_package = "mylua"

        def client_keys(
            self, shard: int, cid: str, events: Sequence[Event], now_ms: int
        ) -> list[str]:
            return [self.keys.result(shard, cid)]

    model = Mine(Settings(), Keys("genderd"))
    assert model.apply_script.name == "mine.lua"
    assert model.apply_script.source.endswith("return apply_batch({})\n")
    assert "local function apply_batch(model)" in model.apply_script.source


def read_from(files: dict[str, str]):  # type: ignore[no-untyped-def]
    def read(package: str, name: str) -> str:
        if name not in files:
            raise FileNotFoundError(name)
        return files[name]

    return read


def test_the_loader_refuses_what_it_cannot_glue() -> None:
    with pytest.raises(FileNotFoundError, match=r"a\.lua uses nope\.lua, which is not in pkg"):
        assemble("a.lua", package="pkg", read=read_from({"a.lua": "-- uses: nope.lua\n"}))
    cycle = {"a.lua": "-- uses: b.lua\n", "b.lua": "-- uses: a.lua\n"}
    with pytest.raises(ValueError, match=r"cycle: a\.lua -> b\.lua -> a\.lua"):
        assemble("a.lua", read=read_from(cycle))
    late = {"a.lua": "-- header\nlocal x = 1\n-- uses: b.lua\n"}
    with pytest.raises(ValueError, match=r"a\.lua:3: .* belongs in the header"):
        assemble("a.lua", read=read_from(late))


def test_an_error_is_located_only_where_it_names_a_line() -> None:
    script = Script("one.lua", "return 1\nerror('x')\n")
    assert script.where(2) == "one.lua:2"
    error = RuntimeError("user_script:2: x script: abc, on @user_script:2.")
    located = script.locate(error)
    assert type(located) is RuntimeError
    assert str(located) == "one.lua:2: x script: abc, on @one.lua:2."
    other = RuntimeError("WRONGTYPE Operation against a key holding the wrong kind of value")
    assert script.locate(other) is other

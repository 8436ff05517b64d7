"""Plug-ins load anywhere (issue 19): a package outside genderd, installed nowhere, holding a
Python model and a Lua-backed model with its own Lua file, runs through `genderd worker`
processes, the API and `genderd replay`; a folder named `genderd` in the working directory
shadows nothing; every plug-in problem is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from genderd.api import create_app
from genderd.keys import Keys
from genderd.settings import Settings

from .support.api_helpers import ApiClient
from .support.runtime import Loop
from .test_e2e_worker import plan_events, stop_process, worker_env, worker_log, write

pytestmark = pytest.mark.fault

PLUGINS = "mypkg.models:Mine,mypkg.models:Odd"
EVENTS = 400
CATCH_UP_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 60.0

MODELS = """
from genderd.models import Model, PythonModel
from genderd.keys import result_field


class Odd(PythonModel):
    name = "odd"
    description = "female after an odd number of page views"

    def identify_gender(self, state, event):
        state["n"] = state.get("n", 0) + 1
        return "female" if state["n"] % 2 else "male"


class Mine(Model):
    name = "mine"
    description = "the gender of the client's earliest event (least ts, then entry id)"
    script_package = "mypkg"
    apply_files = ("mine.lua",)

    def client_keys(self, shard, cid, events, now_ms):
        return [self.keys.result(shard, cid)]

    def result_fields(self):
        return [*super().result_fields(), result_field(self.name, "id")]


class Broken(Mine):
    name = "broken"
    apply_files = ("broken.lua",)


class Missing(Mine):
    name = "missing"
    apply_files = ("absent.lua",)
"""

MINE_LUA = """\
-- Model `mine` (a plug-in's): the gender of the client's earliest event (least ts, entry id).
-- per client (one key): KEYS[k] = result hash   <prefix>:{sN}:r:<cid>
-- no parameters
-- uses: _basics.lua _expiry.lua _frame.lua

local function earlier(ts_a, id_a, ts_b, id_b)
  if ts_a ~= ts_b then return greater(ts_b, ts_a) end
  return id_after(id_b, id_a)
end

local group, now = ARGV[1], ARGV[2]
local ts_field, id_field, at_field = group .. ':ts', group .. ':id', group .. ':at'

return apply_batch({
  nkeys = 1,
  nparams = 0,
  read = function(k)
    local have = read_hash('HMGET', KEYS[k], ts_field, id_field, EXPIRES)
    if have == nil then return false end
    return have, have[3]
  end,
  apply = function(k, have, acked, m, expiry)
    local best = nil
    for j = 1, m do
      local i = acked[j]
      if best == nil or earlier(ARGV[i + 2], ARGV[i], ARGV[best + 2], ARGV[best]) then
        best = i
      end
    end
    if have[1] and not earlier(ARGV[best + 2], ARGV[best], have[1], have[2]) then
      return true, false
    end
    redis.call('HSET', KEYS[k], group, ARGV[best + 1], ts_field, ARGV[best + 2],
      id_field, ARGV[best], at_field, now)
    return true, true
  end,
})
"""
BROKEN_LINE = 7  # the line of broken.lua that fails when a batch is applied
BROKEN_LUA = """\
-- A plug-in's model whose apply fails (its error must name this file and line).
-- uses: _basics.lua _expiry.lua _frame.lua
return apply_batch({
  nkeys = 1,
  nparams = 0,
  read = function(k) return {}, nil end,
  apply = function(k, have, acked, m, expiry) return nil + m end,
})
"""


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A directory holding the package ``mypkg`` (not installed): models and Lua files."""
    home = tmp_path / "project"
    (home / "mypkg").mkdir(parents=True)
    (home / "mypkg" / "__init__.py").write_text("")
    (home / "mypkg" / "models.py").write_text(MODELS)
    (home / "mypkg" / "mine.lua").write_text(MINE_LUA)
    (home / "mypkg" / "broken.lua").write_text(BROKEN_LUA)
    return home


def genderd(
    cwd: Path, url: str, *args: str, plugins: str = PLUGINS
) -> subprocess.CompletedProcess[str]:
    """``python -m genderd <args>`` run in ``cwd``, told about the plug-ins."""
    return subprocess.run(
        [sys.executable, "-m", "genderd", *args],
        env=worker_env(url, GENDERD_PLUGINS=plugins, GENDERD_GENDERS="female,male"),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _worker(cwd: Path, url: str, model: str) -> subprocess.Popen[bytes]:
    with (cwd / f"worker-{model}-0.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "genderd", "worker", "--model", model],
            env=worker_env(url, GENDERD_PLUGINS=PLUGINS, GENDERD_GENDERS="female,male"),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _applied(client: redis.Redis, keys: Keys, shards: int, model: str) -> int:
    return sum(int(client.hget(keys.stats(s), f"{model}:applied") or 0) for s in range(shards))


def _expected(plan: Sequence[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Each model's answer per client: `mine` the first gender written (events carry their
    arrival time, so stream order is event order), `odd` by the parity of the count."""
    first: dict[str, str] = {}
    for cid, gender in plan:
        first.setdefault(cid, gender)
    counts = Counter(cid for cid, _ in plan)
    return {
        cid: {"mine": first[cid], "odd": "female" if counts[cid] % 2 else "male"} for cid in counts
    }


def test_a_package_outside_genderd_runs_through_workers_api_and_replay(
    settings: Settings, package: Path, aio: Loop, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = settings.redis_url or ""
    settings = settings.model_copy(update={"genders": ("female", "male")})
    plan = plan_events(EVENTS, 40, seed=19)
    expected = _expected(plan)
    keys = Keys(settings.prefix)
    client = redis.Redis.from_url(url)
    with ExitStack() as stack:
        stack.callback(client.close)
        for model in ("mine", "odd"):
            process = _worker(package, url, model)
            stack.callback(stop_process, process)
        write(settings, plan)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while any(_applied(client, keys, settings.shards, m) < EVENTS for m in ("mine", "odd")):
            assert time.monotonic() < deadline, [
                worker_log(package, m, "0") for m in ("mine", "odd")
            ]
            time.sleep(0.1)

    # the API, loading the same plug-ins from the same directory
    monkeypatch.chdir(package)
    monkeypatch.setattr(sys, "path", list(sys.path))
    api = ApiClient(
        create_app(settings.model_copy(update={"plugins": tuple(PLUGINS.split(","))})), aio.loop
    )
    try:
        for cid, answers in expected.items():
            for model, gender in answers.items():
                response = api.get(f"/v1/clients/{cid}/gender?model={model}")
                assert response.status_code == 200, (cid, model, response.text)
                assert response.json()["gender"] == gender, (cid, model)
    finally:
        api.close()

    # replay rebuilds each model from the streams (workers stopped): the same answers
    for model in ("mine", "odd"):
        replayed = genderd(package, url, "replay", "--model", model)
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed: {EVENTS} applied" in replayed.stdout + replayed.stderr
    for cid in list(expected)[:5]:
        found = genderd(package, url, "lookup", cid, "--json")
        assert found.returncode == 0, found.stderr
        models = json.loads(found.stdout)["models"]
        assert {m: models[m]["gender"] for m in ("mine", "odd")} == expected[cid], cid


def test_a_lua_error_in_a_plugins_file_names_that_file_and_line(
    settings: Settings, package: Path
) -> None:
    url = settings.redis_url or ""
    write(settings.model_copy(update={"genders": ("female", "male")}), [("C1", "male")])
    plugins = "mypkg.models:Broken"
    replayed = genderd(package, url, "replay", "--model", "broken", plugins=plugins)
    said = replayed.stdout + replayed.stderr
    assert f"broken.lua:{BROKEN_LINE}: attempt to perform arithmetic" in said, said


@pytest.mark.parametrize("stray", ["genderd", "genderd/lua"])
def test_a_folder_named_genderd_in_the_working_directory_shadows_nothing(
    settings: Settings, package: Path, stray: str
) -> None:
    """A clone of the repository (a namespace package there) or a stray `genderd/lua/`: the
    commands still use the installed genderd, and still find the plug-in beside them."""
    (package / stray).mkdir(parents=True)
    url = settings.redis_url or ""
    status = genderd(package, url, "status", "--json")
    assert status.returncode in (0, 1), status.stderr  # 1: stalled (no workers here)
    assert {"mine", "odd"} <= {row["model"] for row in json.loads(status.stdout)}
    write(settings.model_copy(update={"genders": ("female", "male")}), [("C7", "female")])
    replayed = genderd(package, url, "replay", "--model", "mine")
    assert replayed.returncode == 0, replayed.stderr


@pytest.mark.parametrize(
    ("source", "plugins", "message"),
    [
        ("raise KeyboardInterrupt\n", "bad:X", "cannot import 'bad': KeyboardInterrupt"),
        ("import sys\nsys.exit(3)\n", "bad:X", "cannot import 'bad': SystemExit: 3"),
        ("raise RuntimeError('no')\n", "bad:X", "cannot import 'bad': RuntimeError: no"),
        ("", "bad:X", "'bad' has no 'X'"),
        ("", "mypkg.models:Missing", "package 'mypkg'"),
        ("", "genderd.nowhere:X", "cannot import 'genderd.nowhere'"),
    ],
)
def test_every_plugin_problem_is_one_line_and_exit_2(
    settings: Settings, package: Path, source: str, plugins: str, message: str
) -> None:
    (package / "bad.py").write_text(source)
    (package / "genderd").mkdir()  # a genderd/ here must not be searched for genderd.nowhere
    done = genderd(package, settings.redis_url or "", "status", plugins=plugins)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1, done.stderr
    assert message in done.stderr, done.stderr
    if "Missing" in plugins:
        assert "absent.lua" in done.stderr, done.stderr

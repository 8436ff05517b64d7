"""`genderd evaluate`: its inputs, options, errors and outputs (SPEC §11).

Reading a file needs no Redis (the URL below points at nothing); reading the deployment's
streams writes nothing. Rendering is checked on a hand-made report
(tests/support/evalreports.py), the command end to end on a small history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner, Result

from genderd.cli import main
from genderd.cli.evaluate import INSTANT
from genderd.deployment import open_deployment_sync
from genderd.errors import ConfigurationError
from genderd.evaluation import render
from genderd.keys import Keys
from genderd.lines import MAX_LINE_BYTES, TOO_LONG
from genderd.settings import Settings

from .support.commands import wait_until
from .support.evalreports import sample_report
from .support.factories import make_producer

NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens there: a file needs no Redis
DAY1 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY2 = DAY1 + 86_400_000
PLUGIN = "tests.support.evalplugins:LuaOnly"
DEV_ZERO_READ_BYTES = 256 << 20  # evaluate reads this much of /dev/zero, then is measured
DEV_ZERO_PEAK_BYTES = 200 << 20  # a Python process with numpy: well under this


def evaluate(*args: str, stdin: str | None = None, **env: str) -> Result:
    environment = {"GENDERD_REDIS_URL": NOWHERE, "GENDERD_GENDERS": "female,male,kids", **env}
    return CliRunner().invoke(
        main, ["evaluate", *args], env=environment, input=stdin, catch_exceptions=False
    )


def history() -> list[dict[str, Any]]:
    """30 clients over two days: most stay in one department, some switch."""
    events = []
    for n in range(30):
        home = ("female", "male", "kids")[n % 3]
        for k in range(6):
            gender = home if (n + k) % 5 else ("male" if home == "female" else "female")
            day = DAY1 if k < 3 else DAY2
            events.append({"cid": f"C{n}", "gender": gender, "ts": day + 60_000 * (10 * n + k)})
    return events


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in history()]
    lines += ["not json", '{"cid": "C1", "gender": "robot", "ts": 1}']
    path.write_text("\n".join(lines) + "\n")
    return path


# -- option parsing and rendering: pure ----------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "ms"),
    [
        ("1704067200000", DAY1),
        ("2024-01-01", DAY1),
        ("2024-01-01T01:00:00", DAY1 + 3_600_000),
        ("2024-01-01T01:00:00Z", DAY1 + 3_600_000),
        ("2024-01-01T01:00:00+01:00", DAY1),
    ],
)
def test_times_are_ms_or_iso_in_utc(given: str, ms: int) -> None:
    assert INSTANT.convert(given, None, None) == ms


def test_a_bad_time_is_a_usage_error(events_file: Path) -> None:
    with pytest.raises(click.BadParameter, match="neither milliseconds"):
        INSTANT.convert("yesterday", None, None)
    result = evaluate(
        "--events", str(events_file), "--since", "2024-01-02", "--until", "2024-01-01"
    )
    assert result.exit_code == 2
    assert "--since must be before --until" in result.output


def test_the_table_shows_scores_history_labels_and_a_footer() -> None:
    text = render.table(sample_report())
    lines = text.splitlines()
    assert lines[0].split() == [
        "model", "events", "coverage", "accuracy", "[95%", "CI]",
        "accuracy_all", "[95%", "CI]", "log-loss", "vs", "best", "[95%", "CI]",
    ]  # fmt: skip
    assert lines[1].startswith("majority") and lines[1].endswith("-12.5 pts [-20.0, -5.0]  *")
    assert lines[2].endswith("-1.0 pts [-3.0, +1.0]")
    assert lines[3].endswith("0.457  best") and "67.5% [62.5, 72.5]" in lines[3]
    assert lines[4].startswith("vs best: difference from top") and "3 pairs of rows" in text
    assert lines[5] == (
        "* significantly behind top after adjustment for the 3 pairs compared (Holm, p < 0.05)"
    )
    assert "fragile" not in text
    assert "earlier events                   0                   1" in text
    assert "events                         100                  90" in text
    assert "top             67.5% [62.5, 72.5]  66.5% [61.5, 71.5]" in text
    assert "77.8% [45.3, 93.7]" in text  # known labels: Wilson's interval
    assert "2 without events, not scored" in text
    assert "female                   5     0     1" in text  # confusion: female, male, none
    assert lines[-1] == (
        "400 events of 30 clients, 2024-01-01 00:00 to 2024-01-02 00:00 UTC; "
        "invalid: 3 (bad_ts 2, malformed 1); not evaluated: luaonly"
    )


def test_json_is_the_report_as_a_dict() -> None:
    report = sample_report(labels=False)
    assert json.loads(render.to_json(report)) == json.loads(json.dumps(report.to_dict()))


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "accuracy.png"
    render.plot(sample_report(), path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_the_plot_without_matplotlib_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'genderd\[plot\]'"):
        render.plot(sample_report(), tmp_path / "x.png")


# -- errors before any evaluation ----------------------------------------------------------------
def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = evaluate("--events", str(tmp_path / "nope.jsonl"))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory"
    ]


def test_nothing_valid_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("C1,robot\nC 2,female\n\n")
    result = evaluate("--events", str(path))
    assert result.exit_code == 2
    assert "no valid events: 2 read, 2 invalid (bad_cid 1, unknown_gender 1)" in result.output


def test_an_unknown_model_is_one_line(events_file: Path) -> None:
    result = evaluate("--events", str(events_file), "--models", "top,nope")
    assert result.exit_code == 2
    assert "nope" in result.output and "Traceback" not in result.output


def test_a_named_model_that_cannot_be_evaluated_is_one_line(events_file: Path) -> None:
    result = evaluate("--events", str(events_file), "--models", "luaonly", GENDERD_PLUGINS=PLUGIN)
    assert result.exit_code == 2
    assert "luaonly" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_bad_label_line_is_one_line(events_file: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("cid,gender\nC1,female\nC2,robot\n")
    result = evaluate("--events", str(events_file), "--labels", str(labels))
    assert result.exit_code == 2
    assert "labels.csv: line 3: gender 'robot'" in result.output


def test_labelled_clients_without_events_are_an_error(events_file: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("C1,female\nX1,male\nX2,male\nX3,kids\nX4,kids\n")
    result = evaluate("--events", str(events_file), "--labels", str(labels))
    assert result.exit_code == 2
    assert (
        "4 labelled clients have no events in the history ('X1', 'X2', 'X3', ...); "
        "--skip-unknown-labels scores the others"
    ) in result.output


# -- the whole command (needs genderd.evaluation.prequential.evaluate) ---------------------------
def test_a_file_gives_a_table_with_no_redis(events_file: Path) -> None:
    result = evaluate("--events", str(events_file), "--models", "last,top")
    assert result.exit_code == 0, result.output
    rows = [line.split()[0] for line in result.stdout.splitlines()[1:4]]
    assert rows == ["majority", "last", "top"]
    assert "accuracy_all [95% CI] by history length" in result.stdout
    assert "180 events of 30 clients" in result.stdout
    assert "invalid: 2 (malformed 1, unknown_gender 1)" in result.stdout


def test_json_fields(events_file: Path) -> None:
    result = evaluate("--events", str(events_file), "--json", "--session-gap", "30")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {
        "events", "clients", "first_ts", "last_ts", "session_gap_ms", "models", "best",
        "refused", "labels", "labels_unknown", "events_invalid", "invalid_reasons",
    } <= set(report)  # fmt: skip
    assert (report["events"], report["clients"]) == (180, 30)
    assert report["session_gap_ms"] == 30 * 60_000
    assert (report["events_invalid"], report["invalid_reasons"]) == (
        2,
        {"malformed": 1, "unknown_gender": 1},
    )
    names = [m["model"] for m in report["models"]]
    assert names == ["majority", "last", "recency", "top", "top7d"]
    for model in report["models"]:
        assert [b["history"] for b in model["by_history"]] == ["0", "1", "2-4", "5-19", "20+"]
        assert {"coverage", "accuracy", "accuracy_all_interval", "log_loss", "versus_best"} <= set(
            model
        )
    assert report["best"] in names[1:]
    assert report["labels"] is None and report["labels_unknown"] == 0


def test_stdin_csv_and_the_time_window(events_file: Path) -> None:
    csv = "\n".join(f"{e['cid']},{e['gender']},{e['ts']}" for e in history())
    result = evaluate("--events", "-", "--json", "--since", "2024-01-02", stdin=csv)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["events"] == 90 and report["first_ts"] >= DAY2
    result = evaluate("--events", str(events_file), "--json", "--until", str(DAY2))
    assert json.loads(result.stdout)["last_ts"] < DAY2


def test_by_default_a_model_that_cannot_be_evaluated_is_skipped_with_a_note(
    events_file: Path,
) -> None:
    result = evaluate("--events", str(events_file), "--json", GENDERD_PLUGINS=PLUGIN)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert "luaonly" in report["refused"]
    assert "luaonly" not in [m["model"] for m in report["models"]]
    assert "note: luaonly is not evaluated" in result.stderr


def test_labels_with_and_without_unknown_clients(events_file: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"cid": "C0", "gender": "female"}\n{"cid": "C1", "gender": "male"}\n')
    result = evaluate("--events", str(events_file), "--labels", str(labels), "--json")
    assert result.exit_code == 0, result.output
    scores = {s["model"]: s for s in json.loads(result.stdout)["labels"]}
    assert scores["top"]["clients"] == 2
    labels.write_text('{"cid": "C0", "gender": "female"}\n{"cid": "X9", "gender": "male"}\n')
    skipped = evaluate(
        "--events", str(events_file), "--labels", str(labels), "--skip-unknown-labels", "--json"
    )
    assert skipped.exit_code == 0, skipped.output
    report = json.loads(skipped.stdout)
    assert report["labels_unknown"] == 1
    assert {s["model"]: s["clients"] for s in report["labels"]}["top"] == 1
    assert (
        "known labels"
        in evaluate(
            "--events", str(events_file), "--labels", str(labels), "--skip-unknown-labels"
        ).stdout
    )


def test_plot_writes_a_png(events_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "accuracy.png"
    result = evaluate("--events", str(events_file), "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes().startswith(b"\x89PNG")


def _state(client: redis.Redis) -> tuple[int, dict[bytes, Any]]:
    """DBSIZE and every key with its type, length and groups."""
    keys: dict[bytes, Any] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        stream = kind == b"stream"
        keys[key] = (
            kind,
            client.xlen(key) if stream else None,
            client.xinfo_groups(key) if stream else None,
        )
    return int(client.dbsize()), keys  # type: ignore[arg-type]


def test_the_streams_are_evaluated_read_only(
    settings: Settings, sync_redis: redis.Redis, redis_url: str
) -> None:
    open_deployment_sync(sync_redis, settings)  # an initialised deployment, as in production
    with make_producer(sync_redis, settings) as producer:
        for event in history():
            producer.send(event["cid"], event["gender"], ts=event["ts"])
    sync_redis.xadd(Keys(settings.prefix).stream(0), {"cid": "C1", "gender": "robot"})
    before = _state(sync_redis)
    env = {"GENDERD_REDIS_URL": redis_url, "GENDERD_SHARDS": "4"}
    result = evaluate("--json", "--models", "top,last", **env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["events"] == 180 and report["invalid_reasons"] == {"unknown_gender": 1}
    window = evaluate("--json", "--since", str(DAY1), "--until", "2024-01-02", **env)
    assert json.loads(window.stdout)["events"] == 90
    assert _state(sync_redis) == before


@pytest.mark.parametrize("gap", ["inf", "nan", "-inf"])
def test_a_session_gap_that_is_not_a_finite_number_is_a_usage_error(
    events_file: Path, gap: str
) -> None:
    result = evaluate("--events", str(events_file), "--session-gap", gap)
    assert result.exit_code == 2
    assert "Invalid value for '--session-gap'" in result.output
    assert "Traceback" not in result.output


def run_evaluate(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """`genderd evaluate ARGS` in a process of its own, reading ``stdin`` from a real pipe."""
    environment = {**os.environ, "GENDERD_REDIS_URL": NOWHERE, "GENDERD_GENDERS": "female,male"}
    return subprocess.run(
        [sys.executable, "-m", "genderd", "evaluate", *args],
        input=stdin,
        capture_output=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_a_byte_order_mark_on_stdin_is_not_part_of_the_first_line(tmp_path: Path) -> None:
    """As in a file: a CSV header after a BOM is a header, a first event after it an event."""
    bom = b"\xef\xbb\xbf"
    events = b"C1,female,5\nC1,female,6\nC2,male,7\n"
    for given in (b"cid,gender,ts\n" + events, events):
        read = run_evaluate("--events", "-", "--json", stdin=bom + given)
        assert read.returncode == 0, read.stderr.decode()
        report = json.loads(read.stdout)
        assert (report["events"], report["invalid_reasons"]) == (3, {})
    path = tmp_path / "events.csv"
    path.write_bytes(events)
    labels = run_evaluate(
        "--events", str(path), "--labels", "-", "--json", stdin=bom + b"cid,gender\nC1,female\n"
    )
    assert labels.returncode == 0, labels.stderr.decode()
    assert all(row["clients"] == 1 for row in json.loads(labels.stdout)["labels"])


def test_an_over_long_line_is_malformed_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    long_line = '{"cid": "C1", "gender": "female", "page": "' + "x" * MAX_LINE_BYTES + '"}'
    path.write_text("\n".join([json.dumps(e) for e in history()] + [long_line]) + "\n")
    result = evaluate("--events", str(path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["events"] == 180 and report["invalid_reasons"] == {TOO_LONG: 1}


def proc_field(pid: int, name: str, field: str) -> int:
    """A number of ``/proc/<pid>/<name>`` (``status``: in kB, as bytes)."""
    for row in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if row.startswith(f"{field}:"):
            return int(row.split()[1]) * (1024 if name == "status" else 1)
    raise AssertionError(f"no {field} in /proc/{pid}/{name}")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="reads /proc")
def test_dev_zero_is_read_in_bounded_memory() -> None:
    """One endless line: skipped as read, never held. Once the process has read 256 MiB of
    /dev/zero (rchar), its peak resident memory (VmHWM: since it started its program, not
    counting the parent it was forked from) is what it imports, not what it read."""
    environment = {**os.environ, "GENDERD_REDIS_URL": NOWHERE}
    process = subprocess.Popen(
        [sys.executable, "-m", "genderd", "evaluate", "--events", "/dev/zero"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or proc_field(process.pid, "io", "rchar") >= DEV_ZERO_READ_BYTES
            ),
            "evaluate to read 256 MiB of /dev/zero",
            timeout_s=120,
        )
        assert process.poll() is None, "evaluate ended on an endless input"
        peak = proc_field(process.pid, "status", "VmHWM")
    finally:
        process.kill()
        process.wait()
    assert peak < DEV_ZERO_PEAK_BYTES, peak

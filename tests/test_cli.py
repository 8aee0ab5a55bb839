"""The command line: --help everywhere, and domain errors as one line with exit code 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.waiting import wait_until
from typer.testing import CliRunner

from hopscope import __version__
from hopscope.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

COMMANDS = [
    [], ["demo"], ["dashboard"], ["collect"], ["version"], ["incidents"], ["explain"], ["report"],
    ["slo"], ["slo", "check"], ["slo", "status"], ["slo", "import"], ["slo", "export"], ["slo", "backtest"],
    ["slo", "correct"], ["slo", "corrections"],
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "hopscope")
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.output.strip() == f"hopscope {__version__}"


@pytest.mark.parametrize(
    "argv",
    [
        ["dashboard", "--store", "/nonexistent/store"],
        ["slo", "status", "--store", "/nonexistent/store"],
        ["incidents", "--store", "/nonexistent/store"],
    ],
    ids=["dashboard", "slo-status", "incidents"],
)
def test_a_missing_store_is_one_line_on_stderr_and_exit_code_2(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", *argv], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hopscope: error:"), proc.stderr
    assert "/nonexistent/store" in lines[0]
    assert "Traceback" not in proc.stderr


def test_a_bad_config_value_is_named_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "hopscope.toml").write_text("[dashboard]\nport = 'eighty'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", "dashboard"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "dashboard.port: 'eighty'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_reading_commands_follow_the_config_file(demo_store: Path, tmp_path: Path) -> None:
    (tmp_path / "hopscope.toml").write_text(
        f'[store]\npath = "{demo_store}"\n[slo]\nrules = "{ROOT / "slo_rules"}"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", "incidents", "--since", "30d", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert {i["slo"] for i in json.loads(proc.stdout)} >= {"recommend-latency"}


def test_no_rules_is_an_error_not_an_empty_list(demo_store: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", "incidents", "--store", str(demo_store)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.strip() == (
        "hopscope: error: slo_rules: no SLO rules here; pass --rules or set [slo] rules in hopscope.toml"
    )


def _hopscope(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    return subprocess.run(
        [sys.executable, "-m", "hopscope.cli", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--slo", "recommend-latency", "--format", "md", "-o", "{tmp}/missing/r.md"], "cannot write: No such file"),
        (["slo", "import", "{sloth}", "-o", "{tmp}"], "cannot write: Is a directory"),
        (["incidents", "--config", "{tmp}"], "cannot read the config file: Is a directory"),
        (["slo", "backtest", "--truth", "{tmp}"], "cannot read the ground truth: Is a directory"),
        (["incidents", "--store", "{tmp}/empty"], "not a hopscope store catalog (no DuckLake tables); nothing was changed"),
        (["slo", "status", "--store", "{tmp}/garbage"], "not a hopscope store catalog (file is not a database)"),
    ],
    ids=["report-into-missing-folder", "import-onto-a-folder", "config-is-a-folder", "truth-is-a-folder",
         "empty-catalog", "corrupt-catalog"],
)  # fmt: skip
def test_bad_paths_are_one_line_and_exit_2_and_change_nothing(
    demo_store: Path, tmp_path: Path, argv: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "catalog.sqlite").write_bytes(b"")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "catalog.sqlite").write_bytes(b"not sqlite " * 20)
    sloth = ROOT.parent / "shared" / "conformance" / "sloth" / "examples" / "getting-started.yml"
    args = [a.format(tmp=tmp_path, sloth=sloth) for a in argv]
    if "--store" not in args and argv[0] != "slo" or argv[:2] == ["slo", "backtest"]:
        args += ["--store", str(demo_store)]
    args += (
        ["--rules", str(ROOT / "slo_rules")] if argv[0] != "slo" or argv[1] in ("status", "backtest") else []
    )
    before = sorted(p.name for p in (tmp_path / "empty").iterdir())
    proc = _hopscope(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hopscope: error:") and message in lines[0], proc.stderr
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == before  # a reader created nothing


def test_a_huge_since_is_cut_to_the_stored_data(demo_store: Path) -> None:
    args = ["incidents", "--json", "--store", str(demo_store), "--rules", str(ROOT / "slo_rules")]
    huge, month = _hopscope(*args, "--since", "99999d"), _hopscope(*args, "--since", "30d")
    assert huge.returncode == 0, huge.stderr
    assert json.loads(huge.stdout) == json.loads(month.stdout) != []


def test_a_negative_min_events_guard_is_refused(demo_store: Path) -> None:
    proc = _hopscope(
        "slo",
        "backtest",
        "--store",
        str(demo_store),
        "--rules",
        str(ROOT / "slo_rules"),
        "--min-events",
        "-5",
    )
    assert proc.returncode == 2 and "--min-events" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["incidents", "--bogus"], "hopscope incidents: No such option: --bogus"),
        (["report"], "hopscope report: Missing option '--slo'"),
        (["explain"], "hopscope explain: Missing argument 'incident_id'"),
        (["incidents", "--json", "yes"], "hopscope incidents: Got unexpected extra argument(s) (yes)"),
    ],
    ids=["unknown-option", "missing-option", "missing-argument", "extra-argument"],
)
def test_a_bad_command_line_is_one_line_and_exit_2_not_a_box(argv: list[str], message: str) -> None:
    proc = _hopscope(*argv)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hopscope: error: {message}"), proc.stderr
    assert "╭" not in proc.stderr and "Traceback" not in proc.stderr


def test_help_and_no_arguments_still_show_the_usage() -> None:
    assert _hopscope("--help").returncode == 0
    bare = _hopscope()
    assert bare.returncode == 2 and "Usage: hopscope" in bare.stdout


def test_after_make_demo_the_dashboard_finds_the_demo_store_as_incidents_does(
    demo_store: Path, tmp_path: Path
) -> None:
    # `make demo` leaves var/demo and no hopscope.toml: `incidents` read it while `dashboard` said
    # "no store here" (it looked only at [store] path, var/hopscope). One rule now serves both.
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "demo").symlink_to(demo_store)
    (tmp_path / "slo_rules").symlink_to(ROOT / "slo_rules")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    env["PYTHONPATH"] = str(ROOT)
    found = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", "incidents"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert found.returncode == 0, found.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = tmp_path / "dashboard.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hopscope.cli", "dashboard", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_until(
            lambda: proc.poll() is not None or b"store: var/demo" in log.read_bytes(), 60, "the start line"
        )
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert "no store here" not in log.read_text()


def test_sigterm_to_hopscope_dashboard_stops_the_server_and_frees_its_port(demo_store: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "hopscope.cli", "dashboard", "--store", str(demo_store), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    finally:
        proc.kill()
    with socket.socket() as s:  # nothing left listening: a child that outlived its parent kept the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, never past a listener
        s.bind(("127.0.0.1", port))
        s.listen()

"""The daemon's status file and what the Collectors page makes of it (pure: no daemon here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hopscope.health import STATUS_FILE, DaemonStatus, read_status, write_health, write_status

NOW = 1_800_000_000.0
WELL = DaemonStatus(
    pid=1, host="h", started_unix=NOW - 60, updated_unix=NOW - 1, last_commit_unix=NOW - 2, failing_for_s=0.0,
    last_error=None, last_error_cause=None, reconnects=0, writer_queue=0, span_queue=0, buffered_records=0,
    spans_received=10, spans_refused=0, rollup_last_success_unix=NOW - 5, maintenance_pending=False,
    longest_slice_s=0.3,
)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "level", "headline"),
    [
        ({}, "ok", "Writes are taken: last commit 2 s ago"),
        ({"maintenance_pending": True}, "warning", "maintenance ran out of its interval"),
        ({"failing_for_s": 40.0, "last_error_cause": "locked"}, "error", "refuses writes (locked) for 40 s"),
        ({"failing_for_s": 40.0}, "error", "(see the daemon's log)"),
        ({"busy_for_s": 20.0}, "error", "inside one write for 20 s"),
        ({"updated_unix": NOW - 120}, "error", "last reported 2 min ago: stopped?"),
    ],
)
def test_write_health_names_the_worst_condition_first(change: dict, level: str, headline: str) -> None:
    health = write_health(dataclasses.replace(WELL, **change), now=NOW)
    assert health is not None and health.level == level and headline in health.headline


def test_the_status_file_round_trips_and_a_missing_or_foreign_file_is_no_status(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None and write_health(None) is None
    write_status(tmp_path, WELL)
    assert read_status(tmp_path) == WELL
    (tmp_path / STATUS_FILE).write_text('{"pid": 1}')  # another version's file, missing fields
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).write_text("not json")
    assert read_status(tmp_path) is None

"""The collector daemon's health, as a small JSON file beside the store (`collector-status.json`).

The daemon rewrites it every few seconds; the dashboard's Collectors page and `hopscope` readers
read it. A file, not a table: it must tell that the store refuses writes, when the store is what
refuses them (a locked catalog still lets a file be replaced; a full disk may not, which the file's
age then says).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

STATUS_FILE = "collector-status.json"


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    pid: int
    host: str
    started_unix: float
    updated_unix: float
    last_commit_unix: float | None  # the store's last successful write
    failing_for_s: float  # how long writes have been failing (0: they succeed)
    last_error: str | None
    last_error_cause: str | None  # "disk full", "read-only", "locked" or None
    reconnects: int
    writer_queue: int  # writes waiting for the writer
    span_queue: int  # spans waiting for a group commit
    buffered_records: int  # samples and collector runs waiting to be written
    spans_received: int
    spans_refused: int
    rollup_last_success_unix: float | None
    maintenance_pending: bool
    longest_slice_s: float
    busy_for_s: float = 0.0  # how long the write now running has held the writer
    alerting: dict[str, Any] | None = None  # AlertEvaluator.delivery_status(); None: no alerting

    @property
    def refusing(self) -> bool:
        return self.failing_for_s > 0

    def age_s(self, now: float | None = None) -> float:
        return (now or time.time()) - self.updated_unix


def write_status(store_path: str | Path, status: DaemonStatus) -> None:
    """Replace the status file atomically (a reader never sees half of it)."""
    target = Path(store_path) / STATUS_FILE
    tmp = target.with_name(f".{STATUS_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, target)


def read_status(store_path: str | Path) -> DaemonStatus | None:
    """The last status a daemon wrote for this store; None where there is none or it cannot be read."""
    try:
        raw: Any = json.loads((Path(store_path) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    names = {f.name for f in fields(DaemonStatus)}
    try:
        return DaemonStatus(**{k: v for k, v in raw.items() if k in names})
    except TypeError:  # written by another version, missing a field
        return None


# A daemon that has not rewritten its status for this long is taken as stopped (it writes every 2 s).
STALE_AFTER_S = 30.0
# No write holds the writer this long when the store is well (a span commit ~30 ms, a slice < 1 s).
STUCK_AFTER_S = 15.0


@dataclass(frozen=True, slots=True)
class WriteHealth:
    """What the Collectors page says about the daemon's writes: a verdict and the figures behind it."""

    level: str  # "ok", "warning" (falling behind, recovering) or "error" (refusing writes, or stopped)
    headline: str
    figures: tuple[tuple[str, str], ...]


def write_health(status: DaemonStatus | None, now: float | None = None) -> WriteHealth | None:
    """None where no daemon has written a status for this store (a demo store, a copied store)."""
    if status is None:
        return None
    now = now or time.time()
    age = status.age_s(now)
    last = "never" if status.last_commit_unix is None else f"{_ago(now - status.last_commit_unix)} ago"
    figures = (
        ("last commit", last),
        ("queued writes", f"{status.writer_queue:,}"),
        ("spans waiting", f"{status.span_queue:,}"),
        ("records buffered", f"{status.buffered_records:,}"),
        ("spans stored", f"{status.spans_received:,}"),
        ("spans refused", f"{status.spans_refused:,}"),
        ("reconnects", f"{status.reconnects:,}"),
        ("longest maintenance slice", f"{status.longest_slice_s:.2f} s"),
    )
    if age > STALE_AFTER_S:
        return WriteHealth(
            "error",
            f"hopscope collect (pid {status.pid} on {status.host}) last reported {_ago(age)} ago: stopped?",
            figures,
        )
    if status.refusing:
        cause = status.last_error_cause or "see the daemon's log"
        return WriteHealth(
            "error",
            f"The store refuses writes ({cause}) for {_ago(status.failing_for_s)}: spans are answered 503 "
            "and retried by their clients; samples wait in memory",
            figures,
        )
    if status.busy_for_s > STUCK_AFTER_S:
        return WriteHealth(
            "error",
            f"The store's writer has been inside one write for {_ago(status.busy_for_s)}: new writes wait",
            figures,
        )
    if status.maintenance_pending:
        return WriteHealth(
            "warning", "Writes are taken; maintenance ran out of its interval and goes on", figures
        )
    return WriteHealth("ok", f"Writes are taken: last commit {last}", figures)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def alert_health(status: DaemonStatus | None, now: float | None = None) -> WriteHealth | None:
    """What the Collectors page says about alert delivery; None where the daemon evaluates no alerts."""
    if status is None or not status.alerting:
        return None
    a = status.alerting
    now = now or time.time()
    targets = a.get("alertmanagers") or []
    figures: list[tuple[str, str]] = [("alerts firing", f"{int(a.get('firing') or 0):,}")]
    for t in targets:
        last = t.get("last_success_unix")
        figures.append(
            (f"{t['name']}", "never reached" if last is None else f"took alerts {_ago(now - last)} ago")
        )
    if a.get("evaluation_error"):
        return WriteHealth("error", f"SLO evaluation fails: {a['evaluation_error']}", tuple(figures))
    failing = [t for t in targets if t.get("ok") is False]
    if failing:
        t = failing[0]
        return WriteHealth(
            "error",
            f"Alertmanager {t['name']} does not take alerts ({t.get('failures', 0)} failure(s) in a row, "
            f"{t.get('undelivered', 0)} alert(s) waiting; retried with backoff): {t.get('last_error') or ''}",
            tuple(figures),
        )
    if not targets:
        return WriteHealth(
            "ok", "SLOs evaluated (hopscope_slo_* on /metrics); no Alertmanager configured", tuple(figures)
        )
    return WriteHealth("ok", f"Alerts delivered to {len(targets)} Alertmanager(s)", tuple(figures))

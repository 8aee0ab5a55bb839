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

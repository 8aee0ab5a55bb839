"""The newest rows of hop_minutes, read once and queried many times (a live page's tick).

    tail = Tail.read(store, since)        # one DuckLake read: every hop_minutes row from `since` on
    latency_series(tail, w.part(cutoff))  # any hop_minutes view over [start >= since, ...) in memory

A DuckLake read costs ~15-25 ms of catalog work before a row is read, whatever it reads; a live tick
asks for the not-yet-final buckets of several series of the same table (latency, traffic, hops, the
resource panels' hop series). Reading their common tail once and answering each from memory makes
the tick pay one read instead of one per series. Only views that read nothing but ``hop_minutes``
may be given a Tail, and only over windows starting at or after ``since``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from hopscope.model import ReadStore

# Every Tail queries through a cursor of this one in-memory database: opening a database costs ~10 ms
# (a tick makes a new Tail per table per snapshot), a cursor of an open one well under 1 ms.
_DB = duckdb.connect()
_DB_LOCK = threading.Lock()


class Tail:
    """A ReadStore over a table's rows from ``since`` on (hop_minutes by default), held in memory (see
    the module doc)."""

    def __init__(self, rows: pa.Table, since: datetime, name: str = "hop_minutes") -> None:
        self.since = since
        self.rows = rows
        self._lock = threading.Lock()  # one cursor: a DuckDB connection is not for two threads at once
        with _DB_LOCK:
            self._con = _DB.cursor()
        self._con.register(name, rows)  # seen by this cursor only

    @classmethod
    def read(cls, store: ReadStore, since: datetime) -> Tail:
        return cls(store.query("SELECT * FROM hop_minutes WHERE minute >= ?", [since]), since)

    def covers(self, start: datetime) -> bool:
        """Whether a window starting at `start` reads only rows this tail holds."""
        return start >= self.since

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        with self._lock:
            return self._con.execute(sql, params or []).fetch_arrow_table()

    def query_df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self.query(sql, params).to_pandas()

    def close(self) -> None:
        with self._lock:
            self._con.close()

"""The store itself: metrics held, tables and their retention, small state, collector runs, size on disk."""

from __future__ import annotations

import pandas as pd

from hopscope.model import ReadStore
from hopscope.query.windows import Window
from hopscope.store import Store


def sample_metrics(store: ReadStore) -> pd.DataFrame:
    """Every metric in samples with its series count and time range."""
    return store.query_df(
        "SELECT metric, count(DISTINCT coalesce(service, '') || coalesce(host, '')) AS series, count(*) AS rows, "
        "min(ts) AS first, max(ts) AS last FROM samples GROUP BY metric ORDER BY metric"
    )


def collector_runs(store: ReadStore, w: Window) -> pd.DataFrame:
    """Attempts, failures and rows per collector per bucket. Columns: t, collector, attempts, failures, rows."""
    return store.query_df(
        """
        SELECT time_bucket(to_seconds(?::BIGINT), ts) AS t, collector, count(*) AS attempts,
               count(*) FILTER (WHERE NOT ok) AS failures, sum(rows) AS rows
        FROM collector_runs WHERE ts >= ? AND ts < ? GROUP BY 1, 2 ORDER BY 1
        """,
        [w.step_s, w.start, w.end],
    )


def table_stats(store: Store) -> pd.DataFrame:
    """Rows and time range per table, with its retention."""
    rows = []
    for table, col in (
        ("spans", "start_time"),
        ("hop_minutes", "minute"),
        ("samples", "ts"),
        ("collector_runs", "ts"),
    ):
        r = store.query(
            f'SELECT count(*) AS n, min("{col}") AS lo, max("{col}") AS hi FROM "{table}"'
        ).to_pylist()[0]
        keep = store.retention.get(table)
        rows.append(
            {
                "table": table,
                "rows": r["n"],
                "first": r["lo"],
                "last": r["hi"],
                "retention_days": keep.days if keep else None,
            }
        )
    return pd.DataFrame(rows)


def state_rows(store: ReadStore, prefix: str = "") -> pd.DataFrame:
    """Watermarks and other small state (backfill progress), newest first."""
    return store.query_df(
        "SELECT key, value, updated FROM state WHERE starts_with(key, ?) ORDER BY updated DESC", [prefix]
    )


def store_size(store: Store) -> int:
    """Bytes on disk: catalog and data files."""
    return store.size_bytes()

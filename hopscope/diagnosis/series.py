"""The resource series linked to the top hops, read for the diagnosis in ONE scan of ``samples``.

The same answer as ``signals.load_series_grid(store, windows, metrics=..., services=S,
hosts_of=S, probe_targets=names)`` (the same rows, values and order), but where that reads the
table three or four times (the hosts of S; series on those hosts; hostless series of S; probes),
this reads it once: every scan of a DuckLake table costs 12-25 ms of catalog work before it reads
a byte, more than the rows of a few windows cost to decode.

The scan keeps the catalog's metrics in the windows (both filters run inside the scan); the hosts
of S in the first window, and the rows of the scope (a host of S, a series of S, or a probe stored
without a service whose target names one of ``probe_targets``), are picked from it in SQL.
A host found only through a metric outside the catalog is not a host here: no series on it could
be linked to the hop by ``resources.link_series`` (which takes hosts from the series read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from hopscope.catalog import Catalog
from hopscope.signals import (
    _KEY_SQL,
    META_COLUMNS,
    SeriesGrid,
    Window,
    _bucket_ctes,
    _us,
    grid_from_table,
    n_buckets,
)


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def load_linked_grid(
    store: Any,
    windows: Sequence[Window],
    *,
    step_s: int,
    metrics: Sequence[str],
    services: Sequence[str],
    probe_targets: Sequence[str],
    catalog: Catalog,
) -> SeriesGrid:
    """``values[series, window, bucket]`` of the series of ``services``, of their hosts (in the first
    window) and of the probes naming ``probe_targets``; only series present in the first window."""
    windows = list(windows)
    nb = n_buckets(windows, step_s)
    if not windows or not metrics:
        return SeriesGrid(
            pd.DataFrame(columns=META_COLUMNS), np.zeros((0, len(windows), nb)), tuple(windows), step_s
        )
    p_value: list[Any] = []
    value_sql = "value"
    for m in catalog.metrics.values():
        if m.bad_bits is not None:
            value_sql = f"CASE WHEN metric = ? THEN CAST((CAST(value AS BIGINT) & {int(m.bad_bits)}) <> 0 AS DOUBLE) ELSE {value_sql} END"
            p_value.insert(0, m.name)
    counters = [m for m in catalog.counters() if m in metrics]
    probes = [m for m in catalog if m.startswith("probe_") and m in metrics]
    svc = list(services)
    win_case = " ".join(f"WHEN ts >= ? AND ts < ? THEN {i}" for i in range(len(windows)))
    within = " OR ".join("(ts >= ? AND ts < ?)" for _ in windows)
    bounds = [x for w in windows for x in (w.start, w.end)]
    lo, hi = min(w.start for w in windows), max(w.end for w in windows)
    in_svc = f"service IN ({_marks(len(svc))})" if svc else "false"
    probe_cond = (
        f"(service IS NULL AND metric IN ({_marks(len(probes))}) AND ("
        + " OR ".join("contains(coalesce(labels['target'], ''), ?)" for _ in probe_targets)
        + "))"
        if probes and probe_targets
        else "false"
    )
    sql = f"""
    WITH raw AS MATERIALIZED (
        SELECT ts, metric, service, host, labels, value, CASE {win_case} END AS win
        FROM samples
        WHERE ts >= ? AND ts < ? AND ({within}) AND list_contains(?::VARCHAR[], metric) AND isfinite(value)
    ), hs AS (
        SELECT DISTINCT host FROM raw WHERE win = 0 AND host IS NOT NULL AND {in_svc}
    ), s AS (
        SELECT ts, metric, service, host, labels, hash(metric, service, host, labels) AS sid,
               {value_sql} AS value, win, list_contains(?::VARCHAR[], metric) AS is_counter
        FROM raw WHERE host IN (SELECT host FROM hs) OR {in_svc} OR {probe_cond}
    ), {_bucket_ctes("win = 0")}
    ), per AS (
        SELECT sid, list(win) AS wins, list(b) AS bs, list(value) AS vals
        FROM g0 WHERE value IS NOT NULL AND b >= 0 AND b < ? GROUP BY sid
    )
    SELECT metric, service, host, {_KEY_SQL} AS series, CAST(to_json(labels) AS VARCHAR) AS lab, wins, bs, vals
    FROM per JOIN names USING (sid) ORDER BY series"""
    params: list[Any] = [
        *bounds, lo, hi, *bounds, list(metrics),
        *svc,  # hs
        *p_value, counters, *svc, *(probes if probe_cond != "false" else []),
        *(probe_targets if probe_cond != "false" else []),
        [_us(w.start) for w in windows], step_s * 1_000_000, nb,
    ]  # fmt: skip
    table: pa.Table = store.query(sql, params)
    return grid_from_table(table, windows, step_s, nb)


__all__ = ["load_linked_grid"]

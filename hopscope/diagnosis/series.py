"""The resource series linked to the top hops, read for the diagnosis in ONE scan of ``samples``.

The same answer as ``signals.load_series_grid(store, windows, metrics=..., services=S,
hosts_of=S, probe_targets=names)`` (the same rows, values and order), but where that reads the
table three or four times (the hosts of S; series on those hosts; hostless series of S; probes),
this reads it once: every scan of a DuckLake table costs 12-25 ms of catalog work before it reads
a byte, more than the rows of a few windows cost to decode.

The scan keeps the catalog's metrics in the windows (both filters run inside the scan); the hosts
of S in the first window, and the rows of the scope (a host of S, a series of S, or a probe stored
without a service whose target names one of ``probe_targets``), are picked from it in SQL. The
buckets (gauges averaged, counters as per-second rates) and the series names are made in numpy from
those rows, as signals' bucket SQL makes them (verified equal value for value; that SQL's float sums
can differ in the last bit from run to run when DuckDB splits a bucket across threads, these do not).
A series the user's label map (``[[diagnosis.map]]``) gives to one of S, or to an edge with an end in
S, is read whatever its own service and host. A host found only through a metric outside the catalog is not a host here: no series on it could
be linked to the hop by ``resources.link_series`` (which takes hosts from the series read).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from hopscope.catalog import COLUMN_KEYS, Catalog
from hopscope.model import ReadStore, SeriesKey, TimeRange
from hopscope.rates import counter_rates
from hopscope.signals import META_COLUMNS, SeriesGrid, _us, n_buckets, value_expression


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def load_linked_grid(
    store: ReadStore,
    windows: Sequence[TimeRange],
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
    value_sql, p_value = value_expression(catalog)
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
    mapped_sql, p_mapped = _mapped_condition(catalog, svc)
    # The scan and the scope in SQL (a materialized CTE, read twice: the hosts of S in the first
    # window, then the rows of the scope); the bucketing, the counter rates and the names in numpy:
    # DuckDB spends more planning (~12 ms) and running the window function, group-bys and joins of
    # signals' bucket SQL over a few thousand rows than on the scan. Same operations, same order:
    # gauges averaged per bucket (sums in scan order), counters as per-second rates over the rows
    # sorted by time within a series and window (a drop taken as a restart).
    sql = f"""
    WITH raw AS MATERIALIZED (
        SELECT CASE {win_case} END AS win, epoch_us(ts) AS us, metric, service, host, labels,
               hash(metric, service, host, labels) AS sid, {value_sql} AS val, {in_svc} AS in_svc,
               {probe_cond} AS probe, {mapped_sql} AS mapped
        FROM samples
        WHERE ts >= ? AND ts < ? AND ({within}) AND list_contains(?::VARCHAR[], metric) AND isfinite(value)
    )
    SELECT win, us, sid, val, metric, service, host, labels FROM raw
    WHERE in_svc OR probe OR mapped OR host IN (SELECT host FROM raw WHERE win = 0 AND host IS NOT NULL AND in_svc)"""
    params: list[object] = [
        *bounds, *p_value, *svc, *(probes if probe_cond != "false" else []),
        *(probe_targets if probe_cond != "false" else []), *p_mapped, lo, hi, *bounds, list(metrics),
    ]  # fmt: skip
    table: pa.Table = store.query(sql, params)
    return _grid(table, windows, step_s, nb, counters)


def _mapped_condition(catalog: Catalog, services: Sequence[str]) -> tuple[str, list[object]]:
    """SQL true for a series that the user's label map gives to one of ``services`` (or to an edge
    with an end among them), and its bound parameters; label keys are bound too."""
    parts: list[str] = []
    params: list[object] = []
    for link in catalog.links:
        if not link.services() & set(services):
            continue
        conds = []
        for key, values in link.match:
            column = key if key in COLUMN_KEYS else "labels[?]"
            if key not in COLUMN_KEYS:
                params.append(key)
            conds.append(f"coalesce({column}, '') IN ({_marks(len(values))})")
            params += values
        parts.append("(" + " AND ".join(conds) + ")")
    return ("(" + " OR ".join(parts) + ")" if parts else "false"), params


def _grid(
    table: pa.Table, windows: list[TimeRange], step_s: int, nb: int, counters: Sequence[str]
) -> SeriesGrid:
    """``values[series, window, bucket]`` from the rows (win, us, sid, val, metric, service, host,
    labels): series present in the first window with at least one value, ordered by their key."""
    no_rows = pd.DataFrame({c: [] for c in META_COLUMNS}, columns=META_COLUMNS)  # as signals.grid_from_table
    empty = SeriesGrid(no_rows, np.zeros((0, len(windows), nb)), tuple(windows), step_s)
    if table.num_rows == 0:
        return empty
    win = table.column("win").to_numpy().astype(np.int64)
    us = table.column("us").to_numpy()
    val = table.column("val").to_numpy()
    sids, first, sx = np.unique(table.column("sid").to_numpy(), return_index=True, return_inverse=True)
    sx = sx.ravel()
    n_s, n_w = len(sids), len(windows)
    starts = np.array([_us(w.start) for w in windows], dtype=np.int64)
    b = (us - starts[win]) // (step_s * 1_000_000)
    is_counter = np.isin(table.column("metric").to_numpy(zero_copy_only=False), list(counters))
    cell = (sx * n_w + win) * nb + b  # -> [series, window, bucket]
    flat = np.full(n_s * n_w * nb, np.nan)
    ok_b = (b >= 0) & (b < nb)
    g = ~is_counter & ok_b
    if g.any():
        k, inv = np.unique(cell[g], return_inverse=True)
        flat[k] = np.bincount(inv.ravel(), weights=val[g]) / np.bincount(inv.ravel())
    c = np.flatnonzero(is_counter)
    if c.size:
        c = c[np.lexsort((c, us[c], win[c], sx[c]))]  # by series, window, time (ties: scan order)
        k, rates = counter_rates(sx[c] * n_w + win[c], us[c], val[c], np.where(ok_b[c], cell[c], -1))
        flat[k] = rates
    values = flat.reshape(n_s, n_w, nb)
    # a series is named by its rows in the first window; one with no value at all is left out
    in_first = np.zeros(n_s, dtype=bool)
    in_first[sx[win == 0]] = True
    shown = np.flatnonzero(in_first & ~np.isnan(values).all(axis=(1, 2)))
    if shown.size == 0:
        return empty
    first0 = np.full(n_s, table.num_rows)
    np.minimum.at(first0, sx[win == 0], np.flatnonzero(win == 0))
    rows = pa.array(first0[shown], pa.int64())
    names = table.select(["metric", "service", "host", "labels"]).take(rows).to_pylist()
    meta = []
    for r in names:
        entries = r["labels"] or []
        meta.append(
            (
                str(SeriesKey.of(r["metric"], r["service"], r["host"], entries)),
                r["metric"],
                r["service"] or "",
                r["host"] or "",
                {str(k): str(v) for k, v in entries},
            )
        )
    order = sorted(range(len(meta)), key=lambda i: meta[i][0])
    return SeriesGrid(
        pd.DataFrame([meta[i] for i in order], columns=META_COLUMNS),
        values[shown[order]],
        tuple(windows),
        step_s,
    )


__all__ = ["load_linked_grid"]

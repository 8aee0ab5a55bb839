"""Read side of ``samples``: resource signals for time windows, bucketed per series, in SQL.

Two shapes of the same query (bound parameters; the store's scan does the work):

    from hopscope.model import TimeRange
    from hopscope.signals import load_series, load_series_grid
    df = load_series(store, [TimeRange(start, end)], step_s=60, services=["model-server"])
    grid = load_series_grid(store, windows, step_s=60, services=["model-server"], hosts_of=["model-server"])

``load_series`` returns one row per series x time bucket:

    ts       bucket start (naive UTC): window start + k x step
    window   index of the window the bucket belongs to (the order they were passed in)
    series   stable key: ``str(hopscope.model.SeriesKey)``
    metric, service, host
    labels   dict of the series' other labels
    value    gauges: the mean over the bucket; counters (catalog kind ``counter``): the per-second
             rate over the bucket, with counter resets handled (a drop means the counter restarted
             from 0, so the new value is the increase); bitmasks with ``bad_bits`` in the catalog:
             the fraction of samples with any of those bits set
    n        samples in the bucket

``load_series_grid`` returns the same values as a dense array ``values[series, window, bucket]``
(NaN where a bucket has no sample) with one metadata row per series: what the diagnosis scores.

Buckets start at each window's start, so equal-length windows have aligned buckets. Rates never
span two windows: each window is read on its own. Series keys and label parsing are done once per
series, never per row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from hopscope.catalog import Catalog, load_catalog
from hopscope.errors import StoreError
from hopscope.model import ReadStore, SeriesKey, TimeRange
from hopscope.rates import counter_rate_sql

COLUMNS = ["ts", "window", "series", "metric", "service", "host", "labels", "value", "n"]
META_COLUMNS = ["series", "metric", "service", "host", "labels"]
_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class SeriesGrid:
    """Bucketed series over equal-or-shorter windows: ``values[i, w, b]`` is series ``meta.iloc[i]``."""

    meta: pd.DataFrame  # series, metric, service, host, labels (dict); row i <-> values[i]
    values: np.ndarray  # float64 [series, windows, buckets]; NaN = no sample in the bucket
    windows: tuple[TimeRange, ...]
    step_s: int

    @property
    def empty(self) -> bool:
        return len(self.meta) == 0


def n_buckets(windows: Sequence[TimeRange], step_s: int) -> int:
    """Buckets of the longest window (a partial last bucket counts)."""
    return max(int(-(-w.seconds // step_s)) for w in windows) if windows else 0


def _us(ts: datetime) -> int:
    return (ts.replace(tzinfo=None) - _EPOCH) // _US


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def value_expression(catalog: Catalog) -> tuple[str, list[str]]:
    """The SQL of a sample's value, and its bound parameters: a bitmask metric (clock-event reasons)
    reads 1.0 when any of its catalog's "bad" bits (ints) is set, 0.0 otherwise; other metrics as stored."""
    value_sql = "value"
    params: list[str] = []
    for m in catalog.metrics.values():
        if m.bad_bits is not None:
            value_sql = f"CASE WHEN metric = ? THEN CAST((CAST(value AS BIGINT) & {int(m.bad_bits)}) <> 0 AS DOUBLE) ELSE {value_sql} END"
            params.insert(0, m.name)
    return value_sql, params


def _bucket_ctes(names_where: str) -> str:
    """The CTEs after a CTE `s` of samples (ts, metric, service, host, labels, sid, value, win,
    is_counter): s2 (bucket index of each sample), g0 (one value per series, window and bucket: gauges
    averaged, counters as hopscope.rates defines their per-second rates; n samples)
    and names (one row of names per series, from the rows `names_where` keeps). Two bound parameters,
    where s2 stands: the windows' starts (us) and the bucket width (us)."""
    return f"""s2 AS (
        SELECT ts, sid, value, win, is_counter,
               CAST((epoch_us(ts) - list_extract(?::BIGINT[], win + 1)) // ? AS INTEGER) AS b
        FROM s
    ), g0 AS (
        SELECT sid, win, b, avg(value) AS value, count(*) AS n
        FROM s2 WHERE NOT is_counter GROUP BY sid, win, b
        UNION ALL
        {counter_rate_sql("(SELECT * FROM s2 WHERE is_counter)", ["sid", "win"], "b")}
    ), names AS (
        SELECT sid, any_value(metric) AS metric, coalesce(any_value(service), '') AS service,
               coalesce(any_value(host), '') AS host, coalesce(any_value(labels), MAP {{}}) AS labels
        FROM s WHERE {names_where} GROUP BY sid"""


def _bucket_sql(
    windows: Sequence[TimeRange],
    step_s: int,
    catalog: Catalog,
    *,
    metrics: Sequence[str] | None,
    services: Sequence[str] | None,
    hosts: Sequence[str] | None,
    probe_targets: Sequence[str] | None,
    names_from_first: bool = False,
    hostless_services_only: bool = False,
) -> tuple[str, list[object]]:
    """CTEs ending in ``g``: one row per (series id, win, b) with value, n, metric, service, host, labels."""
    value_sql, p_value = value_expression(catalog)
    counters = [m for m in catalog.counters() if metrics is None or m in metrics]

    # One scan per scope over all windows. The overall range prunes files and row groups, the OR of
    # windows drops what lies between them; each scope filters on one column (host or service IN a
    # few literals; metric through list_contains, as a long IN list becomes a join), so the filter
    # runs inside the scan and label maps are decoded only for the rows it keeps (an OR across
    # columns would decode every row of the range first).
    scopes: list[tuple[list[str], list[object]]] = []
    metric_in = ["list_contains(?::VARCHAR[], metric)"] if metrics is not None else []
    p_metric: list[object] = [list(metrics)] if metrics is not None else []
    if services is None and hosts is None and not probe_targets:
        scopes.append((metric_in, p_metric))
    hosts = list(hosts or [])
    not_host = [f"(host IS NULL OR host NOT IN ({_marks(len(hosts))}))"] if hosts else []
    if hosts:
        scopes.append(([*metric_in, f"host IN ({_marks(len(hosts))})"], [*p_metric, *hosts]))
    if services:
        if hostless_services_only:  # the hosts scope already holds every series of these services with a host
            scopes.append(
                (
                    [f"service IN ({_marks(len(services))})", "host IS NULL", *metric_in],
                    [*services, *p_metric],
                )
            )
        else:
            scopes.append(
                (
                    [*metric_in, f"service IN ({_marks(len(services))})", *not_host],
                    [*p_metric, *services, *hosts],
                )
            )
    if probe_targets:
        # probes stored without a service, matched by the service or host their target names
        # (IS NULL and a short IN list are filtered inside the scan: labels are decoded for few rows)
        probes = [m for m in catalog if m.startswith("probe_") and (metrics is None or m in metrics)]
        cond = [f"metric IN ({_marks(len(probes))})" if probes else "false", "service IS NULL", *not_host]
        cond.append(
            "(" + " OR ".join("contains(coalesce(labels['target'], ''), ?)" for _ in probe_targets) + ")"
        )
        scopes.append((cond, [*probes, *hosts, *probe_targets]))
    if not scopes:
        scopes.append((["false"], []))
    win_case = " ".join(f"WHEN ts >= ? AND ts < ? THEN {i}" for i in range(len(windows)))
    p_case = [x for w in windows for x in (w.start, w.end)]
    lo, hi = min(w.start for w in windows), max(w.end for w in windows)
    select = (
        "SELECT ts, metric, service, host, labels, hash(metric, service, host, labels) AS sid, "
        f"{value_sql} AS value, CASE {win_case} END AS win, list_contains(?::VARCHAR[], metric) AS is_counter "
        "FROM samples WHERE ts >= ? AND ts < ? AND ("
        + " OR ".join("(ts >= ? AND ts < ?)" for _ in windows)
        + ") AND isfinite(value)"
    )
    parts: list[str] = []
    p_scans: list[object] = []
    for cond, p in scopes:
        parts.append(" AND ".join([select, *cond]))
        p_scans += [*p_value, *p_case, counters, lo, hi, *p_case, *p]
    union = "\n        UNION ALL ".join(parts)
    # names from the first window only where asked (the incident: a series absent there cannot be scored)
    names_where = "win = 0" if names_from_first else "true"
    params = p_scans + [[_us(w.start) for w in windows], step_s * 1_000_000]

    # One integer id per series (hash of metric, service, host, labels) through the heavy steps
    # (rates, buckets); names and the label map are carried once per series, at the end.
    sql = f"""
    WITH s AS (
        {union}
    ), {_bucket_ctes(names_where)}
    ), g AS (
        SELECT g0.*, names.metric, names.service, names.host, names.labels FROM g0 JOIN names USING (sid)
    )"""
    return sql, params


def _prepare(
    windows: Iterable[TimeRange], step_s: int, catalog: Catalog | None
) -> tuple[list[TimeRange], Catalog]:
    windows = list(windows)
    if step_s < 1:
        raise StoreError(f"step_s: {step_s!r} must be >= 1 second")
    return windows, catalog or load_catalog()


def _parse_labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in obj.items()} if isinstance(obj, dict) else {}


def hosts_of_services(store: ReadStore, window: TimeRange, services: Sequence[str]) -> list[str]:
    """The hosts on which these services' series run in the window (a GPU node's NIC is the model server's)."""
    if not services:
        return []
    return sorted(h for h in _hosts(store, window, services) if h is not None)


def _hosts(store: ReadStore, window: TimeRange, services: Sequence[str]) -> list[str | None]:
    """Distinct hosts of the services' series in the window; None among them when some have no host."""
    df = store.query_df(
        f"SELECT DISTINCT host FROM samples WHERE ts >= ? AND ts < ? AND service IN ({_marks(len(services))})",
        [window.start, window.end, *services],
    )
    return [None if h is None or (isinstance(h, float) and h != h) else str(h) for h in df["host"]]


def load_series(
    store: ReadStore,
    windows: Iterable[TimeRange],
    *,
    step_s: int = 60,
    metrics: Sequence[str] | None = None,
    services: Sequence[str] | None = None,
    hosts: Sequence[str] | None = None,
    catalog: Catalog | None = None,
) -> pd.DataFrame:
    """Samples of the given windows as bucketed per-series values (see module doc).

    ``metrics``/``services``/``hosts`` filter (None = all). A series matches when its
    service is in ``services`` OR its host is in ``hosts`` (when both are given).
    """
    windows, catalog = _prepare(windows, step_s, catalog)
    if not windows:
        return pd.DataFrame(columns=COLUMNS)
    cte, params = _bucket_sql(
        windows, step_s, catalog, metrics=metrics, services=services, hosts=hosts, probe_targets=None
    )
    sql = f"""{cte}, k AS (
        SELECT sid, {SeriesKey.SQL} AS series, CAST(to_json(labels) AS VARCHAR) AS lab
        FROM (SELECT DISTINCT sid, metric, service, host, labels FROM g)
    )
    SELECT g.win AS "window", g.b, k.series, g.metric, g.service, g.host, k.lab, g.value, g.n
    FROM g JOIN k USING (sid)
    WHERE g.value IS NOT NULL ORDER BY k.series, g.win, g.b"""
    df = store.query_df(sql, params)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    starts = np.array([np.datetime64(w.start, "us") for w in windows])
    df["ts"] = starts[df["window"].to_numpy(dtype=int)] + (
        df["b"].to_numpy(dtype=np.int64) * step_s * 1_000_000
    ).astype("timedelta64[us]")
    labels_of = {lab: _parse_labels(lab) for lab in df["lab"].unique()}
    df["labels"] = df["lab"].map(labels_of)
    return df[COLUMNS].reset_index(drop=True)


def grid_from_table(table: pa.Table, windows: Sequence[TimeRange], step_s: int, nb: int) -> SeriesGrid:
    """A SeriesGrid from one row per series: metric, service, host, series, lab (labels as JSON) and
    the lists wins, bs, vals (window index, bucket index, value of each filled bucket)."""
    n = table.num_rows
    values = np.full((n, len(windows), nb), np.nan)
    if n:
        wins = table.column("wins").combine_chunks()
        bs = table.column("bs").combine_chunks()
        vals = table.column("vals").combine_chunks()
        row = np.repeat(np.arange(n), np.diff(wins.offsets.to_numpy()))
        values[row, wins.flatten().to_numpy(), bs.flatten().to_numpy()] = vals.flatten().to_numpy(
            zero_copy_only=False
        )
    meta = pd.DataFrame(
        {
            "series": table.column("series").to_pylist(),
            "metric": table.column("metric").to_pylist(),
            "service": table.column("service").to_pylist(),
            "host": table.column("host").to_pylist(),
            "labels": [_parse_labels(x) for x in table.column("lab").to_pylist()],
        },
        columns=META_COLUMNS,
    )
    return SeriesGrid(meta, values, tuple(windows), step_s)


def load_series_grid(
    store: ReadStore,
    windows: Iterable[TimeRange],
    *,
    step_s: int = 60,
    metrics: Sequence[str] | None = None,
    services: Sequence[str] | None = None,
    hosts: Sequence[str] | None = None,
    hosts_of: Sequence[str] | None = None,
    probe_targets: Sequence[str] | None = None,
    catalog: Catalog | None = None,
) -> SeriesGrid:
    """The series of the windows as ``values[series, window, bucket]``, one SQL query, one row per series.

    Scope (None = no such condition; a series matching any given condition is kept, all when none
    is given): ``services``; ``hosts``; ``hosts_of``: the hosts on which these services' series run
    in the first window (one small query first); ``probe_targets``: probe series stored without a
    service whose ``target`` label contains one of these names. ``metrics`` restricts the metric
    names in every case.
    """
    windows, catalog = _prepare(windows, step_s, catalog)
    nb = n_buckets(windows, step_s)
    if not windows:
        return SeriesGrid(pd.DataFrame(columns=META_COLUMNS), np.zeros((0, 0, 0)), (), step_s)
    hostless = False
    if hosts_of:
        found = _hosts(store, windows[0], hosts_of)
        hosts = sorted(set(hosts or []) | {h for h in found if h is not None})
        if services is not None and set(services) <= set(hosts_of):
            # every series of these services with a host is in the hosts scope: read the others, if any
            hostless = True
            if None not in found:
                services = []
    cte, params = _bucket_sql(
        windows, step_s, catalog, metrics=metrics, services=services, hosts=hosts,
        probe_targets=probe_targets, names_from_first=True,
        hostless_services_only=hostless,
    )  # fmt: skip
    # lists per series id (unordered: each value carries its window and bucket), names joined after
    sql = f"""{cte}, per AS (
        SELECT sid, list(win) AS wins, list(b) AS bs, list(value) AS vals
        FROM g0 WHERE value IS NOT NULL AND b >= 0 AND b < ? GROUP BY sid
    )
    SELECT metric, service, host, {SeriesKey.SQL} AS series, CAST(to_json(labels) AS VARCHAR) AS lab, wins, bs, vals
    FROM per JOIN names USING (sid) ORDER BY series"""
    table: pa.Table = store.query(sql, params + [nb])
    return grid_from_table(table, windows, step_s, nb)

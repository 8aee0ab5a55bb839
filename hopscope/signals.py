"""Read side of ``samples``: resource signals for time windows, as per-series time series.

One call does it all, in SQL, with bound parameters:

    from hopscope.signals import load_series, Window
    df = load_series(store, [Window(start, end)], step_s=60, services=["model-server"])

Each row of the result is one series x one time bucket:

    ts       bucket start (naive UTC)
    window   index of the window the bucket belongs to (the order they were passed in)
    series   stable key: ``metric{service="...",host="...",label="value",...}`` (labels sorted)
    metric, service, host
    labels   dict of the series' other labels
    value    gauges: the mean over the bucket; counters (catalog kind ``counter``): the per-second
             rate over the bucket, with counter resets handled (a drop means the counter restarted
             from 0, so the new value is the increase); bitmasks with ``bad_bits`` in the catalog:
             the fraction of samples with any of those bits set
    n        samples in the bucket

Rates never span two windows: each window is read on its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from hopscope.catalog import Catalog, load_catalog
from hopscope.errors import StoreError

COLUMNS = ["ts", "window", "series", "metric", "service", "host", "labels", "value", "n"]


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open time window [start, end), naive UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise StoreError(f"window end {self.end} is not after its start {self.start}")

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def series_key(metric: str, service: str | None, host: str | None, labels: dict[str, str]) -> str:
    """The key naming one series: metric{service=..,host=..,k=v...} with labels sorted."""
    parts = []
    if service:
        parts.append(f'service="{service}"')
    if host:
        parts.append(f'host="{host}"')
    parts += [f'{k}="{labels[k]}"' for k in sorted(labels)]
    return f"{metric}{{{','.join(parts)}}}"


def _in_list(column: str, values: Sequence[str] | None, params: list[Any]) -> str:
    if values is None:
        return ""
    if not values:
        return " AND false"
    params.extend(values)
    return f" AND {column} IN ({', '.join('?' for _ in values)})"


def load_series(
    store: Any,
    windows: Iterable[Window],
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
    windows = list(windows)
    if step_s < 1:
        raise StoreError(f"step_s: {step_s!r} must be >= 1 second")
    if not windows:
        return pd.DataFrame(columns=COLUMNS)
    catalog = catalog or load_catalog()
    counters = catalog.counters()
    bitmasks = [(m.name, int(m.bad_bits)) for m in catalog.metrics.values() if m.bad_bits is not None]

    params: list[Any] = []
    # value transform for bitmasks: 1.0 when any "bad" bit is set
    value_sql = "value"
    for name, bits in reversed(bitmasks):
        value_sql = f"CASE WHEN metric = ? THEN CAST((CAST(value AS BIGINT) & {int(bits)}) <> 0 AS DOUBLE) ELSE {value_sql} END"
        params.append(name)
    params.reverse()
    win_cases = []
    win_where = []
    for i, w in enumerate(windows):
        win_cases.append(f"WHEN ts >= ? AND ts < ? THEN {i}")
        params += [w.start, w.end]
    where_params: list[Any] = []
    for w in windows:
        win_where.append("(ts >= ? AND ts < ?)")
        where_params += [w.start, w.end]
    where = f"({' OR '.join(win_where)}) AND isfinite(value)"
    where += _in_list("metric", list(metrics) if metrics is not None else None, where_params)
    if services is not None and hosts is not None:
        svc = list(services) or [""]
        hst = list(hosts) or [""]
        where += (
            f" AND (service IN ({', '.join('?' for _ in svc)}) OR host IN ({', '.join('?' for _ in hst)}))"
        )
        where_params += svc + hst
    else:
        where += _in_list("service", list(services) if services is not None else None, where_params)
        where += _in_list("host", list(hosts) if hosts is not None else None, where_params)
    counter_sql = "false"
    counter_params: list[Any] = []
    if counters:
        counter_sql = f"metric IN ({', '.join('?' for _ in counters)})"
        counter_params = list(counters)

    sql = f"""
    WITH s AS (
        SELECT ts, metric, coalesce(service, '') AS service, coalesce(host, '') AS host,
               CAST(labels AS VARCHAR) AS raw, labels,
               {value_sql} AS value,
               CASE {" ".join(win_cases)} END AS win
        FROM samples WHERE {where}
    ), d AS (
        SELECT *, CASE WHEN {counter_sql} THEN value - lag(value) OVER w END AS dv,
               CASE WHEN {counter_sql} THEN epoch(ts) - epoch(lag(ts) OVER w) END AS dt
        FROM s WINDOW w AS (PARTITION BY win, metric, service, host, raw ORDER BY ts)
    ), g AS (
        SELECT time_bucket(to_seconds(?), ts) AS ts, win AS "window", metric, service, host, raw,
               any_value(labels) AS labels,
               CASE WHEN {counter_sql}
                    THEN sum(CASE WHEN dv < 0 THEN value ELSE dv END) / nullif(sum(dt), 0)
                    ELSE avg(value) END AS value,
               count(*) AS n
        FROM d GROUP BY 1, 2, 3, 4, 5, 6
    ), k AS (
        SELECT DISTINCT ON (metric, service, host, raw) metric, service, host, raw,
               CAST(to_json(list_sort(map_entries(coalesce(labels, MAP {{}})))) AS VARCHAR) AS lab,
               metric || '{{' || concat_ws(',',
                   CASE WHEN service <> '' THEN 'service="' || service || '"' END,
                   CASE WHEN host <> '' THEN 'host="' || host || '"' END,
                   nullif(array_to_string(list_transform(list_sort(map_entries(coalesce(labels, MAP {{}}))),
                          x -> x.key || '="' || x.value || '"'), ','), '')) || '}}' AS series
        FROM g
    )
    SELECT g.ts, g."window", k.series, g.metric, g.service, g.host, k.lab, g.value, g.n
    FROM g JOIN k USING (metric, service, host, raw) ORDER BY k.series, g.ts
    """
    all_params = params + where_params + counter_params * 2 + [step_s] + counter_params
    df = store.query_df(sql, all_params)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    df = df[df["value"].notna()]
    labels_of = {lab: _parse_labels(lab) for lab in df["lab"].unique()}
    df["labels"] = df["lab"].map(labels_of)
    return df[COLUMNS].reset_index(drop=True)


def _parse_labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        entries = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return {str(e["key"]): str(e["value"]) for e in entries if isinstance(e, dict)}

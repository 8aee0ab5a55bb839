"""BubbleUp: attribute values over-represented among the incident's slow spans vs the baseline's spans.

"Slow" = an incident span longer than the baseline's 95th percentile of the same spans. Counts are
aggregated in SQL per (attribute, value); numeric attributes with many values (payload sizes) are
read in power-of-two buckets; other high-cardinality attributes (ids) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hopscope.diagnosis.model import BubbleAttr
from hopscope.signals import Window

SLOW_QUANTILE = 0.95
MIN_SLOW = 10
MAX_VALUES = 20  # more distinct values than this: bucket if numeric, else skip
MIN_FRACTION = 0.2
MIN_EXCESS = 0.15
TOP = 8
SPAN_KIND = {"service": 2, "network": 3}  # server spans for a service hop, client spans for an edge


def load_bubble_counts(
    store: Any, hop: str, hop_kind: str, incident: Window, baseline: Sequence[Window]
) -> tuple[pd.DataFrame, int, int, float | None]:
    """Counts per (attribute, value) among slow incident spans and baseline spans; totals; slow cut (ms)."""
    if hop_kind == "network":
        client, _, server = hop.partition("->")
        span_filter, params = (
            "service = ? AND kind = 3 AND (peer_service = ? OR peer_service IS NULL)",
            [client, server],
        )
    else:
        span_filter, params = "service = ? AND kind = 2", [hop]
    wins = [incident, *baseline]
    where = " OR ".join("(start_time >= ? AND start_time < ?)" for _ in wins)
    wparams = [x for w in wins for x in (w.start, w.end)]
    sql = f"""
    WITH s AS (
        SELECT (start_time >= ? AND start_time < ?) AS inc, duration_ms, host_name,
               CAST(http_status_code AS VARCHAR) AS status, server_address, attributes
        FROM spans WHERE {span_filter} AND ({where})
    ), thr AS (SELECT quantile_cont(duration_ms, {SLOW_QUANTILE}) AS t FROM s WHERE NOT inc),
    sel AS (SELECT s.*, (inc AND duration_ms > (SELECT t FROM thr)) AS slow FROM s),
    kv AS (
        SELECT slow, inc, 'host.name' AS k, host_name AS v FROM sel WHERE host_name IS NOT NULL
        UNION ALL SELECT slow, inc, 'http.response.status_code', status FROM sel WHERE status IS NOT NULL
        UNION ALL SELECT slow, inc, 'server.address', server_address FROM sel WHERE server_address IS NOT NULL
        UNION ALL SELECT slow, inc, unnest(map_keys(attributes)), unnest(map_values(attributes))
                  FROM sel WHERE attributes IS NOT NULL
    )
    SELECT k AS attribute, v AS value, CAST(count(*) FILTER (WHERE slow) AS BIGINT) AS slow_n,
           count(*) FILTER (WHERE NOT inc) AS base_n,
           (SELECT count(*) FROM sel WHERE slow) AS slow_total,
           (SELECT count(*) FROM sel WHERE NOT inc) AS base_total,
           (SELECT t FROM thr) AS cut
    FROM kv GROUP BY 1, 2
    """
    df = store.query_df(sql, [incident.start, incident.end, *params, *wparams])
    if df.empty:
        return df, 0, 0, None
    cut = df["cut"].iloc[0]
    return (
        df[["attribute", "value", "slow_n", "base_n"]],
        int(df["slow_total"].iloc[0]),
        int(df["base_total"].iloc[0]),
        None if cut is None or (isinstance(cut, float) and math.isnan(cut)) else float(cut),
    )


def _bucket(values: pd.Series) -> pd.Series | None:
    num = pd.to_numeric(values, errors="coerce")
    if num.isna().any():
        return None
    exp = np.ceil(np.log2(np.maximum(num.to_numpy(dtype=float), 1.0))).astype(int)
    return pd.Series([f"<= {2**e:g}" for e in exp], index=values.index)


def bubbleup(counts: pd.DataFrame, slow_total: int, base_total: int) -> tuple[list[BubbleAttr], str]:
    """Rank attribute values by how much more common they are among slow incident spans."""
    if slow_total < MIN_SLOW or base_total == 0 or counts.empty:
        return [], f"too few spans to compare ({slow_total} slow incident spans, {base_total} baseline spans)"
    parts = []
    for _attr, grp in counts.groupby("attribute", sort=False):
        if len(grp) > MAX_VALUES:
            b = _bucket(grp["value"])
            if b is None:
                continue  # ids and other high-cardinality text
            grp = (
                grp.assign(value=b)
                .groupby(["attribute", "value"], as_index=False)[["slow_n", "base_n"]]
                .sum()
            )
        parts.append(grp)
    if not parts:
        return [], "no attribute with few enough values to compare"
    table = pd.concat(parts)
    table["slow_frac"] = table["slow_n"] / slow_total
    table["base_frac"] = table["base_n"] / base_total
    table["excess"] = table["slow_frac"] - table["base_frac"]
    hits = table[(table["slow_frac"] >= MIN_FRACTION) & (table["excess"] >= MIN_EXCESS)]
    hits = hits.sort_values("excess", ascending=False).head(TOP)
    out = [
        BubbleAttr(
            attribute=str(r.attribute),
            value=str(r.value),
            incident_slow_fraction=float(r.slow_frac),
            baseline_fraction=float(r.base_frac),
            lift=float((r.slow_frac + 1e-3) / (r.base_frac + 1e-3)),
            slow_spans=int(r.slow_n),
        )
        for r in hits.itertuples(index=False)
    ]
    note = f"{slow_total} slow incident spans vs {base_total} baseline spans"
    if not out:
        note += "; no attribute value stands out"
    return out, note

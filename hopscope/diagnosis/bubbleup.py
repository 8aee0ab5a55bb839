"""BubbleUp: attribute values over-represented among the incident's slow spans vs the baseline's spans.

"Slow" = an incident span longer than the baseline's 95th percentile of the same spans. The work is
bounded whatever the span volume: spans are read from the worst stretch of the incident (at most
``FOCUS`` long, where the hop's latency rose most) and the same stretch of at most ``BASELINES``
baseline windows, each side reservoir-sampled to ``SAMPLE_ROWS`` in SQL; counts per (attribute,
value) are aggregated in SQL. Attributes with many values are read in power-of-two buckets when
numeric (payload sizes) and skipped otherwise (ids).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
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
FOCUS = timedelta(hours=1)  # longest stretch of the incident whose spans are compared
BASELINES = 1  # baseline windows whose spans are read (the nearest)
SAMPLE_ROWS = 20_000  # spans per side (incident, baseline) at most
SPAN_KIND = {"service": 2, "network": 3}  # server spans for a service hop, client spans for an edge


def focus_offsets(hop_ms: np.ndarray, step_s: int, length: timedelta = FOCUS) -> tuple[int, int]:
    """Bucket range [lo, hi) of at most ``length`` where the incident's per-request hop ms sum is largest."""
    n = len(hop_ms)
    k = max(1, min(n, int(length.total_seconds() // step_s)))
    if n <= k:
        return 0, n
    x = np.nan_to_num(np.asarray(hop_ms, dtype=float), nan=0.0)
    sums = np.convolve(x, np.ones(k), mode="valid")
    lo = int(np.argmax(sums))
    return lo, lo + k


def load_bubble_counts(
    store: Any,
    hop: str,
    hop_kind: str,
    incident: Window,
    baseline: Sequence[Window],
    *,
    focus: tuple[timedelta, timedelta] | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> tuple[pd.DataFrame, int, int, float | None]:
    """Counts per (attribute, value) among slow incident spans and baseline spans; totals; slow cut (ms).

    ``focus``: (offset from the window start, offset of the end) of the stretch to read in the
    incident and in each baseline window (default: the first ``FOCUS`` of them).
    """
    if hop_kind == "network":
        client, _, server = hop.partition("->")
        span_filter, params = (
            "service = ? AND kind = 3 AND (peer_service = ? OR peer_service IS NULL)",
            [client, server],
        )
    else:
        span_filter, params = "service = ? AND kind = 2", [hop]
    off_lo, off_hi = focus if focus is not None else (timedelta(0), min(FOCUS, incident.end - incident.start))

    def stretch(w: Window) -> tuple[Any, Any]:
        return w.start + off_lo, min(w.end, w.start + off_hi)

    # one scan per stretch: a tight time range lets the scan skip the rest of the table
    select = (
        "SELECT duration_ms, host_name, CAST(http_status_code AS VARCHAR) AS status, server_address, attributes "
        f"FROM spans WHERE {span_filter} AND start_time >= ? AND start_time < ?"
    )
    base_sql = " UNION ALL ".join(select for _ in baseline[:BASELINES]) or f"{select} AND false"
    p_base = [x for w in baseline[:BASELINES] for x in (*params, *stretch(w))] or [
        *params,
        *stretch(incident),
    ]
    sql = f"""
    WITH inc AS (
        SELECT * FROM ({select}) USING SAMPLE reservoir({int(sample_rows)} ROWS) REPEATABLE (7)
    ), base AS (
        SELECT * FROM ({base_sql}) USING SAMPLE reservoir({int(sample_rows)} ROWS) REPEATABLE (7)
    ), thr AS (SELECT quantile_cont(duration_ms, {SLOW_QUANTILE}) AS t FROM base),
    sel AS (
        SELECT true AS slow_side, * FROM inc WHERE duration_ms > (SELECT t FROM thr)
        UNION ALL SELECT false, * FROM base
    ), kv AS (
        SELECT slow_side, 'host.name' AS k, host_name AS v FROM sel WHERE host_name IS NOT NULL
        UNION ALL SELECT slow_side, 'http.response.status_code', status FROM sel WHERE status IS NOT NULL
        UNION ALL SELECT slow_side, 'server.address', server_address FROM sel WHERE server_address IS NOT NULL
        UNION ALL SELECT slow_side, unnest(map_keys(attributes)), unnest(map_values(attributes))
                  FROM sel WHERE attributes IS NOT NULL
    ), keys AS (
        SELECT k, count(DISTINCT v) AS nv, bool_and(TRY_CAST(v AS DOUBLE) IS NOT NULL) AS numeric FROM kv GROUP BY k
    ), kept AS (
        SELECT kv.slow_side, kv.k,
               CASE WHEN keys.nv <= {MAX_VALUES} THEN kv.v
                    ELSE '<= ' || CAST(CAST(2 ** ceil(log2(greatest(TRY_CAST(kv.v AS DOUBLE), 1))) AS BIGINT) AS VARCHAR)
               END AS v
        FROM kv JOIN keys USING (k) WHERE keys.nv <= {MAX_VALUES} OR keys.numeric
    )
    SELECT k AS attribute, v AS value, count(*) FILTER (WHERE slow_side) AS slow_n,
           count(*) FILTER (WHERE NOT slow_side) AS base_n,
           (SELECT count(*) FROM sel WHERE slow_side) AS slow_total,
           (SELECT count(*) FROM sel WHERE NOT slow_side) AS base_total,
           (SELECT t FROM thr) AS cut
    FROM kept GROUP BY 1, 2
    """
    df = store.query_df(sql, [*params, *stretch(incident), *p_base])
    if df.empty:
        return pd.DataFrame(columns=["attribute", "value", "slow_n", "base_n"]), 0, 0, None
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
    # ties (two attributes naming the same host) in a fixed order, whatever order SQL gave the rows
    hits = hits.sort_values(
        ["excess", "attribute", "value"], ascending=[False, True, True], kind="stable"
    ).head(TOP)
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
    note = f"{slow_total} slow incident spans vs {base_total} baseline spans (sampled)"
    if not out:
        note += "; no attribute value stands out"
    return out, note

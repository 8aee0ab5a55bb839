"""BubbleUp: attribute values over-represented among the incident's slow spans vs the baseline's spans.

"Slow" = an incident span longer than the baseline's 95th percentile of the same spans. The work is
bounded whatever the span volume: spans are read from the worst stretch of the incident (at most
``FOCUS`` long, where the hop's latency rose most) and the same stretch of at most ``BASELINES``
baseline windows (one scan), each side reservoir-sampled to ``SAMPLE_ROWS`` in SQL; counts per
(attribute, value) are made here, with pyarrow. Attributes with many values are read in power-of-two buckets when
numeric (payload sizes) and skipped otherwise (ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from hopscope.diagnosis.model import BubbleAttr
from hopscope.model import Hop, ReadStore, TimeRange

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
    store: ReadStore,
    hop: str,
    hop_kind: str,
    incident: TimeRange,
    baseline: Sequence[TimeRange],
    *,
    focus: tuple[timedelta, timedelta] | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> tuple[pd.DataFrame, int, int, float | None]:
    """Counts per (attribute, value) among slow incident spans and baseline spans; totals; slow cut (ms).

    ``focus``: (offset from the window start, offset of the end) of the stretch to read in the
    incident and in each baseline window (default: the first ``FOCUS`` of them).
    """
    if hop_kind == "network":
        edge = Hop.parse(hop)
        client, server = edge.client, edge.server
        span_filter, params = (
            "service = ? AND kind = 3 AND (peer_service = ? OR peer_service IS NULL)",
            [client, server],
        )
    else:
        span_filter, params = "service = ? AND kind = 2", [hop]
    off_lo, off_hi = focus if focus is not None else (timedelta(0), min(FOCUS, incident.end - incident.start))

    def stretch(w: TimeRange) -> tuple[datetime, datetime]:
        return w.start + off_lo, min(w.end, w.start + off_hi)

    # ONE scan of spans for both sides (each DuckLake scan costs ~10-20 ms of catalog work before it
    # reads a byte): the overall range prunes files and row groups (spans are sorted by service,
    # start_time), the OR of the stretches is filtered inside the scan. SQL samples each side, cuts
    # the slow incident spans and folds identical rows into one with a count (span attributes take
    # few values: a few dozen rows come back); the counting per (attribute, value) is done here,
    # several times faster than DuckDB's count(DISTINCT)/GROUP BY over the unnested attributes.
    stretches = [stretch(incident), *(stretch(w) for w in baseline[:BASELINES])]
    lo, hi = min(a for a, _ in stretches), max(b for _, b in stretches)
    within = " OR ".join("(start_time >= ? AND start_time < ?)" for _ in stretches)
    in_base = " OR ".join("(start_time >= ? AND start_time < ?)" for _ in stretches[1:]) or "false"
    n = int(sample_rows)
    sql = f"""
    WITH raw AS MATERIALIZED (
        SELECT start_time >= ? AND start_time < ? AS inc, ({in_base}) AS is_base,
               duration_ms, host_name, CAST(http_status_code AS VARCHAR) AS status, server_address, attributes
        FROM spans WHERE {span_filter} AND start_time >= ? AND start_time < ? AND ({within})
    ), inc AS (
        SELECT * FROM (SELECT * EXCLUDE (inc, is_base) FROM raw WHERE inc)
        USING SAMPLE reservoir({n} ROWS) REPEATABLE (7)
    ), base AS (
        SELECT * FROM (SELECT * EXCLUDE (inc, is_base) FROM raw WHERE is_base)
        USING SAMPLE reservoir({n} ROWS) REPEATABLE (7)
    ), thr AS (SELECT quantile_cont(duration_ms, {SLOW_QUANTILE}) AS t FROM base)
    SELECT slow, host_name, status, server_address, attributes, count(*) AS n, any_value((SELECT t FROM thr)) AS cut
    FROM (SELECT true AS slow, * FROM inc WHERE duration_ms > (SELECT t FROM thr) UNION ALL SELECT false, * FROM base)
    GROUP BY ALL
    """
    p_scan = [
        *stretches[0],
        *(x for s in stretches[1:] for x in s),
        *params,
        lo,
        hi,
        *(x for s in stretches for x in s),
    ]
    return _count_values(store, store.query(sql, p_scan))


_COUNT_COLUMNS = ["attribute", "value", "slow_n", "base_n"]
_NOTHING: tuple[pd.DataFrame, int, int, float | None] = (pd.DataFrame(columns=_COUNT_COLUMNS), 0, 0, None)


def _count_values(store: ReadStore, rows: pa.Table) -> tuple[pd.DataFrame, int, int, float | None]:
    """Counts per (attribute, value) among the slow incident spans and the baseline spans; totals;
    the slow cut (ms). ``rows``: slow, host_name, status, server_address, attributes, n (spans alike), cut.

    Attributes with more than ``MAX_VALUES`` values are kept only when every value is a number, as
    power-of-two buckets ("<= 64"); DuckDB parses the numbers (TRY_CAST), in one small query.
    Nothing to count (no attribute kept): no totals either.
    """
    if rows.num_rows == 0:
        return _NOTHING
    side = rows.column("slow").to_numpy(zero_copy_only=False).astype(bool)
    weight = rows.column("n").to_numpy().astype(np.int64)
    keys: list[pa.Array] = []
    values: list[pa.Array] = []
    slow_w: list[np.ndarray] = []
    all_w: list[np.ndarray] = []
    for name, col in (
        ("host.name", "host_name"),
        ("http.response.status_code", "status"),
        ("server.address", "server_address"),
    ):
        arr = rows.column(col).combine_chunks()
        ok = arr.is_valid().to_numpy(zero_copy_only=False)
        if ok.any():
            values.append(arr.filter(pa.array(ok)))
            keys.append(pa.array(np.full(int(ok.sum()), name, dtype=object), pa.string()))
            slow_w.append(np.where(side, weight, 0)[ok])
            all_w.append(weight[ok])
    attrs = rows.column("attributes").combine_chunks()
    off = attrs.offsets.to_numpy()
    if off[-1] > off[0]:
        keys.append(attrs.keys.slice(off[0], off[-1] - off[0]))
        values.append(attrs.items.slice(off[0], off[-1] - off[0]))
        slow_w.append(np.repeat(np.where(side, weight, 0), np.diff(off)))
        all_w.append(np.repeat(weight, np.diff(off)))
    if not keys:
        return _NOTHING
    kv = pa.table(
        {
            "k": pa.concat_arrays(keys),
            "v": pa.concat_arrays(values),
            "s": pa.array(np.concatenate(slow_w)),
            "a": pa.array(np.concatenate(all_w)),
        }
    )
    g = kv.group_by(["k", "v"]).aggregate([("s", "sum"), ("a", "sum")]).to_pandas()
    g = g.rename(columns={"k": "attribute", "v": "value"})
    g["slow_n"] = g.pop("s_sum").astype(np.int64)
    g["base_n"] = g.pop("a_sum").astype(np.int64) - g["slow_n"]
    nv = g["value"].notna().groupby(g["attribute"]).sum()
    many = set(nv.index[nv > MAX_VALUES])
    if many:
        few = g[~g["attribute"].isin(many)]
        rest = g[g["attribute"].isin(many)]
        labels = _numeric_buckets(store, rest["attribute"].tolist(), rest["value"].tolist())
        # an attribute with a value that is not a number (or no value) is left out: ids and the like
        rest = rest.assign(
            value=[labels.get(kv) for kv in zip(rest["attribute"], rest["value"], strict=True)]
        )
        rest = rest[rest["value"].notna()]
        rest = rest.groupby(["attribute", "value"], as_index=False, sort=False)[["slow_n", "base_n"]].sum()
        g = pd.concat([few, rest], ignore_index=True)
    if g.empty:
        return _NOTHING
    cut = rows.column("cut")[0].as_py()
    slow_total = int(weight[side].sum())
    return g[_COUNT_COLUMNS], slow_total, int(weight.sum()) - slow_total, None if cut is None else float(cut)


def _numeric_buckets(
    store: ReadStore, attrs: list[str], values: list[str | None]
) -> dict[tuple[str, str], str]:
    """Power-of-two bucket label of each (attribute, value) whose attribute has only values DuckDB
    reads as numbers (TRY_CAST AS DOUBLE); the other attributes are left out."""
    table = store.query(
        """WITH kv AS (SELECT unnest(?::VARCHAR[]) AS k, unnest(?::VARCHAR[]) AS v),
        num AS (SELECT k FROM kv GROUP BY k HAVING bool_and(TRY_CAST(v AS DOUBLE) IS NOT NULL))
        SELECT k, v, '<= ' || CAST(CAST(2 ** ceil(log2(greatest(TRY_CAST(v AS DOUBLE), 1))) AS BIGINT) AS VARCHAR) AS b
        FROM kv WHERE k IN (SELECT k FROM num)""",
        [attrs, values],
    )
    ks, vs, bs = (table.column(c).to_pylist() for c in ("k", "v", "b"))
    return {(k, v): b for k, v, b in zip(ks, vs, bs, strict=True)}


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

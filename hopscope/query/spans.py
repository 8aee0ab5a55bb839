"""Reads of hop_minutes and spans: end-to-end and per-edge latency, traffic, each hop's time, traces and exemplars."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from hopscope.errors import NotFoundError
from hopscope.histogram import quantiles_sql
from hopscope.model import Hop, ReadStore
from hopscope.query.windows import Window
from hopscope.store import Store

ENTRY_CLIENT = ""


def _route_clause(route: str | None) -> tuple[str, list[str]]:
    return (" AND route = ?", [route]) if route else ("", [])


def latency_series(
    store: ReadStore,
    w: Window,
    route: str | None = None,
    client: str = ENTRY_CLIENT,
    server: str | None = None,
) -> pd.DataFrame:
    """p50/p95/p99 (ms) per bucket from the merged histograms of one edge (default: end to end).

    Columns: t, count, p50, p95, p99, mean_ms.
    """
    rc, rp = _route_clause(route)
    sc, sp = (" AND server = ?", [server]) if server else ("", [])
    # One scan of hop_minutes (each DuckLake scan costs ~15 ms of catalog work before a row is read):
    # the rows feed both the merged histograms and the counts.
    sql = f"""
    WITH rows AS MATERIALIZED (
        SELECT time_bucket(to_seconds(?::BIGINT), minute) AS t, hist_idx, hist_cnt, count, duration_ms_sum
        FROM hop_minutes WHERE client = ? AND minute >= ? AND minute < ?{rc}{sc}
    ), q AS (
        {quantiles_sql("rows", ["t"], {"p50": 0.50, "p95": 0.95, "p99": 0.99})}
    ), m AS (
        SELECT t, sum(count) AS count, sum(duration_ms_sum) / nullif(sum(count), 0) AS mean_ms FROM rows GROUP BY t
    )
    SELECT m.t, m.count, q.p50, q.p95, q.p99, m.mean_ms FROM m LEFT JOIN q USING (t) ORDER BY m.t
    """
    params = [w.step_s, client, w.start, w.end, *rp, *sp]
    return store.query_df(sql, params)


def traffic_series(store: ReadStore, w: Window, route: str | None = None) -> pd.DataFrame:
    """Requests per second and error ratio per bucket, at the system's entry. Columns: t, rps, errors, error_ratio."""
    rc, rp = _route_clause(route)
    sql = f"""
    SELECT time_bucket(to_seconds(?::BIGINT), minute) AS t,
           sum(count) / ?::DOUBLE AS rps, sum(errors) AS errors,
           sum(errors) / nullif(sum(count), 0)::DOUBLE AS error_ratio
    FROM hop_minutes WHERE client = ? AND minute >= ? AND minute < ?{rc}
    GROUP BY 1 ORDER BY 1
    """
    return store.query_df(sql, [w.step_s, float(w.step_s), ENTRY_CLIENT, w.start, w.end, *rp])


def hop_latency_series(store: ReadStore, w: Window, route: str | None = None) -> pd.DataFrame:
    """Mean time each hop adds to one end-to-end request, per bucket (they stack to the mean latency).

    A hop is a service's self time (named for the service) or an edge's network gap
    (named ``client->server``). Columns: t, hop, part ('self' | 'network'), ms.
    """
    rc, rp = _route_clause(route)
    sql = f"""
    WITH base AS (
        SELECT time_bucket(to_seconds(?::BIGINT), minute) AS t, client, server, count, self_ms_sum, gap_ms_sum
        FROM hop_minutes WHERE minute >= ? AND minute < ?{rc}
    ), entry AS (
        SELECT t, sum(count) AS n FROM base WHERE client = ? GROUP BY t
    ), hops AS (
        SELECT t, server AS hop, 'self' AS part, sum(self_ms_sum) AS ms FROM base GROUP BY t, server
        UNION ALL
        SELECT t, {Hop.sql("client", "server")} AS hop, 'network' AS part, sum(gap_ms_sum) AS ms
        FROM base WHERE client <> ? GROUP BY t, client, server
    )
    SELECT hops.t, hop, part, ms / entry.n AS ms FROM hops JOIN entry USING (t) WHERE entry.n > 0
    ORDER BY hops.t, part DESC, hop
    """
    return store.query_df(sql, [w.step_s, w.start, w.end, *rp, ENTRY_CLIENT, ENTRY_CLIENT])


def hop_series(store: ReadStore, w: Window, hop: str) -> pd.DataFrame:
    """One hop's time per request (ms) per bucket. Columns: t, ms."""
    df = hop_latency_series(store, w)
    return df[df["hop"] == hop].groupby("t", as_index=False)["ms"].sum()


def routes(store: ReadStore) -> list[str]:
    df = store.query_df("SELECT DISTINCT route FROM hop_minutes WHERE client = ? ORDER BY 1", [ENTRY_CLIENT])
    return [str(r) for r in df["route"]]


def services(store: ReadStore) -> list[str]:
    df = store.query_df(
        "SELECT DISTINCT s FROM (SELECT server AS s FROM hop_minutes UNION SELECT client FROM hop_minutes "
        "UNION SELECT service FROM samples WHERE service IS NOT NULL) WHERE s <> '' ORDER BY 1"
    )
    return [str(s) for s in df["s"]]


def hop_edges(store: ReadStore, w: Window, route: str | None = None) -> pd.DataFrame:
    """One row per edge over the window: requests/s, error ratio, p99 (ms), mean network gap and server self time (ms)."""
    rc, rp = _route_clause(route)
    sql = f"""
    WITH rows AS (
        SELECT client, server, count, errors, duration_ms_sum, gap_ms_sum, self_ms_sum, hist_idx, hist_cnt
        FROM hop_minutes WHERE minute >= ? AND minute < ?{rc}
    ), agg AS (
        SELECT client, server, sum(count) AS count, sum(errors) AS errors, sum(duration_ms_sum) AS dur,
               sum(gap_ms_sum) AS gap, sum(self_ms_sum) AS self FROM rows GROUP BY client, server
    ), q AS (
        {quantiles_sql("rows", ["client", "server"], {"p99": 0.99})}
    )
    SELECT agg.client, agg.server, count / ?::DOUBLE AS rps, errors / nullif(count, 0)::DOUBLE AS error_ratio,
           q.p99, dur / nullif(count, 0) AS mean_ms, gap / nullif(count, 0) AS gap_ms, self / nullif(count, 0) AS self_ms
    FROM agg LEFT JOIN q USING (client, server) ORDER BY agg.client, agg.server
    """
    seconds = max((w.end - w.start).total_seconds(), 1.0)
    return store.query_df(sql, [w.start, w.end, *rp, seconds])


def trace_spans(store: ReadStore, trace_id: str) -> pd.DataFrame:
    """Spans of one trace (hex id), ordered by start, with their critical-path flag; empty when none
    are stored (spans expire long before the rollups that name a trace as an exemplar).

    Columns: span_id, parent_span_id, service, name, kind, start_time, duration_ms, status_code,
    offset_ms (from the trace's start), critical (bool).
    """
    tid = trace_id.strip().lower()
    if len(tid) != 32 or any(ch not in "0123456789abcdef" for ch in tid):
        raise NotFoundError(f"trace id {trace_id!r} is not 32 hex digits")
    # Not `trace_id = unhex(?)`: DuckDB 1.5.5 probes a Parquet file's bloom filter with a BLOB constant
    # hashed in its escaped text form (duckdb/duckdb#24994), so every span file written with a bloom
    # filter on trace_id (one dictionary-encoded row group) looks as if it lacked the trace, and the
    # read finds nothing. A range of one value is pruned by the files' min/max alone (as fast), and
    # probes no bloom filter.
    df = store.query_df(
        """
        SELECT lower(hex(span_id)) AS span_id, lower(hex(parent_span_id)) AS parent_span_id, service, name, kind,
               start_time, duration_ms, status_code
        FROM spans WHERE trace_id >= unhex(?) AND trace_id <= unhex(?) ORDER BY start_time
        """,
        [tid, tid],
    )
    if df.empty:
        return df.assign(offset_ms=pd.Series(dtype=float), critical=pd.Series(dtype=bool))
    t0 = df["start_time"].min()
    df["offset_ms"] = (df["start_time"] - t0).dt.total_seconds() * 1000.0
    df["critical"] = df["span_id"].isin(critical_path(df))
    return df


# Timestamps are microseconds: a call that starts within this of the previous one's end follows it.
CRITICAL_SLACK_MS = 0.001


def critical_path(spans: pd.DataFrame) -> set[str]:
    """Span ids on the critical path, walked back from the root's end as Jaeger does.

    Within a span, from its end (or from where the walk came back to it): the child that finishes
    last before that point is critical; walk into it, then go on back from that child's start.
    Calls made one after another are all critical; of calls in parallel, the one that ends last.
    A child is clipped to its parent's time (an async child outliving its parent counts up to the
    parent's end; one starting after the parent ended is not on the path).
    Columns used: span_id, parent_span_id, offset_ms, duration_ms.
    """
    recs = spans.to_dict("records")
    ids = {r["span_id"] for r in recs}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for rec in recs:
        parent = rec.get("parent_span_id")
        if isinstance(parent, str) and parent and parent in ids and parent != rec["span_id"]:
            children.setdefault(parent, []).append(rec)
        else:
            roots.append(rec)
    if not roots:
        return set()
    root = max(roots, key=lambda r: r["duration_ms"])
    path: set[str] = set()
    todo = [(root, float(root["offset_ms"]), float(root["offset_ms"] + root["duration_ms"]))]
    while todo:
        span, lo, hi = todo.pop()
        if span["span_id"] in path:  # a span id seen twice (bad data): walk it once
            continue
        path.add(span["span_id"])
        clipped = []
        for kid in children.get(span["span_id"], []):
            start, end = float(kid["offset_ms"]), float(kid["offset_ms"] + kid["duration_ms"])
            start, end = max(start, lo), min(end, hi)
            if end > start:
                clipped.append((end, start, kid))
        point = hi
        for end, start, kid in sorted(clipped, key=lambda c: -c[0]):  # the last to finish first
            if end <= point + CRITICAL_SLACK_MS:
                todo.append((kid, start, end))
                point = start
    return path


def exemplar_traces(store: ReadStore, start: datetime, end: datetime, limit: int = 10) -> pd.DataFrame:
    """The slowest exemplar traces named by end-to-end rollups in [start, end) that still have spans.

    Columns: trace_id, duration_ms, start_time, spans.

    The join compares hex text: on the blob column DuckDB 1.5.5 pushes a few join keys into the Parquet
    reader as constants, which miss in files with a bloom filter on trace_id (duckdb/duckdb#24994; one
    exemplar found none of its spans).
    """
    return store.query_df(
        """
        WITH ex AS (
            SELECT DISTINCT unnest(exemplars) AS trace_id FROM hop_minutes
            WHERE client = ? AND minute >= ? AND minute < ?
        )
        SELECT lower(hex(s.trace_id)) AS trace_id, max(s.duration_ms) AS duration_ms, min(s.start_time) AS start_time,
               count(*) AS spans
        FROM spans s JOIN ex ON lower(hex(s.trace_id)) = ex.trace_id
        WHERE s.start_time >= ? - INTERVAL 1 HOUR AND s.start_time < ? + INTERVAL 1 HOUR
        GROUP BY 1 ORDER BY duration_ms DESC LIMIT ?
        """,
        [ENTRY_CLIENT, start, end, start, end, int(limit)],
    )


def exemplars_named(store: ReadStore, start: datetime, end: datetime) -> int:
    """How many distinct traces the end-to-end rollups in [start, end) name as exemplars (with spans or not)."""
    row = store.query(
        "SELECT count(DISTINCT t) AS n FROM (SELECT unnest(exemplars) AS t FROM hop_minutes "
        "WHERE client = ? AND minute >= ? AND minute < ?)",
        [ENTRY_CLIENT, start, end],
    ).to_pylist()[0]
    return int(row["n"] or 0)


def span_retention(store: Store) -> tuple[timedelta | None, timedelta | None]:
    """(how long spans are kept, how long exemplar and error traces are kept): rollups outlive both."""
    keep = store.retention.get("spans")
    exemplar = getattr(store, "exemplar_retention", None)
    return keep, (max(exemplar, keep) if exemplar is not None and keep is not None else exemplar)

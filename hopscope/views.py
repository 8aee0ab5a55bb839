"""Read-side queries for the dashboard and reports: every SQL statement the pages need.

Each function takes a Store and a time window and returns a small pandas
DataFrame, aggregated inside DuckDB to at most ``MAX_POINTS`` buckets per
series, so a 90-day range costs the browser no more than a 1-hour one.
Pages call these and draw what they return; they hold no SQL and no math.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from hopscope.errors import NotFoundError
from hopscope.histogram import GAMMA
from hopscope.store import Store, utcnow

MAX_POINTS = 2000
# Bucket widths a chart may use, in seconds; the smallest that keeps a series <= MAX_POINTS wins.
STEPS_S: tuple[int, ...] = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# Relative ranges the UI offers (the allow-list for ?range=).
RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "28d": timedelta(days=28),
    "90d": timedelta(days=90),
}
# Data whose newest minute is older than this is shown as a replay ("demo data, ends at ...").
LIVE_LAG = timedelta(minutes=5)
# A source whose last sample is older than this is marked stale.
STALE_AFTER = timedelta(minutes=2)
ENTRY_CLIENT = ""


@dataclass(frozen=True, slots=True)
class Window:
    """A time range to draw: [start, end), the bucket width, and whether "now" is the data's end."""

    start: datetime
    end: datetime
    step_s: int
    replay: bool  # True when the data ends well before the wall clock (demo or stopped collectors)
    data_end: datetime | None

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC"


def step_for(start: datetime, end: datetime, max_points: int = MAX_POINTS) -> int:
    """The smallest bucket width (seconds) that keeps [start, end) within max_points buckets."""
    span = max((end - start).total_seconds(), 60.0)
    for step in STEPS_S:
        if span / step <= max_points:
            return step
    return int(math.ceil(span / max_points / 86400) * 86400)


def data_end(store: Store) -> datetime | None:
    """The end of the newest rolled-up minute (or sample), None for an empty store."""
    row = store.query(
        "SELECT (SELECT max(minute) FROM hop_minutes) AS hm, (SELECT max(ts) FROM samples) AS s"
    ).to_pylist()[0]
    ends = [t for t in (row["hm"] + timedelta(minutes=1) if row["hm"] else None, row["s"]) if t is not None]
    return max(ends) if ends else None


def data_start(store: Store) -> datetime | None:
    row = store.query("SELECT min(minute) AS lo FROM hop_minutes").to_pylist()[0]
    return row["lo"]


def effective_now(store: Store, now: datetime | None = None) -> tuple[datetime, bool, datetime | None]:
    """(now, replay, data_end): the wall clock, or the data's end when the data stopped a while ago."""
    wall = now or utcnow()
    end = data_end(store)
    if end is not None and wall - end > LIVE_LAG:
        return end, True, end
    return wall, False, end


def window(
    store: Store,
    range_key: str = "24h",
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> Window:
    """Resolve a relative range (one of RANGES) or an absolute [start, end) into a Window."""
    current, replay, last = effective_now(store, now)
    if start is not None and end is not None:
        if end <= start:
            raise NotFoundError(f"time range: end {end:%Y-%m-%d %H:%M} is not after start {start:%Y-%m-%d %H:%M}")
        lo, hi = start, end
    else:
        if range_key not in RANGES:
            raise NotFoundError(f"time range {range_key!r} is not one of {', '.join(RANGES)}")
        hi = current.replace(second=0, microsecond=0) + (timedelta(minutes=1) if current.second or current.microsecond else timedelta())
        lo = hi - RANGES[range_key]
    return Window(lo, hi, step_for(lo, hi), replay, last)


def _route_clause(route: str | None) -> tuple[str, list[Any]]:
    return (" AND route = ?", [route]) if route else ("", [])


# --------------------------------------------------------------------------------- latency


def latency_series(store: Store, w: Window, route: str | None = None, client: str = ENTRY_CLIENT, server: str | None = None) -> pd.DataFrame:
    """p50/p95/p99 (ms) per bucket from the merged histograms of one edge (default: end to end).

    Columns: t, count, p50, p95, p99, mean_ms.
    """
    rc, rp = _route_clause(route)
    sc, sp = (" AND server = ?", [server]) if server else ("", [])
    sql = f"""
    WITH rows AS (
        SELECT time_bucket(to_seconds(?::BIGINT), minute) AS t, hist_idx, hist_cnt
        FROM hop_minutes WHERE client = ? AND minute >= ? AND minute < ?{rc}{sc}
    ), h AS (
        SELECT t, unnest(hist_idx) AS i, unnest(hist_cnt) AS c FROM rows
    ), b AS (
        SELECT t, i, sum(c) AS c FROM h GROUP BY t, i
    ), cum AS (
        SELECT t, i, sum(c) OVER (PARTITION BY t ORDER BY i) AS cum, sum(c) OVER (PARTITION BY t) AS tot FROM b
    ), q AS (
        SELECT t,
            pow(?, min(i) FILTER (WHERE cum >= 0.50 * tot) - 0.5) AS p50,
            pow(?, min(i) FILTER (WHERE cum >= 0.95 * tot) - 0.5) AS p95,
            pow(?, min(i) FILTER (WHERE cum >= 0.99 * tot) - 0.5) AS p99
        FROM cum GROUP BY t
    ), m AS (
        SELECT time_bucket(to_seconds(?::BIGINT), minute) AS t, sum(count) AS count,
               sum(duration_ms_sum) / nullif(sum(count), 0) AS mean_ms
        FROM hop_minutes WHERE client = ? AND minute >= ? AND minute < ?{rc}{sc} GROUP BY 1
    )
    SELECT m.t, m.count, q.p50, q.p95, q.p99, m.mean_ms FROM m LEFT JOIN q USING (t) ORDER BY m.t
    """
    params = [w.step_s, client, w.start, w.end, *rp, *sp, GAMMA, GAMMA, GAMMA, w.step_s, client, w.start, w.end, *rp, *sp]
    return store.query_df(sql, params)


def traffic_series(store: Store, w: Window, route: str | None = None) -> pd.DataFrame:
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


def hop_latency_series(store: Store, w: Window, route: str | None = None) -> pd.DataFrame:
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
        SELECT t, client || '->' || server AS hop, 'network' AS part, sum(gap_ms_sum) AS ms
        FROM base WHERE client <> ? GROUP BY t, client, server
    )
    SELECT hops.t, hop, part, ms / entry.n AS ms FROM hops JOIN entry USING (t) WHERE entry.n > 0
    ORDER BY hops.t, part DESC, hop
    """
    return store.query_df(sql, [w.step_s, w.start, w.end, *rp, ENTRY_CLIENT, ENTRY_CLIENT])


def routes(store: Store) -> list[str]:
    df = store.query_df("SELECT DISTINCT route FROM hop_minutes WHERE client = ? ORDER BY 1", [ENTRY_CLIENT])
    return [str(r) for r in df["route"]]


def services(store: Store) -> list[str]:
    df = store.query_df(
        "SELECT DISTINCT s FROM (SELECT server AS s FROM hop_minutes UNION SELECT client FROM hop_minutes "
        "UNION SELECT service FROM samples WHERE service IS NOT NULL) WHERE s <> '' ORDER BY 1"
    )
    return [str(s) for s in df["s"]]


# --------------------------------------------------------------------------------- hops


def hop_edges(store: Store, w: Window, route: str | None = None) -> pd.DataFrame:
    """One row per edge over the window: requests/s, error ratio, p99 (ms), mean network gap and server self time (ms)."""
    rc, rp = _route_clause(route)
    sql = f"""
    WITH rows AS (
        SELECT client, server, count, errors, duration_ms_sum, gap_ms_sum, self_ms_sum, hist_idx, hist_cnt
        FROM hop_minutes WHERE minute >= ? AND minute < ?{rc}
    ), agg AS (
        SELECT client, server, sum(count) AS count, sum(errors) AS errors, sum(duration_ms_sum) AS dur,
               sum(gap_ms_sum) AS gap, sum(self_ms_sum) AS self FROM rows GROUP BY client, server
    ), h AS (
        SELECT client, server, unnest(hist_idx) AS i, unnest(hist_cnt) AS c FROM rows
    ), b AS (
        SELECT client, server, i, sum(c) AS c FROM h GROUP BY ALL
    ), cum AS (
        SELECT client, server, i, sum(c) OVER (PARTITION BY client, server ORDER BY i) AS cum,
               sum(c) OVER (PARTITION BY client, server) AS tot FROM b
    ), q AS (
        SELECT client, server, pow(?, min(i) FILTER (WHERE cum >= 0.99 * tot) - 0.5) AS p99 FROM cum GROUP BY ALL
    )
    SELECT agg.client, agg.server, count / ?::DOUBLE AS rps, errors / nullif(count, 0)::DOUBLE AS error_ratio,
           q.p99, dur / nullif(count, 0) AS mean_ms, gap / nullif(count, 0) AS gap_ms, self / nullif(count, 0) AS self_ms
    FROM agg LEFT JOIN q USING (client, server) ORDER BY agg.client, agg.server
    """
    seconds = max((w.end - w.start).total_seconds(), 1.0)
    return store.query_df(sql, [w.start, w.end, *rp, GAMMA, seconds])


# --------------------------------------------------------------------------------- samples

# Label keys that name a series inside one metric (allow-list: they become part of a series name).
SERIES_LABELS: tuple[str, ...] = ("gpu", "device", "phase", "target")


def metric_series(
    store: Store,
    w: Window,
    metrics: Sequence[str],
    *,
    counters: Sequence[str] = (),
    service: str | None = None,
) -> pd.DataFrame:
    """Samples of the given metrics per bucket: mean for gauges, per-second rate for counters.

    Columns: t, metric, service, series (the identifying label values), value.
    """
    if not metrics:
        return pd.DataFrame(columns=["t", "metric", "service", "series", "value"])
    marks = ", ".join("?" for _ in metrics)
    cmarks = ", ".join("?" for _ in counters) or "NULL"
    label_expr = "concat_ws('/', " + ", ".join(f"labels['{k}']" for k in SERIES_LABELS) + ")"
    svc, sp = (" AND service = ?", [service]) if service else ("", [])
    # Counter rates come from consecutive samples of one series (a reset counts from zero), so
    # a bucket with a single sample still has a rate; the bucket's value is their mean.
    sql = f"""
    WITH s AS (
        SELECT metric, coalesce(service, '') AS service, {label_expr} AS series, ts, value
        FROM samples WHERE metric IN ({marks}) AND ts >= ? - INTERVAL 10 MINUTE AND ts < ? AND isfinite(value){svc}
    ), d AS (
        SELECT *, CASE WHEN metric IN ({cmarks}) THEN
            (CASE WHEN value >= lag(value) OVER w THEN value - lag(value) OVER w ELSE value END)
            / nullif(epoch(ts - lag(ts) OVER w), 0)
        ELSE value END AS v
        FROM s WINDOW w AS (PARTITION BY metric, service, series ORDER BY ts)
    )
    SELECT time_bucket(to_seconds(?::BIGINT), ts) AS t, metric, service, series, avg(v) AS value
    FROM d WHERE ts >= ? AND v IS NOT NULL GROUP BY ALL ORDER BY t
    """
    params = [*metrics, w.start, w.end, *sp, *counters, w.step_s, w.start]
    df = store.query_df(sql, params)
    return df.dropna(subset=["value"]) if not df.empty else df


def sample_metrics(store: Store) -> pd.DataFrame:
    """Every metric in samples with its series count and time range."""
    return store.query_df(
        "SELECT metric, count(DISTINCT coalesce(service, '') || coalesce(host, '')) AS series, count(*) AS rows, "
        "min(ts) AS first, max(ts) AS last FROM samples GROUP BY metric ORDER BY metric"
    )


# --------------------------------------------------------------------------------- freshness


def freshness(store: Store, now: datetime) -> pd.DataFrame:
    """Per collector/source: last success, last attempt, attempts, failures, rows, age and staleness.

    Collectors that wrote samples but no collector_runs rows (e.g. the demo generator) appear
    with their last sample time.
    """
    runs = store.query_df(
        """
        SELECT collector AS source, max(ts) FILTER (WHERE ok) AS last_ok, max(ts) AS last_attempt,
               count(*) AS attempts, count(*) FILTER (WHERE NOT ok) AS failures, sum(rows) AS rows,
               arg_max(error, ts) FILTER (WHERE NOT ok) AS last_error,
               count(DISTINCT target) AS targets
        FROM collector_runs GROUP BY collector
        """
    )
    samples = store.query_df("SELECT source, max(ts) AS last_sample, count(*) AS sample_rows FROM samples GROUP BY source")
    df = pd.merge(runs, samples, on="source", how="outer")
    if df.empty:
        return pd.DataFrame(columns=["source", "last_seen", "age_s", "stale", "attempts", "failures", "error_ratio", "rows", "last_error"])
    df["last_seen"] = df[["last_ok", "last_sample"]].max(axis=1)
    df["age_s"] = (pd.Timestamp(now) - pd.to_datetime(df["last_seen"])).dt.total_seconds()
    df["stale"] = df["age_s"] > STALE_AFTER.total_seconds()
    df["attempts"] = df["attempts"].fillna(0).astype(int)
    df["failures"] = df["failures"].fillna(0).astype(int)
    df["error_ratio"] = df["failures"] / df["attempts"].where(df["attempts"] > 0)
    df["rows"] = df["rows"].fillna(df["sample_rows"]).fillna(0).astype(int)
    return df.sort_values("source").reset_index(drop=True)


def collector_runs(store: Store, w: Window) -> pd.DataFrame:
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
    for table, col in (("spans", "start_time"), ("hop_minutes", "minute"), ("samples", "ts"), ("collector_runs", "ts")):
        r = store.query(f'SELECT count(*) AS n, min("{col}") AS lo, max("{col}") AS hi FROM "{table}"').to_pylist()[0]
        keep = store.retention.get(table)
        rows.append({"table": table, "rows": r["n"], "first": r["lo"], "last": r["hi"], "retention_days": keep.days if keep else None})
    return pd.DataFrame(rows)


def state_rows(store: Store, prefix: str = "") -> pd.DataFrame:
    """Watermarks and other small state (backfill progress), newest first."""
    return store.query_df(
        "SELECT key, value, updated FROM state WHERE starts_with(key, ?) ORDER BY updated DESC", [prefix]
    )


# --------------------------------------------------------------------------------- traces


def trace_spans(store: Store, trace_id: str) -> pd.DataFrame:
    """Spans of one trace (hex id), ordered by start, with their critical-path flag.

    Columns: span_id, parent_span_id, service, name, kind, start_time, duration_ms, status_code,
    offset_ms (from the trace's start), critical (bool).
    """
    tid = trace_id.strip().lower()
    if len(tid) != 32 or any(ch not in "0123456789abcdef" for ch in tid):
        raise NotFoundError(f"trace id {trace_id!r} is not 32 hex digits")
    df = store.query_df(
        """
        SELECT lower(hex(span_id)) AS span_id, lower(hex(parent_span_id)) AS parent_span_id, service, name, kind,
               start_time, duration_ms, status_code
        FROM spans WHERE trace_id = unhex(?) ORDER BY start_time
        """,
        [tid],
    )
    if df.empty:
        return df.assign(offset_ms=pd.Series(dtype=float), critical=pd.Series(dtype=bool))
    t0 = df["start_time"].min()
    df["offset_ms"] = (df["start_time"] - t0).dt.total_seconds() * 1000.0
    df["critical"] = df["span_id"].isin(critical_path(df))
    return df


def critical_path(spans: pd.DataFrame) -> set[str]:
    """Span ids on the critical path: from the root, repeatedly the child that ends last."""
    ids = set(spans["span_id"])
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for rec in spans.to_dict("records"):
        parent = rec.get("parent_span_id") or ""
        if parent and parent in ids:
            children.setdefault(parent, []).append(rec)
        else:
            roots.append(rec)
    if not roots:
        return set()
    node = max(roots, key=lambda r: r["duration_ms"])
    path = set()
    while node is not None:
        path.add(node["span_id"])
        kids = children.get(node["span_id"], [])
        node = max(kids, key=lambda r: r["offset_ms"] + r["duration_ms"]) if kids else None
    return path


def exemplar_traces(store: Store, start: datetime, end: datetime, limit: int = 10) -> pd.DataFrame:
    """The slowest exemplar traces named by end-to-end rollups in [start, end) that still have spans.

    Columns: trace_id, duration_ms, start_time, spans.
    """
    return store.query_df(
        """
        WITH ex AS (
            SELECT DISTINCT unnest(exemplars) AS trace_id FROM hop_minutes
            WHERE client = ? AND minute >= ? AND minute < ?
        )
        SELECT lower(hex(s.trace_id)) AS trace_id, max(s.duration_ms) AS duration_ms, min(s.start_time) AS start_time,
               count(*) AS spans
        FROM spans s JOIN ex ON s.trace_id = unhex(ex.trace_id)
        WHERE s.start_time >= ? - INTERVAL 1 HOUR AND s.start_time < ? + INTERVAL 1 HOUR
        GROUP BY 1 ORDER BY duration_ms DESC LIMIT ?
        """,
        [ENTRY_CLIENT, start, end, start, end, int(limit)],
    )

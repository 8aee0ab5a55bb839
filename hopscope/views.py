"""Read-side queries for the dashboard and reports: every SQL statement the pages need.

Each function takes a Store and a time window and returns a small pandas
DataFrame, aggregated inside DuckDB to at most ``model.MAX_POINTS`` buckets per
series, so a 90-day range costs the browser no more than a 1-hour one.
Pages call these and draw what they return; they hold no SQL and no math.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from hopscope.errors import NotFoundError, StoreError
from hopscope.histogram import quantiles_sql
from hopscope.model import SAMPLE_STEPS_S, SERIES_LABELS, Hop, TimeRange, step_for
from hopscope.rates import counter_rate_sql
from hopscope.store import Store, utcnow

# Relative ranges the UI offers (the allow-list for ?range=).
RANGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
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
class Window(TimeRange):
    """A time range to draw: [start, end), the bucket width, and whether "now" is the data's end."""

    step_s: int
    replay: bool  # True when the data ends well before the wall clock (demo or stopped collectors)
    data_end: datetime | None
    sample_step: int = 0  # bucket width of sample series; 0: the finest of SAMPLE_STEPS_S for the span

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC"

    @property
    def sample_step_s(self) -> int:
        """The bucket width of series read from samples: finer than step_s on short ranges, never coarser."""
        return self.sample_step or min(self.step_s, step_for(self.start, self.end, steps=SAMPLE_STEPS_S))

    def __post_init__(self) -> None:
        # Unlike a TimeRange it may be empty: part() of a live window whose buckets are all final.
        if self.end < self.start:
            raise StoreError(f"window end {self.end} is before its start {self.start}")

    def part(self, start: datetime) -> Window:
        """The same buckets from `start` on (a bucket boundary): to query only what may have changed."""
        return Window(start, self.end, self.step_s, self.replay, self.data_end, self.sample_step_s)


def data_end(store: Store) -> datetime | None:
    """The end of the newest rolled-up minute (or sample), None for an empty store."""
    ends = [t for t in data_ends(store) if t is not None]
    return max(ends) if ends else None


def data_ends(store: Store) -> tuple[datetime | None, datetime | None]:
    """(end of the newest rolled-up minute, newest sample): rollups move once a minute, 1 Hz samples
    every second, so what is read from one need not be re-read when only the other moved."""
    row = store.query(
        "SELECT (SELECT max(minute) FROM hop_minutes) AS hm, (SELECT max(ts) FROM samples) AS s"
    ).to_pylist()[0]
    return (row["hm"] + timedelta(minutes=1) if row["hm"] else None, row["s"])


def data_start(store: Store) -> datetime | None:
    lo: datetime | None = store.query("SELECT min(minute) AS lo FROM hop_minutes").to_pylist()[0]["lo"]
    return lo


_UNKNOWN: Any = object()


def effective_now(
    store: Store, now: datetime | None = None, *, last: datetime | None = _UNKNOWN
) -> tuple[datetime, bool, datetime | None]:
    """(now, replay, data_end): the wall clock, or the data's end when the data stopped a while ago.

    `last` is data_end(store) when the caller already has it (the dashboard caches it for a few seconds).
    """
    wall = now or utcnow()
    end = data_end(store) if last is _UNKNOWN else last
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
    last: datetime | None = _UNKNOWN,
) -> Window:
    """Resolve a relative range (one of RANGES) or an absolute [start, end) into a Window."""
    current, replay, last = effective_now(store, now, last=last)
    if start is not None and end is not None:
        if end <= start:
            raise NotFoundError(
                f"time range: end {end:%Y-%m-%d %H:%M} is not after start {start:%Y-%m-%d %H:%M}"
            )
        lo, hi = start, end
    else:
        if range_key not in RANGES:
            raise NotFoundError(f"time range {range_key!r} is not one of {', '.join(RANGES)}")
        hi = current.replace(second=0, microsecond=0) + (
            timedelta(minutes=1) if current.second or current.microsecond else timedelta()
        )
        lo = hi - RANGES[range_key]
        # Start on a bucket boundary: the first bucket is whole, and the window's buckets stay the
        # same ones for a whole bucket's time (a live page can re-query only its newest buckets).
        step = step_for(lo, hi)
        lo = datetime.fromtimestamp(lo.replace(tzinfo=UTC).timestamp() // step * step, UTC).replace(
            tzinfo=None
        )
    return Window(lo, hi, step_for(lo, hi), replay, last)


def _route_clause(route: str | None) -> tuple[str, list[Any]]:
    return (" AND route = ?", [route]) if route else ("", [])


# --------------------------------------------------------------------------------- latency


def latency_series(
    store: Store, w: Window, route: str | None = None, client: str = ENTRY_CLIENT, server: str | None = None
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
        SELECT t, {Hop.sql("client", "server")} AS hop, 'network' AS part, sum(gap_ms_sum) AS ms
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
    ), q AS (
        {quantiles_sql("rows", ["client", "server"], {"p99": 0.99})}
    )
    SELECT agg.client, agg.server, count / ?::DOUBLE AS rps, errors / nullif(count, 0)::DOUBLE AS error_ratio,
           q.p99, dur / nullif(count, 0) AS mean_ms, gap / nullif(count, 0) AS gap_ms, self / nullif(count, 0) AS self_ms
    FROM agg LEFT JOIN q USING (client, server) ORDER BY agg.client, agg.server
    """
    seconds = max((w.end - w.start).total_seconds(), 1.0)
    return store.query_df(sql, [w.start, w.end, *rp, seconds])


# --------------------------------------------------------------------------------- samples

# A counter's first bucket in a window is a rate against the last sample before it, up to this far back
# (Prometheus's default lookback): scrapes sparser than the bucket still give every bucket its rate.
COUNTER_LOOKBACK = timedelta(minutes=5)


def metric_series(
    store: Store,
    w: Window,
    metrics: Sequence[str],
    *,
    counters: Sequence[str] = (),
    service: str | None = None,
    match: Mapping[str, str] | None = None,
    bad_bits: bool = False,
) -> pd.DataFrame:
    """Samples of the given metrics per bucket: mean for gauges, per-second rate for counters.

    match: only the one series these labels name (its host and its SERIES_LABELS values; a key it
    lacks must be absent or empty), e.g. a diagnosis evidence's labels. bad_bits: a bitmask metric
    (clock-event reasons) reads 1 when a catalog "bad" bit is set, 0 otherwise, as the diagnosis
    reads it, so its mean is the share of samples with a bad bit set (a mean of raw bitmasks means nothing).

    Columns: t, metric, service, series (the identifying label values), value.
    """
    if not metrics:
        return pd.DataFrame(columns=["t", "metric", "service", "series", "value"])
    counters = [m for m in metrics if m in set(counters)]
    # The host leads the series name: two GPU nodes both have a GPU 0, and must not be averaged.
    label_expr = "concat_ws('/', host, " + ", ".join(f"labels['{k}']" for k in SERIES_LABELS) + ")"
    svc, sp = (" AND service = ?", [service]) if service else ("", [])
    if match is not None:
        svc += " AND coalesce(host, '') = ?" + "".join(
            f" AND coalesce(labels['{k}'], '') = ?" for k in SERIES_LABELS
        )
        sp += [str(match.get("host") or ""), *(str(match.get(k) or "") for k in SERIES_LABELS)]
    value_sql, vp = "value", list[Any]()
    if bad_bits:
        from hopscope.catalog import load_catalog
        from hopscope.signals import value_expression

        value_sql, vp = value_expression(load_catalog())
    # Gauges: the mean per bucket. Counters: per-second rates as hopscope.rates defines them (as the
    # diagnosis reads them: an evidence chart shows what it read).
    gauges = [m for m in metrics if m not in counters]
    parts, params = [], []
    if gauges:
        gm = ", ".join("?" for _ in gauges)
        parts.append(f"""
        SELECT time_bucket(to_seconds(?::BIGINT), ts) AS t, metric, coalesce(service, '') AS service,
               {label_expr} AS series, avg({value_sql}) AS value
        FROM samples WHERE metric IN ({gm}) AND ts >= ? AND ts < ? AND isfinite(value){svc}
        GROUP BY ALL""")
        params += [w.sample_step_s, *vp, *gauges, w.start, w.end, *sp]
    if counters:
        cm = ", ".join("?" for _ in counters)
        rows = f"""(
            SELECT time_bucket(to_seconds(?::BIGINT), ts) AS t, metric, coalesce(service, '') AS service,
                   {label_expr} AS series, ts, value
            FROM samples WHERE metric IN ({cm}) AND ts >= ? AND ts < ? AND isfinite(value){svc}
        )"""
        parts.append(
            f"SELECT t, metric, service, series, value FROM ({counter_rate_sql(rows, ['metric', 'service', 'series'], 't')})"
        )
        params += [
            w.sample_step_s,
            *counters,
            w.start - max(COUNTER_LOOKBACK, timedelta(seconds=w.sample_step_s)),
            w.end,
            *sp,
        ]
    sql = (
        "SELECT * FROM ("
        + " UNION ALL ".join(parts)
        + ") WHERE t >= ? AND value IS NOT NULL ORDER BY t, metric, service, series"
    )
    params.append(w.start)
    df = store.query_df(sql, params)
    return df.dropna(subset=["value"]) if not df.empty else df


def sample_metrics(store: Store) -> pd.DataFrame:
    """Every metric in samples with its series count and time range."""
    return store.query_df(
        "SELECT metric, count(DISTINCT coalesce(service, '') || coalesce(host, '')) AS series, count(*) AS rows, "
        "min(ts) AS first, max(ts) AS last FROM samples GROUP BY metric ORDER BY metric"
    )


# --------------------------------------------------------------------------------- freshness


def freshness(store: Store, now: datetime, by_target: bool = False) -> pd.DataFrame:
    """freshness_at(last_seen(store, by_target), now): see there."""
    return freshness_at(last_seen(store, by_target), now)


def last_seen(
    store: Store, by_target: bool = False, counts: bool = True, newest: datetime | None = None
) -> pd.DataFrame:
    """The queries behind freshness(): per source (x target) its runs and newest sample, not yet aged.

    counts=False leaves out the rows per source (sample_rows, a full scan), for a page that re-reads
    freshness every few seconds and shows no row counts. newest: the newest sample's time, if known."""
    per_target = """
        SELECT collector AS source, target, max(ts) FILTER (WHERE ok) AS last_ok, max(ts) AS last_attempt,
               count(*) AS attempts, count(*) FILTER (WHERE NOT ok) AS failures, sum(rows) AS rows,
               arg_max(error, ts) FILTER (WHERE NOT ok) AS last_error, max(ts) FILTER (WHERE NOT ok) AS last_fail
        FROM collector_runs GROUP BY 1, 2"""
    if by_target:
        sql = f"SELECT * EXCLUDE (last_fail) FROM ({per_target})"
    else:  # per source, the oldest target's last success: one stuck target makes it stale
        sql = f"""
        SELECT source, '' AS target, min(last_ok) AS last_ok, max(last_attempt) AS last_attempt,
               sum(attempts)::BIGINT AS attempts, sum(failures)::BIGINT AS failures, sum(rows)::BIGINT AS rows,
               arg_max(last_error, last_fail) AS last_error
        FROM ({per_target}) GROUP BY 1"""
    runs = store.query_df(sql)
    samples = last_samples(store, list(runs["source"]) if not runs.empty else [], newest)
    if counts:
        samples = samples.merge(sample_counts(store), on="source", how="left")
    return pd.merge(runs, samples, on="source", how="outer")


# Each source's newest sample is looked for this far before the newest of all, then further back
# only for a collector that has none in it: a full scan of samples costs ~0.5 s per 10M rows.
RECENT = timedelta(hours=1)


def last_samples(store: Store, sources: Sequence[str] = (), newest: datetime | None = None) -> pd.DataFrame:
    """Per source its newest sample (last_sample): from the last RECENT of data, then older for
    the `sources` (collectors) not seen in it. Columns: source, last_sample."""
    if newest is None:
        newest = store.query("SELECT max(ts) AS m FROM samples").to_pylist()[0]["m"]
    if newest is None:
        return pd.DataFrame(
            {"source": pd.Series(dtype=str), "last_sample": pd.Series(dtype="datetime64[us]")}
        )
    recent = store.query_df(
        "SELECT source, max(ts) AS last_sample FROM samples WHERE ts >= ? GROUP BY source", [newest - RECENT]
    )
    older = [s for s in dict.fromkeys(sources) if s not in set(recent["source"])]
    if older:
        marks = ", ".join("?" for _ in older)
        recent = pd.concat([recent, store.query_df(
            f"SELECT source, max(ts) AS last_sample FROM samples WHERE source IN ({marks}) GROUP BY source", older
        )], ignore_index=True)  # fmt: skip
    return recent


def sample_counts(store: Store) -> pd.DataFrame:
    """Rows in samples per source (a full scan: cache it). Columns: source, sample_rows."""
    return store.query_df("SELECT source, count(*) AS sample_rows FROM samples GROUP BY source")


def freshness_at(seen: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Per collector (or collector x target): last success, attempts, failures, rows, age and staleness.

    Columns: source, target, last_seen, age_s, stale, attempts, failures, error_ratio, rows, last_error.
    A collector's last success falls back to the newest sample it wrote (samples.source); sources that
    wrote samples but no collector_runs rows appear too. Per collector, the oldest target decides.
    """
    df = seen.copy()
    cols = [
        "source",
        "target",
        "last_seen",
        "age",
        "age_s",
        "stale",
        "attempts",
        "failures",
        "error_ratio",
        "rows",
        "last_error",
    ]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df["target"] = df["target"].fillna("")
    df["last_seen"] = df["last_ok"].where(df["last_ok"].notna(), df["last_sample"])
    df["age_s"] = (pd.Timestamp(now) - pd.to_datetime(df["last_seen"])).dt.total_seconds()
    df["stale"] = ~(df["age_s"] <= STALE_AFTER.total_seconds())
    df["attempts"] = df["attempts"].fillna(0).astype(int)
    df["failures"] = df["failures"].fillna(0).astype(int)
    df["error_ratio"] = df["failures"] / df["attempts"].where(df["attempts"] > 0)
    if "sample_rows" in df:
        df["rows"] = df["rows"].fillna(df["sample_rows"])
    df["rows"] = df["rows"].fillna(0).astype(int)
    if "last_error" not in df:
        df["last_error"] = None
    df["age"] = [age_text(a) for a in df["age_s"]]
    return df.sort_values(["source", "target"]).reset_index(drop=True)[cols]


def age_text(seconds: float) -> str:
    """'4 s', '3 min', '2 h', '6 d'; 'never' for a missing time."""
    if seconds is None or seconds != seconds:
        return "never"
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


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


def state_rows(store: Store, prefix: str = "") -> pd.DataFrame:
    """Watermarks and other small state (backfill progress), newest first."""
    return store.query_df(
        "SELECT key, value, updated FROM state WHERE starts_with(key, ?) ORDER BY updated DESC", [prefix]
    )


# --------------------------------------------------------------------------------- traces


def trace_spans(store: Store, trace_id: str) -> pd.DataFrame:
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


def exemplar_traces(store: Store, start: datetime, end: datetime, limit: int = 10) -> pd.DataFrame:
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


def exemplars_named(store: Store, start: datetime, end: datetime) -> int:
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


# --------------------------------------------------------------------------------- resource panels


@dataclass(frozen=True, slots=True)
class Panel:
    """One resource chart: which metrics, in which unit and dimension, against which capacity."""

    key: str
    dimension: str
    title: str
    metrics: tuple[str, ...]
    unit: str
    scale: float = 1.0  # stored value x scale = value in `unit`
    capacity: tuple[str, ...] = ()  # capacity = sum of these metrics per series
    hop: str | None = None  # a hop's self/network time from hop_minutes instead of samples


# The Overview shows two or three per dimension; the Resources page shows them all.
PANELS: tuple[Panel, ...] = (
    Panel("gpu_util", "compute", "GPU utilization", ("DCGM_FI_DEV_GPU_UTIL",), "%"),
    Panel("sm_clock", "compute", "SM clock", ("DCGM_FI_DEV_SM_CLOCK",), "MHz"),
    Panel(
        "clock_reasons",
        "compute",
        "Clock-event reasons (bitmask)",
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",),
        "bitmask",
    ),
    Panel("power", "compute", "GPU power", ("DCGM_FI_DEV_POWER_USAGE",), "W"),
    Panel("temp", "compute", "GPU temperature", ("DCGM_FI_DEV_GPU_TEMP",), "°C"),
    Panel("xid", "compute", "XID errors", ("DCGM_FI_DEV_XID_ERRORS",), "XID code"),
    Panel("cpu", "compute", "Host CPU utilization", ("node_cpu_utilization_ratio",), "%", scale=100.0),
    Panel(
        "link",
        "bandwidth",
        "Link throughput vs capacity",
        ("node_network_transmit_bytes_total", "node_network_receive_bytes_total"),
        "Gbit/s",
        8e-9,
        ("node_network_speed_bytes",),
    ),
    Panel("retrans", "bandwidth", "TCP retransmits", ("node_netstat_Tcp_RetransSegs",), "segments/s"),
    Panel(
        "drops",
        "bandwidth",
        "NIC drops",
        ("node_network_transmit_drop_total", "node_network_receive_drop_total"),
        "packets/s",
    ),
    Panel(
        "pcie",
        "bandwidth",
        "PCIe throughput",
        ("DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES"),
        "GB/s",
        1e-9,
    ),
    Panel("nvlink", "bandwidth", "NVLink throughput", ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",), "GB/s", 1e-9),
    Panel("probe", "bandwidth", "Probe phases", ("probe_http_duration_seconds",), "ms", 1000.0),
    Panel(
        "fb",
        "memory",
        "GPU framebuffer used",
        ("DCGM_FI_DEV_FB_USED",),
        "GiB",
        1 / 1024,
        ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"),
    ),
    Panel("mem_copy", "memory", "GPU memory-copy utilization", ("DCGM_FI_DEV_MEM_COPY_UTIL",), "%"),
    Panel("fs_self", "memory", "Feature-store self time", (), "ms per request", hop="feature-store"),
    Panel(
        "redis",
        "memory",
        "Feature-store memory",
        ("redis_memory_used_bytes",),
        "GiB",
        1 / 2**30,
        ("redis_memory_max_bytes",),
    ),
    Panel("redis_miss", "memory", "Feature-store cache misses", ("redis_keyspace_misses_total",), "misses/s"),
    Panel(
        "host_mem",
        "memory",
        "Host memory available",
        ("node_memory_MemAvailable_bytes",),
        "GiB",
        1 / 2**30,
        ("node_memory_MemTotal_bytes",),
    ),
)
PANELS_BY_KEY = {p.key: p for p in PANELS}
OVERVIEW_PANELS: dict[str, tuple[str, ...]] = {
    "compute": ("gpu_util", "sm_clock"),
    "bandwidth": ("link", "retrans", "probe"),
    "memory": ("fb", "fs_self", "redis"),
}


def _need(store: Store | None) -> Store:
    if store is None:
        raise NotFoundError("panels_series: no store given and no data passed in")
    return store


def _counters() -> set[str]:
    from hopscope.catalog import load_catalog

    return set(load_catalog().counters())


def panel_series(
    store: Store, w: Window, key: str, service: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, capacity) of one panel, already in the panel's unit. Columns: t, service, series, value."""
    return panels_series(store, w, (key,), service)[key]


def panel_metrics(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """(metrics, counters) that panels read from samples: their values and capacities (gauges,
    e.g. FB_USED + FB_FREE, link speed); counters are the values the catalog calls counters."""
    unknown = [k for k in keys if k not in PANELS_BY_KEY]
    if unknown:
        raise NotFoundError(f"no resource panel {unknown[0]!r} (panels: {', '.join(PANELS_BY_KEY)})")
    panels = [PANELS_BY_KEY[k] for k in keys]
    values = {m for p in panels if p.hop is None for m in p.metrics}
    capacity = {m for p in panels if p.hop is None for m in p.capacity}
    return sorted(values | capacity), sorted(_counters() & values)


def panels_series(
    store: Store | None,
    w: Window,
    keys: Sequence[str],
    service: str | None = None,
    *,
    samples: pd.DataFrame | None = None,
    hops: pd.DataFrame | None = None,
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """panel_series of several panels from one scan of samples (a page's panels cost one query, not one each).

    `samples` (metric_series of panel_metrics(keys)) and `hops` (hop_latency_series) may be given
    when the caller has them cached; what is not given is queried.
    """
    metrics, counters = panel_metrics(keys)
    panels = [PANELS_BY_KEY[k] for k in dict.fromkeys(keys)]
    empty = pd.DataFrame(columns=["t", "service", "series", "value"])
    if samples is None:
        samples = metric_series(_need(store), w, metrics, counters=counters, service=service)
    both = samples
    if hops is None and any(p.hop is not None for p in panels):
        hops = hop_latency_series(_need(store), w)
    out: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for panel in panels:
        if panel.hop is not None:
            d = hops[hops["hop"] == panel.hop]  # type: ignore[index]
            out[panel.key] = (
                d.assign(service=panel.hop, series=d["part"], value=d["ms"])[
                    ["t", "service", "series", "value"]
                ],
                empty,
            )
            continue
        df = both[both["metric"].isin(panel.metrics)] if not both.empty else both
        if len(panel.metrics) > 1 and not df.empty:  # e.g. transmit and receive: name the direction
            df = df.assign(
                series=[
                    f"{s} {m.split('_')[2] if m.startswith('node_network') else m.rsplit('_', 2)[-2]}".strip()
                    for s, m in zip(df["series"], df["metric"], strict=True)
                ]
            )
        cap = empty
        c = both[both["metric"].isin(panel.capacity)] if panel.capacity and not both.empty else empty
        if not c.empty:
            per_series = c.groupby(["t", "service", "series"], as_index=False)["value"].sum()
            cap = per_series.groupby("t", as_index=False)["value"].max().assign(service="", series="capacity")
            cap["value"] = cap["value"] * panel.scale
        df = df[["t", "service", "series", "value"]].reset_index(drop=True) if not df.empty else empty.copy()
        df["value"] = df["value"] * panel.scale
        out[panel.key] = (df, cap)
    return out


# --------------------------------------------------------------------------------- SLOs and breaches


def entry_latency_threshold(rules: str, route: str | None) -> float | None:
    """The latency threshold (ms) of the end-to-end SLOs on ``route`` (any route when None), to draw on the
    end-to-end latency chart; None when there is none or they disagree (one line would mislead)."""
    found = {
        float(s.sli.threshold_ms)
        for s in load_rules(rules)[0]
        if s.sli.kind == "latency"
        and not getattr(s.sli, "hop", None)
        and s.sli.threshold_ms is not None
        and (route is None or getattr(s.sli, "route", None) in (None, route))
    }
    return found.pop() if len(found) == 1 else None


def load_rules(rules: str) -> tuple[list[Any], list[str]]:
    """The SLOs under a rules path and the errors of the files that were refused (as text)."""
    slos, errors = _load_rules(rules, _rules_signature(rules))
    return list(slos), list(errors)


def _rules_signature(rules: str) -> tuple[tuple[str, int, int], ...]:
    """(path, mtime_ns, size) of every file under a rules path: what decides whether to parse again."""
    root = Path(rules)
    try:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except OSError:
        return ()


@functools.lru_cache(maxsize=16)
def _load_rules(
    rules: str, signature: tuple[tuple[str, int, int], ...]
) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """Parsing YAML costs ~60 ms a time; parse again only when a file changed (signature is the key)."""
    from hopscope.slo import load_slos

    slos, errors = load_slos(rules)
    return tuple(slos), tuple(str(e) for e in errors)


def slo_names(store: Store | None, rules: str) -> list[str]:
    """Names of the SLOs under a rules path (store unused: the signature every view shares)."""
    return [s.name for s in load_rules(rules)[0]]


def get_slo(rules: str, name: str) -> Any:
    for s in load_rules(rules)[0]:
        if s.name == name:
            return s
    raise NotFoundError(
        f"no SLO named {name!r} in {rules} (SLOs: {', '.join(slo_names(None, rules)) or 'none'})"
    )


def slo_statuses(store: Store, rules: str, now: datetime) -> pd.DataFrame:
    """One row per SLO at ``now``: slo, description, objective, sli, budget_remaining, burn_rates (dict),
    alert_state, time_to_exhaustion, threshold_ms, notes."""
    from hopscope.slo import evaluate_many

    slos = load_rules(rules)[0]
    rows = []
    # breaches=False: a row shows no breaches (breach_table does), and without them the grid is one
    # period long, not two
    for slo, st in zip(slos, evaluate_many(store, slos, now=now, breaches=False), strict=True):
        rows.append(
            {
                "slo": slo.name,
                "description": slo.description,
                "objective": st.objective,
                "sli": st.sli,
                "budget_remaining": st.budget_remaining,
                "burn_rates": dict(st.burn_rates),
                "alert_state": st.alert_state,
                "time_to_exhaustion": st.time_to_exhaustion,
                "threshold_ms": slo.sli.threshold_ms,
                "window": getattr(slo.window, "label", None) or str(slo.window.nominal),
                "notes": list(st.notes),
                "firing": list(st.firing),
            }
        )
    return pd.DataFrame(rows)


BREACH_COLUMNS = [
    "number",
    "id",
    "slo",
    "start",
    "end",
    "severity",
    "peak_burn_rate",
    "budget_consumed",
    "windows",
]


def breach_table(
    store: Store, rules: str, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Every breach of every SLO over stored history, numbered 1.. by start; only those overlapping [start, end)."""
    from hopscope.slo import find_breaches_many

    rows = []
    slos = load_rules(rules)[0]
    found = find_breaches_many(store, slos)  # one read for every SLO; unchanged history is not re-evaluated
    for slo in slos:
        for b in found[slo.name]:
            rows.append(
                {
                    "id": b.id,
                    "slo": b.slo,
                    "start": b.start,
                    "end": b.end,
                    "severity": b.severity,
                    "peak_burn_rate": b.peak_burn_rate,
                    "budget_consumed": b.budget_consumed,
                    "windows": ", ".join(b.windows),
                }
            )
    if not rows:
        return pd.DataFrame(columns=BREACH_COLUMNS)
    df = pd.DataFrame(rows).sort_values(["start", "slo"]).reset_index(drop=True)
    df.insert(0, "number", range(1, len(df) + 1))
    if start is not None and end is not None:
        df = df[(df["end"] > start) & (df["start"] < end)].reset_index(drop=True)
    return df[BREACH_COLUMNS]


def find_breach(store: Store, rules: str, key: str) -> dict[str, Any]:
    """One breach by its number (1, 2, ...) or its id; NotFoundError names what exists."""
    df = breach_table(store, rules)
    key = str(key).strip()
    hit = df[df["number"].astype(str) == key] if key.isdigit() else df[df["id"] == key.lower()]
    if hit.empty:
        known = ", ".join(f"{n} ({i})" for n, i in zip(df["number"], df["id"], strict=True)) or "none"
        raise NotFoundError(f"no incident {key[:40]!r} (incidents: {known})")
    return dict(hit.iloc[0])


def incident(store: Store, rules: str, key: str) -> dict[str, Any]:
    """One breach (by number or id) with its diagnosis: {"breach": {...}, "diagnosis": Diagnosis.to_dict()}."""
    from hopscope.diagnosis import diagnose_breach

    b = find_breach(store, rules, key)
    return {"breach": b, "diagnosis": diagnose_breach(store, _breach(b), get_slo(rules, b["slo"])).to_dict()}


def incident_cause(store: Store, rules: str, key: str) -> str:
    """The diagnosis's top cause of one breach in one line (no BubbleUp: cheaper), or why there is none."""
    from hopscope.diagnosis import diagnose_breach

    b = find_breach(store, rules, key)
    d = diagnose_breach(store, _breach(b), get_slo(rules, b["slo"]), with_bubbleup=False)
    top = d.top
    if top is None:
        return f"no clear cause ({d.verdict})"
    return f"{top.hop} ({top.dimension}): {top.share:.0%} of the added latency"


def _breach(b: dict[str, Any]) -> Any:
    from hopscope.slo import Breach

    return Breach(
        id=b["id"], slo=b["slo"], start=b["start"], end=b["end"], severity=b["severity"],
        peak_burn_rate=float(b["peak_burn_rate"]), budget_consumed=float(b["budget_consumed"]),
        windows=tuple(x for x in str(b["windows"]).split(", ") if x),
    )  # fmt: skip


def context_window(start: datetime, end: datetime, *, before: timedelta = timedelta(hours=3)) -> Window:
    """A window around an interval: `before` of context on each side (at least its own length)."""
    pad = max(before, end - start)
    lo, hi = start - pad, end + pad
    return Window(lo, hi, step_for(lo, hi), False, None)


def slo_timeline(
    store: Store, rules: str, name: str, w: Window
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """(sli, burn, thresholds) of one SLO over a window, per bucket.

    sli: t, good, total, sli. burn: t and one column per alert window (the mean burn rate in the bucket).
    thresholds: "<severity> <long>/<short>" -> burn-rate factor.
    """
    from hopscope.slo import burn_rate_series, minute_series

    slo = get_slo(rules, name)
    longest = max((t.long for t in slo.alerting.tiers), default=timedelta(0))
    minutes = minute_series(store, slo, w.start - longest, w.end)
    step = f"{w.step_s}s"
    if minutes.empty:
        return pd.DataFrame(columns=["t", "good", "total", "sli"]), pd.DataFrame(columns=["t"]), {}
    m = minutes[(minutes["minute"] >= w.start) & (minutes["minute"] < w.end)].copy()
    m["t"] = pd.to_datetime(m["minute"]).dt.floor(step)
    sli = m.groupby("t", as_index=False)[["good", "total"]].sum()
    sli["sli"] = sli["good"] / sli["total"].where(sli["total"] > 0)
    burn = burn_rate_series(slo, minutes)
    burn = burn[(burn.index >= w.start) & (burn.index < w.end)]
    burn = burn.groupby(burn.index.floor(step)).mean().rename_axis("t").reset_index()
    thresholds = {f"{t.severity} {t.label}": float(t.factor) for t in slo.alerting.active_tiers}
    return sli, burn, thresholds


def evidence_series(store: Store, w: Window, metric: str, labels: Mapping[str, str]) -> pd.DataFrame:
    """The one series a diagnosis evidence names (metric + its labels: service, host, GPU index, NIC...)
    per bucket, valued as the diagnosis values it: stored units, counters as rates, bitmasks as the
    share of samples with a bad bit set. Columns: t, value."""
    from hopscope.catalog import load_catalog

    info = load_catalog().get(metric)
    counters = [metric] if info is not None and info.is_counter else []
    df = metric_series(
        store, w, [metric], counters=counters, service=labels.get("service"), match=labels, bad_bits=True
    )
    return (
        df.groupby("t", as_index=False)["value"].mean()
        if not df.empty
        else pd.DataFrame(columns=["t", "value"])
    )


def series_label(labels: Mapping[str, str]) -> str:
    """The short name of a series, as metric_series names it: host, then its SERIES_LABELS values
    ("gpu-node-2/0", "gw-node-1/eth0"); '' when it has none."""
    return "/".join(str(labels[k]) for k in ("host", *SERIES_LABELS) if labels.get(k))


def evidence_window(start: datetime, end: datetime) -> Window:
    """What an evidence chart shows of an incident [start, end): the same length before it (at least
    EVIDENCE_BEFORE) to compare with, and a quarter of it after (at least EVIDENCE_AFTER) to see it end."""
    span = end - start
    lo, hi = start - max(span, EVIDENCE_BEFORE), end + max(span / 4, EVIDENCE_AFTER)
    return Window(lo, hi, step_for(lo, hi), False, None)


EVIDENCE_BEFORE = timedelta(minutes=30)
EVIDENCE_AFTER = timedelta(minutes=15)


def hop_series(store: Store, w: Window, hop: str) -> pd.DataFrame:
    """One hop's time per request (ms) per bucket. Columns: t, ms."""
    df = hop_latency_series(store, w)
    return df[df["hop"] == hop].groupby("t", as_index=False)["ms"].sum()


def store_size(store: Store) -> int:
    """Bytes on disk: catalog and data files."""
    return store.size_bytes()

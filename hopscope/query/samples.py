"""Reads of samples: metric series per bucket (gauges averaged, counters as rates), evidence series, freshness."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pandas as pd

from hopscope.catalog import load_catalog
from hopscope.model import SERIES_LABELS, ReadStore
from hopscope.query import changes
from hopscope.query.windows import Window
from hopscope.rates import counter_rate_sql
from hopscope.signals import value_expression

# A counter's first bucket in a window is a rate against the last sample before it, up to this far back
# (Prometheus's default lookback): scrapes sparser than the bucket still give every bucket its rate.
COUNTER_LOOKBACK = timedelta(minutes=5)


def metric_series(
    store: ReadStore,
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
    value_sql, vp = "value", list[str]()
    if bad_bits:
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


def evidence_series(store: ReadStore, w: Window, metric: str, labels: Mapping[str, str]) -> pd.DataFrame:
    """The one series a diagnosis evidence names (metric + its labels: service, host, GPU index, NIC...)
    per bucket, valued as the diagnosis values it: stored units, counters as rates, bitmasks as the
    share of samples with a bad bit set. Columns: t, value."""

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


# A source whose last sample is older than this is marked stale.
STALE_AFTER = timedelta(minutes=2)


def freshness(store: ReadStore, now: datetime, by_target: bool = False) -> pd.DataFrame:
    """freshness_at(last_seen(store, by_target), now): see there."""
    return freshness_at(last_seen(store, by_target), now)


def last_seen(
    store: ReadStore, by_target: bool = False, counts: bool = True, newest: datetime | None = None
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


def last_samples(
    store: ReadStore, sources: Sequence[str] = (), newest: datetime | None = None
) -> pd.DataFrame:
    """Per source its newest sample (last_sample): from the last RECENT of data, then older for
    the `sources` (collectors) not seen in it. Columns: source, last_sample."""
    held = changes.held(store, "samples")  # the newest samples, kept in memory: no read when they cover it
    if newest is None:
        newest = (
            held.hi
            if held is not None
            else store.query("SELECT max(ts) AS m FROM samples").to_pylist()[0]["m"]
        )
    if newest is None:
        return pd.DataFrame(
            {"source": pd.Series(dtype=str), "last_sample": pd.Series(dtype="datetime64[us]")}
        )
    src: ReadStore = held.tail() if held is not None and held.covers(newest - RECENT) else store
    recent = src.query_df(
        "SELECT source, max(ts) AS last_sample FROM samples WHERE ts >= ? GROUP BY source", [newest - RECENT]
    )
    older = [s for s in dict.fromkeys(sources) if s not in set(recent["source"])]
    if older:
        marks = ", ".join("?" for _ in older)
        recent = pd.concat([recent, store.query_df(
            f"SELECT source, max(ts) AS last_sample FROM samples WHERE source IN ({marks}) GROUP BY source", older
        )], ignore_index=True)  # fmt: skip
    return recent


def sample_counts(store: ReadStore) -> pd.DataFrame:
    """Rows in samples per source (a full scan: cache it). Columns: source, sample_rows."""
    return store.query_df("SELECT source, count(*) AS sample_rows FROM samples GROUP BY source")


# What freshness_at gives, in the order the Collectors page shows it (age_s: age in seconds, for sorting).
FRESHNESS_COLUMNS = [
    "source", "target", "last_seen", "age", "age_s", "stale", "attempts", "failures", "error_ratio", "rows",
    "last_error",
]  # fmt: skip


def freshness_at(seen: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Per collector (or collector x target): last success, attempts, failures, rows, age and staleness.

    Columns: source, target, last_seen, age_s, stale, attempts, failures, error_ratio, rows, last_error.
    A collector's last success falls back to the newest sample it wrote (samples.source); sources that
    wrote samples but no collector_runs rows appear too. Per collector, the oldest target decides.
    """
    df = seen.copy()
    cols = FRESHNESS_COLUMNS
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

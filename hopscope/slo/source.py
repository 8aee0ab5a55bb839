"""Fetch the minute frames the SLO math takes, from the store's ``hop_minutes`` (the only SQL of the SLO engine).

Span SLIs read one edge of ``hop_minutes``: the entry edge (``client = ''``,
``server = <service>``) for end-to-end SLIs, or the ``client->server`` edge named
by ``hop``. Latency "good" is the exact ``good_cnt`` where ``good_le_ms`` holds the
threshold, else the histogram's buckets at or below it (``histogram.count_at_most``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

import pandas as pd

from hopscope import histogram
from hopscope.slo.burn import (
    Breach,
    SloStatus,
    breaches_from_minutes,
    status_from_minutes,
)
from hopscope.slo.spec import SLO, SPAN_KINDS


class _Queryable(Protocol):
    def query_df(self, sql: str, params: Any = None) -> pd.DataFrame: ...


EMPTY = pd.DataFrame({"minute": pd.Series([], dtype="datetime64[us]"), "good": [], "total": []})


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _condition(slo: SLO) -> tuple[str, list[Any]]:
    client, server = slo.sli.edge
    sql, params = "(client = ? AND server = ?", [client, server]
    if slo.sli.route is not None:
        sql += " AND route = ?"
        params.append(slo.sli.route)
    return sql + ")", params


def _fetch(store: _Queryable, span: Sequence[SLO], start: datetime, end: datetime) -> pd.DataFrame:
    """One row per minute x edge x route that any of the SLOs reads: count, errors, exact good counts."""
    thresholds = sorted(
        {float(s.sli.threshold_ms) for s in span if s.sli.kind == "latency" and s.sli.threshold_ms}
    )
    conds, cond_params = [], []
    for s in span:
        c, cp = _condition(s)
        conds.append(c)
        cond_params += cp
    cols = ", ".join(
        f"list_extract(good_cnt, list_position(good_le_ms, ?::DOUBLE)) AS g{i}"
        for i in range(len(thresholds))
    )
    sql = (
        f"SELECT minute, client, server, route, count, errors{', ' + cols if cols else ''} FROM hop_minutes "
        f"WHERE minute >= ? AND minute < ? AND ({' OR '.join(conds)})"
    )
    df = store.query_df(sql, [*thresholds, _floor_minute(start), _floor_minute(end), *cond_params])
    for i, thr in enumerate(thresholds):
        col = f"g{i}"
        if df[col].isna().any():
            # the rollup did not count this threshold exactly here: buckets wholly at or below it
            bucket = int(histogram.bucket_index(thr))
            fb = store.query_df(
                "SELECT minute, client, server, route, list_sum(list_transform(range(1, len(hist_idx) + 1), "
                "k -> CASE WHEN hist_idx[k] <= ? THEN hist_cnt[k] ELSE 0 END)) AS fb FROM hop_minutes "
                f"WHERE minute >= ? AND minute < ? AND list_position(good_le_ms, ?::DOUBLE) IS NULL AND ({' OR '.join(conds)})",
                [bucket, _floor_minute(start), _floor_minute(end), thr, *cond_params],
            )
            df = df.merge(fb, on=["minute", "client", "server", "route"], how="left")
            df[col] = df[col].fillna(df["fb"]).fillna(0)
            df = df.drop(columns="fb")
        df = df.rename(columns={col: f"good@{thr!r}"})
    return df


def minute_series_many(
    store: _Queryable, slos: Sequence[SLO], start: datetime, end: datetime
) -> dict[str, pd.DataFrame]:
    """Minute frames (minute, good, total) of many span SLOs over [start, end), from one scan of hop_minutes.

    SLOs whose SLI is not read from spans (Prometheus kinds) get an empty frame.
    """
    span = [s for s in slos if s.sli.kind in SPAN_KINDS]
    out = {s.name: EMPTY.copy() for s in slos}
    if not span:
        return out
    df = _fetch(store, span, start, end)
    for s in span:
        client, server = s.sli.edge
        mask = (df["client"] == client) & (df["server"] == server)
        if s.sli.route is not None:
            mask &= df["route"] == s.sli.route
        sub = df[mask]
        if s.sli.kind == "availability":
            good = sub["count"] - sub["errors"]
        else:
            good = sub[f"good@{float(s.sli.threshold_ms or 0)!r}"]
        frame = pd.DataFrame(
            {"minute": sub["minute"], "good": good.astype("float64"), "total": sub["count"].astype("float64")}
        )
        frame = frame.groupby("minute", sort=True, as_index=False).sum()
        out[s.name] = frame[frame["total"] > 0].reset_index(drop=True)
    return out


def minute_series(store: _Queryable, slo: SLO, start: datetime, end: datetime) -> pd.DataFrame:
    """Columns minute, good, total of one SLO over [start, end); minutes without data have no row."""
    return minute_series_many(store, [slo], start, end)[slo.name]


def lookback(slo: SLO) -> timedelta:
    """How much history before an instant its status needs: the period or the longest alert window."""
    windows = [t.long for t in slo.alerting.tiers] + [slo.window.nominal + timedelta(days=1)]
    return max(windows)


def store_now(store: _Queryable) -> datetime | None:
    """One minute after the last minute of hop_minutes (None for an empty store)."""
    df = store.query_df("SELECT max(minute) AS m FROM hop_minutes")
    m = df["m"].iloc[0] if len(df) else None
    if m is None or pd.isna(m):
        return None
    return pd.Timestamp(m).to_pydatetime() + timedelta(minutes=1)


def _note_unsourced(slo: SLO, status: SloStatus) -> SloStatus:
    if slo.sli.kind in SPAN_KINDS:
        return status
    from dataclasses import replace

    note = (
        f"{slo.name}: {slo.sli.kind} SLI is evaluated by Prometheus; export its rules (hopscope slo export)"
    )
    return replace(status, notes=(*status.notes, note))


def evaluate_many(store: _Queryable, slos: Sequence[SLO], *, now: datetime | None = None) -> list[SloStatus]:
    """Status of every SLO at ``now`` (default: now, UTC), from one scan of hop_minutes."""
    from hopscope.store import utcnow

    now = _floor_minute(now or utcnow())
    if not slos:
        return []
    start = now - max(lookback(s) for s in slos)
    frames = minute_series_many(store, slos, start, now)
    return [_note_unsourced(s, status_from_minutes(s, frames[s.name], now)) for s in slos]


def evaluate(store: _Queryable, slo: SLO, *, now: datetime | None = None) -> SloStatus:
    return evaluate_many(store, [slo], now=now)[0]


def find_breaches(
    store: _Queryable, slo: SLO, *, start: datetime | None = None, end: datetime | None = None
) -> list[Breach]:
    """Breaches of one SLO over stored history (default: all of it); windows look back before ``start``."""
    if start is None or end is None:
        rng = store.query_df("SELECT min(minute) AS lo, max(minute) AS hi FROM hop_minutes")
        lo, hi = rng["lo"].iloc[0], rng["hi"].iloc[0]
        if lo is None or pd.isna(lo):
            return []
        start = start or pd.Timestamp(lo).to_pydatetime()
        end = end or pd.Timestamp(hi).to_pydatetime() + timedelta(minutes=1)
    windows = [t.long for t in slo.alerting.tiers] or [timedelta(0)]
    frame = minute_series(store, slo, start - max(windows), end)
    return [b for b in breaches_from_minutes(slo, frame) if b.end > start and b.start < end]

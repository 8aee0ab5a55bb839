"""Which hop: per-request hop latencies from hop_minutes, and the decomposition of the added latency.

A hop is an edge's network gap (``client->server``) or a service's self time (``server``).
For sequential calls the per-request means add up to the end-to-end mean, so the added mean
latency splits exactly across hops; what does not (parallel calls, clock skew) is the residual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from hopscope import histogram
from hopscope.diagnosis.model import Decomposition, EndToEnd, HopRow, Target
from hopscope.signals import Window

REQUESTS = "__requests"
E2E = "__e2e"
BAD = "__bad"
ENTRY_CLIENT = "external"  # name of the caller of an entry edge that has its own client span


def _window_sql(windows: Sequence[Window], column: str) -> tuple[str, str, list[Any], list[Any]]:
    cases, where, case_p, where_p = [], [], [], []
    for i, w in enumerate(windows):
        cases.append(f"WHEN {column} >= ? AND {column} < ? THEN {i}")
        case_p += [w.start, w.end]
        where.append(f"({column} >= ? AND {column} < ?)")
        where_p += [w.start, w.end]
    return f"CASE {' '.join(cases)} END", " OR ".join(where), case_p, where_p


def load_hop_frame(store: Any, windows: Sequence[Window], route: str, step_s: int = 60) -> pd.DataFrame:
    """Sums per window x time bucket x edge of the route (one SQL query)."""
    case, where, case_p, where_p = _window_sql(windows, "minute")
    sql = f"""
    SELECT {case} AS "window", time_bucket(to_seconds(?), minute) AS ts, client, server,
           CAST(sum("count") AS DOUBLE) AS "count", CAST(sum(errors) AS DOUBLE) AS errors, sum(duration_ms_sum) AS duration_ms_sum,
           sum(gap_ms_sum) AS gap_ms_sum, sum(self_ms_sum) AS self_ms_sum, max(duration_ms_max) AS duration_ms_max
    FROM hop_minutes WHERE route = ? AND ({where})
    GROUP BY 1, 2, 3, 4
    """
    return store.query_df(sql, case_p + [step_s, route] + where_p)


def load_target_tail(
    store: Any, windows: Sequence[Window], target: Target, step_s: int = 60
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Histogram (window, idx, cnt) and bad counts over the threshold (window, ts, total, bad) of the SLI's edges."""
    case, where, case_p, where_p = _window_sql(windows, "minute")
    edge_sql, edge_p = ("", []) if target.client is None else (" AND client = ?", [target.client])
    hist = store.query_df(
        f"""
        SELECT "window", idx, CAST(sum(cnt) AS BIGINT) AS cnt FROM (
            SELECT {case} AS "window", unnest(hist_idx) AS idx, unnest(hist_cnt) AS cnt
            FROM hop_minutes WHERE route = ? AND server = ?{edge_sql} AND ({where})
        ) GROUP BY 1, 2
        """,
        case_p + [target.route, target.service] + edge_p + where_p,
    )
    thr = target.threshold_ms if target.threshold_ms is not None else -1.0
    bad = store.query_df(
        f"""
        SELECT {case} AS "window", time_bucket(to_seconds(?), minute) AS ts, CAST(sum("count") AS DOUBLE) AS total,
               CAST(sum(CASE WHEN list_position(good_le_ms, ?) > 0
                        THEN "count" - good_cnt[list_position(good_le_ms, ?)] END) AS DOUBLE) AS bad,
               count(*) FILTER (WHERE list_position(good_le_ms, ?) IS NULL OR list_position(good_le_ms, ?) = 0) AS inexact
        FROM hop_minutes WHERE route = ? AND server = ?{edge_sql} AND ({where})
        GROUP BY 1, 2
        """,
        case_p + [step_s, thr, thr, thr, thr, target.route, target.service] + edge_p + where_p,
    )
    return hist, bad


def load_exemplars(
    store: Any, window: Window, route: str, edges: Sequence[tuple[str | None, str]], limit: int = 10
) -> list[str]:
    """Trace ids of the slowest requests of the given edges (client None = any) in the window."""
    out: list[str] = []
    for client, server in edges:
        params: list[Any] = [route, server, window.start, window.end]
        cond = ""
        if client is not None:
            cond = " AND client = ?"
            params.append(client)
        df = store.query_df(
            f"""SELECT exemplars FROM hop_minutes WHERE route = ? AND server = ? AND minute >= ? AND minute < ?{cond}
                ORDER BY duration_ms_max DESC LIMIT ?""",
            params + [limit],
        )
        for ids in df["exemplars"]:
            for t in list(ids) if ids is not None else []:
                if t not in out:
                    out.append(str(t))
        if len(out) >= limit:
            break
    return out[:limit]


# -- pure -----------------------------------------------------------------------------------------


def descendants(frame: pd.DataFrame, service: str) -> set[str]:
    """Services reachable from ``service`` through the edges of the frame (itself included)."""
    edges = frame[["client", "server"]].drop_duplicates()
    children: dict[str, set[str]] = {}
    for c, s in edges.itertuples(index=False, name=None):
        children.setdefault(c, set()).add(s)
    seen = {service}
    todo = [service]
    while todo:
        for nxt in children.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def hop_matrix(frame: pd.DataFrame, target: Target) -> tuple[pd.DataFrame, dict[str, str]]:
    """Wide frame indexed by (window, ts): the SLI's requests and end-to-end ms, and each hop's ms sum.

    Returns it with ``{hop: hop_kind}``. Only hops under the target service are kept.
    """
    if frame.empty:
        return pd.DataFrame(columns=[REQUESTS, E2E]), {}
    below = descendants(frame, target.service)
    sub = frame[frame["server"].isin(below)]
    entry = sub[sub["server"] == target.service]
    if target.client is not None:
        entry = entry[entry["client"] == target.client]
    # the SLI's edges: every edge into the target; hops are its self time and everything below it
    idx = ["window", "ts"]
    parts = [
        entry.groupby(idx)["count"].sum().rename(REQUESTS),
        entry.groupby(idx)["duration_ms_sum"].sum().rename(E2E),
    ]
    kinds: dict[str, str] = {}
    svc = sub.groupby(idx + ["server"])["self_ms_sum"].sum().unstack("server")
    for name in svc.columns:
        kinds[str(name)] = "service"
    parts.append(svc)
    inner = sub[(sub["client"].isin(below)) & (sub["server"] != target.service)]
    net_rows = pd.concat([inner, entry[entry["gap_ms_sum"] > 0]])
    if not net_rows.empty:
        names = net_rows["client"].replace("", ENTRY_CLIENT) + "->" + net_rows["server"]
        net = net_rows.assign(hop=names).groupby(idx + ["hop"])["gap_ms_sum"].sum().unstack("hop")
        for name in net.columns:
            kinds[str(name)] = "network"
        parts.append(net)
    wide = pd.concat(parts, axis=1).fillna(0.0)
    wide.columns = [str(c) for c in wide.columns]
    return wide.sort_index(), kinds


def per_request(wide: pd.DataFrame, hops: Sequence[str]) -> pd.DataFrame:
    """Per-request ms of each hop and of the end-to-end latency, per (window, ts) bucket."""
    req = wide[REQUESTS].where(wide[REQUESTS] > 0)
    cols = list(hops) + [E2E]
    return wide[cols].div(req, axis=0)


def _robust_std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return 0.0
    mad = float(np.median(np.abs(x - np.median(x))))
    return 1.4826 * mad


def end_to_end(
    hist: pd.DataFrame,
    bad: pd.DataFrame,
    wide: pd.DataFrame,
    base_ids: Sequence[int],
    inc_id: int,
    target: Target,
) -> EndToEnd:
    """The SLI's tail percentile, mean and bad fraction, baseline vs incident."""

    def pct(ids: Sequence[int]) -> float | None:
        h = hist[hist["window"].isin(list(ids))]
        if h.empty:
            return None
        i, c = histogram.merge([h["idx"].to_numpy()], [h["cnt"].to_numpy()])
        return histogram.quantile(i, c, target.q)

    def mean(ids: Sequence[int]) -> tuple[float, int]:
        w = wide[wide.index.get_level_values("window").isin(list(ids))]
        n = float(w[REQUESTS].sum()) if not w.empty else 0.0
        return (float(w[E2E].sum()) / n if n else 0.0), int(n)

    def bad_fraction(ids: Sequence[int]) -> float | None:
        if target.threshold_ms is None:
            return None
        b = bad[bad["window"].isin(list(ids))]
        total = float(b["total"].sum()) if not b.empty else 0.0
        if total <= 0:
            return None
        exact = b["bad"].notna()
        if exact.all():
            return float(b["bad"].sum()) / total
        # thresholds not counted exactly: read them from the histogram (<= 5 % error)
        h = hist[hist["window"].isin(list(ids))]
        if h.empty:
            return None
        i, c = histogram.merge([h["idx"].to_numpy()], [h["cnt"].to_numpy()])
        n = int(c.sum())
        return 1.0 - histogram.count_at_most(i, c, target.threshold_ms) / n if n else None

    bm, bn = mean(base_ids)
    im, inn = mean([inc_id])
    return EndToEnd(
        percentile=target.q,
        baseline_pct_ms=pct(base_ids),
        incident_pct_ms=pct([inc_id]),
        baseline_mean_ms=bm,
        incident_mean_ms=im,
        threshold_ms=target.threshold_ms,
        baseline_bad_fraction=bad_fraction(base_ids),
        incident_bad_fraction=bad_fraction([inc_id]),
        baseline_requests=bn,
        incident_requests=inn,
    )


def decompose_hops(
    wide: pd.DataFrame,
    kinds: dict[str, str],
    base_ids: Sequence[int],
    inc_id: int,
    e2e: EndToEnd,
    target: Target,
) -> Decomposition:
    """Split the added latency across hops: baseline vs incident per-request means, with noise.

    A hop is significant when its added ms exceeds three times its noise (the spread of its
    per-window baseline means and of its per-bucket values scaled to the incident's length)
    and 2 % of the baseline end-to-end mean.
    """
    hops = sorted(kinds)
    win = wide.index.get_level_values("window")
    base = wide[win.isin(list(base_ids))]
    inc = wide[win == inc_id]
    pr = per_request(wide, hops)
    base_pr = pr[win.isin(list(base_ids))]
    inc_buckets = max(1, int((inc[REQUESTS] > 0).sum()))
    base_req = float(base[REQUESTS].sum())
    inc_req = float(inc[REQUESTS].sum())
    budgets = dict(target.hop_budgets_ms)
    rows = []
    total_pos = 0.0
    added: dict[str, float] = {}
    for h in hops:
        b = float(base[h].sum()) / base_req if base_req else 0.0
        i = float(inc[h].sum()) / inc_req if inc_req else 0.0
        added[h] = i - b
        total_pos += max(0.0, i - b)
    by_win = base.groupby(level="window").sum()
    by_win = by_win[by_win[REQUESTS] > 0]
    for h in hops:
        b = float(base[h].sum()) / base_req if base_req else 0.0
        i = b + added[h]
        per_window = (by_win[h] / by_win[REQUESTS]).to_numpy(dtype=float)
        sd_win = float(np.std(per_window, ddof=1)) if len(per_window) >= 3 else 0.0
        sd_bucket = _robust_std(base_pr[h].to_numpy(dtype=float)) / np.sqrt(inc_buckets)
        noise = max(sd_win, sd_bucket)
        floor = max(0.02 * e2e.baseline_mean_ms, 0.5)
        share = max(0.0, added[h]) / total_pos if total_pos > 0 else 0.0
        rows.append(
            HopRow(
                hop=h,
                hop_kind=kinds[h],
                baseline_ms=b,
                incident_ms=i,
                added_ms=added[h],
                share=share,
                added_at_percentile_ms=share * max(0.0, e2e.added_pct_ms),
                significant=bool(added[h] > 3 * noise and added[h] > floor),
                noise_ms=noise,
                budget_ms=budgets.get(h),
            )
        )
    rows.sort(key=lambda r: -r.added_ms)
    residual = e2e.added_mean_ms - sum(added.values())
    return Decomposition(end_to_end=e2e, hops=tuple(rows), residual_ms=residual)

"""Which hop: per-request hop latencies (or errors) from hop_minutes, and the decomposition of the added part.

A hop is an edge's network gap (``client->server``) or a service's self time (``server``).
For sequential calls the per-request means add up to the end-to-end mean, so the added mean
latency splits exactly across hops; what does not (parallel calls, clock skew) is the residual.
For an availability SLI the same split is done on errors: a service's own errors are the errors of
the calls into it minus those of its own outgoing calls (an error passed up is counted once, where
it started).

All of hop_minutes that a diagnosis needs comes from one SQL query (``load_hop_data``): per-bucket
sums of every edge of the route in every window, the SLI's merged histogram per window, and the
slowest minutes (with their exemplar trace ids) of each edge in the incident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hopscope import histogram
from hopscope.diagnosis.model import Decomposition, EndToEnd, HopRow, Target
from hopscope.signals import Window, _us

REQUESTS = "__requests"
E2E = "__e2e"
ENTRY_CLIENT = "external"  # name of the caller of an entry edge that has its own client span
EXEMPLAR_MINUTES = 4  # slowest buckets per edge whose exemplar trace ids are kept
FRAME_COLUMNS = [
    "window", "ts", "client", "server", "count", "errors", "duration_ms_sum", "gap_ms_sum",
    "self_ms_sum", "duration_ms_max", "bad",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class HopData:
    """What hop_minutes says about the windows (``ts`` is the bucket number inside its window)."""

    frame: pd.DataFrame  # FRAME_COLUMNS: sums per window x bucket x edge
    hist: pd.DataFrame  # window, idx, cnt: the SLI's edges' merged histogram per window
    exemplars: pd.DataFrame  # client, server, duration_ms_max, exemplars: slowest incident minutes per edge


def load_hop_data(store: Any, windows: Sequence[Window], target: Target, step_s: int = 60) -> HopData:
    """Everything the decomposition needs from hop_minutes, in one query (window 0 is the incident)."""
    thr = target.threshold_ms if target.threshold_ms is not None else -1.0
    edge_sql, edge_p = ("", []) if target.client is None else (" AND client = ?", [target.client])
    # One scan per run of touching windows (the incident and the window before it are one): its
    # tight time range is filtered inside the scan, so the list columns (histograms, exemplars) are
    # decoded only for those rows, not for the days in between. (Kept to few scans and two readers
    # of the CTE: DuckDB 1.5.5 + DuckLake hung here on 9 scans read by three.)
    p_scan: list[Any] = []
    scans = []
    for run in _runs(windows):
        case = " ".join(f"WHEN minute >= ? AND minute < ? THEN {i}" for i in run)
        # exemplars are kept for the incident only: other runs do not decode that list column
        ex = "exemplars" if 0 in run else "NULL::VARCHAR[] AS exemplars"
        scans.append(
            f'SELECT CASE {case} END AS win, minute, client, server, "count", errors, duration_ms_sum, '
            f"duration_ms_max, gap_ms_sum, self_ms_sum, hist_idx, hist_cnt, {ex}, "
            "coalesce(list_position(good_le_ms, ?), 0) AS pos, good_cnt "
            "FROM hop_minutes WHERE route = ? AND minute >= ? AND minute < ?"
        )
        p_scan += [x for i in run for x in (windows[i].start, windows[i].end)]
        p_scan += [thr, target.route, windows[run[0]].start, windows[run[-1]].end]
    sql = f"""
    WITH h AS MATERIALIZED (
        SELECT *, CAST((epoch_us(minute) - list_extract(?::BIGINT[], win + 1)) // ? AS INTEGER) AS b
        FROM ({" UNION ALL ".join(scans)})
    )
    SELECT 'f' AS part, win, b, client, server, CAST(sum("count") AS DOUBLE) AS "count", CAST(sum(errors) AS DOUBLE) AS errors,
           sum(duration_ms_sum) AS duration_ms_sum, sum(gap_ms_sum) AS gap_ms_sum, sum(self_ms_sum) AS self_ms_sum,
           max(duration_ms_max) AS duration_ms_max,
           CASE WHEN bool_and(pos > 0) THEN CAST(sum("count" - good_cnt[pos]) AS DOUBLE) END AS bad,
           NULL::INTEGER AS idx, NULL::BIGINT AS cnt,
           arg_max(exemplars, duration_ms_max) FILTER (WHERE win = 0) AS exemplars
    FROM h GROUP BY win, b, client, server
    UNION ALL
    SELECT 'h', win, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, idx, CAST(sum(cnt) AS BIGINT), NULL
    FROM (SELECT win, unnest(hist_idx) AS idx, unnest(hist_cnt) AS cnt FROM h WHERE server = ?{edge_sql})
    GROUP BY win, idx
    """
    params = [[_us(w.start) for w in windows], step_s * 1_000_000, *p_scan, target.service, *edge_p]
    df = store.query_df(sql, params)
    part = df["part"]
    frame = df[part == "f"].rename(columns={"win": "window", "b": "ts"})[FRAME_COLUMNS].reset_index(drop=True)
    hist = df[part == "h"].rename(columns={"win": "window"})[["window", "idx", "cnt"]].reset_index(drop=True)
    # the exemplars of each edge's slowest incident buckets
    inc = df[(part == "f") & (df["win"] == 0)].sort_values("duration_ms_max", ascending=False)
    ex = inc.groupby(["client", "server"], sort=False).head(EXEMPLAR_MINUTES)
    ex = ex[["client", "server", "duration_ms_max", "exemplars"]].reset_index(drop=True)
    return HopData(frame, hist.astype({"window": int, "idx": int, "cnt": np.int64}), ex)


def _runs(windows: Sequence[Window]) -> list[list[int]]:
    """Indexes of the windows grouped into runs that touch or overlap (sorted by start)."""
    order = sorted(range(len(windows)), key=lambda i: windows[i].start)
    runs: list[list[int]] = []
    end = None
    for i in order:
        if runs and end is not None and windows[i].start <= end:
            runs[-1].append(i)
            end = max(end, windows[i].end)
        else:
            runs.append([i])
            end = windows[i].end
    return runs


def pick_exemplars(ex: pd.DataFrame, edges: Sequence[tuple[str | None, str]], limit: int = 10) -> list[str]:
    """Trace ids of the slowest minutes of the given edges (client None = any client), in that order."""
    out: list[str] = []
    for client, server in edges:
        rows = ex[ex["server"] == server]
        if client is not None:
            rows = rows[rows["client"] == client]
        for ids in rows.sort_values("duration_ms_max", ascending=False)["exemplars"]:
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


def _sli_edges(frame: pd.DataFrame, target: Target) -> tuple[pd.DataFrame, set[str]]:
    below = descendants(frame, target.service)
    sub = frame[frame["server"].isin(below)]
    entry = sub[sub["server"] == target.service]
    if target.client is not None:
        entry = entry[entry["client"] == target.client]
    return entry, below


def hop_matrix(frame: pd.DataFrame, target: Target) -> tuple[pd.DataFrame, dict[str, str]]:
    """Wide frame indexed by (window, ts): the SLI's requests and end-to-end ms, and each hop's ms sum.

    Returns it with ``{hop: hop_kind}``. Only hops under the target service are kept.
    """
    if frame.empty:
        return pd.DataFrame(columns=[REQUESTS, E2E]), {}
    entry, below = _sli_edges(frame, target)
    sub = frame[frame["server"].isin(below)]
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


def error_matrix(frame: pd.DataFrame, target: Target) -> tuple[pd.DataFrame, dict[str, str]]:
    """Wide frame indexed by (window, ts): the SLI's requests and errors, and each service's own errors.

    A service's own errors = errors on the calls into it - errors on its calls out (never below 0).
    """
    if frame.empty:
        return pd.DataFrame(columns=[REQUESTS, E2E]), {}
    entry, below = _sli_edges(frame, target)
    idx = ["window", "ts"]
    sub = frame[frame["server"].isin(below)]
    into = sub.groupby(idx + ["server"])["errors"].sum().unstack("server")
    out = sub[sub["client"].isin(below)].groupby(idx + ["client"])["errors"].sum().unstack("client")
    into, out = into.align(out, join="left", fill_value=0.0)
    into = into.fillna(0.0)
    # the target's own errors start from the SLI's edges only (other callers of it are not the SLI)
    if target.service in into.columns:
        into[target.service] = entry.groupby(idx)["errors"].sum().reindex(into.index).fillna(0.0)
    own = (into - out.fillna(0.0)).clip(lower=0.0)
    wide = pd.concat(
        [
            entry.groupby(idx)["count"].sum().rename(REQUESTS),
            entry.groupby(idx)["errors"].sum().rename(E2E),
            own,
        ],
        axis=1,
    ).fillna(0.0)
    wide.columns = [str(c) for c in wide.columns]
    return wide.sort_index(), {str(c): "service" for c in own.columns}


def per_request(wide: pd.DataFrame, hops: Sequence[str]) -> pd.DataFrame:
    """Per-request ms (or errors) of each hop and of the end-to-end, per (window, ts) bucket."""
    req = wide[REQUESTS].where(wide[REQUESTS] > 0)
    cols = list(hops) + [E2E]
    return wide[cols].div(req, axis=0)


def _robust_std(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return 0.0
    mad = float(np.median(np.abs(x - np.median(x))))
    return 1.4826 * mad


def _merged(hist: pd.DataFrame, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    h = hist[hist["window"].isin(list(ids))]
    if h.empty:
        return None
    return histogram.merge([h["idx"].to_numpy()], [h["cnt"].to_numpy()])


def end_to_end(
    hist: pd.DataFrame,
    bad: pd.DataFrame,
    wide: pd.DataFrame,
    base_ids: Sequence[int],
    inc_id: int,
    target: Target,
) -> EndToEnd:
    """The SLI's tail percentile, mean and bad fraction, baseline vs incident.

    ``bad`` has one row per SLI edge x bucket: window, total, bad (NaN where the threshold is not
    counted exactly; then the histogram gives it, within its 5 % error).
    """

    def pct(ids: Sequence[int]) -> float | None:
        m = _merged(hist, ids)
        return histogram.quantile(m[0], m[1], target.q) if m is not None else None

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
        if b["bad"].notna().all():
            return float(b["bad"].sum()) / total
        m = _merged(hist, ids)
        if m is None or not m[1].sum():
            return None
        return 1.0 - histogram.count_at_most(m[0], m[1], target.threshold_ms) / int(m[1].sum())

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


def end_to_end_errors(wide: pd.DataFrame, base_ids: Sequence[int], inc_id: int) -> EndToEnd:
    """The SLI's error fraction, baseline vs incident (``wide`` from error_matrix)."""
    win = wide.index.get_level_values("window")

    def frac(mask: np.ndarray) -> tuple[float, int]:
        w = wide[mask]
        n = float(w[REQUESTS].sum()) if not w.empty else 0.0
        return (float(w[E2E].sum()) / n if n else 0.0), int(n)

    bf, bn = frac(win.isin(list(base_ids)))
    inf, inn = frac(win == inc_id)
    return EndToEnd(
        percentile=1.0, baseline_pct_ms=None, incident_pct_ms=None, baseline_mean_ms=bf,
        incident_mean_ms=inf, threshold_ms=None, baseline_bad_fraction=bf, incident_bad_fraction=inf,
        baseline_requests=bn, incident_requests=inn, measure="errors",
    )  # fmt: skip


def decompose_hops(
    wide: pd.DataFrame,
    kinds: dict[str, str],
    base_ids: Sequence[int],
    inc_id: int,
    e2e: EndToEnd,
    target: Target,
    *,
    floor: float | None = None,
) -> Decomposition:
    """Split the added latency (or errors) across hops: baseline vs incident per-request means, with noise.

    A hop is significant when its added part exceeds three times its noise (the spread of its
    per-window baseline means and of its per-bucket values scaled to the incident's length)
    and ``floor`` (default: 2 % of the baseline end-to-end mean, at least 0.5 ms).
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
    budgets = dict(target.hop_budgets_ms) if e2e.measure == "latency" else {}
    floor = max(0.02 * e2e.baseline_mean_ms, 0.5) if floor is None else floor
    # one array per side, a contiguous column per hop (sums in the same order as pandas' column sums)
    base_a = np.asfortranarray(base[hops].to_numpy(dtype=float)) if hops else np.zeros((len(base), 0))
    inc_a = np.asfortranarray(inc[hops].to_numpy(dtype=float)) if hops else np.zeros((len(inc), 0))
    base_pr_a = np.asfortranarray(base_pr[hops].to_numpy(dtype=float)) if hops else base_a
    b_mean = {h: float(base_a[:, j].sum()) / base_req if base_req else 0.0 for j, h in enumerate(hops)}
    added = {
        h: (float(inc_a[:, j].sum()) / inc_req if inc_req else 0.0) - b_mean[h] for j, h in enumerate(hops)
    }
    total_pos = sum(max(0.0, a) for a in added.values())
    by_win = base.groupby(level="window").sum()
    by_win = by_win[by_win[REQUESTS] > 0]
    win_req = by_win[REQUESTS].to_numpy(dtype=float)
    win_a = by_win[hops].to_numpy(dtype=float) if hops else np.zeros((len(by_win), 0))
    rows = []
    for j, h in enumerate(hops):
        per_window = win_a[:, j] / win_req
        sd_win = float(np.std(per_window, ddof=1)) if len(per_window) >= 3 else 0.0
        sd_bucket = _robust_std(base_pr_a[:, j]) / np.sqrt(inc_buckets)
        noise = max(sd_win, sd_bucket)
        share = max(0.0, added[h]) / total_pos if total_pos > 0 else 0.0
        rows.append(
            HopRow(
                hop=h,
                hop_kind=kinds[h],
                baseline_ms=b_mean[h],
                incident_ms=b_mean[h] + added[h],
                added_ms=added[h],
                share=share,
                added_at_percentile_ms=share * max(0.0, e2e.added_pct_ms),
                significant=bool(added[h] > 3 * noise and added[h] > floor),
                noise_ms=noise,
                budget_ms=budgets.get(h),
                measure=e2e.measure,
            )
        )
    rows.sort(key=lambda r: -r.added_ms)
    residual = e2e.added_mean_ms - sum(added.values())
    return Decomposition(end_to_end=e2e, hops=tuple(rows), residual_ms=residual, measure=e2e.measure)

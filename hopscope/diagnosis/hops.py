"""Which hop: per-request hop latencies (or errors) from hop_minutes, and the decomposition of the added part.

A hop is an edge's network gap (``client->server``) or a service's self time (``server``).
For sequential calls the per-request means add up to the end-to-end mean, so the added mean
latency splits exactly across hops; what does not (parallel calls, clock skew) is the residual.
For an availability SLI the same split is done on errors: a service's own errors are the errors of
the calls into it minus those of its own outgoing calls (an error passed up is counted once, where
it started).

All of hop_minutes that a diagnosis needs comes from one SQL scan (``load_hop_data``): the rows of
every edge of the route in every window, summed here per bucket (numpy, in row order: the sums SQL's
SUM makes), the SLI's histogram merged per window, and the slowest minutes (with their exemplar trace
ids) of each edge in the incident.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from hopscope import histogram
from hopscope.diagnosis.model import DataGap, Decomposition, EndToEnd, HopRow, Target
from hopscope.model import Hop, ReadStore, TimeRange
from hopscope.signals import _us

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


def load_hop_data(
    store: ReadStore, windows: Sequence[TimeRange], target: Target, step_s: int = 60
) -> HopData:
    """Everything the decomposition needs from hop_minutes, in one query (window 0 is the incident)."""
    edge_sql, edge_p = ("", []) if target.client is None else (" AND client = ?", [target.client])
    # One scan of hop_minutes for all windows: each scan of a DuckLake table costs 12-25 ms of
    # catalog work before it reads a byte. The overall range prunes files; the OR of the windows is
    # filtered inside the scan, so list columns are decoded only for rows in a window.
    case = " ".join(f"WHEN minute >= ? AND minute < ? THEN {i}" for i in range(len(windows)))
    within = " OR ".join("(minute >= ? AND minute < ?)" for _ in windows)
    bounds = [x for w in windows for x in (w.start, w.end)]
    lo, hi = min(w.start for w in windows), max(w.end for w in windows)
    # The scan carries only what is read: histograms of the SLI's edges, exemplars of the incident,
    # the exact bad count instead of the threshold lists (none without a threshold). The rows come
    # back as they are and are summed here (``_sum_buckets``): a GROUP BY, a window function and a
    # join over a few thousand rows cost DuckDB more than the scan.
    sli = f"server = ?{edge_sql}"
    thr_sql, thr_p = (
        (
            ', list_position(good_le_ms, ?) IS NOT NULL AS exact, "count" - good_cnt[list_position(good_le_ms, ?)] AS bad_n',
            [target.threshold_ms] * 2,
        )
        if target.threshold_ms is not None
        else ("", [])
    )
    sql = f"""
    SELECT CASE {case} END AS win, epoch_us(minute) AS us, client, server, "count", errors,
           duration_ms_sum, duration_ms_max, gap_ms_sum, self_ms_sum,
           CASE WHEN {sli} THEN hist_idx END AS hist_idx, CASE WHEN {sli} THEN hist_cnt END AS hist_cnt,
           CASE WHEN minute >= ? AND minute < ? THEN exemplars END AS exemplars{thr_sql}
    FROM hop_minutes WHERE (CAST(? AS VARCHAR) IS NULL OR route || '' = ?) AND minute >= ? AND minute < ?
      AND ({within})
    """
    # (``route || ''``: the same test, but not one DuckLake turns into a per-file stats look-up in its
    # catalog, ~3-5 ms per query, that prunes nothing: every day's file holds every route)
    inc = windows[0]
    params = [*bounds, target.service, *edge_p, target.service, *edge_p, inc.start, inc.end, *thr_p,
              target.route, target.route, lo, hi, *bounds]  # fmt: skip
    table = store.query(sql, params)
    win = table.column("win").to_numpy().astype(np.int32)
    starts = np.array([_us(w.start) for w in windows], dtype=np.int64)
    b = ((table.column("us").to_numpy() - starts[win]) // (step_s * 1_000_000)).astype(np.int32)
    client = table.column("client").to_numpy(zero_copy_only=False)
    server = table.column("server").to_numpy(zero_copy_only=False)
    c_codes, _ = pd.factorize(client)
    s_codes, s_names = pd.factorize(server)
    edge = c_codes.astype(np.int64) * max(1, len(s_names)) + s_codes
    return HopData(
        _sum_buckets(table, win, b, edge, client, server),
        _window_hist(table, win),
        _slowest_minutes(table, win, b, edge, client, server),
    )


def _sum_buckets(
    table: pa.Table, win: np.ndarray, b: np.ndarray, edge: np.ndarray, client: np.ndarray, server: np.ndarray
) -> pd.DataFrame:
    """FRAME_COLUMNS: the rows summed per window x bucket x edge (sums in row order, as SQL's SUM)."""
    n = table.num_rows
    cols = {k: table.column(k).to_numpy().astype(float) for k in FRAME_COLUMNS[4:10]}
    if "exact" in table.column_names:
        exact = table.column("exact").to_numpy(zero_copy_only=False).astype(bool)
        bad_n = table.column("bad_n").to_numpy(zero_copy_only=False).astype(float)  # NaN where NULL
    else:
        exact, bad_n = np.zeros(n, dtype=bool), np.full(n, np.nan)
    nw, nb = int(win.max(initial=0)) + 1, int(b.max(initial=0)) + 1
    uniq, first, inv = np.unique((edge * nb + b) * nw + win, return_index=True, return_inverse=True)
    if len(uniq) == n:  # one row per bucket (minute buckets): nothing to sum
        bad = np.where(exact & ~np.isnan(bad_n), bad_n, np.nan)
        rows: np.ndarray = np.arange(n)
        out = cols
    else:
        inv = inv.ravel()
        k = len(uniq)
        out = {c: np.bincount(inv, weights=v, minlength=k) for c, v in cols.items()}
        dmax = np.full(k, -np.inf)
        np.maximum.at(dmax, inv, cols["duration_ms_max"])
        out["duration_ms_max"] = dmax
        all_exact = np.bincount(inv, weights=~exact, minlength=k) == 0
        has_bad = np.bincount(inv, weights=~np.isnan(bad_n), minlength=k) > 0
        bad = np.where(
            all_exact & has_bad, np.bincount(inv, weights=np.nan_to_num(bad_n), minlength=k), np.nan
        )
        rows = first
    return pd.DataFrame(
        {
            "window": win[rows],
            "ts": b[rows],
            "client": client[rows],
            "server": server[rows],
            **{c: out[c] for c in FRAME_COLUMNS[4:10]},
            "bad": bad,
        },
        columns=FRAME_COLUMNS,
    )


def _window_hist(table: pa.Table, win: np.ndarray) -> pd.DataFrame:
    """window, idx, cnt: the SLI's edges' histogram merged per window."""
    idx_col = table.column("hist_idx").combine_chunks()
    cnt_col = table.column("hist_cnt").combine_chunks()
    lens = np.diff(idx_col.offsets.to_numpy())  # 0 where NULL
    idx = idx_col.flatten().to_numpy().astype(np.int64)
    cnt = cnt_col.flatten().to_numpy().astype(np.int64)
    if idx.size == 0:
        return pd.DataFrame(
            {"window": np.zeros(0, int), "idx": np.zeros(0, int), "cnt": np.zeros(0, np.int64)}
        )
    w = np.repeat(win.astype(np.int64), lens)
    lo = int(idx.min())
    span = int(idx.max()) - lo + 1
    keys, inv = np.unique(w * span + (idx - lo), return_inverse=True)
    sums = np.zeros(len(keys), dtype=np.int64)
    np.add.at(sums, inv.ravel(), cnt)
    return pd.DataFrame(
        {"window": (keys // span).astype(int), "idx": (keys % span + lo).astype(int), "cnt": sums}
    )


def _slowest_minutes(
    table: pa.Table, win: np.ndarray, b: np.ndarray, edge: np.ndarray, client: np.ndarray, server: np.ndarray
) -> pd.DataFrame:
    """client, server, duration_ms_max, exemplars of each edge's EXEMPLAR_MINUTES slowest incident
    buckets (the exemplars of the bucket's slowest row), slowest first."""
    dmax_all = table.column("duration_ms_max").to_numpy()
    inc = np.flatnonzero((win == 0) & ~np.isnan(dmax_all))
    dmax, e, bb = dmax_all[inc], edge[inc], b[inc]
    # the slowest row of each (edge, bucket): sorted by edge, bucket, slowest first, row order
    order = np.lexsort((np.arange(len(inc)), -dmax, bb, e))
    e_s, b_s = e[order], bb[order]
    head = order[np.r_[True, (e_s[1:] != e_s[:-1]) | (b_s[1:] != b_s[:-1])]] if len(order) else order
    # per edge its slowest buckets (ties: the earlier bucket)
    ranked = head[np.lexsort((bb[head], -dmax[head], e[head]))]
    e_r = e[ranked]
    new_edge = np.r_[True, e_r[1:] != e_r[:-1]] if len(ranked) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new_edge)
    rank = np.arange(len(ranked)) - np.repeat(starts, np.diff(np.r_[starts, len(ranked)]))
    top = ranked[rank < EXEMPLAR_MINUTES]
    top = top[np.argsort(-dmax[top], kind="stable")]
    rows = inc[top]
    return pd.DataFrame(
        {
            "client": client[rows],
            "server": server[rows],
            "duration_ms_max": dmax[top],
            "exemplars": table.column("exemplars").take(pa.array(rows, pa.int64())).to_pylist(),
        }
    )


def pick_exemplars(ex: pd.DataFrame, edges: Sequence[tuple[str | None, str]], limit: int = 10) -> list[str]:
    """Trace ids of the slowest minutes of the given edges (client None = any client), in that order."""
    rows = list(
        zip(
            ex["client"].tolist(),
            ex["server"].tolist(),
            ex["duration_ms_max"].tolist(),
            ex["exemplars"].tolist(),
            strict=True,
        )
    )
    out: list[str] = []
    for client, server in edges:
        mine = [r for r in rows if r[1] == server and (client is None or r[0] == client)]
        mine.sort(key=lambda r: -r[2])  # stable: rows come slowest first already
        for _c, _s, _d, ids in mine:
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
    return _descendants_of(list(edges.itertuples(index=False, name=None)), service)


def _sli_edges(frame: pd.DataFrame, target: Target) -> tuple[pd.DataFrame, set[str]]:
    below = descendants(frame, target.service)
    sub = frame[frame["server"].isin(below)]
    entry = sub[sub["server"] == target.service]
    if target.client is not None:
        entry = entry[entry["client"] == target.client]
    return entry, below


def _edge_codes(frame: pd.DataFrame) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Per row: the code of its (client, server) edge; and the edges, one per code."""
    c_codes, c_names = pd.factorize(frame["client"].to_numpy(dtype=object))
    s_codes, s_names = pd.factorize(frame["server"].to_numpy(dtype=object))
    uniq, codes = np.unique(c_codes.astype(np.int64) * max(1, len(s_names)) + s_codes, return_inverse=True)
    m = max(1, len(s_names))
    return codes.ravel(), [(str(c_names[u // m]), str(s_names[u % m])) for u in uniq.tolist()]


def _descendants_of(edges: Sequence[tuple[str, str]], service: str) -> set[str]:
    """Services reachable from ``service`` through ``edges`` (client, server), itself included."""
    children: dict[str, set[str]] = {}
    for c, s in edges:
        children.setdefault(c, set()).add(s)
    seen = {service}
    todo = [service]
    while todo:
        for nxt in children.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _bucket_keys(frame: pd.DataFrame, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted (window, ts) pairs of the kept rows (as two arrays), and each kept row's position."""
    w_val, w_code = np.unique(frame["window"].to_numpy()[keep], return_inverse=True)
    t_val, t_code = np.unique(frame["ts"].to_numpy()[keep], return_inverse=True)
    nt = max(1, len(t_val))
    keys, rows = np.unique(w_code.ravel().astype(np.int64) * nt + t_code.ravel(), return_inverse=True)
    return w_val[keys // nt], t_val[keys % nt], rows.ravel()


def _bucket_rows(frame: pd.DataFrame, keep: np.ndarray) -> tuple[pd.MultiIndex, np.ndarray]:
    """The sorted (window, ts) index of the kept rows, and each kept row's position in it."""
    w, t, rows = _bucket_keys(frame, keep)
    return pd.MultiIndex.from_arrays([w, t], names=["window", "ts"]), rows


def _pivot_sum(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int, k: int) -> np.ndarray:
    """[n, k] sums of ``values`` by (row, column), in row order (NaN counts as 0, as in pandas' sums)."""
    flat = np.bincount(rows * k + cols, weights=np.nan_to_num(values.astype(float)), minlength=n * k)
    return flat.reshape(n, k)


def hop_matrix(frame: pd.DataFrame, target: Target) -> tuple[pd.DataFrame, dict[str, str]]:
    """Wide frame indexed by (window, ts): the SLI's requests and end-to-end ms, and each hop's ms sum.

    Returns it with ``{hop: hop_kind}``. Only hops under the target service are kept. Built with
    numpy bincounts over edge codes (the sums of pandas' group-bys, a fraction of their cost).
    """
    if frame.empty:
        return pd.DataFrame(columns=[REQUESTS, E2E]), {}
    codes, edges = _edge_codes(frame)
    below = _descendants_of(edges, target.service)
    sub = np.array([s in below for _, s in edges], dtype=bool)[codes]
    index, rows = _bucket_rows(frame, sub)
    n = len(index)
    code = codes[sub]
    entry = np.array(
        [s == target.service and (target.client is None or c == target.client) for c, s in edges], dtype=bool
    )[code]
    servers = sorted({s for c, s in edges if s in below})
    col_of_server = np.array([servers.index(s) if s in below else 0 for _, s in edges])
    self_ms = _pivot_sum(rows, col_of_server[code], frame["self_ms_sum"].to_numpy()[sub], n, len(servers))
    gap = frame["gap_ms_sum"].to_numpy()[sub]
    inner = np.array([c in below and s != target.service for c, s in edges], dtype=bool)[code]
    net = inner | (entry & (gap > 0))
    hop_names = [str(Hop(c or ENTRY_CLIENT, s)) for c, s in edges]
    hops = sorted({hop_names[k] for k in np.unique(code[net]).tolist()})
    col_of_hop = np.array([hops.index(h) if h in hops else 0 for h in hop_names])
    net_ms = _pivot_sum(rows[net], col_of_hop[code[net]], gap[net], n, len(hops))
    req = _pivot_sum(rows[entry], np.zeros(int(entry.sum()), dtype=np.int64),
                     frame["count"].to_numpy()[sub][entry], n, 1)  # fmt: skip
    e2e = _pivot_sum(rows[entry], np.zeros(int(entry.sum()), dtype=np.int64),
                     frame["duration_ms_sum"].to_numpy()[sub][entry], n, 1)  # fmt: skip
    values = np.concatenate([req, e2e, self_ms, net_ms], axis=1)
    wide = pd.DataFrame(values, index=index, columns=[REQUESTS, E2E, *servers, *hops])
    kinds = {**dict.fromkeys(servers, "service"), **dict.fromkeys(hops, "network")}
    return wide, kinds


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


def _robust_std_cols(a: np.ndarray) -> np.ndarray:
    """Per column: 1.4826 x the median absolute deviation of its finite values (0 with fewer than 2)."""
    if a.size == 0:
        return np.zeros(a.shape[1] if a.ndim == 2 else 0)
    a = np.where(np.isfinite(a), a, np.nan)
    n = np.isfinite(a).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: 0.0 below
        med = np.nanmedian(a, axis=0)
        mad = np.nanmedian(np.abs(a - med), axis=0)
    return np.where(n >= 2, 1.4826 * mad, 0.0)


def _merged(hist: pd.DataFrame, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray] | None:
    if hist.empty:
        return None
    m = np.isin(hist["window"].to_numpy(), list(ids))
    if not m.any():
        return None
    return histogram.merge([hist["idx"].to_numpy()[m]], [hist["cnt"].to_numpy()[m]])


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

    # numpy columns once (the same sums as pandas' Series.sum of the same rows)
    win = wide.index.get_level_values("window").to_numpy() if len(wide) else np.zeros(0, dtype=int)
    req = wide[REQUESTS].to_numpy(dtype=float) if len(wide) else np.zeros(0)
    e2e_ms = wide[E2E].to_numpy(dtype=float) if len(wide) else np.zeros(0)
    b_win = bad["window"].to_numpy() if len(bad) else np.zeros(0, dtype=int)
    b_total = bad["total"].to_numpy(dtype=float) if len(bad) else np.zeros(0)
    b_bad = bad["bad"].to_numpy(dtype=float) if len(bad) else np.zeros(0)

    def mean(ids: Sequence[int]) -> tuple[float, int]:
        m = np.isin(win, list(ids))
        n = float(req[m].sum()) if m.any() else 0.0
        return (float(e2e_ms[m].sum()) / n if n else 0.0), int(n)

    def bad_fraction(ids: Sequence[int]) -> float | None:
        if target.threshold_ms is None:
            return None
        m = np.isin(b_win, list(ids))
        total = float(b_total[m].sum()) if m.any() else 0.0
        if total <= 0:
            return None
        if not np.isnan(b_bad[m]).any():
            return float(b_bad[m].sum()) / total
        merged = _merged(hist, ids)
        if merged is None or not merged[1].sum():
            return None
        idx, cnt = merged
        return 1.0 - histogram.count_at_most(idx, cnt, target.threshold_ms) / int(cnt.sum())

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
    # numpy throughout (the same sums as the pandas column sums, without their per-call cost)
    win = wide.index.get_level_values("window").to_numpy()
    bmask = np.isin(win, list(base_ids))
    imask = win == inc_id
    req_all = wide[REQUESTS].to_numpy(dtype=float)
    vals = wide[hops].to_numpy(dtype=float) if hops else np.zeros((len(wide), 0))
    with np.errstate(all="ignore"):
        pr_all = vals / np.where(req_all > 0, req_all, np.nan)[:, None]
    inc_buckets = max(1, int((req_all[imask] > 0).sum()))
    base_req = float(req_all[bmask].sum())
    inc_req = float(req_all[imask].sum())
    budgets = dict(target.hop_budgets_ms) if e2e.measure == "latency" else {}
    floor = max(0.02 * e2e.baseline_mean_ms, 0.5) if floor is None else floor
    # one array per side, a contiguous column per hop (sums in the same order as pandas' column sums)
    base_a = np.asfortranarray(vals[bmask])
    inc_a = np.asfortranarray(vals[imask])
    robust = _robust_std_cols(pr_all[bmask])  # per hop: the spread of its per-bucket baseline values
    b_mean = {h: float(base_a[:, j].sum()) / base_req if base_req else 0.0 for j, h in enumerate(hops)}
    added = {
        h: (float(inc_a[:, j].sum()) / inc_req if inc_req else 0.0) - b_mean[h] for j, h in enumerate(hops)
    }
    total_pos = sum(max(0.0, a) for a in added.values())
    # per baseline window: requests and each hop's sum (windows with requests only)
    w_ids, w_pos = np.unique(win[bmask], return_inverse=True)
    w_pos = w_pos.ravel()
    win_req = np.bincount(w_pos, weights=req_all[bmask], minlength=len(w_ids))
    win_a = np.stack(
        [np.bincount(w_pos, weights=base_a[:, j], minlength=len(w_ids)) for j in range(len(hops))], axis=1
    ) if hops else np.zeros((len(w_ids), 0))  # fmt: skip
    has = win_req > 0
    win_req, win_a = win_req[has], win_a[has]
    rows = []
    for j, h in enumerate(hops):
        per_window = win_a[:, j] / win_req
        sd_win = float(np.std(per_window, ddof=1)) if len(per_window) >= 3 else 0.0
        sd_bucket = float(robust[j]) / np.sqrt(inc_buckets)
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


GAP_RATIO = 0.1  # a service's calls (or own time) per request this far below its baseline: spans missing
GAP_MIN_BUCKETS = 2
GAP_MIN_SELF_MS = 1.0  # own time per call below this in the baseline is too small to tell a gap by


def span_gaps(
    frame: pd.DataFrame, wide: pd.DataFrame, target: Target, base_ids: Sequence[int], inc_id: int = 0
) -> tuple[list[DataGap], np.ndarray]:
    """Services under the SLI whose spans went missing in the incident while the entry kept serving.

    A bucket has a gap for a service when the calls into it per entry request fell below GAP_RATIO of
    its baseline rate (its server spans stopped), or, for a service with its own time in the baseline,
    when that time per call did (a client-only edge remains, its server side is gone). Reported when
    in GAP_MIN_BUCKETS and a tenth of the incident's buckets. Returns the gaps and the incident
    buckets (``ts``) with any gap.
    """
    none: tuple[list[DataGap], np.ndarray] = ([], np.zeros(0, dtype=int))
    if frame.empty or wide.empty:
        return none
    win = wide.index.get_level_values("window").to_numpy()
    ts = wide.index.get_level_values("ts").to_numpy()
    req = wide[REQUESTS].to_numpy(dtype=float)
    base_req = float(req[np.isin(win, list(base_ids))].sum())
    inc = (win == inc_id) & (req > 0)
    if base_req <= 0 or not inc.any():
        return none
    inc_ts = ts[inc]
    below = descendants(frame, target.service) - {target.service}
    sub = frame[frame["server"].isin(below)]
    if sub.empty:
        return none
    per = sub.groupby(["server", "window", "ts"])[["count", "self_ms_sum"]].sum()
    gaps: list[DataGap] = []
    gap_ts: set[int] = set()
    have = set(per.index.get_level_values("server"))
    for service in sorted(below & have):
        rows = per.loc[service]
        rw = rows.index.get_level_values("window").to_numpy()
        base = rows[np.isin(rw, list(base_ids))]
        calls_b = float(base["count"].sum())
        if calls_b / base_req < 0.05:  # rarely called: too few calls to tell a gap from chance
            continue
        rate_b = calls_b / base_req
        self_b = float(base["self_ms_sum"].sum()) / calls_b
        mine = rows[rw == inc_id].droplevel("window")
        calls = mine["count"].reindex(inc_ts).fillna(0.0).to_numpy()
        own = mine["self_ms_sum"].reindex(inc_ts).fillna(0.0).to_numpy()
        with np.errstate(all="ignore"):
            rate = calls / req[inc]
            per_call = np.where(calls > 0, own / calls, 0.0)
        by_calls = rate < GAP_RATIO * rate_b
        by_self = ~by_calls & (self_b >= GAP_MIN_SELF_MS) & (per_call < GAP_RATIO * self_b)
        hit = by_calls | by_self
        n = int(hit.sum())
        if n < max(GAP_MIN_BUCKETS, 0.1 * len(inc_ts)):
            continue
        signal = "calls" if by_calls.sum() >= by_self.sum() else "self time"
        if signal == "calls":
            b, i = rate_b, float(calls[hit].sum() / req[inc][hit].sum())
        else:
            b, i = self_b, float(own[hit].sum() / max(calls[hit].sum(), 1.0))
        gaps.append(DataGap(service, signal, b, i, n, len(inc_ts), left_out=False))
        gap_ts |= set(inc_ts[hit].tolist())
    return gaps, np.array(sorted(gap_ts), dtype=int)

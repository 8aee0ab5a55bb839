"""diagnose(): one incident window + one SLI target -> ranked (hop, resource) causes with evidence.

I/O happens here only, in at most three queries (hop_minutes and samples scanned once each: a DuckLake scan
costs 12-25 ms of catalog work before it reads a byte): hop_minutes (``hops.load_hop_data``), the
samples linked to the top hops (``series.load_linked_grid``) and, with BubbleUp, a bounded sample of spans
(``bubbleup.load_bubble_counts``, on its own thread, overlapping the samples query). The math is in
hops.py, resources.py, baseline.py and bubbleup.py. A repeated diagnosis (same arguments, same
DuckLake snapshot) is answered from ``cache.CACHE`` after one snapshot look-up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from hopscope.catalog import Catalog, load_catalog
from hopscope.diagnosis import baseline as bl
from hopscope.diagnosis import bubbleup as bu
from hopscope.diagnosis import cache as dc
from hopscope.diagnosis import hops as hp
from hopscope.diagnosis import resources as rs
from hopscope.diagnosis.model import (
    DIMENSIONS,
    VERDICT_CAUSE,
    VERDICT_NONE,
    Baseline,
    BubbleAttr,
    Cause,
    DataGap,
    Decomposition,
    Diagnosis,
    Evidence,
    HopRow,
    Target,
)
from hopscope.diagnosis.series import load_linked_grid
from hopscope.errors import NotFoundError
from hopscope.model import Hop, ReadStore, TimeRange, analysis_step
from hopscope.signals import SeriesGrid
from hopscope.store import Store

MIN_SHARE = 0.15  # a hop must carry this share of the added latency to be named
TOP_HOPS = 3
# A second, smaller fault: a service whose own time rose many times over is judged even under MIN_SHARE,
# and named only when one of its resources is at its limit (a saturation signal: throttling, memory
# failures, stall time, drops). Wires are left out: a wire's time rises with any slow server (its reads
# and accepts queue), so a many-fold wire is a knock-on as often as a fault.
RISE_FACTOR = 4.0  # its incident time at least this many times its baseline time (the lab: a knock-on 3-3.7x)
RISE_NOISE = 10.0  # its added time at least this many times its noise
RISE_MIN_SHARE = 0.02  # and at least this share of the added latency (tiny hops rise many-fold by jitter)
RISE_MAX = 2  # at most this many such hops judged
SECONDARY_MIN = 0.3
SIGNAL_BASELINES = 2  # baseline windows whose samples are read (the nearest usable ones)
# BubbleUp's spans query runs on this thread while the samples query runs on the caller's (DuckDB
# releases the GIL while it executes; the Store gives each thread its own cursor, kept by the thread)
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hopscope-bubbleup")


def incident_key(slo: str, start: datetime, end: datetime) -> str:
    """A stable id for an ad-hoc window (the SLO engine's breach ids are used when there is one)."""
    h = hashlib.sha1(f"{slo}|{start.isoformat()}|{end.isoformat()}".encode()).hexdigest()[:10]
    return f"adhoc-{h}"


def _fmt(x: float, unit: str) -> str:
    if unit == "bitmask":  # the value is the fraction of samples with a bad bit set (hopscope.signals)
        return f"{x:.0%} of samples"
    if unit in ("B/s", "B"):
        for scale, name in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                return f"{x / scale:.3g} {name}{unit}"
    return f"{x:.3g} {unit}".strip()


def _evidence_phrase(e: Evidence) -> str:
    change = f"from {_fmt(e.baseline, e.unit)} to {_fmt(e.incident, e.unit)}"
    if e.role == "saturation":  # the resource at its limit: a queue, drops, throttling, stall time
        return f"{e.short} (at its limit: queueing, drops, throttling or stalls) went {change}"
    if e.utilization is not None and e.utilization >= 0.5:
        return f"{e.short} ran at {e.utilization:.0%} of its capacity"
    if e.role == "demand":
        return f"{e.short} (demand, context) went {change}"
    return f"{e.short} went {change}"


def _summary(row: HopRow, dim: str, ev: list[Evidence], dec: Decomposition | None = None) -> str:
    partial = dec is not None and dec.partial
    whole = dec.share_of_total(row.added_ms) if dec is not None else None
    if row.measure == "errors":
        share = (
            f"{row.share:.0%} of the added errors seen on hops (+{row.added_ms:.2%} of requests, "
            f"{whole or 0:.0%} of all added errors)"
            if partial
            else f"{row.share:.0%} of the added errors (+{row.added_ms:.2%} of requests)"
        )
        head = f"{share} start in {row.hop} (its own errors or failed calls into it)"
    else:
        edge = Hop.parse(row.hop)
        where = (
            f"on the wire between {edge.client} and {edge.server}"
            if row.hop_kind == "network"
            else f"in {row.hop}'s own time"
        )
        share = (
            f"{row.share:.0%} of the added latency seen on hops (+{row.added_ms:.1f} ms per request, "
            f"{whole or 0:.0%} of the whole end-to-end rise)"
            if partial
            else f"{row.share:.0%} of the added latency (+{row.added_ms:.1f} ms per request)"
        )
        head = f"{share} is {where}"
    if dim == "unknown":
        return head + "; no linked resource signal changed enough to name compute, bandwidth or memory."
    top = [e for e in ev if e.dimension == dim and e.score >= 0.1][:2] or [
        e for e in ev if e.dimension == dim
    ][:1]
    return head + f"; {dim}: " + " and ".join(_evidence_phrase(e) for e in top) + "."


class _Clock:
    """Wall time per step, for the benchmark (Diagnosis.timings_ms)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.steps.append((name, round((now - self.t) * 1000, 2)))
        self.t = now


def diagnose(
    store: ReadStore,
    *,
    start: datetime,
    end: datetime,
    service: str,
    route: str | None = None,
    client: str | None = None,
    threshold_ms: float | None = None,
    objective: float = 0.99,
    percentile: float | None = None,
    hop_budgets_ms: Mapping[str, float] | None = None,
    sli_kind: str = "latency",
    incident_id: str | None = None,
    slo: str = "",
    severity: str = "ticket",
    peak_burn_rate: float = 0.0,
    budget_consumed: float = 0.0,
    catalog: Catalog | None = None,
    baseline_days: int = 3,
    with_bubbleup: bool = True,
    use_cache: bool = True,
    baseline_end: datetime | None = None,
) -> Diagnosis:
    """Diagnose the window [start, end) of the SLI (service, route, threshold or percentile).

    ``sli_kind="availability"`` decomposes the added errors instead of the added latency.
    ``baseline_end``: no baseline after this (the breach's start, when [start, end) is a later part of it).
    ``use_cache``: return the diagnosis of the same arguments over the same DuckLake snapshot when
    this process made it already (``hopscope.diagnosis.cache``); the store is otherwise not read.
    """
    kwargs = dict(
        start=start, end=end, service=service, route=route, client=client, threshold_ms=threshold_ms,
        objective=objective, percentile=percentile, sli_kind=sli_kind, incident_id=incident_id, slo=slo,
        severity=severity, peak_burn_rate=peak_burn_rate, budget_consumed=budget_consumed,
        baseline_days=baseline_days, with_bubbleup=with_bubbleup, baseline_end=baseline_end,
    )  # fmt: skip
    budgets = tuple(sorted((hop_budgets_ms or {}).items()))
    key = None
    with _read_snapshot(store):
        if use_cache:
            t0 = time.perf_counter()
            args = (tuple(sorted(kwargs.items())), budgets, None if catalog is None else id(catalog))
            key = dc.CACHE.key(store, args)
            hit = dc.CACHE.get(key) if key is not None else None
            if hit is not None:
                ms = round((time.perf_counter() - t0) * 1000, 2)
                return dataclasses.replace(hit, timings_ms=(("cache hit", ms),))
        out = _diagnose(store, hop_budgets_ms=dict(budgets), catalog=catalog, **kwargs)  # type: ignore[arg-type]
    if key is not None:
        dc.CACHE.put(key, catalog, out)
    return out


def _read_snapshot(store: ReadStore) -> AbstractContextManager[None]:
    """This thread's queries in one read transaction (Store.read_snapshot): they read one DuckLake
    snapshot, the one the cache key names, even while a writer commits. BubbleUp's query, on its own
    thread, runs apart."""
    return store.read_snapshot() if isinstance(store, Store) else nullcontext()


def _diagnose(
    store: ReadStore,
    *,
    start: datetime,
    end: datetime,
    service: str,
    route: str | None,
    client: str | None,
    threshold_ms: float | None,
    objective: float,
    percentile: float | None,
    hop_budgets_ms: Mapping[str, float],
    sli_kind: str,
    incident_id: str | None,
    slo: str,
    severity: str,
    peak_burn_rate: float,
    budget_consumed: float,
    catalog: Catalog | None,
    baseline_days: int,
    with_bubbleup: bool,
    baseline_end: datetime | None,
) -> Diagnosis:
    clock = _Clock()
    catalog = catalog or load_catalog()
    target = Target(
        service=service,
        route=route,
        client=client,
        threshold_ms=threshold_ms if sli_kind == "latency" else None,
        objective=objective,
        percentile=percentile,
        hop_budgets_ms=tuple(sorted((hop_budgets_ms or {}).items())),
        kind="availability" if sli_kind == "availability" else "latency",
    )
    incident = TimeRange(start, end)
    step = analysis_step(end - start)
    errors = target.measure == "errors"
    # The previous window ends before the SLI's rise began (its onset, when the page came after it) and
    # before the breach: found in its buckets, it moves back and hop_minutes is read again (rarely).
    prev_end = min(start, baseline_end) if baseline_end is not None else start
    for _ in range(bl.MAX_SHIFTS + 1):
        candidates = bl.candidate_windows(start, end, baseline_days, before=prev_end)
        windows = [incident] + [w for w, _ in candidates]
        data = hp.load_hop_data(store, windows, target, step)
        bad = _sli_bad(data.frame, target)
        rose = bl.onset(bad, candidates[0][0], target, step)
        if rose is None:
            break
        prev_end = rose
    clock.lap("hop_minutes query")
    cand_ids = list(range(1, len(windows)))
    wide, kinds = (hp.error_matrix if errors else hp.hop_matrix)(data.frame, target)
    baseline, base_ids = bl.choose_baseline(candidates, cand_ids, wide, bad, target)
    if prev_end < start:
        why = (
            "the SLI's rise began" if baseline_end is None or prev_end < baseline_end else "the breach began"
        )
        baseline = dataclasses.replace(
            baseline,
            note=f"{baseline.note}; the previous window ends at {prev_end:%H:%M}, where {why} "
            f"({(start - prev_end).total_seconds() / 60:.0f} min before the diagnosed window)",
        )
    did = incident_id or incident_key(slo, start, end)
    common = dict(
        id=did, slo=slo, start=start, end=end, target=target, baseline=baseline,
        severity=severity, peak_burn_rate=peak_burn_rate, budget_consumed=budget_consumed,
    )  # fmt: skip
    what = "own errors" if errors else "hops"
    routes = route if route is not None else "every route"
    checked = [f"{len(kinds)} {what} of {routes} under {service}: " + ", ".join(sorted(kinds))]

    inc_rows = wide[wide.index.get_level_values("window") == 0] if not wide.empty else wide
    if inc_rows.empty or float(inc_rows[hp.REQUESTS].sum()) == 0:
        if wide.empty and not kinds:
            raise NotFoundError(
                f"no hop_minutes rows for {f'route {route!r}' if route is not None else 'any route'} "
                f"into {service!r} around {start}..{end}"
            )
        return Diagnosis(**common, verdict=VERDICT_NONE, causes=(), decomposition=None,  # type: ignore[arg-type]
                         checked=tuple(checked), notes=("no requests in the incident window",))  # fmt: skip
    if not baseline.sufficient:
        return Diagnosis(**common, verdict=VERDICT_NONE, causes=(), decomposition=None,  # type: ignore[arg-type]
                         checked=tuple(checked), notes=(baseline.note,))  # fmt: skip

    wide, gaps = _leave_out_gaps(wide, data.frame, target, base_ids)
    if errors:
        e2e = hp.end_to_end_errors(wide, base_ids, 0)
        floor = max(0.1 * (1 - objective), 1e-6)
        dec = hp.decompose_hops(wide, kinds, base_ids, 0, e2e, target, floor=floor)
    else:
        e2e = hp.end_to_end(data.hist, bad, wide, base_ids, 0, target)
        dec = hp.decompose_hops(wide, kinds, base_ids, 0, e2e, target)
    dec = _unjudged_gap_hops(dec, gaps)
    clock.lap("decomposition")
    notes: list[str] = [g.sentence for g in gaps]
    if errors:
        notes.append(
            "availability SLO: the decomposition is of the added errors, by the service they start in"
        )
    degraded, why = _degraded(dec, target)
    checked.append(why)
    standing = [h for h in dec.hops if h.significant and h.share >= MIN_SHARE][:TOP_HOPS]
    rising = [] if errors else _rising_hops(dec, standing)
    exemplar_edges: list[tuple[str | None, str]] = [(None, service)]
    if not degraded:
        notes.append(why)
    elif not standing:
        notes.append(f"no hop's {'errors' if errors else 'latency'} rose above its baseline noise")
    if dec.partial:
        notes.insert(0, dec.statement())

    causes: list[Cause] = []
    bubble_job = None
    if with_bubbleup and standing and degraded:
        # started first, on its own thread: it overlaps the samples query and the scoring
        bubble_job = _POOL.submit(_bubble, store, standing[0], wide, baseline, incident, step)
    if degraded and standing:
        sig_ids = [0, *base_ids[:SIGNAL_BASELINES]]
        causes, sig_notes, n_series = _resource_causes(
            store, standing, rising, wide, kinds, data.frame, windows, sig_ids, step, catalog, clock, dec
        )
        notes += sig_notes
        checked.append(f"{n_series} resource series linked to the top hops")
        top = standing[0]
        if top.hop_kind == "network":
            edge = Hop.parse(top.hop)
            exemplar_edges.insert(0, ("" if edge.client == hp.ENTRY_CLIENT else edge.client, edge.server))
        else:
            exemplar_edges.insert(0, (None, top.hop))
    bubble: tuple[BubbleAttr, ...] = ()
    bnote = ""
    if bubble_job is not None:
        attrs, bnote, own_ms = bubble_job.result()
        bubble = tuple(attrs)
        clock.lap("waiting for bubbleup")
        clock.steps.append(("bubbleup query (own thread)", own_ms))
    exemplars = hp.pick_exemplars(data.exemplars, exemplar_edges)
    verdict = VERDICT_CAUSE if causes else VERDICT_NONE
    clock.lap("rest")
    return Diagnosis(
        **common,  # type: ignore[arg-type]
        verdict=verdict,
        causes=tuple(causes),
        decomposition=dec,
        checked=tuple(checked),
        notes=tuple(notes),
        bubbleup=bubble,
        bubbleup_note=bnote,
        exemplars=tuple(exemplars),
        timings_ms=tuple(clock.steps),
        data_gaps=tuple(gaps),
    )


def _leave_out_gaps(
    wide: pd.DataFrame, frame: pd.DataFrame, target: Target, base_ids: list[int]
) -> tuple[pd.DataFrame, list[DataGap]]:
    """Incident buckets where a service's spans went missing are left out of the decomposition (a
    missing span would be averaged in as 0 ms); when that is every bucket, they stay and the gaps say
    so (``_unjudged_gap_hops``)."""
    gaps, gap_ts = hp.span_gaps(frame, wide, target, base_ids, 0)
    if not gaps:
        return wide, []
    win = wide.index.get_level_values("window").to_numpy()
    ts = wide.index.get_level_values("ts").to_numpy()
    inc = (win == 0) & (wide[hp.REQUESTS].to_numpy(dtype=float) > 0)
    drop = inc & np.isin(ts, gap_ts)
    if drop.sum() >= inc.sum():
        return wide, gaps
    return wide[~drop], [dataclasses.replace(g, left_out=True) for g in gaps]


def _unjudged_gap_hops(dec: Decomposition, gaps: list[DataGap]) -> Decomposition:
    """The hops of a service whose spans are missing in the whole incident are not named as causes."""
    gone = {g.service for g in gaps if not g.left_out}
    if not gone:
        return dec

    def touches(h: HopRow) -> bool:
        return (h.hop if h.hop_kind == "service" else Hop.parse(h.hop).server) in gone

    rows = tuple(dataclasses.replace(h, significant=False) if touches(h) else h for h in dec.hops)
    return dataclasses.replace(dec, hops=rows)


def _bubble(
    store: ReadStore, top: HopRow, wide: pd.DataFrame, baseline: Baseline, incident: TimeRange, step: int
) -> tuple[list[BubbleAttr], str, float]:
    """BubbleUp over the top hop's spans in the worst stretch of the incident; (attrs, note, wall ms)."""
    t = time.perf_counter()
    used = [TimeRange(w.start, w.end) for w in baseline.used]
    nb = int(-(-incident.seconds // step))
    lo, hi = bu.focus_offsets(_hop_grid(wide, top.hop, [0], nb)[0], step)
    focus = (timedelta(seconds=lo * step), timedelta(seconds=hi * step))
    counts, slow_total, base_total, _cut = bu.load_bubble_counts(
        store, top.hop, top.hop_kind, incident, used, focus=focus
    )
    attrs, note = bu.bubbleup(counts, slow_total, base_total)
    return attrs, note, round((time.perf_counter() - t) * 1000, 2)


def _sli_bad(frame: pd.DataFrame, target: Target) -> pd.DataFrame:
    """Per bucket of the SLI's edges: window, total, bad (over the threshold, or errors)."""
    if frame.empty:
        return pd.DataFrame(columns=["window", "ts", "total", "bad"])
    keep = (frame["server"] == target.service).to_numpy(dtype=bool, copy=True)
    if target.client is not None:
        keep &= (frame["client"] == target.client).to_numpy()
    if not keep.any():
        return pd.DataFrame(columns=["window", "ts", "total", "bad"])
    w, ts, rows = hp._bucket_keys(frame, keep)
    n = len(w)
    col = frame["errors" if target.measure == "errors" else "bad"].to_numpy(dtype=float)[keep]
    missing = np.isnan(col)
    total = np.bincount(rows, weights=frame["count"].to_numpy(dtype=float)[keep], minlength=n)
    bad = np.bincount(rows, weights=np.where(missing, 0.0, col), minlength=n)
    # a bucket with any edge not counted exactly stays NaN (a sum would hide it)
    bad[np.bincount(rows, weights=missing, minlength=n) > 0] = np.nan
    return pd.DataFrame({"window": w, "ts": ts, "total": total, "bad": bad})


def _degraded(dec: Decomposition, target: Target) -> tuple[bool, str]:
    """Is there added latency (or errors) to explain at all? (SLI burning budget, beyond baseline)"""
    e = dec.end_to_end
    allowed = 1 - target.objective
    if target.measure == "errors":
        inc, base = e.incident_bad_fraction or 0.0, e.baseline_bad_fraction or 0.0
        ok = inc > allowed and inc > 1.5 * base
        return ok, (
            f"SLI: {inc:.3%} of {e.incident_requests} requests failed "
            f"(baseline {base:.3%}, objective allows {allowed:.3%})"
        )
    if target.threshold_ms is not None and e.incident_bad_fraction is not None:
        base = e.baseline_bad_fraction or 0.0
        ok = e.incident_bad_fraction > allowed and e.incident_bad_fraction > 1.5 * base
        return ok, (
            f"SLI: {e.incident_bad_fraction:.2%} of {e.incident_requests} requests over {target.threshold_ms:g} ms "
            f"(baseline {base:.2%}, objective allows {allowed:.2%})"
        )
    if e.baseline_pct_ms is None or e.incident_pct_ms is None:
        return False, "SLI: no latency histogram for the target"
    ok = e.added_pct_ms > 0.1 * e.baseline_pct_ms
    return (
        ok,
        f"SLI: p{e.percentile * 100:g} {e.incident_pct_ms:.1f} ms vs baseline {e.baseline_pct_ms:.1f} ms",
    )


def _hop_grid(wide: pd.DataFrame, hop: str, ids: list[int], nb: int) -> np.ndarray:
    """A hop's per-request values (``hops.per_request``) as [len(ids), nb] (rows in the order of
    ``ids``), NaN where none. Numpy on the columns: the same divisions, without a DataFrame."""
    out = np.full((len(ids), nb), np.nan)
    if wide.empty:
        return out
    req = wide[hp.REQUESTS].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        per_req = wide[hop].to_numpy(dtype=float) / np.where(req > 0, req, np.nan)
    pos = np.full(max(ids, default=0) + 1, -1)
    pos[ids] = np.arange(len(ids))
    win = wide.index.get_level_values("window").to_numpy()
    ts = wide.index.get_level_values("ts").to_numpy()
    keep = (win >= 0) & (win < len(pos)) & (ts >= 0) & (ts < nb)
    keep[keep] = pos[win[keep]] >= 0
    out[pos[win[keep]], ts[keep].astype(int)] = per_req[keep]
    return out


def _linked_names(standing: list[HopRow], frame: pd.DataFrame, errors: bool) -> tuple[set[str], list[str]]:
    """Services whose series (and hosts) to read, and names a probe target may contain."""
    services: set[str] = set()
    for row in standing:
        if row.hop_kind == "network":
            edge = Hop.parse(row.hop)
            services |= {edge.client, edge.server}
        else:
            services.add(row.hop)
            if errors:  # failed calls into a service: its callers' ends of the link count too
                services |= set(frame.loc[frame["server"] == row.hop, "client"].unique())
    services -= {"", hp.ENTRY_CLIENT}
    return services, sorted(services)


def _rising_hops(dec: Decomposition, standing: list[HopRow]) -> list[HopRow]:
    """Services under MIN_SHARE whose own time rose many times over, well beyond their noise (the
    candidates for a second, smaller fault; ``_resource_causes`` names one only with a resource at its
    limit)."""
    named = {h.hop for h in standing}
    out = [
        h
        for h in dec.hops
        if h.hop not in named
        and h.hop_kind == "service"
        and h.significant
        and h.share >= RISE_MIN_SHARE
        and h.baseline_ms > 0
        and h.incident_ms >= RISE_FACTOR * h.baseline_ms
        and h.added_ms >= RISE_NOISE * h.noise_ms
    ]
    return out[:RISE_MAX]


def _at_its_limit(ev: list[Evidence], dim: str) -> Evidence | None:
    """The dimension's best saturation signal that moved enough to count, if any."""
    return next(
        (e for e in ev if e.dimension == dim and e.role == "saturation" and e.score >= rs.DIMENSION_MIN), None
    )


def _rise_clause(row: HopRow, limit: Evidence) -> str:
    return (
        f" Named though under {MIN_SHARE:.0%} of the added latency: its own time rose "
        f"{row.incident_ms / row.baseline_ms:.1f}x ({row.baseline_ms:.1f} -> {row.incident_ms:.1f} ms per request) "
        f"and {limit.short} says the resource is at its limit."
    )


def _resource_causes(
    store: ReadStore,
    standing: list[HopRow],
    rising: list[HopRow],
    wide: pd.DataFrame,
    kinds: dict[str, str],
    frame: pd.DataFrame,
    windows: list[TimeRange],
    sig_ids: list[int],
    step: int,
    catalog: Catalog,
    clock: _Clock,
    dec: Decomposition,
) -> tuple[list[Cause], list[str], int]:
    errors = standing[0].measure == "errors"
    services, names = _linked_names(standing + rising, frame, errors)
    network_only = all(r.hop_kind == "network" for r in standing + rising)
    metrics = [m for m, info in catalog.metrics.items() if not network_only or info.dimension == "bandwidth"]
    metrics += [c for c in catalog.capacity_metrics() if c not in metrics]
    grid = load_linked_grid(
        store, [windows[i] for i in sig_ids], step_s=step, metrics=metrics,
        services=sorted(services), probe_targets=names, catalog=catalog,
    )  # fmt: skip
    clock.lap("samples queries")
    # grid rows are in sig_ids order: row 0 the incident, rows 1.. the baseline windows
    base_rows = list(range(1, len(sig_ids)))
    caps = rs.capacities(grid, catalog)
    host_map = rs.hosts_by_service(grid.meta, catalog)
    nb = grid.values.shape[2] if not grid.empty else 0
    primary: list[Cause] = []
    faint: list[Cause] = []  # the rising hops with a resource at its limit: after the primary causes
    secondary: list[tuple[float, Cause]] = []
    notes: list[str] = []
    n_series = 0
    for row in standing + rising:
        is_rising = row in rising
        linked = _link(grid, row, frame, host_map, catalog, errors)
        n_series += len(linked)
        hop_ms = _hop_grid(wide, row.hop, sig_ids, nb)
        ev = rs.score_signals(grid, linked, hop_ms, base_rows, 0, catalog, caps)
        dims = rs.score_dimensions(ev)
        judged = {e.dimension for e in ev}
        relevant = ("bandwidth",) if row.hop_kind == "network" else DIMENSIONS
        not_judged = tuple(d for d in relevant if d not in judged)
        best = max(dims.items(), key=lambda kv: kv[1], default=("unknown", 0.0))
        dim = best[0] if best[1] >= rs.DIMENSION_MIN else "unknown"
        limit = _at_its_limit(ev, dim) if is_rising else None
        if is_rising and limit is None:
            continue  # a many-fold rise with no resource at its limit: not named (load, a knock-on)
        for d in not_judged:
            notes.append(f"{row.hop}: no {d} signal linked to this hop, so {d} could not be judged")
        score = best[1] * (0.5 + 0.5 * row.share) if dim != "unknown" else 0.25 * row.share
        shown = [e for e in ev if e.dimension == dim][:5] if dim != "unknown" else ev[:5]
        share_of = "errors" if errors else "latency"
        summary = _summary(row, dim, ev, dec) + (_rise_clause(row, limit) if limit is not None else "")
        cause = Cause(
            0, row.hop, row.hop_kind, dim, row.share, score, summary, tuple(shown), dims, not_judged,
            share_of, dec.share_of_total(row.added_ms),
        )  # fmt: skip
        if is_rising:
            faint.append(cause)
            continue  # its other dimensions are not offered: it is named for the resource at its limit
        primary.append(cause)
        for d, s in dims.items():
            if d != dim and s >= SECONDARY_MIN:
                alt = tuple(e for e in ev if e.dimension == d)[:5]
                secondary.append(
                    (s * row.share, Cause(0, row.hop, row.hop_kind, d, row.share, s * (0.5 + 0.5 * row.share) * 0.8,
                                          _summary(row, d, ev, dec), alt, dims, not_judged, share_of,
                                          dec.share_of_total(row.added_ms)))
                )  # fmt: skip
    secondary.sort(key=lambda t: -t[0])
    clock.lap("scoring")
    ordered = primary + faint + [c for _, c in secondary]
    ranked = [
        Cause(i + 1, c.hop, c.hop_kind, c.dimension, c.share, c.score, c.summary, c.evidence,
              c.dimension_scores, c.not_judged, c.share_of, c.share_total)
        for i, c in enumerate(ordered)
    ]  # fmt: skip
    return ranked, notes, n_series


def _link(
    grid: SeriesGrid,
    row: HopRow,
    frame: pd.DataFrame,
    host_map: dict[str, set[str]],
    catalog: Catalog,
    errors: bool,
) -> list[int]:
    linked = rs.link_series(grid.meta, row.hop, row.hop_kind, host_map, catalog)
    if errors and row.hop_kind == "service":
        # an error counted in a service may be a call that failed on the way: its links' bandwidth
        for c in frame.loc[frame["server"] == row.hop, "client"].unique():
            if c:
                linked += rs.link_series(grid.meta, str(Hop(c, row.hop)), "network", host_map, catalog)
    return sorted(set(linked))


__all__ = ["diagnose", "incident_key"]

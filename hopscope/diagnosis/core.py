"""diagnose(): one incident window + one SLI target -> ranked (hop, resource) causes with evidence.

I/O happens here only (store reads through hops/signals/bubbleup loaders); the math is in
hops.py, resources.py, baseline.py and bubbleup.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from hopscope.catalog import Catalog, load_catalog
from hopscope.diagnosis import baseline as bl
from hopscope.diagnosis import bubbleup as bu
from hopscope.diagnosis import hops as hp
from hopscope.diagnosis import resources as rs
from hopscope.diagnosis.model import (
    DIMENSIONS,
    VERDICT_CAUSE,
    VERDICT_NONE,
    Cause,
    Decomposition,
    Diagnosis,
    Evidence,
    HopRow,
    Target,
)
from hopscope.errors import NotFoundError
from hopscope.signals import Window, load_series

MIN_SHARE = 0.15  # a hop must carry this share of the added latency to be named
TOP_HOPS = 3
SECONDARY_MIN = 0.3


def step_for(length: timedelta) -> int:
    """Bucket length: 1 minute up to 6 h windows, then about 360 buckets per window."""
    s = length.total_seconds()
    if s <= 6 * 3600:
        return 60
    return int(max(60, round(s / 360 / 60) * 60))


def incident_key(slo: str, start: datetime, end: datetime) -> str:
    """A stable id for an ad-hoc window (the SLO engine's breach ids are used when there is one)."""
    h = hashlib.sha1(f"{slo}|{start.isoformat()}|{end.isoformat()}".encode()).hexdigest()[:10]
    return f"adhoc-{h}"


def _fmt(x: float, unit: str) -> str:
    if unit in ("B/s", "B"):
        for scale, name in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                return f"{x / scale:.3g} {name}{unit}"
    return f"{x:.3g} {unit}".strip()


def _evidence_phrase(e: Evidence) -> str:
    if e.utilization is not None and e.utilization >= 0.5:
        return f"{e.signal} ran at {e.utilization:.0%} of its capacity"
    return f"{e.signal} went from {_fmt(e.baseline, e.unit)} to {_fmt(e.incident, e.unit)}"


def _summary(row: HopRow, dim: str, ev: list[Evidence], e2e_added: float) -> str:
    where = (
        f"on the wire between {row.hop.replace('->', ' and ')}"
        if row.hop_kind == "network"
        else f"in {row.hop}'s own time"
    )
    head = f"{row.share:.0%} of the added latency (+{row.added_ms:.1f} ms per request) is {where}"
    if dim == "unknown":
        return head + "; no linked resource signal changed enough to name compute, bandwidth or memory."
    top = [e for e in ev if e.dimension == dim][:2]
    return head + f"; {dim}: " + " and ".join(_evidence_phrase(e) for e in top) + "."


def diagnose(
    store: Any,
    *,
    start: datetime,
    end: datetime,
    service: str = "api-gateway",
    route: str = "/recommend",
    client: str | None = None,
    threshold_ms: float | None = 200.0,
    objective: float = 0.99,
    percentile: float | None = None,
    hop_budgets_ms: Mapping[str, float] | None = None,
    incident_id: str | None = None,
    slo: str = "",
    severity: str = "ticket",
    peak_burn_rate: float = 0.0,
    budget_consumed: float = 0.0,
    catalog: Catalog | None = None,
    baseline_days: int = 7,
    with_bubbleup: bool = True,
) -> Diagnosis:
    """Diagnose the window [start, end) of the SLI (service, route, threshold or percentile)."""
    catalog = catalog or load_catalog()
    target = Target(
        service=service,
        route=route,
        client=client,
        threshold_ms=threshold_ms,
        objective=objective,
        percentile=percentile,
        hop_budgets_ms=tuple(sorted((hop_budgets_ms or {}).items())),
    )
    incident = Window(start, end)
    step = step_for(end - start)
    candidates = bl.candidate_windows(start, end, baseline_days)
    windows = [incident] + [w for w, _ in candidates]
    cand_ids = list(range(1, len(windows)))
    frame = hp.load_hop_frame(store, windows, route, step)
    wide, kinds = hp.hop_matrix(frame, target)
    hist, bad = hp.load_target_tail(store, windows, target, step)
    baseline, base_ids = bl.choose_baseline(candidates, cand_ids, wide, bad, target)
    did = incident_id or incident_key(slo, start, end)
    common = dict(
        id=did, slo=slo, start=start, end=end, target=target, baseline=baseline,
        severity=severity, peak_burn_rate=peak_burn_rate, budget_consumed=budget_consumed,
    )  # fmt: skip
    checked = [f"{len(kinds)} hops of {route} under {service}: " + ", ".join(sorted(kinds))]

    inc_rows = wide[wide.index.get_level_values("window") == 0] if not wide.empty else wide
    if inc_rows.empty or float(inc_rows[hp.REQUESTS].sum()) == 0:
        if wide.empty and not kinds:
            raise NotFoundError(
                f"no hop_minutes rows for route {route!r} into {service!r} around {start}..{end}"
            )
        return Diagnosis(**common, verdict=VERDICT_NONE, causes=(), decomposition=None,  # type: ignore[arg-type]
                         checked=tuple(checked), notes=("no requests in the incident window",))  # fmt: skip
    if not baseline.sufficient:
        return Diagnosis(**common, verdict=VERDICT_NONE, causes=(), decomposition=None,  # type: ignore[arg-type]
                         checked=tuple(checked), notes=(baseline.note,))  # fmt: skip

    e2e = hp.end_to_end(hist, bad, wide, base_ids, 0, target)
    dec = hp.decompose_hops(wide, kinds, base_ids, 0, e2e, target)
    notes: list[str] = []
    degraded, why = _degraded(dec, target)
    checked.append(why)
    standing = [h for h in dec.hops if h.significant and h.share >= MIN_SHARE][:TOP_HOPS]
    exemplar_edges: list[tuple[str | None, str]] = [(None, service)]
    if not degraded:
        notes.append(why)
    elif not standing:
        notes.append("no hop's latency rose above its baseline noise")

    causes: list[Cause] = []
    if degraded and standing:
        causes, sig_notes, n_series = _resource_causes(
            store, standing, wide, kinds, windows, base_ids, step, catalog, e2e
        )
        notes += sig_notes
        checked.append(f"{n_series} resource series linked to the top hops")
        top = standing[0]
        if top.hop_kind == "network":
            c, _, s = top.hop.partition("->")
            exemplar_edges.insert(0, ("" if c == hp.ENTRY_CLIENT else c, s))
        else:
            exemplar_edges.insert(0, (None, top.hop))
    bubble: tuple[Any, ...] = ()
    bnote = ""
    if with_bubbleup and standing and degraded:
        used = [Window(w.start, w.end) for w in baseline.used]
        counts, slow_total, base_total, _cut = bu.load_bubble_counts(
            store, standing[0].hop, standing[0].hop_kind, incident, used
        )
        attrs, bnote = bu.bubbleup(counts, slow_total, base_total)
        bubble = tuple(attrs)
    exemplars = hp.load_exemplars(store, incident, route, exemplar_edges)
    verdict = VERDICT_CAUSE if causes else VERDICT_NONE
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
    )


def _degraded(dec: Decomposition, target: Target) -> tuple[bool, str]:
    """Is there added latency to explain at all? (SLI burning budget in this window, beyond baseline)"""
    e = dec.end_to_end
    if target.threshold_ms is not None and e.incident_bad_fraction is not None:
        allowed = 1 - target.objective
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


def _resource_causes(
    store: Any,
    standing: list[HopRow],
    wide: pd.DataFrame,
    kinds: dict[str, str],
    windows: list[Window],
    base_ids: list[int],
    step: int,
    catalog: Catalog,
    e2e: Any,
) -> tuple[list[Cause], list[str], int]:
    ids = [0, *base_ids]
    wins = [windows[i] for i in ids]
    services: set[str] = set()
    for row in standing:
        services |= set(row.hop.partition("->")[::2]) if row.hop_kind == "network" else {row.hop}
    services.discard("")
    hosts = store.query_df(
        f"SELECT DISTINCT host FROM samples WHERE ts >= ? AND ts < ? AND host IS NOT NULL "
        f"AND service IN ({', '.join('?' for _ in services)})",
        [windows[0].start, windows[0].end, *sorted(services)],
    )["host"].tolist()
    probes = [m for m in catalog if m.startswith("probe_")]
    others = [m for m in catalog if not m.startswith("probe_")]
    parts = [
        load_series(
            store, wins, step_s=step, metrics=others, services=sorted(services), hosts=hosts, catalog=catalog
        ),
        load_series(store, wins, step_s=step, metrics=probes, catalog=catalog),
    ]
    signals = (
        pd.concat([p for p in parts if not p.empty], ignore_index=True)
        if any(not p.empty for p in parts)
        else parts[0]
    )
    # load_series numbers windows in the order passed: map back to our ids
    if not signals.empty:
        signals["window"] = signals["window"].map(dict(enumerate(ids)))
    meta = rs.series_meta(signals)
    host_map = rs.hosts_by_service(meta)
    per_req = hp.per_request(wide, list(kinds))
    primary: list[Cause] = []
    secondary: list[tuple[float, Cause]] = []
    notes: list[str] = []
    n_series = 0
    for row in standing:
        linked = rs.link_series(meta, row.hop, row.hop_kind, host_map, catalog)
        n_series += len(linked)
        ev = rs.score_signals(signals, linked, per_req[row.hop], base_ids, 0, catalog)
        dims = rs.score_dimensions(ev)
        judged = {e.dimension for e in ev}
        relevant = ("bandwidth",) if row.hop_kind == "network" else DIMENSIONS
        not_judged = tuple(d for d in relevant if d not in judged)
        for d in not_judged:
            notes.append(f"{row.hop}: no {d} signal linked to this hop, so {d} could not be judged")
        best = max(dims.items(), key=lambda kv: kv[1], default=("unknown", 0.0))
        dim = best[0] if best[1] >= rs.DIMENSION_MIN else "unknown"
        dscore = best[1] if dim != "unknown" else 0.0
        score = dscore * (0.5 + 0.5 * row.share) if dim != "unknown" else 0.25 * row.share
        shown = [e for e in ev if e.dimension == dim][:5] if dim != "unknown" else ev[:5]
        primary.append(
            Cause(
                0,
                row.hop,
                row.hop_kind,
                dim,
                row.share,
                score,
                _summary(row, dim, ev, e2e.added_mean_ms),
                tuple(shown),
                dims,
                not_judged,
            )  # fmt: skip
        )
        for d, s in dims.items():
            if d != dim and s >= SECONDARY_MIN:
                alt = [e for e in ev if e.dimension == d][:5]
                secondary.append(
                    (
                        s * row.share,
                        Cause(
                            0,
                            row.hop,
                            row.hop_kind,
                            d,
                            row.share,
                            s * (0.5 + 0.5 * row.share) * 0.8,
                            _summary(row, d, ev, e2e.added_mean_ms),
                            tuple(alt),
                            dims,
                            not_judged,
                        ),
                    )  # fmt: skip
                )
    secondary.sort(key=lambda t: -t[0])
    ordered = primary + [c for _, c in secondary]
    ranked = [
        Cause(
            i + 1,
            c.hop,
            c.hop_kind,
            c.dimension,
            c.share,
            c.score,
            c.summary,
            c.evidence,
            c.dimension_scores,
            c.not_judged,
        )
        for i, c in enumerate(ordered)
    ]
    return ranked, notes, n_series

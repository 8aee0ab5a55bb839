"""Which resource: the signals linked to a hop, scored incident vs baseline, mapped to a dimension.

Signals arrive as a ``SeriesGrid`` (``values[series, window, bucket]``, one SQL query); the hop's
per-request latency comes as an array of the same ``[window, bucket]`` shape. A series' score
combines
  * its change: how far the incident level moved in the "worse" direction (catalog
    ``higher_is_worse``), in units of the baseline's robust spread, and relative to its level;
  * its saturation: incident level against a known capacity (link speed, framebuffer, maxmemory);
  * its correlation with the hop's per-request latency across baseline and incident buckets.
A dimension's score is its best series plus a little for a second corroborating one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from hopscope.catalog import Catalog
from hopscope.diagnosis.model import DIMENSIONS, Evidence
from hopscope.model import Hop
from hopscope.signals import SeriesGrid

# scoring knobs (why: a change must clear 3 robust sigmas and ~15 % of its level to count)
Z_FLOOR = 3.0
Z_SCALE = 3.0
REL_FULL = 0.15
SAT_START = 0.8
SAT_FULL = 0.95
MIN_POINTS_CORR = 6
DIMENSION_MIN = 0.3  # a dimension below this is not named as the cause
# demand (requests, packets) rises with any busy hour: context, weighed below a resource at its limit
DEMAND_WEIGHT = 0.5
# a level with no capacity to judge it by (CPU seconds of a process, a probe's phase time) says the
# resource moved, not that it is at its limit: weighed below a saturation signal that changed as much
UNBOUNDED_LEVEL_WEIGHT = 0.8


def hosts_by_service(meta: pd.DataFrame, catalog: Catalog | None = None) -> dict[str, set[str]]:
    """Hosts each service's series run on (from the samples themselves). A series the user's label
    map places says nothing of its host: a router's port mapped to a service does not make the
    router that service's host."""
    out: dict[str, set[str]] = {}
    rows = zip(meta["service"].tolist(), meta["host"].tolist(), meta["labels"].tolist(), strict=True)
    for s, h, labels in rows:
        if s and h and (catalog is None or catalog.link_of(s, h, labels or {}) is None):
            out.setdefault(s, set()).add(h)
    return out


def _matches_target(labels: Mapping[str, str], names: Iterable[str]) -> bool:
    target = str(labels.get("target", labels.get("instance", "")))
    return bool(target) and any(n and n in target for n in names)


def link_series(
    meta: pd.DataFrame, hop: str, hop_kind: str, hosts: Mapping[str, set[str]], catalog: Catalog
) -> list[int]:
    """Rows of ``meta`` linked to a hop through service, host and probe-target labels.

    A service hop takes every resource series of the service and of its hosts; a network hop
    ``client->server`` the bandwidth series of both ends and the probes of its server. A series the
    user's label map places (``catalog.link_of``) is linked where the map says, and only there: to its
    service's hop and that service's links, or to its edge alone.
    """
    capacity_only = catalog.capacity_metrics()
    keep: list[int] = []
    if hop_kind == "network":
        edge = Hop.parse(hop)
        client, server = edge.client, edge.server
        ends = {client, server}
        end_hosts = set().union(*(hosts.get(e, set()) for e in ends))
        server_names = {server} | hosts.get(server, set())
    rows = zip(
        meta["metric"].tolist(),
        meta["service"].tolist(),
        meta["host"].tolist(),
        meta["labels"].tolist(),
        strict=True,
    )
    for i, (metric, service, host, row_labels) in enumerate(rows):
        info = catalog.get(metric)
        if info is None or metric in capacity_only:
            continue
        labels = row_labels or {}
        dim = info.dimension_for(labels)
        if dim == "none":
            continue
        mapped = catalog.link_of(service, host, labels) if catalog.links else None
        if mapped is not None:
            if mapped.edge is not None:
                ok = hop_kind == "network" and dim == "bandwidth" and Hop.parse(mapped.edge) == Hop.parse(hop)
            elif hop_kind == "service":
                ok = mapped.service == hop
            else:
                ok = dim == "bandwidth" and mapped.service in ends
            if ok:
                keep.append(i)
            continue
        is_probe = "target" in labels or metric.startswith("probe_")
        if hop_kind == "service":
            ok = service == hop or host in hosts.get(hop, set())
            if is_probe and service != hop:
                ok = _matches_target(labels, {hop} | hosts.get(hop, set()))
        else:
            if dim != "bandwidth":
                continue
            if is_probe:
                ok = service == server or _matches_target(labels, server_names)
            else:
                ok = service in ends or (bool(host) and host in end_hosts)
        if ok:
            keep.append(i)
    return keep


def capacities(grid: SeriesGrid, catalog: Catalog) -> np.ndarray:
    """Per series: its capacity (catalog value, or the median of the capacity series beside it), else NaN."""
    meta = grid.meta
    n = len(meta)
    caps = np.full(n, np.nan)
    if n == 0:
        return caps
    flat = grid.values.reshape(n, -1)
    with np.errstate(all="ignore"):
        counts = np.isfinite(flat).sum(axis=1)
        med = np.full(n, np.nan)
        has = counts > 0
        if has.any():
            med[has] = np.nanmedian(flat[has], axis=1)
    exact: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], float] = {}
    loose: dict[tuple[str, str, str], list[float]] = {}
    rows = list(zip(meta["metric"].tolist(), meta["service"].tolist(), meta["host"].tolist(),
                    [tuple(sorted((lab or {}).items())) for lab in meta["labels"].tolist()], strict=True))  # fmt: skip
    for i, (metric, service, host, labels) in enumerate(rows):
        exact[(metric, service, host, labels)] = med[i]
        loose.setdefault((metric, service, host), []).append(med[i])
    for i, (metric, service, host, labels) in enumerate(rows):
        info = catalog.get(metric)
        if info is None:
            continue
        if info.capacity_value is not None:
            caps[i] = info.capacity_value
            continue
        names = [info.capacity_metric] if info.capacity_metric else list(info.capacity_sum)
        if not names:
            continue
        total = 0.0
        for name in names:
            v = exact.get((name, service, host, labels))
            if v is None:
                same_host = loose.get((name, service, host), [])
                v = same_host[0] if len(same_host) == 1 else None
            if v is None or not math.isfinite(v):
                total = math.nan
                break
            total += v
        caps[i] = total if total > 0 else np.nan
    return caps


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_POINTS_CORR:
        return None
    a, b = a[ok], b[ok]
    if np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def score_series(
    values: np.ndarray,
    hop_ms: np.ndarray,
    base_ids: Sequence[int],
    inc_id: int,
    higher_is_worse: bool,
    capacity: float | None,
) -> tuple[float, float, float | None, float | None, float | None, float]:
    """(baseline, incident, relative change, correlation, utilization, score) of one series.

    ``values`` and ``hop_ms`` are ``[window, bucket]`` arrays (NaN = no data); rows ``base_ids``
    are the baseline windows, row ``inc_id`` the incident.
    """
    base = values[list(base_ids)].ravel()
    inc = values[inc_id]
    base = base[np.isfinite(base)]
    inc = inc[np.isfinite(inc)]
    if base.size == 0 or inc.size == 0:
        return math.nan, math.nan, math.nan, None, None, 0.0
    b = float(np.median(base))
    i = float(np.mean(inc))
    sign = 1.0 if higher_is_worse else -1.0
    worse = sign * (i - b)
    mad = 1.4826 * float(np.median(np.abs(base - b)))
    floor = max(0.05 * abs(b), 0.01 * capacity if capacity else 0.0, 1e-9)
    spread = max(mad, floor)
    z = worse / spread
    rel = worse / abs(b) if abs(b) > 1e-12 else (math.inf if worse > 0 else 0.0)
    change_score = (1 - math.exp(-max(0.0, z - Z_FLOOR) / Z_SCALE)) * min(1.0, max(0.0, rel) / REL_FULL)
    util = None
    sat = 0.0
    if capacity:
        u_inc = i / capacity if higher_is_worse else 1 - i / capacity
        u_base = b / capacity if higher_is_worse else 1 - b / capacity
        util = u_inc
        if u_inc - u_base > 0.03:
            sat = min(1.0, max(0.0, (u_inc - SAT_START) / (SAT_FULL - SAT_START)))
    rows = [inc_id, *base_ids]
    r = _corr(values[rows].ravel(), hop_ms[rows].ravel())
    r_worse = sign * r if r is not None else None
    corr_factor = 0.4 + 0.6 * max(0.0, r_worse) if r_worse is not None else 0.6
    score = max(change_score, sat) * corr_factor
    change = (i - b) / abs(b) if abs(b) > 1e-12 else None  # from zero: no relative change to give
    return b, i, change, r_worse, util, float(score)


def score_signals(
    grid: SeriesGrid,
    linked: Sequence[int],
    hop_ms: np.ndarray,
    base_ids: Sequence[int],
    inc_id: int,
    catalog: Catalog,
    caps: np.ndarray,
) -> list[Evidence]:
    """Evidence for every linked series (rows of the grid), best first."""
    out: list[Evidence] = []
    meta = grid.meta
    metrics, services, hosts = meta["metric"].tolist(), meta["service"].tolist(), meta["host"].tolist()
    series, labels_of = meta["series"].tolist(), meta["labels"].tolist()
    for i in linked:
        row = {
            "metric": metrics[i],
            "service": services[i],
            "host": hosts[i],
            "series": series[i],
            "labels": labels_of[i],
        }
        info = catalog[row["metric"]]
        cap = float(caps[i]) if math.isfinite(caps[i]) else None
        b, inc, change, r, util, score = score_series(
            grid.values[i], hop_ms, base_ids, inc_id, info.higher_is_worse, cap
        )
        if not math.isfinite(b):
            continue
        labels = dict(row["labels"] or {})
        out.append(
            Evidence(
                signal=str(row["series"]),
                metric=str(row["metric"]),
                labels={
                    **({"service": row["service"]} if row["service"] else {}),
                    **({"host": row["host"]} if row["host"] else {}),
                    **labels,
                },
                dimension=info.dimension_for(labels),
                baseline=b,
                incident=inc,
                change=change,
                correlation=r,
                capacity=cap,
                utilization=util,
                score=score * _weight(info.role, cap),
                unit=info.unit,
                role=info.role,
            )
        )
    # saturation first at equal score: it is the resource at its limit, demand only why it got there
    order = {"saturation": 0, "utilization": 1, "demand": 2}
    out.sort(key=lambda e: (-e.score, order.get(e.role, 1)))
    return out


def _weight(role: str, capacity: float | None) -> float:
    if role == "demand":
        return DEMAND_WEIGHT
    if role == "utilization" and capacity is None:
        return UNBOUNDED_LEVEL_WEIGHT
    return 1.0


def score_dimensions(evidence: Sequence[Evidence]) -> dict[str, float]:
    """Per dimension: best series score + 0.15 x the second best, capped at 1."""
    out: dict[str, float] = {}
    for dim in DIMENSIONS:
        scores = sorted((e.score for e in evidence if e.dimension == dim), reverse=True)
        if scores:
            out[dim] = min(1.0, scores[0] + (0.15 * scores[1] if len(scores) > 1 else 0.0))
    return out

"""Which resource: the signals linked to a hop, scored incident vs baseline, mapped to a dimension.

A series' score combines
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

# scoring knobs (why: a change must clear 3 robust sigmas and ~15 % of its level to count)
Z_FLOOR = 3.0
Z_SCALE = 3.0
REL_FULL = 0.15
SAT_START = 0.8
SAT_FULL = 0.95
MIN_POINTS_CORR = 6
DIMENSION_MIN = 0.3  # a dimension below this is not named as the cause


def hosts_by_service(meta: pd.DataFrame) -> dict[str, set[str]]:
    """Hosts each service's series run on (from the samples themselves)."""
    out: dict[str, set[str]] = {}
    pairs = meta[(meta["service"] != "") & (meta["host"] != "")][["service", "host"]].drop_duplicates()
    for s, h in pairs.itertuples(index=False, name=None):
        out.setdefault(s, set()).add(h)
    return out


def series_meta(signals: pd.DataFrame) -> pd.DataFrame:
    """One row per series: series, metric, service, host, labels."""
    if signals.empty:
        return pd.DataFrame(columns=["series", "metric", "service", "host", "labels"])
    return signals.drop_duplicates("series")[["series", "metric", "service", "host", "labels"]].reset_index(
        drop=True
    )


def _matches_target(labels: Mapping[str, str], names: Iterable[str]) -> bool:
    target = str(labels.get("target", labels.get("instance", "")))
    return bool(target) and any(n and n in target for n in names)


def link_series(
    meta: pd.DataFrame, hop: str, hop_kind: str, hosts: Mapping[str, set[str]], catalog: Catalog
) -> pd.DataFrame:
    """The series linked to a hop through service, host and probe-target labels."""
    capacity_only = catalog.capacity_metrics()
    keep = []
    if hop_kind == "network":
        client, _, server = hop.partition("->")
        ends = {client, server}
        end_hosts = set().union(*(hosts.get(e, set()) for e in ends))
        server_names = {server} | hosts.get(server, set())
    for row in meta.itertuples(index=False):
        info = catalog.get(row.metric)
        if info is None or row.metric in capacity_only:
            continue
        dim = info.dimension_for(row.labels)
        if dim == "none":
            continue
        labels = row.labels or {}
        is_probe = "target" in labels or row.metric.startswith("probe_")
        if hop_kind == "service":
            ok = row.service == hop or row.host in hosts.get(hop, set())
            if is_probe and row.service != hop:
                ok = _matches_target(labels, {hop} | hosts.get(hop, set()))
        else:
            if dim != "bandwidth":
                continue
            if is_probe:
                ok = row.service == server or _matches_target(labels, server_names)
            else:
                ok = row.service in ends or (bool(row.host) and row.host in end_hosts)
        if ok:
            keep.append(row.series)
    return meta[meta["series"].isin(keep)]


def _capacity(
    signals: pd.DataFrame, row: pd.Series, catalog: Catalog, base_ids: Sequence[int], inc_id: int
) -> float | None:
    info = catalog[row["metric"]]
    if info.capacity_value is not None:
        return info.capacity_value
    names = [info.capacity_metric] if info.capacity_metric else list(info.capacity_sum)
    if not names:
        return None
    total = 0.0
    for name in names:
        cand = signals[
            (signals["metric"] == name)
            & (signals["service"] == row["service"])
            & (signals["host"] == row["host"])
        ]
        if cand.empty:
            return None
        same = cand[cand["labels"].map(lambda lab: lab == row["labels"])]
        if not same.empty:
            cand = same
        elif cand["series"].nunique() > 1:
            return None
        vals = cand["value"].to_numpy(dtype=float)
        total += float(np.nanmedian(vals))
    return total if total > 0 else None


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_POINTS_CORR:
        return None
    a, b = a[ok], b[ok]
    if np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def score_series(
    values: pd.Series,
    hop_ms: pd.Series,
    base_ids: Sequence[int],
    inc_id: int,
    higher_is_worse: bool,
    capacity: float | None,
) -> tuple[float, float, float, float | None, float | None, float]:
    """(baseline, incident, relative change, correlation, utilization, score) of one series.

    ``values`` and ``hop_ms`` are indexed by (window, ts).
    """
    win = values.index.get_level_values("window")
    base = values[win.isin(list(base_ids))].to_numpy(dtype=float)
    inc = values[win == inc_id].to_numpy(dtype=float)
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
    joined = pd.concat([values.rename("v"), hop_ms.rename("h")], axis=1, join="inner")
    r = _corr(joined["v"].to_numpy(dtype=float), joined["h"].to_numpy(dtype=float))
    r_worse = sign * r if r is not None else None
    corr_factor = 0.4 + 0.6 * max(0.0, r_worse) if r_worse is not None else 0.6
    score = max(change_score, sat) * corr_factor
    change = (i - b) / abs(b) if abs(b) > 1e-12 else (i - b)
    return b, i, change, r_worse, util, float(score)


def score_signals(
    signals: pd.DataFrame,
    linked: pd.DataFrame,
    hop_ms: pd.Series,
    base_ids: Sequence[int],
    inc_id: int,
    catalog: Catalog,
) -> list[Evidence]:
    """Evidence for every linked series, best first."""
    out: list[Evidence] = []
    if linked.empty:
        return out
    sub = signals[signals["series"].isin(set(linked["series"]))]
    for key, grp in sub.groupby("series", sort=False):
        row = grp.iloc[0]
        info = catalog[row["metric"]]
        values = grp.set_index(["window", "ts"])["value"]
        cap = _capacity(signals, row, catalog, base_ids, inc_id)
        b, i, change, r, util, score = score_series(
            values, hop_ms, base_ids, inc_id, info.higher_is_worse, cap
        )
        if not math.isfinite(b):
            continue
        out.append(
            Evidence(
                signal=str(key),
                metric=str(row["metric"]),
                labels={
                    **({"service": row["service"]} if row["service"] else {}),
                    **({"host": row["host"]} if row["host"] else {}),
                    **row["labels"],
                },
                dimension=info.dimension_for(row["labels"]),
                baseline=b,
                incident=i,
                change=change,
                correlation=r,
                capacity=cap,
                utilization=util,
                score=score,
                unit=info.unit,
            )
        )
    out.sort(key=lambda e: -e.score)
    return out


def score_dimensions(evidence: Sequence[Evidence]) -> dict[str, float]:
    """Per dimension: best series score + 0.15 x the second best, capped at 1."""
    out: dict[str, float] = {}
    for dim in DIMENSIONS:
        scores = sorted((e.score for e in evidence if e.dimension == dim), reverse=True)
        if scores:
            out[dim] = min(1.0, scores[0] + (0.15 * scores[1] if len(scores) > 1 else 0.0))
    return out

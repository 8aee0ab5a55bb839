"""SLOs under a rules path: loading (cached by the files' signature), status, breaches, incidents and timelines."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from hopscope.config import configured_catalog
from hopscope.diagnosis import Diagnosis, diagnose_breach
from hopscope.errors import NotFoundError
from hopscope.model import ReadStore
from hopscope.query.windows import Window
from hopscope.slo import (
    SLO,
    Breach,
    burn_rate_series,
    evaluate_many,
    find_breaches_many,
    load_slos,
    minute_series,
)
from hopscope.slo.corrections import attach_corrections
from hopscope.slo.model import Correction


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


def load_rules(rules: str) -> tuple[list[SLO], list[str]]:
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
) -> tuple[tuple[SLO, ...], tuple[str, ...]]:
    """Parsing YAML costs ~60 ms a time; parse again only when a file changed (signature is the key)."""

    slos, errors = load_slos(rules)
    return tuple(slos), tuple(str(e) for e in errors)


def slo_names(store: ReadStore | None, rules: str) -> list[str]:
    """Names of the SLOs under a rules path (store unused: the signature every view shares)."""
    return [s.name for s in load_rules(rules)[0]]


def get_slo(rules: str, name: str) -> SLO:
    for s in load_rules(rules)[0]:
        if s.name == name:
            return s
    raise NotFoundError(
        f"no SLO named {name!r} in {rules} (SLOs: {', '.join(slo_names(None, rules)) or 'none'})"
    )


def slo_statuses(store: ReadStore, rules: str, now: datetime) -> pd.DataFrame:
    """One row per SLO at ``now``: slo, description, objective, sli, budget_remaining, burn_rates (dict),
    alert_state, time_to_exhaustion, threshold_ms, notes."""

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


@dataclass(frozen=True, slots=True)
class Incident:
    """One breach with its diagnosis."""

    breach: Breach
    diagnosis: Diagnosis


def breaches(store: ReadStore, rules: str) -> list[Breach]:
    """Every breach of every SLO over stored history, in the order they are numbered (1, 2, ...): by start, then SLO."""

    slos = load_rules(rules)[0]
    found = find_breaches_many(store, slos)  # one read for every SLO; unchanged history is not re-evaluated
    return sorted((b for slo in slos for b in found[slo.name]), key=lambda b: (b.start, b.slo))


def breach_table(
    store: ReadStore, rules: str, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Every breach of every SLO over stored history, numbered 1.. by start; only those overlapping [start, end).

    Columns: BREACH_COLUMNS (windows: the alert windows, joined by ", ")."""
    rows = [
        {
            "number": number,
            "id": b.id,
            "slo": b.slo,
            "start": b.start,
            "end": b.end,
            "severity": b.severity,
            "peak_burn_rate": b.peak_burn_rate,
            "budget_consumed": b.budget_consumed,
            "windows": ", ".join(b.windows),
        }
        for number, b in enumerate(breaches(store, rules), start=1)
    ]
    if not rows:
        return pd.DataFrame(columns=BREACH_COLUMNS)
    df = pd.DataFrame(rows)
    if start is not None and end is not None:
        df = df[(df["end"] > start) & (df["start"] < end)].reset_index(drop=True)
    return df[BREACH_COLUMNS]


def find_breach(store: ReadStore, rules: str, key: str) -> Breach:
    """One breach by its number (1, 2, ...) or its id; NotFoundError names what exists."""
    found = breaches(store, rules)
    key = str(key).strip()
    for number, b in enumerate(found, start=1):
        if (str(number) == key) if key.isdigit() else (b.id == key.lower()):
            return b
    known = ", ".join(f"{n} ({b.id})" for n, b in enumerate(found, start=1)) or "none"
    raise NotFoundError(f"no incident {key[:40]!r} (incidents: {known})")


def incident(store: ReadStore, rules: str, key: str) -> Incident:
    """One breach (by number or id) with its diagnosis."""

    b = find_breach(store, rules, key)
    # the catalog of the working folder's hopscope.toml (where the dashboard and `report` run)
    return Incident(b, diagnose_breach(store, b, get_slo(rules, b.slo), catalog=configured_catalog()))


def incident_cause(store: ReadStore, rules: str, key: str) -> str:
    """The diagnosis's top cause of one breach in one line (no BubbleUp: cheaper), or why there is none."""

    b = find_breach(store, rules, key)
    d = diagnose_breach(store, b, get_slo(rules, b.slo), with_bubbleup=False, catalog=configured_catalog())
    top = d.top
    if top is None:
        return f"no clear cause ({d.verdict})"
    return f"{top.hop} ({top.dimension}): {top.share:.0%} of the added latency"


def slo_corrections(store: ReadStore, rules: str, name: str, start: datetime, end: datetime) -> pd.DataFrame:
    """The periods excluded from one SLO (its file's and the store's corrections) overlapping [start, end):
    columns start, end, minutes, source, id, reason (what the SLO charts shade)."""
    slo = attach_corrections(store, [get_slo(rules, name)])[0]
    return corrections_table([c for c in slo.corrections if c.overlaps(start, end)])


def corrections_table(corrections: Iterable[Correction]) -> pd.DataFrame:
    """Corrections as rows: start, end, minutes, source, id, reason (what the SLO charts shade)."""
    rows = [
        {
            "start": c.start,
            "end": c.end,
            "minutes": c.minutes,
            "source": c.source,
            "id": c.id,
            "reason": c.reason,
        }
        for c in corrections
    ]
    return pd.DataFrame(rows, columns=["start", "end", "minutes", "source", "id", "reason"])


def slo_timeline(
    store: ReadStore, rules: str, name: str, w: Window
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """(sli, burn, thresholds) of one SLO over a window, per bucket.

    sli: t, good, total, sli. burn: t and one column per alert window (the mean burn rate in the bucket).
    thresholds: "<severity> <long>/<short>" -> burn-rate factor.
    """

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

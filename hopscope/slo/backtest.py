"""Backtest alert policies over stored history against labelled incidents.

Precision (alerts that overlap an incident / alerts), recall (incidents caught /
incidents), detection time (alert start - incident start) and reset time (alert end -
incident end), the four criteria of the SRE Workbook. What-ifs replay the same
history with another objective, window table or minimum-events guard.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import yaml

from hopscope.durations import parse_utc
from hopscope.errors import NotFoundError, SpecError
from hopscope.model import ReadStore
from hopscope.slo.burn import Breach, breaches_from_minutes
from hopscope.slo.corrections import attach_corrections
from hopscope.slo.loader import load_window_tables
from hopscope.slo.model import SLO, with_policy
from hopscope.slo.source import minute_series_many


@dataclass(frozen=True, slots=True)
class Incident:
    name: str
    start: datetime
    end: datetime
    slos: tuple[str, ...] = ()  # empty: counts for every SLO


@dataclass(frozen=True, slots=True)
class BacktestResult:
    variant: str
    slo: str  # an SLO name, or "all" (any SLO's alert catches an incident)
    alerts: int
    true_positives: int
    false_positives: int
    incidents: int
    detected: int
    missed: int
    precision: float | None
    recall: float | None
    detection_median: timedelta | None
    reset_median: timedelta | None
    detection_times: tuple[timedelta, ...] = ()
    reset_times: tuple[timedelta, ...] = ()


def _time(v: object, where: str) -> datetime:
    try:
        return parse_utc(v if isinstance(v, datetime) else str(v))
    except ValueError as exc:
        raise SpecError(f"{where}: {exc}") from None


def parse_truth(doc: object, file: str) -> list[Incident]:
    """Incidents from a demo scenario.json (``events`` with ``expect_breach: true``; the others are
    periods that must not alert), ``incidents: [...]``, or a plain list of {start, end[, name, slos]}."""
    items: object
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        items = [e for e in doc["events"] if isinstance(e, Mapping) and e.get("expect_breach", True)]
    else:
        items = doc.get("incidents") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise SpecError(f"{file}: incidents: {type(items).__name__} is not a list of {{start, end}} windows")
    out = []
    for i, it in enumerate(items):
        where = f"{file}: incidents[{i}]"
        if not isinstance(it, Mapping) or "start" not in it or "end" not in it:
            raise SpecError(f"{where}: needs start and end")
        start, end = _time(it["start"], f"{where}.start"), _time(it["end"], f"{where}.end")
        if end <= start:
            raise SpecError(f"{where}.end: {it['end']!r} is not after start {it['start']!r}")
        slos = it.get("slos") or ([it["slo"]] if it.get("slo") else [])
        out.append(
            Incident(str(it.get("name", it.get("id", f"incident-{i}"))), start, end, tuple(map(str, slos)))
        )
    return out


def _median(values: Sequence[timedelta]) -> timedelta | None:
    """The median of durations (the mean of the middle two for an even count)."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def load_truth(path: Path) -> list[Incident]:
    if not path.exists():
        raise NotFoundError(f"{path}: no ground truth here (a scenario.json or a YAML/JSON list of windows)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:  # a directory, no permission, a binary file
        raise SpecError(
            f"{path}: cannot read the ground truth: {getattr(e, 'strerror', None) or e}"
        ) from None
    try:
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise SpecError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({str(e).splitlines()[0]})"
        ) from None
    return parse_truth(doc, str(path))


def score(
    variant: str, slo: str, breaches: Sequence[Breach], incidents: Sequence[Incident]
) -> BacktestResult:
    """The four criteria for one set of alerts against the incidents."""
    tp = [b for b in breaches if any(b.start < i.end and b.end > i.start for i in incidents)]
    detect, reset = [], []
    detected = 0
    for inc in incidents:
        hits = sorted((b for b in breaches if b.start < inc.end and b.end > inc.start), key=lambda b: b.start)
        if hits:
            detected += 1
            detect.append(hits[0].start - inc.start)
            reset.append(max(b.end for b in hits) - inc.end)
    return BacktestResult(
        variant=variant,
        slo=slo,
        alerts=len(breaches),
        true_positives=len(tp),
        false_positives=len(breaches) - len(tp),
        incidents=len(incidents),
        detected=detected,
        missed=len(incidents) - detected,
        precision=len(tp) / len(breaches) if breaches else None,
        recall=detected / len(incidents) if incidents else None,
        detection_median=_median(detect),
        reset_median=_median(reset),
        detection_times=tuple(detect),
        reset_times=tuple(reset),
    )


def variants(
    slos: Sequence[SLO],
    rules: Path,
    policies: Sequence[str],
    objectives: Sequence[float],
    min_events: Sequence[int],
) -> dict[str, list[SLO]]:
    """The SLOs as written, and one what-if per other window table, objective or guard."""
    out: dict[str, list[SLO]] = {"as written": list(slos)}
    tables, _ = load_window_tables(rules)
    for p in policies:
        if p not in tables:
            raise NotFoundError(
                f"--policy: {p!r} is not a window table in {rules}/alert_windows ({', '.join(sorted(tables))})"
            )
        out[f"policy={p}"] = [with_policy(s, tables[p]) for s in slos]
    for o in objectives:
        if not 0 < o < 1:
            raise SpecError(f"--objective: {o!r} is not a ratio in (0, 1)")
        out[f"objective={o:g}"] = [replace(s, objective=o) for s in slos]
    for m in min_events:
        out[f"min_events={m}"] = [replace(s, alerting=replace(s.alerting, min_events=m)) for s in slos]
    return out


def backtest_frames(
    frames: Mapping[str, pd.DataFrame], sets: Mapping[str, Sequence[SLO]], incidents: Sequence[Incident]
) -> list[BacktestResult]:
    """Pure: replay every variant over the given minute frames (by SLO name)."""
    results = []
    for variant, slos in sets.items():
        every: list[Breach] = []
        for s in slos:
            bs = breaches_from_minutes(s, frames[s.name])
            every += bs
            # an incident inside one of the SLO's corrections cannot alert, by the team's decision: not missed
            relevant = [
                i
                for i in incidents
                if (not i.slos or s.name in i.slos)
                and not any(c.start <= i.start and i.end <= c.end for c in s.corrections)
            ]
            results.append(score(variant, s.name, bs, relevant))
        results.append(score(variant, "all", every, incidents))
    return results


def backtest(
    store: ReadStore, sets: Mapping[str, Sequence[SLO]], incidents: Sequence[Incident]
) -> list[BacktestResult]:
    """Replay over all of the store's hop_minutes history."""

    rng = store.query_df("SELECT min(minute) AS lo, max(minute) AS hi FROM hop_minutes")
    lo, hi = rng["lo"].iloc[0], rng["hi"].iloc[0]
    if lo is None or str(lo) == "NaT":
        raise NotFoundError("hop_minutes is empty: nothing to backtest")
    sets = {k: attach_corrections(store, ss) for k, ss in sets.items()}  # the store's corrections too
    all_slos = {s.name: s for ss in sets.values() for s in ss}
    frames = minute_series_many(
        store, list(all_slos.values()), lo.to_pydatetime(), hi.to_pydatetime() + timedelta(minutes=1)
    )
    return backtest_frames(frames, sets, incidents)

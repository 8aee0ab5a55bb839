"""The SLO model every spec format loads into.

An :class:`SLO` is what the engine evaluates, whichever file format it came from
(``hopscope/v1``, OpenSLO, Sloth: see :mod:`hopscope.slo.formats`).
"""

from __future__ import annotations

import calendar as _calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from hopscope.durations import format_duration
from hopscope.model import Hop

SLI_KINDS = ("latency", "availability", "prometheus_ratio", "prometheus_histogram", "composite")
SPAN_KINDS = ("latency", "availability")
SEVERITIES = ("page", "ticket")
BUDGETING = ("occurrences", "timeslices", "ratio_timeslices")
DEFAULT_POLICY = "sre-workbook"
SLOTH_POLICY = "sloth"  # the window table Sloth's rules use (30d, 2 page + 2 ticket tiers)
# Nominal lengths of calendar periods, used where a length must be fixed (burn factors).
CALENDAR_NOMINAL = {"month": timedelta(days=30), "week": timedelta(days=7)}


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """The SLO period: rolling (``28d``) or calendar (``month``/``week`` in a time zone)."""

    kind: str = "rolling"  # rolling | calendar
    length: timedelta | None = timedelta(days=28)  # rolling only
    unit: str | None = None  # calendar only: month | week
    tz: str = "UTC"

    @property
    def label(self) -> str:
        if self.kind == "rolling" and self.length is not None:
            return format_duration(self.length)
        return f"{self.unit} ({self.tz})"

    @property
    def nominal(self) -> timedelta:
        """Length used for burn-rate factors: the rolling length, or 30d/7d for calendar periods."""
        if self.kind == "rolling" and self.length is not None:
            return self.length
        return CALENDAR_NOMINAL[self.unit or "month"]

    def period(self, now: datetime) -> tuple[datetime, datetime]:
        """The budget period that holds ``now`` (naive UTC): [start, end)."""
        if self.kind == "rolling":
            assert self.length is not None
            return now - self.length, now
        zone = ZoneInfo(self.tz)
        local = now.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
        if self.unit == "week":
            start_local = (local - timedelta(days=local.weekday())).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            start_local = start_local.replace(tzinfo=None)
            end_local = start_local + timedelta(days=7)
        else:
            start_local = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
            days = _calendar.monthrange(start_local.year, start_local.month)[1]
            end_local = start_local + timedelta(days=days)
        return _to_utc(start_local, zone), _to_utc(end_local, zone)


def _to_utc(local_naive: datetime, zone: ZoneInfo) -> datetime:
    return local_naive.replace(tzinfo=zone).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Budgeting:
    """Occurrences (every event counts), or time slices (a slice is good when its ratio meets slice_objective)."""

    method: str = "occurrences"
    slice: timedelta | None = None
    slice_objective: float | None = None  # timeslices only


@dataclass(frozen=True, slots=True)
class Correction:
    """A period excluded from an SLO's SLI, budget and alerts (maintenance, a known outage of a dependency).

    ``source`` says where it was declared: ``spec`` (the SLO file's ``corrections``) or ``store``
    (``hopscope slo correct``; ``id`` is its key there). Times are naive UTC, [start, end).
    """

    start: datetime
    end: datetime
    reason: str
    source: str = "spec"  # spec | store
    id: str = ""

    @property
    def minutes(self) -> int:
        return int((self.end - self.start).total_seconds() // 60)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.start < end and self.end > start


@dataclass(frozen=True, slots=True)
class Component:
    """One SLO a composite SLO combines: its good and total events count ``weight`` times.

    ``slo`` is the component's own record, filled in when every file is loaded (see
    :func:`hopscope.slo.loader.resolve_composites`); None until then.
    """

    name: str
    weight: float = 1.0
    slo: SLO | None = None


@dataclass(frozen=True, slots=True)
class SLI:
    kind: str
    service: str | None = None
    route: str | None = None
    hop: str | None = None
    threshold_ms: float | None = None
    # Prometheus SLIs; queries carry Sloth's {{.window}} placeholder.
    good_query: str | None = None
    error_query: str | None = None
    total_query: str | None = None
    error_ratio_query: str | None = None
    metric: str | None = None  # histogram base name (without _bucket / _count)
    selector: str = ""  # label matchers without braces: job="x",code!="500"
    le: str | None = None  # the bucket bound as written, in seconds
    components: tuple[Component, ...] = ()  # composite only

    @property
    def edge(self) -> tuple[str, str]:
        """(client, server) of the hop_minutes rows this span SLI reads."""
        hop = Hop.parse(self.hop) if self.hop else None
        if hop is not None and hop.kind == "network":
            return hop.client, hop.server
        return "", self.service or ""


@dataclass(frozen=True, slots=True)
class AlertTier:
    """One long/short window pair: fires when both burn faster than factor."""

    severity: str
    long: timedelta
    short: timedelta
    factor: float

    @property
    def label(self) -> str:
        return f"{format_duration(self.long)}/{format_duration(self.short)}"


@dataclass(frozen=True, slots=True)
class WindowTable:
    name: str
    period: timedelta
    tiers: tuple[
        tuple[str, timedelta, timedelta, float | None, float | None], ...
    ]  # sev, long, short, factor, budget%
    scale: str = "factors"  # factors: recompute factors from budget%; windows: scale windows by period
    source_file: Path | None = None

    def resolve(self, period: timedelta) -> tuple[AlertTier, ...]:
        """The tiers for an SLO of this period."""
        out = []
        ratio = period / self.period
        for sev, long, short, factor, pct in self.tiers:
            if self.scale == "windows":
                long, short = long * ratio, short * ratio
                f = factor if factor is not None else (pct or 0) / 100 * self.period / long
            elif pct is not None:
                f = pct / 100 * (period / long)
            else:
                f = float(factor or 0)
            out.append(AlertTier(sev, long, short, round(f, 6)))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Alerting:
    policy: str = DEFAULT_POLICY
    tiers: tuple[AlertTier, ...] = ()
    disabled: tuple[str, ...] = ()
    min_events: int = 0
    # Warm-up guard: a tier fires only once its long window holds at least min_coverage x its short
    # window's length of minutes with data. At the start of data (or after a long collection gap) a
    # 3d window holding one minute sees no more than that minute: the pair degenerates into a
    # one-minute alert at factor 1. 0 turns the guard off (what Prometheus/Sloth rules do).
    min_coverage: float = 1.0
    name: str | None = None  # alert name for exported rules
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    page_labels: Mapping[str, str] = field(default_factory=dict)
    ticket_labels: Mapping[str, str] = field(default_factory=dict)
    page_annotations: Mapping[str, str] = field(default_factory=dict)
    ticket_annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def active_tiers(self) -> tuple[AlertTier, ...]:
        return tuple(
            t for t in self.tiers if t.severity not in self.disabled and t.label not in self.disabled
        )

    @property
    def windows(self) -> tuple[timedelta, ...]:
        """Every distinct window of the policy, shortest first."""
        return tuple(sorted({w for t in self.tiers for w in (t.short, t.long)}))


@dataclass(frozen=True, slots=True)
class SLO:
    name: str
    description: str
    objective: float
    window: Window
    sli: SLI
    budgeting: Budgeting = Budgeting()
    hop_budgets_ms: Mapping[str, float] = field(default_factory=dict)
    alerting: Alerting = Alerting()
    service: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    source_file: Path | None = None
    notes: tuple[str, ...] = ()  # warnings that do not refuse the SLO (e.g. hop budgets over threshold)
    corrections: tuple[Correction, ...] = ()  # excluded periods, oldest first

    @property
    def error_budget(self) -> float:
        return 1.0 - self.objective

    @property
    def composite(self) -> bool:
        return self.sli.kind == "composite"


def with_corrections(slo: SLO, more: Iterable[Correction]) -> SLO:
    """The SLO with more excluded periods (oldest first; the same one twice is kept once)."""
    merged = tuple(sorted(dict.fromkeys((*slo.corrections, *more)), key=lambda c: (c.start, c.end, c.id)))
    return slo if merged == slo.corrections else replace(slo, corrections=merged)


def excluded_minutes(corrections: Iterable[Correction], t0: int, n: int) -> np.ndarray:
    """Bool mask of the minutes ``t0 .. t0 + n`` (minutes since the epoch) inside any correction.

    A correction covers every minute it touches: one ending at 10:00:30 excludes the 10:00 minute
    (the store counts whole minutes).
    """
    mask = np.zeros(max(n, 0), bool)
    epoch = datetime(1970, 1, 1)
    for c in corrections:
        a = int((c.start - epoch).total_seconds() // 60)
        b = -int(-(c.end - epoch).total_seconds() // 60)  # ceil: a partial minute is excluded
        lo, hi = max(a - t0, 0), min(b - t0, n)
        if hi > lo:
            mask[lo:hi] = True
    return mask


def leaf_slos(slo: SLO) -> list[SLO]:
    """The span/Prometheus SLOs a composite stands on (itself when it is not one), each once."""
    if not slo.composite:
        return [slo]
    out: dict[str, SLO] = {}
    for c in slo.sli.components:
        if c.slo is not None:
            for leaf in leaf_slos(c.slo):
                out.setdefault(leaf.name, leaf)
    return list(out.values())


def with_policy(slo: SLO, table: WindowTable, *, min_events: int | None = None) -> SLO:
    """The same SLO under another window table (what-if)."""
    alerting = replace(
        slo.alerting,
        policy=table.name,
        tiers=table.resolve(slo.window.nominal),
        disabled=tuple(d for d in slo.alerting.disabled if d in SEVERITIES),
        min_events=slo.alerting.min_events if min_events is None else min_events,
    )
    return replace(slo, alerting=alerting)


def slo_thresholds_ms(slos: Iterable[SLO]) -> list[float]:
    """Every latency threshold the span SLOs use, sorted, once each (the rollup counts them exactly)."""
    return sorted({float(s.sli.threshold_ms) for s in slos if s.sli.kind == "latency" and s.sli.threshold_ms})

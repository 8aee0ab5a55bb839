"""Frozen records of a diagnosis, and their JSON form (the contract in docs/incident-schema.json)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hopscope.model import SERIES_LABELS

VERDICT_CAUSE = "cause found"
VERDICT_NONE = "no clear cause"
DIMENSIONS = ("compute", "bandwidth", "memory")
# below this share of the added end-to-end latency (or errors) on the hops, a diagnosis is "partly explained"
EXPLAINED_ENOUGH = 0.7


def iso(ts: datetime | None) -> str | None:
    """Naive-UTC datetime -> ISO-8601 with a Z."""
    if ts is None:
        return None
    return ts.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def num(x: float | None, digits: int = 6) -> float | None:
    """A JSON-safe number: None for NaN/inf."""
    if x is None:
        return None
    x = float(x)
    if not math.isfinite(x):
        return None
    return round(x, digits)


@dataclass(frozen=True, slots=True)
class Target:
    """What the SLO measures: latency of requests into ``service`` on ``route`` (None: every route).

    No defaults for what an SLO names: a target without a service would be some other service's."""

    service: str
    route: str | None = None
    client: str | None = None  # only the edge from this client into service (an SLI on one hop)
    threshold_ms: float | None = None
    objective: float = 0.99  # good fraction; the tail percentile examined when no percentile is given
    percentile: float | None = None
    hop_budgets_ms: tuple[tuple[str, float], ...] = ()
    kind: str = "latency"  # the SLI's kind: "latency" or "availability" (then errors are decomposed)

    @property
    def q(self) -> float:
        return self.percentile if self.percentile is not None else self.objective

    @property
    def measure(self) -> str:
        """What the decomposition splits across hops: "latency" (ms) or "errors" (per request)."""
        return "errors" if self.kind == "availability" else "latency"


@dataclass(frozen=True, slots=True)
class BaselineWindow:
    start: datetime
    end: datetime
    kind: str  # "previous" | "same_hours_-Nd"
    requests: int
    used: bool
    reason: str = ""  # why it was left out

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "kind": self.kind,
            "requests": int(self.requests),
            "used": self.used,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Baseline:
    windows: tuple[BaselineWindow, ...]
    sufficient: bool
    note: str

    @property
    def used(self) -> tuple[BaselineWindow, ...]:
        return tuple(w for w in self.windows if w.used)

    @property
    def description(self) -> str:
        kinds = [w.kind for w in self.used]
        if not kinds:
            return "none"
        return ", ".join(kinds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "used": self.description,
            "sufficient": self.sufficient,
            "note": self.note,
            "requests": int(sum(w.requests for w in self.used)),
            "windows": [w.to_dict() for w in self.windows],
        }


@dataclass(frozen=True, slots=True)
class HopRow:
    """One hop's per-request latency (ms) or errors (fraction of requests), baseline vs incident.

    The fields are named for latency; with ``measure == "errors"`` they hold errors per request.
    """

    hop: str
    hop_kind: str  # "network" | "service"
    baseline_ms: float
    incident_ms: float
    added_ms: float
    share: float  # of the added latency (positive contributions sum to 1)
    added_at_percentile_ms: float
    significant: bool
    noise_ms: float
    budget_ms: float | None = None
    measure: str = "latency"

    def to_dict(self) -> dict[str, Any]:
        if self.measure == "errors":
            return {
                "hop": self.hop,
                "hop_kind": self.hop_kind,
                "unit": "errors per request",
                "baseline": num(self.baseline_ms, 6),
                "incident": num(self.incident_ms, 6),
                "added": num(self.added_ms, 6),
                "share_of_added_latency": num(self.share, 4),
                "share_of": "errors",
                "significant": self.significant,
                "noise": num(self.noise_ms, 6),
            }
        return {
            "hop": self.hop,
            "hop_kind": self.hop_kind,
            "unit": "ms",
            "baseline": num(self.baseline_ms, 3),
            "incident": num(self.incident_ms, 3),
            "added": num(self.added_ms, 3),
            "baseline_ms": num(self.baseline_ms, 3),
            "incident_ms": num(self.incident_ms, 3),
            "added_ms": num(self.added_ms, 3),
            "share_of_added_latency": num(self.share, 4),
            "share_of": "latency",
            "added_at_percentile_ms": num(self.added_at_percentile_ms, 3),
            "significant": self.significant,
            "noise_ms": num(self.noise_ms, 3),
            "budget_ms": num(self.budget_ms, 3),
            "over_budget": (self.budget_ms is not None and self.incident_ms > self.budget_ms),
        }


@dataclass(frozen=True, slots=True)
class EndToEnd:
    """The SLI's latency, baseline vs incident (for ``measure == "errors"``: its error fraction)."""

    percentile: float
    baseline_pct_ms: float | None
    incident_pct_ms: float | None
    baseline_mean_ms: float
    incident_mean_ms: float
    threshold_ms: float | None
    baseline_bad_fraction: float | None
    incident_bad_fraction: float | None
    baseline_requests: int
    incident_requests: int
    measure: str = "latency"

    @property
    def added_pct_ms(self) -> float:
        if self.baseline_pct_ms is None or self.incident_pct_ms is None:
            return 0.0
        return self.incident_pct_ms - self.baseline_pct_ms

    @property
    def added_mean_ms(self) -> float:
        return self.incident_mean_ms - self.baseline_mean_ms

    def to_dict(self) -> dict[str, Any]:
        if self.measure == "errors":
            return {
                "measure": "errors",
                "baseline_error_fraction": num(self.baseline_bad_fraction, 6),
                "incident_error_fraction": num(self.incident_bad_fraction, 6),
                "added_error_fraction": num(self.added_mean_ms, 6),
                "baseline_requests": int(self.baseline_requests),
                "incident_requests": int(self.incident_requests),
            }
        return {
            "measure": "latency",
            "percentile": self.percentile,
            "baseline_ms": num(self.baseline_pct_ms, 3),
            "incident_ms": num(self.incident_pct_ms, 3),
            "added_ms": num(self.added_pct_ms, 3),
            "baseline_mean_ms": num(self.baseline_mean_ms, 3),
            "incident_mean_ms": num(self.incident_mean_ms, 3),
            "added_mean_ms": num(self.added_mean_ms, 3),
            "threshold_ms": num(self.threshold_ms, 3),
            "baseline_bad_fraction": num(self.baseline_bad_fraction, 6),
            "incident_bad_fraction": num(self.incident_bad_fraction, 6),
            "baseline_requests": int(self.baseline_requests),
            "incident_requests": int(self.incident_requests),
        }


@dataclass(frozen=True, slots=True)
class Decomposition:
    end_to_end: EndToEnd
    hops: tuple[HopRow, ...]  # ranked by added latency, largest first
    residual_ms: float  # added end-to-end mean not explained by the hops (parallel calls, skew)
    measure: str = "latency"  # "latency" (ms per request) or "errors" (errors per request)

    @property
    def added(self) -> float:
        """The added end-to-end mean: ms per request, or errors per request."""
        return self.end_to_end.added_mean_ms

    @property
    def on_hops(self) -> float:
        """The hops' positive added parts (what ``share`` divides): ms or errors per request."""
        return sum(max(0.0, h.added_ms) for h in self.hops)

    @property
    def explained(self) -> float | None:
        """The share of the added end-to-end mean that lies on hops hopscope sees (at most 1);
        None when the end-to-end mean did not rise."""
        if self.added <= 0:
            return None
        return min(1.0, self.on_hops / self.added)

    @property
    def partial(self) -> bool:
        """True when the hops explain less than EXPLAINED_ENOUGH of the added end-to-end mean."""
        return self.explained is not None and self.explained < EXPLAINED_ENOUGH

    def share_of_total(self, added: float) -> float | None:
        """A hop's added part as a share of the whole added end-to-end mean (not only of the hops')."""
        if self.added <= 0:
            return None
        return min(1.0, max(0.0, added) / self.added)

    def statement(self) -> str:
        """How much of the rise the hops explain, in one line ("" when nothing rose)."""
        f = self.explained
        if f is None:
            return ""
        what = "errors" if self.measure == "errors" else "latency"
        if self.measure == "errors":
            amounts = f"+{self.on_hops:.3%} of +{self.added:.3%} of requests"
        else:
            amounts = f"+{self.on_hops:.1f} of +{self.added:.1f} ms per request"
        head = f"{f:.0%} of the added {what} is on hops hopscope can see ({amounts})"
        if not self.partial:
            return head
        rest = (
            f"{self.added - self.on_hops:.3%} of requests" if self.measure == "errors"
            else f"{self.added - self.on_hops:.1f} ms per request"
        )  # fmt: skip
        return (
            f"partly explained: {head}; the residual, {rest}, is on no hop it sees "
            "(untraced calls or queues, parallel work, clock skew, missing spans)"
        )

    def coverage_dict(self) -> dict[str, Any]:
        """The ``explained`` object of the JSON: how much of the rise the hops account for."""
        digits = 6 if self.measure == "errors" else 3
        return {
            "measure": self.measure,
            "unit": "errors per request" if self.measure == "errors" else "ms",
            "fraction": num(self.explained, 4),
            "added": num(self.added, digits),
            "on_hops": num(self.on_hops, digits),
            "residual": num(self.added - self.on_hops, digits),
            "partial": self.partial,
            "statement": self.statement(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "end_to_end": self.end_to_end.to_dict(),
            "hops": [h.to_dict() for h in self.hops],
            "residual_ms" if self.measure == "latency" else "residual": num(self.residual_ms, 6),
            "explained": self.coverage_dict(),
        }


@dataclass(frozen=True, slots=True)
class DataGap:
    """A service whose spans went missing in the incident while its caller kept serving."""

    service: str
    signal: str  # "calls" (calls into it per entry request) or "self time" (its own ms per call)
    baseline: float
    incident: float  # over the gap minutes
    minutes: int  # incident buckets with the gap
    of_minutes: int  # incident buckets with requests
    left_out: bool  # those buckets were left out of the decomposition (else its hops are not judged)

    @property
    def sentence(self) -> str:
        what = "calls into it per request" if self.signal == "calls" else "its own ms per call"
        then = (
            "those minutes are left out of the decomposition, not averaged in"
            if self.left_out
            else "its hops are not judged and their part stays in the residual"
        )
        return (
            f"data gap: {self.service}'s spans are missing in {self.minutes} of {self.of_minutes} incident "
            f"buckets ({what} {self.baseline:.3g} -> {self.incident:.3g}) while requests kept coming; {then}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "signal": self.signal,
            "baseline": num(self.baseline, 4),
            "incident": num(self.incident, 4),
            "minutes": int(self.minutes),
            "of_minutes": int(self.of_minutes),
            "left_out": self.left_out,
            "note": self.sentence,
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    """One signal's numbers: baseline vs incident, and how it moved with the hop's latency."""

    signal: str  # series key: metric{labels}
    metric: str
    labels: dict[str, str]
    dimension: str
    baseline: float
    incident: float
    change: float | None  # relative change (incident - baseline) / |baseline|; None when baseline is 0
    correlation: float | None
    capacity: float | None
    utilization: float | None  # incident level / capacity
    score: float
    unit: str = ""
    role: str = "utilization"  # utilization | saturation | demand (catalog ``role``)

    @property
    def short(self) -> str:
        """The signal for a sentence: the metric and where it was measured, without UUIDs and model names
        ("DCGM_FI_DEV_GPU_TEMP on gpu-node-2 GPU 0"); ``signal`` keeps the full series key."""
        where = [self.labels.get("host") or self.labels.get("service") or ""]
        # the labels that name the series on its host, as samples.series_label, and its container or pod
        for key in (*SERIES_LABELS, "container", "pod"):
            value = self.labels.get(key)
            if value not in (None, ""):
                where.append(f"GPU {value}" if key == "gpu" else str(value))
        at = " ".join(w for w in where if w)
        return f"{self.metric} on {at}" if at else self.metric

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "signal": self.signal,
            "name": self.short,
            "metric": self.metric,
            "labels": dict(self.labels),
            "dimension": self.dimension,
            "unit": self.unit,
            "role": self.role,
            "baseline": num(self.baseline),
            "incident": num(self.incident),
            "change": num(self.change, 4),
            "score": num(self.score, 4),
        }
        if self.correlation is not None:
            out["correlation"] = num(self.correlation, 4)
        if self.capacity is not None:
            out["capacity"] = num(self.capacity)
            out["utilization"] = num(self.utilization, 4)
        return out


@dataclass(frozen=True, slots=True)
class Cause:
    rank: int
    hop: str
    hop_kind: str
    dimension: str  # compute | bandwidth | memory | unknown
    share: float
    score: float
    summary: str
    evidence: tuple[Evidence, ...]
    dimension_scores: dict[str, float] = field(default_factory=dict)
    not_judged: tuple[str, ...] = ()  # dimensions with no linked signal
    share_of: str = "latency"  # what ``share`` is a share of: "latency" or "errors" (availability SLOs)
    share_total: float | None = None  # of the whole added end-to-end mean (``share`` is of the hops')

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "hop": self.hop,
            "hop_kind": self.hop_kind,
            "dimension": self.dimension,
            "share_of_added_latency": num(self.share, 4),
            "share_of_total": num(self.share_total, 4),
            "share_of": self.share_of,
            "score": num(self.score, 4),
            "summary": self.summary,
            "evidence": [e.to_dict() for e in self.evidence],
            "dimension_scores": {k: num(v, 4) for k, v in self.dimension_scores.items()},
            "not_judged": list(self.not_judged),
        }


@dataclass(frozen=True, slots=True)
class BubbleAttr:
    """An attribute value over-represented among the incident's slow spans."""

    attribute: str
    value: str
    incident_slow_fraction: float  # share of slow incident spans with this value
    baseline_fraction: float  # share of baseline spans with this value
    lift: float
    slow_spans: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "value": self.value,
            "incident_slow_fraction": num(self.incident_slow_fraction, 4),
            "baseline_fraction": num(self.baseline_fraction, 4),
            "lift": num(self.lift, 3),
            "slow_spans": int(self.slow_spans),
        }


@dataclass(frozen=True, slots=True)
class Diagnosis:
    id: str
    slo: str
    start: datetime
    end: datetime
    target: Target
    verdict: str
    causes: tuple[Cause, ...]
    decomposition: Decomposition | None
    baseline: Baseline
    checked: tuple[str, ...]  # what was looked at (for "no clear cause")
    notes: tuple[str, ...]  # dimensions that could not be judged, thin data, ...
    bubbleup: tuple[BubbleAttr, ...] = ()
    bubbleup_note: str = ""
    exemplars: tuple[str, ...] = ()
    severity: str = "ticket"
    peak_burn_rate: float = 0.0
    budget_consumed: float = 0.0
    timings_ms: tuple[tuple[str, float], ...] = field(default=(), compare=False)  # per step (not in JSON)
    # the part of the breach the numbers come from (None: all of it), see baseline.burning_span
    diagnosed: tuple[datetime, datetime] | None = None
    data_gaps: tuple[DataGap, ...] = ()

    @property
    def top(self) -> Cause | None:
        return self.causes[0] if self.causes else None

    def summary_dict(self) -> dict[str, Any]:
        """The `incidents --json` element."""
        return {
            "id": self.id,
            "slo": self.slo,
            "start": iso(self.start),
            "end": iso(self.end),
            "severity": self.severity,
            "peak_burn_rate": num(self.peak_burn_rate, 4) or 0.0,
            "budget_consumed": num(min(max(self.budget_consumed, 0.0), 1.0), 6) or 0.0,
            # budget_consumed is a fraction in 0..1 by contract; a breach can spend more than a period's budget
            "budget_consumed_uncapped": num(max(self.budget_consumed, 0.0), 6) or 0.0,
            "diagnosed_window": {
                "start": iso(self.diagnosed[0] if self.diagnosed else self.start),
                "end": iso(self.diagnosed[1] if self.diagnosed else self.end),
            },
            "verdict": self.verdict,
            "explained": self.decomposition.coverage_dict() if self.decomposition else None,
            "causes": [c.to_dict() for c in self.causes],
            "notes": list(self.notes),
            "data_gaps": [g.to_dict() for g in self.data_gaps],
        }

    @property
    def verdict_line(self) -> str:
        """The verdict, with "partly explained: ..." when the hops account for too little of the rise."""
        dec = self.decomposition
        if self.causes and dec is not None and dec.partial:
            return f"{self.verdict} — {dec.statement()}"
        return self.verdict

    def to_dict(self) -> dict[str, Any]:
        """The `explain --json` object: the summary plus decomposition, baseline, BubbleUp, exemplars."""
        out = self.summary_dict()
        out.update(
            {
                "target": {
                    "kind": self.target.kind,
                    "service": self.target.service,
                    "route": self.target.route,
                    "threshold_ms": num(self.target.threshold_ms, 3),
                    "objective": self.target.objective,
                    "percentile": self.target.q,
                },
                "checked": list(self.checked),
                "baseline": self.baseline.to_dict(),
                "decomposition": self.decomposition.to_dict() if self.decomposition else None,
                "bubbleup": {"attributes": [b.to_dict() for b in self.bubbleup], "note": self.bubbleup_note},
                "exemplars": list(self.exemplars),
            }
        )
        return out

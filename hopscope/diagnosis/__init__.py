"""Diagnosis: for an SLO breach, which hop and which resource (compute, bandwidth, memory), with evidence.

d = diagnose(store, start=..., end=..., service="checkout", route="/pay", threshold_ms=300)
d = diagnose_breach(store, breach, slo)       # a Breach and SLO from hopscope.slo
d.verdict, d.causes[0].hop, d.causes[0].dimension
d.to_dict()                                   # the JSON contract (docs/incident-schema.json)
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, TypedDict, Unpack

from hopscope.diagnosis.baseline import burning_span
from hopscope.diagnosis.core import diagnose, incident_key
from hopscope.diagnosis.model import (
    VERDICT_CAUSE,
    VERDICT_NONE,
    Baseline,
    BaselineWindow,
    BubbleAttr,
    Cause,
    Decomposition,
    Diagnosis,
    EndToEnd,
    Evidence,
    HopRow,
    Target,
)
from hopscope.errors import SpecError

if TYPE_CHECKING:  # hopscope.slo is imported where used: it imports the diagnosis's callers
    from hopscope.catalog import Catalog
    from hopscope.slo import SLO, Breach
from hopscope.model import Hop, ReadStore
from hopscope.slo import minute_series
from hopscope.slo.source import culprit


class TargetKwargs(TypedDict):
    """What an SLO says diagnose() should look at (``target_kwargs``)."""

    service: str
    route: str | None
    client: str | None
    threshold_ms: float | None
    objective: float
    hop_budgets_ms: dict[str, float]
    sli_kind: str
    slo: str


class DiagnoseOptions(TypedDict, total=False):
    """diagnose() keyword arguments that ``diagnose_breach`` passes on (over those of the SLO)."""

    service: str
    route: str | None
    client: str | None
    threshold_ms: float | None
    objective: float
    percentile: float | None
    hop_budgets_ms: dict[str, float]
    sli_kind: str
    catalog: Catalog | None
    baseline_days: int
    with_bubbleup: bool
    use_cache: bool


class _DiagnoseArgs(DiagnoseOptions, total=False):
    slo: str


def target_kwargs(slo: SLO) -> TargetKwargs:
    """diagnose() keyword arguments for an SLO of hopscope.slo (latency or availability, span SLIs).

    An availability SLO is diagnosed on its errors (which hop they start in), a latency SLO on
    its latency at the threshold.
    """
    sli = slo.sli
    client = None
    service = sli.service or slo.service
    hop = Hop.parse(sli.hop) if sli.hop else None
    if hop is not None and hop.kind == "network":
        client, service = hop.client, hop.server
    if not service:
        raise SpecError(f"SLO {slo.name}: names no service, so there is nothing to diagnose")
    return {
        "service": service,
        "route": sli.route,  # None: every route of the service, as the SLO engine counts it
        "client": client,
        "threshold_ms": sli.threshold_ms if sli.kind == "latency" else None,
        "objective": slo.objective,
        "hop_budgets_ms": dict(slo.hop_budgets_ms or {}),
        "sli_kind": "availability" if sli.kind == "availability" else "latency",
        "slo": slo.name,
    }


def _minutes(td: timedelta) -> int:
    return round(td.total_seconds() / 60)


def diagnose_breach(
    store: ReadStore, breach: Breach, slo: SLO, **kwargs: Unpack[DiagnoseOptions]
) -> Diagnosis:
    """Diagnose one Breach of an SLO (ids, severity, burn and budget carried over).

    The numbers come from the part of the breach that burned budget (``burning_span``): an alert
    holds a breach open for hours after recovery. The diagnosis keeps the breach's start and end and
    says which part it read (``diagnosed``, and a note). A composite SLO's breach is diagnosed on the
    component that spent the most weighted bad events in it (a composite names no service), and says so.
    """

    if slo.composite:
        part = culprit(store, slo, breach.start, breach.end)
        if part is not slo:
            d = diagnose_breach(store, breach, part, **kwargs)
            note = (
                f"{slo.name} is a composite SLO: diagnosed on its component {part.name}, which spent the "
                "most of its error budget in this breach"
            )
            return replace(d, slo=slo.name, notes=(*d.notes, note))
    span = burning_span(
        minute_series(store, slo, breach.start, breach.end), slo.objective, breach.start, breach.end
    )
    start, end = span or (breach.start, breach.end)
    options: _DiagnoseArgs = {**target_kwargs(slo), **kwargs}
    d = diagnose(
        store,
        start=start,
        end=end,
        incident_id=breach.id,
        severity=breach.severity,
        peak_burn_rate=breach.peak_burn_rate,
        budget_consumed=breach.budget_consumed,
        baseline_end=breach.start,  # never compare with the breach's own minutes
        **options,
    )
    if span is None:
        return d
    note = (
        f"diagnosed {start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC, the {_minutes(end - start)} min of the "
        f"{_minutes(breach.end - breach.start)} min breach that burned budget (the breach lasts until its "
        "alert windows clear)"
    )
    return replace(d, start=breach.start, end=breach.end, diagnosed=(start, end), notes=(*d.notes, note))


__all__ = [
    "VERDICT_CAUSE",
    "VERDICT_NONE",
    "Baseline",
    "BaselineWindow",
    "BubbleAttr",
    "Cause",
    "Decomposition",
    "DiagnoseOptions",
    "Diagnosis",
    "EndToEnd",
    "Evidence",
    "HopRow",
    "Target",
    "TargetKwargs",
    "diagnose",
    "diagnose_breach",
    "incident_key",
    "target_kwargs",
]

"""Diagnosis: for an SLO breach, which hop and which resource (compute, bandwidth, memory), with evidence.

d = diagnose(store, start=..., end=..., service="api-gateway", route="/recommend", threshold_ms=200)
d = diagnose_breach(store, breach, slo)       # a Breach and SLO from hopscope.slo
d.verdict, d.causes[0].hop, d.causes[0].dimension
d.to_dict()                                   # the JSON contract (docs/incident-schema.json)
"""

from __future__ import annotations

from typing import Any

from hopscope.diagnosis.core import diagnose, incident_key, step_for
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


def target_kwargs(slo: Any) -> dict[str, Any]:
    """diagnose() keyword arguments for an SLO of hopscope.slo (latency or availability, span SLIs).

    An availability SLO is diagnosed on its errors (which hop they start in), a latency SLO on
    its latency at the threshold.
    """
    sli = slo.sli
    client = None
    service = sli.service or slo.service or "api-gateway"
    if getattr(sli, "hop", None) and "->" in sli.hop:
        client, service = sli.hop.split("->", 1)
    return {
        "service": service,
        "route": sli.route or "/recommend",
        "client": client,
        "threshold_ms": sli.threshold_ms if sli.kind == "latency" else None,
        "objective": slo.objective,
        "hop_budgets_ms": dict(slo.hop_budgets_ms or {}),
        "sli_kind": "availability" if sli.kind == "availability" else "latency",
        "slo": slo.name,
    }


def diagnose_breach(store: Any, breach: Any, slo: Any, **kwargs: Any) -> Diagnosis:
    """Diagnose one Breach of an SLO (ids, severity, burn and budget carried over)."""
    return diagnose(
        store,
        start=breach.start,
        end=breach.end,
        incident_id=breach.id,
        severity=breach.severity,
        peak_burn_rate=breach.peak_burn_rate,
        budget_consumed=breach.budget_consumed,
        **{**target_kwargs(slo), **kwargs},
    )


__all__ = [
    "VERDICT_CAUSE",
    "VERDICT_NONE",
    "Baseline",
    "BaselineWindow",
    "BubbleAttr",
    "Cause",
    "Decomposition",
    "Diagnosis",
    "EndToEnd",
    "Evidence",
    "HopRow",
    "Target",
    "diagnose",
    "diagnose_breach",
    "incident_key",
    "step_for",
    "target_kwargs",
]

"""Alerts of SLO tiers: which fire, their labels and annotations, their lifecycle. Pure: no I/O.

One alert per SLO and severity (as ``hopscope slo export`` writes one Prometheus rule per severity):
it fires while any tier of that severity fires, and resolves when none does. Its identity in
Alertmanager is its label set, so the labels never change while it fires: ``long_window`` and
``short_window`` name the tier that fired it first; the tiers firing now are in the annotations.

    firing = firing_tiers(slo, status)                    # {"page": (AlertTier, ...)}
    alerts = step(alerts, slo, status, firing, now=wall)  # new, still firing, resolved
    payload = to_payload(alert, now=wall, valid_for_s=240)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from hopscope.durations import format_duration
from hopscope.slo.burn import Breach, SloStatus
from hopscope.slo.export import _camel as default_alert_name  # the name exported rules give the alert
from hopscope.slo.model import SLO, AlertTier

FIRING = "firing"
RESOLVED = "resolved"
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as sent to Alertmanager, and what the evaluator knows of its delivery.

    Times are Unix seconds of the wall clock (what Alertmanager compares with its own)."""

    key: str  # "<slo>|<severity>"
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: float
    ends_at: float | None = None  # set on resolve
    breach_id: str | None = None
    version: int = 1  # bumped whenever what Alertmanager would be told changes
    diagnosed_at: float | None = None  # when the cause annotations were last refreshed
    delivered: Mapping[str, int] = field(default_factory=dict)  # Alertmanager URL -> version it has
    sent_at: Mapping[str, float] = field(default_factory=dict)  # Alertmanager URL -> last delivery

    @property
    def state(self) -> str:
        return FIRING if self.ends_at is None else RESOLVED

    @property
    def slo(self) -> str:
        return self.labels["slo"]

    @property
    def severity(self) -> str:
        return self.labels["severity"]

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "breach_id": self.breach_id,
            "version": self.version,
            "diagnosed_at": self.diagnosed_at,
            "delivered": dict(self.delivered),
            "sent_at": dict(self.sent_at),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Alert:
        return cls(
            key=str(d["key"]),
            labels={str(k): str(v) for k, v in d["labels"].items()},
            annotations={str(k): str(v) for k, v in d["annotations"].items()},
            starts_at=float(d["starts_at"]),
            ends_at=None if d.get("ends_at") is None else float(d["ends_at"]),
            breach_id=d.get("breach_id"),
            version=int(d.get("version", 1)),
            diagnosed_at=None if d.get("diagnosed_at") is None else float(d["diagnosed_at"]),
            delivered={str(k): int(v) for k, v in (d.get("delivered") or {}).items()},
            sent_at={str(k): float(v) for k, v in (d.get("sent_at") or {}).items()},
        )


def alert_key(slo: str, severity: str) -> str:
    return f"{slo}|{severity}"


def label_name(name: str) -> str:
    """A label name Alertmanager and Prometheus accept: [a-zA-Z_][a-zA-Z0-9_]*."""
    out = _LABEL_NAME.sub("_", name)
    return out if out and not out[0].isdigit() else f"_{out}"


def firing_tiers(slo: SLO, status: SloStatus) -> dict[str, tuple[AlertTier, ...]]:
    """The active tiers that fire in ``status``, by severity (fastest tier, shortest long window, first)."""
    fired = set(status.firing)
    out: dict[str, list[AlertTier]] = {}
    for tier in sorted(slo.alerting.active_tiers, key=lambda t: (t.long, t.short)):
        if f"{tier.severity} {tier.label}" in fired:
            out.setdefault(tier.severity, []).append(tier)
    return {sev: tuple(tiers) for sev, tiers in out.items()}


def ongoing_breach(status: SloStatus) -> Breach | None:
    """The breach still open at the status's time: the one a firing alert belongs to."""
    open_ = [b for b in status.breaches if status.now is not None and b.end >= status.now]
    return open_[-1] if open_ else None


def alert_labels(slo: SLO, severity: str, tier: AlertTier) -> dict[str, str]:
    """The SLO's own labels, the alerting labels of the spec, then hopscope's (which win)."""
    a = slo.alerting
    sev_labels = a.page_labels if severity == "page" else a.ticket_labels
    labels = {label_name(k): str(v) for k, v in {**slo.labels, **a.labels, **sev_labels}.items()}
    labels.update(
        {
            "alertname": a.name or default_alert_name(slo.name),
            "slo": slo.name,
            "service": slo.service or slo.sli.service or "",
            "severity": severity,
            "long_window": format_duration(tier.long),
            "short_window": format_duration(tier.short),
        }
    )
    return {k: v for k, v in labels.items() if v != ""}


def incident_url(dashboard_url: str, breach_id: str) -> str:
    return f"{dashboard_url}/incident?incident={quote(breach_id)}"


def generator_url(dashboard_url: str, slo: str) -> str:
    return f"{dashboard_url}/slo_report?slo={quote(slo)}"


@dataclass(frozen=True, slots=True)
class CauseNote:
    """The top cause of a diagnosis, as an alert carries it (or why there is none)."""

    hop: str | None = None
    hop_kind: str | None = None
    dimension: str | None = None
    share: float | None = None  # of the added latency (or errors, for availability SLOs)
    share_of: str = "latency"
    evidence: str | None = None
    note: str | None = None  # "no clear cause", "not diagnosed: ..."

    def line(self) -> str:
        if self.hop is None:
            return f"Top cause: {self.note or 'none found'}."
        share = "" if self.share is None else f", {self.share:.0%} of the added {self.share_of}"
        return f"Top cause: {self.hop} ({self.hop_kind} hop), {self.dimension}{share}."


def cause_note(diagnosis: Any) -> CauseNote:
    """The top cause of a hopscope.diagnosis.Diagnosis, with one line of its evidence."""
    top = diagnosis.top
    if top is None:
        return CauseNote(note=f"no clear cause ({diagnosis.verdict})")
    evidence = None
    if top.evidence:
        e = top.evidence[0]
        change = "" if e.change is None else f" ({e.change:+.0%})"
        unit = f" {e.unit}" if e.unit else ""
        evidence = f"{e.short}: {e.baseline:.3g} -> {e.incident:.3g}{unit}{change} vs baseline"
    elif top.summary:
        evidence = top.summary
    return CauseNote(top.hop, top.hop_kind, top.dimension, top.share, top.share_of, evidence)


def alert_annotations(
    slo: SLO,
    status: SloStatus,
    severity: str,
    tiers: tuple[AlertTier, ...],
    *,
    dashboard_url: str,
    breach: Breach | None,
    cause: CauseNote | None,
) -> dict[str, str]:
    """summary, description (burn rate, budget left, top cause, evidence), the cause's fields, links,
    and the spec's own annotations (``runbook_url`` among them)."""
    a = slo.alerting
    tier = tiers[0]
    burn_long = status.burn_rates.get(format_duration(tier.long))
    burn_short = status.burn_rates.get(format_duration(tier.short))
    left = status.budget_remaining
    burn_text = "-" if burn_long is None else f"{burn_long:.1f}x"
    left_text = "-" if left is None else f"{left:.1%}"
    summary = f"{slo.name}: error budget burning {burn_text} over {format_duration(tier.long)} ({severity})"
    if cause is not None and cause.hop is not None:
        summary += f"; top cause {cause.hop} {cause.dimension}"
    lines = [
        slo.description,
        f"Burn rate {burn_text} over {format_duration(tier.long)} and "
        f"{'-' if burn_short is None else f'{burn_short:.1f}x'} over {format_duration(tier.short)} "
        f"(fires above {tier.factor:g}x); error budget left {left_text} of the {slo.window.label} period.",
        "Tiers firing: " + ", ".join(f"{t.severity} {t.label}" for t in tiers) + ".",
    ]
    out = {
        **{label_name(k): str(v) for k, v in a.annotations.items()},
        **{
            label_name(k): str(v)
            for k, v in (a.page_annotations if severity == "page" else a.ticket_annotations).items()
        },
        "burn_rate": "" if burn_long is None else f"{burn_long:.4g}",
        "budget_remaining": "" if left is None else f"{left:.6g}",
        "firing_tiers": ", ".join(t.label for t in tiers),
    }
    if cause is not None:
        lines.append(cause.line())
        if cause.evidence:
            lines.append(f"Evidence: {cause.evidence}")
        out.update(
            {
                "cause_hop": cause.hop or "",
                "cause_hop_kind": cause.hop_kind or "",
                "cause_dimension": cause.dimension or "",
                "cause_share": "" if cause.share is None else f"{cause.share:.4g}",
                "cause_evidence": cause.evidence or cause.note or "",
            }
        )
    if breach is not None:
        url = incident_url(dashboard_url, breach.id)
        lines.append(f"Incident: {url}")
        out["incident_id"] = breach.id
        out["incident_url"] = url
    out["summary"] = summary
    out["description"] = "\n".join(line for line in lines if line)
    out["dashboard_url"] = generator_url(dashboard_url, slo.name)
    return {k: v for k, v in out.items() if v != ""}


def resolve(alert: Alert, now: float) -> Alert:
    """The alert, resolved at ``now`` (a resolved alert stays resolved)."""
    if alert.ends_at is not None:
        return alert
    return replace(alert, ends_at=now, version=alert.version + 1)


def to_payload(alert: Alert, *, now: float, valid_for_s: float) -> dict[str, Any]:
    """The alert as Alertmanager API v2 takes it (``POST /api/v2/alerts``, a list of these).

    A firing alert's endsAt is ``now + valid_for_s`` (Prometheus: 4 x max(evaluation, resend)), so that
    Alertmanager keeps it active between resends and resolves it by itself if hopscope goes away."""
    ends = alert.ends_at if alert.ends_at is not None else now + valid_for_s
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": _rfc3339(alert.starts_at),
        "endsAt": _rfc3339(ends),
        "generatorURL": alert.annotations.get("dashboard_url", ""),
    }


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

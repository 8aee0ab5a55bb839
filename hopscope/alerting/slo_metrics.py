"""SLO state on the daemon's /metrics: the last evaluation's numbers as ``hopscope_slo_*`` gauges.

Every series carries ``slo``, ``service`` and the SLO's own labels (``metadata.labels``; names made
valid label names). The values are those of ``hopscope slo status --json`` at
``hopscope_slo_evaluation_timestamp_seconds`` (see docs/alerting.md for the list).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hopscope.alerting.alerts import label_name
from hopscope.durations import format_duration
from hopscope.slo.burn import SloStatus
from hopscope.slo.model import SLO

# name -> help; the order they appear on /metrics
METRICS: dict[str, str] = {
    "hopscope_slo_objective_ratio": "The SLO's objective (0.99 = 99%)",
    "hopscope_slo_window_seconds": "Length of the SLO's period (nominal for calendar periods)",
    "hopscope_slo_sli_ratio": "Good events / events over the SLO's period (absent without data)",
    "hopscope_slo_error_budget_remaining_ratio": "Share of the period's error budget left (1 = untouched, <0 = overspent)",
    "hopscope_slo_burn_rate": "Error ratio over the alert window / (1 - objective), by window",
    "hopscope_slo_alert_firing": "1 while the alert tier (severity, long and short window) fires",
    "hopscope_slo_period_events": "Events (or time slices) counted in the SLO's period",
    "hopscope_slo_period_good_events": "Good events (or good time slices) counted in the SLO's period",
    "hopscope_slo_time_to_exhaustion_seconds": "Budget left x period / current burn rate (absent when not burning)",
    "hopscope_slo_data_gap_seconds": "Time in the period without data (never counted as good)",
    "hopscope_slo_evaluation_timestamp_seconds": "The time (end of the last whole minute) these values are for",
}


def slo_labels(slo: SLO) -> dict[str, str]:
    """The SLO's own labels, then ``slo`` and ``service`` (which win)."""
    out = {label_name(k): str(v) for k, v in slo.labels.items()}
    out["slo"] = slo.name
    out["service"] = slo.service or slo.sli.service or ""
    return out


def families(slos: Sequence[SLO], statuses: Sequence[SloStatus]) -> list[Metric]:
    """The gauges of one evaluation (pure: what /metrics shows for these statuses)."""
    fam = {name: Metric(name, doc, "gauge") for name, doc in METRICS.items()}

    def add(name: str, labels: dict[str, str], value: float | None) -> None:
        if value is not None:
            fam[name].add_sample(name, labels, float(value))

    at = None
    for slo, s in zip(slos, statuses, strict=True):
        base = slo_labels(slo)
        add("hopscope_slo_objective_ratio", base, slo.objective)
        add("hopscope_slo_window_seconds", base, slo.window.nominal.total_seconds())
        add("hopscope_slo_sli_ratio", base, s.sli)
        add("hopscope_slo_error_budget_remaining_ratio", base, s.budget_remaining)
        for window, burn in s.burn_rates.items():
            add("hopscope_slo_burn_rate", {**base, "window": window}, burn)
        firing = set(s.firing)
        for tier in slo.alerting.active_tiers:
            labels = {
                **base,
                "severity": tier.severity,
                "long_window": format_duration(tier.long),
                "short_window": format_duration(tier.short),
            }
            add(
                "hopscope_slo_alert_firing", labels, 1.0 if f"{tier.severity} {tier.label}" in firing else 0.0
            )
        add("hopscope_slo_period_events", base, s.total)
        add("hopscope_slo_period_good_events", base, s.good)
        tte = s.time_to_exhaustion
        add("hopscope_slo_time_to_exhaustion_seconds", base, None if tte is None else tte.total_seconds())
        add("hopscope_slo_data_gap_seconds", base, s.gap_minutes * 60)
        at = s.now or at
    if at is not None:
        add("hopscope_slo_evaluation_timestamp_seconds", {}, at.replace(tzinfo=UTC).timestamp())
    return list(fam.values())


class SloMetrics(Collector):
    """A registry collector serving the last evaluation (nothing is computed on a scrape)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._families: list[Metric] = families([], [])

    def update(self, slos: Sequence[SLO], statuses: Sequence[SloStatus]) -> None:
        fams = families(slos, statuses)
        with self._lock:
            self._families = fams

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield from self._families

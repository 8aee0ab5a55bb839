"""Alerts that page with the cause: SLO alert tiers delivered to Alertmanager, SLO state on /metrics.

    evaluator = AlertEvaluator(store, slos, cfg.alerting, dashboard_url=url, metrics=self_metrics)
    registry.register(evaluator.slo_metrics)        # hopscope_slo_* on /metrics
    evaluator.run(stop)                             # evaluate, fire, resolve, deliver until stop

``hopscope collect`` runs it (collectors/runner.py, ``Daemon._start_alerting``); see docs/alerting.md.
"""

from hopscope.alerting.alertmanager import AlertmanagerClient, DeliveryError
from hopscope.alerting.alerts import (
    FIRING,
    RESOLVED,
    Alert,
    CauseNote,
    alert_annotations,
    alert_labels,
    cause_note,
    firing_tiers,
    incident_url,
    to_payload,
)
from hopscope.alerting.evaluator import STATE_KEY, AlertEvaluator, TargetHealth
from hopscope.alerting.slo_metrics import METRICS, SloMetrics, families

__all__ = [
    "FIRING",
    "METRICS",
    "RESOLVED",
    "STATE_KEY",
    "Alert",
    "AlertEvaluator",
    "AlertmanagerClient",
    "CauseNote",
    "DeliveryError",
    "SloMetrics",
    "TargetHealth",
    "alert_annotations",
    "alert_labels",
    "cause_note",
    "families",
    "firing_tiers",
    "incident_url",
    "to_payload",
]

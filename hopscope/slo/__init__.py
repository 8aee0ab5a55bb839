"""The SLO engine: specs (hopscope/v1, OpenSLO, Sloth), error budgets, burn-rate alerts, breaches.

    slos, errors = load_slos("slo_rules")
    status = evaluate(store, slos[0])                 # SloStatus at now
    breaches = find_breaches(store, slos[0])          # list[Breach] over stored history

The math is pure: ``status_from_minutes`` / ``breaches_from_minutes`` /
``burn_rate_series`` / ``budget_burndown`` take a minute frame (minute, good, total)
that ``minute_series`` reads from ``hop_minutes``.
"""

from hopscope.errors import SpecError
from hopscope.slo.burn import (
    Breach,
    MinuteFrameError,
    SloStatus,
    alert_series,
    breach_id,
    breaches_from_minutes,
    budget_burndown,
    burn_rate_series,
    status_from_minutes,
    window_labels,
)
from hopscope.slo.importers import import_documents, to_document
from hopscope.slo.source import (
    evaluate,
    evaluate_many,
    find_breaches,
    minute_series,
    minute_series_many,
    store_now,
)
from hopscope.slo.spec import (
    SLI,
    SLO,
    Alerting,
    AlertTier,
    Budgeting,
    Window,
    WindowTable,
    default_window_tables,
    load_slos,
    load_window_tables,
    parse_duration,
    parse_slo,
    slo_thresholds_ms,
    with_policy,
)

__all__ = [
    "SLI",
    "SLO",
    "AlertTier",
    "Alerting",
    "Breach",
    "Budgeting",
    "MinuteFrameError",
    "SloStatus",
    "SpecError",
    "Window",
    "WindowTable",
    "alert_series",
    "breach_id",
    "breaches_from_minutes",
    "budget_burndown",
    "burn_rate_series",
    "default_window_tables",
    "evaluate",
    "evaluate_many",
    "find_breaches",
    "import_documents",
    "load_slos",
    "load_window_tables",
    "minute_series",
    "minute_series_many",
    "parse_duration",
    "parse_slo",
    "slo_thresholds_ms",
    "status_from_minutes",
    "store_now",
    "to_document",
    "window_labels",
    "with_policy",
]

"""The SLO engine: specs (hopscope/v1, OpenSLO, Sloth), error budgets, burn-rate alerts, breaches.

    slos, errors = load_slos("slo_rules")
    status = evaluate(store, slos[0])                 # SloStatus at now
    breaches = find_breaches(store, slos[0])          # list[Breach] over stored history

The math is pure: ``status_from_minutes`` / ``breaches_from_minutes`` /
``burn_rate_series`` / ``budget_burndown`` take a minute frame (minute, good, total)
that ``minute_series`` reads from ``hop_minutes``; ``status_from_arrays`` /
``breaches_from_arrays`` take the same as dense ``MinuteArrays`` (what ``evaluate_many``
reads through the per-process ``CACHE``, or ``minute_arrays_from_spans`` from raw spans).
A status carries the breaches of its period (``SloStatus.breaches``).
"""

from hopscope.durations import parse_duration
from hopscope.errors import SpecError
from hopscope.slo.burn import (
    Breach,
    MinuteArrays,
    MinuteFrameError,
    SloStatus,
    alert_series,
    breach_id,
    breaches_from_arrays,
    breaches_from_minutes,
    budget_burndown,
    burn_rate_series,
    status_from_arrays,
    status_from_minutes,
    window_labels,
)
from hopscope.slo.formats.hopscope import parse_slo, to_document
from hopscope.slo.loader import (
    default_window_tables,
    load_slos,
    load_window_tables,
    parse_documents,
)
from hopscope.slo.model import (
    SLI,
    SLO,
    Alerting,
    AlertTier,
    Budgeting,
    Window,
    WindowTable,
    slo_thresholds_ms,
    with_policy,
)
from hopscope.slo.source import (
    CACHE,
    MinuteCache,
    evaluate,
    evaluate_many,
    find_breaches,
    find_breaches_many,
    minute_arrays_from_spans,
    minute_arrays_many,
    minute_series,
    minute_series_many,
    store_now,
)

__all__ = [
    "CACHE",
    "SLI",
    "SLO",
    "AlertTier",
    "Alerting",
    "Breach",
    "Budgeting",
    "MinuteArrays",
    "MinuteCache",
    "MinuteFrameError",
    "SloStatus",
    "SpecError",
    "Window",
    "WindowTable",
    "alert_series",
    "breach_id",
    "breaches_from_arrays",
    "breaches_from_minutes",
    "budget_burndown",
    "burn_rate_series",
    "default_window_tables",
    "evaluate",
    "evaluate_many",
    "find_breaches",
    "find_breaches_many",
    "load_slos",
    "load_window_tables",
    "minute_arrays_from_spans",
    "minute_arrays_many",
    "minute_series",
    "minute_series_many",
    "parse_documents",
    "parse_duration",
    "parse_slo",
    "slo_thresholds_ms",
    "status_from_arrays",
    "status_from_minutes",
    "store_now",
    "to_document",
    "window_labels",
    "with_policy",
]

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

Budget corrections (``SLO.corrections``: the SLO file's ``spec.corrections`` and those recorded with
``hopscope slo correct``, see :mod:`hopscope.slo.corrections`) are excluded from the SLI, the
budget and the alerts inside the math; a composite SLO (``sli.kind: composite``) counts the
weighted good/total events of its components.
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
from hopscope.slo.corrections import add_correction, attach_corrections, delete_correction, read_corrections
from hopscope.slo.formats.hopscope import parse_slo, to_document
from hopscope.slo.loader import (
    default_window_tables,
    load_slos,
    load_window_tables,
    parse_documents,
    resolve_composites,
)
from hopscope.slo.model import (
    SLI,
    SLO,
    Alerting,
    AlertTier,
    Budgeting,
    Component,
    Correction,
    Window,
    WindowTable,
    slo_thresholds_ms,
    with_corrections,
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
    "Component",
    "Correction",
    "MinuteArrays",
    "MinuteCache",
    "MinuteFrameError",
    "SloStatus",
    "SpecError",
    "Window",
    "WindowTable",
    "add_correction",
    "alert_series",
    "attach_corrections",
    "breach_id",
    "breaches_from_arrays",
    "breaches_from_minutes",
    "budget_burndown",
    "burn_rate_series",
    "default_window_tables",
    "delete_correction",
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
    "read_corrections",
    "resolve_composites",
    "slo_thresholds_ms",
    "status_from_arrays",
    "status_from_minutes",
    "store_now",
    "to_document",
    "window_labels",
    "with_corrections",
    "with_policy",
]

"""OpenSLO ``v1`` and ``v1alpha``: SLOs with Prometheus ratio metrics, and v1's objects they refer to by name.

What hopscope cannot honour (threshold metrics, non-Prometheus sources, per-objective
indicators) is refused with a message naming the field, never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path

from hopscope.errors import SpecError
from hopscope.slo.formats import check
from hopscope.slo.formats.check import At
from hopscope.slo.model import (
    DEFAULT_POLICY,
    SLI,
    SLO,
    SLOTH_POLICY,
    Alerting,
    AlertTier,
    Budgeting,
    Window,
    WindowTable,
)

V1 = "openslo/v1"
V1ALPHA = "openslo/v1alpha"
# v1 kinds read only through the SLOs that refer to them (indicatorRef, alertPolicies, conditionRef).
REFERENCED_KINDS = (
    "SLI",
    "AlertPolicy",
    "AlertCondition",
    "AlertNotificationTarget",
    "Service",
    "DataSource",
)
_DURATION = re.compile(r"^(\d+)([mhdwMQY])$")


def named_objects(docs: Sequence[object]) -> dict[tuple[str, str], dict[str, object]]:
    """The v1 documents of one file by (kind, name): OpenSLO v1 documents refer to each other by name."""
    named: dict[tuple[str, str], dict[str, object]] = {}
    for d in docs:
        if isinstance(d, dict) and d.get("apiVersion") == V1 and isinstance(d.get("metadata"), dict):
            named[(str(d.get("kind")), str(d["metadata"].get("name")))] = d
    return named


def _document(
    doc: dict[str, object], at: At, spec_keys: tuple[str, ...]
) -> tuple[dict[str, object], str | None, At, dict[str, object]]:
    """An OpenSLO document's checked metadata, its name, where its spec is, and its checked spec."""
    check.mapping(doc, at, ("apiVersion", "kind", "metadata", "spec"))
    meta = check.mapping(
        doc.get("metadata"), at / "metadata", ("name", "displayName", "labels", "annotations")
    )
    name = check.text(meta.get("name"), at / "metadata" / "name", required=True)
    return meta, name, at / "spec", check.mapping(doc.get("spec"), at / "spec", spec_keys)


def parse_v1alpha(
    doc: dict[str, object], at: At, tables: Mapping[str, WindowTable]
) -> tuple[list[SLO], list[SpecError]]:
    """One ``openslo/v1alpha`` SLO: one hopscope SLO per objective; each objective refused on its own."""
    meta, name, sa, spec = _document(
        doc, at, ("service", "description", "budgetingMethod", "objectives", "timeWindows", "indicator")
    )
    if "indicator" in spec:
        raise (sa / "indicator").fail("v1alpha indicators are not supported; use objectives[].ratioMetrics")
    service = check.text(spec.get("service"), sa / "service", required=True)
    bm = spec.get("budgetingMethod", "Occurrences")
    if bm != "Occurrences":
        raise (sa / "budgetingMethod").fail(f"{bm!r} is not supported in openslo/v1alpha (only Occurrences)")
    window = _v1alpha_window(spec.get("timeWindows"), sa / "timeWindows")
    objs = spec.get("objectives")
    if not isinstance(objs, list) or not objs:
        raise (sa / "objectives").fail(f"{check.short_repr(objs)} is not a non-empty list")
    slos, errors = [], []
    for i, o in enumerate(objs):
        oa = sa / "objectives" / i
        try:
            om = check.mapping(o, oa, ("ratioMetrics", "target", "displayName", "value", "op"))
            if "ratioMetrics" not in om:
                raise oa.fail("needs ratioMetrics (threshold objectives are not supported)")
            rm_at = oa / "ratioMetrics"
            rm = check.mapping(om["ratioMetrics"], rm_at, ("good", "total", "incremental"))
            queries = {}
            for part in ("good", "total"):
                pm = check.mapping(rm.get(part), rm_at / part, ("source", "queryType", "query", "metadata"))
                src = str(pm.get("source", "")).lower()
                if src != "prometheus":
                    raise (rm_at / part / "source").fail(
                        f"{pm.get('source')!r} is not supported (only prometheus)"
                    )
                queries[part] = check.text(pm.get("query"), rm_at / part / "query", required=True)
            target = _target(om.get("target"), oa / "target")
            sli = SLI("prometheus_ratio", good_query=queries["good"], total_query=queries["total"])
            slos.append(
                SLO(
                    name=f"{service}-{name}-{i}",
                    description=check.text(spec.get("description"), sa / "description") or "",
                    objective=target,
                    window=window,
                    sli=sli,
                    alerting=Alerting(
                        policy=SLOTH_POLICY, tiers=tables[SLOTH_POLICY].resolve(window.nominal)
                    ),
                    service=service,
                    source_file=Path(at.file),
                )
            )
        except SpecError as e:
            errors.append(e)
    return slos, errors


def _target(v: object, at: At) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) < 1:
        raise at.fail(f"{check.short_repr(v)} is not a ratio in (0, 1)")
    return float(v)


def _v1alpha_window(v: object, at: At) -> Window:
    if v is None:
        return Window("rolling", timedelta(days=30))
    if not isinstance(v, list) or len(v) != 1:
        raise at.fail(f"{check.short_repr(v)} is not a list of one time window")
    w = check.mapping(v[0], at / 0, ("count", "unit", "isRolling", "calendar"))
    if w.get("isRolling") is False or "calendar" in w:
        raise (at / 0 / "calendar").fail(
            "calendar windows are not supported in openslo/v1alpha; use openslo/v1"
        )
    unit = {"Second": "s", "Minute": "m", "Hour": "h", "Day": "d", "Week": "w"}.get(str(w.get("unit")))
    if unit is None:
        raise (at / 0 / "unit").fail(f"{w.get('unit')!r} is not one of Second, Minute, Hour, Day, Week")
    return Window("rolling", check.duration(f"{w.get('count')}{unit}", at / 0 / "count"))


def _openslo_v1_window(v: object, at: At) -> tuple[Window, list[str]]:
    notes: list[str] = []
    if v is None:
        return Window("rolling", timedelta(days=28)), notes
    if not isinstance(v, list) or len(v) != 1:
        raise at.fail(f"{check.short_repr(v)} is not a list of one time window")
    wa = at / 0
    w = check.mapping(v[0], wa, ("duration", "isRolling", "calendar"))
    dur = str(w.get("duration", ""))
    m = _DURATION.match(dur)
    if not m:
        raise (wa / "duration").fail(f"{dur!r} is not an OpenSLO duration like 28d, 1w or 1M")
    n, unit = int(m.group(1)), m.group(2)
    if w.get("isRolling", True) is not False:
        if unit in "MQY":
            raise (wa / "duration").fail(f"{dur!r}: a rolling window must be in m, h, d or w")
        return Window("rolling", check.duration(f"{n}{unit}", wa / "duration")), notes
    cal_unit = {("w", 1): "week", ("M", 1): "month"}.get((unit, n))
    if cal_unit is None:
        raise (wa / "duration").fail(f"{dur!r} is not a calendar period hopscope supports (1w or 1M)")
    cal = check.mapping(w.get("calendar"), wa / "calendar", ("startTime", "timeZone"))
    tz = check.time_zone(cal.get("timeZone"), wa / "calendar" / "timeZone")
    if "startTime" in cal:
        notes.append(
            f"{(wa / 'calendar' / 'startTime').where()}: periods start on {cal_unit} boundaries in {tz}"
        )
    return Window("calendar", None, cal_unit, tz), notes


def _resolve(
    v: object, at: At, kind: str, ref_key: str, named: Mapping[tuple[str, str], dict[str, object]]
) -> dict[str, object]:
    """An inline OpenSLO object, or the one its ``*Ref`` names in the same file."""
    if isinstance(v, dict) and ref_key in v:
        ref = str(v[ref_key])
        if (kind, ref) not in named:
            raise (at / ref_key).fail(f"{ref!r} names no {kind} in this file")
        return named[(kind, ref)]
    return check.mapping(v, at)


def parse_v1(
    doc: dict[str, object],
    at: At,
    tables: Mapping[str, WindowTable],
    named: Mapping[tuple[str, str], dict[str, object]],
) -> tuple[list[SLO], list[SpecError]]:
    """One ``openslo/v1`` SLO (``named``: the file's objects it may refer to); each objective refused on its own."""
    meta, name, sa, spec = _document(
        doc,
        at,
        (
            "description",
            "service",
            "indicator",
            "indicatorRef",
            "timeWindow",
            "budgetingMethod",
            "objectives",
            "alertPolicies",
        ),
    )
    service = check.text(spec.get("service"), sa / "service", required=True)
    window, notes = _openslo_v1_window(spec.get("timeWindow"), sa / "timeWindow")
    bm = spec.get("budgetingMethod", "Occurrences")
    method = {
        "Occurrences": "occurrences",
        "Timeslices": "timeslices",
        "RatioTimeslices": "ratio_timeslices",
    }.get(str(bm))
    if method is None:
        raise (sa / "budgetingMethod").fail(f"{bm!r} is not one of Occurrences, Timeslices, RatioTimeslices")
    if "indicatorRef" in spec:
        ind = _resolve({"ref": spec["indicatorRef"]}, sa / "indicatorRef", "SLI", "ref", named)
        ind_at = At(at.file, "SLI " + str(spec["indicatorRef"]))
        ind_spec = ind.get("spec")
    else:
        ind_at = sa / "indicator"
        ind = check.mapping(spec.get("indicator"), ind_at, ("metadata", "spec"))
        ind_spec = ind.get("spec")
    sli = _openslo_sli(ind_spec, ind_at / "spec")
    alerting = _openslo_alerting(spec.get("alertPolicies"), sa / "alertPolicies", window, tables, named)
    objs = spec.get("objectives")
    if not isinstance(objs, list) or not objs:
        raise (sa / "objectives").fail(f"{check.short_repr(objs)} is not a non-empty list")
    slos, errors = [], []
    for i, o in enumerate(objs):
        oa = sa / "objectives" / i
        try:
            om = check.mapping(
                o,
                oa,
                (
                    "displayName",
                    "op",
                    "value",
                    "target",
                    "targetPercent",
                    "timeSliceTarget",
                    "timeSliceWindow",
                    "indicator",
                    "indicatorRef",
                    "compositeWeight",
                ),
            )
            for k in ("indicator", "indicatorRef", "compositeWeight", "value", "op"):
                if k in om:
                    raise (oa / k).fail("per-objective thresholds and indicators are not supported")
            if "targetPercent" in om:
                target = _target(check.percent_ratio(om["targetPercent"]), oa / "targetPercent")
            else:
                target = _target(om.get("target"), oa / "target")
            budgeting = Budgeting()
            if method != "occurrences":
                sl = check.duration(om.get("timeSliceWindow", "1m"), oa / "timeSliceWindow")
                if sl < timedelta(minutes=1) or sl.total_seconds() % 60:
                    raise (oa / "timeSliceWindow").fail(
                        f"{om.get('timeSliceWindow')!r} is not a whole number of minutes"
                    )
                so = None
                if method == "timeslices":
                    so = _target(om.get("timeSliceTarget"), oa / "timeSliceTarget")
                budgeting = Budgeting(method, sl, so)
            elif "timeSliceTarget" in om or "timeSliceWindow" in om:
                raise (oa / "timeSliceWindow").fail(
                    "time slices need budgetingMethod Timeslices or RatioTimeslices"
                )
            suffix = f"-{i}" if len(objs) > 1 else ""
            slos.append(
                SLO(
                    name=f"{name}{suffix}",
                    description=check.text(spec.get("description"), sa / "description") or "",
                    objective=target,
                    window=window,
                    sli=sli,
                    budgeting=budgeting,
                    alerting=alerting,
                    service=service,
                    labels=check.labels(meta.get("labels"), at / "metadata" / "labels")
                    if isinstance(meta.get("labels"), dict)
                    else {},
                    source_file=Path(at.file),
                    notes=tuple(notes),
                )
            )
        except SpecError as e:
            errors.append(e)
    return slos, errors


def _metric_query(v: object, at: At) -> str:
    m = check.mapping(v, at, ("metricSource",))
    ms_at = at / "metricSource"
    ms = check.mapping(m.get("metricSource"), ms_at, ("metricSourceRef", "type", "spec"))
    typ = str(ms.get("type", ""))
    if typ.lower() != "prometheus":
        raise (ms_at / "type").fail(f"{typ!r} is not a metric source hopscope reads (Prometheus)")
    spec = check.mapping(ms.get("spec"), ms_at / "spec")
    q = check.text(spec.get("query") or spec.get("promql"), ms_at / "spec" / "query", required=True)
    assert q is not None
    return q


def _openslo_sli(v: object, at: At) -> SLI:
    m = check.mapping(v, at, ("thresholdMetric", "ratioMetric", "description"))
    if "thresholdMetric" in m:
        raise (at / "thresholdMetric").fail(
            "threshold metrics (a gauge compared with objectives[].value) are not supported; use ratioMetric"
        )
    ra = at / "ratioMetric"
    r = check.mapping(m.get("ratioMetric"), ra, ("counter", "good", "bad", "total", "rawType", "raw"))
    if not r:
        raise ra.fail("is required")
    if "raw" in r:
        raise (ra / "raw").fail("raw ratio metrics are not supported; use good/bad and total")
    total = _metric_query(r.get("total"), ra / "total")
    if "good" in r and "bad" in r:
        raise (ra / "bad").fail("give good or bad, not both")
    if "good" in r:
        return SLI("prometheus_ratio", good_query=_metric_query(r["good"], ra / "good"), total_query=total)
    if "bad" in r:
        return SLI("prometheus_ratio", error_query=_metric_query(r["bad"], ra / "bad"), total_query=total)
    raise (ra / "good").fail("is required (or bad)")


def _openslo_alerting(
    v: object,
    at: At,
    window: Window,
    tables: Mapping[str, WindowTable],
    named: Mapping[tuple[str, str], dict[str, object]],
) -> Alerting:
    if not v:
        return Alerting(policy=DEFAULT_POLICY, tiers=tables[DEFAULT_POLICY].resolve(window.nominal))
    if not isinstance(v, list):
        raise at.fail(f"{check.short_repr(v)} is not a list")
    tiers: list[AlertTier] = []
    names = []
    for i, p in enumerate(v):
        pa = at / i
        pol = _resolve(p, pa, "AlertPolicy", "alertPolicyRef", named)
        pol_spec = check.mapping(pol.get("spec", pol), pa / "spec")
        meta = pol.get("metadata")
        names.append(str(meta.get("name", f"policy-{i}") if isinstance(meta, dict) else f"policy-{i}"))
        conds = pol_spec.get("conditions")
        if not isinstance(conds, list) or not conds:
            raise (pa / "spec" / "conditions").fail(f"{check.short_repr(conds)} is not a non-empty list")
        for j, c in enumerate(conds):
            ca = pa / "spec" / "conditions" / j
            cond = _resolve(c, ca, "AlertCondition", "conditionRef", named)
            cs = check.mapping(cond.get("spec", cond), ca / "spec")
            cm = check.mapping(
                cs.get("condition"),
                ca / "spec" / "condition",
                ("kind", "op", "threshold", "lookbackWindow", "alertAfter"),
            )
            if cm.get("kind") != "burnrate":
                raise (ca / "spec" / "condition" / "kind").fail(
                    f"{cm.get('kind')!r} is not supported (only burnrate)"
                )
            long = check.duration(cm.get("lookbackWindow"), ca / "spec" / "condition" / "lookbackWindow")
            thr = cm.get("threshold")
            if isinstance(thr, bool) or not isinstance(thr, (int, float)) or thr <= 0:
                raise (ca / "spec" / "condition" / "threshold").fail(
                    f"{check.short_repr(thr)} is not a positive burn rate"
                )
            sev = str(cs.get("severity", "page")).lower()
            severity = "page" if sev in ("page", "critical", "high", "p1") else "ticket"
            # OpenSLO has one lookback window per condition; the short window follows the SRE Workbook's 1/12.
            tiers.append(AlertTier(severity, long, long / 12, float(thr)))
    return Alerting(policy="+".join(names), tiers=tuple(tiers))

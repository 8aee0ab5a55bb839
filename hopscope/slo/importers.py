"""Import peer SLO specs: Sloth ``prometheus/v1`` and ``PrometheusServiceLevel``, OpenSLO ``v1`` and ``v1alpha``.

Pure functions from parsed YAML documents to :class:`SLO` records. What hopscope
cannot honour is refused with a :class:`SpecError` naming the field, never dropped
silently. :func:`to_document` writes an SLO back as ``hopscope/v1`` YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from hopscope.durations import format_duration
from hopscope.errors import SpecError
from hopscope.slo.spec import (
    API_VERSION,
    SLI,
    SLO,
    Alerting,
    AlertTier,
    Budgeting,
    Window,
    WindowTable,
    _At,
    _duration,
    _labels,
    _mapping,
    _short,
    _str,
    _tz,
    default_window_tables,
)

SLOTH_POLICY = "sloth"
_OPENSLO_DURATION = re.compile(r"^(\d+)([mhdwMQY])$")


def _percent(value: object) -> float:
    """A percentage as a ratio without binary noise: 99.9 -> 0.999 (not 0.9990000000000001)."""
    return round(float(value) / 100, 12)  # type: ignore[arg-type]


def import_documents(
    docs: Sequence[Any], file: str, tables: Mapping[str, WindowTable] | None = None, *, first_index: int = 0
) -> tuple[list[SLO], list[SpecError]]:
    """SLOs from the Sloth/OpenSLO documents of one file; each document or SLO refused on its own."""
    tables = tables if tables is not None else default_window_tables()
    slos: list[SLO] = []
    errors: list[SpecError] = []
    # OpenSLO v1 documents refer to each other by name (indicatorRef, alertPolicies, conditionRef).
    named: dict[tuple[str, str], dict[str, Any]] = {}
    for d in docs:
        if (
            isinstance(d, dict)
            and d.get("apiVersion") == "openslo/v1"
            and isinstance(d.get("metadata"), dict)
        ):
            named[(str(d.get("kind")), str(d["metadata"].get("name")))] = d
    for i, doc in enumerate(docs):
        if doc is None:
            continue  # a hopscope/v1 document, read by the caller
        at = _At(file, doc=first_index + i)
        try:
            if not isinstance(doc, dict):
                raise at.fail(f"{_short(doc)} is not a mapping")
            api, kind = doc.get("apiVersion"), doc.get("kind")
            if doc.get("version") == "prometheus/v1":
                got, errs = _sloth(doc, at, tables, k8s=False)
            elif api == "sloth.slok.dev/v1" and kind == "PrometheusServiceLevel":
                got, errs = _sloth(doc.get("spec"), at / "spec", tables, k8s=True)
            elif api == "sloth.slok.dev/v1" and kind == "AlertWindows":
                continue
            elif api == "openslo/v1alpha":
                if kind != "SLO":
                    raise (at / "kind").fail(f"{kind!r} is not supported in openslo/v1alpha (only SLO)")
                got, errs = _openslo_v1alpha(doc, at, tables)
            elif api == "openslo/v1":
                if kind in (
                    "SLI",
                    "AlertPolicy",
                    "AlertCondition",
                    "AlertNotificationTarget",
                    "Service",
                    "DataSource",
                ):
                    continue  # read through the SLOs that refer to them
                if kind != "SLO":
                    raise (at / "kind").fail(f"{kind!r} is not an OpenSLO v1 kind hopscope reads")
                got, errs = _openslo_v1(doc, at, tables, named)
            else:
                what = doc.get("version") if "version" in doc else api
                raise (at / ("version" if "version" in doc else "apiVersion")).fail(
                    f"{what!r} is not a spec hopscope reads (hopscope/v1, openslo/v1, openslo/v1alpha, "
                    "Sloth prometheus/v1, sloth.slok.dev/v1 PrometheusServiceLevel)"
                )
            slos.extend(got)
            errors.extend(errs)
        except SpecError as e:
            errors.append(e)
    return slos, errors


# -- Sloth ------------------------------------------------------------------------------------


def _k(k8s: bool, snake: str) -> str:
    """Sloth's prometheus/v1 keys are snake_case; the Kubernetes CRD spells them in camelCase."""
    if not k8s:
        return snake
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def _sloth(
    spec: Any, at: _At, tables: Mapping[str, WindowTable], *, k8s: bool
) -> tuple[list[SLO], list[SpecError]]:
    top = ("service", "labels", "slos", _k(k8s, "slo_plugins")) + (() if k8s else ("version",))
    d = _mapping(spec, at, top)
    if _k(k8s, "slo_plugins") in d:
        raise (at / _k(k8s, "slo_plugins")).fail("Sloth plugins are not supported; write the SLI queries out")
    service = _str(d.get("service"), at / "service", required=True)
    assert service is not None
    glabels = _labels(d.get("labels"), at / "labels")
    raw = d.get("slos")
    if not isinstance(raw, list) or not raw:
        raise (at / "slos").fail(f"{_short(raw)} is not a non-empty list")
    if SLOTH_POLICY not in tables:
        raise at.fail(f"the {SLOTH_POLICY!r} window table is missing from alert_windows")
    slos, errors = [], []
    for i, s in enumerate(raw):
        sa = at / "slos" / i
        try:
            slos.append(_sloth_slo(s, sa, service, glabels, tables, k8s))
        except SpecError as e:
            errors.append(e)
    return slos, errors


def _sloth_slo(
    s: Any, sa: _At, service: str, glabels: dict[str, str], tables: Mapping[str, WindowTable], k8s: bool
) -> SLO:
    m = _mapping(s, sa, ("name", "objective", "description", "labels", "sli", "alerting", "plugins"))
    if "plugins" in m:
        raise (sa / "plugins").fail("Sloth plugins are not supported; write the SLI queries out")
    name = _str(m.get("name"), sa / "name", required=True)
    obj = m.get("objective")
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not 0 < float(obj) < 100:
        raise (sa / "objective").fail(f"{_short(obj)} is not a percentage in (0, 100)")
    sli_at = sa / "sli"
    sli_m = _mapping(m.get("sli"), sli_at, ("events", "raw", "plugin"))
    if "plugin" in sli_m:
        raise (sli_at / "plugin").fail("Sloth SLI plugins are not supported; write the SLI queries out")
    if "events" in sli_m:
        ev_at = sli_at / "events"
        eq, tq = _k(k8s, "error_query"), _k(k8s, "total_query")
        ev = _mapping(sli_m["events"], ev_at, (eq, tq))
        sli = SLI(
            "prometheus_ratio",
            error_query=_str(ev.get(eq), ev_at / eq, required=True),
            total_query=_str(ev.get(tq), ev_at / tq, required=True),
        )
    elif "raw" in sli_m:
        rq = _k(k8s, "error_ratio_query")
        raw = _mapping(sli_m["raw"], sli_at / "raw", (rq,))
        sli = SLI("prometheus_ratio", error_ratio_query=_str(raw.get(rq), sli_at / "raw" / rq, required=True))
    else:
        raise sli_at.fail("needs events or raw")
    al_at = sa / "alerting"
    pa_k, ta_k = _k(k8s, "page_alert"), _k(k8s, "ticket_alert")
    al = _mapping(m.get("alerting"), al_at, ("name", "labels", "annotations", pa_k, ta_k))
    disabled = []
    sev_labels: dict[str, dict[str, str]] = {}
    sev_ann: dict[str, dict[str, str]] = {}
    for sev, key in (("page", pa_k), ("ticket", ta_k)):
        sub = _mapping(al.get(key), al_at / key, ("disable", "labels", "annotations"))
        if sub.get("disable") is True:
            disabled.append(sev)
        sev_labels[sev] = _labels(sub.get("labels"), al_at / key / "labels")
        sev_ann[sev] = _labels(sub.get("annotations"), al_at / key / "annotations")
    window = Window("rolling", timedelta(days=30))
    labels = {**glabels, **_labels(m.get("labels"), sa / "labels")}
    return SLO(
        name=f"{service}-{name}",
        description=_str(m.get("description"), sa / "description") or "",
        objective=_percent(obj),
        window=window,
        sli=sli,
        alerting=Alerting(
            policy=SLOTH_POLICY,
            tiers=tables[SLOTH_POLICY].resolve(window.nominal),
            disabled=tuple(disabled),
            name=_str(al.get("name"), al_at / "name"),
            labels=_labels(al.get("labels"), al_at / "labels"),
            annotations=_labels(al.get("annotations"), al_at / "annotations"),
            page_labels=sev_labels["page"],
            ticket_labels=sev_labels["ticket"],
            page_annotations=sev_ann["page"],
            ticket_annotations=sev_ann["ticket"],
        ),
        service=service,
        labels=labels,
        source_file=Path(sa.file),
    )


# -- OpenSLO ----------------------------------------------------------------------------------


def _openslo_v1alpha(
    doc: dict[str, Any], at: _At, tables: Mapping[str, WindowTable]
) -> tuple[list[SLO], list[SpecError]]:
    _mapping(doc, at, ("apiVersion", "kind", "metadata", "spec"))
    meta = _mapping(doc.get("metadata"), at / "metadata", ("name", "displayName", "labels", "annotations"))
    name = _str(meta.get("name"), at / "metadata" / "name", required=True)
    sa = at / "spec"
    spec = _mapping(
        doc.get("spec"),
        sa,
        ("service", "description", "budgetingMethod", "objectives", "timeWindows", "indicator"),
    )
    if "indicator" in spec:
        raise (sa / "indicator").fail("v1alpha indicators are not supported; use objectives[].ratioMetrics")
    service = _str(spec.get("service"), sa / "service", required=True)
    bm = spec.get("budgetingMethod", "Occurrences")
    if bm != "Occurrences":
        raise (sa / "budgetingMethod").fail(f"{bm!r} is not supported in openslo/v1alpha (only Occurrences)")
    window = _v1alpha_window(spec.get("timeWindows"), sa / "timeWindows")
    objs = spec.get("objectives")
    if not isinstance(objs, list) or not objs:
        raise (sa / "objectives").fail(f"{_short(objs)} is not a non-empty list")
    slos, errors = [], []
    for i, o in enumerate(objs):
        oa = sa / "objectives" / i
        try:
            om = _mapping(o, oa, ("ratioMetrics", "target", "displayName", "value", "op"))
            if "ratioMetrics" not in om:
                raise oa.fail("needs ratioMetrics (threshold objectives are not supported)")
            rm_at = oa / "ratioMetrics"
            rm = _mapping(om["ratioMetrics"], rm_at, ("good", "total", "incremental"))
            queries = {}
            for part in ("good", "total"):
                pm = _mapping(rm.get(part), rm_at / part, ("source", "queryType", "query", "metadata"))
                src = str(pm.get("source", "")).lower()
                if src != "prometheus":
                    raise (rm_at / part / "source").fail(
                        f"{pm.get('source')!r} is not supported (only prometheus)"
                    )
                queries[part] = _str(pm.get("query"), rm_at / part / "query", required=True)
            target = _target(om.get("target"), oa / "target")
            sli = SLI("prometheus_ratio", good_query=queries["good"], total_query=queries["total"])
            slos.append(
                SLO(
                    name=f"{service}-{name}-{i}",
                    description=_str(spec.get("description"), sa / "description") or "",
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


def _target(v: Any, at: _At) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < float(v) < 1:
        raise at.fail(f"{_short(v)} is not a ratio in (0, 1)")
    return float(v)


def _v1alpha_window(v: Any, at: _At) -> Window:
    if v is None:
        return Window("rolling", timedelta(days=30))
    if not isinstance(v, list) or len(v) != 1:
        raise at.fail(f"{_short(v)} is not a list of one time window")
    w = _mapping(v[0], at / 0, ("count", "unit", "isRolling", "calendar"))
    if w.get("isRolling") is False or "calendar" in w:
        raise (at / 0 / "calendar").fail(
            "calendar windows are not supported in openslo/v1alpha; use openslo/v1"
        )
    unit = {"Second": "s", "Minute": "m", "Hour": "h", "Day": "d", "Week": "w"}.get(str(w.get("unit")))
    if unit is None:
        raise (at / 0 / "unit").fail(f"{w.get('unit')!r} is not one of Second, Minute, Hour, Day, Week")
    return Window("rolling", _duration(f"{w.get('count')}{unit}", at / 0 / "count"))


def _openslo_v1_window(v: Any, at: _At) -> tuple[Window, list[str]]:
    notes: list[str] = []
    if v is None:
        return Window("rolling", timedelta(days=28)), notes
    if not isinstance(v, list) or len(v) != 1:
        raise at.fail(f"{_short(v)} is not a list of one time window")
    wa = at / 0
    w = _mapping(v[0], wa, ("duration", "isRolling", "calendar"))
    dur = str(w.get("duration", ""))
    m = _OPENSLO_DURATION.match(dur)
    if not m:
        raise (wa / "duration").fail(f"{dur!r} is not an OpenSLO duration like 28d, 1w or 1M")
    n, unit = int(m.group(1)), m.group(2)
    if w.get("isRolling", True) is not False:
        if unit in "MQY":
            raise (wa / "duration").fail(f"{dur!r}: a rolling window must be in m, h, d or w")
        return Window("rolling", _duration(f"{n}{unit}", wa / "duration")), notes
    cal_unit = {("w", 1): "week", ("M", 1): "month"}.get((unit, n))
    if cal_unit is None:
        raise (wa / "duration").fail(f"{dur!r} is not a calendar period hopscope supports (1w or 1M)")
    cal = _mapping(w.get("calendar"), wa / "calendar", ("startTime", "timeZone"))
    tz = _tz(cal.get("timeZone"), wa / "calendar" / "timeZone")
    if "startTime" in cal:
        notes.append(
            f"{(wa / 'calendar' / 'startTime').where()}: periods start on {cal_unit} boundaries in {tz}"
        )
    return Window("calendar", None, cal_unit, tz), notes


def _resolve(
    v: Any, at: _At, kind: str, ref_key: str, named: Mapping[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    """An inline OpenSLO object, or the one its ``*Ref`` names in the same file."""
    if isinstance(v, dict) and ref_key in v:
        ref = str(v[ref_key])
        if (kind, ref) not in named:
            raise (at / ref_key).fail(f"{ref!r} names no {kind} in this file")
        return named[(kind, ref)]
    return _mapping(v, at)


def _openslo_v1(
    doc: dict[str, Any],
    at: _At,
    tables: Mapping[str, WindowTable],
    named: Mapping[tuple[str, str], dict[str, Any]],
) -> tuple[list[SLO], list[SpecError]]:
    _mapping(doc, at, ("apiVersion", "kind", "metadata", "spec"))
    meta = _mapping(doc.get("metadata"), at / "metadata", ("name", "displayName", "labels", "annotations"))
    name = _str(meta.get("name"), at / "metadata" / "name", required=True)
    sa = at / "spec"
    spec = _mapping(
        doc.get("spec"),
        sa,
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
    service = _str(spec.get("service"), sa / "service", required=True)
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
        ind_at = _At(at.file, "SLI " + str(spec["indicatorRef"]))
        ind_spec = ind.get("spec")
    else:
        ind_at = sa / "indicator"
        ind = _mapping(spec.get("indicator"), ind_at, ("metadata", "spec"))
        ind_spec = ind.get("spec")
    sli = _openslo_sli(ind_spec, ind_at / "spec")
    alerting = _openslo_alerting(spec.get("alertPolicies"), sa / "alertPolicies", window, tables, named)
    objs = spec.get("objectives")
    if not isinstance(objs, list) or not objs:
        raise (sa / "objectives").fail(f"{_short(objs)} is not a non-empty list")
    slos, errors = [], []
    for i, o in enumerate(objs):
        oa = sa / "objectives" / i
        try:
            om = _mapping(
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
                target = _target(_percent(om["targetPercent"]), oa / "targetPercent")
            else:
                target = _target(om.get("target"), oa / "target")
            budgeting = Budgeting()
            if method != "occurrences":
                sl = _duration(om.get("timeSliceWindow", "1m"), oa / "timeSliceWindow")
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
                    description=_str(spec.get("description"), sa / "description") or "",
                    objective=target,
                    window=window,
                    sli=sli,
                    budgeting=budgeting,
                    alerting=alerting,
                    service=service,
                    labels=_labels(meta.get("labels"), at / "metadata" / "labels")
                    if isinstance(meta.get("labels"), dict)
                    else {},
                    source_file=Path(at.file),
                    notes=tuple(notes),
                )
            )
        except SpecError as e:
            errors.append(e)
    return slos, errors


def _metric_query(v: Any, at: _At) -> str:
    m = _mapping(v, at, ("metricSource",))
    ms_at = at / "metricSource"
    ms = _mapping(m.get("metricSource"), ms_at, ("metricSourceRef", "type", "spec"))
    typ = str(ms.get("type", ""))
    if typ.lower() != "prometheus":
        raise (ms_at / "type").fail(f"{typ!r} is not a metric source hopscope reads (Prometheus)")
    spec = _mapping(ms.get("spec"), ms_at / "spec")
    q = _str(spec.get("query") or spec.get("promql"), ms_at / "spec" / "query", required=True)
    assert q is not None
    return q


def _openslo_sli(v: Any, at: _At) -> SLI:
    m = _mapping(v, at, ("thresholdMetric", "ratioMetric", "description"))
    if "thresholdMetric" in m:
        raise (at / "thresholdMetric").fail(
            "threshold metrics (a gauge compared with objectives[].value) are not supported; use ratioMetric"
        )
    ra = at / "ratioMetric"
    r = _mapping(m.get("ratioMetric"), ra, ("counter", "good", "bad", "total", "rawType", "raw"))
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
    v: Any,
    at: _At,
    window: Window,
    tables: Mapping[str, WindowTable],
    named: Mapping[tuple[str, str], dict[str, Any]],
) -> Alerting:
    from hopscope.slo.spec import DEFAULT_POLICY

    if not v:
        return Alerting(policy=DEFAULT_POLICY, tiers=tables[DEFAULT_POLICY].resolve(window.nominal))
    if not isinstance(v, list):
        raise at.fail(f"{_short(v)} is not a list")
    tiers: list[AlertTier] = []
    names = []
    for i, p in enumerate(v):
        pa = at / i
        pol = _resolve(p, pa, "AlertPolicy", "alertPolicyRef", named)
        pol_spec = _mapping(pol.get("spec", pol), pa / "spec")
        names.append(str((pol.get("metadata") or {}).get("name", f"policy-{i}")))
        conds = pol_spec.get("conditions")
        if not isinstance(conds, list) or not conds:
            raise (pa / "spec" / "conditions").fail(f"{_short(conds)} is not a non-empty list")
        for j, c in enumerate(conds):
            ca = pa / "spec" / "conditions" / j
            cond = _resolve(c, ca, "AlertCondition", "conditionRef", named)
            cs = _mapping(cond.get("spec", cond), ca / "spec")
            cm = _mapping(
                cs.get("condition"),
                ca / "spec" / "condition",
                ("kind", "op", "threshold", "lookbackWindow", "alertAfter"),
            )
            if cm.get("kind") != "burnrate":
                raise (ca / "spec" / "condition" / "kind").fail(
                    f"{cm.get('kind')!r} is not supported (only burnrate)"
                )
            long = _duration(cm.get("lookbackWindow"), ca / "spec" / "condition" / "lookbackWindow")
            thr = cm.get("threshold")
            if isinstance(thr, bool) or not isinstance(thr, (int, float)) or thr <= 0:
                raise (ca / "spec" / "condition" / "threshold").fail(
                    f"{_short(thr)} is not a positive burn rate"
                )
            sev = str(cs.get("severity", "page")).lower()
            severity = "page" if sev in ("page", "critical", "high", "p1") else "ticket"
            # OpenSLO has one lookback window per condition; the short window follows the SRE Workbook's 1/12.
            tiers.append(AlertTier(severity, long, long / 12, float(thr)))
    return Alerting(policy="+".join(names), tiers=tuple(tiers))


# -- writing hopscope/v1 ----------------------------------------------------------------------


def to_document(slo: SLO) -> dict[str, Any]:
    """An SLO as a ``hopscope/v1`` YAML document (what ``hopscope slo import`` writes)."""
    sli: dict[str, Any] = {"kind": slo.sli.kind}
    fields = (
        ("service", slo.sli.service),
        ("route", slo.sli.route),
        ("hop", slo.sli.hop),
        ("thresholdMs", slo.sli.threshold_ms if slo.sli.kind == "latency" else None),
        ("goodQuery", slo.sli.good_query),
        ("errorQuery", slo.sli.error_query),
        ("totalQuery", slo.sli.total_query),
        ("errorRatioQuery", slo.sli.error_ratio_query),
        ("metric", slo.sli.metric),
        ("selector", slo.sli.selector or None),
        ("le", slo.sli.le),
    )
    sli.update({k: v for k, v in fields if v is not None})
    if slo.window.kind == "rolling":
        window: Any = format_duration(slo.window.length or timedelta(days=28))
    else:
        window = {"calendar": slo.window.unit, "timeZone": slo.window.tz}
    budgeting: Any = slo.budgeting.method
    if slo.budgeting.method != "occurrences":
        budgeting = {
            "method": slo.budgeting.method,
            "slice": format_duration(slo.budgeting.slice or timedelta(minutes=1)),
        }
        if slo.budgeting.slice_objective is not None:
            budgeting["sliceObjective"] = slo.budgeting.slice_objective
    a = slo.alerting
    alerting: dict[str, Any] = {"policy": a.policy}
    if a.disabled:
        alerting["disable"] = list(a.disabled)
    if a.min_events:
        alerting["minEvents"] = a.min_events
    if a.min_coverage != 1.0:
        alerting["minCoverage"] = a.min_coverage
    for key, val in (
        ("name", a.name),
        ("labels", dict(a.labels)),
        ("annotations", dict(a.annotations)),
        ("pageLabels", dict(a.page_labels)),
        ("ticketLabels", dict(a.ticket_labels)),
        ("pageAnnotations", dict(a.page_annotations)),
        ("ticketAnnotations", dict(a.ticket_annotations)),
    ):
        if val:
            alerting[key] = val
    spec: dict[str, Any] = {"description": slo.description}
    if slo.service:
        spec["service"] = slo.service
    spec.update({"objective": slo.objective, "window": window, "budgeting": budgeting, "sli": sli})
    if slo.hop_budgets_ms:
        spec["hopBudgetsMs"] = dict(slo.hop_budgets_ms)
    spec["alerting"] = alerting
    meta: dict[str, Any] = {"name": slo.name}
    if slo.labels:
        meta["labels"] = dict(slo.labels)
    return {"apiVersion": API_VERSION, "kind": "SLO", "metadata": meta, "spec": spec}


def custom_policy_table(slo: SLO) -> WindowTable | None:
    """A window table holding an imported SLO's own tiers (OpenSLO AlertPolicy), for export to alert_windows."""
    if slo.alerting.policy in default_window_tables():
        return None
    return WindowTable(
        slo.alerting.policy,
        slo.window.nominal,
        tuple((t.severity, t.long, t.short, t.factor, None) for t in slo.alerting.tiers),
    )

"""The ``hopscope/v1`` format: ``kind: SLO`` and ``kind: AlertWindows`` documents, read and written."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path

from hopscope.durations import format_duration, parse_utc
from hopscope.model import HOP_SEPARATOR, Hop
from hopscope.slo.formats import check
from hopscope.slo.formats.check import At
from hopscope.slo.model import (
    BUDGETING,
    CALENDAR_NOMINAL,
    DEFAULT_POLICY,
    SEVERITIES,
    SLI,
    SLI_KINDS,
    SLO,
    SPAN_KINDS,
    Alerting,
    Budgeting,
    Component,
    Correction,
    Window,
    WindowTable,
)

API_VERSION = "hopscope/v1"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


# -- window tables ----------------------------------------------------------------------------


def parse_window_table(doc: object, at: At, name: str | None = None) -> WindowTable:
    """A ``hopscope/v1 AlertWindows`` table; ``name`` when the document names none (else the file's stem)."""
    d = check.mapping(doc, at, ("apiVersion", "kind", "name", "period", "scale", "tiers"))
    if d.get("apiVersion") != API_VERSION or d.get("kind") != "AlertWindows":
        raise at.fail(
            f"apiVersion/kind {d.get('apiVersion')!r}/{d.get('kind')!r} is not {API_VERSION}/AlertWindows"
        )
    tname = check.text(d.get("name"), at / "name") or name or Path(at.file).stem
    period = check.duration(d.get("period"), at / "period")
    scale = d.get("scale", "factors")
    if scale not in ("factors", "windows"):
        raise (at / "scale").fail(f"{scale!r} is not one of factors, windows")
    raw = d.get("tiers")
    if not isinstance(raw, list) or not raw:
        raise (at / "tiers").fail(f"{check.short_repr(raw)} is not a non-empty list")
    tiers: list[tuple[str, timedelta, timedelta, float | None, float | None]] = []
    for i, t in enumerate(raw):
        t_at = at / "tiers" / i
        tm = check.mapping(t, t_at, ("severity", "long", "short", "factor", "budget_percent"))
        sev = str(tm.get("severity"))
        if sev not in SEVERITIES:
            raise (t_at / "severity").fail(f"{tm.get('severity')!r} is not one of {', '.join(SEVERITIES)}")
        long = check.duration(tm.get("long"), t_at / "long")
        short = check.duration(tm.get("short"), t_at / "short")
        if short >= long:
            raise (t_at / "short").fail(
                f"{tm.get('short')!r} is not shorter than the long window {tm.get('long')!r}"
            )
        factor = check.positive(tm["factor"], t_at / "factor") if "factor" in tm else None
        percent = (
            check.positive(tm["budget_percent"], t_at / "budget_percent") if "budget_percent" in tm else None
        )
        if factor is None and percent is None:
            raise t_at.fail("needs factor or budget_percent")
        tiers.append((sev, long, short, factor, percent))
    return WindowTable(tname, period, tuple(tiers), scale, Path(at.file))


# -- hopscope/v1 SLO --------------------------------------------------------------------------

_SPEC_KEYS = (
    "description",
    "service",
    "objective",
    "window",
    "budgeting",
    "sli",
    "hopBudgetsMs",
    "alerting",
    "corrections",
)
_SLI_KEYS = (
    "kind",
    "service",
    "route",
    "hop",
    "thresholdMs",
    "goodQuery",
    "errorQuery",
    "totalQuery",
    "errorRatioQuery",
    "metric",
    "selector",
    "le",
    "components",
)
_ALERT_KEYS = (
    "policy",
    "disable",
    "minEvents",
    "minCoverage",
    "name",
    "labels",
    "annotations",
    "pageLabels",
    "ticketLabels",
    "pageAnnotations",
    "ticketAnnotations",
)


def parse_slo(doc: object, file: str, tables: Mapping[str, WindowTable], *, doc_index: int = 0) -> SLO:
    """One ``hopscope/v1`` SLO document -> :class:`SLO`; SpecError naming file, path and value."""
    at = At(file, doc=doc_index)
    d = check.mapping(doc, at, ("apiVersion", "kind", "metadata", "spec"))
    if d.get("apiVersion") != API_VERSION:
        raise (at / "apiVersion").fail(f"{d.get('apiVersion')!r} is not {API_VERSION}")
    if d.get("kind") != "SLO":
        raise (at / "kind").fail(f"{d.get('kind')!r} is not SLO")
    meta = check.mapping(d.get("metadata"), at / "metadata", ("name", "labels", "displayName"))
    name = check.text(meta.get("name"), at / "metadata" / "name", required=True)
    assert name is not None
    if not _NAME.match(name):
        raise (at / "metadata" / "name").fail(f"{name!r} is not a name (letters, digits, - _ . :)")
    sa = at / "spec"
    spec = check.mapping(d.get("spec"), sa, _SPEC_KEYS)
    if "objective" not in spec:
        raise (sa / "objective").fail("is required (a ratio in (0, 1), e.g. 0.999)")
    objective = check.ratio(spec["objective"], sa / "objective")
    window = _parse_window(spec.get("window", "28d"), sa / "window")
    budgeting = _parse_budgeting(spec.get("budgeting", "occurrences"), sa / "budgeting")
    sli = _parse_sli(spec.get("sli"), sa / "sli")
    notes: list[str] = []
    hop_budgets: dict[str, float] = {}
    hb = check.mapping(spec.get("hopBudgetsMs"), sa / "hopBudgetsMs")
    for hop, ms in hb.items():
        hop_budgets[str(hop)] = check.positive(ms, sa / "hopBudgetsMs" / str(hop))
    if hop_budgets:
        if sli.kind not in ("latency", "prometheus_histogram") or sli.threshold_ms is None:
            raise (sa / "hopBudgetsMs").fail(
                f"hop budgets need a latency SLI with a threshold; sli.kind is {sli.kind!r}"
            )
        total = sum(hop_budgets.values())
        if total > sli.threshold_ms + 1e-9:
            notes.append(
                f"{(sa / 'hopBudgetsMs').where()}: hop budgets sum to {total:g} ms, over the "
                f"{sli.threshold_ms:g} ms threshold by {total - sli.threshold_ms:g} ms"
            )
    alerting = _parse_alerting(spec.get("alerting"), sa / "alerting", window, tables)
    corrections = parse_corrections(spec.get("corrections"), sa / "corrections")
    return SLO(
        name=name,
        description=check.text(spec.get("description"), sa / "description") or "",
        objective=objective,
        window=window,
        sli=sli,
        budgeting=budgeting,
        hop_budgets_ms=hop_budgets,
        alerting=alerting,
        service=check.text(spec.get("service"), sa / "service") or sli.service,
        labels=check.labels(meta.get("labels"), at / "metadata" / "labels"),
        source_file=Path(file),
        notes=tuple(notes),
        corrections=corrections,
    )


def parse_time(v: object, at: At) -> datetime:
    """An ISO time (``2026-03-01T02:00Z``; no offset: UTC) or a date (its midnight UTC) -> naive UTC."""
    if isinstance(v, date) and not isinstance(v, datetime):
        return datetime(v.year, v.month, v.day)
    if not isinstance(v, (str, datetime)):
        raise at.fail(f"{check.short_repr(v)} is not an ISO time like 2026-03-01T02:00Z")
    try:
        return parse_utc(v)
    except ValueError as e:
        raise at.fail(str(e)) from None


def parse_corrections(v: object, at: At) -> tuple[Correction, ...]:
    """``corrections``: a list of ``{from, to, reason}`` periods excluded from the SLI, budget and alerts."""
    if v is None:
        return ()
    if not isinstance(v, list):
        raise at.fail(f"{check.short_repr(v)} is not a list of {{from, to, reason}} periods")
    out: list[Correction] = []
    for i, item in enumerate(v):
        c_at = at / i
        m = check.mapping(item, c_at, ("from", "to", "reason"))
        for k in ("from", "to", "reason"):
            if k not in m:
                raise (c_at / k).fail("is required (a correction is {from, to, reason})")
        start = parse_time(m["from"], c_at / "from")
        end = parse_time(m["to"], c_at / "to")
        if end <= start:
            raise (c_at / "to").fail(f"{end:%Y-%m-%dT%H:%M:%S} is not after from ({start:%Y-%m-%dT%H:%M:%S})")
        reason = (check.text(m["reason"], c_at / "reason") or "").strip()
        if not reason:
            raise (c_at / "reason").fail("is empty; say why the period is excluded")
        out.append(Correction(start, end, reason, "spec"))
    out.sort(key=lambda c: c.start)
    for a, b in zip(out, out[1:], strict=False):
        if b.start < a.end:
            raise at.fail(
                f"{b.start:%Y-%m-%dT%H:%M} – {b.end:%Y-%m-%dT%H:%M} ({b.reason!r}) overlaps "
                f"{a.start:%Y-%m-%dT%H:%M} – {a.end:%Y-%m-%dT%H:%M} ({a.reason!r}); merge them into one"
            )
    return tuple(out)


def _parse_window(v: object, at: At) -> Window:
    if isinstance(v, str) and v in CALENDAR_NOMINAL:
        return Window("calendar", None, v, "UTC")
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        length = check.duration(v, at)
        if length < timedelta(minutes=5):
            raise at.fail(f"{v!r} is shorter than 5m")
        return Window("rolling", length)
    m = check.mapping(v, at, ("rolling", "calendar", "timeZone"))
    if "rolling" in m:
        if "calendar" in m:
            raise at.fail("has both rolling and calendar; choose one")
        return _parse_window(m["rolling"], at / "rolling")
    unit = m.get("calendar")
    if unit not in CALENDAR_NOMINAL:
        raise (at / "calendar").fail(f"{unit!r} is not one of month, week")
    return Window("calendar", None, str(unit), check.time_zone(m.get("timeZone"), at / "timeZone"))


def _parse_budgeting(v: object, at: At) -> Budgeting:
    if isinstance(v, str):
        v = {"method": v}
    m = check.mapping(v, at, ("method", "slice", "sliceObjective"))
    method = m.get("method", "occurrences")
    if method not in BUDGETING:
        raise (at / "method").fail(f"{method!r} is not one of {', '.join(BUDGETING)}")
    if method == "occurrences":
        for k in ("slice", "sliceObjective"):
            if k in m:
                raise (at / k).fail("only applies to timeslices or ratio_timeslices budgeting")
        return Budgeting()
    sl = check.duration(m.get("slice", "1m"), at / "slice")
    if sl < timedelta(minutes=1) or sl.total_seconds() % 60:
        raise (at / "slice").fail(
            f"{m.get('slice')!r} is not a whole number of minutes (hop_minutes is per minute)"
        )
    so = None
    if method == "timeslices":
        if "sliceObjective" not in m:
            raise (at / "sliceObjective").fail("is required for timeslices budgeting (a ratio, e.g. 0.95)")
        so = check.ratio(m["sliceObjective"], at / "sliceObjective")
    elif "sliceObjective" in m:
        raise (at / "sliceObjective").fail("only applies to timeslices budgeting")
    return Budgeting(method, sl, so)


def _parse_sli(v: object, at: At) -> SLI:
    m = check.mapping(v, at, _SLI_KEYS)
    if not m:
        raise at.fail("is required")
    kind = m.get("kind")
    if kind not in SLI_KINDS:
        raise (at / "kind").fail(f"{kind!r} is not one of {', '.join(SLI_KINDS)}")
    allowed = {
        "latency": {"kind", "service", "route", "hop", "thresholdMs"},
        "availability": {"kind", "service", "route", "hop"},
        "prometheus_ratio": {"kind", "goodQuery", "errorQuery", "totalQuery", "errorRatioQuery"},
        "prometheus_histogram": {"kind", "metric", "selector", "le"},
        "composite": {"kind", "components"},
    }[kind]
    for k in m:
        if k not in allowed:
            raise (at / k).fail(f"does not apply to a {kind} SLI (it takes {', '.join(sorted(allowed))})")
    if kind == "composite":
        return SLI(kind, components=_parse_components(m.get("components"), at / "components"))
    if kind in SPAN_KINDS:
        service = check.text(m.get("service"), at / "service", required=True)
        route = check.text(m.get("route"), at / "route")
        hop = check.text(m.get("hop"), at / "hop")
        if hop is not None:
            edge = Hop.parse(hop)
            if edge.kind == "service":
                raise (at / "hop").fail(
                    f"{hop!r} is a service's self time, which has no latency histogram; "
                    f"name an edge like '{Hop('api-gateway', hop.strip())}'"
                )
            edge = Hop(edge.client.strip(), edge.server.strip())
            if not edge.client or not edge.server or HOP_SEPARATOR in edge.server:
                raise (at / "hop").fail(f"{hop!r} is not an edge like '{Hop('client', 'server')}'")
            hop = str(edge)
        thr = None
        if kind == "latency":
            if "thresholdMs" not in m:
                raise (at / "thresholdMs").fail("is required for a latency SLI")
            thr = check.positive(m["thresholdMs"], at / "thresholdMs")
        return SLI(kind, service=service, route=route, hop=hop, threshold_ms=thr)
    if kind == "prometheus_ratio":
        q = {
            k: check.text(m.get(k), at / k)
            for k in ("goodQuery", "errorQuery", "totalQuery", "errorRatioQuery")
        }
        if q["errorRatioQuery"]:
            if q["goodQuery"] or q["errorQuery"] or q["totalQuery"]:
                raise (at / "errorRatioQuery").fail("excludes goodQuery/errorQuery/totalQuery")
        else:
            if not q["totalQuery"]:
                raise (at / "totalQuery").fail("is required with goodQuery or errorQuery")
            if bool(q["goodQuery"]) == bool(q["errorQuery"]):
                raise (at / "goodQuery").fail("give exactly one of goodQuery or errorQuery")
        return SLI(
            kind,
            good_query=q["goodQuery"],
            error_query=q["errorQuery"],
            total_query=q["totalQuery"],
            error_ratio_query=q["errorRatioQuery"],
        )
    metric = check.text(m.get("metric"), at / "metric", required=True)
    assert metric is not None
    if not re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", metric):
        raise (at / "metric").fail(f"{metric!r} is not a Prometheus metric name")
    le = check.text(m.get("le"), at / "le", required=True)
    try:
        le_s = float(le or "")
    except ValueError:
        raise (at / "le").fail(f"{le!r} is not a bucket bound in seconds") from None
    if not le_s > 0:
        raise (at / "le").fail(f"{le!r} is not a positive bucket bound in seconds")
    selector = (check.text(m.get("selector"), at / "selector") or "").strip().strip("{}")
    return SLI(kind, metric=metric, selector=selector, le=le, threshold_ms=le_s * 1000)


def _parse_components(v: object, at: At) -> tuple[Component, ...]:
    """``components``: SLO names, or ``{slo, weight}``; each SLO at most once."""
    if not isinstance(v, list) or not v:
        raise at.fail(
            f"{check.short_repr(v)} is not a non-empty list of SLO names or {{slo: NAME, weight: W}}"
        )
    out: list[Component] = []
    for i, item in enumerate(v):
        c_at = at / i
        if isinstance(item, str):
            item = {"slo": item}
        m = check.mapping(item, c_at, ("slo", "weight"))
        name = check.text(m.get("slo"), c_at / "slo", required=True)
        assert name is not None
        weight = check.positive(m["weight"], c_at / "weight") if "weight" in m else 1.0
        if any(c.name == name for c in out):
            raise (c_at / "slo").fail(f"{name!r} is listed twice; give it one entry with its weight")
        out.append(Component(name, weight))
    return tuple(out)


def _parse_alerting(v: object, at: At, window: Window, tables: Mapping[str, WindowTable]) -> Alerting:
    m = check.mapping(v, at, _ALERT_KEYS)
    policy = check.text(m.get("policy"), at / "policy") or DEFAULT_POLICY
    if policy not in tables:
        raise (at / "policy").fail(
            f"{policy!r} is not a window table; known: {', '.join(sorted(tables)) or 'none'}"
        )
    tiers = tables[policy].resolve(window.nominal)
    raw_dis = m.get("disable", [])
    if isinstance(raw_dis, str):
        raw_dis = [raw_dis]
    if not isinstance(raw_dis, list):
        raise (at / "disable").fail(f"{check.short_repr(raw_dis)} is not a list of severities or tier labels")
    labels = {t.label for t in tiers}
    for i, x in enumerate(raw_dis):
        if x not in SEVERITIES and x not in labels:
            raise (at / "disable" / i).fail(
                f"{x!r} is not page, ticket or a tier of {policy} ({', '.join(sorted(labels))})"
            )
    me = m.get("minEvents", 0)
    if isinstance(me, bool) or not isinstance(me, int) or me < 0:
        raise (at / "minEvents").fail(f"{check.short_repr(me)} is not a whole number >= 0")
    mc = m.get("minCoverage", 1.0)
    if isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0 <= float(mc) <= 12:
        raise (at / "minCoverage").fail(
            f"{check.short_repr(mc)} is not a number in [0, 12] (share of the short window's length that the "
            "long window must hold with data before a tier may fire; 0 turns the guard off)"
        )
    return Alerting(
        policy=policy,
        tiers=tiers,
        disabled=tuple(str(x) for x in raw_dis),
        min_events=me,
        min_coverage=float(mc),
        name=check.text(m.get("name"), at / "name"),
        labels=check.labels(m.get("labels"), at / "labels"),
        annotations=check.labels(m.get("annotations"), at / "annotations"),
        page_labels=check.labels(m.get("pageLabels"), at / "pageLabels"),
        ticket_labels=check.labels(m.get("ticketLabels"), at / "ticketLabels"),
        page_annotations=check.labels(m.get("pageAnnotations"), at / "pageAnnotations"),
        ticket_annotations=check.labels(m.get("ticketAnnotations"), at / "ticketAnnotations"),
    )


# -- writing hopscope/v1 ----------------------------------------------------------------------


def to_document(slo: SLO) -> dict[str, object]:
    """An SLO as a ``hopscope/v1`` YAML document (what ``hopscope slo import`` writes)."""
    sli: dict[str, object] = {"kind": slo.sli.kind}
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
    if slo.sli.components:
        sli["components"] = [
            {"slo": c.name} if c.weight == 1.0 else {"slo": c.name, "weight": c.weight}
            for c in slo.sli.components
        ]
    if slo.window.kind == "rolling":
        window: object = format_duration(slo.window.length or timedelta(days=28))
    else:
        window = {"calendar": slo.window.unit, "timeZone": slo.window.tz}
    budgeting: object = slo.budgeting.method
    if slo.budgeting.method != "occurrences":
        sliced: dict[str, object] = {
            "method": slo.budgeting.method,
            "slice": format_duration(slo.budgeting.slice or timedelta(minutes=1)),
        }
        if slo.budgeting.slice_objective is not None:
            sliced["sliceObjective"] = slo.budgeting.slice_objective
        budgeting = sliced
    a = slo.alerting
    alerting: dict[str, object] = {"policy": a.policy}
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
    spec: dict[str, object] = {"description": slo.description}
    if slo.service:
        spec["service"] = slo.service
    spec.update({"objective": slo.objective, "window": window, "budgeting": budgeting, "sli": sli})
    if slo.hop_budgets_ms:
        spec["hopBudgetsMs"] = dict(slo.hop_budgets_ms)
    spec["alerting"] = alerting
    spec_corrections = [c for c in slo.corrections if c.source == "spec"]
    if spec_corrections:
        spec["corrections"] = [
            {"from": f"{c.start:%Y-%m-%dT%H:%M:%S}Z", "to": f"{c.end:%Y-%m-%dT%H:%M:%S}Z", "reason": c.reason}
            for c in spec_corrections
        ]
    meta: dict[str, object] = {"name": slo.name}
    if slo.labels:
        meta["labels"] = dict(slo.labels)
    return {"apiVersion": API_VERSION, "kind": "SLO", "metadata": meta, "spec": spec}

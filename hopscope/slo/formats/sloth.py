"""Sloth's formats: ``prometheus/v1`` service files, the ``sloth.slok.dev/v1`` PrometheusServiceLevel CRD and AlertWindows.

Sloth plugins (SLI or SLO) are refused with a message naming the field and the plugin:
they are Go code that Sloth runs, which hopscope cannot run; it needs the queries written out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from hopscope.errors import SpecError
from hopscope.slo.formats import check
from hopscope.slo.formats.check import At
from hopscope.slo.model import SEVERITIES, SLI, SLO, SLOTH_POLICY, Alerting, Window, WindowTable

API_VERSION = "sloth.slok.dev/v1"  # the Kubernetes CRDs (PrometheusServiceLevel, AlertWindows)
VERSION = "prometheus/v1"  # the plain service file's ``version``


def parse_window_table(d: Mapping[str, object], at: At, name: str | None = None) -> WindowTable:
    """Sloth's ``sloth.slok.dev/v1 AlertWindows`` (``d`` is the document, already a mapping)."""
    spec = check.mapping(d.get("spec"), at / "spec", ("sloPeriod", "page", "ticket"))
    period = check.duration(spec.get("sloPeriod"), at / "spec" / "sloPeriod")
    tiers: list[tuple[str, timedelta, timedelta, float | None, float | None]] = []
    for sev in SEVERITIES:
        sev_map = check.mapping(spec.get(sev), at / "spec" / sev, ("quick", "slow"))
        for speed in ("quick", "slow"):
            w_at = at / "spec" / sev / speed
            w = check.mapping(sev_map.get(speed), w_at, ("errorBudgetPercent", "shortWindow", "longWindow"))
            pct = check.positive(w.get("errorBudgetPercent"), w_at / "errorBudgetPercent")
            long = check.duration(w.get("longWindow"), w_at / "longWindow")
            short = check.duration(w.get("shortWindow"), w_at / "shortWindow")
            tiers.append((sev, long, short, None, pct))
    return WindowTable(name or Path(at.file).stem, period, tuple(tiers), "factors", Path(at.file))


def _k(k8s: bool, snake: str) -> str:
    """Sloth's prometheus/v1 keys are snake_case; the Kubernetes CRD spells them in camelCase."""
    if not k8s:
        return snake
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def parse_slos(
    spec: object, at: At, tables: Mapping[str, WindowTable], *, k8s: bool
) -> tuple[list[SLO], list[SpecError]]:
    """The SLOs of one Sloth service (``k8s``: the CRD's ``spec``, camelCase keys); each refused on its own."""
    top = ("service", "labels", "slos", _k(k8s, "slo_plugins")) + (() if k8s else ("version",))
    d = check.mapping(spec, at, top)
    if _k(k8s, "slo_plugins") in d:
        raise _plugin_refusal(at / _k(k8s, "slo_plugins"), d[_k(k8s, "slo_plugins")], "SLO plugin")
    service = check.text(d.get("service"), at / "service", required=True)
    assert service is not None
    glabels = check.labels(d.get("labels"), at / "labels")
    raw = d.get("slos")
    if not isinstance(raw, list) or not raw:
        raise (at / "slos").fail(f"{check.short_repr(raw)} is not a non-empty list")
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


def _plugin_refusal(at: At, value: object, kind: str) -> SpecError:
    """A Sloth plugin, named by its id: Go code that Sloth loads, so its queries exist only inside Sloth."""
    entries = value.get("chain") if isinstance(value, Mapping) and "chain" in value else [value]
    ids = sorted({str(e.get("id")) for e in entries or [] if isinstance(e, Mapping) and e.get("id")})
    named = ", ".join(repr(i) for i in ids) or "(no id)"
    fix = (
        "write the SLI's queries out (sli.events or sli.raw)"
        if kind == "SLI plugin"
        else "remove the plugins; write what they add (labels, rules) into the spec"
    )
    return at.fail(
        f"Sloth {kind} {named} is Go code that runs inside Sloth and cannot run in hopscope; {fix}"
    )


def _sloth_slo(
    s: object, sa: At, service: str, glabels: dict[str, str], tables: Mapping[str, WindowTable], k8s: bool
) -> SLO:
    m = check.mapping(s, sa, ("name", "objective", "description", "labels", "sli", "alerting", "plugins"))
    if "plugins" in m:
        raise _plugin_refusal(sa / "plugins", m["plugins"], "SLO plugin")
    name = check.text(m.get("name"), sa / "name", required=True)
    obj = m.get("objective")
    if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not 0 < float(obj) < 100:
        raise (sa / "objective").fail(f"{check.short_repr(obj)} is not a percentage in (0, 100)")
    sli_at = sa / "sli"
    sli_m = check.mapping(m.get("sli"), sli_at, ("events", "raw", "plugin"))
    if "plugin" in sli_m:
        raise _plugin_refusal(sli_at / "plugin", sli_m["plugin"], "SLI plugin")
    if "events" in sli_m:
        ev_at = sli_at / "events"
        eq, tq = _k(k8s, "error_query"), _k(k8s, "total_query")
        ev = check.mapping(sli_m["events"], ev_at, (eq, tq))
        sli = SLI(
            "prometheus_ratio",
            error_query=check.text(ev.get(eq), ev_at / eq, required=True),
            total_query=check.text(ev.get(tq), ev_at / tq, required=True),
        )
    elif "raw" in sli_m:
        rq = _k(k8s, "error_ratio_query")
        raw = check.mapping(sli_m["raw"], sli_at / "raw", (rq,))
        sli = SLI(
            "prometheus_ratio", error_ratio_query=check.text(raw.get(rq), sli_at / "raw" / rq, required=True)
        )
    else:
        raise sli_at.fail("needs events or raw")
    al_at = sa / "alerting"
    pa_k, ta_k = _k(k8s, "page_alert"), _k(k8s, "ticket_alert")
    al = check.mapping(m.get("alerting"), al_at, ("name", "labels", "annotations", pa_k, ta_k))
    disabled = []
    sev_labels: dict[str, dict[str, str]] = {}
    sev_ann: dict[str, dict[str, str]] = {}
    for sev, key in (("page", pa_k), ("ticket", ta_k)):
        sub = check.mapping(al.get(key), al_at / key, ("disable", "labels", "annotations"))
        if sub.get("disable") is True:
            disabled.append(sev)
        sev_labels[sev] = check.labels(sub.get("labels"), al_at / key / "labels")
        sev_ann[sev] = check.labels(sub.get("annotations"), al_at / key / "annotations")
    window = Window("rolling", timedelta(days=30))
    labels = {**glabels, **check.labels(m.get("labels"), sa / "labels")}
    return SLO(
        name=f"{service}-{name}",
        description=check.text(m.get("description"), sa / "description") or "",
        objective=check.percent_ratio(obj),
        window=window,
        sli=sli,
        alerting=Alerting(
            policy=SLOTH_POLICY,
            tiers=tables[SLOTH_POLICY].resolve(window.nominal),
            disabled=tuple(disabled),
            name=check.text(al.get("name"), al_at / "name"),
            labels=check.labels(al.get("labels"), al_at / "labels"),
            annotations=check.labels(al.get("annotations"), al_at / "annotations"),
            page_labels=sev_labels["page"],
            ticket_labels=sev_labels["ticket"],
            page_annotations=sev_ann["page"],
            ticket_annotations=sev_ann["ticket"],
        ),
        service=service,
        labels=labels,
        source_file=Path(sa.file),
    )

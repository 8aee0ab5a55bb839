"""Prometheus recording and alerting rules for Prometheus-sourced SLOs, in Sloth's layout.

The rule names and labels follow Sloth (``slo:sli_error:ratio_rate<w>``,
``sloth_id``/``sloth_service``/``sloth_slo``/``sloth_window``) so that dashboards
and alert routes written for Sloth keep working; tests prove the alerts behave
like Sloth's own generated rules with ``promtool test rules``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import yaml

from hopscope.durations import format_duration
from hopscope.slo.model import SLO, AlertTier

PROMETHEUS_KINDS = ("prometheus_ratio", "prometheus_histogram")


def _ids(slo: SLO) -> dict[str, str]:
    service = slo.service or "hopscope"
    name = slo.name[len(service) + 1 :] if slo.name.startswith(service + "-") else slo.name
    return {"sloth_id": f"{service}-{name}", "sloth_service": service, "sloth_slo": name}


def _w(query: str, window: str) -> str:
    return query.replace("{{.window}}", window).replace("{{ .window }}", window)


def error_ratio_expr(slo: SLO, window: str) -> str:
    """PromQL for the SLI's error ratio over ``window``."""
    s = slo.sli
    if s.error_ratio_query:
        return f"({_w(s.error_ratio_query, window).strip()}\n)"
    if s.kind == "prometheus_histogram":
        sel = s.selector
        sep = "," if sel else ""
        total = f"sum(rate({s.metric}_count{{{sel}}}[{window}]))"
        good = f'sum(rate({s.metric}_bucket{{{sel}{sep}le="{s.le}"}}[{window}]))'
        return f"(\n  1 - (\n    ({good})\n    /\n    ({total})\n  )\n)"
    total = _w(s.total_query or "", window).strip()
    if s.error_query:
        return f"({_w(s.error_query, window).strip()})\n/\n({total})"
    return f"(\n  1 - (\n    ({_w(s.good_query or '', window).strip()})\n    /\n    ({total})\n  )\n)"


def _selector(ids: dict[str, str]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in ids.items()) + "}"


def _alert_expr(tiers: Sequence[AlertTier], sel: str, budget: float) -> str:
    parts = []
    for t in tiers:
        lw, sw = format_duration(t.long), format_duration(t.short)
        cond = [
            f"max(slo:sli_error:ratio_rate{w}{sel} > ({t.factor:g} * {budget!r})) without (sloth_window)"
            for w in (sw, lw)
        ]
        parts.append("(\n    " + "\n    and\n    ".join(cond) + "\n)")
    return "\n or\n".join(parts)


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", name) if p) + "BudgetBurn"


def rule_groups(slo: SLO) -> list[dict[str, Any]]:
    """Sloth-layout groups for one Prometheus-sourced SLO: SLI recordings, metadata, alerts."""
    if slo.sli.kind not in PROMETHEUS_KINDS:
        return []
    ids = _ids(slo)
    sel = _selector(ids)
    labels = dict(slo.labels)
    budget = 1 - slo.objective
    windows = [format_duration(w) for w in slo.alerting.windows]
    period = format_duration(slo.window.nominal)
    sli_rules: list[dict[str, Any]] = [
        {
            "record": f"slo:sli_error:ratio_rate{w}",
            "expr": error_ratio_expr(slo, w),
            "labels": {**labels, **ids, "sloth_window": w},
        }
        for w in windows
    ]
    shortest = windows[0] if windows else "5m"
    sli_rules.append(
        {
            "record": f"slo:sli_error:ratio_rate{period}",
            "expr": (
                f"sum_over_time(slo:sli_error:ratio_rate{shortest}{sel}[{period}])\n"
                f"/ ignoring (sloth_window)\n"
                f"count_over_time(slo:sli_error:ratio_rate{shortest}{sel}[{period}])"
            ),
            "labels": {**labels, **ids, "sloth_window": period},
        }
    )
    meta_labels = {**labels, **ids}
    meta = [
        {"record": "slo:objective:ratio", "expr": f"vector({slo.objective!r})", "labels": meta_labels},
        {"record": "slo:error_budget:ratio", "expr": f"vector(1-{slo.objective!r})", "labels": meta_labels},
        {
            "record": "slo:time_period:days",
            "expr": f"vector({slo.window.nominal.total_seconds() / 86400:g})",
            "labels": meta_labels,
        },
        {
            "record": "slo:current_burn_rate:ratio",
            "expr": f"slo:sli_error:ratio_rate{shortest}{sel}\n/ on(sloth_id, sloth_slo, sloth_service) group_left\nslo:error_budget:ratio{sel}",
            "labels": meta_labels,
        },
        {
            "record": "slo:period_burn_rate:ratio",
            "expr": f"slo:sli_error:ratio_rate{period}{sel}\n/ on(sloth_id, sloth_slo, sloth_service) group_left\nslo:error_budget:ratio{sel}",
            "labels": meta_labels,
        },
        {
            "record": "slo:period_error_budget_remaining:ratio",
            "expr": f"1 - slo:period_burn_rate:ratio{sel}",
            "labels": meta_labels,
        },
        {
            "record": "sloth_slo_info",
            "expr": "vector(1)",
            "labels": {
                **meta_labels,
                "sloth_mode": "hopscope",
                "sloth_objective": f"{slo.objective * 100:g}",
                "hopscope_policy": slo.alerting.policy,
            },
        },
    ]
    groups = [
        {"name": f"sloth-slo-sli-recordings-{ids['sloth_id']}", "rules": sli_rules},
        {"name": f"sloth-slo-meta-recordings-{ids['sloth_id']}", "rules": meta},
    ]
    a = slo.alerting
    alerts = []
    for sev, sev_labels, sev_ann in (
        ("page", a.page_labels, a.page_annotations),
        ("ticket", a.ticket_labels, a.ticket_annotations),
    ):
        tiers = [t for t in a.active_tiers if t.severity == sev]
        if not tiers:
            continue
        ann = {
            "summary": "{{$labels.sloth_service}} {{$labels.sloth_slo}} SLO error budget burn rate is over expected.",
            "title": f"({sev}) {{{{$labels.sloth_service}}}} {{{{$labels.sloth_slo}}}} SLO error budget burn rate is too fast.",
            **a.annotations,
            **sev_ann,
        }
        alerts.append(
            {
                "alert": a.name or _camel(slo.name),
                "expr": _alert_expr(tiers, sel, budget),
                "labels": {**a.labels, **sev_labels, "sloth_severity": sev},
                "annotations": ann,
            }
        )
    if alerts:
        groups.append({"name": f"sloth-slo-alerts-{ids['sloth_id']}", "rules": alerts})
    return groups


def _label_text(labels: Mapping[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(str(v))}"' for k, v in sorted(labels.items())) + "}" if labels else ""


def openmetrics_lines(
    series: Sequence[tuple[str, Mapping[str, str], int, np.ndarray]], *, chunk: int = 100_000
) -> Iterator[str]:
    """OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics`` (backfilling Prometheus).

    Each series is (metric name, labels, first minute since the epoch, events per minute): it becomes
    a counter sampled at every minute boundary from the first minute's start (value 0) to the last
    minute's end, so that ``increase(x[w])`` at a minute boundary counts exactly the events of the
    ``w`` minutes before it, as hopscope's windows do. Families are typed ``unknown`` (the names keep
    their ``_total``/``_bucket``/``_count`` suffixes as PromQL sees them). Yields chunks of lines.
    """
    by_name: dict[str, list[tuple[Mapping[str, str], int, np.ndarray]]] = {}
    for name, labels, t0, per_minute in series:
        if not re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", name):
            raise ValueError(f"{name!r} is not a Prometheus metric name")
        by_name.setdefault(name, []).append((labels, t0, per_minute))
    for name, members in by_name.items():
        yield f"# TYPE {name} unknown\n"
        for labels, t0, per_minute in members:
            prefix = name + _label_text(labels) + " "
            values = np.concatenate([[0.0], np.cumsum(np.asarray(per_minute, dtype=np.float64))])
            stamps = (np.arange(len(values), dtype=np.int64) + int(t0)) * 60
            for i in range(0, len(values), chunk):
                v, ts = values[i : i + chunk], stamps[i : i + chunk]
                yield "".join(f"{prefix}{x:.17g} {t}\n" for x, t in zip(v.tolist(), ts.tolist(), strict=True))
    yield "# EOF\n"


class _Literal(str):
    pass


def _literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def prometheus_rules(slos: Sequence[SLO]) -> dict[str, Any]:
    groups = [g for s in slos for g in rule_groups(s)]
    for g in groups:
        for r in g["rules"]:
            if "\n" in r["expr"]:
                r["expr"] = _Literal(r["expr"])
    return {"groups": groups}


def prometheus_rules_yaml(slos: Sequence[SLO]) -> str:
    """The rule file text; SLOs read from spans are skipped (hopscope evaluates those itself)."""
    skipped = [s.name for s in slos if s.sli.kind not in PROMETHEUS_KINDS]
    head = "# Generated by hopscope slo export --format prometheus (Sloth-compatible layout).\n"
    if skipped:
        head += f"# Not exported (span SLIs evaluated by hopscope): {', '.join(skipped)}\n"
    return head + yaml.dump(
        prometheus_rules(slos), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000
    )


def recorded_error_ratio_exprs(slo: SLO) -> dict[str, str]:
    """window -> PromQL of the exported ``slo:sli_error:ratio_rate<window>`` rules built from raw series.

    The long windows that average a shorter recording (``sum_over_time(slo:...)``) are left out:
    these are the expressions to evaluate directly against the same data.
    """
    out: dict[str, str] = {}
    for group in yaml.safe_load(prometheus_rules_yaml([slo]))["groups"]:
        for rule in group["rules"]:
            name = rule.get("record", "")
            if name.startswith("slo:sli_error:ratio_rate") and "sum_over_time(slo:" not in rule["expr"]:
                out[name.removeprefix("slo:sli_error:ratio_rate")] = rule["expr"]
    return out

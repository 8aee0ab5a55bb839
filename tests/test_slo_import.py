"""Import of peer specs: every Sloth/OpenSLO conformance file imports or is refused naming the field."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from hopscope.slo import load_slos
from hopscope.slo.cli import app
from hopscope.slo.loader import parse_documents

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(__file__).parents[2] / "shared" / "conformance"
FIXTURES = Path(__file__).parent / "fixtures" / "slo"


def conformance_dir() -> Path:
    if not CONFORMANCE.is_dir():
        message = f"{CONFORMANCE} absent (the shared Sloth/OpenSLO conformance specs)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    return CONFORMANCE


def spec_files() -> list[Path]:
    if not CONFORMANCE.is_dir():
        return []
    return sorted(
        f for f in CONFORMANCE.rglob("*.y*ml") if "_gen" not in f.parts and "windows" not in f.parts
    )


# What each conformance file gives: imported SLO names, or the fields named in its refusals.
EXPECTED: dict[str, list[str]] = {
    "sloth/examples/getting-started.yml": ["myservice-requests-availability"],
    "sloth/examples/k8s-getting-started.yml": ["myservice-requests-availability"],
    "sloth/examples/multifile.yml": ["myservice-requests-availability", "myservice2-requests-availability"],
    "sloth/examples/k8s-multifile.yml": [
        "myservice-requests-availability",
        "myservice2-requests-availability",
    ],
    "sloth/examples/home-wifi.yml": [
        "home-wifi-good-wifi-client-satisfaction",
        "home-wifi-risk-wifi-client-satisfaction",
    ],
    "sloth/examples/k8s-home-wifi.yml": [
        "home-wifi-good-wifi-client-satisfaction",
        "home-wifi-risk-wifi-client-satisfaction",
    ],
    "sloth/examples/raw-home-wifi.yml": ["home-wifi-wifi-client-satisfaction"],
    "sloth/examples/kubernetes-apiserver.yml": [
        "k8s-apiserver-requests-availability",
        "k8s-apiserver-requests-latency",
    ],
    "sloth/examples/no-alerts.yml": ["myapp-http-availability"],
    "sloth/examples/openslo-getting-started.yml": ["my-service-sloth-slo-my-service-0"],
    "sloth/examples/openslo-kubernetes-apiserver.yml": [
        "k8s-apiserver-requests-availability-openslo-0",
        "k8s-apiserver-requests-latency-openslo-0",
        "k8s-apiserver-requests-latency-openslo-1",
    ],
    "sloth/examples/plugin-getting-started.yml": ["refused slos[0].sli.plugin"],
    "sloth/examples/plugin-k8s-getting-started.yml": ["refused spec.slos[0].sli.plugin"],
    "sloth/examples/slo-plugin-getting-started.yml": ["refused slo_plugins"],
    "sloth/examples/slo-plugin-k8s-getting-started.yml": ["refused spec.sloPlugins"],
    "sloth/examples/contrib-slo-plugins.yml": ["refused slos[0].plugins", "refused slos[1].plugins"],
    "sloth/examples/contrib-denominator-corrected.yaml": ["refused spec.sloPlugins"],
    "sloth/examples/victoria-metrics.yml": ["refused slo_plugins"],
    "openslo/examples/budgeting-method/occurences-slo.yaml": ["refused spec.indicator.spec.thresholdMetric"],
    "openslo/examples/budgeting-method/ratio-timeslices.yaml": [
        "refused spec.indicator.spec.ratioMetric.total.metricSource.type"
    ],
    "openslo/examples/budgeting-method/timeslices-slo.yaml": ["refused spec.timeWindow[0].duration"],
    "openslo/examples/treat-low-traffic-as-equally-important/timeslices-slo.yaml": [
        "refused spec.indicator.spec.ratioMetric.total.metricSource.type"
    ],
}


def test_every_conformance_spec_imports_or_is_refused_naming_the_field() -> None:
    root = conformance_dir()
    files = spec_files()
    assert files, "no specs found"
    seen = {}
    for f in files:
        rel = f.relative_to(root).as_posix()
        slos, errors = load_slos(f)
        got = [s.name for s in slos]
        for e in errors:
            m = re.match(rf"^{re.escape(str(f))}(?: \(document \d+\))?: (\S+): (.+)$", str(e))
            assert m, f"refusal without a field path: {e}"
            got.append(f"refused {m.group(1)}")
        seen[rel] = got
    assert seen == EXPECTED


def test_conformance_summary_counts() -> None:
    conformance_dir()
    imported = sum(1 for v in EXPECTED.values() if not v[0].startswith("refused"))
    assert (imported, len(EXPECTED) - imported) == (11, 11)


@pytest.mark.parametrize(
    ("rel", "name", "objective", "kind", "queries"),
    [
        (
            "sloth/examples/getting-started.yml",
            "myservice-requests-availability",
            0.999,
            "prometheus_ratio",
            (
                'sum(rate(http_request_duration_seconds_count{job="myservice",code=~"(5..|429)"}[{{.window}}]))',
                None,
            ),
        ),
        (
            "sloth/examples/raw-home-wifi.yml",
            "home-wifi-wifi-client-satisfaction",
            0.95,
            "prometheus_ratio",
            (
                None,
                "1 - (\n  sum(sum_over_time(unifipoller_client_satisfaction_ratio[{{.window}}]))\n  /\n  sum(count_over_time(unifipoller_client_satisfaction_ratio[{{.window}}]))\n)\n",
            ),
        ),
    ],
)
def test_sloth_fields_map_to_hopscope(
    rel: str, name: str, objective: float, kind: str, queries: tuple
) -> None:
    root = conformance_dir()
    slos, _ = load_slos(root / rel)
    s = next(x for x in slos if x.name == name)
    assert s.objective == pytest.approx(objective) and s.sli.kind == kind
    assert s.objective == round(
        s.objective, 12
    )  # 99.9% is 0.999, not 0.9990000000000001 (exported as written)
    assert (s.sli.error_query, s.sli.error_ratio_query) == queries
    assert s.window.length == timedelta(days=30) and s.alerting.policy == "sloth"


def test_sloth_disabled_alerts_disable_both_tiers() -> None:
    slos, _ = load_slos(conformance_dir() / "sloth/examples/no-alerts.yml")
    assert slos[0].alerting.active_tiers == ()


def test_sloth_alert_labels_and_annotations_are_kept() -> None:
    slos, _ = load_slos(conformance_dir() / "sloth/examples/getting-started.yml")
    a = slos[0].alerting
    assert a.name == "MyServiceHighErrorRate"
    assert a.page_labels == {"severity": "pageteam", "routing_key": "myteam"}
    assert a.ticket_labels["slack_channel"] == "#alerts-myteam"
    assert slos[0].labels == {"owner": "myteam", "repo": "myorg/myservice", "tier": "2"}


def test_openslo_v1_refs_calendar_and_timeslices_import() -> None:
    slos, errors = load_slos(FIXTURES / "openslo" / "timeslices-with-refs.yaml")
    assert errors == []
    (s,) = slos
    assert (s.window.kind, s.window.unit, s.window.tz) == ("calendar", "month", "America/New_York")
    assert (s.budgeting.method, s.budgeting.slice, s.budgeting.slice_objective) == (
        "timeslices",
        timedelta(minutes=1),
        0.95,
    )
    assert s.sli.good_query.startswith("sum(rate(http_requests_total") and s.sli.total_query
    (tier,) = s.alerting.tiers
    assert (tier.severity, tier.long, tier.short, tier.factor) == (
        "page",
        timedelta(hours=1),
        timedelta(minutes=5),
        14.4,
    )
    assert "startTime" in s.notes[0]


def test_openslo_v1_ratio_timeslices_bad_query_and_target_percent() -> None:
    slos, errors = load_slos(FIXTURES / "openslo" / "ratio-timeslices.yaml")
    assert errors == []
    rt, occ = slos
    assert (rt.budgeting.method, rt.budgeting.slice) == ("ratio_timeslices", timedelta(minutes=5))
    assert rt.sli.error_query and rt.window.length == timedelta(weeks=2)
    assert occ.objective == pytest.approx(0.995) and occ.budgeting.method == "occurrences"


def test_import_round_trips_through_hopscope_yaml(tmp_path: Path) -> None:
    root = conformance_dir()
    runner = CliRunner()
    out = tmp_path / "imported.yaml"
    r = runner.invoke(
        app,
        [
            "import",
            str(root / "sloth/examples/kubernetes-apiserver.yml"),
            "--out",
            str(out),
            "--rules",
            str(ROOT / "slo_rules"),
        ],
    )
    assert r.exit_code == 0, r.output
    docs = list(yaml.safe_load_all(out.read_text()))
    assert {d["apiVersion"] for d in docs} == {"hopscope/v1"}
    again, errors = parse_documents(docs, str(out))
    assert errors == []
    original, _ = load_slos(root / "sloth/examples/kubernetes-apiserver.yml")

    def strip(s):  # type: ignore[no-untyped-def]
        return (s.name, s.objective, s.window, s.sli, s.alerting.tiers, s.alerting.disabled, dict(s.labels))

    assert [strip(s) for s in again] == [strip(s) for s in original]


def test_import_of_an_unsupported_file_fails_with_the_field(tmp_path: Path) -> None:
    root = conformance_dir()
    r = CliRunner().invoke(app, ["import", str(root / "sloth/examples/plugin-getting-started.yml")])
    assert r.exit_code != 0
    assert "slos[0].sli.plugin: Sloth SLI plugin 'getting_started_availability'" in r.output


@pytest.mark.parametrize(
    ("rel", "plugins"),
    [
        ("sloth/examples/plugin-getting-started.yml", ["SLI plugin 'getting_started_availability'"]),
        ("sloth/examples/slo-plugin-getting-started.yml", ["SLO plugin 'sloth.dev/core/debug/v1'"]),
        (
            "sloth/examples/contrib-slo-plugins.yml",
            [
                "SLO plugin 'sloth.dev/contrib/info_labels/v1'",
                "SLO plugin 'sloth.dev/contrib/rule_intervals/v1'",
            ],
        ),
    ],
)
def test_slo_import_of_sloth_plugins_names_each_plugin_and_says_go_plugins_cannot_run_here(
    rel: str, plugins: list[str]
) -> None:
    # It said "nothing to import (2 refused)" and, per SLO, only "plugins are not supported".
    result = CliRunner().invoke(app, ["import", str(conformance_dir() / rel)])
    assert result.exit_code != 0
    refusals = [line for line in result.stderr.splitlines() if line.startswith("refused:")]
    assert len(refusals) == len(plugins), result.stderr
    for line, plugin in zip(refusals, plugins, strict=True):
        assert f"Sloth {plugin} is Go code that runs inside Sloth and cannot run in hopscope" in line

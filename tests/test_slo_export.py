"""Prometheus rules export, proved against Sloth's generated rules with promtool.

For every Sloth example that imports, the exported rules and Sloth's ``_gen`` rules
are driven by the same input series in ``promtool test rules``; the expected alerts
at each time come from hopscope's own burn-rate math on the same traffic, so a pass
means: Sloth's rules, hopscope's rules and hopscope's evaluation agree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from hopscope.slo import load_slos, status_from_minutes
from hopscope.slo.cli import app
from hopscope.slo.export import _ids as sloth_ids
from hopscope.slo.export import prometheus_rules_yaml

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(__file__).parents[2] / "shared" / "conformance"
EXAMPLES = CONFORMANCE / "sloth" / "examples"
PROMTOOL = "/usr/bin/promtool"
RATE = 600  # requests per minute
MINUTES = 9 * 60
# Instants away from any alert edge: the test checks that hopscope's answer is the same one
# minute before and after each (a knife-edge instant would make the comparison depend on how
# Prometheus and hopscope place a window's first sample). promtool is told to evaluate the
# recording groups before the alert group (group_eval_order), so an alert reads the SLI
# recordings of the same instant; without it the order is not fixed and a one-minute lag comes and goes.
EVAL_TIMES = [
    timedelta(hours=2, minutes=30),
    timedelta(hours=3, minutes=30),
    timedelta(hours=4, minutes=25),
    timedelta(hours=5, minutes=40),
    timedelta(hours=8),
]
# Alerts here have no `for:` and the alert expressions read only the windowed SLI recordings, so
# the rules need evaluating only at (a grid holding) the instants above: 5m steps instead of 1m
# make promtool five times quicker. Sloth's subqueries (`[1h:]`, home-wifi) then sample the gauge
# every 5m; the instants are far enough from every edge for that not to matter.
EVAL_INTERVAL = "5m"


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(path: Path, what: str) -> None:
    if not path.exists():
        if _ci():
            pytest.fail(f"{path} absent ({what})")
        pytest.skip(f"{path} absent ({what})")


def error_ratio(minute: int) -> float:
    """0.05% errors, 50% from 3h to 5h."""
    return 0.5 if 180 <= minute < 300 else 0.0005


def satisfaction_b(minute: int) -> float:
    return 0.3 if 180 <= minute < 300 else 0.97


def _counter(per_minute: list[float]) -> str:
    vals = np.concatenate([[0.0], np.cumsum(per_minute)])
    return " ".join(f"{v:.4f}".rstrip("0").rstrip(".") for v in vals)


def input_series() -> list[dict[str, str]]:
    r = [error_ratio(m) for m in range(MINUTES)]
    ok = [RATE * (1 - x) for x in r]
    bad = [RATE * x for x in r]
    total = [float(RATE)] * MINUTES
    b = " ".join(str(satisfaction_b(m)) for m in range(MINUTES + 1))
    return [
        {"series": 'http_request_duration_seconds_count{job="myservice",code="200"}', "values": _counter(ok)},
        {
            "series": 'http_request_duration_seconds_count{job="myservice",code="500"}',
            "values": _counter(bad),
        },
        {"series": 'http_request_duration_seconds_count{job="myapp",code="200"}', "values": _counter(ok)},
        {"series": 'http_request_duration_seconds_count{job="myapp",code="500"}', "values": _counter(bad)},
        {"series": 'apiserver_request_total{code="200"}', "values": _counter(ok)},
        {"series": 'apiserver_request_total{code="500"}', "values": _counter(bad)},
        {"series": 'apiserver_request_duration_seconds_count{verb="GET"}', "values": _counter(total)},
        {"series": 'apiserver_request_duration_seconds_bucket{verb="GET",le="0.4"}', "values": _counter(ok)},
        {"series": 'apiserver_request_duration_seconds_bucket{verb="GET",le="5"}', "values": _counter(ok)},
        {"series": 'unifipoller_client_satisfaction_ratio{client="a"}', "values": f"0.97x{MINUTES}"},
        {"series": 'unifipoller_client_satisfaction_ratio{client="b"}', "values": b},
    ]


def minute_frame(sloth_id: str) -> pd.DataFrame:
    """The same traffic as the input series, as hopscope's minute frame for one SLO."""
    minutes = pd.date_range(datetime(1970, 1, 1), periods=MINUTES, freq="min")
    if "wifi" in sloth_id:
        b = np.array(
            [satisfaction_b(m + 1) for m in range(MINUTES)]
        )  # gauges: the sample at the minute's end
        if sloth_id.endswith("good-wifi-client-satisfaction"):
            good = 1 + (b >= 0.75)
        elif sloth_id.endswith("risk-wifi-client-satisfaction"):
            good = 1 + (b >= 0.5)
        else:
            good = 0.97 + b
        return pd.DataFrame({"minute": minutes, "good": good.astype(float), "total": 2.0})
    r = np.array([error_ratio(m) for m in range(MINUTES)])
    return pd.DataFrame({"minute": minutes, "good": RATE * (1 - r), "total": float(RATE)})


def _groups(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    groups = []
    for d in docs:
        groups += d.get("spec", d)["groups"]  # Kubernetes PrometheusRule or a plain rule file
    return groups


def _expected_alerts(groups: list[dict], firing: dict[tuple[str, str], bool]) -> dict[str, list[dict]]:
    """Per alert name, the alerts a rule file must raise: its labels and expanded annotations."""
    sli_labels: dict[str, dict[str, str]] = {}
    for g in groups:
        for r in g["rules"]:
            if r.get("record", "").startswith("slo:sli_error:ratio_rate"):
                lab = {k: str(v) for k, v in r.get("labels", {}).items() if k != "sloth_window"}
                sli_labels[lab["sloth_id"]] = lab
    out: dict[str, list[dict]] = {}
    for g in groups:
        for r in g["rules"]:
            if "alert" not in r:
                continue
            sid = re.search(r'sloth_id="([^"]+)"', r["expr"]).group(1)
            sev = r["labels"]["sloth_severity"]
            out.setdefault(r["alert"], [])
            if not firing.get((sid, sev)):
                continue
            labels = {**sli_labels[sid], **{k: str(v) for k, v in r["labels"].items()}}
            ann = {
                k: re.sub(
                    r"\{\{\s*\$labels\.(\w+)\s*\}\}",
                    lambda m, labels=labels: labels.get(m.group(1), ""),
                    str(v),
                )
                for k, v in r.get("annotations", {}).items()
            }
            out[r["alert"]].append({"exp_labels": labels, "exp_annotations": ann})
    return out


def _eval_order(rules: Path) -> list[str]:
    """Recording groups first, alert groups last, each kind in file order."""
    groups = _groups(rules)
    alerting = [g["name"] for g in groups if any("alert" in r for r in g["rules"])]
    return [g["name"] for g in groups if g["name"] not in alerting] + alerting


def _promtool_test(rules: Path, tests: list[dict], tmp: Path) -> subprocess.CompletedProcess:
    test_file = tmp / f"{rules.stem}.test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules)],
                "evaluation_interval": EVAL_INTERVAL,
                "group_eval_order": _eval_order(rules),
                "tests": [{"interval": "1m", "input_series": input_series(), "alert_rule_test": tests}],
            },
            sort_keys=False,
            width=100000,
        )
    )
    return subprocess.run(
        [PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )


# The Kubernetes forms give the same rules as their prometheus/v1 twins: marked slow to spare CI.
SLOTH_EXAMPLES = [
    "getting-started",
    pytest.param("k8s-getting-started", marks=pytest.mark.slow),
    "multifile",
    pytest.param("k8s-multifile", marks=pytest.mark.slow),
    "kubernetes-apiserver",
    "no-alerts",
    "openslo-getting-started",
    "openslo-kubernetes-apiserver",
    "home-wifi",
    pytest.param("k8s-home-wifi", marks=pytest.mark.slow),
    "raw-home-wifi",
]


@pytest.mark.parametrize("example", SLOTH_EXAMPLES)
def test_exported_rules_raise_the_same_alerts_as_sloth_at_the_same_times(
    example: str, tmp_path: Path
) -> None:
    _need(EXAMPLES, "Sloth conformance examples")
    _need(Path(PROMTOOL), "Debian package prometheus")
    slos, errors = load_slos(EXAMPLES / f"{example}.yml")
    assert errors == [] and slos
    ours = tmp_path / "hopscope.rules.yml"
    ours.write_text(prometheus_rules_yaml(slos))
    check = subprocess.run(
        [PROMTOOL, "check", "rules", str(ours)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    theirs = tmp_path / "sloth.rules.yml"
    theirs.write_text(
        yaml.safe_dump(
            {"groups": _groups(EXAMPLES / "_gen" / f"{example}.yml")}, sort_keys=False, width=100000
        )
    )
    their_ids = {
        re.search(r'sloth_id="([^"]+)"', r["expr"]).group(1)
        for g in _groups(theirs)
        for r in g["rules"]
        if "alert" in r
    }
    # Prometheus rules have no warm-up guard (min_coverage): compare the burn-rate math without it.
    by_id = {sloth_ids(s)["sloth_id"]: replace(s, alerting=replace(s.alerting, min_coverage=0)) for s in slos}
    ours_tests, theirs_tests = [], []
    fired_any = False
    for at in EVAL_TIMES:
        firing = {}
        for sid, s in by_id.items():
            around = [
                status_from_minutes(
                    s, minute_frame(sid), datetime(1970, 1, 1) + at + timedelta(minutes=d)
                ).firing
                for d in (-1, 0, 1)
            ]
            assert len(set(around)) == 1, f"{sid}: {at} is on an alert edge: {around}; pick another instant"
            for sev in ("page", "ticket"):
                firing[(sid, sev)] = any(f.startswith(sev) for f in around[1])
                fired_any |= firing[(sid, sev)]
        for rules, tests, only in ((ours, ours_tests, None), (theirs, theirs_tests, their_ids)):
            fl = {k: v for k, v in firing.items() if only is None or k[0] in only}
            for name, alerts in _expected_alerts(_groups(rules), fl).items():
                tests.append(
                    {
                        "eval_time": f"{int(at.total_seconds() // 60)}m",
                        "alertname": name,
                        "exp_alerts": alerts,
                    }
                )
    for rules, tests in ((ours, ours_tests), (theirs, theirs_tests)):
        if not tests:
            continue  # no alert rules at all (no-alerts.yml): nothing can fire in either file
        r = _promtool_test(rules, tests, tmp_path)
        assert r.returncode == 0, f"{rules.name}:\n{r.stdout}\n{r.stderr}"
    if example != "no-alerts":
        assert fired_any, "the scenario must make some alert fire"


def test_cli_export_writes_rules_for_prometheus_slos_only(tmp_path: Path) -> None:
    _need(EXAMPLES, "Sloth conformance examples")
    out = tmp_path / "rules.yml"
    r = CliRunner().invoke(
        app,
        [
            "export",
            "--format",
            "prometheus",
            "--rules",
            str(EXAMPLES / "getting-started.yml"),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    groups = yaml.safe_load(out.read_text())["groups"]
    assert [g["name"] for g in groups] == [
        "sloth-slo-sli-recordings-myservice-requests-availability",
        "sloth-slo-meta-recordings-myservice-requests-availability",
        "sloth-slo-alerts-myservice-requests-availability",
    ]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in (EXAMPLES / "getting-started.yml", ROOT / "slo_rules" / "recommend.yaml"):
        (mixed / f.name).write_text(f.read_text())
    shipped = CliRunner().invoke(app, ["export", "--rules", str(mixed)])
    assert shipped.exit_code == 0, shipped.output
    assert (
        "Not exported (span SLIs evaluated by hopscope): recommend-latency, recommend-availability"
        in shipped.output
    )


def test_cli_export_refuses_unknown_formats() -> None:
    r = CliRunner().invoke(app, ["export", "--format", "nagios", "--rules", str(ROOT / "slo_rules")])
    assert r.exit_code != 0 and "'nagios' is not supported" in str(r.exception)


def test_cli_export_refuses_when_a_spec_is_refused_or_nothing_is_left(tmp_path: Path) -> None:
    """A CI job must not ship a rule file that silently lacks an SLO."""
    shutil.copytree(ROOT / "slo_rules", tmp_path / "rules")
    (tmp_path / "rules" / "broken.yaml").write_text(
        "apiVersion: hopscope/v1\nkind: SLO\nmetadata: {name: broken}\nspec: {objective: 99.9}\n"
    )
    r = CliRunner().invoke(app, ["export", "--rules", str(tmp_path / "rules")])
    assert r.exit_code != 0 and "spec error" in str(r.exception)
    r = CliRunner().invoke(app, ["export", "--rules", str(ROOT / "slo_rules")])  # the demo's: all span SLIs
    assert r.exit_code != 0 and "no Prometheus-sourced SLO to export" in str(r.exception)

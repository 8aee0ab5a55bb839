"""Backtesting alert policies: precision, recall, detection and reset time against labelled incidents."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hopscope.errors import SpecError
from hopscope.slo import SLI, SLO, Window, default_window_tables, load_slos, with_policy
from hopscope.slo.backtest import Incident, backtest_frames, parse_truth, score, variants
from hopscope.slo.cli import app

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 1, 1)


def _slo(name: str = "a") -> SLO:
    base = SLO(name, "", 0.999, Window("rolling", timedelta(days=30)), SLI("availability", service="x"))
    return with_policy(base, default_window_tables()["sre-workbook"])


def _frame(n: int, bad: dict[tuple[int, int], float]) -> pd.DataFrame:
    total = np.full(n, 1000.0)
    good = total.copy()
    for (a, b), r in bad.items():
        good[a:b] = 1000 * (1 - r)
    return pd.DataFrame({"minute": pd.date_range(T0, periods=n, freq="min"), "good": good, "total": total})


def test_backtest_scores_precision_recall_detection_and_reset() -> None:
    n = 5 * 1440
    # two real incidents (minutes 1000-1060, 4000-4030) and one unlabelled burst (6000-6020)
    df = _frame(n, {(1000, 1060): 0.5, (4000, 4030): 0.5, (6000, 6020): 0.5})
    incidents = [
        Incident("one", T0 + timedelta(minutes=1000), T0 + timedelta(minutes=1060)),
        Incident("two", T0 + timedelta(minutes=4000), T0 + timedelta(minutes=4030)),
        Incident("missed", T0 + timedelta(minutes=7000), T0 + timedelta(minutes=7010)),
    ]
    slo = _slo()
    ticketless = with_policy(slo, default_window_tables()["sre-workbook"])

    ticketless = replace(ticketless, alerting=replace(ticketless.alerting, disabled=("ticket",)))
    (res, all_row) = backtest_frames({"a": df}, {"pages only": [ticketless]}, incidents)
    assert (res.alerts, res.true_positives, res.false_positives) == (3, 2, 1)
    assert (res.detected, res.missed) == (2, 1)
    assert res.precision == pytest.approx(2 / 3) and res.recall == pytest.approx(2 / 3)
    # 50% errors: the 5m window passes 14.4x at once; the 1h window needs 14.4 x 0.001 x 60 / 0.5 = 1.7 min
    assert res.detection_times == (timedelta(minutes=1), timedelta(minutes=1))
    # the (1h, 5m) pair resets 5 minutes after the end, but the (6h, 30m) pair holds while the 30m
    # window keeps (30 - k) of 30 minutes at 50%: (30 - k) / 60 > 6 x 0.001 until k = 29
    assert res.reset_times == (timedelta(minutes=29), timedelta(minutes=29))
    assert all_row.slo == "all" and all_row.recall == res.recall


def test_score_with_no_alerts_has_no_precision_and_zero_recall() -> None:
    r = score("v", "a", [], [Incident("x", T0, T0 + timedelta(hours=1))])
    assert r.precision is None and r.recall == 0.0 and r.detection_median is None


def test_what_if_variants_change_objective_policy_and_guard() -> None:
    slos, _ = load_slos(ROOT / "slo_rules")
    sets = variants(slos, ROOT / "slo_rules", ["sloth"], [0.95], [5000])
    assert list(sets) == ["as written", "policy=sloth", "objective=0.95", "min_events=5000"]
    assert sets["policy=sloth"][0].alerting.policy == "sloth"
    assert {s.objective for s in sets["objective=0.95"]} == {0.95}
    assert {s.alerting.min_events for s in sets["min_events=5000"]} == {5000}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"events": "x"}, "is not a list"),
        ([{"start": "2025-01-01T00:00"}], "incidents[0]: needs start and end"),
        (
            [{"start": "2025-01-01T01:00", "end": "2025-01-01T00:00"}],
            "incidents[0].end: '2025-01-01T00:00' is not after start",
        ),
        (
            [{"start": "yesterday", "end": "2025-01-01T00:00"}],
            "incidents[0].start: 'yesterday' is not an ISO time",
        ),
    ],
)
def test_bad_ground_truth_is_refused_clearly(doc: object, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_truth(doc, "truth.json")


def test_scenario_events_that_must_not_breach_are_not_incidents() -> None:
    doc = {
        "events": [
            {
                "name": "high-traffic",
                "start": "2025-01-02T08:00:00",
                "end": "2025-01-02T10:00:00",
                "expect_breach": False,
            },
            {
                "name": "gpu",
                "start": "2025-01-03T14:00:00",
                "end": "2025-01-03T15:30:00",
                "expect_breach": True,
            },
        ]
    }
    assert [i.name for i in parse_truth(doc, "scenario.json")] == ["gpu"]


@pytest.mark.slow
def test_demo_store_backtest_and_status_show_the_incidents(demo_store: Path) -> None:
    truth = json.loads((demo_store / "scenario.json").read_text())
    expected = [e for e in truth["events"] if e["expect_breach"]]
    runner = CliRunner()
    r = runner.invoke(
        app, ["backtest", "--store", str(demo_store), "--rules", str(ROOT / "slo_rules"), "--json"]
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    overall = next(x for x in rows if x["variant"] == "as written" and x["slo"] == "all")
    assert overall["incidents"] == len(expected)
    assert overall["recall"] == 1.0, rows
    # each SLO is scored against the events the scenario says it must breach, and no others
    for slo in ("recommend-latency", "model-server-latency", "recommend-availability"):
        row = next(x for x in rows if x["variant"] == "as written" and x["slo"] == slo)
        own = [e for e in expected if slo in e["slos"]]
        assert (row["incidents"], row["missed"], row["false_positives"]) == (len(own), 0, 0), row
    s = runner.invoke(
        app, ["status", "--store", str(demo_store), "--rules", str(ROOT / "slo_rules"), "--json"]
    )
    assert s.exit_code == 0, s.output
    consumed = {x["slo"]: x["budget_consumed"] for x in json.loads(s.stdout)}
    assert consumed["recommend-latency"] > 0.1, consumed

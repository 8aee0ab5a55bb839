"""SLO reports (hopscope.report): compliance, budget, incidents with causes; HTML/CSV/Markdown; the CLI function."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hopscope import report
from hopscope.errors import ConfigError, NotFoundError
from hopscope.markdown import literal
from hopscope.query import slos
from hopscope.slo import evaluate_many
from hopscope.store import Store

RULES = str(Path(__file__).resolve().parents[1] / "slo_rules")
EVENTS = ("flash-sale", "gpu-thermal-throttling", "feature-store-memory-pressure")


def _truth(store: Path) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in json.loads((store / "scenario.json").read_text())["events"]}


@pytest.fixture(scope="module")
def store(demo_store: Path) -> Iterator[Store]:
    st = Store(demo_store, create=False)
    yield st
    st.close()


@pytest.fixture(scope="module")
def rep(store: Store) -> report.SloReport:
    return report.build_report(store, rules=RULES, slo="recommend-latency", window="7d", causes=False)


def test_report_counts_the_weeks_three_incidents_and_an_overspent_budget(rep: report.SloReport) -> None:
    assert len(rep.incidents) == 3
    assert rep.sli is not None and rep.sli < rep.objective and rep.compliant is False
    assert rep.budget_consumed is not None and rep.budget_consumed > 1.0
    assert rep.total > 0 and rep.good / rep.total == pytest.approx(rep.sli)
    assert not rep.burndown.empty and len(rep.burndown) <= 2000
    assert {h["hop"] for h in rep.hop_budgets} >= {
        "api-gateway->model-server",
        "model-server",
        "feature-store",
    }


@pytest.mark.parametrize("slo", ["recommend-latency", "model-server-latency"])
def test_the_reports_budget_is_the_slo_status_budget_of_the_same_28_days(store: Store, slo: str) -> None:
    """The report's budget over the demo's four weeks (its burn-down's last point) is the status's, and
    the incidents' shares add up to no more than it."""
    rep28 = report.build_report(store, rules=RULES, slo=slo, window="28d", causes=False)
    (status,) = evaluate_many(store, [slos.get_slo(RULES, slo)], now=rep28.end, breaches=False)
    assert rep28.start == status.period_start and rep28.end == status.period_end
    assert rep28.sli == pytest.approx(status.sli)
    assert rep28.budget_consumed == pytest.approx(status.budget_consumed)
    assert rep28.burndown["budget_remaining"].iloc[-1] == pytest.approx(1 - status.budget_consumed)
    # each incident's share is of the same budget: together they spent at most all that was spent
    shares = [i["budget_consumed"] for i in rep28.incidents]
    assert shares and all(x > 0 for x in shares)
    assert sum(shares) <= rep28.budget_consumed + 1e-9


def test_csv_has_one_row_per_incident_with_the_slo_summary(rep: report.SloReport) -> None:
    rows = list(csv.DictReader(io.StringIO(report.to_csv(rep))))
    assert len(rows) == 3
    assert {r["slo"] for r in rows} == {"recommend-latency"}
    assert all(float(r["sli"]) == pytest.approx(rep.sli, abs=1e-6) for r in rows)
    assert [int(r["incident"]) for r in rows] == sorted(int(r["incident"]) for r in rows)


def test_cli_writes_markdown_naming_each_incidents_cause(demo_store: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    report.report(
        slo="recommend-latency", window="7d", format="md", output=out, store=demo_store, rules=Path(RULES)
    )
    text = out.read_text()
    assert text.startswith(f"# SLO report: {literal('recommend-latency')}")  # telemetry text is escaped
    rows = [
        line for line in text.splitlines() if line.startswith("| ") and " page " in line or " ticket " in line
    ]
    assert len(rows) == 3
    assert report.INCIDENT_SHARE_NOTE in text  # whose budget the incidents' shares are of
    assert "| Data | events from " in text
    for name in EVENTS:
        t = _truth(demo_store)[name]
        assert literal(f"{t['hop']} ({t['dimension']})") in text, name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"window": "1y"}, ConfigError, "--window"),
        ({"format": "pdf"}, ConfigError, "--format"),
        ({"slo": "no-such-slo"}, NotFoundError, "no SLO named"),
        ({"store": Path("/nonexistent/store")}, NotFoundError, "no store here"),
    ],
)
def test_cli_refuses_bad_input_with_a_clear_error_and_writes_nothing(
    demo_store: Path, tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    out = tmp_path / "r.html"
    args = {
        "slo": "recommend-latency",
        "window": "7d",
        "format": "html",
        "output": out,
        "store": demo_store,
        "rules": Path(RULES),
        **kwargs,
    }
    with pytest.raises(error, match=match):
        report.report(**args)
    assert not out.exists()


def test_calendar_month_starts_on_the_first() -> None:
    assert report.report_span(datetime(2026, 11, 20, 12, 0), "month") == (
        datetime(2026, 11, 1),
        datetime(2026, 11, 20, 12, 0),
    )


@pytest.mark.browser
def test_exported_html_is_self_contained_and_draws_its_charts_in_chromium(
    rep: report.SloReport,
    tmp_path: Path,
    browser: Any,
) -> None:
    path = tmp_path / "report.html"
    path.write_text(report.to_html(rep), encoding="utf-8")
    text = path.read_text()
    assert (
        "<script src=" not in text and "plotly" in text
    )  # plotly.js inline; the browser below fetches nothing
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.as_uri())
    page.wait_for_function(
        "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3", timeout=30_000
    )
    titles = page.eval_on_selector_all(".js-plotly-plot .gtitle", "els => els.map(e => e.textContent)")
    shots = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "report_html.png"), full_page=True)
    page.close()
    assert {"Error budget burn-down", "Budget consumed per incident", "Hop sub-budgets"} <= set(titles)
    assert errors == [] and requests == []


def test_a_report_longer_than_the_data_says_how_much_of_its_window_has_data(demo_store: Path) -> None:
    truth = json.loads((demo_store / "scenario.json").read_text())
    rep = report.build_report(
        Store(demo_store, create=False), rules=str(RULES), slo="recommend-latency", window="90d", causes=False
    )
    days = (datetime.fromisoformat(truth["end"]) - datetime.fromisoformat(truth["history_start"])).days
    assert days == 28
    assert rep.data_from == datetime.fromisoformat(truth["history_start"])
    assert f"{days:.1f} of the window's 90 days have data" in rep.coverage
    assert ("Data", rep.coverage) in report.summary_rows(rep)

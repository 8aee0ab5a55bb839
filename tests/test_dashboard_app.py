"""The dashboard's pages under Streamlit's AppTest, against a real store: what a person would see."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from support.demo import RULES, breach_for, truth
from support.handbuilt import EVIL, TRACE, build_store

from hopscope import charts
from hopscope.charts import DIMENSION_COLORS, HOP_LINE_COLOR
from hopscope.health import DaemonStatus, write_status
from hopscope.query import slos, windows
from hopscope.store import Store

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")
SLO_NAMES = ("recommend-latency", "recommend-availability", "model-server-latency")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def use(store: Path) -> None:
        monkeypatch.setenv("HOPSCOPE_STORE", str(store))
        monkeypatch.setenv("HOPSCOPE_SLO_RULES", RULES)

    yield use


def run_page(page: str | None, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_titles(at: AppTest) -> list[str]:
    return [
        json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")
    ]


def chart_specs(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def texts(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("title", "subheader", "markdown", "caption", "info", "warning", "error", "success")
        for e in getattr(at, kind)
    ]
    parts += [m.label + " " + m.value for m in at.metric]
    return "\n".join(str(p) for p in parts).replace("\\", "")


def test_overview_shows_latency_traffic_and_hop_charts_with_units(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page(None, range="7d")
    assert at.title[0].value == "Overview"
    titles = chart_titles(at)
    for expected in ("End-to-end latency", "Traffic", "Latency by hop (stacked mean)"):
        assert expected in titles
    specs = {s["layout"]["title"]["text"]: s for s in chart_specs(at)}
    assert {t["name"] for t in specs["End-to-end latency"]["data"]} >= {"p50", "p95", "p99"}
    assert specs["End-to-end latency"]["layout"]["yaxis"]["title"]["text"] == "latency (ms)"
    hop_names = {
        html.unescape(t["name"])
        for t in specs["Latency by hop (stacked mean)"]["data"]
        if t.get("stackgroup")
    }
    assert "api-gateway->model-server (network)" in hop_names and "model-server (self)" in hop_names
    for spec in specs.values():  # units on every axis
        assert spec["layout"]["yaxis"]["title"]["text"]
        assert spec["layout"]["xaxis"]["title"]["text"] == "time (UTC)"


def test_overview_tiles_show_each_slo_with_its_alert_state(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page(None, range="7d")
    shown = texts(at)
    for name in SLO_NAMES:
        assert name in shown
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert len(badges) == len(SLO_NAMES)
    assert all(any(s in b for s in ("OK", "TICKET", "PAGE", "NO DATA")) for b in badges)
    assert "Budget left" in shown
    latency = next(
        c for c in chart_specs(at) if c["layout"].get("title", {}).get("text") == "End-to-end latency"
    )
    assert "SLO threshold 200 ms" in json.dumps(latency)  # recommend-latency's line on its chart
    assert {m.label for m in at.metric if m.label.startswith("SLI")} == {"SLI · 28d"}  # the period's, named
    # the demo's month leaves some budget on every SLO: the incidents spent part of it
    budgets = [(m.value, m.delta) for m in at.metric if m.label == "Budget left"]
    assert len(budgets) == len(SLO_NAMES)
    assert all(d != "exhausted" and 0 < float(v.rstrip("%")) < 80 for v, d in budgets), budgets


def test_overview_says_exhausted_where_an_slo_overspent_its_budget(
    dash_store: Path, env: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A 99.9 % objective on the demo's latency: the month's incidents spent its budget several times over."""
    env(dash_store)
    strict = (Path(RULES) / "recommend.yaml").read_text().split("\n---\n")[0]
    strict = strict.replace("name: recommend-latency", "name: recommend-latency-strict")
    (tmp_path / "strict.yaml").write_text(strict.replace("objective: 0.99\n", "objective: 0.999\n"))
    monkeypatch.setenv("HOPSCOPE_SLO_RULES", str(tmp_path))
    at = run_page(None, range="24h")
    budgets = [(m.value, m.delta) for m in at.metric if m.label == "Budget left"]
    assert len(budgets) == 1 and budgets[0][0].startswith("-") and budgets[0][1] == "exhausted", budgets


def test_overview_draws_breaches_as_clickable_bands_and_links(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page(None, range="7d")
    latency = next(s for s in chart_specs(at) if s["layout"]["title"]["text"] == "End-to-end latency")
    markers = [t for t in latency["data"] if t.get("name") == "breaches"]
    flash = breach_for(dash_store, truth(dash_store, "flash-sale"))
    assert flash["id"] in markers[0]["customdata"]
    assert markers and markers[0]["customdata"]
    assert len([s for s in latency["layout"].get("shapes", []) if s.get("type") == "rect"]) >= 1
    links = [e for e in at.get("page_link")]
    assert links and all("Incident" in e.proto.label for e in links)


def test_overview_says_it_replays_data_ending_at_the_last_minute(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page(None)
    assert "replay: the data ends at 2026-11-20 12:00 UTC" in texts(at)


def test_unknown_range_falls_back_with_a_warning(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page(None, range="<script>")
    assert any("Ignoring" in w.value for w in at.warning)
    assert "End-to-end latency" in chart_titles(at)


def test_empty_store_says_what_to_do(tmp_path: Path, env: Any) -> None:
    env(tmp_path / "nothing-here")
    at = run_page(None)
    assert any("hopscope demo" in i.value and "hopscope collect" in i.value for i in at.info)


@pytest.mark.parametrize("event", ["flash-sale", "gpu-thermal-throttling", "feature-store-memory-pressure"])
def test_incident_page_names_the_hop_and_resource_of_each_scenario_incident(
    dash_store: Path, env: Any, event: str
) -> None:
    env(dash_store)
    truth_ = truth(dash_store, event)
    breach = breach_for(dash_store, truth_)
    at = run_page("pages/incident.py", incident=breach["id"])
    shown = texts(at)
    assert f"Incident {breach['number']}" in shown
    top = next(s.value for s in at.success).replace("\\", "")
    assert truth_["hop"] in top and truth_["dimension"] in top
    titles = chart_titles(at)
    assert "SLI" in titles and "Burn rate per alert window" in titles
    assert "Hop decomposition: baseline vs incident" in titles


def test_unknown_incident_shows_a_message_not_a_traceback(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page("pages/incident.py", incident="9999")
    assert any("Unknown incident" in e.value for e in at.error)


def test_telemetry_text_is_escaped_not_rendered(evil_store: Path, env: Any) -> None:
    env(evil_store)
    at = run_page("pages/incident.py", incident="1")
    gantt = next(
        s
        for s in chart_specs(at)
        if s["layout"].get("title", {}).get("text", "").startswith("Trace waterfall")
    )
    labels = json.dumps(gantt["data"])
    assert "&lt;script&gt;" in labels and "<script>" not in labels and "<img" not in labels
    for e in at.markdown:
        assert "<script" not in e.value and "<img" not in e.value
    assert os.environ["HOPSCOPE_STORE"] == str(evil_store) and TRACE and EVIL


def test_slo_report_shows_three_incidents_with_their_causes(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page("pages/slo_report.py", slo="recommend-latency", window="28d")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Incidents"] == "3"
    assert float(metrics["SLI"].rstrip("%")) >= 99.0  # the month's incidents spent part of the 1 % budget
    assert 15 <= float(metrics["Budget remaining"].rstrip("%")) <= 45
    table = at.dataframe[0].value
    assert len(table) == 3
    causes = " ".join(table["cause"])
    for event in ("flash-sale", "gpu-thermal-throttling", "feature-store-memory-pressure"):
        t = truth(dash_store, event)
        assert f"{t['hop']} ({t['dimension']})" in causes
    assert "Error budget burn-down" in chart_titles(at)
    assert [b.proto.label for b in at.get("download_button")] == ["HTML (self-contained)", "CSV", "Markdown"]


@pytest.mark.parametrize(
    ("params", "expected"), [({"slo": "no-such-slo"}, "Ignoring"), ({"window": "1y"}, "Ignoring")]
)
def test_slo_report_ignores_unknown_parameters_with_a_warning(
    dash_store: Path, env: Any, params: dict[str, str], expected: str
) -> None:
    env(dash_store)
    at = run_page("pages/slo_report.py", **params)
    assert any(expected in w.value for w in at.warning)
    assert "Error budget burn-down" in chart_titles(at)


def test_hops_page_draws_the_service_graph_and_focuses_a_hop(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page("pages/hops.py", range="7d", hop="api-gateway->model-server")
    titles = [html.unescape(t) for t in chart_titles(at)]
    assert titles[0].startswith("Service graph")
    graph = chart_specs(at)[0]
    nodes = next(t for t in graph["data"] if t.get("name") == "services")
    assert {"api-gateway", "feature-store", "model-server"} <= set(nodes["customdata"])
    assert "api-gateway->model-server: time per request" in titles
    assert list(at.dataframe[0].value["hop"]) == ["api-gateway->model-server"]  # the focused edge's row


def qp(at: AppTest, name: str) -> str | None:
    """A query parameter's value as the page left it."""
    v = at.query_params.get(name)
    return v[-1] if isinstance(v, list) else v


def click_graph(at: AppTest, customdata: str) -> AppTest:
    """What the browser sends when a point of the service graph is clicked (Streamlit's on_select state)."""
    at.session_state["graph"] = {
        "selection": {"points": [{"customdata": customdata}], "point_indices": [], "box": [], "lasso": []}
    }
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize(
    ("clicked", "service", "rows"),
    [
        ("model-server", "model-server", {"api-gateway->model-server"}),
        ("api-gateway", "api-gateway", {"(clients)->api-gateway", "api-gateway->feature-store", "api-gateway->model-server"}),
        ("api-gateway->feature-store", "feature-store", {"api-gateway->feature-store"}),
    ],
)  # fmt: skip
def test_clicking_the_hops_graph_focuses_its_charts_and_sets_the_service_filter(
    dash_store: Path, env: Any, clicked: str, service: str, rows: set[str]
) -> None:
    env(dash_store)
    at = click_graph(run_page("pages/hops.py", range="7d"), clicked)
    assert qp(at, "hop") == clicked and qp(at, "service") == service
    assert at.selectbox(key="hop_select").value == clicked
    assert f"{clicked}: time per request" in [html.unescape(t) for t in chart_titles(at)]
    assert set(at.dataframe[0].value["hop"]) == rows
    graph = chart_specs(at)[0]
    nodes = next(t for t in graph["data"] if t.get("name") == "services")
    if "->" not in clicked:  # the clicked service is drawn highlighted
        colors = dict(zip(nodes["customdata"], nodes["marker"]["color"], strict=True))
        assert len({colors[clicked]} & {colors[n] for n in nodes["customdata"] if n != clicked}) == 0


def test_a_hop_chosen_after_a_graph_click_is_not_reset_by_the_old_click(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = click_graph(run_page("pages/hops.py", range="7d"), "model-server")
    at.selectbox(key="hop_select").set_value("api-gateway->feature-store").run()
    at.run()  # a later rerun still carries the graph's old selection
    assert qp(at, "hop") == "api-gateway->feature-store" and qp(at, "service") == "feature-store"
    assert "api-gateway->feature-store" in [s.value.replace("\\", "") for s in at.subheader]
    at.selectbox(key="hop_select").set_value("(all hops)").run()
    assert "hop" not in at.query_params
    assert len(at.dataframe[0].value) == 3  # all three edges again


RESOURCE_SECTIONS = ("GPU", "Network", "Probes", "Feature store & hosts")


def all_titles(at: AppTest, page: str | None) -> list[str]:
    """Chart titles of the page; on Resources, of every section in turn (one is drawn at a time)."""
    if page is None:
        return chart_titles(at)
    titles = []
    for section in RESOURCE_SECTIONS:
        at.query_params["section"] = section
        at.run()
        titles += chart_titles(at)
    return titles


def test_overview_and_resources_honour_the_service_filter(dash_store: Path, env: Any) -> None:
    env(dash_store)
    for page in (None, "pages/resources.py"):
        at = run_page(page, range="7d", refresh="off", service="feature-store")
        assert at.sidebar.selectbox(key="service_select").value == "feature-store"
        titles = all_titles(at, page)
        assert "Feature-store memory" in titles and "GPU utilization" not in titles, titles
        at.sidebar.selectbox(key="service_select").set_value("model-server").run()
        assert qp(at, "service") == "model-server"
        titles = all_titles(at, page)
        assert "GPU utilization" in titles and "Feature-store memory" not in titles, titles


def test_range_and_filters_follow_from_page_to_page_and_a_changed_link(dash_store: Path, env: Any) -> None:
    """Streamlit drops the query on a page switch: the shared parameters carry over (as a Grafana time
    range does), and a link that changes one on the same page moves its selectbox."""
    env(dash_store)
    at = run_page(None, range="7d", refresh="off", service="feature-store")
    at.switch_page("pages/resources.py").run()
    assert (qp(at, "range"), qp(at, "refresh"), qp(at, "service")) == ("7d", "off", "feature-store")
    assert at.sidebar.selectbox(key="range_select").value == "7d"
    at.query_params.update(range="1h", refresh="10s")
    at.run()
    assert at.sidebar.selectbox(key="range_select").value == "1h"
    assert at.sidebar.selectbox(key="refresh_select").value == "10s"
    assert "feature-store" in texts(run_page(None, range="7d", refresh="off", service="feature-store"))


def test_the_configured_refresh_is_the_default_and_a_link_still_overrides_it(
    dash_store: Path, env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hopscope dashboard` passes [dashboard] refresh_seconds as HOPSCOPE_REFRESH_SECONDS."""
    env(dash_store)
    monkeypatch.setenv("HOPSCOPE_REFRESH_SECONDS", "0")
    assert run_page(None, range="7d").sidebar.selectbox(key="refresh_select").value == "off"
    monkeypatch.setenv("HOPSCOPE_REFRESH_SECONDS", "60")
    assert run_page(None, range="7d").sidebar.selectbox(key="refresh_select").value == "1m"
    assert run_page(None, range="7d", refresh="5s").sidebar.selectbox(key="refresh_select").value == "5s"


def test_breach_markers_are_click_selectable_and_do_not_overlap_across_slos() -> None:
    """Plotly selects the first hovered point on click: under x-unified hover that is a line, so no
    breach would ever reach on_select. Concurrent breaches of two SLOs get their own marker rows."""
    t = pd.Timestamp("2026-01-01 10:00")
    breaches = pd.DataFrame(
        {"id": ["a", "b", "c"], "number": [1, 2, 3], "slo": ["x", "y", "x"], "severity": ["page", "ticket", "page"],
         "start": [t, t, t + pd.Timedelta(hours=2)], "end": [t + pd.Timedelta(minutes=30)] * 2 + [t + pd.Timedelta(hours=3)]}
    )  # fmt: skip
    series = pd.DataFrame(
        {"t": [t, t + pd.Timedelta(hours=3)], "p50": [1.0, 2.0], "p95": [2.0, 3.0], "p99": [3.0, 4.0]}
    )
    fig = charts.latency_chart(series, breaches)
    assert fig.layout.hovermode == "closest"
    marker = next(tr for tr in fig.data if tr.name == charts.BAND_MARKER_NAME)
    spots = {(x, y) for x, y in zip(marker.x, marker.y, strict=True)}
    assert len(spots) == 3 and list(marker.customdata) == ["a", "b", "c"]
    assert marker.y[0] == marker.y[2] != marker.y[1]  # one row per SLO
    assert charts.latency_chart(series).layout.hovermode == "x unified"  # no markers: unified hover stays


def test_resources_page_shows_each_dimension_with_units(dash_store: Path, env: Any) -> None:
    """One section at a time (?section=, or the segmented control): only the chosen one is drawn."""
    env(dash_store)
    at = run_page("pages/resources.py")
    specs = {}
    for section in ("GPU", "Network", "Probes", "Feature store & hosts"):
        at.query_params.update(range="7d", section=section)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.get("button_group")[0].value == section
        drawn = {s["layout"]["title"]["text"]: s for s in chart_specs(at)}
        assert drawn and not (set(drawn) & set(specs)), "each section draws its own panels only"
        specs.update(drawn)
    for title in (
        "GPU utilization",
        "SM clock",
        "Clock-event reasons (bitmask)",
        "GPU framebuffer used",
        "Link throughput vs capacity",
        "TCP retransmits",
        "Probe phases",
        "Feature-store memory",
    ):
        assert title in specs, title
        assert specs[title]["layout"]["yaxis"]["title"]["text"]

    assert specs["GPU utilization"]["data"][0]["line"]["color"] == DIMENSION_COLORS["compute"]
    assert specs["Link throughput vs capacity"]["data"][0]["line"]["color"] == DIMENSION_COLORS["bandwidth"]
    assert specs["GPU framebuffer used"]["data"][0]["line"]["color"] == DIMENSION_COLORS["memory"]


def test_collectors_page_shows_freshness_runs_and_store(dash_store: Path, env: Any) -> None:
    env(dash_store)
    at = run_page("pages/collectors.py")
    fresh = at.dataframe[0].value
    assert len(fresh) >= 1 and fresh["stale"].all()  # demo data ended long before the wall clock
    assert (fresh["last_error"] == "").all()  # no error: an empty cell, never the text "None"
    assert "count every collection run the store keeps" in texts(at)
    assert "Collector runs" in chart_titles(at)
    assert any(m.label == "Size on disk" for m in at.metric)
    tables = at.dataframe[1].value
    assert set(tables["table"]) == {"spans", "hop_minutes", "samples", "collector_runs"}


def test_collectors_page_says_when_the_store_refuses_writes_and_why(tmp_path: Path, env: Any) -> None:
    Store(tmp_path / "s").close()
    now = time.time()
    status = DaemonStatus(
        pid=4242, host="edge-1", started_unix=now - 600, updated_unix=now, last_commit_unix=now - 95,
        failing_for_s=95.0, last_error="append to spans failed: disk full", last_error_cause="disk full",
        reconnects=2, writer_queue=3, span_queue=1200, buffered_records=450, spans_received=10_000,
        spans_refused=300, rollup_last_success_unix=now - 100, maintenance_pending=False, longest_slice_s=0.42,
    )  # fmt: skip
    write_status(tmp_path / "s", status)
    env(tmp_path / "s")
    at = run_page("pages/collectors.py")
    assert [e.value for e in at.error] == [
        "The store refuses writes \\(disk full\\) for 2 min\\: spans are answered 503 and retried by their "
        "clients; samples wait in memory"
    ]
    shown = {m.label: m.value for m in at.metric}
    assert shown["last commit"] == "2 min ago" and shown["reconnects"] == "2"
    assert (shown["queued writes"], shown["spans waiting"], shown["spans refused"]) == ("3", "1,200", "300")

    now = time.time()
    write_status(
        tmp_path / "s", dataclasses.replace(status, failing_for_s=0.0, updated_unix=now, last_commit_unix=now)
    )
    at = run_page("pages/collectors.py")
    assert not at.error and len(at.success) == 1
    assert re.fullmatch(r"Writes are taken\\: last commit \d s ago", at.success[0].value), at.success[0].value

    write_status(tmp_path / "s", dataclasses.replace(status, updated_unix=time.time() - 600))
    at = run_page("pages/collectors.py")
    assert "last reported 10 min ago\\: stopped?" in at.error[0].value


def test_collectors_page_says_when_alertmanager_does_not_take_alerts(tmp_path: Path, env: Any) -> None:
    Store(tmp_path / "s").close()
    now = time.time()
    am = {"name": "http://am-1:9093", "ok": False, "last_error": "http://am-1:9093: connection refused",
          "last_success_unix": now - 300, "failures": 4, "undelivered": 2}  # fmt: skip
    status = DaemonStatus(
        pid=4242, host="edge-1", started_unix=now - 600, updated_unix=now, last_commit_unix=now,
        failing_for_s=0.0, last_error=None, last_error_cause=None, reconnects=0, writer_queue=0, span_queue=0,
        buffered_records=0, spans_received=10, spans_refused=0, rollup_last_success_unix=now,
        maintenance_pending=False, longest_slice_s=0.1,
        alerting={"firing": 2, "alertmanagers": [am], "evaluation_error": None},
    )  # fmt: skip
    write_status(tmp_path / "s", status)
    env(tmp_path / "s")
    at = run_page("pages/collectors.py")
    assert len(at.error) == 1
    shown = at.error[0].value.replace("\\", "")  # the page escapes Markdown
    assert shown.startswith(
        "Alertmanager http://am-1:9093 does not take alerts (4 failure(s) in a row, 2 alert(s) waiting"
    )
    assert "connection refused" in shown
    assert "alerts firing: 2" in texts(at).replace("\\", "")

    write_status(tmp_path / "s", dataclasses.replace(status, alerting={"firing": 0, "alertmanagers": [
        {**am, "ok": True, "last_error": None, "failures": 0, "undelivered": 0, "last_success_unix": time.time()}
    ], "evaluation_error": None}))  # fmt: skip
    at = run_page("pages/collectors.py")
    assert not at.error and "Alerts delivered to 1 Alertmanager\\(s\\)" in [s.value for s in at.success]


# ---------------------------------------------------------------- real samples from an NVIDIA H200


def values(v: Any) -> list[Any]:
    """A trace's array as a list: Plotly's JSON writes numeric arrays as base64 typed arrays."""
    if isinstance(v, dict) and "bdata" in v:
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def resources_page(range_key: str) -> AppTest:
    at = run_page("pages/resources.py")
    at.query_params.update(
        range=range_key, refresh="off"
    )  # switching pages drops the query: a link carries it
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize(("range_key", "min_points"), [("15m", 5), ("1h", 5), ("24h", 1)])
def test_resources_page_draws_real_h200_samples_as_visible_points(
    h200_store: Path, env: Any, range_key: str, min_points: int
) -> None:
    """36 s of samples fall in one 1-minute bucket: a line through one point draws nothing, so short
    ranges bucket samples by 5 s and few points are drawn as markers."""
    env(h200_store)
    at = resources_page(range_key)
    specs = {s["layout"]["title"]["text"]: s for s in chart_specs(at)}
    util = {k: values(v) if k in ("x", "y") else v for k, v in specs["GPU utilization"]["data"][0].items()}
    assert len(util["y"]) >= min_points and "markers" in util["mode"]
    assert all(0 <= y <= 100 for y in util["y"]) and max(util["y"]) > 50  # the matmul phase is busy
    if range_key == "15m":
        assert min(util["y"]) < 10  # and the idle phases are not averaged away

    xaxis = specs["GPU utilization"]["layout"]["xaxis"]
    x0, x1 = (pd.Timestamp(x) for x in xaxis["range"])
    xs = pd.to_datetime(util["x"], unit="ms")  # times travel as epoch milliseconds on a date axis
    assert xaxis["type"] == "date" and xs[0].year == 2026
    assert x0 < xs[0] and xs[-1] < x1 and x1 - x0 >= pd.Timedelta(minutes=15)  # the window, not one instant
    assert "samples 5 s" in texts(at) or range_key == "24h"


def test_framebuffer_chart_draws_used_memory_under_the_h200_capacity(h200_store: Path, env: Any) -> None:
    env(h200_store)
    fb = next(
        s
        for s in chart_specs(resources_page("15m"))
        if s["layout"]["title"]["text"] == "GPU framebuffer used"
    )
    used = next({**t, "y": values(t["y"])} for t in fb["data"] if t["name"] != "capacity")
    cap = next({**t, "y": values(t["y"])} for t in fb["data"] if t["name"] == "capacity")
    assert len(cap["y"]) >= 5 and "markers" in cap["mode"]
    assert all(139 < c < 141 for c in cap["y"])  # H200: 141 GB = ~140 GiB of framebuffer (used + free)
    assert max(used["y"]) > 8 and min(used["y"]) < 2  # 8 GiB held during the load, released after
    assert max(used["y"]) < min(cap["y"])


def test_incident_page_draws_the_named_gpu_signal_the_incident_in_context_and_its_trace(
    dash_store: Path, env: Any
) -> None:
    """The GPU incident: each evidence chart draws the series on the host the evidence names (two GPU
    nodes both have a GPU 0), over the incident and as long before it; the slow trace is drawn."""
    env(dash_store)
    breach = breach_for(dash_store, truth(dash_store, "gpu-thermal-throttling"))
    at = run_page("pages/incident.py", incident=breach["id"])
    top = next(s.value for s in at.success).replace("\\", "")
    assert top.count("of the added latency") == 1, top  # said once, not "X% of … — X% of …"
    table = next(df.value for df in at.dataframe if "name" in df.value.columns)
    assert "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS on gpu-node-2 GPU 0" in set(
        table["name"]
    )  # not the series key
    assert "signal" not in table.columns and not table["name"].str.contains("UUID").any()
    evidence = [s for s in chart_specs(at) if "yaxis2" in s["layout"] and s["layout"].get("title")]
    assert evidence, chart_titles(at)
    first = evidence[0]
    assert "gpu-node-2/0" in first["layout"]["title"]["text"]
    signal = [y for y in values(first["data"][0]["y"]) if y == y]
    assert len(signal) >= 10, first["layout"]["title"]["text"]  # the resource line is drawn
    # the part of the breach the diagnosis read (it burned budget), and as long before it
    store = Store(dash_store, create=False)
    try:
        read = slos.incident(store, RULES, breach["id"]).diagnosis.to_dict()["diagnosed_window"]
    finally:
        store.close()
    lo, hi = (pd.Timestamp(read[k]).tz_convert(None) for k in ("start", "end"))
    assert (hi - lo) < (pd.Timestamp(breach["end"]) - pd.Timestamp(breach["start"]))  # trimmed
    assert "the part of the breach that burned budget" in texts(at)
    w = windows.evidence_window(lo.to_pydatetime(), hi.to_pydatetime())
    ms = [pd.Timestamp(t).value / 1e6 for t in (w.start, w.end)]
    for spec in evidence:
        assert spec["layout"]["xaxis"]["range"] == ms  # not stretched back to a day-earlier baseline
        assert [sh.get("name") for sh in spec["layout"]["shapes"]] == ["incident"]
        assert not spec["layout"].get("annotations")  # labels in the legend, not under the lines
        hop = next(t for t in spec["data"] if t.get("yaxis") == "y2" and "latency" in t["name"])
        assert hop["line"]["color"] == HOP_LINE_COLOR
    gantt = next(s for s in chart_specs(at) if s["layout"]["title"]["text"].startswith("Trace waterfall"))
    bars = gantt["data"][0]
    assert len(values(bars["x"])) >= 2 and "#D32F2F" in bars["marker"]["color"]


def test_incident_page_says_when_the_exemplar_traces_have_no_spans_left(tmp_path: Path, env: Any) -> None:
    path = tmp_path / "store"
    store = build_store(path, evil=False)
    store.delete("spans", "start_time IS NOT NULL", [])  # expired: the rollups still name the trace
    store.close()
    env(path)
    at = run_page("pages/incident.py", incident="1")
    shown = texts(at)
    assert "name 1 slow-trace exemplar in this window" in shown and "spans are kept" in shown
    assert not any(t.startswith("Trace waterfall") for t in chart_titles(at))

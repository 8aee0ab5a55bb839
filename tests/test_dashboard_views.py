"""hopscope.query and dashboard.panels: the dashboard's read-side queries, on a small hand-built store with known answers."""

from __future__ import annotations

import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa
import pytest
from support.handbuilt import END, MINUTES, SPIKE, TRACE, build_store

from hopscope import charts, model
from hopscope.config import REFRESH_SECONDS
from hopscope.dashboard import cache, panels
from hopscope.dashboard.state import REFRESH_CHOICES
from hopscope.errors import NotFoundError
from hopscope.query import samples, slos, spans, windows
from hopscope.rollup import rollup_range
from hopscope.store import Store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_store(tmp_path_factory.mktemp("views"))


@pytest.mark.parametrize(
    ("span", "step"),
    [
        (timedelta(hours=1), 60),
        (timedelta(hours=6), 60),
        (timedelta(hours=24), 120),
        (timedelta(days=7), 900),
        (timedelta(days=28), 3600),
        (timedelta(days=90), 10800),
    ],
)
def test_step_keeps_every_series_within_a_thousand_points(span: timedelta, step: int) -> None:
    assert model.step_for(END - span, END) == step
    assert span.total_seconds() / step <= model.MAX_POINTS


def test_window_ends_at_the_data_when_the_data_stopped_long_ago(store: Store) -> None:
    w = windows.window(store, "6h", now=END + timedelta(days=3))
    assert w.replay and w.end == END and w.start == END - timedelta(hours=6)
    live = windows.window(store, "1h", now=END + timedelta(seconds=30))
    assert not live.replay


@pytest.mark.parametrize("bad", ["2h", "'; DROP TABLE spans; --", ""])
def test_window_refuses_ranges_outside_the_allow_list(store: Store, bad: str) -> None:
    with pytest.raises(NotFoundError, match="time range"):
        windows.window(store, bad, now=END)


def test_latency_percentiles_follow_the_spike(store: Store) -> None:
    w = windows.window(store, "6h", now=END)
    df = spans.latency_series(store, w)
    assert len(df) == MINUTES
    base = df[df["t"] < SPIKE[0]]
    spike = df[(df["t"] >= SPIKE[0]) & (df["t"] < SPIKE[1])]
    # baseline end to end = 10 + 22 + 45 = 77 ms, spike = 10 + 22 + 340 = 372 ms, +-20 % spread
    assert base["p50"].median() == pytest.approx(77, rel=0.1)
    assert spike["p50"].median() == pytest.approx(372, rel=0.1)
    assert (df["p99"] >= df["p95"]).all() and (df["p95"] >= df["p50"]).all()


def test_traffic_is_requests_per_second(store: Store) -> None:
    w = windows.window(store, "6h", now=END)
    df = spans.traffic_series(store, w)
    assert df["rps"].min() == pytest.approx(100 / 60)
    assert df["rps"].max() == pytest.approx(600 / 60)


def test_hop_contributions_stack_to_the_mean_end_to_end_latency(store: Store) -> None:
    w = windows.window(store, "6h", now=END)
    hops = spans.hop_latency_series(store, w)
    assert set(hops["hop"]) == {
        "api-gateway",
        "feature-store",
        "model-server",
        "api-gateway->feature-store",
        "api-gateway->model-server",
    }
    total = hops.groupby("t")["ms"].sum()
    mean = spans.latency_series(store, w).set_index("t")["mean_ms"]
    assert np.allclose(total.values, mean.loc[total.index].values)
    gap = hops[hops["hop"] == "api-gateway->model-server"].set_index("t")["ms"]
    assert gap.max() == pytest.approx(300.0) and gap.min() == pytest.approx(5.0)


def test_long_ranges_are_aggregated_server_side(store: Store) -> None:
    w = windows.window(store, "90d", now=END)
    assert w.step_s == 10800
    assert len(spans.latency_series(store, w)) == MINUTES // 180


def test_counters_become_rates_and_gauges_means(store: Store) -> None:
    w = windows.window(store, "6h", now=END)
    df = samples.metric_series(
        store,
        w,
        ["node_network_transmit_bytes_total", "DCGM_FI_DEV_GPU_UTIL", "probe_http_duration_seconds"],
        counters=["node_network_transmit_bytes_total"],
    )
    tx = df[df["metric"] == "node_network_transmit_bytes_total"]
    assert tx["value"].median() == pytest.approx(1.25e9)
    assert set(df[df["metric"] == "DCGM_FI_DEV_GPU_UTIL"]["value"]) == {40.0, 90.0}
    assert set(df[df["metric"] == "probe_http_duration_seconds"]["series"]) == {
        "model-server/connect/http://model:8000/"
    }


def test_hop_edges_give_rate_errors_and_p99(store: Store) -> None:
    w = windows.window(store, "6h", now=END)
    edges = spans.hop_edges(store, w).set_index(["client", "server"])
    assert set(edges.index) == {
        ("", "api-gateway"),
        ("api-gateway", "feature-store"),
        ("api-gateway", "model-server"),
    }
    assert edges.loc[("api-gateway", "model-server"), "p99"] > 300
    assert edges.loc[("", "api-gateway"), "error_ratio"] > 0


def test_freshness_marks_a_source_stale_and_counts_failures(store: Store) -> None:
    df = samples.freshness(store, END + timedelta(minutes=10)).set_index("source")
    assert bool(df.loc["prometheus", "stale"]) and df.loc["prometheus", "failures"] == 1
    assert df.loc["prometheus", "last_error"] == "timeout"
    fresh = samples.freshness(store, END).set_index("source")
    assert not bool(fresh.loc["demo", "stale"])


def test_trace_spans_mark_the_critical_path(store: Store) -> None:
    df = spans.trace_spans(store, TRACE).set_index("name")
    assert bool(df.loc["POST /infer", "critical"]) and bool(df.loc["infer", "critical"])
    # GET features (5-27 ms) ends before POST /infer (30-370 ms) starts: called one after the other,
    # the request waited for both
    assert bool(df.loc["GET features", "critical"])
    assert df.loc["infer", "offset_ms"] == pytest.approx(180.0)


@pytest.mark.parametrize("bad", ["xyz", "0123", "'; --" + "0" * 27])
def test_trace_ids_must_be_hex(store: Store, bad: str) -> None:
    with pytest.raises(NotFoundError, match="32 hex"):
        spans.trace_spans(store, bad)


def test_exemplar_traces_come_from_the_window(store: Store) -> None:
    df = spans.exemplar_traces(store, SPIKE[0], SPIKE[1])
    assert list(df["trace_id"]) == [TRACE]
    assert spans.exemplar_traces(store, END - timedelta(hours=6), SPIKE[0]).empty


def test_empty_store_gives_empty_frames(tmp_path: Path) -> None:
    store = Store(tmp_path / "empty")
    w = windows.window(store, "1h", now=END)
    assert not w.replay and w.data_end is None
    for fn in (spans.latency_series, spans.traffic_series, spans.hop_latency_series, spans.hop_edges):
        assert fn(store, w).empty
    assert samples.freshness(store, END).empty


def test_load_rules_reparses_only_when_a_rules_file_changes(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(Path(__file__).resolve().parents[1] / "slo_rules", rules)
    first = slos.load_rules(str(rules))
    assert slos.load_rules(str(rules))[0] == first[0]  # same files: the cached parse
    source = Path(first[0][0].source_file)  # the file of one SLO, inside the copy
    assert source.is_relative_to(rules)
    source.unlink()
    after = slos.load_rules(str(rules))
    assert len(after[0]) < len(first[0])  # a removed file is seen at once, not after a TTL


@pytest.mark.parametrize(
    ("range_key", "step", "sample_step"),
    [
        ("15m", 60, 5),
        ("1h", 60, 5),
        ("6h", 60, 30),
        ("24h", 120, 120),
        ("7d", 900, 900),
        ("90d", 10800, 10800),
    ],
)
def test_samples_get_finer_buckets_than_minute_rollups_on_short_ranges(
    store: Store, range_key: str, step: int, sample_step: int
) -> None:
    w = windows.window(store, range_key, now=END)
    assert (w.step_s, w.sample_step_s) == (step, sample_step)
    assert (w.end - w.start).total_seconds() / w.sample_step_s <= model.MAX_POINTS
    gpu = samples.metric_series(store, w, ["DCGM_FI_DEV_GPU_UTIL"])
    assert (gpu["t"].diff().dropna().dt.total_seconds() % sample_step == 0).all()
    assert spans.latency_series(store, w)["t"].diff().dropna().dt.total_seconds().min() >= 60


def test_panels_are_read_in_one_batch_with_the_same_result_as_one_by_one(store: Store) -> None:
    w = windows.window(store, "6h", now=END)
    keys = ("gpu_util", "fb", "link", "retrans", "probe", "redis", "fs_self", "nvlink")
    batch = panels.panels_series(store, w, keys)
    assert list(batch) == list(keys)
    for key in keys:
        one, one_cap = panels.panel_series(store, w, key)
        pd.testing.assert_frame_equal(batch[key][0].reset_index(drop=True), one.reset_index(drop=True))
        pd.testing.assert_frame_equal(batch[key][1].reset_index(drop=True), one_cap.reset_index(drop=True))
    assert batch["nvlink"][0].empty and not batch["gpu_util"][0].empty
    assert batch["fb"][1]["value"].max() == pytest.approx(80000 / 1024)  # used + free, in GiB
    with pytest.raises(NotFoundError, match="no resource panel 'nope'"):
        panels.panels_series(store, w, ("gpu_util", "nope"))


@pytest.mark.parametrize(("points", "mode"), [(1, "lines+markers"), (60, "lines+markers"), (61, "lines")])
def test_few_points_are_drawn_with_markers(points: int, mode: str) -> None:
    t = pd.date_range("2026-01-01", periods=points, freq="5s")
    df = pd.DataFrame({"t": t, "service": "s", "series": "0", "value": 1.0})
    assert charts.resource_chart(df, title="x", unit="%", dimension="compute").data[0].mode == mode
    lat = pd.DataFrame({"t": t, "p50": 1.0, "p95": 2.0, "p99": 3.0})
    assert {tr.mode for tr in charts.latency_chart(lat).data} == {mode}


@pytest.mark.parametrize(
    ("name", "args", "kwargs"),
    [
        ("latency_series", (), {}),
        ("traffic_series", (), {}),
        ("hop_latency_series", (), {}),
        ("metric_series", (("node_network_transmit_bytes_total", "DCGM_FI_DEV_GPU_UTIL"),),
         {"counters": ("node_network_transmit_bytes_total",), "service": None}),
    ],
)  # fmt: skip
def test_a_live_tick_reads_only_the_newest_buckets_and_matches_a_full_read(
    store: Store, monkeypatch: pytest.MonkeyPatch, name: str, args: tuple, kwargs: dict
) -> None:
    """New data every few seconds must not re-read a 28-day range: final buckets are kept, the rest re-read."""
    monkeypatch.setattr(cache, "open_store", lambda path: store)
    cache.memo.clear()
    module = samples if name == "metric_series" else spans
    real, starts = getattr(module, name), []
    monkeypatch.setattr(module, name, lambda s, w, *a, **k: starts.append(w.start) or real(s, w, *a, **k))
    kw = tuple(sorted(kwargs.items()))
    for minutes in (50, 30, 0):  # three ticks, 20 and 30 minutes apart, of a live 6-hour view
        gen = END - timedelta(minutes=minutes)
        w = windows.window(store, "6h", now=gen, last=gen)
        step_s = w.sample_step_s if name == "metric_series" else w.step_s
        got = cache.incremental("p", gen, getattr(module, name), w, args, kw, step_s)
        pd.testing.assert_frame_equal(got, real(store, w, *args, **kwargs))
    assert (
        starts[0] == windows.window(store, "6h", now=END - timedelta(minutes=50)).start
    )  # the first read is full
    # then the tails: the buckets not yet final (SETTLE before the data's end)
    assert starts[1:] == [
        END - timedelta(minutes=50) - cache.SETTLE,
        END - timedelta(minutes=30) - cache.SETTLE,
    ]


def _time_charts() -> list[tuple[str, Any]]:
    """Every time chart builder with a small input, each with and without breach bands."""
    t = pd.date_range("2026-01-01", periods=90, freq="1min")
    breaches = pd.DataFrame(
        {"id": ["a", "b"], "number": [1, 2], "slo": ["x", "y"], "severity": ["page", "ticket"],
         "start": [t[10], t[40]], "end": [t[20], t[50]]}
    )  # fmt: skip
    lat = pd.DataFrame({"t": t, "p50": 1.0, "p95": 2.0, "p99": 3.0})
    traffic = pd.DataFrame({"t": t, "rps": 5.0, "errors": 0, "error_ratio": 0.01})
    hops = pd.DataFrame(
        {
            "t": list(t) * 2,
            "hop": ["gw"] * 90 + ["gw->ms"] * 90,
            "part": ["self"] * 90 + ["network"] * 90,
            "ms": 1.5,
        }
    )
    res = pd.DataFrame({"t": t, "service": "ms", "series": "gpu 0", "value": 50.0})
    cap = pd.DataFrame({"t": t, "value": 100.0})
    sli = pd.DataFrame({"t": t, "sli": 0.999})
    burn = pd.DataFrame({"t": t, "1h": 2.0, "6h": 1.0})
    bd = pd.DataFrame({"t": t, "budget_remaining": 0.5, "ideal": 0.6})
    out = []
    for b in (None, breaches):
        out += [
            ("latency_chart", charts.latency_chart(lat, b, threshold_ms=200)),
            ("traffic_chart", charts.traffic_chart(traffic, b)),
            ("hop_stack_chart", charts.hop_stack_chart(hops, b, highlight="gw")),
            ("resource_chart", charts.resource_chart(res, title="GPU", unit="%", dimension="compute", capacity=cap,
                                                     breaches=b, x_range=(t[0], t[-1]))),
            ("sli_chart", charts.sli_chart(sli, 0.999, b)),
            ("burn_rate_chart", charts.burn_rate_chart(burn, {"1h": 14.4, "6h": 6.0}, b)),
        ]  # fmt: skip
    out.append(("budget_burndown_chart", charts.budget_burndown_chart(bd)))
    return out


def test_time_charts_built_without_validation_are_valid_plotly() -> None:
    """The time charts skip Plotly's validation for speed: Plotly re-validates each one here, in full."""
    for name, fig in _time_charts():
        spec = fig.to_dict()
        again = go.Figure(spec)  # raises on any unknown property or bad value
        assert again.layout.xaxis.type == "date", name
        assert all(len(tr.x) == len(tr.y) for tr in again.data), name
    broken = _time_charts()[0][1].to_dict()
    broken["data"][0]["line"]["colour"] = "red"
    with pytest.raises(ValueError, match="colour"):
        go.Figure(broken)


def test_time_charts_keep_lines_labels_and_breach_bands() -> None:
    charts_by_name = dict(_time_charts()[6:12])
    lat = charts_by_name["latency_chart"]
    assert [tr.name for tr in lat.data] == ["p50", "p95", "p99", "breaches"]
    assert lat.layout.annotations[0].text == "SLO threshold 200 ms" and lat.layout.shapes[0].y0 == 200
    assert [sh.fillcolor for sh in lat.layout.shapes[1:]] == ["#D32F2F", "#F9A825"]  # page, ticket
    burn = charts_by_name["burn_rate_chart"]
    assert [a.text for a in burn.layout.annotations] == ["1h ×14.4", "6h ×6"]
    hop = charts_by_name["hop_stack_chart"]
    assert {tr.stackgroup for tr in hop.data if tr.name != "breaches"} == {"hops"}
    assert max(tr.line.width for tr in hop.data if tr.name != "breaches") == 3  # the highlighted hop


def test_a_long_legend_moves_the_plot_down_instead_of_over_the_title() -> None:
    one = charts.legend_top(["gpu 0"], 340)
    nine = [f"model-server gpu-node-{i}/eth0 receive" for i in range(9)]
    assert one == 64 and charts.legend_top(nine, 340) == 64 + 8 * charts.LEGEND_ROW_PX  # one entry a row
    assert charts.legend_top(nine, 1400) < charts.legend_top(nine, 340)  # a wide chart needs fewer rows
    t = pd.date_range("2026-01-01", periods=5, freq="1min")
    df = pd.DataFrame(
        {"t": list(t) * 9, "service": "s", "series": [n for n in nine for _ in t], "value": 1.0}
    )
    fig = charts.resource_chart(df, title="NICs", unit="Gbit/s", dimension="bandwidth", height=220, width=340)
    assert fig.layout.margin.t == charts.legend_top(nine, 340)
    assert fig.layout.height - fig.layout.margin.t == 220 - 64  # the plot keeps its height


def test_a_breach_that_began_before_the_range_is_cut_to_the_series_not_stretching_the_axis() -> None:
    t = pd.date_range("2026-01-02", periods=60, freq="1min")
    lat = pd.DataFrame({"t": t, "p50": 1.0, "p95": 2.0, "p99": 3.0})
    breaches = pd.DataFrame(
        {"id": ["early", "gone"], "number": [1, 2], "slo": ["x", "x"], "severity": ["page", "page"],
         "start": [t[0] - pd.Timedelta(hours=5), t[0] - pd.Timedelta(hours=9)],
         "end": [t[10], t[0] - pd.Timedelta(hours=6)]}
    )  # fmt: skip
    fig = charts.latency_chart(lat, breaches)
    first, cut = charts.epoch_ms(t)[0], charts.epoch_ms(t)[10]
    (band,) = [sh for sh in fig.layout.shapes if sh.type == "rect"]  # the one ended before the data: none
    assert (band.x0, band.x1) == (first, cut)
    marker = next(tr for tr in fig.data if tr.name == charts.BAND_MARKER_NAME)
    assert list(marker.customdata) == ["early"] and first < marker.x[0] < cut


# ------------------------------------------------------------------ incident page: evidence and traces

TWIN_START = datetime(2026, 11, 20, 9, 0)
TWIN_MINUTES = 60


def build_twin_store(path: Path) -> Store:
    """Two GPU nodes that both have a GPU 0, and two gateways that both have an eth0, each with its own
    values: GPU util 20 % on gpu-node-1 and 90 % on gpu-node-2; receive 100 B/s on gw-node-1 and
    500 B/s on gw-node-2; clock-event reasons with a bad bit (0x40 hw thermal) in 1 of 4 samples on
    gpu-node-2 only (0x1 idle, not a bad bit, on gpu-node-1)."""
    store = Store(path)
    rows = []
    for i in range(TWIN_MINUTES * 4):  # every 15 s
        ts = TWIN_START + timedelta(seconds=15 * i)
        for host, util, rx, reasons in (
            ("gpu-node-1", 20.0, 100.0, 0x1),
            ("gpu-node-2", 90.0, 500.0, 0x40 if i % 4 == 0 else 0),
        ):
            gpu = {"gpu": "0", "UUID": f"GPU-{host}", "modelName": "H100"}
            rows += [
                (ts, "DCGM_FI_DEV_GPU_UTIL", util, "model-server", host, gpu),
                (ts, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", float(reasons), "model-server", host, gpu),
            ]
            gw = host.replace("gpu", "gw")
            rows.append(
                (ts, "node_network_receive_bytes_total", rx * 15 * i, "api-gateway", gw, {"device": "eth0"})
            )
    df = pd.DataFrame(rows, columns=["ts", "metric", "value", "service", "host", "labels"])
    df["source"] = "test"
    labels = pa.array([list(d.items()) for d in df["labels"]], type=pa.map_(pa.string(), pa.string()))
    table = pa.Table.from_pandas(df.drop(columns=["labels"]), preserve_index=False).append_column(
        "labels", labels
    )
    store.append("samples", table)
    return store


@pytest.fixture(scope="module")
def twin_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_twin_store(tmp_path_factory.mktemp("twins") / "store")


@pytest.mark.parametrize(
    ("metric", "labels", "expected"),
    [
        ("DCGM_FI_DEV_GPU_UTIL", {"service": "model-server", "host": "gpu-node-1", "gpu": "0", "UUID": "GPU-gpu-node-1"}, 20.0),
        ("DCGM_FI_DEV_GPU_UTIL", {"service": "model-server", "host": "gpu-node-2", "gpu": "0", "UUID": "GPU-gpu-node-2"}, 90.0),
        ("node_network_receive_bytes_total", {"service": "api-gateway", "host": "gw-node-1", "device": "eth0"}, 100.0),
        ("node_network_receive_bytes_total", {"service": "api-gateway", "host": "gw-node-2", "device": "eth0"}, 500.0),
        # a bitmask reads as the share of samples with a bad bit set, as the diagnosis measured it
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", {"service": "model-server", "host": "gpu-node-2", "gpu": "0"}, 0.25),
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", {"service": "model-server", "host": "gpu-node-1", "gpu": "0"}, 0.0),
    ],
)  # fmt: skip
def test_evidence_series_is_the_named_hosts_gpu_or_nic_when_hosts_share_an_index(
    twin_store: Store, metric: str, labels: dict[str, str], expected: float
) -> None:
    w = windows.Window(TWIN_START, TWIN_START + timedelta(minutes=TWIN_MINUTES), 60, False, None, 300)
    df = samples.evidence_series(twin_store, w, metric, labels)
    assert len(df) >= 10
    assert df["value"].to_numpy() == pytest.approx(expected, rel=1e-6)


def test_evidence_series_of_a_series_that_is_not_stored_is_empty(twin_store: Store) -> None:
    w = windows.Window(TWIN_START, TWIN_START + timedelta(minutes=TWIN_MINUTES), 60, False, None)
    labels = {"service": "model-server", "host": "gpu-node-3", "gpu": "0"}
    assert samples.evidence_series(twin_store, w, "DCGM_FI_DEV_GPU_UTIL", labels).empty
    assert samples.series_label(labels) == "gpu-node-3/0" and samples.series_label({"service": "x"}) == ""


@pytest.mark.parametrize(
    ("start", "end", "lo", "hi"),
    [  # the incident and as long before it (30 min at least), a quarter of it after (15 min at least)
        ("12:00", "13:30", "10:30", "13:52:30"),
        ("12:00", "12:10", "11:30", "12:25"),
    ],
)
def test_evidence_window_shows_the_incident_with_as_much_before_it(
    start: str, end: str, lo: str, hi: str
) -> None:
    day = "2026-11-23 "
    w = windows.evidence_window(datetime.fromisoformat(day + start), datetime.fromisoformat(day + end))
    assert (w.start, w.end) == (datetime.fromisoformat(day + lo), datetime.fromisoformat(day + hi))
    assert (w.end - w.start) / timedelta(seconds=w.step_s) <= model.MAX_POINTS


def _spans(rows: list[tuple[str, str | None, float, float]]) -> pd.DataFrame:
    """Hand-built spans: (span_id, parent_span_id, offset_ms, duration_ms)."""
    return pd.DataFrame(rows, columns=["span_id", "parent_span_id", "offset_ms", "duration_ms"])


@pytest.mark.parametrize(
    ("rows", "critical"),
    [
        pytest.param(  # gateway calls the feature store (1050 ms), then the model server (50 ms)
            [("root", None, 0, 1110), ("fs-call", "root", 2, 1050), ("fs", "fs-call", 3, 1048),
             ("ms-call", "root", 1055, 50), ("ms", "ms-call", 1057, 46)],
            {"root", "fs-call", "fs", "ms-call", "ms"},
            id="sequential",
        ),
        pytest.param(  # two calls at once: the request waited for the one that ended last
            [("root", None, 0, 500), ("a", "root", 10, 290), ("b", "root", 10, 470), ("b1", "b", 20, 100),
             ("b2", "b", 130, 340)],
            {"root", "b", "b1", "b2"},  # a ended first; within b, b1 then b2 one after the other
            id="parallel",
        ),
        pytest.param(  # sequential, then two in parallel: the first call and the longer of the pair
            [("root", None, 0, 300), ("first", "root", 0, 100), ("p1", "root", 100, 150), ("p2", "root", 100, 190)],
            {"root", "first", "p2"},
            id="sequential-then-parallel",
        ),
        pytest.param(  # an async child outlives its parent: counted up to the parent's end, where it
            # overlaps the sync call, which is then off the path; a span starting after its parent's
            # end is not on it, nor is the outliving child's child that starts after the parent's end
            [("root", None, 0, 100), ("sync", "root", 10, 85), ("async", "root", 20, 380),
             ("late", "root", 150, 50), ("async-child", "async", 250, 50)],
            {"root", "async"},
            id="child-outlives-parent",
        ),
        pytest.param(  # no parent among the spans (the root was not kept): the longest span leads
            [("a", "gone", 0, 50), ("b", "gone", 0, 80), ("b1", "b", 5, 20), ("b2", "b", 30, 40)],
            {"b", "b1", "b2"},
            id="orphans",
        ),
    ],
)  # fmt: skip
def test_critical_path_walks_back_from_each_spans_end(rows: list[tuple], critical: set[str]) -> None:
    assert spans.critical_path(_spans(rows)) == critical


def test_critical_path_survives_a_span_id_that_is_its_own_ancestor() -> None:
    rows = [("root", None, 0, 100), ("x", "root", 10, 50), ("x", "x", 20, 10)]
    assert spans.critical_path(_spans(rows)) == {"root", "x"}


def test_trace_spans_find_traces_in_span_files_with_a_bloom_filter(tmp_path: Path) -> None:
    """DuckDB writes a bloom filter on trace_id into a file of one dictionary-encoded row group, and its
    1.5.5 reader probes it wrongly for a BLOB constant (duckdb/duckdb#24994): `trace_id = unhex(?)`
    found no spans in such files (demo incidents 1 and 2). Every stored trace must be found."""
    rng = random.Random(7)
    # five spans a trace (as the demo's): the writer dictionary-encodes trace_id and adds the bloom filter
    n_traces, per, t0 = 3000, 5, datetime(2026, 11, 20, 10, 0)
    ids = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(n_traces)]
    span_rows = pd.DataFrame(
        {
            "trace_id": [t for t in ids for _ in range(per)],
            "span_id": [rng.getrandbits(64).to_bytes(8, "big") for _ in range(per * n_traces)],
            "parent_span_id": None,
            "service": "api-gateway",
            "name": "POST /recommend",
            "kind": 2,
            "start_time": [t0 + timedelta(milliseconds=10 * i) for i in range(per * n_traces)],
            "duration_ms": 5.0,
            "status_code": 0,
        }
    )
    store = Store(tmp_path / "store")
    try:
        store.append("spans", span_rows)
        store.maintain(now=t0, retention=False)  # inlined rows to Parquet, as a long-running store has them
        files = store.query("SELECT DISTINCT filename FROM spans").column("filename").to_pylist()
        con = duckdb.connect()
        bloom = [
            con.execute(
                "SELECT bloom_filter_length FROM parquet_metadata(?) WHERE path_in_schema = 'trace_id'", [f]
            ).fetchall()
            for f in files
        ]
        assert any(length for rows in bloom for (length,) in rows), "no bloom filter: the case is not covered"
        for tid in rng.sample(ids, 40):
            df = spans.trace_spans(store, tid.hex())
            assert len(df) == per and df["critical"].any(), tid.hex()
        assert spans.trace_spans(store, "f" * 32).empty  # no such trace: empty, with its columns
        # the rollups name exemplars; one named trace must be found through the exemplar join too

        rollup_range(store, t0, t0 + timedelta(minutes=3), [100.0], exemplars=1)
        minute = t0 + timedelta(minutes=1)
        named = spans.exemplar_traces(store, minute, minute + timedelta(minutes=1))
        assert len(named) == 1 and named["spans"].iloc[0] == per, named
        assert {"offset_ms", "critical"} <= set(spans.trace_spans(store, "f" * 32).columns)
    finally:
        store.close()


def test_exemplars_named_counts_them_with_or_without_spans_and_retention_is_known(store: Store) -> None:
    assert spans.exemplars_named(store, SPIKE[0], SPIKE[1]) == 1
    assert spans.exemplars_named(store, END - timedelta(hours=6), SPIKE[0]) == 0
    keep, exemplar = spans.span_retention(store)
    assert keep is not None and exemplar is not None and exemplar >= keep


def _contrast(a: str, b: str) -> float:
    def lum(h: str) -> float:
        c = [int(h.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        lin = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_data_colours_read_on_the_light_and_the_dark_theme() -> None:
    colours = {
        *charts.DIMENSION_COLORS.values(), *charts.PERCENTILE_COLORS.values(), *charts.SELF_COLORS,
        *charts.NETWORK_COLORS, *charts.BURN_COLORS, charts.HOP_LINE_COLOR, charts.NEUTRAL_COLOR,
    }  # fmt: skip
    for background in ("#FFFFFF", "#0E1117"):  # Streamlit's light and dark backgrounds
        weak = {c: round(_contrast(c, background), 2) for c in colours if _contrast(c, background) < 2.5}
        assert not weak, (background, weak)
    src = (Path(__file__).resolve().parents[1] / "hopscope" / "charts.py").read_text()
    assert "#424242" not in src  # the hop line that vanished on the dark theme


def test_evidence_chart_shows_the_incident_with_context_levels_and_no_baseline_stretch() -> None:
    t = pd.date_range("2026-11-23 10:30", "2026-11-23 13:50", freq="1min")
    signal = pd.DataFrame(
        {"t": t, "value": np.where((t >= "2026-11-23 12:00") & (t < "2026-11-23 13:30"), 0.4, 0.0)}
    )
    hop = pd.DataFrame({"t": t, "ms": 40.0})
    x_range = (datetime(2026, 11, 23, 10, 30), datetime(2026, 11, 23, 13, 52, 30))
    fig = charts.evidence_chart(
        signal, hop, signal_name="DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", unit="bitmask", dimension="compute",
        hop_name="model-server", baseline=(datetime(2026, 11, 22, 12), datetime(2026, 11, 22, 13, 30)),
        incident=(datetime(2026, 11, 23, 12), datetime(2026, 11, 23, 13, 30)), baseline_value=0.0,
        hop_baseline_ms=41.0, x_range=x_range, title="DCGM_FI_DEV_CLOCK_THROTTLE_REASONS · gpu-node-2/0",
    )  # fmt: skip

    go.Figure(fig.to_dict())  # valid Plotly, in full
    ms = [charts.epoch_ms(np.array([x], dtype="datetime64[us]"))[0] for x in x_range]
    assert list(fig.layout.xaxis.range) == ms  # the day-earlier baseline window does not stretch it
    assert [sh.name for sh in fig.layout.shapes] == ["incident"]  # labelled in the legend, not on the plot
    assert not fig.layout.annotations
    line, level, hop_line, hop_level = fig.data
    assert max(line.y) == pytest.approx(40.0) and fig.layout.yaxis.title.text.startswith("% of samples")
    assert list(level.y) == [0.0, 0.0] and list(hop_level.y) == [41.0, 41.0] and hop_level.yaxis == "y2"
    assert (
        hop_line.line.color == charts.HOP_LINE_COLOR and line.line.color == charts.DIMENSION_COLORS["compute"]
    )


def test_the_end_to_end_latency_chart_gets_the_entry_slos_threshold(tmp_path: Path) -> None:
    rules = str(Path(__file__).resolve().parents[1] / "slo_rules")
    # recommend-latency is on the entry edge (200 ms); model-server-latency is a hop's (150 ms): not drawn
    assert slos.entry_latency_threshold(rules, None) == 200.0
    assert slos.entry_latency_threshold(rules, "/recommend") == 200.0
    assert slos.entry_latency_threshold(rules, "/other") is None
    two = tmp_path / "two.yaml"
    text = (Path(rules) / "recommend.yaml").read_text()
    two.write_text(
        text.replace("recommend-latency", "strict-latency").replace("thresholdMs: 200", "thresholdMs: 120")
    )
    (tmp_path / "one.yaml").write_text(text)
    assert slos.entry_latency_threshold(str(tmp_path), None) is None  # two lines would mislead: none


def test_a_resource_chart_of_many_series_names_them_in_the_hover_not_a_legend_over_the_plot() -> None:
    t = pd.date_range("2026-11-20", periods=10, freq="1min")

    def frame(n: int) -> pd.DataFrame:
        return pd.concat(
            [
                pd.DataFrame({"t": t, "service": "svc", "series": f"probe-{i}/connect", "value": 1.0})
                for i in range(n)
            ]
        )

    many = charts.resource_chart(frame(20), title="Probe phases", unit="ms", dimension="bandwidth")
    assert many.layout.showlegend is False and "20 series" in many.layout.title.subtitle.text
    assert {tr.name for tr in many.data} == {f"svc probe-{i}/connect" for i in range(20)}  # hover names them
    few = charts.resource_chart(frame(3), title="Probe phases", unit="ms", dimension="bandwidth")
    assert few.layout.showlegend is not False


def test_the_configs_refresh_choices_are_the_dashboards() -> None:
    assert sorted(s or 0 for s in REFRESH_CHOICES.values()) == sorted(REFRESH_SECONDS)

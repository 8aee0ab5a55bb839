"""Prometheus pull against a real Prometheus (Debian package) scraping a real node_exporter and a
prometheus-client target with request-duration histograms, all on loopback ports of this test session."""

from __future__ import annotations

import io
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from fake_nvml import FakeGpu, FakeNvml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from support.binaries import require_binary
from support.exposition import metric_value
from support.servers import ServerProcess, free_port, wait_http
from support.waiting import wait_until

from hopscope.collectors.prometheus import PrometheusCollector, chunks, matrix_to_table
from hopscope.collectors.runner import Daemon
from hopscope.config.collect import PrometheusConfig, PromQuery, load_collect_config
from hopscope.slo import load_slos, slo_thresholds_ms
from hopscope.store import Store

PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


@dataclass
class PromServer(ServerProcess):
    """Prometheus, with the queries the tests ask of it."""

    def query_range(self, query: str, start: float, end: float, step: float) -> list[dict]:
        r = requests.get(
            f"{self.url}/api/v1/query_range",
            params={"query": query, "start": start, "end": end, "step": step},
            timeout=10,
        )
        r.raise_for_status()
        return r.json()["data"]["result"]

    def scraped_since(self, t: float) -> bool:
        """Both targets (node_exporter, the histogram target) were scraped, and up, after time `t`."""
        now = time.time()
        last = self.query_range("min(timestamp(up == 1)) and count(up == 1) == 2", now, now, 1)
        return bool(last) and float(last[0]["values"][-1][1]) > t


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromServer]:
    require_binary(PROMETHEUS, "prometheus")
    require_binary(NODE_EXPORTER, "prometheus-node-exporter")
    root = tmp_path_factory.mktemp("prometheus")
    node_port, target_port, prom_port = free_port(), free_port(), free_port()
    node = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{node_port}", "--collector.disable-defaults",
         "--collector.netdev", "--collector.netstat", "--collector.meminfo"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # The small test target: request-duration histograms of a fake model server, observed continuously.
    registry = CollectorRegistry()
    hist = Histogram("test_request_duration_seconds", "request latency", ["service", "route"], registry=registry,
                     buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0))  # fmt: skip
    target, _ = start_http_server(target_port, "127.0.0.1", registry=registry)
    stop = threading.Event()

    def observe() -> None:
        i = 0
        while not stop.wait(0.05):
            i += 1
            hist.labels("model-server", "/predict").observe((i % 20) / 40)

    threading.Thread(target=observe, daemon=True).start()
    config = root / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: node\n    static_configs: [{{targets: ['127.0.0.1:{node_port}']}}]\n"
        f"  - job_name: model-server\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    server = PromServer(
        prom_port,
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--web.enable-lifecycle"],
        root / "prometheus.log",
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{node_port}/metrics")
        server.start()
        wait_until(lambda: server.scraped_since(0), 20, "Prometheus scraping node_exporter and the target")
        # ... and the histogram target has answered long enough for rate() to have points older than
        # the collector's lag: on a loaded machine scrapes come late, and a test must not race them.
        wait_until(
            lambda: server.query_range(QUERIES[0].query, time.time() - 20, time.time() - LAG_S - 1, 1),
            30,
            f"rate() points older than the collector's {LAG_S} s lag",
            interval=0.2,
        )
        yield server
    finally:
        stop.set()
        server.stop()
        target.shutdown()
        os.kill(node.pid, signal.SIGTERM)
        node.wait(10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store")
    yield s
    s.close()


QUERIES = [
    PromQuery(
        name="latency_buckets",
        query="rate(test_request_duration_seconds_bucket[30s])",
        service_label="service",
        metric="test_request_duration_seconds_rate",
    ),
    PromQuery(name="nan", query="vector(0) / 0", service="api-gateway"),
    PromQuery(name="inf", query="vector(1) / 0"),
]
LAG_S = 2  # the collectors' lag behind now, in 1 s steps (_cfg)


def _wait_for_new_steps(mark: float, steps: int) -> None:
    """Wait until a pull from the watermark `mark` has `steps` new 1 s steps (now - lag >= mark + steps)."""
    wait_until(
        lambda: time.time() - LAG_S >= mark + steps, 10 + steps, f"{steps} new step(s) past watermark {mark}"
    )


def _cfg(prom: PromServer, **kw: object) -> PrometheusConfig:
    base: dict = dict(url=prom.url, step_s=1, lag_s=LAG_S, backfill=timedelta(seconds=20), presets=["node_network"],
                      queries=QUERIES, timeout_s=2, retries=1, deadline_s=5, progress=False)  # fmt: skip
    base.update(kw)
    return PrometheusConfig(**base)


def _assert_store_equals_prometheus(
    store: Store, prom: PromServer, q: PromQuery, start: float, end: float
) -> int:
    """Every point Prometheus answers for [start, end] is in the store once, with the same value (NaN as NaN)."""
    expected: dict[tuple, float] = {}
    for series in prom.query_range(q.query, start, end, 1):
        labels = dict(series["metric"])
        name = q.metric or labels.pop("__name__", q.name)
        labels.pop("__name__", None)
        for t, v in series["values"]:
            key = (
                name,
                round(float(t)),
                tuple(
                    sorted((k, str(x)) for k, x in labels.items() if k not in (q.service_label, q.host_label))
                ),
            )
            expected[key] = float(v)
    rows = store.query(
        "SELECT metric, epoch(ts) AS t, value, service, host, labels FROM samples WHERE labels['query'] = ? AND ts BETWEEN to_timestamp(?)::TIMESTAMP AND to_timestamp(?)::TIMESTAMP",
        [q.name, start, end],
    ).to_pylist()
    got: dict[tuple, float] = {}
    for r in rows:
        labels = {k: v for k, v in r["labels"] if k != "query"}
        key = (r["metric"], round(r["t"]), tuple(sorted(labels.items())))
        assert key not in got, f"duplicate sample {key}"
        got[key] = r["value"]
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert (math.isnan(value) and math.isnan(got[key])) or got[key] == value, key
    return len(got)


def test_values_in_the_store_equal_prometheus_answers_nan_and_inf_included(
    prometheus: PromServer, store: Store
) -> None:
    c = PrometheusCollector(_cfg(prometheus), store)
    results = {r.target: r for r in c.collect()}
    assert all(r.ok for r in results.values()), results
    assert results["preset.node_network"].written > 0
    for q in [c.queries[0], *QUERIES]:
        end = float(store.get_state(f"prometheus.{q.name}.watermark"))
        assert _assert_store_equals_prometheus(store, prometheus, q, end - 20, end) > 0
    nan = store.query("SELECT value, service FROM samples WHERE labels['query'] = 'nan' LIMIT 1").to_pylist()[
        0
    ]
    assert math.isnan(nan["value"]) and nan["service"] == "api-gateway"
    inf = store.query("SELECT value FROM samples WHERE labels['query'] = 'inf' LIMIT 1").to_pylist()[0]
    assert inf["value"] == math.inf
    svc = store.query(
        "SELECT DISTINCT service FROM samples WHERE labels['query'] = 'latency_buckets'"
    ).to_pylist()
    assert svc == [{"service": "model-server"}]
    hosts = (
        store.query("SELECT DISTINCT host FROM samples WHERE labels['query'] = 'preset.node_network'")
        .column("host")
        .to_pylist()
    )
    assert len(hosts) == 1 and hosts[0].startswith("127.0.0.1:")


def test_invalid_query_is_marked_and_the_others_continue(prometheus: PromServer, store: Store) -> None:
    bad = PromQuery(name="bad", query="rate(up[")
    c = PrometheusCollector(_cfg(prometheus, presets=[], queries=[bad, QUERIES[1]]), store)
    results = {r.target: r for r in c.collect()}
    assert not results["bad"].ok and "HTTP 400" in (results["bad"].error or "")
    assert results["nan"].ok and results["nan"].written > 0
    assert {r.target: r.ok for r in c.collect()} == {"bad": False, "nan": True}  # not asked again


def test_backfill_respects_the_points_limit_in_chunks(prometheus: PromServer, store: Store) -> None:
    calls: list[tuple[float, float]] = []
    c = PrometheusCollector(
        _cfg(prometheus, presets=[], queries=[QUERIES[1]], max_points=7, backfill=timedelta(seconds=30)),
        store,
    )
    real = c.fetch
    c.fetch = lambda query, s, e, step: (calls.append((s, e)), real(query, s, e, step))[1]  # type: ignore[method-assign]
    [result] = c.collect()
    assert result.ok and len(calls) == 5  # 31 points on a 1 s grid, at most 7 per call
    assert all(e - s <= 6 for s, e in calls)
    assert all(b[0] == a[1] + 1 for a, b in zip(calls, calls[1:], strict=False))  # contiguous, no overlap
    assert chunks(0, 30, 1, 7)[-1] == (28, 30)


def test_backfill_draws_a_progress_bar_on_stderr_and_incremental_pulls_do_not(
    prometheus: PromServer, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg(prometheus, presets=[], queries=[QUERIES[1]], max_points=7, backfill=timedelta(seconds=30))
    c = PrometheusCollector(cfg.model_copy(update={"progress": True}), store)  # stderr is captured by now
    [result] = c.collect()
    out, err = capsys.readouterr()
    assert result.ok and out == ""
    frames = err.split("\r")[1:]
    assert [f.split("] ")[1].split(" chunks")[0] for f in frames] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    assert frames[0].startswith("backfill nan [######      ") and frames[-1].startswith(
        "backfill nan [" + "#" * 30 + "]"
    )
    assert frames[-1].endswith(f"5/5 chunks, {result.written} samples\n")
    _wait_for_new_steps(float(store.get_state(c.watermark_key(QUERIES[1]))), 1)
    [again] = c.collect()  # from the watermark: one chunk, no bar
    assert again.ok and capsys.readouterr().err == ""
    quiet = PrometheusCollector(cfg, store)  # progress = false: the same five-chunk backfill, silent
    mark = float(store.get_state(quiet.watermark_key(QUERIES[1])))
    store.set_state(quiet.watermark_key(QUERIES[1]), repr(mark - 31))
    assert [r.ok for r in quiet.collect()] == [True]
    assert capsys.readouterr().err == ""


def test_incremental_pulls_after_a_restart_leave_no_gap_and_no_duplicates(
    prometheus: PromServer, store: Store
) -> None:
    q = QUERIES[0]
    cfg = _cfg(prometheus, presets=[], queries=[q])
    first = PrometheusCollector(cfg, store)
    assert [r.ok for r in first.collect()] == [True]
    start = float(store.get_state(f"prometheus.{q.name}.watermark")) - 20
    _wait_for_new_steps(start + 20, 2)
    again = PrometheusCollector(cfg, store)  # a restarted daemon: state comes from the store
    assert [r.ok for r in again.collect()] == [True]
    assert [r.ok for r in again.collect()] == [True]
    end = float(store.get_state(f"prometheus.{q.name}.watermark"))
    assert end > start + 21
    _assert_store_equals_prometheus(store, prometheus, q, start, end)


def test_killing_prometheus_records_errors_and_after_restart_the_gap_is_filled(
    prometheus: PromServer, store: Store
) -> None:
    q = QUERIES[0]
    c = PrometheusCollector(_cfg(prometheus, presets=[], queries=[q], deadline_s=2), store)
    assert [r.ok for r in c.collect()] == [True]
    start = float(store.get_state(f"prometheus.{q.name}.watermark")) - 20
    prometheus.stop()
    try:
        _wait_for_new_steps(start + 20, 1)  # so the pull asks the stopped Prometheus
        t0 = time.monotonic()
        [failed] = c.collect()
        assert time.monotonic() - t0 < 5  # bounded by the deadline, not hanging
        assert not failed.ok and "ConnectionError" in (failed.error or "")
        mark = store.get_state(f"prometheus.{q.name}.watermark")
    finally:
        restarted = time.time()
        prometheus.start()
    wait_until(
        lambda: prometheus.scraped_since(restarted), 20, "Prometheus scraping both targets after its restart"
    )
    _wait_for_new_steps(float(mark), 1)
    [ok] = c.collect()
    assert ok.ok and ok.written > 0
    end = float(store.get_state(f"prometheus.{q.name}.watermark"))
    assert end > float(mark)
    _assert_store_equals_prometheus(store, prometheus, q, start, end)


class _Replay(BaseHTTPRequestHandler):
    """Answers as a Prometheus would in cases this Prometheus 2.42 cannot be made to produce."""

    script: list[tuple[int, dict[str, str], bytes]] = []
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen.append(dict(self.headers))
        status, headers, body = type(self).script.pop(0) if type(self).script else (200, {}, b"{}")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def replay() -> Iterator[tuple[str, type[_Replay]]]:
    _Replay.script, _Replay.seen = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Replay)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Replay
    httpd.shutdown()
    httpd.server_close()


OK_WITH_WARNINGS = (
    b'{"status":"success","warnings":["remote read: partial data from store-b"],'
    b'"data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"h:9100"},"values":[[1700000000,"1"]]}]}}'
)


def test_warnings_mark_partial_retry_after_is_capped_and_secrets_are_redacted(
    replay: tuple[str, type[_Replay]], store: Store
) -> None:
    url, handler = replay
    token = "tok-XYZ-123"
    handler.script = [
        (503, {"Retry-After": "3600"}, f'{{"status":"error","error":"overloaded, token {token}"}}'.encode()),
        (200, {}, OK_WITH_WARNINGS),
    ]
    sleeps: list[float] = []
    cfg = PrometheusConfig(url=url, bearer_token=token, step_s=15, lag_s=0, backfill=timedelta(seconds=60),
                           queries=[PromQuery(name="up", query="up")], max_retry_after_s=2, progress=False)  # fmt: skip
    c = PrometheusCollector(cfg, store, clock=lambda: 1700000030.0, sleep=sleeps.append)
    [result] = c.collect()
    assert result.ok and result.partial and "partial data" in (result.error or "")
    assert sleeps == [2]  # Retry-After: 3600 capped at 2 s
    assert all(h.get("Authorization") == f"Bearer {token}" for h in handler.seen)
    handler.script = [(500, {}, f"token {token} leaked".encode())] * 4  # retries=3: four attempts
    store.set_state("prometheus.up.watermark", "1699999000")
    [failed] = c.collect()
    assert not failed.ok and token not in (failed.error or "") and "***" in (failed.error or "")


def test_matrix_to_table_maps_hop_rename_and_keeps_nan() -> None:
    q = PromQuery(
        name="g", query="x", host_label=None, hop_labels=("client", "server"), rename={"instance": "target"}
    )
    table = matrix_to_table(
        [{"metric": {"__name__": "traces_service_graph_request_total", "client": "api-gateway", "server": "model-server", "instance": "i"},
          "values": [[1700000000.5, "NaN"], [1700000001.5, "-Inf"]]}],
        q,
    )  # fmt: skip
    rows = table.to_pylist()
    assert dict(rows[0]["labels"]) == {
        "client": "api-gateway",
        "server": "model-server",
        "target": "i",
        "hop": "api-gateway->model-server",
        "query": "g",
    }
    assert math.isnan(rows[0]["value"]) and rows[1]["value"] == -math.inf
    assert rows[0]["metric"] == "traces_service_graph_request_total" and rows[0]["ts"].microsecond == 500000


def test_collect_daemon_gathers_prometheus_probes_network_nvml_and_otlp_into_one_store(
    prometheus: PromServer, store: Store, tmp_path: Path
) -> None:
    """`hopscope collect` in-process: Prometheus, a probe target, the network collector, NVML (fake) and OTLP."""
    cfg = load_collect_config(
        {
            "host_name": "node-1",
            "otlp": {"http_port": 0, "grpc_port": 0},
            "metrics": {"port": 0},
            "nvml": {"interval_s": 1, "service": "model-server"},
            "network": {"interval_s": 1},
            "probes": {"interval_s": 1, "targets": [{"url": f"{prometheus.url}/-/healthy", "service": "prometheus"}]},
            "prometheus": {"url": prometheus.url, "interval_s": 1, "step_s": 1, "lag_s": 2, "backfill": "10s",
                           "presets": ["node_network"], "progress": False},
        }
    )  # fmt: skip
    out = io.StringIO()
    daemon = Daemon(
        store, cfg, thresholds_ms=[200.0], nvml_module=FakeNvml([FakeGpu("GPU-e2e")]), out=out, flush_s=0.5
    )
    daemon.start()
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "api-gateway"}))
        provider.add_span_processor(
            SimpleSpanProcessor(
                OTLPSpanExporter(endpoint=f"http://127.0.0.1:{daemon.otlp.http_port}/v1/traces")
            )
        )
        with provider.get_tracer("e2e").start_as_current_span(
            "GET /recommend", attributes={"http.route": "/recommend"}
        ):
            pass
        provider.shutdown()
        metrics_url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
        wanted = [
            f'hopscope_collector_runs_total{{collector="{c}",ok="true"}}'
            for c in ("nvml", "network", "probe", "prometheus")
        ]
        wanted += [f'hopscope_samples_written_total{{collector="{c}"}}' for c in ("nvml", "network", "probe")]
        wanted.append('hopscope_otlp_spans_received_total{transport="http"}')
        wait_until(
            lambda: all(metric_value(requests.get(metrics_url, timeout=5).text, k) >= 1 for k in wanted),
            30,
            "a good run and written samples of every collector, and the span, in the daemon's /metrics",
        )
        metrics_text = requests.get(metrics_url, timeout=5).text
    finally:
        daemon.stop()
    status = out.getvalue()
    for name in ("nvml", "network", "probe", "prometheus"):
        assert f"enabled: {name}" in status
    assert "OTLP/HTTP http://127.0.0.1:" in status and "/metrics http://127.0.0.1:" in status
    sources = dict(store.query("SELECT source, count(*) AS n FROM samples GROUP BY 1").to_pylist() and
                   [(r["source"], r["n"]) for r in store.query("SELECT source, count(*) AS n FROM samples GROUP BY 1").to_pylist()])  # fmt: skip
    assert {"nvml", "network", "probe", "prometheus"} <= sources.keys()
    assert store.count("spans") == 1
    runs = {
        r["collector"]
        for r in store.query("SELECT DISTINCT collector FROM collector_runs WHERE ok").to_pylist()
    }
    assert {"nvml", "network", "probe", "prometheus"} <= runs
    assert 'hopscope_otlp_spans_received_total{transport="http"} 1.0' in metrics_text
    assert 'hopscope_samples_written_total{collector="nvml"}' in metrics_text


def test_hopscope_collect_command_stores_prometheus_probe_and_otlp_data_and_exits_0_on_sigterm(
    prometheus: PromServer, tmp_path: Path
) -> None:
    """Done means: `hopscope collect --config FILE` (the real entry point, its own process) with a local
    Prometheus, a probe target and the receiver gets all of it into the store; SIGTERM exits 0."""
    root = Path(__file__).resolve().parents[1]
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    probe_url = f"{prometheus.url}/-/healthy"
    config = tmp_path / "hopscope.toml"
    config.write_text(
        f"[store]\npath = '{tmp_path / 'store'}'\n[slo]\nrules = '{root / 'slo_rules'}'\n"
        "[collect]\nhost_name = 'node-1'\nrollup_interval_s = 1\n"
        f"[collect.otlp]\nhttp_port = {http_port}\ngrpc_port = {grpc_port}\n"
        f"[collect.metrics]\nport = {metrics_port}\n[collect.nvml]\nenabled = false\n"
        "[collect.network]\ninterval_s = 1\n"
        f"[collect.probes]\ninterval_s = 1\n[[collect.probes.targets]]\nurl = '{probe_url}'\nservice = 'prometheus'\n"
        f"[collect.prometheus]\nurl = '{prometheus.url}'\ninterval_s = 1\nstep_s = 1\nlag_s = 2\n"
        "backfill = '10s'\npresets = ['node_network']\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hopscope.cli", "collect", "--config", str(config)],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        wait_http(metrics_url, timeout=60)
        rollups = 'hopscope_collector_runs_total{collector="rollup",ok="true"}'
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "api-gateway"}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("e2e")
        start = time.time_ns() - 5 * 60 * 10**9  # minutes the rollup (2 min grace) closes at once
        for i in range(6):
            span = tracer.start_span(
                "GET /recommend", kind=SpanKind.SERVER, attributes={"http.route": "/recommend"},
                start_time=start + i * 10**9,
            )  # fmt: skip
            span.end(end_time=start + i * 10**9 + (50 + 100 * i) * 10**6)  # 50 .. 550 ms
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces")
        assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS  # one commit
        exporter.shutdown()
        rolled_before = metric_value(requests.get(metrics_url, timeout=5).text, rollups)
        wanted = {  # metric sample -> value to reach
            'hopscope_collector_runs_total{collector="prometheus",ok="true"}': 1,
            'hopscope_samples_written_total{collector="probe"}': 1,
            rollups: rolled_before + 2,  # a whole rollup pass after the spans' commit
        }
        wait_until(
            lambda: all(
                metric_value(requests.get(metrics_url, timeout=5).text, k) >= v for k, v in wanted.items()
            ),
            30,
            "a Prometheus run, probe samples and a whole rollup pass after the spans, in the daemon's /metrics",
            interval=0.3,
        )
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err
    assert "enabled: prometheus" in out and "enabled: probe" in out and "listening: OTLP/HTTP" in out
    assert "stopping" in out
    with Store(tmp_path / "store") as s:
        assert s.count("spans") == 6
        sources = {
            r["source"]: r["n"]
            for r in s.query("SELECT source, count(*) AS n FROM samples GROUP BY 1").to_pylist()
        }
        assert sources.get("prometheus", 0) > 0 and sources.get("probe", 0) > 0, sources
        probe = (
            s.query(
                "SELECT value FROM samples WHERE source = 'probe' AND metric = 'probe_success' AND labels['target'] = ?",
                [probe_url],
            )
            .column("value")
            .to_pylist()
        )
        assert probe and set(probe) == {1.0}
        runs = s.query("SELECT collector, bool_or(ok) AS ok FROM collector_runs GROUP BY 1").to_pylist()
        assert {r["collector"] for r in runs if r["ok"]} >= {"prometheus", "probe", "network", "rollup"}
        # The SLO thresholds of the config's rules reach the rollup: counted exactly per minute.
        expected = slo_thresholds_ms(load_slos(root / "slo_rules")[0])
        minutes = s.query(
            "SELECT good_le_ms, good_cnt, count FROM hop_minutes WHERE client = '' AND server = 'api-gateway'"
        ).to_pylist()
        assert minutes and all(m["good_le_ms"] == expected for m in minutes)
        assert sum(m["count"] for m in minutes) == 6
        good = [sum(m["good_cnt"][i] for m in minutes) for i in range(len(expected))]
        assert good == [sum(1 for i in range(6) if 50 + 100 * i <= t) for t in expected]

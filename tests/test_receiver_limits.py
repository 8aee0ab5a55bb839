"""The OTLP receiver's memory bounded by its limits (issue 15, item 2): admission before the body is
read, a connection cap, header and body deadlines, attribute values cut to a length limit.

The attacks run on real sockets against `hopscope collect` in a subprocess, whose RSS and threads
are read from /proc/PID/status; the well-behaved client is the OpenTelemetry SDK's exporter.
"""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.attacks import Attack, Watch, anon_mib, proc_status, start_collect
from support.waiting import wait_until

from hopscope.collectors import otlp
from hopscope.collectors.otlp import Admission, Backpressure, OtlpReceiver, spans_to_table
from hopscope.collectors.selfmetrics import SelfMetrics
from hopscope.config.collect import OtlpConfig, load_collect_config
from hopscope.errors import ConfigError
from hopscope.store import Store

TOKEN = "s3cret-token"
HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 2.0, 3.0


def _spans(
    n: int, service: str, attributes: dict | None = None, resource: dict | None = None
) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, **(resource or {})}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("limits")
    for i in range(n):
        with tracer.start_as_current_span(
            "GET /x", attributes={"http.route": "/x", "i": i, **(attributes or {})}
        ):
            pass
    return list(memory.get_finished_spans())


@pytest.fixture
def collect(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int, Path]]:
    """`hopscope collect` with a token, short read deadlines (the defaults are 5 s) and the other limits
    at their defaults; yields (process, OTLP/HTTP port, /metrics port, store path)."""
    proc, http_port, metrics_port = start_collect(
        tmp_path,
        f"bearer_token = '{TOKEN}'\nheader_timeout_s = {HEADER_TIMEOUT_S}\nbody_timeout_s = {BODY_TIMEOUT_S}",
    )
    try:
        yield proc, http_port, metrics_port, tmp_path / "store"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def _metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.slow
def test_stalled_bodies_half_sent_requests_and_a_15_mib_attribute_keep_memory_bounded_and_a_normal_client_stored(
    collect: tuple[subprocess.Popen[bytes], int, int, Path],
) -> None:
    proc, port, metrics_port, store_path = collect
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    idle_rss, idle_threads = proc_status(proc.pid)
    idle_anon = anon_mib(proc.pid)
    cfg = OtlpConfig()
    watch = Watch(proc.pid)

    # A normal client exporting small batches all along; each export must end stored (it may retry).
    normal: list[tuple[SpanExportResult, list[ReadableSpan]]] = []
    stop = threading.Event()

    def normal_client() -> None:
        exporter = OTLPSpanExporter(endpoint=endpoint, headers=auth)
        seed = 0
        while not stop.is_set():
            batch = _spans(20, f"normal-{seed % 3}")
            normal.append((exporter.export(batch), batch))
            seed += 1
            time.sleep(0.1)

    client = threading.Thread(target=normal_client)
    client.start()
    wait_until(lambda: normal, 10, "the normal client's first export")

    big, half = Attack(port, token=TOKEN), Attack(port, token=TOKEN)
    attacks = [
        threading.Thread(target=big.stalled_bodies, args=(30, 16_000_000, 100, 30)),
        threading.Thread(target=half.half_headers, args=(150, 30)),
        threading.Thread(target=half.half_bodies, args=(150, 20_000, 30)),
    ]
    for t in attacks:
        t.start()
    huge_span = _spans(1, "huge", {"payload": "é" + "x" * (15 * 1024 * 1024)})
    huge = OTLPSpanExporter(endpoint=endpoint, headers=auth, timeout=30).export(huge_span)
    for t in attacks:
        t.join()
    stop.set()
    client.join()
    watch.stop()

    # Bounded by the receiver's limits: +1,125 MiB before admission and the caps. Issue 15's goal is
    # RSS <= 300 MB. The memory the daemon allocates is checked absolutely: ~104 MiB at rest, 129-137
    # at the peak. Its whole RSS is not: it also counts the library pages (DuckDB, Arrow, gRPC) that the
    # kernel maps from the page cache, ~120 MiB beside a venv installed long ago (RSS 226 -> 257 MiB)
    # and ~190 beside one just installed, as in CI (RSS 291 -> 332 MiB), for the same daemon and load.
    # The growth over RSS at rest is checked too, as the part the limits bound whatever the machine.
    grew = watch.peak_rss_mib - idle_rss
    said = (
        f"peak RSS {watch.peak_rss_mib:.0f} MiB, {grew:.0f} MiB over {idle_rss:.0f} at rest; "
        f"anonymous {watch.peak_anon_mib:.0f} MiB at the peak, {idle_anon:.0f} at rest"
    )
    print(said, f"threads {idle_threads} -> {watch.peak_threads}")
    assert watch.peak_anon_mib <= 200, said
    assert grew <= 200, said
    assert watch.peak_threads <= idle_threads + cfg.max_connections + 8, watch.peak_threads
    # Admission before the body: one 16 MB body at a time (a quarter of the budget is kept for small
    # ones), the others refused at once; every stalled connection cut within its deadline.
    assert big.refused_at_once >= 28 and big.still_open == 0, big
    assert half.still_open == 0 and len(half.cut_after_s) > 0, half
    assert max(big.cut_after_s) <= BODY_TIMEOUT_S + 1, big.cut_after_s
    assert max(half.cut_after_s) <= max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 1, half.cut_after_s
    assert 408 in big.statuses
    assert huge == SpanExportResult.SUCCESS
    assert normal and all(r == SpanExportResult.SUCCESS for r, _ in normal), [r for r, _ in normal]

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    assert _metric(metrics, 'hopscope_otlp_attributes_truncated_total{transport="http"}') >= 1
    assert _metric(metrics, 'hopscope_otlp_http_reads_cut_total{phase="headers"}') > 0
    assert _metric(metrics, 'hopscope_otlp_http_reads_cut_total{phase="body"}') > 0
    assert _metric(metrics, 'hopscope_otlp_requests_total{code="429"') > 0
    rss_after, _ = proc_status(proc.pid)

    proc.terminate()
    assert proc.wait(30) == 0
    store = Store(store_path)
    try:
        ids = [s.context.span_id.to_bytes(8, "big") for _, batch in normal for s in batch]
        stored = store.query("SELECT count(*) AS n FROM spans WHERE span_id IN (SELECT unnest(?))", [ids])
        assert stored.to_pylist() == [{"n": len(ids)}]
        [row] = store.query(
            "SELECT attributes['payload'] AS payload FROM spans WHERE service = 'huge'"
        ).to_pylist()
        assert row["payload"] == "é" + "x" * (cfg.attribute_value_length_limit - 1)
    finally:
        store.close()
    assert rss_after - idle_rss <= 150, (rss_after, idle_rss)  # +13-45 MiB here; +590 before the fix


@pytest.mark.parametrize("fast", [True, False], ids=["numpy reader", "protobuf reader"])
def test_both_readers_cut_string_bytes_and_array_values_to_the_limit_in_characters_and_count_them(
    fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp, "_FAST", fast)
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: PLC0415  (test only)

    spans = _spans(
        2,
        "svc",
        {"s": "é" * 12, "short": "é" * 5, "b": b"\x01" * 12, "a": ["x" * 12, "y"], "n": 10**12},
        resource={"r": "r" * 12},
    )
    decoded = spans_to_table(encode_spans(spans).SerializeToString(), max_value_chars=10)
    rows = decoded.table.to_pylist()
    for row in rows:
        attrs = dict(row["attributes"])
        assert attrs["s"] == "é" * 10 and attrs["short"] == "é" * 5
        assert attrs["b"] == "01" * 10
        assert attrs["a"] == '["xxxxxxxxxx","y"]'
        assert attrs["n"] == str(10**12) and attrs["r"] == "r" * 10
    # per span: s, b, a; per resource, once: r, the SDK's service.instance.id and telemetry.sdk.name
    assert decoded.truncated == 2 * 3 + 3
    untouched = spans_to_table(encode_spans(spans).SerializeToString())
    assert untouched.truncated == 0 and dict(untouched.table.to_pylist()[0]["attributes"])["s"] == "é" * 12


def test_grpc_exports_have_long_attribute_values_cut_and_counted(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    metrics = SelfMetrics()
    cfg = OtlpConfig(http_port=0, grpc_port=0, attribute_value_length_limit=100)
    receiver = OtlpReceiver(store, cfg, metrics)
    receiver.start()
    try:
        spans = _spans(1, "grpc-svc", {"payload": "z" * 10_000})
        exporter = GrpcExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        receiver.stop()
    assert metrics.attributes_truncated.labels("grpc")._value.get() == 1
    [row] = store.query(
        "SELECT attributes['payload'] AS payload FROM spans WHERE service = 'grpc-svc'"
    ).to_pylist()
    store.close()
    assert row["payload"] == "z" * 100


def test_admission_refuses_at_once_past_the_budget_and_keeps_a_quarter_of_it_for_small_bodies() -> None:
    mib = 1024 * 1024
    adm = Admission(max_requests=2, max_bytes=32 * mib, max_body_bytes=16 * mib, metrics=SelfMetrics())
    with adm.admitted(16 * mib):
        with pytest.raises(Backpressure) as exc:  # a second big body: over the three quarters for big ones
            with adm.admitted(9 * mib):
                pass
        assert exc.value.status == 429
        with adm.admitted(4 * mib) as small:  # small bodies still fit...
            with pytest.raises(Backpressure):  # ...and a third request is one too many
                with adm.admitted(1):
                    pass
            with pytest.raises(Backpressure):  # a small gzip body that grows big is refused too
                adm.grow(small, 12 * mib)
    with adm.admitted(16 * mib), adm.admitted(8 * mib):  # everything was given back
        pass


def test_max_inflight_bytes_below_max_body_bytes_is_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match="max_inflight_bytes .* below max_body_bytes"):
        load_collect_config({"otlp": {"max_body_bytes": 1000, "max_inflight_bytes": 999}})
    assert OtlpConfig(max_body_bytes=1000).inflight_bytes == 2000

"""OTLP receiver: the real OpenTelemetry SDK and its OTLP HTTP and gRPC exporters against a running receiver."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import random
import resource
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import grpc
import pyarrow as pa
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from support.waiting import wait_until

from hopscope.collectors.otlp import ExportResponse, OtlpReceiver, parse_json_request, spans_to_table
from hopscope.config.collect import OtlpConfig
from hopscope.store import Store

SERVICES = ("api-gateway", "feature-store", "model-server")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(tmp_path_factory.mktemp("otlp") / "store")
    yield s
    s.close()


@pytest.fixture(scope="module")
def receiver(store: Store) -> Iterator[OtlpReceiver]:
    r = OtlpReceiver(store, OtlpConfig(http_port=0, grpc_port=0, max_body_bytes=1024 * 1024))
    r.start()
    yield r
    r.stop()


def _chain(n_requests: int, seed: int) -> list[ReadableSpan]:
    """Spans of a 3-service call chain made by the real SDK: gateway -> feature-store, then -> model-server."""
    rng = random.Random(seed)
    memory = InMemorySpanExporter()
    providers = {}
    for svc in SERVICES:
        p = TracerProvider(
            resource=Resource.create(
                {"service.name": svc, "host.name": f"{svc}-host", "deployment.environment": "test"}
            )
        )
        p.add_span_processor(SimpleSpanProcessor(memory))
        providers[svc] = p
    gw, fs, ms = (providers[s].get_tracer("hopscope-test") for s in SERVICES)
    for i in range(n_requests):
        code = rng.choice([200, 200, 200, 503])
        with gw.start_as_current_span(
            "GET /recommend",
            kind=SpanKind.SERVER,
            attributes={
                "http.route": "/recommend",
                "http.request.method": "GET",
                "http.response.status_code": code,
                "user.tier": rng.choice(["free", "pro"]),
            },
        ) as root:
            for server, tracer, route in (
                ("feature-store", fs, "/features"),
                ("model-server", ms, "/predict"),
            ):
                with gw.start_as_current_span(
                    f"POST {route}",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "http.method": "POST",
                        "http.status_code": 200,
                        "server.address": server,
                        "peer.service": server,
                    },
                ):
                    with tracer.start_as_current_span(
                        f"POST {route}",
                        kind=SpanKind.SERVER,
                        attributes={
                            "http.route": route,
                            "http.request.method": "POST",
                            "batch": i,
                            "score": 0.5,
                            "ok": True,
                        },
                    ):
                        time.sleep(0)
            if code >= 500:
                root.set_status(Status(StatusCode.ERROR, "upstream failed"))
    for p in providers.values():
        p.shutdown()
    return list(memory.get_finished_spans())


def _stored(store: Store, spans: list[ReadableSpan]) -> dict[bytes, dict]:
    ids = [s.context.span_id.to_bytes(8, "big") for s in spans]
    rows = store.query("SELECT * FROM spans WHERE span_id IN (SELECT unnest(?))", [ids]).to_pylist()
    return {r["span_id"]: r for r in rows}


def _expected_row(s: ReadableSpan) -> dict:
    attrs = dict(s.attributes or {})
    res = dict(s.resource.attributes)
    route = attrs.pop("http.route", None)
    method = attrs.pop("http.request.method", None) or attrs.pop("http.method", None)
    attrs.pop("http.method", None)
    code = attrs.pop("http.response.status_code", None) or attrs.pop("http.status_code", None)
    attrs.pop("http.status_code", None)
    other = {
        k: str(v).lower() if isinstance(v, bool) else (repr(v) if isinstance(v, float) else str(v))
        for k, v in attrs.items()
    }
    other.update({k: str(v) for k, v in res.items() if k not in ("service.name", "host.name")})
    return {
        "trace_id": s.context.trace_id.to_bytes(16, "big"),
        "span_id": s.context.span_id.to_bytes(8, "big"),
        "parent_span_id": s.parent.span_id.to_bytes(8, "big") if s.parent else None,
        "service": res["service.name"],
        "name": s.name,
        "kind": s.kind.value + 1,  # SDK SpanKind INTERNAL=0; OTLP SPAN_KIND_INTERNAL=1
        "start_time": datetime.utcfromtimestamp(s.start_time // 1000 / 1e6),
        "duration_ms": pytest.approx((s.end_time - s.start_time) / 1e6, abs=1e-9),
        "status_code": s.status.status_code.value,
        "status_message": s.status.description,
        "http_route": route,
        "http_method": method,
        "http_status_code": code,
        "server_address": attrs.get("server.address") and other.pop("server.address"),
        "peer_service": attrs.get("peer.service") and other.pop("peer.service"),
        "host_name": res["host.name"],
        "attributes": other,
    }


@pytest.mark.parametrize(
    ("transport", "compression"),
    [("http", Compression.NoCompression), ("http", Compression.Gzip), ("grpc", None)],
)
def test_sdk_exporter_spans_of_a_three_service_chain_are_stored_field_by_field(
    receiver: OtlpReceiver, store: Store, transport: str, compression: Compression | None
) -> None:
    spans = _chain(5, seed=hash(transport + str(compression)) % 1000)
    if transport == "http":
        exporter = HttpExporter(
            endpoint=f"http://127.0.0.1:{receiver.http_port}/v1/traces", compression=compression
        )
    else:
        exporter = GrpcExporter(endpoint=f"127.0.0.1:{receiver.grpc_port}", insecure=True)
    assert exporter.export(spans) == SpanExportResult.SUCCESS  # returned only after the commit
    exporter.shutdown()
    stored = _stored(store, spans)
    assert len(stored) == len(spans) == 25
    for s in spans:
        row = stored[s.context.span_id.to_bytes(8, "big")]
        row["attributes"] = dict(row["attributes"])
        assert row == _expected_row(s)
    services = {r["service"] for r in stored.values()}
    assert services == set(SERVICES)


def _post(
    port: int, body: bytes, headers: dict[str, str], conn: http.client.HTTPConnection | None = None
) -> tuple[int, dict[str, str], bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/v1/traces", body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    if own:
        conn.close()
    return out


def _json_span(trace_hex: str, span_hex: str, **extra: object) -> dict:
    return {
        "traceId": trace_hex,
        "spanId": span_hex,
        "name": "GET /recommend",
        "kind": 2,
        "startTimeUnixNano": "1764000000000000000",
        "endTimeUnixNano": "1764000000250000000",
        "attributes": [
            {"key": "http.route", "value": {"stringValue": "/recommend"}},
            {"key": "http.response.status_code", "value": {"intValue": "200"}},
            {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "2"}]}}},
        ],
        "status": {},
        **extra,
    }


def _json_body(spans: list[dict], service: str = "api-gateway") -> bytes:
    return json.dumps(
        {
            "resourceSpans": [
                {
                    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                    "scopeSpans": [{"scope": {"name": "t"}, "spans": spans, "unknownField": 1}],
                }
            ]
        }
    ).encode()


def test_json_with_hex_ids_stores_the_right_16_and_8_bytes(receiver: OtlpReceiver, store: Store) -> None:
    trace_hex, span_hex, parent_hex = (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "eee19b7ec3c1b173",
    )
    body = _json_body([_json_span(trace_hex, span_hex, parentSpanId=parent_hex)], service="json-svc")
    status, headers, data = _post(receiver.http_port, body, {"Content-Type": "application/json"})
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(data) == {}
    row = store.query("SELECT * FROM spans WHERE service = 'json-svc'").to_pylist()[0]
    assert row["trace_id"] == bytes.fromhex(trace_hex) and len(row["trace_id"]) == 16
    assert row["span_id"] == bytes.fromhex(span_hex)
    assert row["parent_span_id"] == bytes.fromhex(parent_hex)
    assert row["kind"] == 2 and row["duration_ms"] == pytest.approx(250.0)
    assert row["start_time"] == datetime(2025, 11, 24, 16, 0, 0)
    assert row["http_route"] == "/recommend" and row["http_status_code"] == 200
    assert dict(row["attributes"])["tags"] == '["a",2]'


@pytest.mark.parametrize("media", ["application/json", "application/x-protobuf"])
def test_invalid_spans_get_partial_success_with_rejected_count_and_message(
    receiver: OtlpReceiver, store: Store, media: str
) -> None:
    good = _json_span("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    bad_hex = _json_span("not-hex-at-all", "b7ad6b7169203332")
    zero = _json_span("00000000000000000000000000000000", "b7ad6b7169203333")
    backwards = _json_span("0af7651916cd43dd8448eb211c80319d", "b7ad6b7169203334", endTimeUnixNano="1")
    svc = f"partial-{media.split('/')[1]}"
    body = _json_body([good, bad_hex, zero, backwards], service=svc)
    if media != "application/json":
        body = parse_json_request(body).SerializeToString()
    status, _, data = _post(receiver.http_port, body, {"Content-Type": media})
    assert status == 200
    if media == "application/json":
        partial = json.loads(data)["partialSuccess"]
        assert int(partial["rejectedSpans"]) == 3 and "trace_id" in partial["errorMessage"]
    else:
        resp = ExportResponse.FromString(data)
        assert resp.partial_success.rejected_spans == 3 and resp.partial_success.error_message
    assert store.query("SELECT count(*) AS n FROM spans WHERE service = ?", [svc]).column("n")[0].as_py() == 1


def test_empty_request_is_a_success(receiver: OtlpReceiver) -> None:
    for media, body in (("application/x-protobuf", b""), ("application/json", b"{}")):
        status, _, _ = _post(receiver.http_port, body, {"Content-Type": media})
        assert status == 200


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"Content-Type": "application/x-protobuf"}, b"\xff\xff\xff\xff", 400),
        ({"Content-Type": "application/json"}, b"{not json", 400),
        ({"Content-Type": "application/json"}, b"[1, 2]", 400),
        ({"Content-Type": "application/json"}, b'{"resourceSpans": "nope"}', 400),
        ({"Content-Type": "text/plain"}, b"hello", 415),
        ({"Content-Type": "application/json", "Content-Encoding": "br"}, b"{}", 415),
        ({"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"not gzip", 400),
        ({"Content-Type": "application/x-protobuf"}, b"\0" * (1024 * 1024 + 1), 413),
    ],
)
def test_bad_requests_get_4xx_with_a_status_body(
    receiver: OtlpReceiver, headers: dict, body: bytes, status: int
) -> None:
    got, resp_headers, data = _post(receiver.http_port, body, headers)
    assert got == status
    if resp_headers["content-type"] == "application/x-protobuf":
        assert status_pb2.Status.FromString(data).message
    else:
        assert json.loads(data)["message"]


def test_gzip_bomb_gets_413_without_memory_growing_past_the_limit(receiver: OtlpReceiver) -> None:
    bomb = gzip.compress(b"\0" * (128 * 1024 * 1024), compresslevel=6)  # 128 MiB inflates from ~0.1 MiB
    assert len(bomb) < receiver.cfg.max_body_bytes
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    status, _, _ = _post(
        receiver.http_port, bomb, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    )
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert status == 413
    assert grown_mib < 64, f"peak RSS grew {grown_mib:.0f} MiB decoding a bomb"


def test_bearer_token_required_and_never_logged(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    token = "s3cret-token-value"
    r = OtlpReceiver(store, OtlpConfig(http_port=0, grpc_port=0, bearer_token=token))
    r.start()
    try:
        caplog.set_level(logging.DEBUG)
        spans = _chain(1, seed=7)
        body = encode_spans(spans).SerializeToString()
        status, headers, _ = _post(r.http_port, body, {"Content-Type": "application/x-protobuf"})
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        status, _, _ = _post(
            r.http_port, body, {"Content-Type": "application/x-protobuf", "Authorization": "Bearer wrong"}
        )
        assert status == 401
        ok = HttpExporter(
            endpoint=f"http://127.0.0.1:{r.http_port}/v1/traces", headers={"Authorization": f"Bearer {token}"}
        )
        assert ok.export(spans) == SpanExportResult.SUCCESS
        grpc_ok = GrpcExporter(
            endpoint=f"127.0.0.1:{r.grpc_port}", insecure=True, headers={"authorization": f"Bearer {token}"}
        )
        assert grpc_ok.export(spans) == SpanExportResult.SUCCESS
        grpc_bad = GrpcExporter(endpoint=f"127.0.0.1:{r.grpc_port}", insecure=True, timeout=2)
        assert grpc_bad.export(spans) == SpanExportResult.FAILURE
        for e in (ok, grpc_ok, grpc_bad):
            e.shutdown()
    finally:
        r.stop()
    assert token not in caplog.text


def test_seeded_random_bodies_never_get_a_5xx_or_hang(receiver: OtlpReceiver) -> None:
    rng = random.Random(42)
    valid_pb = encode_spans(_chain(2, seed=3)).SerializeToString()
    valid_json = _json_body([_json_span("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")])
    conn = http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=10)
    statuses: dict[int, int] = {}
    for i in range(3000):
        media = "application/x-protobuf" if i % 2 else "application/json"
        base = valid_pb if i % 2 else valid_json
        kind = rng.random()
        if kind < 0.3:
            body = rng.randbytes(rng.randint(0, 300))
        else:  # a valid body with a few bytes flipped, cut or inserted: reaches deeper into the parsers
            b = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                pos = rng.randrange(len(b))
                op = rng.random()
                if op < 0.6:
                    b[pos] = rng.randrange(256)
                elif op < 0.8:
                    del b[pos:]
                    if not b:
                        break
                else:
                    b[pos:pos] = rng.randbytes(rng.randint(1, 8))
            body = bytes(b)
        headers = {"Content-Type": media}
        if rng.random() < 0.1:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        try:
            status, _, _ = _post(receiver.http_port, body, headers, conn)
        except (http.client.HTTPException, OSError):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=10)
            status, _, _ = _post(receiver.http_port, body, headers, conn)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, f"body #{i} ({media}) got {status}"
    conn.close()
    assert statuses.get(400, 0) > 100 and statuses.get(200, 0) > 10


class _GatedStore:
    """The real store behind a gate the test opens: a store that cannot keep up for a while."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.gate = threading.Event()
        self.entered = threading.Event()  # a commit has reached the gate
        self.appends = 0

    def append(self, table: str, data: pa.Table, *, deadline: float | None = None) -> int:
        self.entered.set()
        self.gate.wait()
        self.appends += 1
        return self.store.append(table, data)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_backpressure_answers_429_or_503_and_the_exporter_retry_gets_everything_in_once(
    store: Store, transport: str
) -> None:
    gated = _GatedStore(store)
    cfg = OtlpConfig(http_port=0, grpc_port=0, max_queue_spans=20, ack_timeout_s=0.3, retry_after_s=1)
    r = OtlpReceiver(gated, cfg)
    r.start()
    try:
        batches = [_chain(2, seed=100 + i) for i in range(4)]  # 10 spans each
        if transport == "http":
            make = lambda: HttpExporter(endpoint=f"http://127.0.0.1:{r.http_port}/v1/traces", timeout=20)  # noqa: E731
        else:
            make = lambda: GrpcExporter(endpoint=f"127.0.0.1:{r.grpc_port}", insecure=True, timeout=20)  # noqa: E731
        results: list[SpanExportResult] = []
        threads = [threading.Thread(target=lambda b=b: results.append(make().export(b))) for b in batches]
        for t in threads:
            t.start()
        wait_until(
            lambda: refusals(r) >= 1, 15, "a refusal (429/503) of an export while the store is blocked"
        )
        body = encode_spans(batches[0]).SerializeToString()
        if transport == "http":  # while the store is blocked, a plain client sees the refusal and Retry-After
            status, headers, _ = _post(r.http_port, body, {"Content-Type": "application/x-protobuf"})
            assert status in (429, 503) and headers["retry-after"] == "1"
        assert refusals(r) >= 1
        gated.gate.set()
        for t in threads:
            t.join(30)
        assert results == [SpanExportResult.SUCCESS] * 4
    finally:
        gated.gate.set()
        r.stop()
    ids = [s.context.span_id.to_bytes(8, "big") for b in batches for s in b]
    rows = store.query(
        "SELECT span_id, count(*) AS n FROM spans WHERE span_id IN (SELECT unnest(?)) GROUP BY 1", [ids]
    ).to_pylist()
    assert len(rows) == 40 and all(row["n"] == 1 for row in rows)  # everything, exactly once


def test_a_full_queue_answers_grpc_resource_exhausted_with_retry_info(store: Store) -> None:
    gated = _GatedStore(store)
    r = OtlpReceiver(gated, OtlpConfig(http_port=0, grpc_port=0, max_queue_spans=10, retry_after_s=3))
    r.start()
    try:
        first = threading.Thread(target=lambda: HttpExporter(
            endpoint=f"http://127.0.0.1:{r.http_port}/v1/traces", timeout=20).export(_chain(2, seed=1)))  # fmt: skip
        first.start()  # its 10 spans wait at the gate, in a commit
        second = threading.Thread(target=lambda: HttpExporter(
            endpoint=f"http://127.0.0.1:{r.http_port}/v1/traces", timeout=20).export(_chain(2, seed=2)))  # fmt: skip
        wait_until(gated.entered.is_set, 15, "the first export's commit reaching the blocked store")
        second.start()  # its 10 spans fill the queue
        wait_until(
            lambda: _samples(r, "hopscope_write_queue_spans") == {(): 10},
            15,
            "the second export's 10 spans queued",
        )
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(
            encode_spans(_chain(1, seed=3)).SerializeToString()
        )
        with grpc.insecure_channel(f"127.0.0.1:{r.grpc_port}") as channel:
            with pytest.raises(grpc.RpcError) as err:
                trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        trailers = dict(err.value.trailing_metadata())
        status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
        info = error_details_pb2.RetryInfo()
        assert status.details[0].Unpack(info) and info.retry_delay.seconds == 3
        assert "write queue full" in status.message
    finally:
        gated.gate.set()
        first.join(30)
        second.join(30)
        r.stop()


def refusals(r: OtlpReceiver) -> float:
    """Requests the receiver refused with 429 or 503, over both transports."""
    return sum(v for k, v in _samples(r, "hopscope_otlp_requests_total").items() if k[1] in ("429", "503"))


def _samples(r: OtlpReceiver, name: str) -> dict[tuple[str, ...], float]:
    out = {}
    for metric in r.metrics.registry.collect():
        for s in metric.samples:
            if s.name == name:
                out[tuple(s.labels.values())] = s.value
    return out


def test_spans_to_table_maps_old_semconv_names_and_keeps_the_rest_as_text() -> None:
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    memory = InMemorySpanExporter()
    tracer_provider.add_span_processor(SimpleSpanProcessor(memory))
    with tracer_provider.get_tracer("t").start_as_current_span(
        "x",
        attributes={
            "http.method": "PUT",
            "http.status_code": 404,
            "http.response.status_code": 201,
            "n": 3,
            "f": 1.5,
            "b": False,
        },
    ):
        pass
    table = spans_to_table(encode_spans(memory.get_finished_spans())).table
    row = table.to_pylist()[0]
    assert row["http_method"] == "PUT" and row["http_status_code"] == 201
    attrs = dict(row["attributes"])
    assert attrs["n"] == "3" and attrs["f"] == "1.5" and attrs["b"] == "false"
    assert "http.method" not in attrs and "http.status_code" not in attrs
    assert trace.SpanKind.INTERNAL.value + 1 == row["kind"]


def test_a_client_that_hangs_up_before_its_answer_leaves_no_traceback(
    receiver: OtlpReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    body = _json_body(
        [_json_span("0af7651916cd43dd8448eb211c80319d", f"b7ad6b71692033{i:02x}") for i in range(50)]
    )
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", receiver.http_port)) as s:
            s.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # hang up with a reset
    deadline = time.monotonic() + 10
    while receiver._http._conns and time.monotonic() < deadline:  # every handler has answered (or tried to)
        time.sleep(0.05)
    assert not receiver._http._conns
    assert _post(receiver.http_port, _json_body([]), {"Content-Type": "application/json"})[0] == 200
    assert "Traceback" not in capfd.readouterr().err

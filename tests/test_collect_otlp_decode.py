"""The OTLP decoders against a plain per-span reading of the same requests (seeded).

Requests are read by numpy (the fast reader) and, for layouts it leaves alone, by protobuf into the
shadow form (the columnar reader); `reader` runs each test with either of them."""

from __future__ import annotations

import base64
import json
import random
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from hopscope.collectors import otlp, otlp_wire
from hopscope.collectors.otlp import OtlpError, decode_request, spans_to_table
from hopscope.collectors.otlp_common import MAX_FUTURE_NS

KEYS = [
    "http.route", "http.method", "http.request.method", "http.status_code", "http.response.status_code",
    "server.address", "peer.service", "net.peer.port", "model.name", "k" * 130, "ünï", "",
]  # fmt: skip


def _value(rng: random.Random) -> AnyValue:
    r = rng.random()
    if r < 0.3:
        return AnyValue(string_value=rng.choice(["", "GET", "200", "/p", "z" * 200, "٤٠٤", "-1"]))
    if r < 0.45:
        return AnyValue(int_value=rng.choice([0, 200, -5, 2**40, 404]))
    if r < 0.55:
        return AnyValue(double_value=rng.choice([1.0, 0.5, 1e-7, float("inf"), rng.random()]))
    if r < 0.62:
        return AnyValue(bool_value=rng.random() < 0.5)
    if r < 0.7:
        return AnyValue(bytes_value=rng.randbytes(rng.randrange(0, 5)))
    if r < 0.76:
        return AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="s")]))
    if r < 0.8:
        return AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key="q", value=AnyValue(bool_value=True))])
        )
    return AnyValue()


def _request(rng: random.Random, keys: list[str]) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(rng.randrange(1, 4)):
        rs = req.resource_spans.add()
        if rng.random() < 0.8:
            rs.resource.attributes.add(
                key="service.name", value=AnyValue(string_value=rng.choice(["a", "b"]))
            )
        for _ in range(rng.randrange(0, 3)):
            rs.resource.attributes.add(key=rng.choice(keys), value=_value(rng))
        for _ in range(rng.randrange(0, 3)):
            ss = rs.scope_spans.add()
            for _ in range(rng.randrange(0, 30)):
                s = ss.spans.add()
                s.trace_id = b"\0" * 16 if rng.random() < 0.05 else rng.randbytes(16)
                s.span_id = rng.randbytes(rng.choice([8] * 30 + [3]))
                if rng.random() < 0.5:
                    s.parent_span_id = b"\0" * 8 if rng.random() < 0.1 else rng.randbytes(8)
                s.start_time_unix_nano = rng.randrange(1, 2**62)
                s.end_time_unix_nano = (
                    1 if rng.random() < 0.03 else s.start_time_unix_nano + rng.randrange(10**10)
                )
                s.kind = rng.choice([0, 1, 2, 3, 9]) if rng.random() < 0.1 else rng.randrange(6)
                if rng.random() < 0.3:
                    s.status.code = rng.choice([0, 1, 2, 7])
                    s.status.message = rng.choice(["", "boom"])
                for _ in range(rng.randrange(0, 8)):
                    s.attributes.add(key=rng.choice(keys), value=_value(rng))
    return req


def _text(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "double_value":
        return repr(v.double_value)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind in ("array_value", "kvlist_value"):
        return otlp.any_value_text(v)
    return str(getattr(v, kind))


def _code(v: AnyValue) -> int | None:
    kind = v.WhichOneof("value")
    code = v.int_value if kind == "int_value" else None
    if kind == "string_value" and v.string_value.isdecimal():
        code = int(v.string_value)
    return code if code is not None and 0 <= code < 2**31 else None


def _reference(req: ExportTraceServiceRequest) -> tuple[list[dict[str, Any]], int]:
    """The spans table read the plain way: span by span, attribute by attribute."""
    rows, rejected = [], 0
    for rs in req.resource_spans:
        res = {kv.key: _text(kv.value) for kv in rs.resource.attributes}
        service = res.pop("service.name", "") or "unknown_service"
        host = res.pop("host.name", None)
        for ss in rs.scope_spans:
            for s in ss.spans:
                if (
                    len(s.trace_id) != 16 or s.trace_id == b"\0" * 16 or len(s.span_id) != 8
                    or s.span_id == b"\0" * 8 or len(s.parent_span_id) not in (0, 8)
                    or s.start_time_unix_nano == 0 or s.end_time_unix_nano < s.start_time_unix_nano
                    or s.start_time_unix_nano > time.time_ns() + MAX_FUTURE_NS
                    or not 0 <= s.kind <= 5 or not 0 <= s.status.code <= 2
                ):  # fmt: skip
                    rejected += 1
                    continue
                cols: dict[str, Any] = {}
                attrs = dict(res)
                for kv in s.attributes:
                    k, v = kv.key, kv.value
                    is_str = v.WhichOneof("value") == "string_value"
                    col = {"http.route": "http_route", "server.address": "server_address",
                           "peer.service": "peer_service", "http.request.method": "http_method"}.get(k)  # fmt: skip
                    if is_str and col:
                        cols[col] = v.string_value
                    elif is_str and k == "http.method":
                        cols.setdefault("old_method", v.string_value)
                    elif k in ("http.response.status_code", "http.status_code") and _code(v) is not None:
                        if k == "http.response.status_code":
                            cols["http_status_code"] = _code(v)
                        else:
                            cols.setdefault("old_code", _code(v))
                    else:
                        attrs[k] = _text(v)
                rows.append({
                    "trace_id": s.trace_id, "span_id": s.span_id, "parent_span_id": s.parent_span_id.strip(b"\0") and s.parent_span_id or None,
                    "service": service, "name": s.name, "kind": s.kind,
                    "start_time": datetime(1970, 1, 1) + timedelta(microseconds=s.start_time_unix_nano // 1000),
                    "duration_ms": (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6,
                    "status_code": s.status.code, "status_message": s.status.message or None,
                    "http_route": cols.get("http_route"),
                    "http_method": cols.get("http_method", cols.get("old_method")),
                    "http_status_code": cols.get("http_status_code", cols.get("old_code")),
                    "server_address": cols.get("server_address"), "peer_service": cols.get("peer_service"),
                    "host_name": host, "attributes": sorted(attrs.items()),
                })  # fmt: skip
    return rows, rejected


@pytest.fixture(params=["fast", "fast in place", "protobuf"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fast reader (spans split by protobuf, or located in place as in a large body) or protobuf's."""
    monkeypatch.setattr(otlp, "_FAST", request.param != "protobuf")
    if request.param == "fast in place":
        monkeypatch.setattr(otlp_wire, "_IN_PLACE_BYTES", 0)
    return str(request.param)


def _decoded_rows(req: ExportTraceServiceRequest) -> tuple[list[dict[str, Any]], int]:
    decoded = spans_to_table(req)
    rows = decoded.table.to_pylist()
    for r in rows:
        r["attributes"] = sorted(r["attributes"])
    return rows, decoded.rejected


@pytest.mark.parametrize(
    ("seed", "keys"),
    [(1, KEYS), (2, KEYS), (3, [k for k in KEYS if len(k) < 128]), (4, [k for k in KEYS if len(k) < 128])],
)
def test_decoders_store_what_a_span_by_span_reading_finds(seed: int, keys: list[str], reader: str) -> None:
    rng = random.Random(seed)
    for _ in range(25):  # the same attributes come back: later requests read them from the intern table
        req = _request(rng, keys)
        assert _decoded_rows(req) == _reference(req)


def test_decoder_stays_right_when_its_intern_table_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp, "_FAST", False)  # the intern table is the protobuf reader's
    monkeypatch.setattr(otlp, "_INTERN_MAX_ENTRIES", 5)
    rng = random.Random(9)
    for _ in range(20):
        req = _request(rng, KEYS[:8])
        assert _decoded_rows(req) == _reference(req)


def _span_with_raw_attributes(*raw: bytes) -> Any:
    """A request whose one span carries these serialized KeyValues exactly as given."""
    req = otlp.ShadowRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="svc"))
    s = rs.scope_spans.add().spans.add()
    s.trace_id, s.span_id = bytes(range(1, 17)), bytes(range(1, 9))
    s.start_time_unix_nano, s.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_250_000_000
    s.attributes.extend(raw)
    return otlp.ShadowRequest.FromString(req.SerializeToString())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"\x0a\x01k\x12\x05\x0a\x01x\x18\x05", ("k", "5")),  # a value with two fields: the last one wins
        (b"\x0a\x01k\x0a\x01j\x12\x02\x10\x01", ("j", "true")),  # the key twice: the last one wins
        (b"\x12\x02\x10\x01\x0a\x01m", ("m", "true")),  # the value before the key
        (b"\x0a\x01e\x12\x00", ("e", "")),  # an empty value
    ],
)
def test_non_canonical_attribute_encodings_decode_as_protobuf_reads_them(
    raw: bytes, expected: tuple, reader: str
) -> None:
    assert KeyValue.FromString(raw).key == expected[0]  # the encoding is valid protobuf
    [row] = spans_to_table(_span_with_raw_attributes(raw, b"\x0a\x01a\x12\x03\x0a\x01z")).table.to_pylist()
    assert dict(row["attributes"]) == {expected[0]: expected[1], "a": "z"}


@pytest.mark.parametrize(
    "raw",
    [b"\x0a\x02\xff\xfe\x12\x00", b"\x0a\x01k\x12\x03\x0a\x01\xff", b"\x0a\x05abc"],
)
def test_an_unreadable_attribute_refuses_the_request_with_400(raw: bytes, reader: str) -> None:
    with pytest.raises(OtlpError) as err:
        spans_to_table(_span_with_raw_attributes(b"\x0a\x01a\x12\x03\x0a\x01z", raw))
    assert err.value.status == 400 and "span attribute" in str(err.value)


def test_json_and_protobuf_of_the_same_spans_decode_to_the_same_rows(reader: str) -> None:
    rng = random.Random(5)
    req = _request(rng, [k for k in KEYS if k])
    doc = json.loads(json_format.MessageToJson(req))
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:  # OTLP/JSON ids are hex
                        s[key] = base64.b64decode(s[key]).hex()
    from_json = spans_to_table(decode_request(json.dumps(doc).encode(), "application/json", "", 1 << 24))
    from_pb = spans_to_table(decode_request(req.SerializeToString(), "application/x-protobuf", "", 1 << 24))
    assert from_json.table.to_pylist() == from_pb.table.to_pylist()
    assert from_json.rejected == from_pb.rejected


def _mutated(rng: random.Random, body: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(b))
        op = rng.random()
        if op < 0.6:
            b[pos] = rng.randrange(256)
        elif op < 0.8:
            del b[pos : pos + rng.randint(1, 5)]
        else:
            b[pos:pos] = rng.randbytes(rng.randint(1, 8))
    return bytes(b)


def _outcome(body: bytes) -> tuple[Any, ...]:
    try:
        d = spans_to_table(body)
    except OtlpError as exc:
        return ("error", exc.status)
    return ("ok", d.table.to_pylist(), d.rejected, d.message)


@pytest.mark.parametrize("in_place", [False, True], ids=["split by protobuf", "located in place"])
def test_fast_reader_and_protobuf_agree_on_damaged_bodies(
    in_place: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes flipped, cut or inserted: the fast reader gives protobuf's answer (rows, rejections and
    400s alike), reading what it can and leaving the rest to protobuf."""
    if in_place:
        monkeypatch.setattr(otlp_wire, "_IN_PLACE_BYTES", 0)
    rng = random.Random(11)
    bases = [_request(random.Random(s), KEYS).SerializeToString() for s in range(12)]
    bases = [b for b in bases if len(b) > 20]
    fast_read = 0
    for _ in range(600):
        body = _mutated(rng, rng.choice(bases))
        monkeypatch.setattr(otlp, "_FAST", False)
        expected = _outcome(body)
        monkeypatch.setattr(otlp, "_FAST", True)
        assert _outcome(body) == expected
        try:
            otlp_wire._fast_to_table(body)
            fast_read += 1
        except otlp_wire._Slow:
            pass
    assert fast_read > 50  # the fast reader itself answered many of them


@pytest.mark.parametrize("in_place", [False, True], ids=["split by protobuf", "located in place"])
def test_fast_reader_reads_the_plain_layout_without_protobuf(
    in_place: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if in_place:
        monkeypatch.setattr(otlp_wire, "_IN_PLACE_BYTES", 0)
    req = _request(random.Random(3), [k for k in KEYS if len(k) < 128])
    body = req.SerializeToString()
    decoded = otlp_wire._fast_to_table(body)  # raises _Slow where it would leave the request to protobuf
    assert (decoded.table.to_pylist(), decoded.rejected) == _reference(req)


@pytest.mark.parametrize(
    "values",
    [
        [0.0, -0.0, 1.0, -5.0, 0.1, 1e-4, 9.9e-5, 1e10, 9999999999.0, 2.0**53, 1e16, 1e300, 5e-324],
        [float("inf"), float("-inf"), float("nan"), 123456.789, -0.5, 1.5e-7, 3.0e15],
        [
            random.Random(s).uniform(-1e12, 1e12) * 10.0 ** random.Random(s).randint(-12, 4)
            for s in range(300)
        ],
    ],
)
def test_double_attributes_read_as_python_repr(values: list[float]) -> None:
    assert otlp_wire._double_texts(np.asarray(values, np.float64)).to_pylist() == [repr(v) for v in values]


def _one_span_request(start_ns: int) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes(range(1, 17)), bytes(range(1, 9)), "GET /"
    span.start_time_unix_nano, span.end_time_unix_nano = start_ns, start_ns + 5_000_000
    return req


def test_a_span_dated_far_ahead_is_rejected_by_name_and_one_an_hour_ahead_is_kept(reader: str) -> None:
    now = time.time_ns()
    year_2400 = int((datetime(2400, 1, 1) - datetime(1970, 1, 1)).total_seconds()) * 10**9
    far = spans_to_table(_one_span_request(year_2400))
    assert (far.table.num_rows, far.rejected) == (0, 1)
    assert "more than 24 h ahead" in far.message
    skewed = spans_to_table(_one_span_request(now + 3600 * 10**9))  # a clock an hour off: still a span
    assert (skewed.table.num_rows, skewed.rejected) == (1, 0)


_SPAN = {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "a",
         "startTimeUnixNano": "1", "endTimeUnixNano": "2"}  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"resourceSpans": [{"resource": "x"}]}, r"resourceSpans\[0\]\.resource: must be an object"),
        ({"resourceSpans": ["x"]}, r"resourceSpans\[0\]: must be an object"),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{**_SPAN, "kind": "NOPE"}]}]}]},
            r"spans\[0\]\.kind: \"NOPE\" is not a kind",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{**_SPAN, "kind": [2]}]}]}]},
            r"spans\[0\]\.kind: \[2\] is not a kind",
        ),
        (
            {"resourceSpans": [{"scopeSpans": [{"spans": [{**_SPAN, "status": {"code": "BAD"}}]}]}]},
            r"spans\[0\]\.status\.code: \"BAD\" is not a code",
        ),
    ],
    ids=["resource-as-text", "resource-spans-as-text", "kind-name", "kind-list", "status-code"],
)
def test_a_known_json_field_with_a_bad_value_is_a_400_naming_it(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(OtlpError, match=message) as info:
        decode_request(json.dumps(doc).encode(), "application/json", "", 1 << 20)
    assert info.value.status == 400


def test_unknown_json_fields_are_ignored_and_enum_names_are_read() -> None:
    doc = {"resourceSpans": [{"future": 1, "scopeSpans": [{"spans": [
        {**_SPAN, "kind": "SPAN_KIND_SERVER", "status": {"code": "STATUS_CODE_ERROR"}, "newField": "x"}]}]}]}  # fmt: skip
    span = decode_request(json.dumps(doc).encode(), "application/json", "", 1 << 20).resource_spans[0]
    assert (span.scope_spans[0].spans[0].kind, span.scope_spans[0].spans[0].status.code) == (2, 2)

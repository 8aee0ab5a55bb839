"""OTLP trace receiver: OTLP/HTTP on 4318 (protobuf, JSON, gzip) and OTLP/gRPC on 4317.

    parse:  decode_request(body, content_type, encoding) -> request (shadow form, below)
            spans_to_table(request) -> Decoded(table, rejected, message)
    store:  SpanWriter group-commits the tables of many requests in one store append;
            a request is answered 200 only after its spans are committed.

Decoding is columnar. The fast reader (collectors/otlp_wire.py) walks the spans' protobuf with numpy,
one pass per field position for all spans at once, and builds the Arrow columns from offsets into the
body: no Python object per span or per attribute. A layout it does not read (a field written twice, a
wire type protobuf would not expect, bad UTF-8) goes to the protobuf reader instead: requests parsed
into "shadow" messages, wire-compatible with ExportTraceServiceRequest, in which each span attribute
stays a serialized KeyValue, interned (most repeat); its rules and its 400s decide.

Limits, before any memory is spent: at most max_connections HTTP connections (a thread each), each
given header_timeout_s for its headers and body_timeout_s for its body by a reaper thread; a request
is admitted (max_inflight_bytes, by Content-Length) before its body is read, else 429 at once; attribute values are cut to attribute_value_length_limit. gRPC: messages up to
max_body_bytes, max_concurrent_requests RPCs at once, the same admission.

Backpressure: the write queue is bounded in spans and in bytes. A request that would overflow
it gets 429 (gRPC UNAVAILABLE) with Retry-After; a request that waited
`ack_timeout_s` without its commit starting is taken back out of the queue and gets
503, so a retry never duplicates spans. Nothing is dropped silently.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import hmac
import io
import json
import logging
import socket
import ssl
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from typing import Any, Protocol, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from hopscope.collectors.otlp_common import (
    _ADDRESS,
    _INT_SLOTS,
    _MAP,
    _METHOD,
    _METHOD_OLD,
    _PEER,
    _ROUTE,
    _SHADOW,
    _SPANS_SCHEMA,
    _STATUS,
    _STATUS_OLD,
    _STR_SLOTS,
    Resource,
    _core_columns,
    _keep_valid,
    _reason,
    _statuses,
    _valid_spans,
    resource_of,
    truncate_value,
)
from hopscope.collectors.otlp_common import Decoded as Decoded
from hopscope.collectors.otlp_common import OtlpError as OtlpError
from hopscope.collectors.otlp_common import any_value_text as any_value_text
from hopscope.collectors.otlp_wire import _fast_to_table, _Slow
from hopscope.collectors.selfmetrics import SelfMetrics
from hopscope.config.collect import OtlpConfig, TlsConfig, is_loopback
from hopscope.errors import ConfigError

log = logging.getLogger(__name__)

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportResponse = trace_service_pb2.ExportTraceServiceResponse

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {
    "application/x-protobuf": PROTOBUF,
    "application/protobuf": PROTOBUF,
    "application/json": JSON,
}


# -- parse (pure) ------------------------------------------------------------------------------


def decode_request(
    body: bytes,
    content_type: str,
    encoding: str,
    max_bytes: int,
    grown: Callable[[int], None] | None = None,
) -> Any:
    """Bytes of a POST /v1/traces -> the request for spans_to_table (protobuf: its bytes; JSON: the
    parsed message); OtlpError(400/413/415) for what cannot be read. grown(n) is told of the n
    bytes a gzip body grew by (it may refuse them by raising)."""
    media = _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    if media is None:
        raise OtlpError(415, f"unsupported content type {content_type[:80]!r}; use {PROTOBUF} or {JSON}")
    enc = encoding.strip().lower()
    if enc == "gzip":
        body = gunzip_limited(body, max_bytes)
        if grown is not None:
            grown(len(body))
    elif enc not in ("", "identity"):
        raise OtlpError(415, f"unsupported content encoding {encoding[:40]!r}; use gzip or none")
    if len(body) > max_bytes:
        raise OtlpError(413, f"body of {len(body)} bytes is over the limit of {max_bytes}")
    if media == PROTOBUF:
        return body  # read by spans_to_table, which answers 400 for what protobuf cannot parse
    return parse_json_request(body)


def gunzip_limited(body: bytes, max_bytes: int) -> bytes:
    """Decompress gzip, refusing (413) as soon as the output passes max_bytes: a bomb never expands."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, max_bytes + 1)
        if len(out) > max_bytes or d.unconsumed_tail:
            raise OtlpError(413, f"decompressed body is over the limit of {max_bytes} bytes")
        out += d.flush()
    except zlib.error as exc:
        raise OtlpError(400, f"bad gzip body: {exc}") from None
    if len(out) > max_bytes:
        raise OtlpError(413, f"decompressed body is over the limit of {max_bytes} bytes")
    if not d.eof:
        raise OtlpError(400, "bad gzip body: truncated")
    return out


def _hex_to_b64(value: Any) -> Any:
    """OTLP/JSON ids are hex; protobuf's JSON parser wants base64. Bad hex becomes '' (span rejected)."""
    if not isinstance(value, str):
        return value
    try:
        return base64.b64encode(binascii.unhexlify(value)).decode()
    except (binascii.Error, ValueError):
        return ""


def parse_json_request(body: bytes) -> ExportRequest:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise OtlpError(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise OtlpError(400, "JSON body must be an object with resourceSpans")
    try:
        for i, rs in enumerate(_list(doc, "resourceSpans", "resource_spans")):
            _check_shape(rs, f"resourceSpans[{i}]")
            for j, ss in enumerate(_list(rs, "scopeSpans", "scope_spans")):
                for k, span in enumerate(_list(ss, "spans")):
                    if not isinstance(span, dict):
                        continue
                    _check_span_enums(span, f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]")
                    for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                        if key in span:
                            span[key] = _hex_to_b64(span[key])
                    for link in _list(span, "links"):
                        if isinstance(link, dict):
                            for key in ("traceId", "trace_id", "spanId", "span_id"):
                                if key in link:
                                    link[key] = _hex_to_b64(link[key])
        req = ExportRequest()
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
        return req
    except OtlpError:
        raise
    except Exception as exc:  # ParseError, and type errors from odd shapes
        raise OtlpError(400, f"JSON is not an ExportTraceServiceRequest: {str(exc)[:300]}") from None


# Fields protobuf's lenient JSON parser would quietly drop when their value has the wrong shape (the
# leniency is for unknown fields, which OTLP says to ignore): a known field with a bad value is a 400.
_OBJECT_FIELDS = ("resource",)
_SPAN_ENUMS = {"kind": frozenset(trace_pb2.Span.SpanKind.keys())}
_STATUS_ENUMS = {"code": frozenset(trace_pb2.Status.StatusCode.keys())}


def _check_shape(rs: Any, where: str) -> None:
    if not isinstance(rs, dict):
        raise OtlpError(400, f"{where}: must be an object")
    for key in _OBJECT_FIELDS:
        if key in rs and not isinstance(rs[key], dict):
            raise OtlpError(400, f"{where}.{key}: must be an object, not {json.dumps(rs[key])[:60]}")


def _check_span_enums(span: dict[str, Any], where: str) -> None:
    """OTLP/JSON enums are integers (protobuf's enum names are accepted too); protobuf's lenient parser
    would read any other value as 0 (an unspecified kind, an unset status): refuse it by name."""
    status = span.get("status")
    for obj, fields, path in ((span, _SPAN_ENUMS, where), (status, _STATUS_ENUMS, f"{where}.status")):
        if not isinstance(obj, dict):
            continue
        for key, names in fields.items():
            value = obj.get(key)
            if value is None or isinstance(value, str) and value in names or type(value) is int:
                continue  # a number out of range rejects the span, as it does in protobuf
            raise OtlpError(
                400, f"{path}.{key}: {json.dumps(value)[:60]} is not a {key} (a number or a name)"
            )


def _list(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


ShadowRequest: Any = _SHADOW["Request"]


def to_shadow(req: Any) -> Any:
    """Any ExportTraceServiceRequest -> the shadow form spans_to_table reads."""
    return req if isinstance(req, ShadowRequest) else ShadowRequest.FromString(req.SerializeToString())


_INTERN_MAX_ENTRIES = 20_000
_INTERN_MAX_BYTES = 6 * 1024 * 1024
_INTERN_MAX_BLOB = 64 * 1024


class _Interner:
    """Serialized KeyValue -> id, with the id's key, text (cut to `limit`), slot and integer value.
    Append-only: a decoder holding one keeps valid ids while a full one is replaced by a fresh
    generation. A KeyValue too long to repeat often is given an id but not remembered."""

    __slots__ = ("ids", "keys", "texts", "slots", "ints", "nbytes", "lock", "limit", "cut")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.cut: set[int] = set()  # ids of values cut to the limit
        self.ids: dict[bytes, int] = {}
        self.keys: list[str] = []
        self.texts: list[str] = []
        self.slots: list[int] = []
        self.ints: list[int | None] = []
        self.nbytes = 0
        self.lock = threading.Lock()

    def full(self) -> bool:
        return len(self.keys) >= _INTERN_MAX_ENTRIES or self.nbytes >= _INTERN_MAX_BYTES

    def add(self, blobs: list[bytes]) -> list[int]:
        """Intern serialized KeyValues seen for the first time; returns their ids."""
        keys, texts, slots, codes, cut = _parse_key_values(blobs, self.limit)
        with self.lock:
            first = len(self.keys)
            self.keys += keys
            self.texts += texts
            self.slots += slots
            self.ints += codes
            self.cut.update(first + i for i in cut)
            self.nbytes += sum(map(len, texts)) + 160 * len(blobs)
            ids = list(range(first, first + len(blobs)))
            self.ids.update((b, i) for b, i in zip(blobs, ids, strict=True) if len(b) <= _INTERN_MAX_BLOB)
            self.nbytes += sum(len(b) for b in blobs if len(b) <= _INTERN_MAX_BLOB)
        return ids


# AnyValue: the tag byte of each `value` field (field number << 3 | wire type).
_ANY_TAGS = {
    0x0A: "string_value",
    0x10: "bool_value",
    0x18: "int_value",
    0x21: "double_value",
    0x2A: "array_value",
    0x32: "kvlist_value",
    0x3A: "bytes_value",
}

Parsed = tuple[list[str], list[str], list[int], list[int | None], list[int]]


def _parse_key_values(blobs: list[bytes], limit: int | None = None) -> Parsed:
    """Serialized KeyValues -> (keys, texts, slots, status codes, positions of the values cut to
    `limit`); OtlpError(400) if one is bad."""
    try:
        fast = _parse_key_values_columnar(blobs, limit)
    except Exception:  # the per-KeyValue parse below names the error
        fast = None
    if fast is not None:
        return fast
    try:
        kvs = [KeyValue.FromString(b) for b in blobs]
    except Exception as exc:  # DecodeError, invalid UTF-8 in a key or string value
        raise OtlpError(
            400, f"cannot parse protobuf ExportTraceServiceRequest: span attribute: {exc}"
        ) from None
    keys = [sys.intern(kv.key) for kv in kvs]
    texts, slots, codes, cut = [], [], [], []
    for i, (key, kv) in enumerate(zip(keys, kvs, strict=True)):
        v = kv.value
        if truncate_value(v, limit):
            cut.append(i)
        texts.append(any_value_text(v))
        slot, code = _MAP, None
        if v.WhichOneof("value") == "string_value" and key in _STR_SLOTS:
            slot = _STR_SLOTS[key]
        elif key in _INT_SLOTS and (code := _int_or_none(v)) is not None:
            slot = _INT_SLOTS[key]
        slots.append(slot)
        codes.append(code)
    return keys, texts, slots, codes, cut


def _parse_key_values_columnar(blobs: list[bytes], limit: int | None) -> Parsed | None:
    """All KeyValues in one protobuf call, then all their AnyValues in another, each kind into its
    own list. None where the layout is not the plain one (each KeyValue is its key then its value;
    each value has one field), checked first by position and then by counting; the caller then
    parses each KeyValue on its own, with protobuf's rules for repeated fields."""
    n = len(blobs)
    joined = b"".join(blobs)
    buf = np.frombuffer(joined, np.uint8)
    lens = np.fromiter(map(len, blobs), np.int64, n)
    at = np.zeros(n, np.int64)
    np.cumsum(lens[:-1], out=at[1:])
    if (lens < 4).any() or (buf[at] != 0x0A).any():
        return None
    key_len = buf[at + 1].astype(np.int64)
    if (key_len >= 0x80).any() or (key_len + 2 >= lens).any() or (buf[at + 2 + key_len] != 0x12).any():
        return None
    cols = _SHADOW["KeyValueColumns"].FromString(joined)
    keys, values = list(cols.key), list(cols.value)
    if len(keys) != n or len(values) != n:
        return None
    tags = [v[0] if v else 0 for v in values]
    where: dict[str, list[int]] = {kind: [] for kind in _ANY_TAGS.values()}
    for i, tag in enumerate(tags):
        if tag:
            kind = _ANY_TAGS.get(tag)
            if kind is None:
                return None
            where[kind].append(i)
    anys = _SHADOW["AnyValueColumns"].FromString(b"".join(values))
    found = {kind: getattr(anys, kind) for kind in where}
    if any(len(found[kind]) != len(idx) for kind, idx in where.items()):
        return None  # some value holds several fields: protobuf's last-one-wins decides, per value
    texts = [""] * n
    cut: list[int] = []
    for kind, idx in where.items():
        if not idx:
            continue
        got = found[kind]
        if kind == "string_value":
            out: list[str] = list(got)
            if limit is not None:
                for j, text in enumerate(out):
                    if len(text) > limit:
                        out[j] = text[:limit]
                        cut.append(idx[j])
        elif kind == "double_value":
            out = list(map(repr, got))
        elif kind == "int_value":
            out = list(map(str, got))
        elif kind == "bool_value":
            out = ["true" if x else "false" for x in got]
        elif kind == "bytes_value":
            if limit is not None:
                cut += [i for i, x in zip(idx, got, strict=True) if len(x) > limit]
            out = [x[:limit].hex() for x in got]
        else:  # arrays and key/value lists: rare, rendered as JSON
            out = []
            for i in idx:
                value = AnyValue.FromString(values[i])
                if truncate_value(value, limit):
                    cut.append(i)
                out.append(any_value_text(value))
        for i, text in zip(idx, out, strict=True):
            texts[i] = text
    keys = list(map(sys.intern, keys))
    slots = [_STR_SLOTS.get(k, _MAP) if t == 0x0A else _MAP for k, t in zip(keys, tags, strict=True)]
    codes: list[int | None] = [None] * n
    for i, key in enumerate(keys):
        if key in _INT_SLOTS and tags[i] in (0x0A, 0x18):
            code = int(texts[i]) if texts[i].isdecimal() or tags[i] == 0x18 else None
            if code is not None and 0 <= code < 2**31:
                slots[i], codes[i] = _INT_SLOTS[key], code
    return keys, texts, slots, codes, sorted(cut)


_interner = _Interner()
_interner_lock = threading.Lock()


def _current_interner(limit: int | None) -> _Interner:
    global _interner
    with _interner_lock:
        if _interner.full() or _interner.limit != limit:
            _interner = _Interner(limit)
        return _interner


def spans_to_table(req: Any, max_value_chars: int | None = None) -> Decoded:
    """Map every valid span to a `spans` row; count and explain the invalid ones.

    req: a serialized ExportTraceServiceRequest (what decode_request gives for protobuf), or the
    message itself. OtlpError(400) where protobuf cannot read it. String and bytes attribute values
    (span and resource) longer than max_value_chars are cut to it and counted in `truncated`, with
    the OpenTelemetry SDK's AttributeValueLengthLimit semantics."""
    body = bytes(req) if isinstance(req, bytes | bytearray | memoryview) else req.SerializeToString()
    if _FAST:
        try:
            return _fast_to_table(body, max_value_chars)
        except (_Slow, IndexError, ValueError, OverflowError, pa.ArrowException):
            pass  # protobuf reads it: its rules decide, its errors explain
    try:
        shadow = ShadowRequest.FromString(body)
    except Exception as exc:  # DecodeError, and anything upb raises on garbage
        detail = str(exc).replace("hopscope.otlp_shadow.Request", "ExportTraceServiceRequest")
        raise OtlpError(400, f"cannot parse protobuf ExportTraceServiceRequest: {detail}") from None
    return _shadow_to_table(shadow, max_value_chars)


_FAST = True  # tests turn it off to check the protobuf reading on its own


def _shadow_to_table(req: Any, max_value_chars: int | None = None) -> Decoded:
    """spans_to_table for a request protobuf has parsed (the shadow form): the reading of last resort."""
    spans: list[Any] = []
    res_of_scope: list[int] = []
    scope_sizes: list[int] = []
    resources: list[Resource] = []
    truncated = 0
    for rs in req.resource_spans:
        resource, cut = resource_of(rs.resource, max_value_chars)
        resources.append(resource)
        truncated += cut
        for ss in rs.scope_spans:
            batch = list(ss.spans)
            if batch:
                spans += batch
                res_of_scope.append(len(resources) - 1)
                scope_sizes.append(len(batch))
    n = len(spans)
    if n == 0:
        return Decoded(_SPANS_SCHEMA.empty_table(), 0, "", truncated)
    res_idx = np.repeat(np.asarray(res_of_scope, np.int64), scope_sizes)

    # Core fields: one tight pass per column.
    trace_ids = pa.array([s.trace_id for s in spans], pa.binary())
    span_ids = pa.array([s.span_id for s in spans], pa.binary())
    parents = pa.array([s.parent_span_id for s in spans], pa.binary())
    names = pa.array([s.name for s in spans], pa.string())
    kinds = np.fromiter([s.kind for s in spans], np.int64, n)
    starts = np.fromiter([s.start_time_unix_nano for s in spans], np.uint64, n)
    ends = np.fromiter([s.end_time_unix_nano for s in spans], np.uint64, n)
    codes, messages = _statuses([s.status for s in spans])
    status_codes = np.fromiter(codes, np.int64, n)
    status_msgs = pa.array(messages, pa.string()) if any(messages) else pa.nulls(n, pa.string())

    valid = _valid_spans(
        trace_ids, span_ids, pc.binary_length(parents).to_numpy(), kinds, starts, ends, status_codes
    )

    # Attributes: intern each serialized KeyValue, then work on ids.
    attr_lists = [s.attributes for s in spans]
    counts = np.fromiter(map(len, attr_lists), np.int64, n)
    interner = _current_interner(max_value_chars)
    blobs = list(chain.from_iterable(attr_lists))
    ids = list(map(interner.ids.get, blobs))
    if None in ids:  # attributes seen for the first time
        missing = list(dict.fromkeys([b for b, i in zip(blobs, ids, strict=True) if i is None]))
        new = dict(zip(missing, interner.add(missing), strict=True))
        ids = [new[b] if i is None else i for b, i in zip(blobs, ids, strict=True)]
    id_arr = np.fromiter(ids, np.int64, len(ids))
    if interner.cut:
        truncated += int(np.isin(id_arr, np.fromiter(interner.cut.copy(), np.int64)).sum())
    table = _assemble(
        n, res_idx, resources, counts, id_arr, interner,
        _core_columns(trace_ids, span_ids, _parent_or_null(parents), names, kinds, starts, ends,
                      status_codes, status_msgs),
    )  # fmt: skip
    decoded = _keep_valid(table, valid, lambda i: (spans[i].span_id, _reject_reason(spans[i])))
    return replace(decoded, truncated=truncated)


_NULL_BINARY = pa.scalar(None, pa.binary())
_ZERO_ID = pa.scalar(b"\0" * 8, pa.binary())


def _parent_or_null(parents: pa.Array) -> pa.Array:
    """NULL for a root: an empty parent id, or all zeros (the invalid span id; the rollups read it as a root)."""
    root = pc.or_(pc.equal(pc.binary_length(parents), 0), pc.equal(parents, _ZERO_ID))
    return pc.if_else(root, _NULL_BINARY, parents)


def _reject_reason(span: Any) -> str:
    return _reason(
        span.trace_id, span.span_id, span.parent_span_id, span.start_time_unix_nano, span.end_time_unix_nano
    )


def _assemble(
    n: int,
    res_idx: np.ndarray,
    resources: list[Resource],
    counts: np.ndarray,
    ids: np.ndarray,
    interner: _Interner,
    core: list[pa.Array],
) -> pa.Table:
    """Columns from the interned attribute ids: promoted semconv columns, the rest into the map."""
    # A request-local dictionary: the distinct attributes of this request, then the resources' pairs.
    enc = pa.array(ids).dictionary_encode()
    inv = enc.indices.to_numpy()
    uniq = enc.dictionary.to_pylist()
    keys = [interner.keys[i] for i in uniq]
    texts = [interner.texts[i] for i in uniq]
    slots = np.fromiter([interner.slots[i] for i in uniq], np.int64, len(uniq))
    codes = pa.array([interner.ints[i] for i in uniq], pa.int32())
    res_first = []
    for _service, _host, pairs in resources:
        res_first.append(len(keys))
        keys += [k for k, _ in pairs]
        texts += [t for _, t in pairs]
    key_arr = pa.array(keys, pa.string())
    text_arr = pa.array(texts, pa.string())

    span_of = np.repeat(np.arange(n, dtype=np.int64), counts)
    entry_slot = slots[inv] if len(inv) else np.zeros(0, np.int64)

    def column(values: pa.Array, *wanted: int) -> pa.Array:
        pos = np.full(n, -1, np.int64)
        for slot in wanted:  # later slots win: old names first, then the new ones
            sel = np.flatnonzero(entry_slot == slot)
            if slot in (_METHOD_OLD, _STATUS_OLD):
                sel = sel[::-1]  # an old name repeated: its first value counts; otherwise the last
            pos[span_of[sel]] = inv[sel]
        return values.take(pa.array(pos, mask=pos < 0))

    route = column(text_arr, _ROUTE)
    method = column(text_arr, _METHOD_OLD, _METHOD)
    status = column(codes, _STATUS_OLD, _STATUS)
    address = column(text_arr, _ADDRESS)
    peer = column(text_arr, _PEER)

    # The map: each span's resource pairs, then its own attributes that are not columns.
    keep = np.flatnonzero(entry_slot == _MAP)
    entry_local, entry_span = inv[keep].astype(np.int64), span_of[keep]
    res_sizes = np.asarray([len(r[2]) for r in resources], np.int64)
    per_span_res = res_sizes[res_idx]
    if per_span_res.any():
        res_span = np.repeat(np.arange(n, dtype=np.int64), per_span_res)
        res_start = np.asarray(res_first, np.int64)[res_idx]
        first_of_span = np.repeat(np.cumsum(per_span_res) - per_span_res, per_span_res)
        res_local = np.repeat(res_start, per_span_res) + (np.arange(len(res_span)) - first_of_span)
        order = np.argsort(np.concatenate([res_span, entry_span]), kind="stable")
        entry_local = np.concatenate([res_local, entry_local])[order]
        entry_span = np.concatenate([res_span, entry_span])[order]
    if len(entry_local) > 1:
        entry_local, entry_span = _last_of_each_key(entry_local, entry_span, keys)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(entry_span, minlength=n), out=offsets[1:])
    entries = pa.array(entry_local)
    attributes = pa.MapArray.from_arrays(pa.array(offsets), key_arr.take(entries), text_arr.take(entries))

    services = pa.array([r[0] for r in resources], pa.string()).take(pa.array(res_idx))
    hosts = pa.array([r[1] for r in resources], pa.string()).take(pa.array(res_idx))
    trace_ids, span_ids, parents, names, kinds, starts_ts, durations, st_codes, st_msgs = core
    return pa.Table.from_arrays(
        [trace_ids, span_ids, parents, services, names, kinds, starts_ts, durations, st_codes, st_msgs,
         route, method, status, address, peer, hosts, attributes],
        schema=_SPANS_SCHEMA,
    )  # fmt: skip


def _last_of_each_key(local: np.ndarray, span: np.ndarray, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A map holds each key once: where a span repeats a key (or overrides a resource attribute),
    keep the last value, as a dict would."""
    code_of: dict[str, int] = {}
    key_code = np.fromiter([code_of.setdefault(k, len(code_of)) for k in keys], np.int64, len(keys))
    pair = span * len(code_of) + key_code[local]
    ordered = np.sort(pair)
    if not (ordered[1:] == ordered[:-1]).any():
        return local, span
    _, last_rev = np.unique(pair[::-1], return_index=True)
    kept = np.sort(len(pair) - 1 - last_rev)
    return local[kept], span[kept]


def _int_or_none(v: AnyValue) -> int | None:
    kind = v.WhichOneof("value")
    if kind == "int_value":
        code = v.int_value
    elif kind == "string_value" and v.string_value.isdecimal():
        code = int(v.string_value)
    else:
        return None
    return code if 0 <= code < 2**31 else None


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS (top -H, /proc/<pid>/task/*/comm): where the daemon's
    CPU goes, by part. Linux only; elsewhere nothing happens."""
    global _prctl
    if _prctl is None:
        try:
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _prctl = False
    if _prctl:
        _prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME


_prctl: Any = None


def keep_big_buffers_mapped(threshold: int = 1 << 20) -> None:
    """Make glibc give every buffer over `threshold` its own mapping, returned to the OS when freed.
    By default glibc raises that threshold to the size of each big buffer freed (up to 32 MiB), after
    which request bodies come from the heap and stay resident once freed: 876 MB after the attack of
    issue 15 had ended. Linux/glibc only; elsewhere nothing happens."""
    try:
        ctypes.CDLL(None).mallopt(-3, threshold)  # M_MMAP_THRESHOLD; fixing it ends the raising
    except (OSError, AttributeError):
        pass


# -- store: group commit ------------------------------------------------------------------------


class SpanSink(Protocol):
    def append(self, table: str, data: pa.Table, *, deadline: float | None = None) -> int: ...


class Backpressure(Exception):
    """The queue is full or the store is not keeping up; the client should retry after a while."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_QUEUED, _COMMITTING, _DONE = 0, 1, 2
_EMPTY = pa.table({})


class _Ticket:
    __slots__ = ("table", "nbytes", "queued_at", "deadline", "state", "error", "done")

    def __init__(self, table: pa.Table, ack_timeout_s: float) -> None:
        self.table = table
        self.nbytes = table.get_total_buffer_size()  # .nbytes walks offsets: slower
        self.queued_at = time.monotonic()
        self.deadline = self.queued_at + ack_timeout_s  # the commit ends by then, committed or not
        self.state = _QUEUED
        self.error: str | None = None
        self.done = threading.Event()


class SpanWriter:
    """Commits spans of many requests in one store append; wakes each request once its spans are durable.

    A commit costs ~30 ms whatever its size, so while more requests are being decoded (`incoming`)
    the writer waits up to `commit_linger_s` for `commit_min_spans`; with nothing on its way it
    commits at once, so a lone request is not held back.
    """

    def __init__(
        self,
        store: SpanSink,
        *,
        max_queue_spans: int = 200_000,
        max_queue_bytes: int = 32 * 1024 * 1024,
        commit_max_spans: int = 25_000,
        commit_min_spans: int = 10_000,
        commit_linger_s: float = 0.25,
        incoming: Callable[[], int] = lambda: 0,
        metrics: SelfMetrics | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._max_queue = max_queue_spans
        self._max_bytes = max_queue_bytes
        self._commit_max = commit_max_spans
        self._commit_min = min(commit_min_spans, commit_max_spans)
        self._linger_s = commit_linger_s
        self._incoming = incoming
        self._metrics = metrics or SelfMetrics()
        self._on_commit = on_commit
        self._queue: deque[_Ticket] = deque()
        self._queued_spans = 0
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="otlp-writer", daemon=True)
        self._thread.start()

    @property
    def queued_spans(self) -> int:
        return self._queued_spans

    def write(self, table: pa.Table, *, ack_timeout_s: float) -> None:
        """Block until the spans are committed; Backpressure(429/503) if they were not taken in."""
        n = table.num_rows
        if n == 0:
            return
        ticket = _Ticket(table, ack_timeout_s)
        with self._cond:
            if self._closing:
                raise Backpressure(503, "the receiver is shutting down")
            if self._queued_spans and (
                self._queued_spans + n > self._max_queue
                or self._queued_bytes + ticket.nbytes > self._max_bytes
            ):
                raise Backpressure(
                    429,
                    f"write queue full ({self._queued_spans} spans, {self._queued_bytes >> 20} MiB "
                    "waiting for the store)",
                )
            self._queue.append(ticket)
            self._queued_spans += n
            self._queued_bytes += ticket.nbytes
            self._metrics.queue_spans.set(self._queued_spans)
            self._cond.notify()
        if not ticket.done.wait(ack_timeout_s):
            with self._cond:
                if ticket.state == _QUEUED:
                    # Not yet in a commit: take it back, so the client's retry cannot duplicate it.
                    self._queue.remove(ticket)
                    self._queued_spans -= n
                    self._queued_bytes -= ticket.nbytes
                    self._metrics.queue_spans.set(self._queued_spans)
                    raise Backpressure(503, f"the store did not commit within {ack_timeout_s:g} s")
            # In a commit now: its outcome decides the answer. The commit stops retrying at the
            # earliest deadline of its batch, so this wait is one commit attempt at most.
            ticket.done.wait()
        if ticket.error is not None:
            raise Backpressure(503, f"the store refused the write: {ticket.error}")

    def _loop(self) -> None:
        name_os_thread("otlp-writer")
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                linger_until = self._queue[0].queued_at + self._linger_s
                while (
                    not self._closing
                    and self._queued_spans < self._commit_min
                    and self._incoming() > 0
                    and (left := linger_until - time.monotonic()) > 0
                ):
                    self._cond.wait(min(left, 0.02))  # `incoming` changes without a notify
                batch: list[_Ticket] = []
                n = nbytes = 0
                while self._queue and (not batch or n + self._queue[0].table.num_rows <= self._commit_max):
                    t = self._queue.popleft()
                    t.state = _COMMITTING
                    batch.append(t)
                    n += t.table.num_rows
                    nbytes += t.nbytes
                self._queued_spans -= n
                self._queued_bytes -= nbytes
                self._metrics.queue_spans.set(self._queued_spans)
            error = None
            table: pa.Table | None = None
            t0 = time.perf_counter()
            try:
                table = batch[0].table if len(batch) == 1 else pa.concat_tables([t.table for t in batch])
                self._store.append("spans", table, deadline=min(t.deadline for t in batch))
            except Exception as exc:  # StoreError, or anything the sink raises: every waiter learns it
                error = str(exc)[:300]
                self._metrics.store_errors.labels("spans").inc()
                log.warning("span commit of %d spans failed: %s", n, error)
            else:
                self._metrics.commit_seconds.observe(time.perf_counter() - t0)
                self._metrics.commit_spans.observe(n)
                if self._on_commit is not None:
                    self._on_commit(n)
            table = None
            for t in batch:
                t.table = _EMPTY  # the waiter needs only the outcome; free the spans now
                t.error = error
                t.state = _DONE
                t.done.set()
            del batch

    def close(self, timeout: float | None = None) -> None:
        """Refuse new writes, commit everything queued, stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)


# -- the export step shared by HTTP and gRPC -------------------------------------------------------


class _Slot:
    """One admitted request's share of the in-flight budget."""

    __slots__ = ("nbytes", "large")

    def __init__(self) -> None:
        self.nbytes = 0
        self.large = False


class Admission:
    """Requests from their headers until their spans are queued: at most `max_requests`, whose bodies
    (by Content-Length, then as decompressed) hold `max_bytes` together. A body of more than a
    quarter of the budget is "large"; large ones together may hold three quarters of it at most
    (never less than one body of `max_body_bytes`), so big bodies trickling in never lock small
    exports out. Nothing waits: a request that does not fit is refused at once (429)."""

    def __init__(self, max_requests: int, max_bytes: int, max_body_bytes: int, metrics: SelfMetrics) -> None:
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._large_over = min(max_bytes // 4, max_bytes - max_body_bytes)
        self._large_max = max_bytes - self._large_over
        self._metrics = metrics
        self._lock = threading.Lock()
        self._requests = 0
        self._bytes = 0
        self._large_bytes = 0

    @contextmanager
    def admitted(self, nbytes: int, *, counted: bool = True) -> Iterator[_Slot]:
        """A slot holding nbytes of the budget; Backpressure(429) at once if there is none. An
        uncounted request is bounded by the bytes alone (OTLP/HTTP: its connections are bounded
        already, and a count would let a few slow small bodies lock everyone out)."""
        slot = _Slot()
        with self._lock:
            if counted and self._requests >= self._max_requests:
                raise Backpressure(429, f"{self._requests} requests in flight (max_concurrent_requests)")
            self._requests += 1
            self._metrics.inflight_requests.set(self._requests)
        try:
            self.grow(slot, nbytes)
            yield slot
        finally:
            with self._lock:
                self._requests -= 1
                self._bytes -= slot.nbytes
                if slot.large:
                    self._large_bytes -= slot.nbytes
                self._metrics.inflight_requests.set(self._requests)
                self._metrics.inflight_bytes.set(self._bytes)

    def grow(self, slot: _Slot, nbytes: int) -> None:
        """Add nbytes to a slot (a body that grew when decompressed); Backpressure(429) if they do not fit."""
        with self._lock:
            total = slot.nbytes + nbytes
            large = total > self._large_over
            large_bytes = self._large_bytes - (slot.nbytes if slot.large else 0) + (total if large else 0)
            if self._bytes + nbytes > self._max_bytes or large_bytes > self._large_max:
                raise Backpressure(
                    429,
                    f"{self._bytes >> 20} MiB of request bodies in flight; no room for {total >> 10} KiB more "
                    "(max_inflight_bytes)",
                )
            self._bytes += nbytes
            self._large_bytes = large_bytes
            slot.nbytes, slot.large = total, large
            self._metrics.inflight_bytes.set(self._bytes)


class Receiver:
    """Admit -> decode -> validate -> group commit; the transports only translate answers."""

    def __init__(self, writer: SpanWriter, cfg: OtlpConfig, metrics: SelfMetrics) -> None:
        self.writer = writer
        self.cfg = cfg
        self.metrics = metrics
        self.admission = Admission(
            cfg.max_concurrent_requests, cfg.inflight_bytes, cfg.max_body_bytes, metrics
        )
        # Decoding is Python and numpy under the GIL: two at once only take turns, and their
        # handovers cost CPU (~7 us per span more with 4 at once in benchmarks/otlp_ingest.py).
        # One decodes while the others wait with their bodies; commits (DuckDB, no GIL) run beside it.
        self._decode_lock = threading.Lock()
        self._decoding = 0
        self._decoding_lock = threading.Lock()

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """A request between its body and its place in the write queue (the writer lingers for them)."""
        with self._decoding_lock:
            self._decoding += 1
        try:
            yield
        finally:
            with self._decoding_lock:
                self._decoding -= 1

    @property
    def in_decoding(self) -> int:
        return self._decoding

    def authorized(self, header: str | None) -> bool:
        token = self.cfg.bearer_token
        if token is None:
            return True
        expected = b"Bearer " + token.get_secret_value().encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)

    def decode(self, req: Any, transport: str) -> Decoded:
        """Request -> spans table; OtlpError(400) where an attribute cannot be parsed."""
        with self._decode_lock:
            decoded = spans_to_table(req, self.cfg.attribute_value_length_limit)
        if decoded.rejected:
            self.metrics.spans_refused.labels(transport, "invalid").inc(decoded.rejected)
        if decoded.truncated:
            self.metrics.attributes_truncated.labels(transport).inc(decoded.truncated)
        return decoded

    def commit(self, decoded: Decoded, transport: str) -> None:
        """Block until the spans are committed; Backpressure if the queue or the store refuses them."""
        try:
            self.writer.write(decoded.table, ack_timeout_s=self.cfg.ack_timeout_s)
        except Backpressure:
            self.metrics.spans_refused.labels(transport, "backpressure").inc(decoded.table.num_rows)
            raise
        self.metrics.spans_received.labels(transport).inc(decoded.table.num_rows)

    def export(self, req: Any, transport: str) -> Decoded:
        decoded = self.decode(req, transport)
        self.commit(decoded, transport)
        return decoded


def _response(decoded: Decoded) -> ExportResponse:
    resp = ExportResponse()
    if decoded.rejected:
        resp.partial_success.rejected_spans = decoded.rejected
        resp.partial_success.error_message = decoded.message
    return resp


# -- OTLP/HTTP ---------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hopscope-otlp"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    sys_version = ""
    server: _HttpServer

    def setup(self) -> None:
        name_os_thread("otlp-http")
        super().setup()
        self.connection.settimeout(self.server.cfg.idle_timeout_s)

    def finish(self) -> None:
        self.server.untrack(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # request lines only; headers (tokens) never
        log.debug("%s %s", self.address_string(), format % args)

    def handle_one_request(self) -> None:
        """Wait idle for the next request (idle_timeout_s), then give its request line and headers
        header_timeout_s from their first byte: a client trickling them is cut, its thread freed."""
        cfg = self.server.cfg
        self.server.track(self.connection, _IDLE, cfg.idle_timeout_s)
        try:
            if not cast("io.BufferedReader", self.rfile).peek(1):
                self.close_connection = True
                return
        except OSError:  # idle past the timeout, reset, or cut: the connection closes
            self.close_connection = True
            return
        self.server.track(self.connection, _HEADERS, cfg.header_timeout_s)
        super().handle_one_request()

    def do_GET(self) -> None:
        if self._cut():
            return
        self._body_read = not self.headers.get("Content-Length") and not self.headers.get("Transfer-Encoding")
        self._reply_error(
            405 if self.path.split("?")[0] == "/v1/traces" else 404, "use POST /v1/traces", JSON
        )

    def do_POST(self) -> None:
        if self._cut():
            return
        receiver = self.server.receiver
        media = _CONTENT_TYPES.get(
            (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower(), JSON
        )
        self._body_read = False
        self._length = 0
        try:
            if self.path.split("?", 1)[0] != "/v1/traces":
                raise OtlpError(404, f"no endpoint {self.path[:80]!r}; traces go to POST /v1/traces")
            if not receiver.authorized(self.headers.get("Authorization")):
                raise OtlpError(401, "missing or wrong bearer token")
            self._length = self._content_length(receiver.cfg.max_body_bytes)
            if self.server.stopping:
                raise Backpressure(503, "the receiver is shutting down")
            # Admitted before the body is read: a request over the limits costs no memory.
            with receiver.admission.admitted(self._length, counted=False) as slot:
                body = self._read_body(self._length)
                self.server.track(self.connection, _WORK, None)
                with receiver.decoding():
                    req = decode_request(
                        body,
                        self.headers.get("Content-Type") or "",
                        self.headers.get("Content-Encoding") or "",
                        receiver.cfg.max_body_bytes,
                        grown=lambda n: receiver.admission.grow(slot, n),
                    )
                    del body
                    decoded = receiver.decode(req, "http")
                    del req
            receiver.commit(decoded, "http")
        except OtlpError as exc:
            receiver.metrics.requests.labels("http", str(exc.status)).inc()
            self._reply_error(exc.status, str(exc), media)
            return
        except Backpressure as exc:
            receiver.metrics.requests.labels("http", str(exc.status)).inc()
            if not self._body_read and self._length <= _DRAIN_CHEAP_BYTES:
                self._body_read = self._discard(self._length)  # a small body: keep the connection
            self._reply_error(exc.status, str(exc), media, retry_after=receiver.cfg.retry_after_s)
            return
        except Exception as exc:  # a bug must not leave the client hanging
            log.exception("OTLP/HTTP export failed")
            receiver.metrics.requests.labels("http", "500").inc()
            self._reply_error(500, f"internal error: {type(exc).__name__}", media)
            return
        receiver.metrics.requests.labels("http", "200").inc()
        resp = _response(decoded)
        if media == JSON:
            payload = json_format.MessageToJson(resp, indent=None).encode()
        else:
            payload = resp.SerializeToString()
        self._send(200, payload, media)

    def _cut(self) -> bool:
        """True (and the connection closes unanswered) if its headers were cut for arriving too slowly."""
        if self.server.was_cut(self.connection):
            self.close_connection = True
            return True
        return False

    def _content_length(self, max_bytes: int) -> int:
        """The body's length from the headers; 411/400/413 (the body read and dropped or the connection
        closed) for one that cannot be admitted."""
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise OtlpError(411, "send a Content-Length; chunked bodies are not accepted")
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            self.close_connection = True
            raise OtlpError(400, "bad Content-Length") from None
        if length < 0:
            self.close_connection = True
            raise OtlpError(400, "bad Content-Length")
        if length > max_bytes:
            # Read and drop a moderately large body so the client sees the 413, not a reset
            # connection (it is still sending); past that, close without reading it.
            if length <= _DRAIN_MAX_BYTES and self._discard(length):
                self._body_read = True
            else:
                self.close_connection = True  # the unread body would be taken for the next request
            raise OtlpError(413, f"body of {length} bytes is over the limit of {max_bytes}")
        return length

    def _read_body(self, length: int) -> bytes:
        self.server.track(self.connection, _BODY, self.server.cfg.body_timeout_s)
        try:
            body = self.rfile.read(length)
        except OSError:  # the socket timeout or a reset
            body = b""
        self._body_read = True
        if len(body) != length:
            self.close_connection = True
            if self.server.was_cut(self.connection):
                raise OtlpError(408, f"body not received within {self.server.cfg.body_timeout_s:g} s")
            raise OtlpError(400, "body shorter than Content-Length")
        return body

    def _discard(self, length: int) -> bool:
        self.server.track(self.connection, _BODY, self.server.cfg.body_timeout_s)
        try:
            while length > 0:
                chunk = self.rfile.read(min(length, 64 * 1024))
                if not chunk:
                    return False
                length -= len(chunk)
        except OSError:  # timed out or reset: the connection closes
            return False
        return True

    def _reply_error(self, status: int, message: str, media: str, *, retry_after: int | None = None) -> None:
        st = status_pb2.Status(code=_GRPC_CODE.get(status, code_pb2.UNKNOWN), message=message)
        if media == JSON:
            payload = json.dumps({"code": st.code, "message": message}).encode()
        else:
            payload = st.SerializeToString()
        self._send(status, payload, media, retry_after=retry_after)

    def _send(self, status: int, payload: bytes, media: str, *, retry_after: int | None = None) -> None:
        if not getattr(self, "_body_read", True):
            self.close_connection = True  # an unread body would be taken for the next request
        if self.server.stopping:
            self.close_connection = True
        self.send_response(
            status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        )
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(payload)))
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.server.track(self.connection, _IDLE, self.server.cfg.idle_timeout_s)


_DRAIN_MAX_BYTES = 32 * 1024 * 1024
_DRAIN_CHEAP_BYTES = (
    64 * 1024
)  # a refused body this small is read and dropped; a bigger one closes the connection

_GRPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    408: code_pb2.DEADLINE_EXCEEDED,
    411: code_pb2.INVALID_ARGUMENT,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}

# What a connection is doing, for its deadline: waiting for a request, reading its headers, reading
# its body, or working (decode and commit, bounded by ack_timeout_s: no deadline of its own).
_IDLE, _HEADERS, _BODY, _WORK = range(4)
_PHASE_NAMES = {_HEADERS: "headers", _BODY: "body"}


_SLOW_HEADERS_S = 1.0  # a client writes its headers at once: one still sending them after this may be cut


class _Conn:
    __slots__ = ("phase", "since", "deadline", "cut")

    def __init__(self) -> None:
        self.phase = _IDLE
        self.since = time.monotonic()
        self.deadline = float("inf")
        self.cut = False


class _HttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on its connections (a thread each) and a deadline per phase
    of each, kept by one reaper thread that shuts the read side of a connection past its deadline."""

    daemon_threads = False  # server_close() waits for handlers: acknowledged means committed
    block_on_close = True
    request_queue_size = 128
    _REAP_EVERY_S = 0.1

    def __init__(self, addr: tuple[str, int], receiver: Receiver, tls: ssl.SSLContext | None = None) -> None:
        self.receiver = receiver
        self.tls = tls
        self.cfg = receiver.cfg
        self.metrics = receiver.metrics
        self.stopping = False
        self._conns: dict[socket.socket, _Conn] = {}
        self._conns_lock = threading.Lock()
        self._open = 0
        self._refusal = _connection_refusal(receiver.cfg.retry_after_s)
        self._closed = threading.Event()
        self._cut_since_log: dict[str, int] = {}
        super().__init__(addr, _Handler)
        self._reaper = threading.Thread(target=self._reap, name="otlp-http-reaper", daemon=True)
        self._reaper.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread for the connection. With max_connections open, the connection waiting longest for
        a request, or sending its headers for over a second (no client needs that), is cut to make
        room; if there is none, 503 and close from here, without a thread."""
        with self._conns_lock:
            full = self._open >= self.cfg.max_connections and not self._evict_one()
            if not full:
                self._open += 1
                self.metrics.connections.set(self._open)
        if full:
            self.metrics.connections_refused.inc()
            if self.tls is None:
                _refuse_connection(request, self._refusal)
            else:  # a 503 needs a handshake, which the accept loop must not wait for: just close
                request.close()
            return
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection (in its own thread); over TLS, after a handshake that must finish within
        header_timeout_s (tracked like headers: a client trickling it is cut, or evicted when full)."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        conn = self.tls.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            self.track(conn, _HEADERS, self.cfg.header_timeout_s)
            conn.settimeout(self.cfg.header_timeout_s)
            try:
                conn.do_handshake()
            except OSError as exc:  # a plaintext client, no or an unknown client certificate, too slow
                self.untrack(conn)
                self.metrics.tls_handshakes_failed.inc()
                log.debug("OTLP/HTTP TLS handshake with %s failed: %s", client_address, exc)
                return
            super().finish_request(conn, client_address)
        finally:
            try:
                socket.socket.shutdown(conn, socket.SHUT_WR)  # the answer's last bytes go out before close
            except OSError:
                pass
            conn.close()

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self._conns_lock:
            self._open -= 1
            self.metrics.connections.set(self._open)

    def _evict_one(self) -> bool:
        """Cut the idle or slow-header connection that has waited longest (the lock is held); its
        thread ends in a moment, so the open connections pass the cap by a few at most."""
        now = time.monotonic()
        best: tuple[float, socket.socket, _Conn] | None = None
        for conn, st in self._conns.items():
            if st.cut or st.phase not in (_IDLE, _HEADERS):
                continue
            if st.phase == _HEADERS and now - st.since < _SLOW_HEADERS_S:
                continue
            key = st.since - (1e9 if st.phase == _HEADERS else 0)  # slow headers first, then idle
            if best is None or key < best[0]:
                best = (key, conn, st)
        if best is None:
            return False
        _, conn, st = best
        st.cut = True
        _shut_read(conn)
        self.metrics.reads_cut.labels("evicted").inc()
        self._cut_since_log["evicted"] = self._cut_since_log.get("evicted", 0) + 1
        return True

    def track(self, conn: socket.socket, phase: int, timeout_s: float | None) -> None:
        with self._conns_lock:
            st = self._conns.get(conn)
            if st is None:
                st = self._conns[conn] = _Conn()
            st.phase = phase
            st.since = time.monotonic()
            st.deadline = time.monotonic() + timeout_s if timeout_s is not None else float("inf")
            if self.stopping and phase == _IDLE:
                _shut_read(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.pop(conn, None)

    def was_cut(self, conn: socket.socket) -> bool:
        with self._conns_lock:
            st = self._conns.get(conn)
            return st is not None and st.cut

    def _reap(self) -> None:
        last_log = time.monotonic()
        while not self._closed.wait(self._REAP_EVERY_S):
            now = time.monotonic()
            with self._conns_lock:
                for conn, st in self._conns.items():
                    if st.deadline <= now and not st.cut:
                        st.cut = True
                        _shut_read(conn)
                        if st.phase in _PHASE_NAMES:  # an idle keep-alive connection just ends
                            phase = _PHASE_NAMES[st.phase]
                            self.metrics.reads_cut.labels(phase).inc()
                            self._cut_since_log[phase] = self._cut_since_log.get(phase, 0) + 1
            cut = self._cut_since_log
            if cut and now - last_log >= 10:  # one line per 10 s, however many were cut
                log.warning(
                    "OTLP/HTTP: cut %s connection(s) that sent too slowly (%s); %d open of max_connections %d",
                    sum(cut.values()),
                    ", ".join(f"{k}: {v}" for k, v in sorted(cut.items())),
                    self._open,
                    self.cfg.max_connections,
                )
                cut.clear()
                last_log = now

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up mid-request is one debug line, not a traceback on stderr."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("OTLP/HTTP client %s went away: %s", client_address, exc)
        else:
            log.error("OTLP/HTTP request from %s failed", client_address, exc_info=exc)

    def stop_accepting(self) -> None:
        """Stop the accept loop and close idle keep-alive connections; busy ones finish their request."""
        self.stopping = True
        self.shutdown()
        with self._conns_lock:
            for conn, st in self._conns.items():
                if st.phase == _IDLE:
                    _shut_read(conn)

    def shut_all_reads(self) -> None:
        """End every read still going on: a client still sending its body when the stop's grace is
        over gets no answer (nothing of it was acknowledged); requests waiting for their commit
        are not reading, and still answer."""
        with self._conns_lock:
            for conn in self._conns:
                _shut_read(conn)


def _connection_refusal(retry_after_s: int) -> bytes:
    body: bytes = status_pb2.Status(
        code=code_pb2.UNAVAILABLE, message="too many connections (max_connections); retry later"
    ).SerializeToString()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/x-protobuf\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: {retry_after_s}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _refuse_connection(sock: socket.socket, answer: bytes) -> None:
    """503 on a connection given no thread, from the accept loop: never blocks (a fresh socket's send
    buffer takes the few bytes; what the client sent already is dropped, so it reads the 503 rather
    than a reset where it can)."""
    try:
        sock.setblocking(False)
        for _ in range(4):
            if not sock.recv(65536):
                break
    except OSError:
        pass
    try:
        sock.send(answer)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    sock.close()


def _shut_read(conn: socket.socket) -> None:
    try:
        # The socket's own shutdown: SSLSocket.shutdown would also drop its TLS state, and an answer
        # written after (a 408) would go out in plaintext.
        socket.socket.shutdown(conn, socket.SHUT_RD)
    except OSError:
        pass


# -- OTLP/gRPC ---------------------------------------------------------------------------------


class _TraceService:
    """TraceService/Export over gRPC; requests arrive as their bytes, read like OTLP/HTTP's."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.stopping = False

    def export(self, request: Any, context: Any) -> ExportResponse:
        import grpc  # noqa: PLC0415  (loaded only where gRPC is enabled)

        r = self.receiver
        auth = dict(context.invocation_metadata()).get("authorization")
        if not r.authorized(auth if isinstance(auth, str) else None):
            r.metrics.requests.labels("grpc", "401").inc()
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if self.stopping:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the receiver is shutting down")
        try:
            with r.admission.admitted(len(request)), r.decoding():
                decoded = r.decode(request, "grpc")
            r.commit(decoded, "grpc")
        except OtlpError as exc:
            r.metrics.requests.labels("grpc", str(exc.status)).inc()
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Backpressure as exc:
            r.metrics.requests.labels("grpc", str(exc.status)).inc()
            # As the OTLP spec says: a full queue is RESOURCE_EXHAUSTED, a store that did not commit in
            # time UNAVAILABLE; both carry RetryInfo, which makes RESOURCE_EXHAUSTED retryable too.
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.status == 429 else grpc.StatusCode.UNAVAILABLE
            context.set_trailing_metadata(_retry_info(code, str(exc), r.cfg.retry_after_s))
            context.abort(code, str(exc))
        r.metrics.requests.labels("grpc", "200").inc()
        return _response(decoded)

    def handler(self) -> Any:
        import grpc  # noqa: PLC0415  (gRPC only)

        export = grpc.unary_unary_rpc_method_handler(
            self.export,
            request_deserializer=None,  # the bytes: spans_to_table reads them (400 for garbage)
            response_serializer=ExportResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": export}
        )


# -- both transports ---------------------------------------------------------------------------


class OtlpReceiver:
    """OTLP/HTTP and OTLP/gRPC in front of one SpanWriter."""

    def __init__(self, store: SpanSink, cfg: OtlpConfig, metrics: SelfMetrics | None = None) -> None:
        self.cfg = cfg
        self.tls = server_tls_context(cfg.tls) if cfg.tls.enabled else None  # bad files: before any thread
        self.metrics = metrics or SelfMetrics()
        self.writer = SpanWriter(
            store,
            max_queue_spans=cfg.max_queue_spans,
            max_queue_bytes=cfg.max_queue_bytes,
            commit_max_spans=cfg.commit_max_spans,
            commit_min_spans=cfg.commit_min_spans,
            commit_linger_s=cfg.commit_linger_s,
            incoming=lambda: self.receiver.in_decoding,
            metrics=self.metrics,
        )
        self.receiver = Receiver(self.writer, cfg, self.metrics)
        self._http: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: Any = None
        self._grpc_service: _TraceService | None = None
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    def start(self) -> None:
        keep_big_buffers_mapped()
        warning = exposure_warning(self.cfg)
        if warning:
            log.warning("%s", warning)
        try:
            self._http = _HttpServer((self.cfg.host, self.cfg.http_port), self.receiver, self.tls)
        except OSError as exc:
            self.writer.close()
            raise OSError(f"OTLP/HTTP cannot listen on {self.cfg.host}:{self.cfg.http_port}: {exc}") from exc
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)
        self._http_thread.start()
        if self.cfg.grpc_enabled:
            import grpc  # noqa: PLC0415  (~25 MiB: loaded only where gRPC is enabled)

            server = grpc.server(
                futures.ThreadPoolExecutor(
                    max_workers=self.cfg.max_concurrent_requests,
                    thread_name_prefix="otlp-grpc",
                    initializer=name_os_thread,
                    initargs=("otlp-grpc",),
                ),
                options=[
                    ("grpc.max_receive_message_length", self.cfg.max_body_bytes),
                    ("grpc.so_reuseport", 0),
                    ("grpc.max_connection_idle_ms", int(self.cfg.idle_timeout_s * 1000)),
                ],
                # gRPC reads a message whole before the handler sees it: RPCs past this are refused
                # RESOURCE_EXHAUSTED at once (the exporters retry it), so at most this many
                # messages of up to max_body_bytes are held.
                maximum_concurrent_rpcs=self.cfg.max_concurrent_requests,
            )
            self._grpc_service = _TraceService(self.receiver)
            server.add_generic_rpc_handlers((self._grpc_service.handler(),))
            address = f"{_grpc_host(self.cfg.host)}:{self.cfg.grpc_port}"
            try:
                if self.cfg.tls.enabled:
                    port = server.add_secure_port(address, _grpc_credentials(self.cfg.tls))
                else:
                    port = server.add_insecure_port(address)
            except RuntimeError as exc:
                port = 0
                err: Exception | None = exc
            else:
                err = None
            if not port:
                self.stop()
                raise OSError(
                    f"OTLP/gRPC cannot listen on {self.cfg.host}:{self.cfg.grpc_port}: {err or 'port in use'}"
                )
            server.start()
            self._grpc = server
            self.grpc_port = port

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop accepting, answer every request in flight after its commit, flush the queue."""
        if self._grpc_service is not None:
            self._grpc_service.stopping = True
        t_end = time.monotonic() + grace_s
        stopped_grpc = self._grpc.stop(grace_s) if self._grpc is not None else None
        if self._http is not None:
            self._http.stop_accepting()
            # A client trickling its body must not hold the stop past its grace.
            cut = threading.Timer(max(0.0, grace_s - 1.0), self._http.shut_all_reads)
            cut.daemon = True
            cut.start()
            self._http.server_close()  # joins handler threads; each waits for its commit
            cut.cancel()
        if stopped_grpc is not None:
            stopped_grpc.wait(max(0.0, t_end - time.monotonic()))
        self.writer.close(max(0.5, t_end - time.monotonic()))

    @property
    def addresses(self) -> list[str]:
        scheme = "https" if self.tls is not None else "http"
        out = [f"OTLP/HTTP {scheme}://{self.cfg.host}:{self.http_port}/v1/traces"]
        if self.grpc_port:
            tls = " (TLS)" if self.tls is not None else ""
            out.append(f"OTLP/gRPC {self.cfg.host}:{self.grpc_port}{tls}")
        return out


def exposure_warning(cfg: OtlpConfig) -> str | None:
    """The start-up warning for a receiver that any host can reach and that checks no client."""
    if is_loopback(cfg.host) or cfg.bearer_token is not None or cfg.tls.client_ca_file is not None:
        return None
    if cfg.allow_unauthenticated:
        return None
    return (
        f"the OTLP receiver listens on {cfg.host}, beyond this machine, and authenticates no client: "
        "anyone who reaches the port can write spans. Set [collect.otlp] bearer_token (or tls.client_ca_file "
        "for mutual TLS), or allow_unauthenticated = true if something in front authenticates them"
    )


def server_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The OTLP/HTTP server's TLS context (TLS 1.2 or later); ConfigError names the key and the file."""
    assert tls.cert_file is not None and tls.key_file is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"collect.otlp.tls: {tls.cert_file} and {tls.key_file} are not a PEM certificate and its "
            f"unencrypted private key ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"collect.otlp.tls: cannot read {tls.cert_file} or {tls.key_file}: {exc}") from None
    if tls.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"collect.otlp.tls.client_ca_file: {tls.client_ca_file}: not PEM CA certificates ({exc})"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _grpc_credentials(tls: TlsConfig) -> Any:
    """The same files for OTLP/gRPC (already checked by server_tls_context)."""
    import grpc  # noqa: PLC0415  (gRPC only)

    assert tls.cert_file is not None and tls.key_file is not None
    ca = tls.client_ca_file.read_bytes() if tls.client_ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _retry_info(code: Any, message: str, seconds: int) -> tuple[tuple[str, bytes], ...]:
    """RetryInfo as gRPC clients read it: in grpc-status-details-bin (google.rpc.Status with the RetryInfo
    detail, the standard) and in google.rpc.retryinfo-bin (what the OpenTelemetry Python exporter reads)."""
    from google.protobuf import any_pb2  # noqa: PLC0415  (with gRPC only)
    from google.rpc import error_details_pb2, status_pb2  # noqa: PLC0415  (with gRPC only)

    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = seconds
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
    )


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host

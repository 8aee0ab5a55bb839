"""What both span readers share: the protobuf reader in collectors/otlp.py and the numpy reader in
collectors/otlp_wire.py. The result and error types, the shadow messages (the protobuf views of a
request), the semantic-convention attributes stored as columns, span status parsing and the checks
that reject a span."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from hopscope.schema import SPANS


class OtlpError(Exception):
    """A request the receiver refuses; carries the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def any_value_text(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return str(v.int_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "double_value":
        return repr(v.double_value)
    if kind == "bytes_value":
        return v.bytes_value.hex()
    if kind is None:
        return ""
    return json.dumps(_any_value_py(v), separators=(",", ":"))


def _any_value_py(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_any_value_py(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value_py(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


@dataclass(frozen=True, slots=True)
class Decoded:
    table: pa.Table
    rejected: int
    message: str
    truncated: int = 0  # attribute values cut to the length limit


def truncate_value(v: AnyValue, limit: int | None) -> int:
    """Cut string and bytes values to `limit` characters or bytes, inside arrays and key/value lists
    too, as the OpenTelemetry SDK's AttributeValueLengthLimit does; returns how many were cut."""
    if limit is None:
        return 0
    kind = v.WhichOneof("value")
    if kind == "string_value":
        if len(v.string_value) > limit:
            v.string_value = v.string_value[:limit]
            return 1
    elif kind == "bytes_value":
        if len(v.bytes_value) > limit:
            v.bytes_value = v.bytes_value[:limit]
            return 1
    elif kind == "array_value":
        return sum(truncate_value(x, limit) for x in v.array_value.values)
    elif kind == "kvlist_value":
        return sum(truncate_value(kv.value, limit) for kv in v.kvlist_value.values)
    return 0


Resource = tuple[str, str | None, list[tuple[str, str]]]


def resource_of(resource: Any, limit: int | None) -> tuple[Resource, int]:
    """A Resource -> ((service, host, other attributes as text), values truncated)."""
    service, host = "unknown_service", None
    res_attrs: dict[str, str] = {}
    cut = 0
    for kv in resource.attributes:
        value = kv.value
        if limit is not None and value.ByteSize() > limit:
            value = AnyValue()
            value.CopyFrom(kv.value)
            cut += truncate_value(value, limit)
        if kv.key == "service.name":
            service = any_value_text(value) or "unknown_service"
        elif kv.key == "host.name":
            host = any_value_text(value)
        else:
            res_attrs[kv.key] = any_value_text(value)
    return (service, host, list(res_attrs.items())), cut


# Span attributes are the cost of decoding: a Python object per KeyValue and per AnyValue caps a
# decoder near ~100k spans/s on one core. The shadow Span declares `attributes` (and `status`) as
# bytes, so each arrives as its serialization: a repeated one costs one dict lookup. Span fields
# hopscope does not store (events, links, trace_state, flags) stay unknown fields, never parsed.
def _shadow_classes() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: PLC0415  (once, at first use)
    from opentelemetry.proto.resource.v1 import resource_pb2  # noqa: F401, PLC0415  (registers Resource)

    F = descriptor_pb2.FieldDescriptorProto  # noqa: N806
    package = "hopscope.otlp_shadow"
    fdp = descriptor_pb2.FileDescriptorProto(
        name="hopscope/otlp_shadow.proto",
        package=package,
        syntax="proto3",
        dependency=["opentelemetry/proto/resource/v1/resource.proto"],
    )

    def message(name: str, *fields: tuple[int, str, int, bool, str]) -> None:
        m = fdp.message_type.add(name=name)
        for number, fname, ftype, repeated, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype)
            f.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
            if type_name:
                f.type_name = type_name

    message("Request", (1, "resource_spans", F.TYPE_MESSAGE, True, f".{package}.ResourceSpans"))
    message(
        "ResourceSpans",
        (1, "resource", F.TYPE_MESSAGE, False, ".opentelemetry.proto.resource.v1.Resource"),
        (2, "scope_spans", F.TYPE_MESSAGE, True, f".{package}.ScopeSpans"),
    )
    message("ScopeSpans", (2, "spans", F.TYPE_MESSAGE, True, f".{package}.Span"))
    # The fast reader's view: the same request, each span left as its serialization (read by numpy).
    message(
        "SpanBytesRequest", (1, "resource_spans", F.TYPE_MESSAGE, True, f".{package}.SpanBytesResourceSpans")
    )
    message(
        "SpanBytesResourceSpans",
        (1, "resource", F.TYPE_MESSAGE, False, ".opentelemetry.proto.resource.v1.Resource"),
        (2, "scope_spans", F.TYPE_MESSAGE, True, f".{package}.SpanBytesScopeSpans"),
    )
    message("SpanBytesScopeSpans", (2, "spans", F.TYPE_BYTES, True, ""))
    message(
        "Span",
        (1, "trace_id", F.TYPE_BYTES, False, ""),
        (2, "span_id", F.TYPE_BYTES, False, ""),
        (4, "parent_span_id", F.TYPE_BYTES, False, ""),
        (5, "name", F.TYPE_STRING, False, ""),
        (6, "kind", F.TYPE_INT32, False, ""),  # the SpanKind enum on the wire
        (7, "start_time_unix_nano", F.TYPE_FIXED64, False, ""),
        (8, "end_time_unix_nano", F.TYPE_FIXED64, False, ""),
        (9, "attributes", F.TYPE_BYTES, True, ""),  # serialized KeyValue, parsed on first sight
        (15, "status", F.TYPE_BYTES, False, ""),  # serialized Status, likewise
    )
    # Concatenated KeyValues (or AnyValues) parse into one list per field, in order: a batch of new
    # attributes is read by two protobuf calls instead of a Python object per attribute.
    message(
        "KeyValueColumns",
        (1, "key", F.TYPE_STRING, True, ""),
        (2, "value", F.TYPE_BYTES, True, ""),
    )
    message(
        "AnyValueColumns",
        (1, "string_value", F.TYPE_STRING, True, ""),
        (2, "bool_value", F.TYPE_BOOL, True, ""),
        (3, "int_value", F.TYPE_INT64, True, ""),
        (4, "double_value", F.TYPE_DOUBLE, True, ""),
        (5, "array_value", F.TYPE_BYTES, True, ""),
        (6, "kvlist_value", F.TYPE_BYTES, True, ""),
        (7, "bytes_value", F.TYPE_BYTES, True, ""),
    )
    pool = descriptor_pool.Default()
    try:
        pool.FindMessageTypeByName(f"{package}.Request")
    except KeyError:
        pool.Add(fdp)
    return {
        m.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{m.name}"))
        for m in fdp.message_type
    }


_SHADOW = _shadow_classes()


# Semantic-convention attributes stored as columns (string values; the status code as an integer),
# the rest go to the map. Old names lose to new ones whatever the order.
_MAP, _ROUTE, _METHOD, _METHOD_OLD, _ADDRESS, _PEER, _STATUS, _STATUS_OLD = range(8)
_STR_SLOTS = {
    "http.route": _ROUTE,
    "http.request.method": _METHOD,
    "http.method": _METHOD_OLD,
    "server.address": _ADDRESS,
    "peer.service": _PEER,
}
_INT_SLOTS = {"http.response.status_code": _STATUS, "http.status_code": _STATUS_OLD}


_STATUS_CACHE: dict[bytes, tuple[int, str | None]] = {b"": (0, None)}


def _statuses(blobs: list[bytes]) -> tuple[list[int], list[str | None]]:
    """Serialized Status of each span -> (codes, messages); there are few distinct ones."""
    cache = _STATUS_CACHE
    found = list(map(cache.get, blobs))
    if None in found:
        for i, blob in enumerate(blobs):
            if found[i] is None:
                try:
                    st = Status.FromString(blob)
                except Exception as exc:
                    raise OtlpError(
                        400, f"cannot parse protobuf ExportTraceServiceRequest: span status: {exc}"
                    ) from None
                found[i] = entry = (st.code, st.message or None)
                if len(cache) < 4096:
                    cache[blob] = entry
    return [f[0] for f in found], [f[1] for f in found]  # type: ignore[index]


_SPANS_SCHEMA = SPANS.arrow_schema  # a property that builds the schema on every call


def _fixed_ids(ids: pa.Array, size: int) -> np.ndarray:
    """True where an id has `size` bytes and is not all zero."""
    ok = pc.and_(pc.equal(pc.binary_length(ids), size), pc.not_equal(ids, pa.scalar(b"\0" * size)))
    return np.asarray(ok.to_numpy(zero_copy_only=False), dtype=bool)


# A span that starts further ahead than this is refused: a clock that far off (or a year-2400 typo)
# would put it past every rollup window and every retention cut, stored for ever and never counted.
MAX_FUTURE_NS = 24 * 3600 * 10**9


def _latest_start_ns() -> int:
    return time.time_ns() + MAX_FUTURE_NS


def _valid_spans(
    trace_ids: pa.Array,
    span_ids: pa.Array,
    parent_sizes: np.ndarray,
    kinds: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    status_codes: np.ndarray,
) -> np.ndarray:
    """True for each span the checks keep (``_reason`` says why one is rejected)."""
    ok: np.ndarray = (
        (starts != 0)
        & (starts <= np.uint64(_latest_start_ns()))
        & (ends >= starts)
        & (kinds >= 0)
        & (kinds <= 5)
        & (status_codes >= 0)
        & (status_codes <= 2)
        & _fixed_ids(trace_ids, 16)
        & _fixed_ids(span_ids, 8)
        & np.isin(parent_sizes, (0, 8))
    )
    return ok


def _core_columns(
    trace_ids: pa.Array,
    span_ids: pa.Array,
    parents: pa.Array,
    names: pa.Array,
    kinds: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    status_codes: np.ndarray,
    status_msgs: pa.Array,
) -> list[pa.Array]:
    """The spans table's first columns, in its order: ids, name, kind, start (us), duration (ms), status."""
    return [
        trace_ids,
        span_ids,
        parents,
        names,
        pa.array(kinds.astype(np.int8)),
        pa.array((starts // 1000).astype(np.int64), pa.timestamp("us")),
        pa.array((ends - starts).astype(np.float64) / 1e6),
        pa.array(status_codes.astype(np.int8)),
        status_msgs,
    ]


def _keep_valid(table: pa.Table, valid: np.ndarray, why: Callable[[int], tuple[bytes, str]]) -> Decoded:
    """The valid spans of the table; for rejected ones, the count and why the first was: ``why(i)`` gives
    span i's (span id, reason)."""
    rejected = int(len(valid) - np.count_nonzero(valid))
    if not rejected:
        return Decoded(table, 0, "")
    sid, reason = why(int(np.argmin(valid)))
    message = f"{rejected} span(s) rejected; first: span {sid.hex() or '?'}: {reason}"
    return Decoded(table.filter(pa.array(valid)), rejected, message)


def _reason(tid: bytes, sid: bytes, pid: bytes | None, start: int, end: int) -> str:
    pid = pid or b""
    if len(tid) != 16 or tid == b"\0" * 16:
        return "trace_id must be 16 bytes, not all zero"
    if len(sid) != 8 or sid == b"\0" * 8:
        return "span_id must be 8 bytes, not all zero"
    if len(pid) not in (0, 8):
        return "parent_span_id must be empty or 8 bytes"
    if start == 0 or end < start:
        return "start_time_unix_nano must be set and not after end_time_unix_nano"
    if start > _latest_start_ns():
        return "start_time_unix_nano is more than 24 h ahead of this receiver's clock"
    return "kind or status code out of range"

"""OTLP trace receiver: OTLP/HTTP on 4318 (protobuf, JSON, gzip) and OTLP/gRPC on 4317.

    parse:  decode_request(body, content_type, encoding) -> ExportTraceServiceRequest   (pure)
            spans_to_table(request) -> Decoded(table, rejected, message)                (pure)
    store:  SpanWriter group-commits the tables of many requests in one store append;
            a request is answered 200 only after its spans are committed.

Backpressure: the write queue is bounded in spans. A request that would overflow
it gets 429 (gRPC UNAVAILABLE) with Retry-After; a request that waited
`ack_timeout_s` without its commit starting is taken back out of the queue and gets
503, so a retry never duplicates spans. Nothing is dropped silently.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import grpc
import pyarrow as pa
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collectors.config import OtlpConfig
from collectors.selfmetrics import SelfMetrics
from hopscope.schema import SPANS

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

# Semantic-convention attributes stored as columns; old names are accepted where the new one is absent.
_STR_COLUMNS = {
    "http.route": "http_route",
    "http.request.method": "http_method",
    "http.method": "http_method",
    "server.address": "server_address",
    "peer.service": "peer_service",
}
_NEW_NAME = {"http.method": "http.request.method", "http.status_code": "http.response.status_code"}
_STATUS_KEYS = ("http.response.status_code", "http.status_code")


class OtlpError(Exception):
    """A request the receiver refuses; carries the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- parse (pure) ------------------------------------------------------------------------------


def decode_request(body: bytes, content_type: str, encoding: str, max_bytes: int) -> ExportRequest:
    """Bytes of a POST /v1/traces -> the request; OtlpError(400/413/415) for what cannot be read."""
    media = _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
    if media is None:
        raise OtlpError(415, f"unsupported content type {content_type[:80]!r}; use {PROTOBUF} or {JSON}")
    enc = encoding.strip().lower()
    if enc == "gzip":
        body = gunzip_limited(body, max_bytes)
    elif enc not in ("", "identity"):
        raise OtlpError(415, f"unsupported content encoding {encoding[:40]!r}; use gzip or none")
    if len(body) > max_bytes:
        raise OtlpError(413, f"body of {len(body)} bytes is over the limit of {max_bytes}")
    if media == PROTOBUF:
        req = ExportRequest()
        try:
            req.ParseFromString(body)
        except Exception as exc:  # DecodeError, and anything upb raises on garbage
            raise OtlpError(400, f"cannot parse protobuf ExportTraceServiceRequest: {exc}") from None
        return req
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
        for rs in _list(doc, "resourceSpans", "resource_spans"):
            for ss in _list(rs, "scopeSpans", "scope_spans"):
                for span in _list(ss, "spans"):
                    if not isinstance(span, dict):
                        continue
                    for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
                        if key in span:
                            span[key] = _hex_to_b64(span[key])
                    for link in _list(span, "links"):
                        if isinstance(link, dict):
                            for key in ("traceId", "trace_id", "spanId", "span_id"):
                                if key in link:
                                    link[key] = _hex_to_b64(link[key])
        return json_format.ParseDict(doc, ExportRequest(), ignore_unknown_fields=True)
    except OtlpError:
        raise
    except Exception as exc:  # ParseError, and type errors from odd shapes
        raise OtlpError(400, f"JSON is not an ExportTraceServiceRequest: {str(exc)[:300]}") from None


def _list(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


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


def spans_to_table(req: ExportRequest) -> Decoded:
    """Map every valid span to a `spans` row; count and explain the invalid ones."""
    trace_ids: list[bytes] = []
    span_ids: list[bytes] = []
    parents: list[bytes | None] = []
    services: list[str] = []
    names: list[str] = []
    kinds: list[int] = []
    starts: list[int] = []
    durations: list[float] = []
    status_codes: list[int] = []
    status_msgs: list[str | None] = []
    routes: list[str | None] = []
    methods: list[str | None] = []
    http_codes: list[int | None] = []
    addresses: list[str | None] = []
    peers: list[str | None] = []
    hosts: list[str | None] = []
    offsets: list[int] = [0]
    keys: list[str] = []
    items: list[str] = []
    rejected = 0
    first_reason = ""

    for rs in req.resource_spans:
        service = "unknown_service"
        host: str | None = None
        res_attrs: list[tuple[str, str]] = []
        for kv in rs.resource.attributes:
            if kv.key == "service.name":
                service = any_value_text(kv.value) or "unknown_service"
            elif kv.key == "host.name":
                host = any_value_text(kv.value)
            else:
                res_attrs.append((kv.key, any_value_text(kv.value)))
        for ss in rs.scope_spans:
            for span in ss.spans:
                tid, sid, pid = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                reason = None
                if len(tid) != 16 or tid == b"\0" * 16:
                    reason = "trace_id must be 16 bytes, not all zero"
                elif len(sid) != 8 or sid == b"\0" * 8:
                    reason = "span_id must be 8 bytes, not all zero"
                elif len(pid) not in (0, 8):
                    reason = "parent_span_id must be empty or 8 bytes"
                elif start == 0 or end < start:
                    reason = "start_time_unix_nano must be set and not after end_time_unix_nano"
                elif not 0 <= span.kind <= 5 or not 0 <= span.status.code <= 2:
                    reason = "kind or status code out of range"
                if reason is not None:
                    rejected += 1
                    first_reason = first_reason or f"span {sid.hex() or '?'}: {reason}"
                    continue
                route = method = address = peer = None
                http_code: int | None = None
                attrs: dict[str, str] = dict(res_attrs)
                for kv in span.attributes:
                    key = kv.key
                    v = kv.value
                    col = _STR_COLUMNS.get(key)
                    if col is not None and v.WhichOneof("value") == "string_value":
                        s = v.string_value
                        if col == "http_route":
                            route = s
                        elif col == "http_method":
                            if key == "http.request.method" or method is None:
                                method = s
                        elif col == "server_address":
                            address = s
                        else:
                            peer = s
                        continue
                    if key in _STATUS_KEYS:
                        code = _int_or_none(v)
                        if code is not None:
                            if key == "http.response.status_code" or http_code is None:
                                http_code = code
                            continue
                    attrs[key] = any_value_text(v)
                trace_ids.append(tid)
                span_ids.append(sid)
                parents.append(pid or None)
                services.append(service)
                names.append(span.name)
                kinds.append(span.kind)
                starts.append(start // 1000)
                durations.append((end - start) / 1e6)
                status_codes.append(span.status.code)
                status_msgs.append(span.status.message or None)
                routes.append(route)
                methods.append(method)
                http_codes.append(http_code)
                addresses.append(address)
                peers.append(peer)
                hosts.append(host)
                keys.extend(attrs.keys())
                items.extend(attrs.values())
                offsets.append(len(keys))

    table = pa.Table.from_arrays(
        [
            pa.array(trace_ids, pa.binary()),
            pa.array(span_ids, pa.binary()),
            pa.array(parents, pa.binary()),
            pa.array(services, pa.string()),
            pa.array(names, pa.string()),
            pa.array(kinds, pa.int8()),
            pa.array(starts, pa.int64()).cast(pa.timestamp("us")),
            pa.array(durations, pa.float64()),
            pa.array(status_codes, pa.int8()),
            pa.array(status_msgs, pa.string()),
            pa.array(routes, pa.string()),
            pa.array(methods, pa.string()),
            pa.array(http_codes, pa.int32()),
            pa.array(addresses, pa.string()),
            pa.array(peers, pa.string()),
            pa.array(hosts, pa.string()),
            pa.MapArray.from_arrays(
                pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(items, pa.string())
            ),
        ],
        schema=SPANS.arrow_schema,
    )
    message = ""
    if rejected:
        message = f"{rejected} span(s) rejected; first: {first_reason}"
    return Decoded(table, rejected, message)


def _int_or_none(v: AnyValue) -> int | None:
    kind = v.WhichOneof("value")
    if kind == "int_value":
        code = v.int_value
    elif kind == "string_value" and v.string_value.isdigit():
        code = int(v.string_value)
    else:
        return None
    return code if 0 <= code < 2**31 else None


# -- store: group commit ------------------------------------------------------------------------


class SpanSink(Protocol):
    def append(self, table: str, data: pa.Table) -> int: ...


class Backpressure(Exception):
    """The queue is full or the store is not keeping up; the client should retry after a while."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_QUEUED, _COMMITTING, _DONE = 0, 1, 2


class _Ticket:
    __slots__ = ("table", "state", "error", "done")

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.state = _QUEUED
        self.error: str | None = None
        self.done = threading.Event()


class SpanWriter:
    """Commits spans of many requests in one store append; wakes each request once its spans are durable."""

    def __init__(
        self,
        store: SpanSink,
        *,
        max_queue_spans: int = 200_000,
        commit_max_spans: int = 50_000,
        metrics: SelfMetrics | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._max_queue = max_queue_spans
        self._commit_max = commit_max_spans
        self._metrics = metrics or SelfMetrics()
        self._on_commit = on_commit
        self._queue: deque[_Ticket] = deque()
        self._queued_spans = 0
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
        ticket = _Ticket(table)
        with self._cond:
            if self._closing:
                raise Backpressure(503, "the receiver is shutting down")
            if self._queued_spans and self._queued_spans + n > self._max_queue:
                raise Backpressure(
                    429, f"write queue full ({self._queued_spans} spans waiting for the store)"
                )
            self._queue.append(ticket)
            self._queued_spans += n
            self._metrics.queue_spans.set(self._queued_spans)
            self._cond.notify()
        if not ticket.done.wait(ack_timeout_s):
            with self._cond:
                if ticket.state == _QUEUED:
                    # Not yet in a commit: take it back, so the client's retry cannot duplicate it.
                    self._queue.remove(ticket)
                    self._queued_spans -= n
                    self._metrics.queue_spans.set(self._queued_spans)
                    raise Backpressure(503, f"the store did not commit within {ack_timeout_s:g} s")
            ticket.done.wait()  # in a commit now: its outcome decides the answer
        if ticket.error is not None:
            raise Backpressure(503, f"the store refused the write: {ticket.error}")

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch: list[_Ticket] = []
                n = 0
                while self._queue and (not batch or n + self._queue[0].table.num_rows <= self._commit_max):
                    t = self._queue.popleft()
                    t.state = _COMMITTING
                    batch.append(t)
                    n += t.table.num_rows
                self._queued_spans -= n
                self._metrics.queue_spans.set(self._queued_spans)
            error = None
            t0 = time.perf_counter()
            try:
                table = batch[0].table if len(batch) == 1 else pa.concat_tables([t.table for t in batch])
                self._store.append("spans", table)
            except Exception as exc:  # StoreError, or anything the sink raises: every waiter learns it
                error = str(exc)[:300]
                self._metrics.store_errors.labels("spans").inc()
                log.warning("span commit of %d spans failed: %s", n, error)
            else:
                self._metrics.commit_seconds.observe(time.perf_counter() - t0)
                self._metrics.commit_spans.observe(n)
                if self._on_commit is not None:
                    self._on_commit(n)
            for t in batch:
                t.error = error
                t.state = _DONE
                t.done.set()

    def close(self, timeout: float | None = None) -> None:
        """Refuse new writes, commit everything queued, stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)


# -- the export step shared by HTTP and gRPC -------------------------------------------------------


class Receiver:
    """Decode -> validate -> group commit; the transports only translate answers."""

    def __init__(self, writer: SpanWriter, cfg: OtlpConfig, metrics: SelfMetrics) -> None:
        self.writer = writer
        self.cfg = cfg
        self.metrics = metrics
        self._slots = threading.BoundedSemaphore(cfg.max_concurrent_requests)

    def authorized(self, header: str | None) -> bool:
        token = self.cfg.bearer_token
        if token is None:
            return True
        expected = b"Bearer " + token.get_secret_value().encode()
        return header is not None and hmac.compare_digest(header.encode(), expected)

    def export(self, req: ExportRequest, transport: str) -> Decoded:
        decoded = spans_to_table(req)
        if decoded.rejected:
            self.metrics.spans_refused.labels(transport, "invalid").inc(decoded.rejected)
        try:
            self.writer.write(decoded.table, ack_timeout_s=self.cfg.ack_timeout_s)
        except Backpressure:
            self.metrics.spans_refused.labels(transport, "backpressure").inc(decoded.table.num_rows)
            raise
        self.metrics.spans_received.labels(transport).inc(decoded.table.num_rows)
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
        super().setup()
        self.connection.settimeout(self.server.idle_timeout_s)
        self.server.track(self.connection, busy=False)

    def finish(self) -> None:
        self.server.untrack(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # request lines only; headers (tokens) never
        log.debug("%s %s", self.address_string(), format % args)

    def parse_request(self) -> bool:
        self.server.track(self.connection, busy=True)
        return super().parse_request()

    def do_GET(self) -> None:
        self._body_read = not self.headers.get("Content-Length") and not self.headers.get("Transfer-Encoding")
        self._reply_error(
            405 if self.path.split("?")[0] == "/v1/traces" else 404, "use POST /v1/traces", JSON
        )

    def do_POST(self) -> None:
        receiver = self.server.receiver
        media = _CONTENT_TYPES.get(
            (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower(), JSON
        )
        self._body_read = False
        try:
            if self.path.split("?", 1)[0] != "/v1/traces":
                raise OtlpError(404, f"no endpoint {self.path[:80]!r}; traces go to POST /v1/traces")
            if not receiver.authorized(self.headers.get("Authorization")):
                raise OtlpError(401, "missing or wrong bearer token")
            body = self._read_body(receiver.cfg.max_body_bytes)
            if self.server.stopping:
                raise Backpressure(503, "the receiver is shutting down")
            with receiver._slots:
                req = decode_request(
                    body,
                    self.headers.get("Content-Type") or "",
                    self.headers.get("Content-Encoding") or "",
                    receiver.cfg.max_body_bytes,
                )
                del body
            decoded = receiver.export(req, "http")
        except OtlpError as exc:
            receiver.metrics.requests.labels("http", str(exc.status)).inc()
            self._reply_error(exc.status, str(exc), media)
            return
        except Backpressure as exc:
            receiver.metrics.requests.labels("http", str(exc.status)).inc()
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

    def _read_body(self, max_bytes: int) -> bytes:
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
            self.close_connection = True  # the unread body would be taken for the next request
            raise OtlpError(413, f"body of {length} bytes is over the limit of {max_bytes}")
        body = self.rfile.read(length)
        self._body_read = True
        if len(body) != length:
            self.close_connection = True
            raise OtlpError(400, "body shorter than Content-Length")
        return body

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
        self.server.track(self.connection, busy=False)


_GRPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    411: code_pb2.INVALID_ARGUMENT,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for handlers: acknowledged means committed
    block_on_close = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], receiver: Receiver, idle_timeout_s: float = 30.0) -> None:
        self.receiver = receiver
        self.idle_timeout_s = idle_timeout_s
        self.stopping = False
        self._conns: dict[socket.socket, bool] = {}
        self._conns_lock = threading.Lock()
        super().__init__(addr, _Handler)

    def track(self, conn: socket.socket, *, busy: bool) -> None:
        with self._conns_lock:
            self._conns[conn] = busy
            if self.stopping and not busy:
                _shut_read(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._conns_lock:
            self._conns.pop(conn, None)

    def stop_accepting(self) -> None:
        """Stop the accept loop and close idle keep-alive connections; busy ones finish their request."""
        self.stopping = True
        self.shutdown()
        with self._conns_lock:
            for conn, busy in self._conns.items():
                if not busy:
                    _shut_read(conn)


def _shut_read(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RD)
    except OSError:
        pass


# -- OTLP/gRPC ---------------------------------------------------------------------------------


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.stopping = False

    def Export(self, request: ExportRequest, context: grpc.ServicerContext) -> ExportResponse:  # noqa: N802
        r = self.receiver
        auth = dict(context.invocation_metadata()).get("authorization")
        if not r.authorized(auth if isinstance(auth, str) else None):
            r.metrics.requests.labels("grpc", "401").inc()
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        if self.stopping:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the receiver is shutting down")
        try:
            decoded = r.export(request, "grpc")
        except Backpressure as exc:
            r.metrics.requests.labels("grpc", str(exc.status)).inc()
            # UNAVAILABLE is retryable for every OTLP client (RESOURCE_EXHAUSTED only with RetryInfo).
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        r.metrics.requests.labels("grpc", "200").inc()
        return _response(decoded)


# -- both transports ---------------------------------------------------------------------------


class OtlpReceiver:
    """OTLP/HTTP and OTLP/gRPC in front of one SpanWriter."""

    def __init__(self, store: SpanSink, cfg: OtlpConfig, metrics: SelfMetrics | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics or SelfMetrics()
        self.writer = SpanWriter(
            store,
            max_queue_spans=cfg.max_queue_spans,
            commit_max_spans=cfg.commit_max_spans,
            metrics=self.metrics,
        )
        self.receiver = Receiver(self.writer, cfg, self.metrics)
        self._http: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc: grpc.Server | None = None
        self._grpc_service: _TraceService | None = None
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    def start(self) -> None:
        try:
            self._http = _HttpServer((self.cfg.host, self.cfg.http_port), self.receiver)
        except OSError as exc:
            self.writer.close()
            raise OSError(f"OTLP/HTTP cannot listen on {self.cfg.host}:{self.cfg.http_port}: {exc}") from exc
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)
        self._http_thread.start()
        if self.cfg.grpc_enabled:
            server = grpc.server(
                futures.ThreadPoolExecutor(
                    max_workers=self.cfg.max_concurrent_requests, thread_name_prefix="otlp-grpc"
                ),
                options=[
                    ("grpc.max_receive_message_length", self.cfg.max_body_bytes),
                    ("grpc.so_reuseport", 0),
                ],
            )
            self._grpc_service = _TraceService(self.receiver)
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._grpc_service, server)
            try:
                port = server.add_insecure_port(f"{_grpc_host(self.cfg.host)}:{self.cfg.grpc_port}")
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
        stopped_grpc = self._grpc.stop(grace_s) if self._grpc is not None else None
        if self._http is not None:
            self._http.stop_accepting()
            self._http.server_close()  # joins handler threads; each waits for its commit
        if stopped_grpc is not None:
            stopped_grpc.wait(grace_s)
        self.writer.close()

    @property
    def addresses(self) -> list[str]:
        out = [f"OTLP/HTTP http://{self.cfg.host}:{self.http_port}/v1/traces"]
        if self.grpc_port:
            out.append(f"OTLP/gRPC {self.cfg.host}:{self.grpc_port}")
        return out


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host

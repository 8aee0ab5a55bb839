"""One lab service process: an HTTP server traced with the OpenTelemetry SDK and counted with prometheus_client.

    python -m testbed.lab.service '<json>'      (the lab starts it inside the service's network namespace)

Roles (from the topology's data; the names are the topology's):
* gateway: GET <entry route> calls each configured downstream in order (W3C trace context in the
  headers), asking the feature store for `keys` feature rows and sending the model server
  `candidates` x dim float32 embeddings;
* feature_store: POST body = JSON keys; answers their float32 rows from a bounded LRU cache in front
  of a feature file (a numpy memmap, `keys` x `dim`); a miss reads the file and evicts the oldest entry;
* model_server: POST body = float32 candidates x dim; runs `layers` dense layers (`repeat` passes,
  real numpy matmuls on one thread) and answers the top scores.

A server span starts once the request body has been read: the time the body spends crossing the link
is the wire's (the edge's network gap), not the server's self time.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from testbed.lab.cgroups import memory_cgroup_of

REQUESTS = Counter("lab_requests", "Requests answered", ["route", "code"])
LATENCY = Histogram("lab_request_seconds", "Server time per request", ["route"])
CACHE = Counter("lab_feature_cache_lookups", "Feature cache lookups", ["result"])
CACHE_EVICTIONS = Counter("lab_feature_cache_evictions", "Feature cache evictions")
CACHE_SIZE = Gauge("lab_feature_cache_entries", "Rows held in the feature cache")


class FeatureStore:
    """A bounded LRU cache of feature rows in front of a memory-mapped feature file.

    The cache gives memory back under pressure, as caches in containers do: every half second it
    reads its memory cgroup's usage and limit, and above 90 % of the limit it sheds a quarter of its
    rows (down to ``MIN_ENTRIES``); below 70 % it grows back toward its configured size. Without a
    limit (or a cgroup) it is simply bounded by ``entries``.
    """

    MIN_ENTRIES = 64

    def __init__(
        self, work: Path, keys: int, dim: int, entries: int, seed: int, memory_cgroup: Path | None = None
    ) -> None:
        path = work / "features.f32"
        if not path.exists() or path.stat().st_size != keys * dim * 4:
            rng = np.random.default_rng(seed)
            tmp = path.with_suffix(".tmp")
            data = np.memmap(tmp, np.float32, "w+", shape=(keys, dim))
            for lo in range(0, keys, 4096):
                data[lo : lo + 4096] = rng.standard_normal((min(4096, keys - lo), dim), np.float32)
            data.flush()
            del data
            tmp.rename(path)
        self.rows = np.memmap(path, np.float32, "r", shape=(keys, dim))
        self.configured = entries
        self.entries = entries
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.lock = threading.Lock()
        self.memory_cgroup = memory_cgroup
        if memory_cgroup is not None:
            threading.Thread(target=self._watch_memory, name="cache-pressure", daemon=True).start()

    def _watch_memory(self) -> None:
        assert self.memory_cgroup is not None
        while True:
            time.sleep(0.5)
            try:
                usage = int((self.memory_cgroup / "memory.usage_in_bytes").read_text())
                limit = int((self.memory_cgroup / "memory.limit_in_bytes").read_text())
            except (OSError, ValueError):
                continue
            with self.lock:
                if usage > 0.9 * limit:
                    if self.entries == self.configured:
                        print(f"cache: memory {usage >> 20} of {limit >> 20} MiB: shedding rows", flush=True)
                    self.entries = max(self.MIN_ENTRIES, len(self.cache) * 3 // 4)
                    while len(self.cache) > self.entries:
                        self.cache.popitem(last=False)
                        CACHE_EVICTIONS.inc()
                elif usage < 0.7 * limit and self.entries < self.configured:
                    self.entries = min(self.configured, self.entries + max(64, self.entries // 8))
                CACHE_SIZE.set(len(self.cache))

    def get(self, keys: list[int]) -> bytes:
        out = []
        for k in keys:
            with self.lock:
                row = self.cache.get(k)
                if row is not None:
                    self.cache.move_to_end(k)
            if row is None:
                CACHE.labels("miss").inc()
                row = np.array(self.rows[k % len(self.rows)])  # a real read of the file (page cache or disk)
                with self.lock:
                    self.cache[k] = row
                    if len(self.cache) > self.entries:
                        self.cache.popitem(last=False)
                        CACHE_EVICTIONS.inc()
            else:
                CACHE.labels("hit").inc()
            out.append(row)
        return np.stack(out).tobytes()


class ModelServer:
    """Dense layers over the candidates: real matmuls whose cost grows with layers x repeat."""

    def __init__(self, dim: int, layers: int, repeat: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.weights = [rng.standard_normal((dim, dim), np.float32) / np.sqrt(dim) for _ in range(layers)]
        self.repeat = repeat

    def score(self, body: bytes) -> bytes:
        x = np.frombuffer(body, np.float32).reshape(-1, self.dim)
        h = x
        for _ in range(self.repeat):
            h = x
            for w in self.weights:
                h = np.maximum(h @ w, 0.0)
        scores = h.sum(axis=1)
        top = np.argsort(scores)[-5:][::-1]
        return json.dumps({"top": top.tolist(), "scores": [float(scores[i]) for i in top]}).encode()


class App:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.name = str(cfg["name"])
        self.role = str(cfg["role"])
        params = cfg.get("params") or {}
        self.rng = np.random.default_rng(int(cfg.get("seed", 0)))
        self.rng_lock = threading.Lock()
        provider = TracerProvider(
            resource=Resource.create(
                {
                    "service.name": self.name,
                    "host.name": str(cfg["host_name"]),
                    "deployment.environment": "lab",
                }
            )
        )
        # Small, frequent batches: the lab's minutes are short and the rollup waits for late spans.
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=str(cfg["otlp"]), timeout=10),
                schedule_delay_millis=500,
                max_export_batch_size=64,
            )
        )
        self.provider = provider
        self.tracer = provider.get_tracer("hopscope-lab")
        self.client = httpx.Client(timeout=10.0, limits=httpx.Limits(max_connections=64))
        self.features: FeatureStore | None = None
        self.model: ModelServer | None = None
        if self.role == "feature_store":
            self.features = FeatureStore(
                Path(cfg["work"]),
                int(params.get("keys", 40000)),
                int(params.get("dim", 256)),
                int(params.get("cache_entries", 8000)),
                int(cfg.get("seed", 0)),
                memory_cgroup_of() if cfg.get("containers") else None,
            )
        elif self.role == "model_server":
            self.model = ModelServer(
                int(params.get("dim", 256)),
                int(params.get("layers", 3)),
                int(params.get("repeat", 1)),
                int(cfg.get("seed", 0)),
            )
        self.zipf = float(params.get("zipf", 1.1))
        self.dim_by_service = {c["service"]: int(c.get("dim", 256)) for c in cfg.get("calls") or []}

    # -- the gateway ------------------------------------------------------------------------------

    def gateway(self, parent: Any) -> tuple[int, bytes]:
        code = 200
        for c in self.cfg.get("calls") or []:
            if c.get("keys"):
                with self.rng_lock:
                    keys = (self.rng.zipf(self.zipf, int(c["keys"])) - 1).tolist()
                body = json.dumps(keys).encode()
            else:
                n, dim = int(c.get("candidates", 1)), int(c.get("dim", 256))
                with self.rng_lock:
                    body = self.rng.standard_normal((n, dim), np.float32).tobytes()
            code = self._call(parent, c, body)
            if code >= 500:
                break
        return code, b'{"ok": true}\n' if code < 500 else b'{"ok": false}\n'

    def _call(self, parent: Any, c: dict[str, Any], body: bytes) -> int:
        route = str(c["route"])
        with self.tracer.start_as_current_span(
            f"POST {route}",
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "server.address": str(c["address"]),
                "server.port": int(c["port"]),
                "peer.service": str(c["service"]),
                "url.full": str(c["url"]),
            },
        ) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            try:
                r = self.client.post(str(c["url"]), content=body, headers=headers)
                code = r.status_code
            except httpx.HTTPError as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                return 599
            span.set_attribute("http.response.status_code", code)
            if code >= 500:
                span.set_status(Status(StatusCode.ERROR, f"upstream {code}"))
            return code

    # -- one request --------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        route = path.split("?", 1)[0]
        ctx = propagate.extract(headers)
        t0 = time.perf_counter()
        with self.tracer.start_as_current_span(
            f"{method} {route}",
            context=ctx,
            kind=SpanKind.SERVER,
            attributes={"http.route": route, "http.request.method": method},
        ) as span:
            try:
                if self.role == "gateway":
                    code, out = self.gateway(span)
                elif self.features is not None:
                    code, out = 200, self.features.get([int(k) for k in json.loads(body or b"[]")])
                elif self.model is not None:
                    code, out = 200, self.model.score(body)
                else:
                    code, out = 404, b""
            except (ValueError, KeyError) as exc:
                code, out = 400, str(exc).encode()
            span.set_attribute("http.response.status_code", code)
            if code >= 500:
                span.set_status(Status(StatusCode.ERROR, "failed"))
        REQUESTS.labels(route, str(code)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - t0)
        return code, out

    def shutdown(self) -> None:
        self.provider.force_flush(timeout_millis=10_000)
        self.provider.shutdown()
        self.client.close()


def _handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the gateway's pool reuses connections

        def _serve(self, method: str) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""  # read before the span starts: see the module doc
            if self.path.split("?", 1)[0] == "/health":
                code, out = 200, b"ok\n"
            else:
                code, out = app.handle(method, self.path, dict(self.headers.items()), body)
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    app = App(cfg)
    start_http_server(int(cfg["metrics_port"]), addr=str(cfg["address"]))
    server = ThreadingHTTPServer((str(cfg["address"]), int(cfg["port"])), _handler(app))
    server.daemon_threads = True
    stop = threading.Event()

    def on_term(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    print(f"{app.name}: {app.role} on {cfg['address']}:{cfg['port']}", flush=True)
    stop.wait()
    server.shutdown()
    app.shutdown()  # flush the spans still queued before exiting
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

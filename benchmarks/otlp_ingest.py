"""OTLP ingest throughput of a running `hopscope collect` (acknowledged = committed), with the raw
DuckLake Arrow insert of the same spans as the ceiling, and the daemon's peak RSS.

    .venv/bin/python benchmarks/otlp_ingest.py [--clients 4] [--seconds 20] [--spans 1000]
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402

from collectors.otlp import spans_to_table  # noqa: E402


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def make_body(rng: random.Random, n_spans: int) -> bytes:
    """One ExportTraceServiceRequest of n_spans spans, ~10 attributes each, 3 services."""
    req = ExportTraceServiceRequest()
    now = time.time_ns()
    per = n_spans // 3
    for svc in ("api-gateway", "feature-store", "model-server"):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(
            [_kv("service.name", svc), _kv("host.name", f"{svc}-0"), _kv("deployment.environment", "bench")]
        )
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        for _ in range(per if svc != "model-server" else n_spans - 2 * per):
            s = ss.spans.add()
            s.trace_id = rng.randbytes(16)
            s.span_id = rng.randbytes(8)
            s.parent_span_id = rng.randbytes(8)
            s.name = "POST /predict"
            s.kind = 2
            start = now - rng.randrange(60_000_000_000)
            s.start_time_unix_nano = start
            s.end_time_unix_nano = start + rng.randrange(1_000_000, 500_000_000)
            s.attributes.extend(
                [
                    _kv("http.route", "/predict"),
                    _kv("http.request.method", "POST"),
                    _kv("http.response.status_code", 200),
                    _kv("server.address", "model-server"),
                    _kv("peer.service", "api-gateway"),
                    _kv("net.peer.port", 8080),
                    _kv("model.name", "ranker-v3"),
                    _kv("batch.size", rng.randrange(1, 64)),
                    _kv("gpu.queue_ms", rng.random() * 10),
                    _kv("cache.hit", rng.random() < 0.9),
                ]
            )
    return req.SerializeToString()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        fields[k] = v.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--spans", type=int, default=1000)
    ap.add_argument("--bodies", type=int, default=16)
    args = ap.parse_args()
    rng = random.Random(1)
    bodies = [make_body(rng, args.spans) for _ in range(args.bodies)]
    print(f"request: {args.spans} spans, {len(bodies[0]) / 1024:.0f} KiB protobuf, ~10 attributes per span")

    tmp = Path(tempfile.mkdtemp(prefix="hopscope-bench-"))
    http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    (tmp / "hopscope.toml").write_text(
        f"[collect]\nrollup_interval_s = 3600\nmaintain_interval_s = 3600\n"
        f"[collect.otlp]\nhttp_port = {http_port}\ngrpc_port = {grpc_port}\n"
        f"[collect.metrics]\nport = {metrics_port}\n[collect.nvml]\nenabled = false\n[collect.network]\nenabled = false\n"
    )
    daemon = subprocess.Popen(
        [sys.executable, "-m", "collectors.cli", "--config", str(tmp / "hopscope.toml"), "--store", str(tmp / "store"), "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                print("daemon did not start")
                return 1
            time.sleep(0.1)
    base_rss, _ = _rss_mib(daemon.pid)

    latencies: list[float] = []
    acked = [0]
    refused = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds
    peak = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
        j = i
        while time.monotonic() < stop_at:
            body = bodies[j % len(bodies)]
            j += 1
            t0 = time.perf_counter()
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            dt = time.perf_counter() - t0
            with lock:
                if resp.status == 200:
                    acked[0] += args.spans
                    latencies.append(dt)
                else:
                    refused[0] += 1
            if resp.status in (429, 503):
                time.sleep(float(resp.getheader("Retry-After") or 1))
        conn.close()

    def watch_rss() -> None:
        while time.monotonic() < stop_at + 2:
            peak[0] = max(peak[0], _rss_mib(daemon.pid)[1])
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    watcher = threading.Thread(target=watch_rss)
    t0 = time.perf_counter()
    for t in threads + [watcher]:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    watcher.join()
    daemon.terminate()
    daemon.wait(60)

    from hopscope.store import Store  # noqa: PLC0415

    with Store(tmp / "store") as s:
        stored = s.count("spans")
    rate = acked[0] / elapsed
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else float("nan")
    print(f"receiver: {args.clients} clients x {args.seconds:g} s: {acked[0]} spans acknowledged ({rate:,.0f} spans/s), "
          f"{refused[0]} requests refused (429/503), request latency p50 {p50:.0f} ms p99 {p99:.0f} ms")  # fmt: skip
    print(
        f"stored after SIGTERM: {stored} spans (acknowledged {acked[0]}): {'OK' if stored == acked[0] else 'MISMATCH'}"
    )
    print(f"daemon RSS: {base_rss:.0f} MiB idle, peak {peak[0]:.0f} MiB during the run (goal <= 300 MB)")

    # Ceiling: the raw DuckLake Arrow insert of the same spans, in group-commit-sized tables.
    tables = [spans_to_table(ExportTraceServiceRequest.FromString(b)).table for b in bodies]
    import pyarrow as pa  # noqa: PLC0415

    group = pa.concat_tables(tables * max(1, 50_000 // (len(tables) * args.spans)))
    t_dec = time.perf_counter()
    for b in bodies:
        spans_to_table(ExportTraceServiceRequest.FromString(b))
    decode_rate = len(bodies) * args.spans / (time.perf_counter() - t_dec)
    with Store(tmp / "ceiling") as s:
        s.append("spans", group)  # warm
        n = 0
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < 5:
            n += s.append("spans", group)
        ceiling = n / (time.perf_counter() - t1)
    print(f"decode only (protobuf -> Arrow, one thread): {decode_rate:,.0f} spans/s")
    print(
        f"ceiling: raw DuckLake Arrow insert of the same spans ({group.num_rows} per commit): {ceiling:,.0f} spans/s"
    )
    print(
        f"ratio receiver / ceiling: {rate / ceiling:.2f}; goal >= 100,000 spans/s: {'MET' if rate >= 100_000 else 'NOT MET'}"
    )
    print(f"cpu: {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

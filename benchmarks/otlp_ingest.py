"""OTLP ingest throughput of a running `hopscope collect` (acknowledged = committed), with the raw
DuckLake Arrow insert of the same spans as the ceiling, decode alone, and the daemon's peak RSS.

    .venv/bin/python benchmarks/otlp_ingest.py [--clients 16] [--seconds 20] [--spans 1000] [--no-grpc]

The daemon is the real command line (`python -m hopscope.cli collect --config ...`) in its own
process. Each client posts 1,000-span protobuf requests (~10 attributes per span, 3 services) and
waits for the answer: 200 means committed. One attribute per span (`gpu.queue_ms`) gets fresh random
bytes in every request, so the receiver meets new attribute values as real traffic makes it do.
Throughput is printed with the CPU it cost (daemon CPU per span, in total and by thread: otlp-http
decodes, otlp-writer commits, the rest is DuckDB's workers) and the machine's load average: other
work on a shared machine slows the wall figures far more than the CPU ones.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402

_FRESH_KEY = "gpu.queue_ms"


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
                    _kv(_FRESH_KEY, rng.random() * 10),
                    _kv("cache.hit", rng.random() < 0.9),
                ]
            )
    return req.SerializeToString()


class Bodies:
    """Pre-built request bodies whose `gpu.queue_ms` doubles are rewritten in place for each request."""

    def __init__(self, rng: random.Random, count: int, n_spans: int) -> None:
        self.bodies: list[bytes] = []
        self.positions: list[np.ndarray] = []
        marker = _kv(_FRESH_KEY, 0.0).SerializeToString()[:-8]  # key, then the double's tag
        for _ in range(count):
            body = make_body(rng, n_spans)
            starts = [m.end() for m in re.finditer(re.escape(marker), body)]
            assert len(starts) == n_spans
            self.bodies.append(body)
            self.positions.append((np.asarray(starts)[:, None] + np.arange(8)).ravel())
        self._gen = np.random.default_rng(7)

    def fresh(self, i: int) -> bytes:
        buf = np.frombuffer(bytearray(self.bodies[i % len(self.bodies)]), np.uint8)
        pos = self.positions[i % len(self.bodies)]
        buf[pos] = self._gen.random(len(pos) // 8).view(np.uint8)
        return buf.tobytes()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_by_thread(pid: int) -> dict[str, float]:
    """CPU seconds of the daemon's threads by OS thread name (the receiver names its own threads:
    otlp-http decodes, otlp-writer commits; the others are DuckDB's workers and the rest)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        name = comm if comm.startswith("otlp-") else "other"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        out[f"{name} kernel"] = out.get(f"{name} kernel", 0.0) + int(fields[12]) / tick
    return out


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients, one request in flight each")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--spans", type=int, default=1000)
    ap.add_argument("--bodies", type=int, default=32)
    ap.add_argument("--decoders", type=int, default=4, help="[collect.otlp] max_concurrent_requests")
    ap.add_argument("--no-grpc", action="store_true", help="run the daemon without its gRPC listener")
    ap.add_argument("--otlp", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra [collect.otlp] setting of the daemon, e.g. commit_min_spans=16000 (repeatable)")  # fmt: skip
    args = ap.parse_args()
    load_before = os.getloadavg()
    bodies = Bodies(random.Random(1), args.bodies, args.spans)
    print(
        f"request: {args.spans} spans, {len(bodies.bodies[0]) / 1024:.0f} KiB protobuf, 10 attributes per span "
        f"(1 fresh per request); {args.clients} clients; {os.cpu_count()} cores; "
        f"load average {load_before[0]:.1f} {load_before[1]:.1f} {load_before[2]:.1f}"
    )

    tmp = Path(tempfile.mkdtemp(prefix="hopscope-bench-"))
    http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    config = tmp / "hopscope.toml"
    config.write_text(
        f"[store]\npath = '{tmp / 'store'}'\n[slo]\nrules = '{ROOT / 'slo_rules'}'\n"
        "[collect]\nrollup_interval_s = 3600\nmaintain_interval_s = 3600\n"
        f"[collect.otlp]\nhttp_port = {http_port}\ngrpc_port = {grpc_port}\n"
        f"grpc_enabled = {'false' if args.no_grpc else 'true'}\nmax_concurrent_requests = {args.decoders}\n"
        + "".join(f"{kv.split('=', 1)[0].strip()} = {kv.split('=', 1)[1].strip()}\n" for kv in args.otlp)
        + f"[collect.metrics]\nport = {metrics_port}\n"
        "[collect.nvml]\nenabled = false\n[collect.network]\nenabled = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "hopscope.cli", "collect", "--config", str(config), "--log-level", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while True:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or daemon.poll() is not None:
                print("daemon did not start:", daemon.stderr.read() if daemon.poll() is not None else "")
                return 1
            time.sleep(0.1)
    time.sleep(1)
    idle = _status(daemon.pid)
    idle_rss = int(idle["VmRSS"].split()[0]) / 1024
    idle_split = (int(idle["RssAnon"].split()[0]) / 1024, int(idle["RssFile"].split()[0]) / 1024)

    latencies: list[float] = []
    acked = [0, 0]  # during warm-up, during the measured window
    refused = [0]
    lock = threading.Lock()
    t_start = time.monotonic()
    t_measure = t_start + args.warmup
    t_end = t_measure + args.seconds
    peak = [0.0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=120)
        j = i
        while True:
            body = bodies.fresh(j)
            j += args.clients
            t0 = time.monotonic()
            if t0 >= t_end:
                break
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            t1 = time.monotonic()
            with lock:
                if resp.status == 200:
                    if t0 >= t_measure and t1 <= t_end:
                        acked[1] += args.spans
                        latencies.append(t1 - t0)
                    else:
                        acked[0] += args.spans
                else:
                    refused[0] += 1
            if resp.status in (429, 503):
                time.sleep(float(resp.getheader("Retry-After") or 1))
        conn.close()

    anon_peak = [0.0, 0.0]  # RssAnon, RssFile at the highest RSS seen

    def watch() -> None:
        top = 0
        while time.monotonic() < t_end + 2:
            st = _status(daemon.pid)
            peak[0] = max(peak[0], int(st["VmHWM"].split()[0]) / 1024)
            rss = int(st["VmRSS"].split()[0])
            if rss > top:
                top = rss
                anon_peak[:] = [int(st["RssAnon"].split()[0]) / 1024, int(st["RssFile"].split()[0]) / 1024]
            time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    watcher = threading.Thread(target=watch)
    for t in [*threads, watcher]:
        t.start()
    time.sleep(max(0.0, t_measure - time.monotonic()))
    cpu0, threads0 = _cpu_s(daemon.pid), _cpu_by_thread(daemon.pid)
    time.sleep(max(0.0, t_end - time.monotonic()))
    cpu1, threads1 = _cpu_s(daemon.pid), _cpu_by_thread(daemon.pid)
    for t in threads:
        t.join()
    watcher.join()
    load_during = os.getloadavg()
    try:
        metrics = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=10)
        metrics.request("GET", "/metrics")
        mtext = metrics.getresponse().read().decode()
    except OSError:
        mtext = ""
    commits = _metric(mtext, "hopscope_commit_spans_count")
    spans_committed = _metric(mtext, "hopscope_commit_spans_sum")
    commit_s = _metric(mtext, "hopscope_commit_seconds_sum")
    os.kill(daemon.pid, signal.SIGTERM)
    try:
        daemon.wait(120)
    except subprocess.TimeoutExpired:
        daemon.kill()

    from hopscope.store import Store  # noqa: PLC0415

    with Store(tmp / "store") as s:
        stored = s.count("spans")
    rate = acked[1] / args.seconds
    lat = sorted(latencies)
    p50 = statistics.median(lat) * 1000 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000 if lat else float("nan")
    mean_commit = spans_committed / commits if commits else float("nan")
    print(
        f"receiver: {rate:,.0f} spans/s sustained over {args.seconds:g} s ({acked[1]} spans acknowledged "
        f"after {args.warmup:g} s warm-up), {refused[0]} requests refused (429/503); "
        f"request latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
    print(
        f"group commits: {commits:.0f}, mean {mean_commit:,.0f} spans, mean {commit_s / commits * 1000:.0f} ms each; "
        f"daemon CPU {(cpu1 - cpu0) / args.seconds * 100:.0f}% of a core = "
        f"{(cpu1 - cpu0) / max(acked[1], 1) * 1e6:.1f} us per span"
    )
    per_span = {k: (threads1.get(k, 0.0) - threads0.get(k, 0.0)) / max(acked[1], 1) * 1e6 for k in threads1}
    print(
        "daemon CPU by thread, us per span: "
        + ", ".join(
            f"{k} {v:.1f} (kernel {per_span.get(f'{k} kernel', 0):.1f})"
            for k, v in sorted(per_span.items())
            if not k.endswith(" kernel")
        )
        + "; otlp-http: read + decode, otlp-writer: the commits (DuckDB's calling thread), "
        "other: DuckDB's workers and the rest (threads that ended are not counted)"
    )
    total = acked[0] + acked[1]
    print(
        f"stored after SIGTERM: {stored} spans (acknowledged {total}): {'OK' if stored == total else 'MISMATCH'}"
    )
    print(
        f"daemon exit code {daemon.returncode}; RSS {idle_rss:.0f} MiB idle ({idle_split[0]:.0f} MiB anonymous, "
        f"{idle_split[1]:.0f} MiB files), peak {peak[0]:.0f} MiB "
        f"(goal <= 300 MB; at the highest sample: {anon_peak[0]:.0f} MiB anonymous, {anon_peak[1]:.0f} MiB files)"
    )

    # Decode alone and the ceiling, in this process, on the same kind of requests.
    from hopscope.collectors.otlp import spans_to_table  # noqa: PLC0415

    try:
        from hopscope.collectors.otlp import ShadowRequest  # noqa: PLC0415
    except ImportError:  # a receiver from before the columnar decoder (to compare with)
        ShadowRequest = ExportTraceServiceRequest  # noqa: N806

    n_dec = min(len(bodies.bodies), 16)
    fresh = [bodies.fresh(i) for i in range(n_dec)]
    spans_to_table(ShadowRequest.FromString(fresh[0]))
    fresh = [bodies.fresh(i) for i in range(n_dec)]
    t_dec, c_dec = time.perf_counter(), time.thread_time()
    tables = [spans_to_table(ShadowRequest.FromString(b)).table for b in fresh]
    decode_rate = n_dec * args.spans / (time.perf_counter() - t_dec)
    decode_cpu = (time.thread_time() - c_dec) / (n_dec * args.spans) * 1e6
    import pyarrow as pa  # noqa: PLC0415

    group_size = (
        int(mean_commit) if mean_commit == mean_commit and mean_commit >= args.spans else 16 * args.spans
    )
    group = pa.concat_tables(tables * (group_size // (n_dec * args.spans) + 1))[:group_size]
    with Store(tmp / "ceiling") as s:
        s.append("spans", group)  # warm
        n = 0
        t1, c1 = time.perf_counter(), time.process_time()  # DuckDB's threads are this process's
        while time.perf_counter() - t1 < 8:
            n += s.append("spans", group)
        ceiling = n / (time.perf_counter() - t1)
        ceiling_cpu = (time.process_time() - c1) / n * 1e6
    print(
        f"decode alone (protobuf -> Arrow, one thread, fresh attribute values): {decode_rate:,.0f} spans/s, "
        f"{decode_cpu:.1f} us CPU per span"
    )
    print(
        f"ceiling: raw DuckLake Arrow insert of the same spans, {group.num_rows} per commit: {ceiling:,.0f} spans/s, "
        f"{ceiling_cpu:.1f} us CPU per span"
    )
    # The wall ratio is the goal's. CPU per span (the daemon's, all its threads, against the insert's)
    # compares the two without the machine's other work, which on shared cores moves the wall figures
    # of the two phases (run one after the other) differently.
    print(f"CPU per span, ceiling / receiver: {ceiling_cpu / ((cpu1 - cpu0) / max(acked[1], 1) * 1e6):.2f}")
    print(
        f"ratio receiver / ceiling: {rate / ceiling:.2f}; goal >= 100,000 spans/s: "
        f"{'MET' if rate >= 100_000 else 'NOT MET'}; peak RSS goal: {'MET' if peak[0] <= 300 else 'NOT MET'}"
    )
    load_after = os.getloadavg()
    print(
        f"load average: {load_before[0]:.1f} before, {load_during[0]:.1f} at the end of the run, {load_after[0]:.1f} after"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

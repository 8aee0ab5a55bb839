"""The OTLP receiver under the attacks of issue 15 item 2, by hand: `hopscope collect` in a subprocess,
an OpenTelemetry SDK client exporting small batches, and in rounds: 30 connections stalling near the
end of 16 MB bodies, 300 half-sent requests, one span with a 15 MiB attribute value.

    python benchmarks/receiver_limits.py [--minutes 5] [--root /path/to/checkout] [--otlp 'key = value; ...']

Prints per round the receiver's peak RSS and threads, how long stalled connections lived, what the
SDK client saw, and /metrics lines of the receiver at the end. --root runs another checkout (the
code before a change) with the same clients.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from support.attacks import Attack, Watch, proc_status, start_collect  # noqa: E402


def spans(n: int, service: str, big: int = 0) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("receiver-limits")
    for i in range(n):
        attrs: dict[str, str | int] = {"http.route": "/x", "i": i}
        if big:
            attrs["payload"] = "x" * big
        with tracer.start_as_current_span("GET /x", attributes=attrs):
            pass
    return list(memory.get_finished_spans())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=0, help="repeat rounds this long (0: one round)")
    ap.add_argument("--root", type=Path, default=ROOT, help="checkout whose hopscope collect runs")
    ap.add_argument("--otlp", default="", help="extra [collect.otlp] keys, ';'-separated")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="receiver-limits-"))
    proc, port, metrics_port = start_collect(tmp, args.otlp.replace(";", "\n"), root=args.root)
    time.sleep(3)
    idle_rss, idle_threads = proc_status(proc.pid)
    print(f"idle: RSS {idle_rss:.0f} MiB, {idle_threads} threads (log: {tmp / 'collect.log'})", flush=True)
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    results: dict[str, int] = {}
    stop = threading.Event()

    def normal_client() -> None:
        exporter = OTLPSpanExporter(endpoint=endpoint)
        while not stop.is_set():
            t0 = time.monotonic()
            r = exporter.export(spans(20, "normal"))
            key = "ok" if r == SpanExportResult.SUCCESS else "failed"
            results[key] = results.get(key, 0) + 1
            results["slowest_ms"] = max(results.get("slowest_ms", 0), int((time.monotonic() - t0) * 1000))
            time.sleep(0.2)

    client = threading.Thread(target=normal_client, daemon=True)
    client.start()
    t_end = time.monotonic() + args.minutes * 60
    rnd = 0
    while True:
        rnd += 1
        watch = Watch(proc.pid)
        big, half = Attack(port), Attack(port)
        attacks = [
            threading.Thread(target=big.stalled_bodies, args=(30, 16_000_000, 100, 60)),
            threading.Thread(target=half.half_headers, args=(150, 60)),
            threading.Thread(target=half.half_bodies, args=(150, 20_000, 60)),
        ]
        t0 = time.monotonic()
        for t in attacks:
            t.start()
        huge = OTLPSpanExporter(endpoint=endpoint, timeout=30).export(spans(1, "huge", big=15 * 1024 * 1024))
        for t in attacks:
            t.join()
        watch.stop()
        cut = big.cut_after_s + half.cut_after_s
        print(
            f"round {rnd} ({time.monotonic() - t0:.0f} s): peak RSS {watch.peak_rss_mib:.0f} MiB, "
            f"peak threads {watch.peak_threads}; 16 MB stalls: {big.refused_at_once} refused at once, "
            f"{len(big.cut_after_s)} cut after max {max(big.cut_after_s, default=0):.1f} s, {big.still_open} still open; "
            f"half-sent: {half.refused_at_once} refused at once, {len(half.cut_after_s)} cut after max "
            f"{max(half.cut_after_s, default=0):.1f} s, {half.still_open} still open; 15 MiB span: {huge.name}; "
            f"normal client so far: {results}; connections cut in all: {len(cut)}",
            flush=True,
        )
        if time.monotonic() >= t_end:
            break
    stop.set()
    client.join()
    rss, threads = proc_status(proc.pid)
    print(f"after: RSS {rss:.0f} MiB, {threads} threads", flush=True)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(("hopscope_otlp", "hopscope_write_queue", "hopscope_store_errors")):
                print(" ", line)
    except OSError as exc:
        print("no /metrics:", exc)
    proc.terminate()
    proc.wait(30)
    print("log tail:", *(tmp / "collect.log").read_text().splitlines()[-8:], sep="\n  ")


if __name__ == "__main__":
    main()

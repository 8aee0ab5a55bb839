"""Detection-to-page time: from the first bad minute to the alert reaching Alertmanager's webhook.

    .venv/bin/python benchmarks/alert_latency.py [--rollup-interval 60] [--evaluation-interval 30s]

A live `hopscope collect` (the real command line, its own process) is fed by the OpenTelemetry SDK
(OTLP/HTTP): one latency SLO (99% of /predict within 100 ms, the SRE Workbook windows). Ten minutes
of good requests are sent back-dated first (spans carry their own start times, so the alert windows
hold data at once, as on a service that has been running), then live good traffic until a minute
starts, then every request takes 300 ms until the 1h/5m page tier fires.
Alertmanager (Debian's prometheus-alertmanager) notifies a webhook sink with group_wait 1 s; its
default of 30 s would add up to that. Printed: seconds from the first bad minute's start to the
webhook, split into the part the alert windows take (until the 1h and 5m windows both burn over
14.4x: with an hour of history that is ~8.6 min of 100% errors; the SLO engine's own breach start
says when it held) and hopscope's and Alertmanager's part after that (rollup, evaluation, delivery).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' Alertmanager and webhook sink

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402
from support.alertmanager import WebhookSink, alertmanager  # noqa: E402
from support.servers import free_port, wait_http  # noqa: E402

from hopscope.rollup import run_rollup  # noqa: E402
from hopscope.slo import find_breaches, load_slos  # noqa: E402
from hopscope.store import Store  # noqa: E402

SLO = """apiVersion: hopscope/v1
kind: SLO
metadata: {name: predict-latency, labels: {team: bench}}
spec:
  description: 99% of /predict requests within 100 ms.
  service: bench-api
  objective: 0.99
  window: 28d
  sli: {kind: latency, service: bench-api, route: /predict, thresholdMs: 100}
  alerting: {policy: sre-workbook, minEvents: 10}
"""
RATE = 20  # requests a second


def _config(root: Path, am_url: str, otlp: int, metrics: int, args: argparse.Namespace) -> Path:
    cfg = root / "hopscope.toml"
    cfg.write_text(
        f'[store]\npath = "store"\n[slo]\nrules = "rules"\n'
        f"[collect]\nrollup_interval_s = {args.rollup_interval}\n"
        f"[collect.otlp]\nhttp_port = {otlp}\ngrpc_enabled = false\n[collect.nvml]\nenabled = false\n"
        f"[collect.network]\nenabled = false\n[collect.metrics]\nport = {metrics}\n"
        f'[alerting]\nalertmanagers = ["{am_url}"]\nevaluation_interval = "{args.evaluation_interval}"\n'
        f"fresh_from_spans = {args.fresh}\n"
    )
    (root / "rules").mkdir()
    (root / "rules" / "bench.yaml").write_text(SLO)
    return cfg


def _request(tracer: object, start_ns: int, ms: float) -> None:
    span = tracer.start_span(  # type: ignore[attr-defined]
        "GET /predict", kind=SpanKind.SERVER, start_time=start_ns, attributes={"http.route": "/predict"}
    )
    span.end(end_time=start_ns + int(ms * 1e6))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rollup-interval", type=float, default=60.0, help="[collect] rollup_interval_s")
    p.add_argument("--evaluation-interval", default="30s", help="[alerting] evaluation_interval")
    p.add_argument("--fresh", default="true", choices=["true", "false"], help="[alerting] fresh_from_spans")
    p.add_argument("--history", type=int, default=10, help="minutes of good requests sent back-dated first")
    args = p.parse_args()
    sink = WebhookSink()
    with (
        tempfile.TemporaryDirectory(prefix="hs-alert-latency-") as tmp,
        alertmanager(Path(tmp) / "am", sink.url) as am,
    ):
        root = Path(tmp)
        otlp, metrics = free_port(), free_port()
        cfg = _config(root, am.url, otlp, metrics, args)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")},
            "PYTHONPATH": str(ROOT),
        }
        daemon = subprocess.Popen(
            [sys.executable, "-m", "hopscope.cli", "collect", "--config", str(cfg), "--log-level", "WARNING"],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=open(root / "collect.log", "wb"),  # noqa: SIM115
        )  # fmt: skip
        try:
            wait_http(f"http://127.0.0.1:{metrics}/metrics", 60)
            provider = TracerProvider(resource=Resource.create({"service.name": "bench-api"}))
            exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{otlp}/v1/traces")
            provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
            tracer = provider.get_tracer("alert-latency")
            now = time.time()
            for i in range(args.history * 60 * RATE):  # history, back-dated
                _request(tracer, int((now - args.history * 60 + i / RATE) * 1e9), 20)
                if i % 1000 == 999:  # the exporter's queue holds 2,048 spans
                    provider.force_flush()
            bad_from = (int(time.time()) // 60 + 1) * 60  # the next minute's start
            stop = threading.Event()

            def traffic() -> None:
                while not stop.is_set():
                    t = time.time()
                    _request(tracer, int(t * 1e9), 300 if t >= bad_from else 20)
                    stop.wait(1 / RATE)

            threading.Thread(target=traffic, daemon=True).start()
            print(f"bad from {_hms(bad_from)} UTC; waiting for the page...", flush=True)
            deadline = bad_from + 1200
            while not sink.alerts("firing", severity="page") and time.time() < deadline:
                time.sleep(0.2)
            arrived = time.time()
            stop.set()
            provider.shutdown()
            if not sink.alerts("firing", severity="page"):
                raise SystemExit(f"no page within 20 min; see {root / 'collect.log'}")
            page = sink.alerts("firing", severity="page")[0]
        finally:
            os.kill(daemon.pid, signal.SIGTERM)
            daemon.wait(30)
            sink.close()
        held = _first_firing_minute_end(root)
    print(f"page at {_hms(arrived)} UTC: {page['annotations']['summary']}")
    print(f"first bad minute {_hms(bad_from)}; the windows first hold at the end of minute {_hms(held - 60)}")
    print(
        f"first bad minute -> webhook: {arrived - bad_from:.0f} s, of which the alert windows "
        f"{held - bad_from:.0f} s (1h/5m at 14.4x over {args.history} min of history) and hopscope + "
        f"Alertmanager {arrived - held:.0f} s (evaluation every {args.evaluation_interval}, rollup every "
        f"{args.rollup_interval:g} s, fresh minutes from raw spans: {args.fresh}, group_wait 1 s)"
    )


def _hms(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t))


def _first_firing_minute_end(root: Path) -> float:
    """When the alert condition first held, by the SLO engine over the stored minutes: the end of the
    breach's first minute."""
    store = Store(root / "store", create=False)
    try:
        slo = load_slos(root / "rules")[0][0]
        run_rollup(store, [100.0], grace=timedelta(0))  # the minutes the daemon read from raw spans
        breach = find_breaches(store, slo)[0]
    finally:
        store.close()
    return breach.start.replace(tzinfo=UTC).timestamp() + 60


if __name__ == "__main__":
    main()

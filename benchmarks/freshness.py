"""Freshness: seconds from a span's end to (a) `hopscope slo status --json` counting it and (b) the
Overview's latency chart showing it in headless Chromium, with a running `hopscope collect` at its
default rollup settings and a dashboard at its default refresh. Goal (issue 16): <= 15 s both.

What runs, all real and on 127.0.0.1:

* `hopscope collect` (the command line, in its own process) with the OTLP receiver;
* background traffic: the soak's three services (testbed/soak.py: one OpenTelemetry SDK TracerProvider
  each, BatchSpanProcessor + OTLP/HTTP exporter), --rps requests a second on /recommend;
* the dashboard (`streamlit run dashboard/app.py`) and Debian's Chromium through Playwright, on the
  Overview filtered to the probes' route (`?route=/checkout&range=15m`), auto-refreshing as it does
  by default;
* probes: one SERVER span of a `checkout` service on /checkout each (its own SDK provider, a
  BatchSpanProcessor flushed at once, so the export's answer, the acknowledgement, comes
  milliseconds after the span's end). Two probes a minute: the first of a minute must make its
  minute's point appear on the chart, the second (10x slower) must lift that minute's p99.

For each probe: (a) `slo status --json` (the CLI in this process, polled every --poll seconds: each
call opens the store and evaluates as a fresh process would) until the probes' SLO counts it; (b)
the chart's p99 trace in the page (Plotly's own data in the DOM) until its minute shows it. Both from
the span's end time. Prints median and max of each, and the dashboard's server time per live tick.

    .venv/bin/python benchmarks/freshness.py [--probes 20] [--rps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.soak import Services, SoakConfig  # noqa: E402

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
PROBE_SLO = """apiVersion: hopscope/v1
kind: SLO
metadata:
  name: checkout-latency
spec:
  description: 99% of /checkout requests finish within 300 ms (the freshness benchmark's probes).
  service: checkout
  objective: 0.99
  window: 28d
  sli: {kind: latency, service: checkout, route: /checkout, thresholdMs: 300}
  alerting: {policy: sre-workbook}
"""
# The p99 of the latency chart at one minute (x: epoch ms or a date string), null while it is not drawn.
P99_AT = """(minuteMs) => {
  for (const p of document.querySelectorAll('.js-plotly-plot')) {
    if (!(p.querySelector('.gtitle')?.textContent || '').startsWith('End-to-end latency')) continue;
    for (const tr of (p._fullData || p.data || [])) {
      if (tr.name !== 'p99' || !tr.x) continue;
      const xs = Array.from(tr.x), ys = Array.from(tr.y);
      for (let i = 0; i < xs.length; i++) {
        const x = typeof xs[i] === 'number' ? xs[i] : Date.parse(String(xs[i]).replace(' ', 'T') + 'Z');
        if (Math.abs(x - minuteMs) < 1000 && ys[i] != null) return Number(ys[i]);
      }
    }
  }
  return null;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[Any], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.2)


class Probe:
    """The `checkout` service: one SERVER span on /checkout per call, exported at once."""

    def __init__(self, endpoint: str) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        self.provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self.tracer = self.provider.get_tracer("hopscope-freshness")

    def send(self, duration_ms: float) -> tuple[float, datetime, float]:
        """(wall time of the span's end, the minute it lands in, seconds from its end to the acknowledgement)."""
        from opentelemetry.trace import SpanKind  # noqa: PLC0415

        end_ns = time.time_ns()
        start_ns = end_ns - int(duration_ms * 1e6)
        span = self.tracer.start_span(
            "POST /checkout",
            kind=SpanKind.SERVER,
            start_time=start_ns,
            attributes={
                "http.route": "/checkout",
                "http.request.method": "POST",
                "http.response.status_code": 200,
            },
        )
        span.end(end_time=end_ns)
        self.provider.force_flush()
        acked = time.time()
        minute = datetime.fromtimestamp(start_ns / 1e9, UTC).replace(second=0, microsecond=0, tzinfo=None)
        return end_ns / 1e9, minute, acked - end_ns / 1e9


def _status_total(config: Path) -> float:
    """The probes' SLO's total events, as `hopscope slo status --json` says."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from hopscope.cli import app  # noqa: PLC0415

    result = CliRunner().invoke(
        app, ["slo", "status", "--json", "--config", str(config), "--slo", "checkout-latency"]
    )
    if result.exit_code != 0:
        raise SystemExit(f"slo status failed: {result.output}")
    return float(json.loads(result.stdout)[0]["total"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=20)
    ap.add_argument("--rps", type=float, default=20.0, help="background requests a second (5 spans each)")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between two `slo status` calls")
    ap.add_argument(
        "--give-up", type=float, default=90.0, help="seconds after which a probe counts as missed"
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="hopscope-fresh-"))
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "recommend.yaml").write_text((ROOT / "slo_rules" / "recommend.yaml").read_text())
    (rules / "checkout.yaml").write_text(PROBE_SLO)
    http_port, grpc_port = _free_port(), _free_port()
    config = tmp / "hopscope.toml"
    config.write_text(  # no rollup or refresh settings: the defaults are what is measured
        f"[store]\npath = '{tmp / 'store'}'\n[slo]\nrules = '{rules}'\n"
        f"[collect.otlp]\nhttp_port = {http_port}\ngrpc_port = {grpc_port}\n"
        "[collect.metrics]\nenabled = false\n[collect.nvml]\nenabled = false\n[collect.network]\nenabled = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "hopscope.cli", "collect", "--config", str(config), "--log-level", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    dash: subprocess.Popen[Any] | None = None
    services: Services | None = None
    probe: Probe | None = None
    stop = threading.Event()
    try:
        _wait_port(http_port, daemon, "hopscope collect")
        endpoint = f"http://127.0.0.1:{http_port}/v1/traces"
        services = Services(endpoint, SoakConfig(seed=5))

        def background() -> None:
            next_at = time.monotonic()
            while not stop.is_set():
                services.request()
                next_at += 1.0 / args.rps
                stop.wait(max(0.0, next_at - time.monotonic()))

        threading.Thread(target=background, daemon=True).start()
        probe = Probe(endpoint)
        probe.send(
            5.0
        )  # the route must exist before the page filters on it (5 ms: below what a probe must show)
        t = time.monotonic()
        while _status_total(config) < 1:
            if time.monotonic() - t > args.give_up:
                raise SystemExit("the first probe never reached slo status")
            time.sleep(args.poll)
        counted, in_minute = 1.0, 0

        timing = tmp / "runs.tsv"
        port = _free_port()
        dash = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"), "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**env, "HOPSCOPE_STORE": str(tmp / "store"), "HOPSCOPE_SLO_RULES": str(rules),
                 "HOPSCOPE_TIMING_LOG": str(timing)},
        )  # fmt: skip
        _wait_port(port, dash, "the dashboard")
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)

        from playwright.sync_api import sync_playwright  # noqa: PLC0415

        to_status: list[float] = []
        to_chart: list[float] = []
        acks: list[float] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/?range=15m&route=/checkout")
            page.wait_for_selector(".js-plotly-plot", timeout=120_000)
            mark = timing.stat().st_size if timing.exists() else 0
            rng = random.Random(3)
            previous_minute: datetime | None = None
            for k in range(args.probes):
                # at most two probes a minute (the second 10x slower, to lift the minute's p99), at random
                # seconds, so they meet every phase of the rollup's and the page's 5-s cycles
                time.sleep(rng.uniform(1, 8))
                this_minute = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
                if this_minute == previous_minute and in_minute >= 2 or datetime.now(UTC).second >= 58:
                    time.sleep(60 - datetime.now(UTC).second + rng.uniform(1, 8))
                    this_minute = datetime.now(UTC).replace(second=0, microsecond=0, tzinfo=None)
                in_minute = in_minute + 1 if this_minute == previous_minute else 1
                duration = 400.0 if in_minute == 2 else 40.0
                counted = _status_total(config) + 1  # what slo status says now, plus this probe
                end, minute, ack = probe.send(duration)
                previous_minute = minute
                acks.append(ack)
                minute_ms = (minute - datetime(1970, 1, 1)).total_seconds() * 1000
                got_status = got_chart = None
                box: dict[str, float] = {}

                def poll_status(target: float = counted, box: dict[str, float] = box) -> None:
                    deadline = time.time() + args.give_up
                    while time.time() < deadline:
                        if _status_total(config) >= target:
                            box["status"] = time.time()
                            return
                        time.sleep(args.poll)

                th = threading.Thread(target=poll_status, daemon=True)
                th.start()
                deadline = time.time() + args.give_up
                while time.time() < deadline:
                    p99 = page.evaluate(P99_AT, minute_ms)
                    if p99 is not None and p99 >= 0.5 * duration:
                        got_chart = time.time() - end
                        break
                    page.wait_for_timeout(250)
                th.join(timeout=args.give_up)
                got_status = box["status"] - end if "status" in box else None
                to_status.append(got_status if got_status is not None else float("inf"))
                to_chart.append(got_chart if got_chart is not None else float("inf"))
                print(
                    f"probe {k + 1:2d} ({'2nd' if in_minute == 2 else '1st'} of {minute:%H:%M}, {duration:.0f} ms): "
                    f"acked {1000 * ack:4.0f} ms after its end; slo status {_fmt(got_status)}, chart {_fmt(got_chart)}",
                    flush=True,
                )
            browser.close()
        ticks: list[float] = []
        if timing.exists():
            with timing.open() as f:
                f.seek(mark)
                ticks = [float(line.split("\t")[1]) for line in f if line.split("\t")[0] == "overview#live"]
        print(f"\n{args.probes} probes, background {args.rps:g} requests/s (5 spans each), load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; defaults: rollups every 5 s, page refresh 5 s")  # fmt: skip
        for name, xs in (("span end -> slo status --json counts it", to_status),
                         ("span end -> Overview latency chart shows it", to_chart)):  # fmt: skip
            print(
                f"  {name:<46}: median {statistics.median(xs):5.1f} s, max {max(xs):5.1f} s  (goal <= 15 s)"
            )
        print(
            f"  {'span end -> acknowledged (exporter + commit)':<46}: median {1000 * statistics.median(acks):5.0f} ms"
        )
        if ticks:
            print(f"  {'Overview live tick, server time':<46}: median {1000 * statistics.median(ticks):5.0f} ms, "
                  f"max {1000 * max(ticks):5.0f} ms ({len(ticks)} ticks)")  # fmt: skip
        return 0
    finally:
        stop.set()
        if services is not None:
            services.shutdown(10)
        if probe is not None:
            probe.provider.shutdown()
        if dash is not None:
            dash.terminate()
            dash.wait(timeout=20)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()


def _fmt(x: float | None) -> str:
    return "missed" if x is None else f"{x:5.1f} s"


if __name__ == "__main__":
    raise SystemExit(main())

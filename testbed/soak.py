"""A soak of `hopscope collect`: real clients, real collectors, a real Prometheus, for minutes, then an audit.

What it does, all on 127.0.0.1 and all bounded in time:

* starts Debian's prometheus-node-exporter and a Prometheus scraping it every 5 s, two small HTTP
  servers answering 200 on GET /health (probe targets), and optionally K busy-loop processes (CPU hogs);
* starts `hopscope collect` as a subprocess with a generated hopscope.toml (OTLP receiver, probes,
  host network, the Prometheus pull with the node_network preset, rollups every R s, store
  maintenance every M s);
* sends traces from three services (api-gateway -> feature-store, api-gateway -> model-server), each a
  real OpenTelemetry SDK TracerProvider with a BatchSpanProcessor and the OTLP/HTTP exporter, open loop
  at a target rate of spans per second; the exporter is wrapped to count the spans of every batch the
  daemon acknowledged or refused and to time every export() call;
* polls the daemon's /metrics and its RSS every ~2 s;
* at the end stops the daemon with SIGTERM and audits the store: every acknowledged span must be there
  exactly once.

Why: unit tests exercise each part for a second; the bugs that matter in production (a maintenance run
blocking the writer, refusals after a compaction, memory growth, a daemon that does not stop) show up
only when everything runs together for a while under load and CPU pressure.

    .venv/bin/python -m testbed.soak --minutes 30 --spans-per-second 900 --hogs 2 \\
        --rollup-interval 10 --maintain-interval 30 [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from testbed.workdir import say_stderr, workdir

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
SPANS_PER_REQUEST = 5  # gateway SERVER + 2 x (gateway CLIENT + callee SERVER)
SERVICES = ("api-gateway", "feature-store", "model-server")

# The daemon's own metrics the soak reads; absent ones (an older daemon) are reported as None.
WATCHED_METRICS = (
    "hopscope_otlp_spans_received",
    "hopscope_otlp_spans_refused",
    "hopscope_otlp_requests",
    "hopscope_store_errors",
    "hopscope_store_last_commit_timestamp_seconds",
    "hopscope_store_reconnects",
    "hopscope_writer_queue_jobs",
    "hopscope_writer_job_seconds",
    "hopscope_maintenance_slice_max_seconds",
    "hopscope_maintenance_cycles",
    "hopscope_rollup_last_success_timestamp_seconds",
)


class SoakError(RuntimeError):
    """The soak could not run (a component did not start); not a finding about the daemon."""


@dataclass
class SoakConfig:
    seconds: float = 1800.0
    spans_per_second: float = 900.0
    hogs: int = 0
    rollup_interval_s: float = 10.0
    maintain_interval_s: float = 30.0
    batch_size: int = 256  # BatchSpanProcessor max_export_batch_size
    queue_size: int = 8192  # BatchSpanProcessor max_queue_size; spans past it are dropped by the SDK
    poll_s: float = 2.0
    progress_s: float = 30.0
    stop_timeout_s: float = 30.0
    flush_timeout_s: float = 60.0
    seed: int = 12
    # Spans are stamped this far in the past. The rollup leaves the last 2 minutes for late spans, so a
    # soak of under ~3 minutes writes hop_minutes rows only with its spans aged (tests use 60 s).
    span_age_s: float = 0.0
    keep: Path | None = None  # keep store, logs and timeline here; else a temp dir removed at the end
    prometheus_bin: str = "/usr/bin/prometheus"
    node_exporter_bin: str = "/usr/bin/prometheus-node-exporter"


@dataclass
class SoakResult:
    # what ran
    seconds: float
    spans_per_second_target: float
    spans_per_second_made: float
    hogs: int
    rollup_interval_s: float
    maintain_interval_s: float
    # client side (the SDK)
    spans_made: int
    acknowledged: int
    failed: int  # spans of batches whose export() returned FAILURE
    dropped: int  # made - acknowledged - failed: dropped by the SDK's queue, never exported
    exports: int
    export_p50_s: float | None
    export_p99_s: float | None
    export_max_s: float | None
    # daemon side (its /metrics)
    received: int | None
    refused: dict[str, int] | None  # by reason
    requests: dict[str, int] | None  # by transport/code
    store_errors: dict[str, int] | None  # by table
    store_reconnects: int | None
    commit_age_max_s: float | None
    writer_queue_jobs_max: float | None
    write_queue_spans_max: float | None
    writer_jobs: dict[str, dict[str, float]] | None  # kind -> count, mean_s, max_le_s
    rollup_lag_max_s: float | None
    rollup_lag_source: str
    maintenance_slice_max_s: float | None
    maintenance_slice_source: str
    maintenance_ok: int | None
    maintenance_failed: int | None
    rss_first_mb: float | None
    rss_max_mb: float | None
    rss_last_mb: float | None
    daemon_cpu_s: float | None
    metrics_missing: list[str]
    polls_ok: int
    polls_failed: int
    # stop
    daemon_exit_code: int | None
    stop_seconds: float | None
    # the store afterwards
    spans_stored: int | None
    spans_distinct: int | None
    duplicates: int | None
    lost: int | None  # acknowledged - distinct stored, raw (negative: more stored than acknowledged)
    acked_missing: int | None  # acknowledged spans whose (trace_id, span_id) is not in the store
    failed_but_stored: int | None  # spans of failed exports that were stored all the same
    hop_minutes_rows: int | None
    samples_by_source: dict[str, int]
    data_files: int | None
    log_warnings: int
    log_errors: int
    first_warnings: list[str]
    keep_dir: str | None
    timeline: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def refused_total(self) -> int:
        return sum((self.refused or {}).values())

    @property
    def store_errors_total(self) -> int:
        return sum((self.store_errors or {}).values())

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not timeline:
            out.pop("timeline")
        return out


# -- small servers and processes ------------------------------------------------------------------


def free_port() -> int:
    # Bind-and-release races with other programs in theory; on 127.0.0.1 of a test machine it does not.
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code = 200 if self.path.split("?")[0] == "/health" else 404
        body = b"ok\n" if code == 200 else b"not found\n"
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a line per probe would drown the soak's own output


class HealthServer:
    """A probe target: GET /health answers 200, in a daemon thread."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer((HOST, 0), _Health)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, name="health", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _spawn(cmd: Sequence[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    # Own session = own process group, so the finally block can kill a child and whatever it started.
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,
        )


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            proc.wait(timeout=wait_s)
            # The leader is gone; SIGKILL the rest of its group too, quietly, in case it left children.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        except subprocess.TimeoutExpired:
            continue


def _http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:  # noqa: S310 (127.0.0.1 only)
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""


def _wait_until(what: str, check: Callable[[], bool], timeout_s: float, proc: subprocess.Popen[bytes] | None,
                log: Path | None) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SoakError(f"{what} exited with {proc.returncode} while starting:\n{_tail(log)}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.25)
    raise SoakError(f"{what} not ready within {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _start_prometheus(cfg: SoakConfig, work: Path, procs: list[subprocess.Popen[bytes]]) -> str:
    """node_exporter and a Prometheus scraping it every 5 s; returns Prometheus' URL."""
    node_port, prom_port = free_port(), free_port()
    node_log = work / "node_exporter.log"
    # Only the collectors the node_network preset reads: the soak measures hopscope, not node_exporter.
    node = _spawn(
        [
            cfg.node_exporter_bin,
            f"--web.listen-address={HOST}:{node_port}",
            "--collector.disable-defaults",
            "--collector.netdev",
            "--collector.netstat",
            "--collector.netclass",
            "--collector.meminfo",
        ],
        node_log,
    )
    procs.append(node)
    _wait_until(
        "node_exporter", lambda: _http_get(f"http://{HOST}:{node_port}/metrics")[0] == 200, 30, node, node_log
    )
    prom_cfg = work / "prometheus.yml"
    prom_cfg.write_text(
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
        f"scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{HOST}:{node_port}']\n"
    )
    prom_log = work / "prometheus.log"
    prom = _spawn(
        [
            cfg.prometheus_bin,
            f"--config.file={prom_cfg}",
            f"--storage.tsdb.path={work / 'prometheus-data'}",
            f"--web.listen-address={HOST}:{prom_port}",
            "--storage.tsdb.retention.time=1d",
        ],
        prom_log,
    )
    procs.append(prom)
    url = f"http://{HOST}:{prom_port}"
    _wait_until("prometheus", lambda: _http_get(f"{url}/-/ready")[0] == 200, 60, prom, prom_log)
    return url


def _write_config(
    cfg: SoakConfig, work: Path, ports: dict[str, int], targets: list[str], prom_url: str
) -> Path:
    rules = work / "slo_rules"
    rules.mkdir(exist_ok=True)  # empty: no SLO thresholds, the rollup still runs

    def q(value: object) -> str:
        return json.dumps(str(value))  # a TOML basic string is a JSON string for these values

    probe_tables = "".join(
        f"\n[[collect.probes.targets]]\nurl = {q(url)}\nservice = {q(svc)}\n"
        for url, svc in zip(targets, ("feature-store", "model-server"), strict=False)
    )
    text = f"""# generated by testbed/soak.py
[store]
path = {q(work / "store")}

[slo]
rules = {q(rules)}

[collect]
rollup_interval_s = {cfg.rollup_interval_s}
maintain_interval_s = {cfg.maintain_interval_s}

[collect.otlp]
host = "{HOST}"
http_port = {ports["otlp_http"]}
grpc_port = {ports["otlp_grpc"]}

[collect.metrics]
host = "{HOST}"
port = {ports["metrics"]}

[collect.nvml]
enabled = false

[collect.network]
interval_s = 5

[collect.probes]
interval_s = 10
{probe_tables}
[collect.prometheus]
url = {q(prom_url)}
interval_s = 15
step_s = 5
lag_s = 5
backfill = "10m"
presets = ["node_network"]
progress = false
"""
    path = work / "hopscope.toml"
    path.write_text(text)
    return path


def _start_daemon(
    config: Path, work: Path, ports: dict[str, int], procs: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    log = work / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("HOPSCOPE_")}  # the generated file is the config
    daemon = _spawn(
        [sys.executable, "-m", "hopscope.cli", "collect", "--config", str(config), "--log-level", "INFO"],
        log,
        cwd=str(ROOT),
        env=env,
    )
    procs.append(daemon)

    def ready() -> bool:
        if _http_get(f"http://{HOST}:{ports['metrics']}/metrics")[0] != 200:
            return False
        with socket.create_connection((HOST, ports["otlp_http"]), timeout=1):
            return True

    _wait_until("hopscope collect", ready, 90, daemon, log)
    return daemon


# -- the clients ----------------------------------------------------------------------------------


class Ledger:
    """What the SDK saw: spans per batch acknowledged or failed, ids of both, and each export's wall time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.failed = 0
        self.latencies: list[float] = []
        # 24 bytes (trace_id + span_id) per span: 1.6 M spans in ~40 MB, where Python tuples would take 200.
        self.acked_ids = bytearray()
        self.failed_ids = bytearray()

    def record(self, spans: Sequence[Any], ok: bool, seconds: float) -> None:
        ids = b"".join(
            s.context.trace_id.to_bytes(16, "big") + s.context.span_id.to_bytes(8, "big") for s in spans
        )
        with self.lock:
            self.latencies.append(seconds)
            if ok:
                self.acknowledged += len(spans)
                self.acked_ids += ids
            else:
                self.failed += len(spans)
                self.failed_ids += ids


def _counting_exporter(endpoint: str, ledger: Ledger) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: PLC0415

    class CountingExporter(OTLPSpanExporter):
        """The stock OTLP/HTTP exporter (its own retries on 429/503, 10 s timeout), counted and timed."""

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            t0 = time.perf_counter()
            result = super().export(spans)
            ledger.record(spans, result == SpanExportResult.SUCCESS, time.perf_counter() - t0)
            return result

    return CountingExporter(endpoint=endpoint)


class Services:
    """Three services, one TracerProvider each (as three processes would have), sending to one endpoint."""

    def __init__(self, endpoint: str, cfg: SoakConfig) -> None:
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        self.ledger = Ledger()
        self.made = 0
        self.providers: dict[str, Any] = {}
        self.tracers: dict[str, Any] = {}
        self.rng = random.Random(cfg.seed)
        self.age_ns = int(cfg.span_age_s * 1e9)
        self._shut = False
        for svc in SERVICES:
            provider = TracerProvider(
                resource=Resource.create(
                    {"service.name": svc, "host.name": f"{svc}-0", "deployment.environment": "soak"}
                )
            )
            provider.add_span_processor(
                BatchSpanProcessor(
                    _counting_exporter(endpoint, self.ledger),
                    max_queue_size=cfg.queue_size,
                    schedule_delay_millis=500,
                    max_export_batch_size=cfg.batch_size,
                )
            )
            self.providers[svc] = provider
            self.tracers[svc] = provider.get_tracer("hopscope-soak")

    def request(self) -> None:
        """One trace of 5 spans with explicit times (no sleeping): the gateway calls the feature store,
        then the model server; 1% of model calls fail with 503."""
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.trace import SpanKind, Status, StatusCode  # noqa: PLC0415

        rng = self.rng
        fs_ms = rng.lognormvariate(2.7, 0.4)  # ~15 ms
        ms_ms = rng.lognormvariate(4.1, 0.35)  # ~60 ms
        net_ms = 0.3 + rng.random()
        failed = rng.random() < 0.01
        total_ms = 2 + fs_ms + ms_ms + 4 * net_ms + 1
        ms = 1_000_000
        start = time.time_ns() - self.age_ns - int(total_ms * ms)
        gw = self.tracers["api-gateway"]
        root = gw.start_span(
            "GET /recommend",
            kind=SpanKind.SERVER,
            start_time=start,
            attributes={
                "http.route": "/recommend",
                "http.request.method": "GET",
                "http.response.status_code": 503 if failed else 200,
            },
        )
        cursor = start + 2 * ms
        for server, route, dur_ms in (
            ("feature-store", "/features", fs_ms),
            ("model-server", "/predict", ms_ms),
        ):
            code = 503 if failed and server == "model-server" else 200
            client = gw.start_span(
                f"POST {route}",
                context=trace.set_span_in_context(root),
                kind=SpanKind.CLIENT,
                start_time=cursor,
                attributes={
                    "http.request.method": "POST",
                    "http.response.status_code": code,
                    "server.address": server,
                    "peer.service": server,
                },
            )
            srv_start = cursor + int(net_ms * ms)
            srv_end = srv_start + int(dur_ms * ms)
            srv = self.tracers[server].start_span(
                f"POST {route}",
                context=trace.set_span_in_context(client),
                kind=SpanKind.SERVER,
                start_time=srv_start,
                attributes={
                    "http.route": route,
                    "http.request.method": "POST",
                    "http.response.status_code": code,
                },
            )
            if code >= 500:
                srv.set_status(Status(StatusCode.ERROR, "model server overloaded"))
                client.set_status(Status(StatusCode.ERROR, "upstream 503"))
            srv.end(end_time=srv_end)
            cursor = srv_end + int(net_ms * ms)
            client.end(end_time=cursor)
        if failed:
            root.set_status(Status(StatusCode.ERROR, "upstream failed"))
        root.end(end_time=cursor + 1 * ms)
        self.made += SPANS_PER_REQUEST

    def run(self, spans_per_second: float, seconds: float, stop: threading.Event) -> float:
        """Open loop: requests are due at a fixed rate whatever the exporters do; returns seconds run."""
        per_s = spans_per_second / SPANS_PER_REQUEST
        t0 = time.monotonic()
        deadline = t0 + seconds
        done = 0
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                break
            due = int((now - t0) * per_s)
            # Catch up after a stall (GC, CPU hogs) instead of skipping: the rate is what was asked for.
            while done < due and time.monotonic() < deadline:
                self.request()
                done += 1
            stop.wait(0.02)
        return time.monotonic() - t0

    def shutdown(self, timeout_s: float) -> None:
        """Flush every queue and shut down; spans left after this are counted as dropped."""
        if self._shut:
            return
        self._shut = True
        deadline = time.monotonic() + timeout_s
        for provider in self.providers.values():
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            provider.force_flush(timeout_millis=left_ms)
        for provider in self.providers.values():
            provider.shutdown()


# -- the daemon's /metrics ------------------------------------------------------------------------


class Scrape:
    """One /metrics answer, parsed with prometheus_client's parser."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

        self.families: set[str] = set()
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for fam in text_string_to_metric_families(text):
            self.families.add(fam.name)
            self.samples.extend((s.name, dict(s.labels), float(s.value)) for s in fam.samples)

    def has(self, family: str) -> bool:
        return family in self.families

    def value(self, name: str, **labels: str) -> float | None:
        """Sum of the samples named `name` whose labels match; 0 for a family with no samples yet (a
        labelled counter before its first increment); None when the daemon has no such metric."""
        family = name
        for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
            if family.endswith(suffix) and family[: -len(suffix)] in self.families:
                family = family[: -len(suffix)]
                break
        if family not in self.families:
            return None
        return sum(
            v for n, lab, v in self.samples if n == name and all(lab.get(k) == x for k, x in labels.items())
        )

    def by_label(self, name: str, *keys: str) -> dict[str, int] | None:
        if self.value(name) is None:
            return None
        out: dict[str, int] = {}
        for n, lab, v in self.samples:
            if n == name:
                key = "/".join(lab.get(k, "") for k in keys)
                out[key] = out.get(key, 0) + int(v)
        return out

    def histogram(self, name: str, label: str) -> dict[str, dict[str, float]] | None:
        """kind -> count, mean_s and max_le_s (the smallest bucket bound holding every observation)."""
        if not self.has(name):
            return None
        out: dict[str, dict[str, float]] = {}
        for n, lab, v in self.samples:
            if n in (f"{name}_count", f"{name}_sum"):
                entry = out.setdefault(lab.get(label, ""), {"count": 0.0, "sum": 0.0, "max_le_s": 0.0})
                entry["count" if n.endswith("_count") else "sum"] = v
        for n, lab, v in self.samples:
            if n == f"{name}_bucket" and lab.get(label, "") in out:
                entry = out[lab.get(label, "")]
                le = float(lab["le"])
                if v >= entry["count"] and (entry["max_le_s"] == 0.0 or le < entry["max_le_s"]):
                    entry["max_le_s"] = le
        for entry in out.values():
            entry["mean_s"] = entry.pop("sum") / entry["count"] if entry["count"] else 0.0
        return {k: v for k, v in out.items() if v["count"]}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


class Watcher:
    """Polls the daemon every ~2 s and keeps the timeline and the running maxima."""

    def __init__(self, pid: int, metrics_url: str, cfg: SoakConfig, started: float) -> None:
        self.pid = pid
        self.url = metrics_url
        self.cfg = cfg
        self.started = started  # wall time the daemon answered first
        self.timeline: list[dict[str, Any]] = []
        self.last: Scrape | None = None
        self.seen: set[str] = set()
        self.ok = 0
        self.failed = 0
        self.rollup_lag_max: float | None = None
        self.rollup_lag_source = "none"
        self._rollup_runs_seen = 0.0
        self._rollup_success_est: float | None = None
        self._prev_poll = started
        self.commit_age_max: float | None = None
        self.slice_max: float | None = None
        self.queue_jobs_max: float | None = None
        self.queue_spans_max: float | None = None

    def poll(self) -> dict[str, Any]:
        now = time.time()
        row: dict[str, Any] = {"t": round(now - self.started, 1), "rss_mb": _rss_mb(self.pid)}
        try:
            code, body = _http_get(self.url, timeout_s=min(2.0, self.cfg.poll_s))
            if code != 200:
                raise OSError(f"/metrics answered {code}")
            scrape = Scrape(body.decode())
        except (OSError, ValueError) as exc:  # a busy or dying daemon: a gap in the timeline, not a crash
            self.failed += 1
            row["error"] = str(exc)[:200]
            self.timeline.append(row)
            return row
        self.ok += 1
        self.last = scrape
        self.seen |= {m for m in WATCHED_METRICS if scrape.has(m)}
        row["received"] = scrape.value("hopscope_otlp_spans_received_total")
        row["refused"] = scrape.value("hopscope_otlp_spans_refused_total")
        row["store_errors"] = scrape.value("hopscope_store_errors_total")
        row["reconnects"] = scrape.value("hopscope_store_reconnects_total")
        row["queue_jobs"] = scrape.value("hopscope_writer_queue_jobs")
        row["queue_spans"] = scrape.value("hopscope_write_queue_spans")
        row["slice_max_s"] = scrape.value("hopscope_maintenance_slice_max_seconds")
        row["maint_ok"] = scrape.value("hopscope_maintenance_cycles_total", ok="true")
        commit = scrape.value("hopscope_store_last_commit_timestamp_seconds")
        if commit:
            row["commit_age_s"] = round(now - commit, 2)
            self.commit_age_max = max(self.commit_age_max or 0.0, now - commit)
        self._rollup_lag(scrape, now, row)
        for key, attr in (("slice_max_s", "slice_max"), ("queue_jobs", "queue_jobs_max"),
                          ("queue_spans", "queue_spans_max")):  # fmt: skip
            if row[key] is not None:
                setattr(self, attr, max(getattr(self, attr) or 0.0, row[key]))
        self._prev_poll = now
        self.timeline.append(row)
        return row

    def _rollup_lag(self, scrape: Scrape, now: float, row: dict[str, Any]) -> None:
        last = scrape.value("hopscope_rollup_last_success_timestamp_seconds")
        if last is not None:
            self.rollup_lag_source = "hopscope_rollup_last_success_timestamp_seconds"
        else:
            # An older daemon: the poll before the one that saw collector_runs{rollup,ok} grow bounds the
            # last success from below, so the lag is over-estimated by at most one poll interval.
            runs = scrape.value("hopscope_collector_runs_total", collector="rollup", ok="true")
            if runs is None:
                return
            self.rollup_lag_source = "collector_runs{rollup} (+- one poll)"
            if runs > self._rollup_runs_seen:
                self._rollup_runs_seen = runs
                self._rollup_success_est = self._prev_poll
            last = self._rollup_success_est
        # Before the first success the lag counts from the daemon's start.
        lag = now - (last if last else self.started)
        row["rollup_lag_s"] = round(lag, 2)
        if now - self.started >= self.cfg.rollup_interval_s:
            self.rollup_lag_max = max(self.rollup_lag_max or 0.0, lag)


# -- the soak -------------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _audit_store(path: Path, ledger: Ledger) -> dict[str, Any]:
    """Counts from the stopped daemon's store, opened read-only, and the SDK's ids checked against it."""
    import duckdb  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415

    from hopscope.store import DATA_DIR, Store  # noqa: PLC0415

    out: dict[str, Any] = {}
    store = Store(path, create=False)
    try:
        out["spans_stored"] = store.count("spans")
        ids = store.query("SELECT DISTINCT trace_id || span_id AS id FROM spans")
        out["spans_distinct"] = ids.num_rows
        out["hop_minutes_rows"] = store.count("hop_minutes")
        rows = store.query("SELECT source, count(*) AS n FROM samples GROUP BY source").to_pylist()
        out["samples_by_source"] = {r["source"]: int(r["n"]) for r in rows}
        maint = store.query(
            "SELECT count(*) FILTER (WHERE ok) AS ok, count(*) FILTER (WHERE NOT ok) AS failed, "
            "max(duration_ms) AS max_ms FROM collector_runs WHERE collector = 'maintain'"
        ).to_pylist()[0]
        out["maintain_runs"] = maint
    finally:
        store.close()
    con = duckdb.connect()
    try:
        con.register("stored", ids)
        for key, buf in (("acked_missing", ledger.acked_ids), ("failed_but_stored", ledger.failed_ids)):
            n = len(buf) // 24
            sent = pa.table(
                {
                    "id": pa.FixedSizeBinaryArray.from_buffers(
                        pa.binary(24), n, [None, pa.py_buffer(bytes(buf))]
                    )
                }
            )
            con.register("sent", sent)
            op = "ANTI" if key == "acked_missing" else "SEMI"
            row = con.execute(f"SELECT count(*) FROM sent {op} JOIN stored ON sent.id = stored.id").fetchone()
            out[key] = int(row[0]) if row else 0
            con.unregister("sent")
    finally:
        con.close()
    out["data_files"] = sum(1 for _ in (path / DATA_DIR).rglob("*.parquet"))
    return out


def _read_log(log: Path) -> tuple[int, int, list[str]]:
    warnings = errors = 0
    first: list[str] = []
    if not log.exists():
        return 0, 0, first
    for line in log.read_text(errors="replace").splitlines():
        if " WARNING " in line:
            warnings += 1
            msg = line.split(" WARNING ", 1)[1][:200]
            if len(first) < 5 and msg not in first:
                first.append(msg)
        elif " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
            errors += 1
            if len(first) < 5:
                first.append(line[:200])
    return warnings, errors, first


def run_soak(cfg: SoakConfig, progress: Callable[[str], None] | None = say_stderr) -> SoakResult:
    """Run one soak as described in the module docstring; SoakError if a component does not start."""
    say = progress or (lambda _line: None)
    procs: list[subprocess.Popen[bytes]] = []
    hogs: list[subprocess.Popen[bytes]] = []
    servers: list[HealthServer] = []
    services: Services | None = None
    stop = threading.Event()
    with workdir(cfg.keep, "hopscope-soak-") as work:
        try:
            servers = [HealthServer(), HealthServer()]
            prom_url = _start_prometheus(cfg, work, procs)
            ports = {"otlp_http": free_port(), "otlp_grpc": free_port(), "metrics": free_port()}
            config = _write_config(cfg, work, ports, [s.url for s in servers], prom_url)
            daemon = _start_daemon(config, work, ports, procs)
            started = time.time()
            say(f"soak: daemon pid {daemon.pid} ready; work dir {work}")
            for _ in range(cfg.hogs):  # after the daemon is up: the hogs slow the soak, not its start
                hogs.append(_spawn([sys.executable, "-c", "while True: pass"], work / "hogs.log"))
                procs.append(hogs[-1])
            services = Services(f"http://{HOST}:{ports['otlp_http']}/v1/traces", cfg)
            watcher = Watcher(daemon.pid, f"http://{HOST}:{ports['metrics']}/metrics", cfg, started)
            ran: dict[str, float] = {}

            def load() -> None:
                assert services is not None
                try:
                    ran["seconds"] = services.run(cfg.spans_per_second, cfg.seconds, stop)
                finally:
                    services.shutdown(cfg.flush_timeout_s)

            loader = threading.Thread(target=load, name="soak-load", daemon=True)
            loader.start()
            hard_stop = time.monotonic() + cfg.seconds + cfg.flush_timeout_s + 60
            next_say = time.monotonic() + cfg.progress_s
            while loader.is_alive() and time.monotonic() < hard_stop:
                row = watcher.poll()
                if time.monotonic() >= next_say:
                    next_say += cfg.progress_s
                    say(_progress_line(row, services, watcher))
                loader.join(timeout=cfg.poll_s)
            if loader.is_alive():
                stop.set()
                raise SoakError("the clients did not finish flushing in time")
            watcher.poll()  # every acknowledged span is committed before its answer: counters are final
            cpu = _cpu_s(daemon.pid)
            for proc in hogs:  # stopped first, so they do not slow the daemon's stop being timed
                _kill_group(proc)
            t0 = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            stop_seconds: float | None
            try:
                exit_code: int | None = daemon.wait(timeout=cfg.stop_timeout_s)
                stop_seconds = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                _kill_group(daemon, grace_s=0)
                exit_code, stop_seconds = None, None
            took = (
                f"{stop_seconds:.1f} s"
                if stop_seconds is not None
                else f"over {cfg.stop_timeout_s:g} s (killed)"
            )
            say(f"soak: daemon exited {exit_code} after {took}; auditing the store")
            audit = _audit_store(work / "store", services.ledger)
            result = _result(cfg, services, ran.get("seconds", cfg.seconds), watcher, audit, exit_code, stop_seconds,
                             cpu, work)  # fmt: skip
            if cfg.keep is not None:
                (work / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
                with open(work / "timeline.jsonl", "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in watcher.timeline)
            return result
        finally:
            stop.set()
            for proc in reversed(procs):
                _kill_group(proc)
            for server in servers:
                server.close()
            if services is not None:
                services.shutdown(5)


def _progress_line(row: dict[str, Any], services: Services, watcher: Watcher) -> str:
    led = services.ledger
    lag = row.get("rollup_lag_s")
    return (
        f"soak: {row['t']:6.0f} s  made {services.made}  acked {led.acknowledged}  failed {led.failed}  "
        f"received {_fmt(row.get('received'))}  refused {_fmt(row.get('refused'))}  "
        f"store errors {_fmt(row.get('store_errors'))}  rss {_fmt(row.get('rss_mb'), '.0f')} MB  "
        f"rollup lag {_fmt(lag, '.0f')} s  polls failed {watcher.failed}"
    )


def _fmt(value: Any, spec: str = ".0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _result(
    cfg: SoakConfig,
    services: Services,
    seconds: float,
    watcher: Watcher,
    audit: dict[str, Any],
    exit_code: int | None,
    stop_seconds: float | None,
    cpu: float | None,
    work: Path,
) -> SoakResult:
    led = services.ledger
    last = watcher.last
    rss = [r["rss_mb"] for r in watcher.timeline if r.get("rss_mb") is not None]
    warnings, errors, first = _read_log(work / "daemon.log")
    maint_ok = last.value("hopscope_maintenance_cycles_total", ok="true") if last else None
    maint_failed = last.value("hopscope_maintenance_cycles_total", ok="false") if last else None
    if maint_ok is None and last is not None:  # an older daemon counts maintenance among collector runs
        maint_ok = last.value("hopscope_collector_runs_total", collector="maintain", ok="true")
        maint_failed = last.value("hopscope_collector_runs_total", collector="maintain", ok="false")
    slice_source = "hopscope_maintenance_slice_max_seconds"
    slice_max = watcher.slice_max
    if slice_max is None and audit["maintain_runs"]["max_ms"] is not None:
        slice_max = audit["maintain_runs"]["max_ms"] / 1000
        slice_source = "longest whole maintenance run (collector_runs)"
    distinct = audit["spans_distinct"]
    return SoakResult(
        seconds=round(seconds, 1),
        spans_per_second_target=cfg.spans_per_second,
        spans_per_second_made=round(services.made / seconds, 1) if seconds else 0.0,
        hogs=cfg.hogs,
        rollup_interval_s=cfg.rollup_interval_s,
        maintain_interval_s=cfg.maintain_interval_s,
        spans_made=services.made,
        acknowledged=led.acknowledged,
        failed=led.failed,
        dropped=services.made - led.acknowledged - led.failed,
        exports=len(led.latencies),
        export_p50_s=_percentile(led.latencies, 50),
        export_p99_s=_percentile(led.latencies, 99),
        export_max_s=max(led.latencies) if led.latencies else None,
        received=_int(last.value("hopscope_otlp_spans_received_total")) if last else None,
        refused=last.by_label("hopscope_otlp_spans_refused_total", "reason") if last else None,
        requests=last.by_label("hopscope_otlp_requests_total", "transport", "code") if last else None,
        store_errors=last.by_label("hopscope_store_errors_total", "table") if last else None,
        store_reconnects=_int(last.value("hopscope_store_reconnects_total")) if last else None,
        commit_age_max_s=_round(watcher.commit_age_max),
        writer_queue_jobs_max=watcher.queue_jobs_max,
        write_queue_spans_max=watcher.queue_spans_max,
        writer_jobs=last.histogram("hopscope_writer_job_seconds", "kind") if last else None,
        rollup_lag_max_s=_round(watcher.rollup_lag_max),
        rollup_lag_source=watcher.rollup_lag_source,
        maintenance_slice_max_s=_round(slice_max),
        maintenance_slice_source=slice_source if slice_max is not None else "none",
        maintenance_ok=_int(maint_ok),
        maintenance_failed=_int(maint_failed),
        rss_first_mb=_round(rss[0] if rss else None),
        rss_max_mb=_round(max(rss) if rss else None),
        rss_last_mb=_round(rss[-1] if rss else None),
        daemon_cpu_s=_round(cpu),
        metrics_missing=[m for m in WATCHED_METRICS if m not in watcher.seen],
        polls_ok=watcher.ok,
        polls_failed=watcher.failed,
        daemon_exit_code=exit_code,
        stop_seconds=_round(stop_seconds),
        spans_stored=audit["spans_stored"],
        spans_distinct=distinct,
        duplicates=audit["spans_stored"] - distinct,
        lost=led.acknowledged - distinct,
        acked_missing=audit["acked_missing"],
        failed_but_stored=audit["failed_but_stored"],
        hop_minutes_rows=audit["hop_minutes_rows"],
        samples_by_source=audit["samples_by_source"],
        data_files=audit["data_files"],
        log_warnings=warnings,
        log_errors=errors,
        first_warnings=first,
        keep_dir=str(work) if cfg.keep is not None else None,
        timeline=watcher.timeline,
    )


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- reporting ------------------------------------------------------------------------------------


def summary_rows(r: SoakResult) -> list[tuple[str, str]]:
    """(label, value) rows of the human summary; benchmarks/soak.py puts two runs side by side."""

    def d(x: dict[str, Any] | None) -> str:
        return "-" if x is None else (", ".join(f"{k}={v}" for k, v in sorted(x.items())) or "0")

    def f(x: float | None, unit: str = "", spec: str = ".3f") -> str:
        return "-" if x is None else f"{x:{spec}}{unit}"

    rows = [
        ("duration / hogs", f"{r.seconds:.0f} s / {r.hogs}"),
        ("spans/s target / made", f"{r.spans_per_second_target:g} / {r.spans_per_second_made:g}"),
        ("rollup / maintain interval", f"{r.rollup_interval_s:g} s / {r.maintain_interval_s:g} s"),
        ("spans made", str(r.spans_made)),
        ("acknowledged (SDK)", str(r.acknowledged)),
        ("failed exports (SDK spans)", str(r.failed)),
        ("dropped by SDK queue", str(r.dropped)),
        ("export p50 / p99 / max", f"{f(r.export_p50_s)} / {f(r.export_p99_s)} / {f(r.export_max_s)} s ({r.exports} exports)"),
        ("received (daemon)", _fmt(r.received)),
        ("refused by reason", d(r.refused)),
        ("requests by code", d(r.requests)),
        ("store errors by table", d(r.store_errors)),
        ("store reconnects", _fmt(r.store_reconnects)),
        ("spans stored / distinct", f"{_fmt(r.spans_stored)} / {_fmt(r.spans_distinct)}"),
        ("duplicates", _fmt(r.duplicates)),
        ("lost (acked - distinct)", _fmt(r.lost)),
        ("acked but missing / failed but stored", f"{_fmt(r.acked_missing)} / {_fmt(r.failed_but_stored)}"),
        ("max rollup lag", f"{f(r.rollup_lag_max_s, ' s', '.1f')} ({r.rollup_lag_source})"),
        ("max last-commit age", f(r.commit_age_max_s, " s", ".1f")),
        ("longest maintenance slice", f"{f(r.maintenance_slice_max_s, ' s')} ({r.maintenance_slice_source})"),
        ("maintenance cycles ok / failed", f"{_fmt(r.maintenance_ok)} / {_fmt(r.maintenance_failed)}"),
        ("writer queue max jobs / spans", f"{_fmt(r.writer_queue_jobs_max)} / {_fmt(r.write_queue_spans_max)}"),
        ("RSS first / max / last", f"{f(r.rss_first_mb, '', '.0f')} / {f(r.rss_max_mb, '', '.0f')} / {f(r.rss_last_mb, '', '.0f')} MB"),
        ("daemon CPU", f(r.daemon_cpu_s, " s", ".0f")),
        ("hop_minutes rows", _fmt(r.hop_minutes_rows)),
        ("samples by source", d(r.samples_by_source)),
        ("data files at end", _fmt(r.data_files)),
        ("daemon exit / stop time", f"{_fmt(r.daemon_exit_code)} / {f(r.stop_seconds, ' s', '.1f')}"),
        ("daemon log warnings / errors", f"{r.log_warnings} / {r.log_errors}"),
        ("polls ok / failed", f"{r.polls_ok} / {r.polls_failed}"),
        ("metrics absent", ", ".join(m.removeprefix("hopscope_") for m in r.metrics_missing) or "none"),
    ]  # fmt: skip
    if r.writer_jobs:
        for kind, h in sorted(r.writer_jobs.items()):
            rows.append(
                (
                    f"writer job {kind}",
                    f"n={h['count']:.0f} mean={h['mean_s']:.3f} s max<={h['max_le_s']:g} s",
                )
            )
    return rows


def format_summary(r: SoakResult) -> str:
    rows = summary_rows(r)
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines += [f"  warning: {w}" for w in r.first_warnings]
    return "\n".join(lines)


def print_summary(r: SoakResult, file: Any = None) -> None:
    print(format_summary(r), file=file or sys.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.soak",
        description=(
            "Soak `hopscope collect` for real: three OpenTelemetry SDK services export traces over OTLP/HTTP "
            "at a fixed rate while probes, host network and a real Prometheus + node_exporter are collected, "
            "rollups and store maintenance run, and optional CPU hogs compete for the cores. Measures spans "
            "acknowledged / failed / dropped on the SDK side and their export latency (p50/p99/max); spans "
            "refused and store errors on the daemon side; the daemon's RSS, rollup lag, longest maintenance "
            "slice and maintenance cycles; and, after SIGTERM, the daemon's exit code and stop time and a store "
            "audit: every acknowledged span stored exactly once (lost, duplicates), hop_minutes rows, samples "
            "by source and Parquet files. Everything listens on 127.0.0.1 only."
        ),
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the clients send (default 30)")
    parser.add_argument(
        "--spans-per-second", type=float, default=900.0, help="target span rate (default 900)"
    )
    parser.add_argument(
        "--hogs", type=int, default=0, help="busy-loop processes competing for CPU (default 0)"
    )
    parser.add_argument("--rollup-interval", type=float, default=10.0, help="[collect] rollup_interval_s")
    parser.add_argument("--maintain-interval", type=float, default=30.0, help="[collect] maintain_interval_s")
    parser.add_argument("--batch-size", type=int, default=256, help="SDK max_export_batch_size (default 256)")
    parser.add_argument(
        "--span-age", type=float, default=0.0, help="stamp spans this many seconds in the past (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object instead")
    parser.add_argument("--keep", type=Path, help="keep store, logs, result.json and timeline.jsonl in DIR")
    args = parser.parse_args(argv)
    cfg = SoakConfig(
        seconds=args.minutes * 60,
        spans_per_second=args.spans_per_second,
        hogs=args.hogs,
        rollup_interval_s=args.rollup_interval,
        maintain_interval_s=args.maintain_interval,
        batch_size=args.batch_size,
        span_age_s=args.span_age,
        keep=args.keep,
    )
    try:
        result = run_soak(cfg)
    except SoakError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print_summary(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

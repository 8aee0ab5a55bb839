"""`hopscope collect`: every enabled collector, the OTLP receiver, rollups and maintenance in one daemon.

Each collector runs in its own thread at its own interval; a failing target or a
crashing collector becomes a `collector_runs` row (ok=False) and never stops the
others. Samples and run records are buffered briefly and appended in bulk.
SIGTERM/SIGINT: stop accepting, commit everything acknowledged, exit 0.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from collectors.config import CollectConfig
from collectors.records import Run, Sample, TargetResult, runs_table, samples_table
from collectors.selfmetrics import SelfMetrics
from hopscope.errors import HopscopeError
from hopscope.store import Store, utcnow

log = logging.getLogger(__name__)


class Collector(Protocol):
    name: str
    interval_s: float

    def collect(self) -> Iterable[TargetResult]: ...


class RecordSink:
    """Buffers samples and run records; writes them in bulk every `flush_s` and at stop."""

    def __init__(self, store: Any, metrics: SelfMetrics, flush_s: float = 2.0) -> None:
        self._store = store
        self._metrics = metrics
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._samples: list[Sample] = []
        self._sample_sources: list[tuple[str, int]] = []
        self._runs: list[Run] = []

    def add(self, collector: str, samples: Sequence[Sample], run: Run) -> None:
        with self._lock:
            self._samples.extend(samples)
            if samples:
                self._sample_sources.append((collector, len(samples)))
            self._runs.append(run)

    def flush(self) -> None:
        with self._lock:
            samples, self._samples = self._samples, []
            sources, self._sample_sources = self._sample_sources, []
            runs, self._runs = self._runs, []
        if samples:
            try:
                self._store.append("samples", samples_table(samples))
                for collector, n in sources:
                    self._metrics.samples_written.labels(collector).inc(n)
            except Exception as exc:  # keep them for the next flush rather than lose them
                self._metrics.store_errors.labels("samples").inc()
                log.warning("writing %d samples failed (will retry): %s", len(samples), exc)
                with self._lock:
                    self._samples[:0] = samples
                    self._sample_sources[:0] = sources
        if runs:
            try:
                self._store.append("collector_runs", runs_table(runs))
            except Exception as exc:
                self._metrics.store_errors.labels("collector_runs").inc()
                log.warning("writing %d collector runs failed (will retry): %s", len(runs), exc)
                with self._lock:
                    self._runs[:0] = runs


def run_once(collector: Collector, sink: RecordSink, metrics: SelfMetrics) -> list[Run]:
    """One pass of a collector; every target becomes a Run; a crash becomes a failed Run."""
    t0 = time.perf_counter()
    runs: list[Run] = []
    try:
        for result in collector.collect():
            ms = (time.perf_counter() - t0) * 1000
            rows = len(result.samples) + result.written
            error = result.error
            if result.partial and result.ok:
                error = f"partial: {error or 'the source reported warnings'}"
            run = Run(utcnow(), collector.name, result.target, result.ok, rows, error, ms)
            sink.add(collector.name, result.samples, run)
            runs.append(run)
    except Exception as exc:  # a collector bug must not stop the others
        log.exception("collector %s crashed", collector.name)
        run = Run(
            utcnow(),
            collector.name,
            "*",
            False,
            0,
            f"{type(exc).__name__}: {exc}"[:500],
            (time.perf_counter() - t0) * 1000,
        )
        sink.add(collector.name, (), run)
        runs.append(run)
    for run in runs:
        count_run(metrics, run)
    return runs


def count_run(metrics: SelfMetrics, run: Run) -> None:
    metrics.collector_runs.labels(run.collector, str(run.ok).lower()).inc()
    if not run.ok:
        metrics.collector_errors.labels(run.collector).inc()


@dataclass
class Daemon:
    """The parts of `hopscope collect`, startable and stoppable in-process (tests, benchmarks)."""

    store: Any
    cfg: CollectConfig
    thresholds_ms: Sequence[float] = ()
    collectors: list[Collector] | None = None  # None: build them from cfg
    metrics: SelfMetrics = field(default_factory=SelfMetrics)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    nvml_module: Any = None
    flush_s: float = 2.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.sink = RecordSink(self.store, self.metrics, self.flush_s)
        self.otlp: Any = None
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self.disabled: dict[str, str] = {}

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        from collectors.build import build_collectors  # noqa: PLC0415  (keeps runner importable alone)

        enabled: list[Collector]
        if self.collectors is None:
            enabled, self.disabled = build_collectors(self.cfg, self.store, nvml_module=self.nvml_module)
        else:
            enabled = list(self.collectors)
        lines = []
        if self.cfg.otlp.enabled:
            from collectors.otlp import OtlpReceiver  # noqa: PLC0415

            self.otlp = OtlpReceiver(self.store, self.cfg.otlp, self.metrics)
            self.otlp.start()
            lines += [f"  listening: {a}" for a in self.otlp.addresses]
        else:
            self.disabled["otlp"] = "[collect.otlp] enabled = false"
        if self.cfg.metrics.enabled:
            from prometheus_client import start_http_server  # noqa: PLC0415

            server, _thread = start_http_server(
                self.cfg.metrics.port, self.cfg.metrics.host, registry=self.metrics.registry
            )
            self._metrics_server = server
            self.metrics_port = server.server_address[1]
            lines.append(f"  listening: /metrics http://{self.cfg.metrics.host}:{self.metrics_port}/metrics")
        else:
            self.disabled["metrics"] = "[collect.metrics] enabled = false"
        for c in enabled:
            self.metrics.collector_enabled.labels(c.name).set(1)
            self._spawn(f"collector-{c.name}", self._loop, c)
            if c.name not in self.disabled:  # scheduled but disabled for now (NVML retrying its init)
                lines.append(f"  enabled: {c.name} every {c.interval_s:g} s{_describe(c)}")
        for name, reason in sorted(self.disabled.items()):
            self.metrics.collector_enabled.labels(name).set(0)
            lines.append(f"  disabled: {name}: {reason}")
        self._spawn("flush", self._every, self.flush_s, self.sink.flush)
        self._spawn("rollup", self._every, self.cfg.rollup_interval_s, self._rollup)
        self._spawn("maintain", self._every, self.cfg.maintain_interval_s, self._maintain)
        print(f"hopscope collect: store {getattr(self.store, 'path', '?')}", file=self.out)
        print("\n".join(lines), file=self.out, flush=True)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _loop(self, collector: Collector) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            run_once(collector, self.sink, self.metrics)
            next_at += collector.interval_s
            now = time.monotonic()
            if next_at < now:  # fell behind: skip missed ticks, keep the cadence
                next_at = now + collector.interval_s - ((now - next_at) % collector.interval_s)
            self._stop.wait(next_at - now)

    def _every(self, interval_s: float, fn: Callable[[], None]) -> None:
        while not self._stop.wait(interval_s):
            fn()

    def _rollup(self) -> None:
        t0 = time.perf_counter()
        try:
            rollup = importlib.import_module("hopscope.rollup")
        except ImportError as exc:
            log.warning("rollups skipped: hopscope.rollup is not importable (%s)", exc)
            return
        try:
            result = rollup.run_rollup(self.store, list(self.thresholds_ms))
            rows = int(result) if isinstance(result, int) else int(getattr(result, "rows", 0) or 0)
            run = Run(utcnow(), "rollup", "hop_minutes", True, rows, None, (time.perf_counter() - t0) * 1000)
        except Exception as exc:
            log.warning("rollup failed: %s", exc)
            run = Run(
                utcnow(), "rollup", "hop_minutes", False, 0, str(exc)[:500], (time.perf_counter() - t0) * 1000
            )
        self.sink.add("rollup", (), run)
        count_run(self.metrics, run)

    def _maintain(self) -> None:
        t0 = time.perf_counter()
        self.sink.flush()
        try:
            report = self.store.maintain()
            rows = sum(getattr(report, "deleted_rows", {}).values())
            run = Run(utcnow(), "maintain", "store", True, rows, None, (time.perf_counter() - t0) * 1000)
        except Exception as exc:
            log.warning("store maintenance failed: %s", exc)
            run = Run(
                utcnow(), "maintain", "store", False, 0, str(exc)[:500], (time.perf_counter() - t0) * 1000
            )
        self.sink.add("maintain", (), run)
        count_run(self.metrics, run)

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop accepting, commit what was acknowledged and what collectors gathered, stop threads."""
        self._stop.set()
        if self.otlp is not None:
            self.otlp.stop()
        for t in self._threads:
            t.join(timeout=30)
        self.sink.flush()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


def _describe(c: Collector) -> str:
    targets = getattr(c, "targets_text", None)
    return f" ({targets})" if targets else ""


def _return_memory_promptly() -> None:
    """Keep the daemon's resident memory near what it uses (measured with benchmarks/otlp_ingest.py).

    Arrow's default pool (mimalloc) keeps freed pages: the system allocator gives ~90 MB less peak
    RSS over decode-and-commit cycles. glibc gives each request thread its own arena of freed
    memory; two arenas for the whole process save another ~20 MB. Call before threads start.
    """
    import ctypes  # noqa: PLC0415

    import pyarrow as pa  # noqa: PLC0415

    pa.set_memory_pool(pa.system_memory_pool())
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_M_ARENA_MAX = -8  # glibc malloc.h


def run_collect(
    store_path: Path,
    cfg: CollectConfig,
    *,
    thresholds_ms: Sequence[float],
    store_options: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
) -> int:
    """The `hopscope collect` daemon. Returns the exit code (0 after SIGTERM/SIGINT or `stop`).

    store_options: keyword arguments of Store (retention per table, exemplar retention).
    """
    out = out or sys.stdout
    stop = stop or threading.Event()
    _return_memory_promptly()
    try:
        store = Store(store_path, **(store_options or {}))
    except HopscopeError as exc:
        print(f"hopscope collect: {exc}", file=sys.stderr)
        return 2
    daemon = Daemon(store, cfg, thresholds_ms, out=out)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        try:
            daemon.start()
        except (OSError, HopscopeError) as exc:
            print(f"hopscope collect: {exc}", file=sys.stderr)
            daemon.stop()
            return 2
        while not stop.wait(0.5):
            pass
        print("hopscope collect: stopping (committing what was acknowledged)", file=out, flush=True)
        daemon.stop()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        store.close()

"""`hopscope collect`: every enabled collector, the OTLP receiver, rollups, maintenance and SLO alerts in one daemon.

Each collector runs in its own thread at its own interval; a failing target or a
crashing collector becomes a `collector_runs` row (ok=False) and never stops the
others. Samples and run records are buffered briefly and appended in bulk.

Every write goes through one StoreWriter (hopscope/writer.py): span commits, samples, runs,
rollups, state and maintenance slices take turns on one connection and one thread, so no two
store transactions of the daemon ever compete for the catalog. Reads (rollups, watermarks) use
the daemon's reading connection. Maintenance runs as bounded slices between ingest writes.

SIGTERM/SIGINT: stop accepting, commit everything acknowledged, exit within `stop_timeout_s`;
what could not be committed is counted on stderr.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

import pyarrow as pa
from prometheus_client import start_http_server

from hopscope.alerting import AlertEvaluator
from hopscope.collectors.otlp import OtlpReceiver
from hopscope.collectors.records import Run, Sample, TargetResult, runs_table, samples_table
from hopscope.collectors.selfmetrics import SelfMetrics
from hopscope.config.alerting import AlertingConfig
from hopscope.config.collect import CollectConfig
from hopscope.errors import HopscopeError, StoreError
from hopscope.health import DaemonStatus, write_status
from hopscope.leader import Leadership, default_holder, leader_for
from hopscope.slo.model import SLO
from hopscope.store import Store, utcnow
from hopscope.writer import StoreWriter, WriterListener, WritingStore

log = logging.getLogger(__name__)


class Collector(Protocol):
    name: str
    interval_s: float

    def collect(self) -> Iterable[TargetResult]: ...


@runtime_checkable
class Interruptible(Protocol):
    def interrupt(self) -> None:
        """The daemon is stopping: end collect() now, leaving what is in flight unreported."""


class RecordSink:
    """Buffers samples and run records; writes them in bulk every `flush_s` and at stop.

    While the store refuses writes they stay buffered and are retried at the next flush, up to
    `max_buffered` samples: past that the oldest are dropped and counted (never silently)."""

    def __init__(
        self, store: Any, metrics: SelfMetrics, flush_s: float = 2.0, *, max_buffered: int = 500_000
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._flush_s = flush_s
        self._max_buffered = max_buffered
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

    @property
    def pending(self) -> tuple[int, int]:
        """(samples, runs) not yet written."""
        with self._lock:
            return len(self._samples), len(self._runs)

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
                    self._bound()
        if runs:
            try:
                self._store.append("collector_runs", runs_table(runs))
            except Exception as exc:
                self._metrics.store_errors.labels("collector_runs").inc()
                log.warning("writing %d collector runs failed (will retry): %s", len(runs), exc)
                with self._lock:
                    self._runs[:0] = runs
                    self._bound()
        with self._lock:
            self._metrics.samples_buffered.set(len(self._samples) + len(self._runs))

    def _bound(self) -> None:
        """Drop the oldest records past the bound (the lock is held), and say how many."""
        over = len(self._samples) - self._max_buffered
        if over > 0:
            del self._samples[:over]
            left = over  # the per-collector counts of what was dropped go too
            while left and self._sample_sources:
                collector, n = self._sample_sources[0]
                if n <= left:
                    self._sample_sources.pop(0)
                    left -= n
                else:
                    self._sample_sources[0] = (collector, n - left)
                    left = 0
            self._metrics.samples_dropped.inc(over)
            log.warning("the store refuses writes: dropped the %d oldest buffered samples", over)
        over = len(self._runs) - self._max_buffered // 10
        if over > 0:
            del self._runs[:over]
            self._metrics.samples_dropped.inc(over)
            log.warning("the store refuses writes: dropped the %d oldest buffered collector runs", over)


def run_once(collector: Collector, sink: RecordSink, metrics: SelfMetrics) -> list[Run]:
    """One pass of a collector; every target becomes a Run; a crash becomes a failed Run."""
    t0 = time.perf_counter()
    runs: list[Run] = []
    try:
        for result in collector.collect():
            # A target that times itself (probes run in parallel) has its own duration, not the pass's so far.
            ms = (
                result.duration_s * 1000
                if result.duration_s is not None
                else (time.perf_counter() - t0) * 1000
            )
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
    leader: Leadership | None = None  # None: a lease on a shared store, else the embedded store's sole leader
    # SLO evaluation and alert delivery ([alerting]); no SLOs or enabled = false: none.
    slos: Sequence[SLO] = ()
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    dashboard_url: str = "http://127.0.0.1:8501"
    slo_clock: Callable[[], datetime] = utcnow  # where the SLOs are evaluated (a replay passes a past time)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: list[Collector] = []
        # The one writer: a connection of its own (a clone of the store), so that a reconnect after a
        # wedge never disturbs the readers, and no reader's transaction ever holds up a write.
        self.writer: StoreWriter | None = None
        self.wstore: Any = self.store
        if isinstance(self.store, Store):
            self.writer = StoreWriter(
                self.store.clone(),
                heal_after_s=self.cfg.heal_after_s,
                listener=_MetricsListener(self.metrics),
            )
            self.wstore = WritingStore(self.store, self.writer)
            written = self.writer.store
            self.metrics.conflict_retries.set_function(lambda: float(written.conflicts_retried))
        self.sink = RecordSink(self.wstore, self.metrics, self.flush_s)
        self.maintenance_pending = False
        self._started_unix = time.time()
        self._listener = self.writer.listener if self.writer is not None else None
        self.otlp: Any = None
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self.disabled: dict[str, str] = {}
        if self.leader is None:
            backend = self.store.backend if isinstance(self.store, Store) else None
            self.leader = leader_for(
                backend, holder=default_holder(self.cfg.host_name), lease_s=self.cfg.leader_lease_s
            )
        leader = self.leader
        self.metrics.leader.set_function(lambda: float(leader.is_leader()))
        self.metrics.leader_term.set_function(lambda: float(leader.term()))
        self.alerts: AlertEvaluator | None = None

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        from hopscope.collectors.build import build_collectors  # noqa: PLC0415  (keeps runner importable alone)

        enabled: list[Collector]
        if self.collectors is None:
            enabled, self.disabled = build_collectors(self.cfg, self.wstore, nvml_module=self.nvml_module)
        else:
            enabled = list(self.collectors)
        self._running = enabled
        lines = []
        if self.cfg.otlp.enabled:
            self.otlp = OtlpReceiver(self.wstore, self.cfg.otlp, self.metrics)
            self.otlp.start()
            lines += [f"  listening: {a}" for a in self.otlp.addresses]
        else:
            self.disabled["otlp"] = "[collect.otlp] enabled = false"
        if self.cfg.metrics.enabled:
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
        assert self.leader is not None
        self.leader.start()
        lines.append(f"  leader: {self.leader.holder} {'leads' if self.leader.is_leader() else 'stands by'}")
        # What must run once per store, not once per collector, runs only while this collector leads.
        self._spawn("rollup", self._every, self.cfg.rollup_interval_s, self._leading(self._rollup))
        self._spawn("maintain", self._every, self.cfg.maintain_interval_s, self._leading(self._maintain))
        lines += self._start_alerting()
        self._spawn("status", self._every, _STATUS_EVERY_S, self._status)
        print(f"hopscope collect: store {getattr(self.store, 'path', '?')}", file=self.out)
        print("\n".join(lines), file=self.out, flush=True)

    def _start_alerting(self) -> list[str]:
        """SLO evaluation (hopscope_slo_* on /metrics) and alert delivery, in their own thread.

        The one place the daemon starts them: where several collectors share a store, only one of
        them (the leader) should evaluate and send."""
        cfg = self.alerting
        if not cfg.enabled or not self.slos:
            return [f"  disabled: alerting: {'[alerting] enabled = false' if not cfg.enabled else 'no SLOs'}"]
        self.alerts = AlertEvaluator(
            self.wstore,
            self.slos,
            cfg,
            dashboard_url=self.dashboard_url,
            metrics=self.metrics,
            clock=self.slo_clock,
        )
        self.metrics.registry.register(self.alerts.slo_metrics)
        self._spawn("alerting", self.alerts.run, self._stop, self._leads)
        every = f"every {cfg.evaluation_interval.total_seconds():g} s"
        targets = ", ".join(c.name for c in self.alerts.clients) or "none: SLO metrics only"
        return [f"  enabled: alerting: {len(self.alerts.slos)} SLO(s) {every}, Alertmanagers: {targets}"]

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
            try:
                fn()
            except Exception:  # a bug in one periodic task must not end it for good
                log.exception("%s failed", getattr(fn, "__name__", "a periodic task"))

    def _leads(self) -> bool:
        return self.leader is None or self.leader.is_leader()

    def _leading(self, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn``, run only while this collector leads (a shared store's other collectors stand by)."""

        def run() -> None:
            if self._leads():
                fn()

        run.__name__ = fn.__name__
        return run

    def _rollup(self) -> None:
        t0 = time.perf_counter()
        try:
            rollup = importlib.import_module("hopscope.rollup")
        except ImportError as exc:
            log.warning("rollups skipped: hopscope.rollup is not importable (%s)", exc)
            return
        try:
            result = rollup.run_rollup(
                self.wstore, list(self.thresholds_ms), grace=timedelta(seconds=self.cfg.rollup_grace_s)
            )
            rows = int(result) if isinstance(result, int) else int(getattr(result, "rows", 0) or 0)
            run = Run(utcnow(), "rollup", "hop_minutes", True, rows, None, (time.perf_counter() - t0) * 1000)
            self.metrics.rollup_last_success.set(time.time())
        except Exception as exc:
            log.warning("rollup failed: %s", exc)
            run = Run(
                utcnow(), "rollup", "hop_minutes", False, 0, str(exc)[:500], (time.perf_counter() - t0) * 1000
            )
        self.sink.add("rollup", (), run)
        count_run(self.metrics, run)

    def _maintain(self) -> None:
        """One maintenance cycle: its slices run on the writer one at a time, between ingest writes.

        A cycle that runs out of its interval stops where it is (the next cycle goes on); a failed
        slice is recorded and the cycle moves on to the next step."""
        t0 = time.perf_counter()
        budget_end = time.monotonic() + 0.8 * self.cfg.maintain_interval_s
        self.sink.flush()
        steps = self.wstore.maintenance_steps(utcnow())
        rows = 0
        errors: list[str] = []
        pending = False
        for step in steps:
            for slice_no in range(_MAX_SLICES_PER_STEP + 1):
                if (
                    self._stop.is_set()
                    or time.monotonic() > budget_end
                    or slice_no == _MAX_SLICES_PER_STEP
                    or (self.leader is not None and not self.leader.is_leader())  # another collector goes on
                ):
                    pending = True
                    break
                try:
                    result = self._run_slice(step)
                except Exception as exc:  # noqa: BLE001 - recorded; the other steps still run
                    errors.append(f"{step.name}: {exc}"[:300])
                    log.warning("maintenance slice %s failed: %s", step.name, exc)
                    break
                if step.kind == "retention":
                    rows += result.rows
                if not result.more:
                    break
            if pending:
                break
        seconds = time.perf_counter() - t0
        ok = not errors
        self.maintenance_pending = pending
        self.metrics.maintenance_pending.set(int(pending))
        self.metrics.maintenance_cycles.labels(str(ok).lower()).inc()
        self.metrics.maintenance_last_cycle.set(seconds)
        error = "; ".join(errors)[:500] or (
            "partial: ran out of its interval, goes on next cycle" if pending else None
        )
        run = Run(utcnow(), "maintain", "store", ok, rows, error, seconds * 1000)
        self.sink.add("maintain", (), run)
        count_run(self.metrics, run)

    def _status(self) -> None:
        """/metrics' writer gauges and the status file beside the store (the Collectors page reads it)."""
        w = self.writer
        failing = w.failing_for_s if w is not None else 0.0
        self.metrics.failing_seconds.set(failing)
        path = getattr(self.store, "path", None)
        if w is None or path is None:
            return
        m = self.metrics
        status = DaemonStatus(
            pid=os.getpid(),
            host=self.cfg.host_name,
            started_unix=self._started_unix,
            updated_unix=time.time(),
            last_commit_unix=w.last_commit_unix,
            failing_for_s=round(failing, 1),
            last_error=w.last_error[:300] if w.last_error and failing else None,
            last_error_cause=w.last_error_cause if failing else None,
            reconnects=w.reconnects,
            writer_queue=w.queued,
            span_queue=self.otlp.writer.queued_spans if self.otlp is not None else 0,
            buffered_records=sum(self.sink.pending),
            spans_received=int(_total(m.spans_received)),
            spans_refused=int(_total(m.spans_refused)),
            rollup_last_success_unix=_gauge(m.rollup_last_success),
            maintenance_pending=self.maintenance_pending,
            busy_for_s=round(w.busy_for_s, 1),
            longest_slice_s=round(getattr(self._listener, "longest_slice_s", 0.0), 3),
            alerting=self.alerts.delivery_status() if self.alerts is not None else None,
        )
        try:
            write_status(path, status)
        except OSError as exc:  # a full or read-only disk: /metrics and the log still say it
            log.debug("cannot write the status file: %s", exc)

    def _run_slice(self, step: Any) -> Any:
        if isinstance(self.wstore, WritingStore):
            return self.wstore.run_slice(step, deadline=time.monotonic() + _SLICE_DEADLINE_S)
        return step.run(self.wstore)

    # -- stop ----------------------------------------------------------------------------------

    def stop(self, err: TextIO | None = None) -> None:
        """Stop accepting, commit what was acknowledged and what collectors gathered, stop threads.

        Bounded by `stop_timeout_s` even when the store refuses writes: requests in flight are
        answered (503 where their spans were not committed), and samples or runs that could not be
        committed are counted on ``err`` (stderr), never dropped silently."""
        err = err or sys.stderr
        end = time.monotonic() + self.cfg.stop_timeout_s - 1.0

        def left() -> float:
            return max(0.1, end - time.monotonic())

        self._stop.set()
        for c in self._running:  # a probe waiting on a slow target must not hold up the stop
            if isinstance(c, Interruptible):
                c.interrupt()
        if self.writer is not None:  # writes in flight and to come give up by then
            self.writer.finish_by(end - 0.5)
        if self.otlp is not None:
            self.otlp.stop(grace_s=min(left(), self.cfg.otlp.ack_timeout_s + 1.0))
        for t in self._threads:
            t.join(timeout=left())  # each is at most inside one write, bounded above
        # Given up after the rollup and maintenance threads end (never two leaders' work at once): another
        # collector takes over at its next renewal.
        if self.leader is not None:
            self.leader.stop()
        self.sink.flush()
        unwritten_jobs = self.writer.close(timeout=left()) if self.writer is not None else 0
        samples, runs = self.sink.pending
        if samples or runs or unwritten_jobs:
            cause = ""
            if self.writer is not None and self.writer.last_error:
                cause = f" (last store error: {self.writer.last_error_cause or self.writer.last_error[:200]})"
            jobs = f", {unwritten_jobs} queued write(s) did not run" if unwritten_jobs else ""
            print(
                f"hopscope collect: could not commit {samples} sample(s) and {runs} collector run(s) before "
                f"stopping{jobs}{cause}",
                file=err,
                flush=True,
            )
        if self.writer is not None and not self.writer.alive:
            self.writer.store.close()
        if self.alerts is not None:
            self.alerts.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


# A maintenance slice that cannot start or finish within this gives the writer back (retried next cycle).
_SLICE_DEADLINE_S = 2.0
_MAX_SLICES_PER_STEP = 1000
_STATUS_EVERY_S = 2.0


def _total(metric: Any) -> float:
    """Sum of a labelled counter's samples (prometheus_client keeps no total)."""
    return float(sum(s.value for fam in metric.collect() for s in fam.samples if s.name.endswith("_total")))


def _gauge(metric: Any) -> float | None:
    value = next((s.value for fam in metric.collect() for s in fam.samples), 0.0)
    return float(value) or None


class _MetricsListener(WriterListener):
    """The writer's events on the daemon's /metrics."""

    def __init__(self, metrics: SelfMetrics) -> None:
        self.m = metrics
        self._refusing: str | None = None
        self.longest_slice_s = 0.0

    def job_done(self, kind: str, seconds: float, ok: bool) -> None:
        self.m.writer_job_seconds.labels(kind).observe(seconds)
        if kind.startswith("maintain:") and seconds > self.longest_slice_s:
            self.longest_slice_s = seconds
            self.m.maintenance_slice_max.set(seconds)

    def committed(self, at_unix: float) -> None:
        self.m.last_commit.set(at_unix)
        self.m.failing_seconds.set(0)
        if self._refusing is not None:
            self.m.store_refusing.labels(self._refusing).set(0)
            log.warning("the store takes writes again")
            self._refusing = None

    def failed(self, kind: str, error: StoreError) -> None:
        cause = getattr(error, "cause", None) or "other"
        if self._refusing != cause:
            if self._refusing is not None:
                self.m.store_refusing.labels(self._refusing).set(0)
            log.warning("the store refuses writes (%s): %s", cause, error)
            self._refusing = cause
        self.m.store_refusing.labels(cause).set(1)

    def reconnected(self) -> None:
        self.m.reconnects.inc()

    def queue_depth(self, jobs: int) -> None:
        self.m.writer_queue.set(jobs)


def _describe(c: Collector) -> str:
    targets = getattr(c, "targets_text", None)
    return f" ({targets})" if targets else ""


def _return_memory_promptly() -> None:
    """Keep the daemon's resident memory near what it uses (measured with benchmarks/otlp_ingest.py).

    Arrow's default pool (mimalloc) keeps freed pages: the system allocator gives ~90 MB less peak
    RSS over decode-and-commit cycles. glibc gives each request thread its own arena of freed
    memory; two arenas for the whole process save another ~20 MB. Call before threads start.
    """

    pa.set_memory_pool(pa.system_memory_pool())
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


_M_ARENA_MAX = -8  # glibc malloc.h

# DuckDB's worker threads for each of the daemon's two connections (reader, writer). DuckDB starts one
# per core by default, and each keeps memory of its own: with 8 on two cores the daemon's peak RSS in
# benchmarks/otlp_ingest.py was 325 MiB against 296 with 2 (one run each), so the daemon's memory
# would grow with the machine. Its queries are small (a commit of ~10,000 spans, a rollup of a few
# minutes): 1, 2 and 8 threads ingested alike within this machine's noise.
DUCKDB_THREADS = 2


def run_collect(
    store_path: Path,
    cfg: CollectConfig,
    *,
    thresholds_ms: Sequence[float],
    store_options: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
    out: TextIO | None = None,
    slos: Sequence[SLO] = (),
    alerting: AlertingConfig | None = None,
    dashboard_url: str = "http://127.0.0.1:8501",
) -> int:
    """The `hopscope collect` daemon. Returns the exit code (0 after SIGTERM/SIGINT or `stop`).

    store_options: keyword arguments of Store (retention per table, exemplar retention, memory limit).
    """
    out = out or sys.stdout
    stop = stop or threading.Event()
    _return_memory_promptly()
    try:
        store = Store(store_path, **{"threads": DUCKDB_THREADS, **(store_options or {})})
    except HopscopeError as exc:
        print(f"hopscope collect: {exc}", file=sys.stderr)
        return 2
    daemon = Daemon(
        store,
        cfg,
        thresholds_ms,
        out=out,
        slos=slos,
        alerting=alerting or AlertingConfig(),
        dashboard_url=dashboard_url,
    )
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

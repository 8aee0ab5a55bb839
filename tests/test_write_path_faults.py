"""The write path under faults: another process holding the store, SIGTERM while the store refuses,
kill -9 during maintenance, a full disk, a read-only store. Each runs the real receiver and a real
DuckLake store, with the OpenTelemetry SDK's OTLP/HTTP exporter as the client.

What every test checks in the end is the ingest contract: an export answered 200 is stored, and
stored exactly once, whatever happened in between; an export that was refused is answered inside
the client's 10 s timeout (so its retry never races a late commit).
"""

from __future__ import annotations

import io
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from hopscope.collectors.runner import Daemon
from hopscope.config.collect import load_collect_config
from hopscope.errors import StoreError
from hopscope.store import CATALOG_FILE, Store

ROOT = Path(__file__).resolve().parents[1]


def _spans(n: int, seed: int) -> list[ReadableSpan]:
    """n server spans of one service, made by the real SDK (ids from a seeded generator's sibling)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": f"svc-{seed % 3}"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("faults")
    rng = random.Random(seed)
    for _ in range(n):
        with tracer.start_as_current_span(
            "GET /x", kind=SpanKind.SERVER, attributes={"http.route": "/x", "n": rng.randint(0, 9)}
        ):
            pass
    return list(memory.get_finished_spans())


@dataclass
class _Ledger:
    """Every export: its spans' ids, what the exporter said, how long it took."""

    endpoint: str
    acked: set[tuple[int, int]] = field(default_factory=set)
    failed: set[tuple[int, int]] = field(default_factory=set)
    seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def export(self, batch: list[ReadableSpan], timeout_s: float = 10.0) -> SpanExportResult:
        exporter = OTLPSpanExporter(endpoint=self.endpoint, timeout=timeout_s)
        t0 = time.monotonic()
        try:
            result = exporter.export(batch)
        finally:
            exporter.shutdown()
        ids = {(s.context.trace_id, s.context.span_id) for s in batch}
        with self.lock:
            self.seconds.append(time.monotonic() - t0)
            (self.acked if result is SpanExportResult.SUCCESS else self.failed).update(ids)
        return result


def _stored_ids(store: Store) -> list[tuple[int, int]]:
    rows = store.query("SELECT trace_id, span_id FROM spans").to_pylist()
    return [(int.from_bytes(r["trace_id"], "big"), int.from_bytes(r["span_id"], "big")) for r in rows]


def _assert_exactly_once(store: Store, ledger: _Ledger) -> None:
    stored = _stored_ids(store)
    assert len(stored) == len(set(stored)), f"{len(stored) - len(set(stored))} span(s) stored twice"
    missing = ledger.acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged span(s) not stored"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    store = Store(tmp_path / "store")
    cfg = load_collect_config(
        {
            "otlp": {"http_port": 0, "grpc_enabled": False, "retry_after_s": 1},
            "metrics": {"enabled": False},
            "heal_after_s": 5,
        }
    )
    d = Daemon(store, cfg, collectors=[], out=io.StringIO(), flush_s=0.5)
    d.start()
    yield d
    d.stop(err=io.StringIO())
    store.close()


_HOLD = textwrap.dedent(
    """
    import sqlite3, sys, time
    con = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")  # the catalog's write lock, as another writer on a shared store
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    con.execute("ROLLBACK")
    """
)


def _hold_catalog(store_path: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(store_path / CATALOG_FILE), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
def test_exports_retried_while_another_process_holds_the_store_are_stored_exactly_once(
    daemon: Daemon,
) -> None:
    ledger = _Ledger(f"http://127.0.0.1:{daemon.otlp.http_port}/v1/traces")
    ledger.export(_spans(20, seed=1))
    hold = _hold_catalog(daemon.store.path, 25)
    try:
        # Services keep exporting while the store is held: the SDK's 10 s timeout, its own retries.
        threads = [threading.Thread(target=ledger.export, args=(_spans(20, seed=10 + i),)) for i in range(6)]
        for i, t in enumerate(threads):
            t.start()
            time.sleep(3 if i < 5 else 0)
        for t in threads:
            t.join(30)
        assert hold.wait(30) == 0
    finally:
        hold.kill()
    for i in range(3):  # after the hold
        assert ledger.export(_spans(20, seed=100 + i)) is SpanExportResult.SUCCESS
    assert max(ledger.seconds) <= 10.5, ledger.seconds  # every answer inside the client's timeout
    assert ledger.failed, "the hold made some exports fail (else this test proved nothing)"
    _assert_exactly_once(daemon.store, ledger)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_collect(tmp_path: Path, extra: str = "") -> tuple[subprocess.Popen[str], int, Path]:
    http_port = _free_port()
    store_dir = tmp_path / "store"
    config = tmp_path / "hopscope.toml"
    config.write_text(
        "[collect]\nhost_name = 'test'\nrollup_interval_s = 1\n"
        f"{extra}"
        f"[collect.otlp]\nhttp_port = {http_port}\ngrpc_enabled = false\n"
        "[collect.metrics]\nenabled = false\n[collect.nvml]\nenabled = false\n"
        "[collect.network]\ninterval_s = 0.5\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hopscope.collectors.cli", "--config", str(config), "--store", str(store_dir)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
            return proc, http_port, store_dir
        except OSError:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("hopscope collect did not start listening within 60 s")


@pytest.mark.slow
def test_sigterm_while_the_store_refuses_writes_exits_within_15_s_and_counts_what_was_not_committed(
    tmp_path: Path,
) -> None:
    proc, port, store_dir = _start_collect(tmp_path)
    hold: subprocess.Popen[str] | None = None
    try:
        ledger = _Ledger(f"http://127.0.0.1:{port}/v1/traces")
        assert ledger.export(_spans(10, seed=1)) is SpanExportResult.SUCCESS
        hold = _hold_catalog(store_dir, 60)
        time.sleep(3)  # network samples pile up, unwritable
        exporting = threading.Thread(target=ledger.export, args=(_spans(10, seed=2),))
        exporting.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        stopped_in = time.monotonic() - t0
        exporting.join(15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if hold is not None:
            hold.kill()
    assert stopped_in <= 15, f"stopped in {stopped_in:.1f} s"
    assert proc.returncode == 0, err
    assert "could not commit" in err and "sample(s)" in err, err
    assert "locked" in err, err  # the cause is named
    with Store(store_dir, create=False) as s:
        _assert_exactly_once(s, ledger)


_KILL_LOAD = 0.25  # seconds between exports


@pytest.mark.slow
def test_kill_9_during_maintenance_slices_loses_no_acknowledged_span(tmp_path: Path) -> None:
    # Maintenance every second (the first at 1 s), so that a kill lands in one of its slices.
    proc, port, store_dir = _start_collect(tmp_path, "maintain_interval_s = 1\n")
    ledger = _Ledger(f"http://127.0.0.1:{port}/v1/traces")
    stop = threading.Event()

    def load() -> None:
        seed = 0
        while not stop.is_set():
            seed += 1
            ledger.export(_spans(30, seed=seed), timeout_s=3)
            time.sleep(_KILL_LOAD)

    exporter = threading.Thread(target=load)
    exporter.start()
    try:
        time.sleep(8)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        exporter.join(30)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(ledger.acked) >= 300, len(ledger.acked)
    with Store(store_dir, create=False) as s:
        _assert_exactly_once(s, ledger)
        runs = s.query("SELECT count(*) AS n FROM collector_runs WHERE collector = 'maintain'").column("n")
        assert runs[0].as_py() >= 3  # maintenance did run (and was killed in the middle of one)


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_named_refused_with_503_and_ingest_recovers_by_itself(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "48m")
    try:
        store = Store(disk / "store")
        cfg = load_collect_config(
            {"otlp": {"http_port": 0, "grpc_enabled": False}, "metrics": {"port": 0}, "heal_after_s": 5}
        )
        d = Daemon(store, cfg, collectors=[], out=io.StringIO(), flush_s=0.5)
        d.start()
        try:
            ledger = _Ledger(f"http://127.0.0.1:{d.otlp.http_port}/v1/traces")
            assert ledger.export(_spans(50, seed=1)) is SpanExportResult.SUCCESS
            filler = disk / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            try:  # fill the disk to the last byte
                for chunk in (1 << 20, 4096, 1):
                    try:
                        while True:
                            os.write(fd, b"\0" * chunk)
                    except OSError:
                        pass
            finally:
                os.close(fd)
            assert ledger.export(_spans(300, seed=2), timeout_s=8) is SpanExportResult.FAILURE
            metrics = _metrics_text(d)
            assert 'hopscope_store_refusing{cause="disk full"} 1.0' in metrics, metrics
            assert d.writer is not None and "disk full" in (d.writer.last_error or "")
            filler.unlink()
            deadline = time.monotonic() + 30
            while ledger.export(_spans(300, seed=3)) is not SpanExportResult.SUCCESS:
                assert time.monotonic() < deadline, d.writer.last_error
            _assert_exactly_once(store, ledger)
        finally:
            d.stop(err=io.StringIO())
            store.close()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _metrics_text(d: Daemon) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_a_read_only_store_is_named_read_only_by_readers_and_the_daemon(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    src = tmp_path / "src"
    Store(src).close()
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        with pytest.raises(StoreError, match="read-only") as err:
            Store(ro, create=False)
        assert err.value.cause == "read-only"
        with pytest.raises(StoreError, match="read-only"):
            Store(ro)  # the daemon's open
        cli = subprocess.run(
            [sys.executable, "-m", "hopscope.cli", "incidents", "--store", str(ro), "--rules", str(ROOT / "slo_rules")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 2 and "read-only" in cli.stderr, cli.stderr
        assert "not a hopscope store" not in cli.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)

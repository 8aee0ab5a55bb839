"""The one writer of a process: every store write runs on one thread, through one connection, in turn.

Several DuckDB transactions writing one SQLite-catalogued DuckLake from threads of one process deadlock
on SQLite's reader-to-writer upgrade (duckdb/ducklake#1309: SQLITE_BUSY at once, the busy handler is
never called), and a cursor left inside a transaction keeps the catalog's write lock until its next
statement. Both wedged `hopscope collect` under real traffic. So inside the daemon every write (span
batches, samples, collector runs, rollups, state, maintenance slices) is a job on this writer's queue,
run by its thread on a Store of its own. Readers keep their own connection and never write.

    writer = StoreWriter(store.clone())                      # owns the write connection
    writer.run("samples", lambda s: s.append("samples", t))  # blocks until committed (or raises)
    writer.close()

    wstore = WritingStore(store, writer)   # a Store to hand to code that reads and writes:
    wstore.append(...)                     # writes run on the writer, reads on `store`

Span commits go first (priority): a maintenance slice or a rollup write can delay an export's answer
by one job at most. A job carries a deadline (time.monotonic()): it is not started after it, and the
store's retries inside it stop at it, so a span commit ends, committed or not, before the client
gives up. If writes keep failing for `heal_after_s`, the writer closes and reopens its connection,
which releases any catalog lock the connection leaked, says so in one log line and counts it.
"""

from __future__ import annotations

import itertools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pyarrow as pa

from hopscope.errors import StoreError
from hopscope.store import MaintenanceStep, SliceResult, Store, redact

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

T = TypeVar("T")

URGENT, NORMAL = 0, 1  # span commits before everything else
DEFAULT_DEADLINE_S = 10.0
_RECONNECT_DEADLINE_S = 5.0
_NOT_A_COMMIT = ("maintain:",)


class WriterClosed(StoreError):
    """The writer stopped before the job ran."""


class DeadlineExceeded(StoreError):
    """The job's deadline passed before it could start: nothing was written."""


@dataclass(slots=True)
class _Job:
    kind: str
    fn: Callable[[Store], Any]
    deadline: float
    future: Future[Any]


class WriterListener:
    """What the writer reports (the daemon's /metrics implement it); every method may be left as is."""

    def job_done(self, kind: str, seconds: float, ok: bool) -> None: ...
    def committed(self, at_unix: float) -> None: ...
    def failed(self, kind: str, error: StoreError) -> None: ...
    def reconnected(self) -> None: ...
    def queue_depth(self, jobs: int) -> None: ...


class StoreWriter:
    """A thread and a queue in front of one Store: run(kind, fn) runs fn(store) on that thread."""

    def __init__(
        self,
        store: Store,
        *,
        heal_after_s: float = 30.0,
        listener: WriterListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.heal_after_s = heal_after_s
        self.listener = listener or WriterListener()
        self._clock = clock
        self._queue: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._closing = False
        self._close_lock = threading.Lock()
        self.last_commit_unix: float | None = None
        self.last_error: str | None = None
        self.last_error_cause: str | None = None
        self._failing_since: float | None = None
        self._cap: float | None = None  # no job's deadline is later than this (set when stopping)
        self._job_started: float | None = None
        self._last_heal: float | None = None
        self.reconnects = 0
        self._thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self._thread.start()

    # -- submitting ---------------------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        fn: Callable[[Store], T],
        *,
        deadline: float | None = None,
        priority: int = NORMAL,
    ) -> Future[T]:
        """Queue fn(store); the Future holds its result or its StoreError."""
        future: Future[T] = Future()
        at = deadline if deadline is not None else self._clock() + DEFAULT_DEADLINE_S
        if self._cap is not None:
            at = min(at, self._cap)
        job = _Job(kind, fn, at, future)
        with self._close_lock:
            if self._closing:
                raise WriterClosed(f"{self.store.where}: the writer is stopping; {kind} not written")
            self._queue.put((priority, next(self._seq), job))
        self.listener.queue_depth(self._queue.qsize())
        return future

    def run(
        self,
        kind: str,
        fn: Callable[[Store], T],
        *,
        deadline: float | None = None,
        priority: int = NORMAL,
    ) -> T:
        """Run fn(store) on the writer and wait for it; raises what it raised."""
        return self.submit(kind, fn, deadline=deadline, priority=priority).result()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def failing_for_s(self) -> float:
        """Seconds since writes started failing (0 while they succeed)."""
        since = self._failing_since  # read once: the writer thread may clear it meanwhile
        return 0.0 if since is None else self._clock() - since

    @property
    def busy_for_s(self) -> float:
        """How long the job now running has held the writer (0 when idle): a stuck writer shows here."""
        started = self._job_started
        return 0.0 if started is None else self._clock() - started

    # -- the thread ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            try:
                self.listener.queue_depth(self._queue.qsize())
                self._run_job(job)
            except BaseException as exc:  # noqa: BLE001 - a bug here must not kill the only writer
                log.exception("store writer: %s failed outside its job", job.kind)
                if not job.future.done():
                    job.future.set_exception(_as_store_error(self.store, job.kind, exc))
            finally:
                self._job_started = None

    def _run_job(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        if self._cap is not None:
            job.deadline = min(job.deadline, self._cap)
        now = self._clock()
        if now >= job.deadline:
            job.future.set_exception(
                DeadlineExceeded(f"{self.store.where}: {job.kind} not started before its deadline")
            )
            return
        t0 = time.perf_counter()
        self._job_started = now
        try:
            with self.store.deadline(job.deadline):
                result = job.fn(self.store)
        except BaseException as exc:  # every failure goes to the waiter; the thread lives on
            self._settle()
            refused = isinstance(exc, (duckdb.Error, sqlite3.Error)) or getattr(exc, "refused", False)
            error = exc if isinstance(exc, StoreError) else _as_store_error(self.store, job.kind, exc)
            if error.cause is None:
                error.cause = self.store.cause_of(error)
            if refused:  # the caller's own mistake (bad data, a bug) says nothing of the store
                self._failure(job.kind, error)
            self.listener.job_done(job.kind, time.perf_counter() - t0, False)
            job.future.set_exception(error)
            return
        self._settle()
        if not job.kind.startswith(_NOT_A_COMMIT):
            # A slice that found nothing to do wrote nothing: it proves nothing about the store.
            self._failing_since = None
            self.last_commit_unix = time.time()
            self.listener.committed(self.last_commit_unix)
        self.listener.job_done(job.kind, time.perf_counter() - t0, True)
        job.future.set_result(result)

    def _settle(self) -> None:
        """End whatever the job left open on the writer's cursor: a statement whose result was not read
        to the end keeps its autocommit transaction (and a catalog lock) until the next statement."""
        self.store.release()

    def _failure(self, kind: str, error: StoreError) -> None:
        now = self._clock()
        self.last_error = str(error)
        self.last_error_cause = error.cause  # classified by _run_job
        if self._failing_since is None:
            self._failing_since = now
        self.listener.failed(kind, error)
        if now - self._failing_since >= self.heal_after_s and (
            self._last_heal is None or now - self._last_heal >= self.heal_after_s
        ):
            self._heal(now)

    def _heal(self, now: float) -> None:
        self._last_heal = now
        log.warning(
            "store writes have failed for %.0f s (last: %s); reopening the store connection",
            now - (self._failing_since or now),
            self.last_error,
        )
        try:
            with self.store.deadline(self._clock() + _RECONNECT_DEADLINE_S):
                self.store.reconnect()
        except Exception as exc:  # noqa: BLE001 - still failing: the next heal tries again
            log.warning("reopening the store connection failed: %s", exc)
            return
        self.reconnects += 1
        self.listener.reconnected()

    # -- stopping -----------------------------------------------------------------------------------

    def finish_by(self, at: float) -> None:
        """From now on no job, queued or new, runs or retries past ``at`` (a bounded stop)."""
        self._cap = at

    def close(self, timeout: float | None = None) -> int:
        """Refuse new jobs, run the queued ones (each still bounded by its deadline), stop the thread.

        Returns how many queued jobs did not run within ``timeout`` (they fail with WriterClosed)."""
        with self._close_lock:
            if not self._closing:
                self._closing = True
                self._queue.put((NORMAL + 1, next(self._seq), None))  # after every queued job
        self._thread.join(timeout)
        left = 0
        if self._thread.is_alive():
            while True:
                try:
                    _, _, job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is not None and job.future.set_running_or_notify_cancel():
                    job.future.set_exception(WriterClosed(f"{job.kind}: the writer stopped before it ran"))
                    left += 1
            self._queue.put((NORMAL + 1, next(self._seq), None))  # the thread ends after its job
        return left


def _as_store_error(store: Store, kind: str, exc: BaseException) -> StoreError:
    cause = store.cause_of(exc)
    said = f"{cause}: " if cause else ""
    text = redact(f"{type(exc).__name__}: {exc}", store.backend.secrets())  # a catalog's password, never
    error = StoreError(f"{store.where}: {kind} failed: {said}{text}", cause=cause)
    error.__cause__ = exc
    return error


class WritingStore:
    """A Store for code that reads and writes (collectors, rollups): reads go to the reading Store on the
    caller's thread, writes run on the writer. Store's methods that the daemon's code uses, no more."""

    def __init__(self, reader: Store, writer: StoreWriter, *, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
        self.reader = reader
        self.writer = writer
        self.deadline_s = deadline_s

    @property
    def path(self) -> Any:
        return self.reader.path

    def _write(self, kind: str, fn: Callable[[Store], T], deadline: float | None) -> T:
        """Run fn on the writer; past its deadline a job still waiting in the queue is withdrawn and
        DeadlineExceeded raised at once, so a caller never waits on someone else's long job."""
        at = deadline if deadline is not None else time.monotonic() + self.deadline_s
        future = self.writer.submit(kind, fn, deadline=at, priority=URGENT if kind == "spans" else NORMAL)
        try:
            return future.result(timeout=max(0.0, at - time.monotonic()))
        except FutureTimeout:
            if future.cancel():  # never started: nothing was written
                raise DeadlineExceeded(f"{self.path}: {kind} did not reach the writer in time") from None
        # Started before its deadline: its outcome decides (an answer given before it could be
        # contradicted by a late commit). Its retries stop at the deadline; one attempt is left.
        return future.result()

    # -- writes: on the writer's thread ----------------------------------------------------------

    def append(self, table: str, data: pa.Table | pd.DataFrame, *, deadline: float | None = None) -> int:
        return self._write(table, lambda s: s.append(table, data), deadline)

    def replace(self, table: str, where: str, params: Sequence[Any], data: pa.Table | pd.DataFrame) -> int:
        return self._write(table, lambda s: s.replace(table, where, params, data), None)

    def replace_range(
        self,
        table: str,
        start: datetime,
        end: datetime,
        data: pa.Table | pd.DataFrame,
        *,
        columns: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> int:
        return self._write(
            table, lambda s: s.replace_range(table, start, end, data, columns=columns, labels=labels), None
        )

    def set_state(self, key: str, value: str) -> None:
        self._write("state", lambda s: s.set_state(key, value), None)

    def run_slice(self, step: MaintenanceStep, *, deadline: float | None = None) -> SliceResult:
        return self._write(f"maintain:{step.kind}", step.run, deadline)

    # -- reads: on the caller's thread, through the reading connection ---------------------------

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        return self.reader.query(sql, params)

    def get_state(self, key: str) -> str | None:
        return self.reader.get_state(key)

    def time_range(self, table: str) -> tuple[datetime | None, datetime | None]:
        return self.reader.time_range(table)

    def maintenance_steps(self, now: datetime, *, retention: bool = True) -> list[MaintenanceStep]:
        return self.reader.maintenance_steps(now, retention=retention)

"""The store, with real processes: concurrent writer/readers/maintenance, kill -9, bad input.

Every test runs on each backend (tests/store_backends.py): the embedded SQLite catalog with local files,
and a PostgreSQL catalog with its data in an S3 bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from store_backends import Stores
from support.waiting import wait_until

from hopscope.errors import StoreError
from hopscope.store import Store

WORKER = Path(__file__).with_name("store_worker.py")


def _spawn(
    stores: Stores, role: str, store: Path, out: Path, seconds: float = 10.0
) -> subprocess.Popen[bytes]:
    path, backend = stores.argv(store)
    return subprocess.Popen([sys.executable, str(WORKER), role, path, str(out), str(seconds), backend])


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_one_writer_two_readers_and_maintenance_run_together_without_errors(
    stores: Stores, tmp_path: Path
) -> None:
    store_path = tmp_path / "store"
    stores(store_path).close()  # create tables once, before the race
    out = tmp_path / "log.jsonl"
    writer = _spawn(stores, "writer", store_path, out, 11.0)
    others = [_spawn(stores, role, store_path, out, 12.0) for role in ("reader", "reader", "maintainer")]
    assert writer.wait(timeout=90) == 0
    out.with_suffix(".writer-done").touch()
    for p in others:
        assert p.wait(timeout=90) == 0

    records = _records(out)
    errors = [r for r in records if "error" in r]
    assert errors == []
    committed = [r["committed"] for r in records if "committed" in r]
    # About every 100 ms for 11 s; a loaded 2-core CI machine commits fewer, never none.
    assert len(committed) >= 20
    rows_written = len(committed) * 50
    finals = [r["final"] for r in records if "final" in r]
    assert finals == [rows_written, rows_written]
    # Readers saw the count grow while the writer ran, never shrink.
    for reader_counts in _per_reader_counts(records):
        assert reader_counts == sorted(reader_counts)
    assert stores(store_path).count("samples") == rows_written


def _per_reader_counts(records: list[dict]) -> list[list[int]]:
    # Lines from the two readers interleave in one file; both only grow, so each half sorted is fine.
    counts = [r["count"] for r in records if r.get("role") == "reader" and "count" in r]
    return [sorted(counts)] if counts else []


@pytest.mark.slow
def test_kill_minus_9_mid_append_loses_no_committed_batch_and_shows_no_partial_one(
    stores: Stores, tmp_path: Path
) -> None:
    store_path = tmp_path / "store"
    stores(store_path).close()
    out = tmp_path / "log.jsonl"
    crasher = _spawn(stores, "crasher", store_path, out)
    wait_until(
        lambda: out.exists() and sum(1 for r in _records(out) if "committed" in r) >= 20,
        60,
        "20 batches committed by the crasher",
        interval=0.05,
    )
    os.kill(crasher.pid, signal.SIGKILL)
    crasher.wait(timeout=10)

    logged = {r["committed"] for r in _records(out) if "committed" in r}
    assert len(logged) >= 20
    store = stores(store_path)  # reopens after the crash
    per_batch = store.query_df("SELECT metric, count(*) AS n FROM samples GROUP BY metric")
    found = {int(m.removeprefix("batch-")): n for m, n in zip(per_batch.metric, per_batch.n, strict=True)}
    assert logged <= set(found), "every batch the writer saw committed is there"
    assert set(found.values()) == {50}, "no batch is half-written"
    # At most the one batch in flight may have committed without being logged.
    assert len(set(found) - logged) <= 1
    # And the store still takes writes.
    store.append(
        "samples",
        pa.table(
            {
                "ts": pa.array([datetime(2026, 2, 1)], pa.timestamp("us")),
                "metric": ["after"],
                "value": [1.0],
                "source": ["t"],
            }
        ),
    )
    assert store.count("samples") == 50 * len(found) + 1


def _sample_rows(**override: object) -> pa.Table:
    cols: dict[str, object] = {
        "ts": pa.array([datetime(2026, 1, 1), datetime(2026, 1, 1, 0, 1)], pa.timestamp("us")),
        "metric": ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_GPU_UTIL"],
        "value": [10.0, 20.0],
        "source": ["test", "test"],
    }
    cols.update(override)
    return pa.table({k: v for k, v in cols.items() if v is not None})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (_sample_rows(value=["10", "20"]), "samples.value: has type string"),
        (_sample_rows(ts=["2026-01-01", "2026-01-02"]), "samples.ts: has type string"),
        (_sample_rows(metric=None), "samples.metric: required column is missing"),
        (_sample_rows(metric=["a", None]), "samples.metric: 1 null value(s) in a required column"),
        (_sample_rows().append_column("colour", pa.array(["red", "blue"])), "unknown column 'colour'"),
    ],
    ids=["value-as-text", "ts-as-text", "metric-missing", "metric-null", "unknown-column"],
)
def test_append_with_a_bad_column_raises_store_error_naming_it_and_writes_nothing(
    stores: Stores, tmp_path: Path, bad: pa.Table, message: str
) -> None:
    store = stores(tmp_path / "store")
    store.append("samples", _sample_rows())
    with pytest.raises(StoreError, match=message.replace("(", r"\(").replace(")", r"\)")):
        store.append("samples", bad)
    assert store.count("samples") == 2


def test_append_to_an_unknown_table_is_refused(stores: Stores, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no table 'metrics'"):
        stores(tmp_path / "store").append("metrics", _sample_rows())


def test_nan_and_infinities_are_stored_as_floats_not_zero(stores: Stores, tmp_path: Path) -> None:
    store = stores(tmp_path / "store")
    store.append("samples", _sample_rows(value=[float("nan"), float("inf")]))
    values = store.query_df("SELECT value FROM samples ORDER BY ts").value.tolist()
    assert values[0] != values[0] and values[1] == float("inf")


@pytest.mark.parametrize("named", [False, True])
def test_an_aware_datetime_parameter_means_the_same_utc_instant_as_the_naive_columns(
    stores: Stores, tmp_path: Path, named: bool
) -> None:
    """The tables store naive UTC: 01:00 at UTC+1 is 00:00 UTC, whatever the caller's time zone."""
    store = stores(tmp_path / "store")
    store.append("samples", _sample_rows())
    plus_one = datetime(2026, 1, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))  # 00:01 UTC
    if named:
        got = store.query("SELECT value FROM samples WHERE ts >= $since", {"since": plus_one})
    else:
        got = store.query("SELECT value FROM samples WHERE ts >= ?", [plus_one])
    assert got.column("value").to_pylist() == [20.0]
    assert store.query("SELECT typeof(?) AS t", [plus_one]).column("t")[0].as_py() == "TIMESTAMP"


def test_read_snapshot_pins_this_threads_reads_to_one_snapshot(stores: Stores, tmp_path: Path) -> None:
    """Inside read_snapshot a commit from another thread is not seen; after it, it is. Nesting is a no-op."""
    store = stores(tmp_path / "store")
    store.append("samples", _sample_rows())
    with store.read_snapshot():
        assert store.count("samples") == 2
        writer = threading.Thread(target=store.append, args=("samples", _sample_rows()))
        writer.start()
        writer.join()
        with store.read_snapshot():
            assert store.count("samples") == 2
        assert store.count("samples") == 2
    assert store.count("samples") == 4


def test_replace_is_idempotent_and_state_keeps_the_latest_value(stores: Stores, tmp_path: Path) -> None:
    store = stores(tmp_path / "store")
    for _ in range(2):
        store.replace(
            "samples", "ts >= ? AND ts < ?", [datetime(2026, 1, 1), datetime(2026, 1, 2)], _sample_rows()
        )
    assert store.count("samples") == 2
    store.set_state("rollup.watermark", "a")
    store.set_state("rollup.watermark", "b")
    assert store.get_state("rollup.watermark") == "b"
    assert store.get_state("nothing") is None


def test_maintain_applies_per_table_retention_and_keeps_exemplar_traces(
    stores: Stores, tmp_path: Path
) -> None:
    now = datetime(2026, 3, 1)
    store = stores(tmp_path / "store", retention={"samples": timedelta(days=1), "spans": timedelta(hours=6)})
    store.append(
        "samples",
        _sample_rows(ts=pa.array([now - timedelta(days=2), now - timedelta(hours=1)], pa.timestamp("us"))),
    )
    old = now - timedelta(hours=12)
    spans = pa.table(
        {
            "trace_id": [bytes([1]) * 16, bytes([2]) * 16, bytes([3]) * 16],
            "span_id": [b"\x01" * 8, b"\x02" * 8, b"\x03" * 8],
            "service": ["api-gateway"] * 3,
            "name": ["GET /recommend"] * 3,
            "kind": pa.array([2, 2, 2], pa.int8()),
            "start_time": pa.array([old, old, old], pa.timestamp("us")),
            "duration_ms": [900.0, 50.0, 60.0],
            "status_code": pa.array([0, 0, 2], pa.int8()),
        }
    )
    store.append("spans", spans)
    store.append(
        "hop_minutes",
        pa.table(
            {
                "minute": pa.array([old], pa.timestamp("us")),
                "client": [""], "server": ["api-gateway"], "route": ["/recommend"],
                "count": [3], "errors": [1], "duration_ms_sum": [1010.0], "duration_ms_max": [900.0],
                "client_ms_sum": [0.0], "server_ms_sum": [1010.0], "gap_ms_sum": [0.0], "self_ms_sum": [1010.0],
                "skewed": [0], "hist_idx": [[40, 70]], "hist_cnt": [[2, 1]], "good_le_ms": [[200.0]], "good_cnt": [[2]],
                "exemplars": [[(bytes([1]) * 16).hex()]],
            }
        ),
    )  # fmt: skip
    report = store.maintain(now=now)
    assert report.deleted_rows["samples"] == 1
    kept = sorted(store.query_df("SELECT hex(trace_id) AS t FROM spans").t.str.lower())
    # trace 1 is an exemplar, trace 3 is an error: kept; trace 2 is ordinary and old: gone.
    assert kept == [(bytes([1]) * 16).hex(), (bytes([3]) * 16).hex()]


def test_opening_a_missing_store_without_create_names_the_path(stores: Stores, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no store here"):
        stores(tmp_path / "nothing", create=False)


def test_a_store_path_with_quotes_opens_and_round_trips(stores: Stores, tmp_path: Path) -> None:
    path = tmp_path / 'it\'s a "store"; DROP TABLE x; --'
    with stores(path) as s:
        s.set_state("k", "v")
    with stores(path, create=False) as s:  # ATTACH takes the path as a literal: quotes are doubled
        assert s.get_state("k") == "v"


def test_maintenance_slices_each_end_their_transaction_so_another_process_can_write_between_them(
    stores: Stores,
    tmp_path: Path,
) -> None:
    store = stores(tmp_path / "s", file_grace=timedelta(0))
    for i in range(5):
        store.set_state(f"k{i}", "v")
    other = (
        "import sys; from hopscope.store import Backend, Store; "
        "b = Backend.from_json(sys.argv[2]) if sys.argv[2] else None; "
        "Store(sys.argv[1], backend=b, commit_deadline_s=2).set_state('other', 'v')"
    )
    for step in store.maintenance_steps(datetime.now(UTC).replace(tzinfo=None)):
        step.run(store)  # no release() here: each slice must end what it started
        argv = [sys.executable, "-c", other, *stores.argv(store.path)]
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, f"after {step.name}: {done.stderr[-300:]}"
    store.close()


def test_retention_slices_move_past_rows_they_keep_on_purpose(stores: Stores, tmp_path: Path) -> None:
    # An error span five days old is kept (errors stay 30 days): it stays the oldest row, and the
    # retention step must still end, having deleted the ordinary spans of every day after it.
    now = datetime(2026, 3, 10)
    store = stores(tmp_path / "store", retention={"spans": timedelta(days=2)})
    days = [now - timedelta(days=d, hours=1) for d in (5, 4, 3, 1)]
    store.append(
        "spans",
        pa.table(
            {
                "trace_id": [bytes([i + 1]) * 16 for i in range(4)],
                "span_id": [bytes([i + 1]) * 8 for i in range(4)],
                "service": ["svc"] * 4,
                "name": ["GET /x"] * 4,
                "kind": pa.array([2] * 4, pa.int8()),
                "start_time": pa.array(days, pa.timestamp("us")),
                "duration_ms": [10.0] * 4,
                "status_code": pa.array([2, 0, 0, 0], pa.int8()),
            }
        ),
    )
    [step] = [s for s in store.maintenance_steps(now) if s.name == "retention spans"]
    results = []
    for _ in range(10):
        results.append(step.run(store))
        if not results[-1].more:
            break
    assert not results[-1].more, results  # it ends: one slice a day, oldest first
    assert sum(r.rows for r in results) == 2  # days 4 and 3; the error span and yesterday's stay
    assert store.count("spans") == 2


def test_a_read_that_meets_a_file_removed_under_it_is_planned_again(stores: Stores, tmp_path: Path) -> None:
    store = stores(tmp_path / "s")
    store.set_state("k", "v")
    real = store._cursor
    calls = {"n": 0}

    class _Once:
        def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
            self.cur = cur

        def execute(self, *args: object) -> object:
            calls["n"] += 1
            if calls["n"] == 1:  # as a concurrent cleanup would make the first plan fail
                raise duckdb.IOException('IO Error: Cannot open file "data/main/state/ducklake-x.parquet"')
            return self.cur.execute(*args)

        def __getattr__(self, name: str) -> object:
            return getattr(self.cur, name)

    store._cursor = lambda: _Once(real())  # type: ignore[method-assign,assignment,return-value]
    assert store.get_state("k") == "v" and calls["n"] >= 2
    store._cursor = real  # type: ignore[method-assign]
    store.close()


def _cache_bytes(store: Store) -> dict[str, int]:
    rows = store._con.execute("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall()
    return {tag: n for tag, n in rows if tag in ("OBJECT_CACHE", "EXTERNAL_FILE_CACHE")}


def test_a_store_keeps_no_copy_of_the_files_it_read_and_caches_footers_under_its_memory_limit(
    stores: Stores,
    tmp_path: Path,
) -> None:
    # Issue 12's soak grew ~25 MB/min: DuckDB kept a copy of every data file it read (file cache) and
    # every footer (object cache), and gives that back only at the memory limit, which was 80% of RAM.
    store = stores(tmp_path / "s", inlining_rows=0, memory_limit="64MB")
    t0 = datetime(2026, 1, 1)
    cached = []
    for i in range(20):  # one data file each, each read once
        store.append(
            "samples", _sample_rows(ts=pa.array([t0 + timedelta(minutes=i)] * 2, pa.timestamp("us")))
        )
        store.query("SELECT * FROM samples WHERE ts = ?", [t0 + timedelta(minutes=i)])
        cached.append(_cache_bytes(store))
    assert store.count("samples") == 40
    # Local files: no second copy; remote ones neither (a daemon reads each new file once).
    assert all(c.get("EXTERNAL_FILE_CACHE", 0) == 0 for c in cached)
    assert cached[-1]["OBJECT_CACHE"] > cached[0]["OBJECT_CACHE"]  # footers are kept, evicted at the limit
    assert store._con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "61.0 MiB"
    assert store.clone()._con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "61.0 MiB"


def test_a_bad_memory_limit_is_refused_with_the_value(stores: Stores, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="memory limit 'lots'"):
        stores(tmp_path / "s", memory_limit="lots")


def test_threads_option_bounds_duckdb_workers_on_the_store_its_clones_and_after_a_reconnect(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store", threads=1)
    clone = store.clone()
    try:
        for s in (store, clone):
            assert s.query("SELECT current_setting('threads') AS n").to_pylist() == [{"n": 1}]
        clone.reconnect()
        assert clone.query("SELECT current_setting('threads') AS n").to_pylist() == [{"n": 1}]
    finally:
        clone.close()
        store.close()

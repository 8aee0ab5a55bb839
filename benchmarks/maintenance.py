"""Maintenance of a busy day's store, in slices beside ingest: how long each slice holds the writer.

    .venv/bin/python benchmarks/maintenance.py [--spans 4400000] [--files 656] [--rate 100] [--store DIR]

Builds (or reuses with --store) a store shaped like the one in issue 12: a day of spans in many small
files (the ingest benchmark's decoded requests, start times spread over the day), then runs:

1. one maintenance cycle as hopscope collect runs it: every step of Store.maintenance_steps() one
   slice at a time on a StoreWriter, while a thread commits `--rate` spans/s in small batches through
   the same writer (as the OTLP receiver does);
2. the baseline in the same run, on a copy of the same store: the old shape, each step one call
   (ducklake_merge_adjacent_files over the whole lake, as Store.maintain() used to call it).

Prints each slice kind's count, p50 and max, the cycle's wall time, the span commits' latency
(p50/p99/max) during the cycle, and the baseline's duration per step. A slice is the time the writer
is held: a span commit waits at most one slice.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from otlp_ingest import Bodies  # noqa: E402

from hopscope.collectors.otlp import ShadowRequest, spans_to_table  # noqa: E402
from hopscope.store import LAKE, Store, utcnow  # noqa: E402
from hopscope.writer import URGENT, StoreWriter, WriterListener  # noqa: E402


class _Held(WriterListener):
    """How long each job held the writer (its own time, not the wait in the queue), by kind."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    def job_done(self, kind: str, seconds: float, ok: bool) -> None:
        self.seconds.setdefault(kind, []).append(seconds)


def _tables(n: int = 8, spans: int = 1000) -> list[pa.Table]:
    bodies = Bodies(random.Random(1), n, spans)
    return [spans_to_table(ShadowRequest.FromString(bodies.fresh(i))).table for i in range(n)]


def _with_start(table: pa.Table, start: datetime, span_s: float) -> pa.Table:
    """The table's spans moved to start at `start`, spread over `span_s` seconds."""
    n = table.num_rows
    base = int((start - datetime(1970, 1, 1)).total_seconds() * 1e6)
    starts = pa.array([base + int(i * span_s * 1e6 / max(n, 1)) for i in range(n)], pa.timestamp("us"))
    return table.set_column(table.column_names.index("start_time"), "start_time", starts)


def build(path: Path, spans: int, files: int) -> None:
    tables = _tables()
    per_file = max(1, spans // files)
    day = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    t0 = time.monotonic()
    with Store(path, inlining_rows=0) as store:
        for i in range(files):
            reps = per_file // tables[0].num_rows + 1
            chunk = pa.concat_tables([tables[(i + k) % len(tables)] for k in range(reps)]).slice(0, per_file)
            step = 86400 / files
            store.append("spans", _with_start(chunk, day + timedelta(seconds=i * step), step))
            if i % 50 == 0:
                print(f"\r  building: {i}/{files} files", end="", file=sys.stderr, flush=True)
    print(f"\r  built {files} files, {spans:,} spans in {time.monotonic() - t0:.0f} s", file=sys.stderr)


def _data_files(store: Store) -> int:
    rows = store.query(f"SELECT count(*) AS n FROM ducklake_list_files('{LAKE}', 'spans')").column("n")
    return int(rows[0].as_py())


def sliced(path: Path, rate: float) -> dict[str, object]:
    """One cycle of slices on a writer, beside an ingest thread committing small batches."""
    store = Store(path)
    held = _Held()
    writer = StoreWriter(store.clone(), listener=held)
    tables = _tables(2, 50)
    stop = threading.Event()
    commits: list[float] = []

    def ingest() -> None:
        i = 0
        while not stop.is_set():
            batch = _with_start(tables[i % 2], utcnow(), 0.5)
            t = time.monotonic()
            writer.run("spans", lambda s, b=batch: s.append("spans", b), priority=URGENT)
            commits.append(time.monotonic() - t)
            i += 1
            stop.wait(batch.num_rows / rate)

    thread = threading.Thread(target=ingest)
    before = _data_files(store)
    thread.start()
    t0 = time.monotonic()
    for step in store.maintenance_steps(utcnow(), retention=False):
        while writer.run(f"maintain:{step.kind}", step.run, deadline=time.monotonic() + 60).more:
            pass
    cycle = time.monotonic() - t0
    stop.set()
    thread.join()
    writer.close(10)
    after = _data_files(store)
    store.close()
    slices = {k.split(":", 1)[1]: v for k, v in held.seconds.items() if k.startswith("maintain:")}
    q = statistics.quantiles(commits, n=100) if len(commits) > 1 else [0.0] * 99
    return {
        "cycle_s": cycle,
        "slices": {k: (len(v), statistics.median(v), max(v)) for k, v in slices.items()},
        "longest_slice_s": max(max(v) for v in slices.values()),
        "commits": len(commits),
        "commit_held_p50_s": statistics.median(held.seconds.get("spans", [0.0])),
        "commit_p50_s": q[49],
        "commit_p99_s": q[98],
        "commit_max_s": max(commits, default=0.0),
        "files_before": before,
        "files_after": after,
    }


def whole(path: Path) -> dict[str, float]:
    """The old shape: each step one call over the whole lake."""
    out: dict[str, float] = {}
    with Store(path) as store:
        cur = store._cursor()
        for name, sql in (
            ("flush", f"CALL ducklake_flush_inlined_data('{LAKE}')"),
            ("merge", f"CALL ducklake_merge_adjacent_files('{LAKE}')"),
            ("expire", f"SELECT count(*) FROM ducklake_expire_snapshots('{LAKE}', older_than => now())"),
            ("cleanup", f"SELECT count(*) FROM ducklake_cleanup_old_files('{LAKE}', cleanup_all => true)"),
        ):
            t = time.monotonic()
            cur.execute(sql).fetchall()
            out[name] = time.monotonic() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=4_400_000, help="spans in the day's store")
    ap.add_argument("--files", type=int, default=656, help="data files they are written in")
    ap.add_argument("--rate", type=float, default=100.0, help="spans/s committed during the cycle")
    ap.add_argument("--store", type=Path, help="reuse (and keep) this store instead of building one")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hopscope-maint-"))
    try:
        src = args.store or work / "day"
        if args.store is None or not (src / "catalog.sqlite").exists():
            build(src, args.spans, args.files)
        shutil.copytree(src, work / "a")
        shutil.copytree(src, work / "b")
        s = sliced(work / "a", args.rate)
        w = whole(work / "b")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"store: {args.spans:,} spans in {s['files_before']} files; ingest {args.rate:g} spans/s beside it")
    print(f"sliced cycle: {s['cycle_s']:.1f} s, files {s['files_before']} -> {s['files_after']}")
    for kind, (n, p50, mx) in s["slices"].items():  # type: ignore[attr-defined]
        print(f"  {kind:<10} {n:>4} slice(s)  p50 {p50 * 1000:7.0f} ms  max {mx * 1000:7.0f} ms")
    print(f"  longest slice: {s['longest_slice_s']:.2f} s")
    print(
        f"  span commits during the cycle: {s['commits']}, answered in p50 {s['commit_p50_s'] * 1000:.0f} ms, "
        f"p99 {s['commit_p99_s'] * 1000:.0f} ms, max {s['commit_max_s'] * 1000:.0f} ms "
        f"(the commit itself: p50 {s['commit_held_p50_s'] * 1000:.0f} ms; the rest is waiting for a slice)"
    )
    print("baseline, one call per step (the old maintain()), on a copy of the same store:")
    for name, sec in w.items():
        print(f"  {name:<10} {sec:7.2f} s")


if __name__ == "__main__":
    main()

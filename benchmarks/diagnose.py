"""Benchmark: full diagnosis of a 24-hour and a 1-hour breach window.

Store: 30 days of hop_minutes for 21 hops (gateway + 10 services, 11 edges), 10M raw spans
(the last 2 days), ~2M resource samples (36 series at 1/min). Built once under var/bench-diagnose
(reused when present).

    .venv/bin/python benchmarks/diagnose.py [--rebuild] [--spans 10000000] [--demo var/demo]
        [--store PATH] [--threads N]

``--store``: time a copy of the benchmark store (e.g. one whose spans were rewritten in another
order) instead of var/bench-diagnose; ``--threads``: DuckDB worker threads for this process (the
store's default is one per CPU; on a shared 2-core machine ``--threads 1`` halves the CPU per query).

Prints cold and warm (median) wall time and CPU time per diagnosis computed afresh (use_cache=False),
the same diagnosis repeated (answered from the per-process cache keyed by the DuckLake snapshot), the median time of each step
(hop_minutes query, decomposition, samples queries, scoring, bubbleup query), the load average,
and with --demo the time of `hopscope incidents --since 7d` over a demo store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hopscope import histogram
from hopscope.diagnosis import diagnose
from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[1] / "var" / "bench-diagnose"
END = datetime(2026, 4, 1)
DAYS = 30
SERVICES = [f"svc-{i}" for i in range(1, 11)]
EDGES = [("", "gw")] + [("gw", s) for s in SERVICES]
SELF_MS = {"gw": 5.0, **{s: 4.0 + 2 * i for i, s in enumerate(SERVICES)}}
GAP_MS = 1.5
RATE = 60  # requests per minute
SLOW_SVC = "svc-3"


def _effect(minutes: np.ndarray) -> np.ndarray:
    """Extra ms in svc-3 during the last 24 h (ramping), the breach the benchmark diagnoses."""
    return np.where(minutes >= np.datetime64(END - timedelta(hours=24)), 150.0, 0.0)


def build_hop_minutes(store: Store, rng: np.random.Generator) -> None:
    minutes = np.arange(
        np.datetime64(END - timedelta(days=DAYS)), np.datetime64(END), np.timedelta64(1, "m")
    ).astype("datetime64[us]")
    n = len(minutes)
    extra = _effect(minutes)
    e2e = SELF_MS["gw"] + sum(SELF_MS[s] + GAP_MS for s in SERVICES) + extra
    for client, server in EDGES:
        if client == "":
            mean, gap, selfm = e2e, np.zeros(n), np.full(n, SELF_MS["gw"])
        else:
            selfm = SELF_MS[server] + (extra if server == SLOW_SVC else 0.0)
            mean, gap = selfm + GAP_MS, np.full(n, GAP_MS)
        noise = rng.normal(1.0, 0.05, n)
        dur = mean * noise
        centre = histogram.bucket_index(dur)
        idx = [[int(c) - 2, int(c) - 1, int(c), int(c) + 1, int(c) + 3] for c in centre]
        cnt = [[6, 15, 24, 12, 3]] * n
        table = pa.table(
            {
                "minute": minutes,
                "client": [client] * n,
                "server": [server] * n,
                "route": ["/predict"] * n,
                "count": np.full(n, RATE, dtype=np.int64),
                "errors": np.zeros(n, dtype=np.int64),
                "duration_ms_sum": dur * RATE,
                "duration_ms_max": dur * 3,
                "client_ms_sum": (dur * RATE) if client else np.zeros(n),
                "server_ms_sum": (dur - gap) * RATE,
                "gap_ms_sum": gap * RATE * noise,
                "self_ms_sum": selfm * RATE * noise,
                "skewed": np.zeros(n, dtype=np.int64),
                "hist_idx": pa.array(idx, pa.list_(pa.int32())),
                "hist_cnt": pa.array(cnt, pa.list_(pa.int64())),
                "good_le_ms": pa.array([[200.0]] * n, pa.list_(pa.float64())),
                "good_cnt": pa.array(
                    [[int(RATE * 0.995)]] * n if client else [[RATE]] * n, pa.list_(pa.int64())
                ),
                "exemplars": pa.array([[f"{i:032x}"] for i in range(n)], pa.list_(pa.string())),
            }
        )
        store.append("hop_minutes", table)
    # the entry edge: make the SLI burn during the breach
    bad = store.query_df("SELECT count(*) AS n FROM hop_minutes")
    print(f"hop_minutes: {int(bad['n'].iloc[0]):,} rows")


def build_samples(store: Store, rng: np.random.Generator) -> None:
    ts = np.arange(
        np.datetime64(END - timedelta(days=DAYS)), np.datetime64(END), np.timedelta64(1, "m")
    ).astype("datetime64[us]")
    n = len(ts)
    extra = _effect(ts)
    parts = []
    for svc in ["gw", *SERVICES]:
        host = f"{svc}-host"
        series = [
            (
                "node_cpu_utilization_ratio",
                {},
                0.3 + rng.normal(0, 0.02, n) + (extra / 300 if svc == SLOW_SVC else 0),
            ),
            ("node_memory_MemAvailable_bytes", {}, 8e9 + rng.normal(0, 1e8, n)),
            (
                "node_network_transmit_bytes_total",
                {"device": "eth0"},
                np.cumsum(np.abs(rng.normal(1e7, 1e6, n)) * 60),
            ),
        ]
        for metric, labels, values in series:
            parts.append(
                pa.table(
                    {
                        "ts": ts,
                        "metric": [metric] * n,
                        "value": values,
                        "source": ["bench"] * n,
                        "service": [svc] * n,
                        "host": [host] * n,
                        "labels": pa.array([list(labels.items())] * n, pa.map_(pa.string(), pa.string())),
                    }
                )
            )
    store.append("samples", pa.concat_tables(parts))
    print(f"samples: {store.count('samples'):,} rows")


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def build_spans(store: Store, rng: np.random.Generator, total: int) -> None:
    start = END - timedelta(days=2)
    services = ["gw", *SERVICES]
    chunk = 2_000_000
    done = 0
    while done < total:
        n = min(chunk, total - done)
        offs = rng.integers(0, int(timedelta(days=2).total_seconds() * 1e6), n)
        st = np.datetime64(start, "us") + offs.astype("timedelta64[us]")
        svc = rng.integers(0, len(services), n)
        is_slow = (np.array(services)[svc] == SLOW_SVC) & (
            st >= np.datetime64(END - timedelta(hours=24), "us")
        )
        dur = rng.gamma(4.0, 2.5, n) + np.where(is_slow, 150.0, 0.0)
        hostn = rng.integers(0, 3, n)
        host = np.char.add(np.char.add(np.array(services)[svc], "-host-"), hostn.astype(str))
        keys = _flat(pa.array(np.tile(np.array(["model.version", "region"], dtype=object), n), pa.string()))
        version = np.where(is_slow & (hostn == 2), "v2", "v1")
        region = np.array(["eu", "us"])[rng.integers(0, 2, n)]
        vals = _flat(pa.array(np.column_stack([version, region]).ravel().astype(object), pa.string()))
        attrs = pa.MapArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), keys, vals)
        ids = rng.integers(0, 2**63 - 1, (n, 3), dtype=np.int64)
        table = pa.table(
            {
                "trace_id": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(16), n, [None, pa.py_buffer(ids[:, :2].tobytes())]
                ),
                "span_id": pa.FixedSizeBinaryArray.from_buffers(
                    pa.binary(8), n, [None, pa.py_buffer(ids[:, 2].copy().tobytes())]
                ),
                "service": np.array(services)[svc],
                "name": ["POST /predict"] * n,
                "kind": np.full(n, 2, dtype=np.int8),
                "start_time": st,
                "duration_ms": dur,
                "status_code": np.zeros(n, dtype=np.int8),
                "host_name": host,
                "attributes": attrs,
            }
        ).sort_by("start_time")
        store.append("spans", table)
        done += n
        print(f"spans: {done:,}", flush=True)


def timed(fn, repeat: int = 5) -> tuple[float, float, float, object, list[object]]:
    """(cold wall s, warm median wall s, warm median CPU s, last result, all warm results)."""
    t = time.perf_counter()
    out = fn()
    cold = time.perf_counter() - t
    walls, cpus, outs = [], [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        outs.append(out)
    return cold, statistics.median(walls), statistics.median(cpus), out, outs


def steps(results: list[object]) -> str:
    """Median wall ms per step of the diagnosis (Diagnosis.timings_ms)."""
    per: dict[str, list[float]] = {}
    for d in results:
        for name, ms in d.timings_ms:  # type: ignore[attr-defined]
            per.setdefault(name, []).append(ms)
    return ", ".join(f"{k} {statistics.median(v):.0f}" for k, v in per.items())


def bench_incidents(path: Path, since: timedelta) -> None:
    """`hopscope incidents --since` in process: breaches of every SLO, each diagnosed without BubbleUp."""
    from hopscope.slo import find_breaches, load_slos, store_now

    t0, c0 = time.perf_counter(), time.process_time()
    store = Store(path, create=False)
    t1 = time.perf_counter()
    slos = [
        s
        for s in load_slos(Path(__file__).resolve().parents[1] / "slo_rules")[0]
        if s.sli.kind in ("latency", "availability")
    ]
    end = store_now(store)
    found = [(b, s) for s in slos for b in find_breaches(store, s, start=end - since, end=end)]
    t2 = time.perf_counter()
    from hopscope.diagnosis import diagnose_breach

    ds = [diagnose_breach(store, b, s, with_bubbleup=False) for b, s in found]
    t3 = time.perf_counter()
    print(
        f"incidents --since {since.days}d on {path}: {len(found)} breaches; open {t1 - t0:.2f} s, "
        f"find breaches {t2 - t1:.2f} s, diagnoses {t3 - t2:.2f} s ({(t3 - t2) / max(1, len(ds)) * 1000:.0f} ms each), "
        f"total {t3 - t0:.2f} s wall, {time.process_time() - c0:.2f} s CPU"
    )
    print("  per diagnosis, ms: " + steps(ds))


FLOOR_READS = (  # the diagnosis reads these three tables, one after the other (each read needs the last)
    ("hop_minutes", "minute", ""),
    ("samples", "ts", ""),
    ("spans", "start_time", " AND service = 'gw'"),
)


def floor(store: Store, start: datetime, end: datetime, repeat: int) -> str:
    """Median ms of one DuckLake read per table that the diagnosis makes: one that matches nothing (the
    fixed cost of a read: catalog transaction, file list, footers) and a bare count of the window's rows."""

    def ms(sql: str, params: list[Any]) -> float:
        times = []
        for _ in range(max(repeat, 3) * 2):
            t = time.perf_counter()
            store.query(sql, params)
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000

    parts = []
    for table, col, extra in FLOOR_READS:
        none = ms(f"SELECT count(*) FROM {table} WHERE {col} < ?", [datetime(1971, 1, 1)])
        window = ms(f"SELECT count(*) FROM {table} WHERE {col} >= ? AND {col} < ?{extra}", [start, end])
        parts.append(f"{table} {none:.0f} / {window:.0f}")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--spans", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--demo", type=Path, help="also time `incidents --since 7d` over this demo store")
    ap.add_argument("--store", type=Path, default=ROOT, help="benchmark store (built here when missing)")
    ap.add_argument("--threads", type=int, help="DuckDB threads (default: the store's, one per CPU)")
    args = ap.parse_args()
    root = args.store
    if args.rebuild and root.exists():
        shutil.rmtree(root)
    fresh = not root.exists()
    store = Store(root)
    if args.threads:
        store._cursor().execute(f"SET threads = {int(args.threads)}")  # a global DuckDB setting
    if fresh:
        rng = np.random.default_rng(1)
        t = time.perf_counter()
        build_hop_minutes(store, rng)
        build_samples(store, rng)
        build_spans(store, rng, args.spans)
        store.maintain(retention=False)
        print(f"built in {time.perf_counter() - t:.1f} s, {store.size_bytes() / 1e6:.0f} MB")
    print(
        f"store: hop_minutes {store.count('hop_minutes'):,}, spans {store.count('spans'):,}, samples {store.count('samples'):,}"
    )
    threads = store.query("SELECT current_setting('threads') AS t").column("t")[0].as_py()
    print(
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs, DuckDB threads {threads}"
    )
    kw = dict(service="gw", route="/predict", threshold_ms=None, objective=0.99)
    for label, length, limit in (("24 h", timedelta(hours=24), 0.250), ("1 h", timedelta(hours=1), 0.050)):
        start = END - length
        for bubble in (True, False):
            cold, warm, cpu, d, outs = timed(
                lambda s=start, b=bubble: diagnose(
                    store, start=s, end=END, with_bubbleup=b, use_cache=False, **kw
                ),
                args.repeat,
            )
            top = d.top
            print(
                f"{label} window{'' if bubble else ' (no BubbleUp)'}: cold {cold * 1000:.0f} ms, warm median {warm * 1000:.0f} ms "
                f"wall / {cpu * 1000:.0f} ms CPU (target <= {limit * 1000:.0f} ms) -> {d.verdict}: "
                f"{top.hop if top else '-'} {top.dimension if top else ''}"
            )
            print("  steps, ms: " + steps(outs))
        print(
            f"  floor, ms per read (nothing matched / a bare count of the window): {floor(store, start, END, args.repeat)}"
        )
        # the same breach again in this process (dashboard re-render, explain after incidents)
        _, warm, cpu, d, _ = timed(lambda s=start: diagnose(store, start=s, end=END, **kw), args.repeat)
        print(
            f"{label} window, repeated (cache by DuckLake snapshot): warm median {warm * 1000:.1f} ms wall / "
            f"{cpu * 1000:.1f} ms CPU -> {d.verdict}"
        )
    if args.demo:
        bench_incidents(args.demo, timedelta(days=7))
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Spans/s stored and catalog commit latency: the embedded store vs a shared one, same data, same run;
then 1, 2 and 3 `hopscope collect` processes on the shared store; then SLO evaluation and diagnosis
times on both stores.

    python benchmarks/scale_out.py --catalog postgresql://hs@127.0.0.1:5432/bench \\
        --data-path s3://bucket/bench [--batches 100] [--batch-spans 2000] \\
        [--collectors 1,2,3 --seconds 20] [--reads]

The shared store's password comes from $PGPASSWORD (or --password-env), its S3 settings from
--s3-endpoint/--s3-region/--s3-url-style/--no-ssl and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
Use an empty catalog database: the run appends to it. Each backend gets the same seeded batches:
`batches` group commits of `batch-spans` spans (a Parquet file each, as the receiver writes them), then
100 tiny commits of 10 spans (inlined in the catalog: the catalog's own cost per commit).

--collectors: for each count N, N real `hopscope collect` processes (testbed/fleet.py starts them; one
leads) on the shared store, and 4 client threads per collector posting 1,000-span OTLP/HTTP protobuf
requests (benchmarks/otlp_ingest.py's bodies) for --seconds: spans acknowledged (= committed) per
second, the mean group commit (hopscope_commit_seconds) and the conflict retries, summed over the
collectors. All of it runs on this machine: the clients, the collectors, PostgreSQL and the S3 server.

--reads: 30 days of hop_minutes for 10 SLO routes (benchmarks/slo_eval.py's data) and for 11 hops
(benchmarks/diagnose.py's), written to an embedded store and to the shared one; then ten SLOs
evaluated (evaluate_many, no breach replay) and a 24-hour diagnosis (no BubbleUp: it reads raw
spans, not built here), each cold (a freshly opened store) and warm (median of 5).
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hopscope.store import Backend, S3Settings, Store  # noqa: E402


def spans(n: int, seed: int, t0: datetime) -> pa.Table:
    rng = random.Random(seed)
    return pa.table(
        {
            "trace_id": [rng.randbytes(16) for _ in range(n)],
            "span_id": [rng.randbytes(8) for _ in range(n)],
            "service": [rng.choice(["api-gateway", "feature-store", "model-server"]) for _ in range(n)],
            "name": [rng.choice(["GET /recommend", "POST /predict", "GET /features"]) for _ in range(n)],
            "kind": pa.array([rng.choice([1, 2, 3]) for _ in range(n)], pa.int8()),
            "start_time": pa.array([t0 + timedelta(milliseconds=i) for i in range(n)], pa.timestamp("us")),
            "duration_ms": [rng.lognormvariate(3, 1) for _ in range(n)],
            "status_code": pa.array([rng.choice([0, 0, 0, 1, 2]) for _ in range(n)], pa.int8()),
        }
    )


def measure(store: Store, batches: list[pa.Table], tiny: list[pa.Table]) -> dict[str, float]:
    file_commits, tiny_commits = [], []
    t0 = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        store.append("spans", batch)
        file_commits.append(time.perf_counter() - t)
    stored_s = time.perf_counter() - t0
    for batch in tiny:
        t = time.perf_counter()
        store.append("spans", batch)
        tiny_commits.append(time.perf_counter() - t)
    t = time.perf_counter()
    n = store.count("spans")
    count_s = time.perf_counter() - t
    return {
        "spans_per_s": sum(b.num_rows for b in batches) / stored_s,
        "file_commit_p50_ms": statistics.median(file_commits) * 1e3,
        "tiny_commit_p50_ms": statistics.median(tiny_commits) * 1e3,
        "tiny_commit_p95_ms": statistics.quantiles(tiny_commits, n=20)[-1] * 1e3,
        "count_ms": count_s * 1e3,
        "rows": n,
    }


def collectors_throughput(backend: Backend, n: int, seconds: float, work: Path) -> dict[str, float]:
    """N collectors on the shared store, 4 posting clients each: acknowledged spans/s and commit cost."""
    from otlp_ingest import Bodies  # noqa: PLC0415  (benchmarks/ is this script's folder)

    from testbed.fleet import FleetConfig, _start  # noqa: PLC0415
    from testbed.soak import Scrape, _http_get, _kill_group  # noqa: PLC0415

    cfg = FleetConfig(work=work, collectors=n, lease_s=15.0, rollup_interval_s=60.0, maintain_interval_s=60.0)
    members = _start(cfg, backend)
    bodies = Bodies(random.Random(n), 8, 1000)
    acked = [0] * (4 * n)
    refused = [0] * (4 * n)
    stop = threading.Event()

    def client(i: int) -> None:
        m = members[i % n]
        conn = http.client.HTTPConnection("127.0.0.1", m.otlp_port, timeout=30)
        k = i
        while not stop.is_set():
            body = bodies.fresh(k)
            k += 4 * n
            conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 200:
                acked[i] += 1000
            else:
                refused[i] += 1000
                time.sleep(0.2)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4 * n)]
    try:
        for th in threads:
            th.start()
        time.sleep(2.0)  # warm up: connections open, first files written
        a0, t0 = sum(acked), time.perf_counter()
        time.sleep(seconds)
        spans, elapsed = sum(acked) - a0, time.perf_counter() - t0
        commit_sum = commit_n = conflicts = 0.0
        for m in members:
            scrape = Scrape(_http_get(f"http://127.0.0.1:{m.metrics_port}/metrics")[1].decode())
            commit_sum += scrape.value("hopscope_commit_seconds_sum") or 0.0
            commit_n += scrape.value("hopscope_commit_seconds_count") or 0.0
            conflicts += scrape.value("hopscope_store_conflict_retries") or 0.0
    finally:
        stop.set()
        for th in threads:
            th.join(35)
        for m in members:
            _kill_group(m.proc, grace_s=30)
    return {
        "spans_per_s": spans / elapsed,
        "commit_mean_ms": 1e3 * commit_sum / commit_n if commit_n else float("nan"),
        "commits": commit_n,
        "conflict_retries": conflicts,
        "refused": float(sum(refused)),
    }


def read_times(stores: dict[str, Store]) -> dict[str, dict[str, float]]:
    """SLO evaluation and diagnosis, cold and warm, on each store (the same rows written to each)."""
    import diagnose as diag_bench  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import slo_eval  # noqa: PLC0415

    from hopscope.diagnosis import diagnose  # noqa: PLC0415
    from hopscope.slo import MinuteCache  # noqa: PLC0415
    from hopscope.slo import source as slo_source  # noqa: PLC0415

    data = slo_eval.per_minute()
    slos = slo_eval.span_slos()
    out: dict[str, dict[str, float]] = {}
    for name, store in stores.items():
        slo_eval.build_hop_minutes(store, data)
        diag_bench.build_hop_minutes(store, np.random.default_rng(1))
        store.maintain(now=slo_eval.END, retention=False)
        fresh = store.clone()  # a new connection: no DuckDB caches
        slo_source.CACHE = MinuteCache()
        t = time.perf_counter()
        slo_source.evaluate_many(fresh, slos, now=slo_eval.END, breaches=False)
        slo_cold = time.perf_counter() - t
        warm = []
        for _ in range(5):
            slo_source.CACHE = MinuteCache()
            t = time.perf_counter()
            slo_source.evaluate_many(fresh, slos, now=slo_eval.END, breaches=False)
            warm.append(time.perf_counter() - t)
        kw: dict[str, Any] = dict(service="gw", route="/predict", threshold_ms=None, objective=0.99)
        start = diag_bench.END - timedelta(hours=24)
        t = time.perf_counter()
        diagnose(fresh, start=start, end=diag_bench.END, with_bubbleup=False, use_cache=False, **kw)
        diag_cold = time.perf_counter() - t
        diag_warm = []
        for _ in range(5):
            t = time.perf_counter()
            diagnose(fresh, start=start, end=diag_bench.END, with_bubbleup=False, use_cache=False, **kw)
            diag_warm.append(time.perf_counter() - t)
        fresh.close()
        out[name] = {
            "slo_cold_ms": slo_cold * 1e3,
            "slo_warm_ms": statistics.median(warm) * 1e3,
            "diag_cold_ms": diag_cold * 1e3,
            "diag_warm_ms": statistics.median(diag_warm) * 1e3,
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", required=True, help="an empty PostgreSQL database: URL or libpq string")
    p.add_argument("--data-path", required=True, help="s3://bucket/prefix (or a folder)")
    p.add_argument("--password-env", default="PGPASSWORD")
    p.add_argument("--s3-endpoint")
    p.add_argument("--s3-region")
    p.add_argument("--s3-url-style", choices=["path", "vhost"])
    p.add_argument("--no-ssl", action="store_true")
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--batch-spans", type=int, default=2000)
    p.add_argument("--collectors", default="", help="e.g. 1,2,3: that many `hopscope collect` at once")
    p.add_argument("--seconds", type=float, default=20.0, help="load per collector count")
    p.add_argument(
        "--catalogs", default="", help="an empty database per collector count (default: --catalog)"
    )
    p.add_argument("--reads", action="store_true", help="SLO evaluation and diagnosis on both stores")
    p.add_argument("--read-catalog", help="an empty database for --reads (default: --catalog)")
    args = p.parse_args()

    t0 = datetime(2026, 3, 1)
    batches = [spans(args.batch_spans, i, t0 + timedelta(minutes=i)) for i in range(args.batches)]
    tiny = [spans(10, 10_000 + i, t0 + timedelta(days=1, seconds=i)) for i in range(100)]
    s3 = S3Settings(args.s3_endpoint, args.s3_region, args.s3_url_style, use_ssl=not args.no_ssl)
    shared = Backend(args.catalog, args.data_path, password_env=args.password_env, s3=s3)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, backend in (("embedded (SQLite + local)", None), ("shared (PostgreSQL + S3)", shared)):
            with Store(Path(tmp) / "store", backend=backend) as store:
                results[name] = measure(store, batches, tiny)
    spans_total = args.batches * args.batch_spans
    print(
        f"{args.batches} commits of {args.batch_spans} spans ({spans_total:,} spans), then 100 commits of 10"
    )
    print(f"{'store':<28}{'spans/s':>10}{'commit p50':>12}{'tiny p50':>10}{'tiny p95':>10}{'count':>9}")
    for name, r in results.items():
        print(
            f"{name:<28}{r['spans_per_s']:>10,.0f}{r['file_commit_p50_ms']:>10.1f}ms"
            f"{r['tiny_commit_p50_ms']:>8.1f}ms{r['tiny_commit_p95_ms']:>8.1f}ms{r['count_ms']:>7.1f}ms"
        )
    counts = [int(c) for c in args.collectors.split(",") if c.strip()]
    catalogs = [c for c in args.catalogs.split(",") if c.strip()] or [args.catalog] * len(counts)
    if counts:
        print(
            f"\n`hopscope collect` x N on the shared store, 4 clients per collector, {args.seconds:g} s each"
        )
        print(f"{'collectors':<12}{'spans/s':>10}{'commit mean':>13}{'commits':>9}{'conflict retries':>18}")
    for n, catalog in zip(counts, catalogs, strict=False):
        data = args.data_path.rstrip("/") + f"/collectors-{n}"
        backend = Backend(catalog, data, password_env=args.password_env, s3=s3)
        with tempfile.TemporaryDirectory() as tmp:
            r = collectors_throughput(backend, n, args.seconds, Path(tmp))
        print(
            f"{n:<12}{r['spans_per_s']:>10,.0f}{r['commit_mean_ms']:>11.1f}ms{r['commits']:>9.0f}"
            f"{r['conflict_retries']:>18.0f}"
        )
    if args.reads:
        read_backend = Backend(
            args.read_catalog or args.catalog,
            args.data_path.rstrip("/") + "/reads",
            password_env=args.password_env,
            s3=s3,
        )
        with tempfile.TemporaryDirectory() as tmp:
            stores = {
                "embedded (SQLite + local)": Store(Path(tmp) / "embedded"),
                "shared (PostgreSQL + S3)": Store(Path(tmp) / "shared", backend=read_backend),
            }
            times = read_times(stores)
            for s in stores.values():
                s.close()
        print(
            "\nten SLOs over 30 days (10 routes) and a 24 h diagnosis of 11 hops (no BubbleUp); both data sets in one store"
        )
        print(f"{'store':<28}{'SLO cold':>10}{'SLO warm':>10}{'diag cold':>11}{'diag warm':>11}")
        for name, r in times.items():
            print(
                f"{name:<28}{r['slo_cold_ms']:>8.0f}ms{r['slo_warm_ms']:>8.0f}ms"
                f"{r['diag_cold_ms']:>9.0f}ms{r['diag_warm_ms']:>9.0f}ms"
            )


if __name__ == "__main__":
    main()

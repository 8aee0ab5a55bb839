"""Spans/s stored and catalog commit latency: the embedded store vs a shared one, same data, same run.

    python benchmarks/scale_out.py --catalog postgresql://hs@127.0.0.1:5432/bench \\
        --data-path s3://bucket/bench [--batches 100] [--batch-spans 2000]

The shared store's password comes from $PGPASSWORD (or --password-env), its S3 settings from
--s3-endpoint/--s3-region/--s3-url-style/--no-ssl and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
Use an empty catalog database: the run appends to it. Each backend gets the same seeded batches:
`batches` group commits of `batch-spans` spans (a Parquet file each, as the receiver writes them), then
100 tiny commits of 10 spans (inlined in the catalog: the catalog's own cost per commit).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from hopscope.store import Backend, S3Settings, Store


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


if __name__ == "__main__":
    main()

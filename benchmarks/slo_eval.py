"""Benchmark: ten SLOs over 30 days at 1M requests/day, evaluated from hop_minutes.

    .venv/bin/python benchmarks/slo_eval.py [--store /tmp/slo-bench]

Prints: the time to read the ten minute frames from hop_minutes (one scan), the time of
the pure math (every window, budget and alert state for all ten), and breaches over the
30 days. Not done here (see the report): the 30M-row raw-span path and Prometheus.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from hopscope import histogram
from hopscope.slo import SLI, SLO, Window, default_window_tables, with_policy
from hopscope.slo.burn import breaches_from_minutes, status_from_minutes
from hopscope.slo.source import evaluate_many, minute_series_many
from hopscope.store import Store

DAYS = 30
PER_DAY = 1_000_000
ROUTES = [f"/r{i}" for i in range(10)]
END = datetime(2025, 7, 1)


def build(store: Store) -> int:
    rng = np.random.default_rng(7)
    minutes = pd.date_range(END - timedelta(days=DAYS), END, freq="min", inclusive="left")
    per_min = PER_DAY / 1440 / len(ROUTES)  # 1M requests/day in all
    idx, cnt = histogram.from_values(rng.lognormal(np.log(60), 0.5, 2000))
    rows = 0
    for route in ROUTES:
        n = len(minutes)
        count = rng.poisson(per_min, n)
        errors = rng.binomial(count, 0.0005)
        good200 = count - rng.binomial(count, 0.004)
        df = pd.DataFrame(
            {
                "minute": minutes,
                "client": "",
                "server": "api-gateway",
                "route": route,
                "count": count,
                "errors": errors,
                "duration_ms_sum": count * 60.0,
                "duration_ms_max": 400.0,
                "client_ms_sum": 0.0,
                "server_ms_sum": count * 60.0,
                "gap_ms_sum": 0.0,
                "self_ms_sum": 0.0,
                "skewed": 0,
                "hist_idx": [idx] * n,
                "hist_cnt": [cnt] * n,
                "good_le_ms": [[200.0]] * n,
                "good_cnt": [[int(g)] for g in good200],
                "exemplars": [[]] * n,
            }
        )
        rows += store.append("hop_minutes", df)
    return rows


def slos() -> list[SLO]:
    table = default_window_tables()["sre-workbook"]
    out = []
    for i, r in enumerate(ROUTES):
        kind = "latency" if i % 2 == 0 else "availability"
        sli = SLI(kind, service="api-gateway", route=r, threshold_ms=200.0 if kind == "latency" else None)
        out.append(
            with_policy(
                SLO(
                    f"slo-{i}",
                    "",
                    0.99 if kind == "latency" else 0.999,
                    Window("rolling", timedelta(days=28)),
                    sli,
                ),
                table,
            )
        )
    return out


def best(fn, n: int = 5) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, default=None)
    args = ap.parse_args()
    path = args.store or Path(tempfile.mkdtemp(prefix="slo-bench-")) / "store"
    fresh = not (path / "catalog.sqlite").exists()
    store = Store(path)
    if fresh:
        t = time.perf_counter()
        rows = build(store)
        store.maintain(retention=False)
        print(
            f"built hop_minutes: {rows:,} rows (10 routes x {DAYS} d x 1440 min) in {time.perf_counter() - t:.1f} s"
        )
    ss = slos()
    start = END - timedelta(days=29)
    t_read = best(lambda: minute_series_many(store, ss, start, END))
    frames = minute_series_many(store, ss, start, END)
    t_math = best(lambda: [status_from_minutes(s, frames[s.name], END) for s in ss])
    t_all = best(lambda: evaluate_many(store, ss, now=END))
    t_breach = best(lambda: [breaches_from_minutes(s, frames[s.name]) for s in ss], 3)
    print(f"read 10 minute frames from hop_minutes (one scan): {t_read * 1000:.1f} ms")
    print(f"status math, 10 SLOs x every window/budget/alert state: {t_math * 1000:.1f} ms")
    print(f"evaluate_many (read + math), 10 SLOs: {t_all * 1000:.1f} ms  (target <= 50 ms)")
    print(f"breaches over 29 days, 10 SLOs (per-minute alert replay): {t_breach * 1000:.1f} ms")
    store.close()
    if args.store is None:
        shutil.rmtree(path.parent, ignore_errors=True)
    _ = replace


if __name__ == "__main__":
    main()

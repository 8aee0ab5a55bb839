"""Benchmark: what budget corrections and composite SLOs add to an SLO evaluation.

    .venv/bin/python benchmarks/slo_corrections.py [--days 30] [--corrections 50] [--runs 20]

One store, ``--days`` of one entry edge at 20 requests a minute (hop_minutes rows, seeded). Three
SLOs (latency, availability, a composite of both) evaluated with ``evaluate_many`` at the end of the
data, warm (the per-process minute cache filled, store unchanged): with no stored corrections, then
with ``--corrections`` one-hour corrections recorded in the store (``add_correction``). Prints the
median wall time of each, and of ``read_corrections`` alone (cached per snapshot) and cold.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.hop_minutes import hop_minute_row  # noqa: E402

from hopscope.slo import add_correction, evaluate_many, load_slos, read_corrections  # noqa: E402
from hopscope.slo.corrections import _CACHE  # noqa: E402
from hopscope.store import Store  # noqa: E402

RULES = """\
apiVersion: hopscope/v1
kind: SLO
metadata: {name: lat}
spec: {objective: 0.99, window: 28d, sli: {kind: latency, service: api-gateway, thresholdMs: 200}}
---
apiVersion: hopscope/v1
kind: SLO
metadata: {name: avail}
spec: {objective: 0.999, window: 28d, sli: {kind: availability, service: api-gateway}}
---
apiVersion: hopscope/v1
kind: SLO
metadata: {name: both}
spec: {objective: 0.99, window: 28d, sli: {kind: composite, components: [{slo: lat, weight: 2}, avail]}}
"""


def median_ms(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--corrections", type=int, default=50)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slo-corr-bench-"))
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "slos.yaml").write_text(RULES)
    import shutil

    shutil.copytree(ROOT / "slo_rules" / "alert_windows", rules / "alert_windows")
    slos, errors = load_slos(rules)
    assert not errors, errors
    t0 = datetime(2025, 6, 1)
    rng = np.random.default_rng(1)
    rows = [
        hop_minute_row(
            t0 + timedelta(minutes=m), "", "api-gateway", rng.uniform(20, 250, 20), 0, [200.0], "/r"
        )
        for m in range(a.days * 1440)
    ]
    store = Store(tmp / "store")
    store.append("hop_minutes", pd.DataFrame(rows))
    end = t0 + timedelta(days=a.days)
    evaluate_many(store, slos, now=end)  # fill the minute cache
    plain = median_ms(lambda: evaluate_many(store, slos, now=end), a.runs)
    base = {s.name: s for s in slos}
    for i in range(a.corrections):
        start = t0 + timedelta(hours=12 * i + 1)
        add_correction(store, base["lat" if i % 2 else "avail"], start, start + timedelta(hours=1), f"c{i}")
    evaluate_many(store, slos, now=end)
    corrected = median_ms(lambda: evaluate_many(store, slos, now=end), a.runs)
    cached = median_ms(lambda: read_corrections(store), a.runs)

    def cold() -> None:
        _CACHE.clear()
        read_corrections(store)

    uncached = median_ms(cold, a.runs)
    print(f"{a.days} days x 1440 minutes, 3 SLOs (one composite), warm evaluate_many, median of {a.runs}:")
    print(f"  no corrections:           {plain:8.1f} ms")
    print(f"  {a.corrections} stored corrections:   {corrected:8.1f} ms")
    print(f"  read_corrections cached:  {cached:8.2f} ms   (snapshot unchanged)")
    print(f"  read_corrections cold:    {uncached:8.2f} ms")
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

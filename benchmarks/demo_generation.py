"""Benchmark: what the demo's quiet history costs `make demo`.

    .venv/bin/python benchmarks/demo_generation.py [--scenario sample_data/scenario.yaml] [--runs 2]

Generates the demo scenario as it is (a simulated week after ``history_days`` of hop_minutes
resampled from its quiet minutes) and, as the baseline in the same run, the same scenario with
``history_days: 0`` (the week alone), alternately, each into a fresh temporary folder. Prints wall
and process CPU seconds (DuckDB's threads included), store size and hop_minutes rows per variant,
with the load average, since the machine this runs on is often shared. The demo's tests bound the
generation at 60 CPU seconds (tests/test_demo.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from hopscope.demo import DEFAULT_SCENARIO, generate


def _variants(scenario: Path, tmp: Path) -> dict[str, Path]:
    doc = yaml.safe_load(scenario.read_text())
    week = dict(doc, history_days=0)
    path = tmp / "week-only.yaml"
    path.write_text(yaml.safe_dump(week))
    return {f"with history ({doc.get('history_days', 0)} d)": scenario, "week only (baseline)": path}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as d:
        tmp = Path(d)
        variants = _variants(args.scenario, tmp)
        figures: dict[str, list[tuple[float, float, int, int]]] = {name: [] for name in variants}
        for run in range(args.runs):
            for name, scenario in variants.items():
                cpu0, t0 = time.process_time(), time.monotonic()
                result = generate(scenario, tmp / f"store-{run}")
                wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
                figures[name].append((wall, cpu, result.size_bytes, result.rows["hop_minutes"]))
                print(f"run {run + 1} {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'variant':28} {'wall s (median)':>16} {'CPU s (median)':>15} {'size MB':>8} {'hop_minutes':>12}")
    for name, rows in figures.items():
        wall = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        print(f"{name:28} {wall:16.1f} {cpu:15.1f} {rows[-1][2] / 1e6:8.1f} {rows[-1][3]:12,}")


if __name__ == "__main__":
    main()

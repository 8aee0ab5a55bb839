"""Scenario sweep: generate each small scenario, diagnose its events, score (hop, dimension).

Prints top-1 / top-3 accuracy and a confusion table (testbed/sweep.py says how it is scored).

    .venv/bin/python benchmarks/diagnosis_sweep.py [--keep DIR] [SCENARIO.yaml ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.sweep import SCENARIOS, run_sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("scenarios", nargs="*", type=Path, default=SCENARIOS)
    ap.add_argument("--keep", type=Path, help="generate the stores here and keep them")
    args = ap.parse_args()
    t = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="hopscope-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        summary = run_sweep(list(args.scenarios), work)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(summary.report())
    print(f"\n{time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()

"""Soak benchmark of `hopscope collect` (issue 12): the soak of testbed/soak.py, by hand, for long.

    .venv/bin/python benchmarks/soak.py [--minutes 30] [--spans-per-second 900] [--runs both|quiet|hogs]
                                        [--hogs 2] [--rollup-interval 10] [--maintain-interval 30]

By default it runs twice, 30 minutes each at 900 spans/s (3x the test's rate): once on a quiet machine
and once with 2 busy-loop processes competing for the cores, because the bugs it hunts (maintenance
holding the writer, refusals, store errors, rollups falling behind, growing memory) get worse when the
daemon is short of CPU. It prints both result tables side by side, then one JSON line with both results.
A long soak is too slow for the test suite; tests/test_soak.py runs a 2-minute one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed.soak import SoakConfig, SoakError, SoakResult, run_soak, summary_rows  # noqa: E402


def side_by_side(results: list[tuple[str, SoakResult]]) -> str:
    """One row per measure, one column per run (the rows are the same for every run but writer jobs)."""
    tables = [dict(summary_rows(r)) for _, r in results]
    labels: list[str] = []
    for table in tables:
        labels += [k for k in table if k not in labels]
    header = ["", *(name for name, _ in results)]
    rows = [header, *([label, *(t.get(label, "-") for t in tables)] for label in labels)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes per run (default 30)")
    parser.add_argument(
        "--spans-per-second", type=float, default=900.0, help="target span rate (default 900)"
    )
    parser.add_argument(
        "--runs", choices=("both", "quiet", "hogs"), default="both", help="without hogs, with hogs, or both"
    )
    parser.add_argument("--hogs", type=int, default=2, help="CPU hogs of the 'hogs' run (default 2)")
    parser.add_argument("--rollup-interval", type=float, default=10.0, help="[collect] rollup_interval_s")
    parser.add_argument("--maintain-interval", type=float, default=30.0, help="[collect] maintain_interval_s")
    parser.add_argument("--batch-size", type=int, default=256, help="SDK max_export_batch_size (default 256)")
    parser.add_argument("--keep", type=Path, help="keep each run's work dir under DIR/<run>")
    args = parser.parse_args()

    plan = [("quiet", 0), (f"{args.hogs} hogs", args.hogs)]
    if args.runs != "both":
        plan = plan[:1] if args.runs == "quiet" else plan[1:]
    results: list[tuple[str, SoakResult]] = []
    for name, hogs in plan:
        print(
            f"== soak run '{name}': {args.minutes:g} min at {args.spans_per_second:g} spans/s",
            file=sys.stderr,
        )
        cfg = SoakConfig(
            seconds=args.minutes * 60,
            spans_per_second=args.spans_per_second,
            hogs=hogs,
            rollup_interval_s=args.rollup_interval,
            maintain_interval_s=args.maintain_interval,
            batch_size=args.batch_size,
            keep=args.keep / name.replace(" ", "-") if args.keep else None,
        )
        try:
            results.append((name, run_soak(cfg)))
        except SoakError as exc:
            print(f"soak: error: {exc}", file=sys.stderr)
            return 2
    print(side_by_side(results))
    print(json.dumps({name: r.to_dict() for name, r in results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

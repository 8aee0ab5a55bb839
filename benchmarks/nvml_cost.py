"""CPU cost of NVML sampling at 1 Hz with a fake 8-GPU module (the collector's own Python cost).

    .venv/bin/python benchmarks/nvml_cost.py [--gpus 8] [--samples 300]

Goal: <= 1% of one core at 1 Hz, i.e. <= 10 ms of CPU per sampling pass. On a real GPU add the
driver's own cost (~1-6 us a call on an H200; the energy counter ~4 ms, read at most once a second).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the fake NVML module

from fake_nvml import FakeGpu, FakeNvml  # noqa: E402

from collectors.config import NvmlConfig  # noqa: E402
from collectors.nvml import NvmlCollector  # noqa: E402
from collectors.records import samples_table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    fake = FakeNvml(
        [
            FakeGpu(f"GPU-{i:04d}", nvlink_kib=i * 1000, procs=[(1000 + i, 9 * 2**30)])
            for i in range(args.gpus)
        ]
    )
    c = NvmlCollector(NvmlConfig(service="model-server"), host="bench", nvml=fake)
    assert c.init() is None
    c.collect()
    rows = 0
    cpu0 = time.process_time()
    for _ in range(args.samples):
        results = c.collect()
        rows += sum(len(r.samples) for r in results)
    per_pass = (time.process_time() - cpu0) / args.samples
    cpu1 = time.process_time()
    for _ in range(args.samples):
        samples_table([s for r in c.collect() for s in r.samples])
    with_arrow = (time.process_time() - cpu1) / args.samples
    print(f"{args.gpus} GPUs, {rows / args.samples:.0f} samples per pass")
    print(f"collect(): {per_pass * 1000:.2f} ms CPU per pass = {per_pass * 100:.2f}% of one core at 1 Hz")
    print(
        f"collect() + Arrow conversion: {with_arrow * 1000:.2f} ms CPU per pass = {with_arrow * 100:.2f}% of one core at 1 Hz"
    )
    print(f"goal <= 1% of one core: {'MET' if with_arrow <= 0.01 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

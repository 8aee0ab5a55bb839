"""CPU cost of NVML sampling at 1 Hz: with a fake 8-GPU module (the collector's own Python cost), or
with `--real`, the machine's NVIDIA driver (the collector's cost plus the driver calls).

    .venv/bin/python benchmarks/nvml_cost.py [--gpus 8] [--samples 300]
    python3 benchmarks/nvml_cost.py --real --samples 100      # on a machine with a GPU

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

from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

from fake_nvml import FakeGpu, FakeNvml  # noqa: E402

from hopscope.collectors.nvml import NvmlCollector, load_pynvml  # noqa: E402
from hopscope.collectors.records import samples_table  # noqa: E402
from hopscope.config.collect import NvmlConfig  # noqa: E402


class _TimedNvml:
    """The pynvml module with the wall time of each nvmlDevice* call recorded."""

    def __init__(self, module: Any) -> None:
        self._m = module
        self.times: dict[str, tuple[int, float]] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._m, name)
        if not (name.startswith("nvmlDevice") and callable(attr)):
            return attr

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                calls, total = self.times.get(name, (0, 0.0))
                self.times[name] = (calls + 1, total + time.perf_counter() - t0)

        return timed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--real", action="store_true", help="the driver's NVML instead of the fake")
    ap.add_argument("--energy", action="store_true", help="read the energy counter too (real only)")
    args = ap.parse_args()
    if args.real:
        cfg = SimpleNamespace(
            interval_s=1.0, service="model-server", process_memory=True, energy=args.energy, init_retry_s=60.0
        )
        timed = _TimedNvml(load_pynvml())
        c = NvmlCollector(cfg, host="bench", nvml=timed)  # type: ignore[arg-type]
    else:
        fake = FakeNvml(
            [
                FakeGpu(f"GPU-{i:04d}", nvlink_kib=i * 1000, procs=[(1000 + i, 9 * 2**30)])
                for i in range(args.gpus)
            ]
        )
        c = NvmlCollector(NvmlConfig(service="model-server"), host="bench", nvml=fake)
    err = c.init()
    if err:
        print(f"NVML init failed: {err}")
        return 1
    wall0 = time.perf_counter()
    c.collect()
    rows = 0
    cpu0 = time.process_time()
    for _ in range(args.samples):
        results = c.collect()
        rows += sum(len(r.samples) for r in results)
    per_pass = (time.process_time() - cpu0) / args.samples
    wall = (time.perf_counter() - wall0) / args.samples
    samples_table([s for r in c.collect() for s in r.samples])  # first call loads Arrow's kernels
    cpu1 = time.process_time()
    for _ in range(args.samples):
        samples_table([s for r in c.collect() for s in r.samples])
    with_arrow = (time.process_time() - cpu1) / args.samples
    gpus = c.targets_text if args.real else f"{args.gpus} fake GPUs"
    print(f"{gpus}: {rows / args.samples:.0f} samples per pass, {wall * 1000:.2f} ms wall per pass")
    print(f"collect(): {per_pass * 1000:.2f} ms CPU per pass = {per_pass * 100:.2f}% of one core at 1 Hz")
    print(
        f"collect() + Arrow conversion: {with_arrow * 1000:.2f} ms CPU per pass = {with_arrow * 100:.2f}% of one core at 1 Hz"
    )
    if args.real:
        print("wall per NVML call (mean over the run):")
        for name, (calls, total) in sorted(timed.times.items(), key=lambda kv: -kv[1][1]):
            print(f"  {name:45} {calls:6d} calls  {total / calls * 1e6:9.1f} us")
    print(f"goal <= 1% of one core: {'MET' if with_arrow <= 0.01 else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

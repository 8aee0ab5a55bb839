"""Run the NVML collector against a loaded GPU and check what it stores (see scripts/gpu_check.sh)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hopscope.collectors.nvml import NvmlCollector  # noqa: E402

GIB = 1024**3


def sample_for(collector: NvmlCollector, seconds: float, gpu: int) -> list[dict[str, float]]:
    """Call collect() at 1 Hz on a fixed cadence; one dict of metric -> value per tick for the chosen GPU."""
    rows = []
    next_at = time.monotonic()
    end = next_at + seconds
    while next_at < end:
        results = collector.collect()
        for r in results:
            if r.target == f"gpu{gpu}":
                row = {s.metric: s.value for s in r.samples if "pid" not in s.labels}
                procs = {s.labels["pid"]: s.value for s in r.samples if "pid" in s.labels}
                row["_ts"] = r.samples[0].ts.timestamp() if r.samples else time.time()
                row["_own_proc_mib"] = procs.get(str(os.getpid()), float("nan"))
                row["_ok"] = 1.0 if r.ok else 0.0
                rows.append(row)
        next_at += 1.0
        time.sleep(max(0.0, next_at - time.monotonic()))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--alloc-gib", type=float, default=8)
    ap.add_argument("--gpu", type=int, default=0)
    args = ap.parse_args()
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        print("FAIL: torch sees no CUDA device")
        return 1
    cfg = SimpleNamespace(
        interval_s=1.0, service="model-server", process_memory=True, energy=True, init_retry_s=60.0
    )
    collector = NvmlCollector(cfg, host=os.uname().nodename)
    err = collector.init()
    if err:
        print(f"FAIL: NVML init: {err}")
        return 1
    print(f"NVML GPUs: {collector.targets_text}")
    dev = torch.device(f"cuda:{args.gpu}")
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):  # CUDA context and cuBLAS workspace exist before the baseline
        c = a @ b
    torch.cuda.synchronize(dev)
    print("baseline (context + operands allocated, idle) ...")
    idle = sample_for(collector, 4, args.gpu)
    alloc_bytes = int(args.alloc_gib * GIB)
    held = torch.empty(alloc_bytes, dtype=torch.uint8, device=dev)
    held.fill_(1)  # touch it
    torch.cuda.synchronize(dev)
    stop = threading.Event()

    def load() -> None:
        nonlocal c
        while not stop.is_set():
            for _ in range(20):
                c = a @ b
            torch.cuda.synchronize(dev)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(2)  # let clocks ramp
    print(f"load: bf16 {n}^3 matmul loop + {args.alloc_gib:g} GiB held, sampling {args.seconds:g} s ...")
    loaded = sample_for(collector, args.seconds, args.gpu)
    stop.set()
    worker.join()
    del held
    collector.close()

    cols = [
        ("DCGM_FI_DEV_GPU_UTIL", "util%"),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", "memcpy%"),
        ("DCGM_FI_DEV_FB_USED", "fb_used_MiB"),
        ("DCGM_FI_DEV_SM_CLOCK", "sm_MHz"),
        ("DCGM_FI_DEV_POWER_USAGE", "power_W"),
        ("DCGM_FI_DEV_GPU_TEMP", "temp_C"),
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "reasons"),
        ("DCGM_FI_PROF_PCIE_TX_BYTES", "pcie_tx_B/s"),
        ("_own_proc_mib", "own_proc_MiB"),
    ]
    print("phase  t_s   " + "  ".join(f"{h:>12}" for _, h in cols))
    t0 = (idle or loaded)[0]["_ts"]
    for phase, rows in (("idle", idle), ("load", loaded)):
        for r in rows:
            vals = []
            for k, _ in cols:
                v = r.get(k)
                vals.append(
                    f"{'-':>12}"
                    if v is None
                    else (f"{int(v):>#12x}" if k.endswith("REASONS") else f"{v:>12.1f}")
                )
            print(f"{phase:5} {r['_ts'] - t0:5.1f} " + "  ".join(vals))

    def med(rows: list[dict[str, float]], k: str) -> float:
        xs = [r[k] for r in rows if k in r]
        return statistics.median(xs) if xs else float("nan")

    rise = med(loaded, "DCGM_FI_DEV_FB_USED") - med(idle, "DCGM_FI_DEV_FB_USED")
    want = alloc_bytes / 2**20
    gaps = [b["_ts"] - a["_ts"] for a, b in zip(loaded, loaded[1:], strict=False)]
    checks = [
        (
            f"utilization > 50% under load (median {med(loaded, 'DCGM_FI_DEV_GPU_UTIL'):.0f}%)",
            med(loaded, "DCGM_FI_DEV_GPU_UTIL") > 50,
        ),
        (
            f"framebuffer used rises by the allocation +-10% (rise {rise:.0f} MiB, allocation {want:.0f} MiB)",
            abs(rise - want) <= 0.1 * want,
        ),
        ("power present in every sample", all("DCGM_FI_DEV_POWER_USAGE" in r for r in idle + loaded)),
        ("temperature present in every sample", all("DCGM_FI_DEV_GPU_TEMP" in r for r in idle + loaded)),
        (
            f"one sample per second ({len(loaded)} samples in {args.seconds:g} s, gaps {min(gaps or [0]):.2f}-{max(gaps or [0]):.2f} s)",
            abs(len(loaded) - args.seconds) <= 1 and all(0.8 <= g <= 1.2 for g in gaps),
        ),
        ("every sample ok (no lost GPU)", all(r["_ok"] == 1.0 for r in idle + loaded)),
    ]
    print(
        f"figures: util median {med(loaded, 'DCGM_FI_DEV_GPU_UTIL'):.0f}%, power median {med(loaded, 'DCGM_FI_DEV_POWER_USAGE'):.0f} W, "
        f"SM clock median {med(loaded, 'DCGM_FI_DEV_SM_CLOCK'):.0f} MHz, temp max {max((r.get('DCGM_FI_DEV_GPU_TEMP', 0) for r in loaded), default=0):.0f} C, "
        f"own process {med(loaded, '_own_proc_mib'):.0f} MiB"
    )
    failed = 0
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
        failed += not ok
    print("RESULT:", "PASS" if not failed else f"FAIL ({failed} check(s))")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

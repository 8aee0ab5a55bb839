"""The real path on a real GPU: `hopscope collect` (NVML + network collectors) writes to a DuckLake store
while PyTorch loads GPU 0 in phases (idle, load, idle); then the store is read back and checked.

    python3 scripts/gpu_store_check.py [--out DIR] [--load-s 20] [--idle-s 8] [--alloc-gib 8]

Needs python3 with torch and nvidia-ml-py, and hopscope's own dependencies (duckdb + ducklake,
pydantic, typer, pyarrow, pandas, prometheus-client). Writes to --out: the daemon's log, its
/metrics page, and the stored samples as Parquet (`gpu_samples.parquet`), so the dashboard's
GPU pages can be looked at on the real data elsewhere. Prints PASS/FAIL checks and exits 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIB = 1024**3
METRICS_PORT = 19464


def wait_for_metrics(proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The daemon's /metrics page once it answers with an NVML run recorded; '' if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=2) as r:
                text = r.read().decode()
            if 'collector="nvml"' in text:
                return text
        except OSError:
            pass
        time.sleep(0.5)
    return ""


def _count(per_metric: Any, metric: str) -> int:
    return int(per_metric.loc[per_metric.metric == metric, "n"].sum())


def _all_ok(runs: Any, collector: str) -> bool:
    mine = runs[runs.collector == collector]
    return bool(len(mine)) and bool((mine.runs == mine.ok).all())


def naive_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def main() -> int:  # noqa: PLR0915 (one linear script, read top to bottom)
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "var/gpu-check")))
    ap.add_argument("--load-s", type=float, default=20)
    ap.add_argument("--idle-s", type=float, default=8)
    ap.add_argument("--alloc-gib", type=float, default=8)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        print("FAIL: torch sees no CUDA device")
        return 1
    work = Path(tempfile.mkdtemp(prefix="hopscope-gpu-"))
    store_path = work / "store"
    cfg = work / "hopscope.toml"
    cfg.write_text(
        f"""[store]
path = "{store_path}"

[collect]
rollup_interval_s = 10
maintain_interval_s = 15

[collect.otlp]
enabled = false

[collect.nvml]
interval_s = 1.0
service = "model-server"
energy = true

[collect.network]
interval_s = 2.0
service = "model-server"

[collect.metrics]
port = {METRICS_PORT}
"""
    )
    log = (args.out / "daemon.log").open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from hopscope.cli import main; main()", "collect", "--config", str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    metrics = wait_for_metrics(proc, 90)
    if not metrics:
        proc.kill()
        print("FAIL: the daemon never served /metrics with an NVML run; see daemon.log:")
        print((args.out / "daemon.log").read_text()[-3000:])
        return 1
    print(f"daemon up in {time.monotonic() - started:.1f} s")

    dev = torch.device("cuda:0")
    n = 8192
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    c = a @ b
    torch.cuda.synchronize(dev)
    time.sleep(args.idle_s)
    load_start = naive_utc()
    held = torch.empty(int(args.alloc_gib * GIB), dtype=torch.uint8, device=dev)
    held.fill_(1)
    stop = threading.Event()

    def load() -> None:
        nonlocal c
        while not stop.is_set():
            for _ in range(20):
                c = a @ b
            torch.cuda.synchronize(dev)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(args.load_s)
    stop.set()
    worker.join()
    del held
    torch.cuda.empty_cache()
    load_end = naive_utc()
    time.sleep(args.idle_s)

    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as r:
        (args.out / "daemon_metrics.txt").write_bytes(r.read())
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = -9
    log.close()

    from hopscope.store import Store  # noqa: PLC0415

    store = Store.open(store_path)
    per_metric = store.query_df(
        "SELECT metric, count(*) AS n, min(value) AS lo, max(value) AS hi FROM samples "
        "WHERE source = 'nvml' GROUP BY metric ORDER BY metric"
    )
    print(per_metric.to_string(index=False))

    def phase_median(metric: str, inside: bool) -> float:
        # the load phase, or the idle phases around it (a 2 s margin for clocks and allocations to settle)
        where = "ts >= ? AND ts < ?" if inside else "(ts < ? OR ts >= ?)"
        lo, hi = (
            (load_start + timedelta(seconds=2), load_end)
            if inside
            else (load_start, load_end + timedelta(seconds=2))
        )
        df = store.query_df(
            "SELECT median(value) AS m FROM samples WHERE metric = ? AND NOT map_contains(labels, 'pid') "
            f"AND {where}",
            [metric, lo, hi],
        )
        v = df["m"].iloc[0]
        return float("nan") if v is None else float(v)

    util_load, util_idle = (
        phase_median("DCGM_FI_DEV_GPU_UTIL", True),
        phase_median("DCGM_FI_DEV_GPU_UTIL", False),
    )
    fb_load, fb_idle = phase_median("DCGM_FI_DEV_FB_USED", True), phase_median("DCGM_FI_DEV_FB_USED", False)
    power_load, power_idle = (
        phase_median("DCGM_FI_DEV_POWER_USAGE", True),
        phase_median("DCGM_FI_DEV_POWER_USAGE", False),
    )
    runs = store.query_df(
        "SELECT collector, count(*) AS runs, count(*) FILTER (WHERE ok) AS ok, max(error) AS last_error "
        "FROM collector_runs GROUP BY collector ORDER BY collector"
    )
    print(runs.to_string(index=False))
    labels = store.query_df(
        "SELECT DISTINCT service, host, labels['UUID'] AS uuid, labels['modelName'] AS model FROM samples "
        "WHERE metric = 'DCGM_FI_DEV_GPU_UTIL'"
    )
    print(labels.to_string(index=False))
    net = store.query_df("SELECT count(*) AS n FROM samples WHERE source = 'network'")["n"].iloc[0]
    samples = store.query("SELECT * FROM samples ORDER BY ts, metric")
    import pyarrow.parquet as pq  # noqa: PLC0415

    pq.write_table(samples, args.out / "gpu_samples.parquet")
    seconds = (load_end - load_start).total_seconds() + 2 * args.idle_s
    n_util = _count(per_metric, "DCGM_FI_DEV_GPU_UTIL")
    want_mib = args.alloc_gib * 1024
    checks = [
        (f"daemon exited 0 on SIGTERM (rc {rc})", rc == 0),
        (f"GPU util median {util_load:.0f}% under load vs {util_idle:.0f}% idle", util_load > 50 > util_idle),
        (
            f"framebuffer used rose {fb_load - fb_idle:.0f} MiB under load (allocation {want_mib:.0f} MiB, +-10%)",
            abs((fb_load - fb_idle) - want_mib) <= 0.1 * want_mib,
        ),
        (f"power median {power_load:.0f} W under load vs {power_idle:.0f} W idle", power_load > power_idle),
        (f"{n_util} utilization samples stored for a ~{seconds:.0f} s test at 1 Hz", n_util >= 0.8 * seconds),
        ("every NVML run ok", _all_ok(runs, "nvml")),
        ("every maintenance run ok", _all_ok(runs, "maintain")),
        (
            f"PCIe TX/RX rates stored ({_count(per_metric, 'DCGM_FI_PROF_PCIE_TX_BYTES')}"
            f"/{_count(per_metric, 'DCGM_FI_PROF_PCIE_RX_BYTES')})",
            _count(per_metric, "DCGM_FI_PROF_PCIE_TX_BYTES") >= 0.8 * seconds
            and _count(per_metric, "DCGM_FI_PROF_PCIE_RX_BYTES") >= 0.8 * seconds,
        ),
        ("GPU labels: UUID and modelName present", bool(len(labels)) and labels.uuid.notna().all()),
        (f"network samples stored ({net})", net > 0),
        (f"{len(samples)} samples exported to gpu_samples.parquet", len(samples) > 0),
    ]
    failed = 0
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {text}")
        failed += not ok
    print("RESULT:", "PASS" if not failed else f"FAIL ({failed} check(s))")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A small hand-built store with known answers: six hours of rollups with a one-hour spike, samples,
collector runs and one trace (the dashboard's read-side tests and pages read it)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from hopscope import histogram
from hopscope.store import Store

END = datetime(2026, 11, 20, 12, 0)
MINUTES = 6 * 60
SPIKE = (END - timedelta(minutes=120), END - timedelta(minutes=60))
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
TRACE = "0123456789abcdef0123456789abcdef"


def edge_rows(minute: datetime, rng: random.Random, spike: bool) -> list[dict]:
    """Three edges of one /recommend minute: gateway self 10 ms, feature store 20 ms, model 40 ms + gap."""
    n = 600 if spike else 100
    gap = 300.0 if spike else 5.0
    parts = {  # (client, server): (self ms, gap ms)
        ("", "api-gateway"): (10.0, 0.0),
        ("api-gateway", "feature-store"): (20.0, 2.0),
        ("api-gateway", "model-server"): (40.0, gap),
    }
    e2e = sum(s + g for s, g in parts.values())
    rows = []
    for (client, server), (self_ms, gap_ms) in parts.items():
        dur = e2e if client == "" else self_ms + gap_ms
        values = np.array([dur * (0.8 + 0.4 * rng.random()) for _ in range(50)])
        idx, cnt = histogram.from_values(values)
        scale = n / 50
        rows.append(
            {
                "minute": minute,
                "client": client,
                "server": server,
                "route": "/recommend",
                "count": n,
                "errors": 1 if spike else 0,
                "duration_ms_sum": dur * n,
                "duration_ms_max": float(values.max()),
                "client_ms_sum": dur * n if client else 0.0,
                "server_ms_sum": (dur - gap_ms) * n,
                "gap_ms_sum": gap_ms * n,
                "self_ms_sum": self_ms * n,
                "skewed": 0,
                "hist_idx": idx,
                "hist_cnt": [int(round(c * scale)) for c in cnt],
                "good_le_ms": [200.0],
                "good_cnt": [n if dur <= 200 else 0],
                "exemplars": [TRACE] if client == "" and spike else [],
            }
        )
    return rows


def build_store(path: Path, *, evil: bool = True) -> Store:
    """A 6-hour store: rollups with a one-hour spike in the gateway->model-server gap, samples, runs, one trace."""
    rng = random.Random(42)
    store = Store(path)
    rows = []
    for m in range(MINUTES):
        minute = END - timedelta(minutes=MINUTES - m)
        rows += edge_rows(minute, rng, SPIKE[0] <= minute < SPIKE[1])
    store.append("hop_minutes", pd.DataFrame(rows))

    samples = []
    for m in range(MINUTES):
        ts = END - timedelta(minutes=MINUTES - m)
        spike = SPIKE[0] <= ts < SPIKE[1]
        gpu = {"gpu": "0", "UUID": "GPU-1", "modelName": "H100"}
        samples += [
            (ts, "DCGM_FI_DEV_GPU_UTIL", 90.0 if spike else 40.0, "model-server", gpu),
            (ts, "DCGM_FI_DEV_SM_CLOCK", 1400.0, "model-server", gpu),
            (ts, "DCGM_FI_DEV_FB_USED", 20000.0, "model-server", gpu),
            (ts, "DCGM_FI_DEV_FB_FREE", 60000.0, "model-server", gpu),
            (ts, "node_network_transmit_bytes_total", 1.25e9 * 60 * m, "api-gateway", {"device": "eth0"}),
            (ts, "node_network_speed_bytes", 1.25e9, "api-gateway", {"device": "eth0"}),
            (ts, "node_netstat_Tcp_RetransSegs", 10.0 * m, "api-gateway", {}),
            (
                ts,
                "probe_http_duration_seconds",
                0.002,
                "model-server",
                {"phase": "connect", "target": "http://model:8000/"},
            ),
            (ts, "redis_memory_used_bytes", 1e9, "feature-store", {}),
            (ts, "redis_memory_max_bytes", 4e9, "feature-store", {}),
        ]
    sdf = pd.DataFrame(samples, columns=["ts", "metric", "value", "service", "labels"])
    sdf["source"] = "demo"
    sdf["host"] = sdf["service"]
    labels = pa.array([list(d.items()) for d in sdf["labels"]], type=pa.map_(pa.string(), pa.string()))
    table = pa.Table.from_pandas(sdf.drop(columns=["labels"]), preserve_index=False).append_column(
        "labels", labels
    )
    store.append("samples", table)

    runs = pd.DataFrame(
        {
            "ts": [END - timedelta(minutes=2), END - timedelta(minutes=1)],
            "collector": ["prometheus", "prometheus"],
            "target": ["http://prom:9090", "http://prom:9090"],
            "ok": [True, False],
            "rows": [100, 0],
            "error": [None, "timeout"],
            "duration_ms": [12.0, 5000.0],
        }
    )
    store.append("collector_runs", runs)

    t0 = SPIKE[0] + timedelta(minutes=5)
    tid = bytes.fromhex(TRACE)
    name = EVIL if evil else "GET /recommend"
    spans = pd.DataFrame(
        {
            "trace_id": [tid] * 4,
            "span_id": [bytes([i]) * 8 for i in (1, 2, 3, 4)],
            "parent_span_id": [None, bytes([1]) * 8, bytes([1]) * 8, bytes([3]) * 8],
            "service": ["api-gateway", "api-gateway", "api-gateway", "model-server"],
            "name": [name, "GET features", "POST /infer", "infer"],
            "kind": [2, 3, 3, 2],
            "start_time": [
                t0,
                t0 + timedelta(milliseconds=5),
                t0 + timedelta(milliseconds=30),
                t0 + timedelta(milliseconds=180),
            ],
            "duration_ms": [380.0, 22.0, 340.0, 40.0],
            "status_code": [0, 0, 0, 0],
        }
    )
    store.append("spans", spans)
    return store

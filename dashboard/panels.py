"""The resource panels the dashboard draws: which metrics, unit, dimension and capacity, and their series."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from hopscope.catalog import load_catalog
from hopscope.errors import NotFoundError
from hopscope.query.samples import metric_series
from hopscope.query.spans import hop_latency_series
from hopscope.query.windows import Window
from hopscope.store import Store


@dataclass(frozen=True, slots=True)
class Panel:
    """One resource chart: which metrics, in which unit and dimension, against which capacity."""

    key: str
    dimension: str
    title: str
    metrics: tuple[str, ...]
    unit: str
    scale: float = 1.0  # stored value x scale = value in `unit`
    capacity: tuple[str, ...] = ()  # capacity = sum of these metrics per series
    hop: str | None = None  # a hop's self/network time from hop_minutes instead of samples


# The Overview shows two or three per dimension; the Resources page shows them all.
PANELS: tuple[Panel, ...] = (
    Panel("gpu_util", "compute", "GPU utilization", ("DCGM_FI_DEV_GPU_UTIL",), "%"),
    Panel("sm_clock", "compute", "SM clock", ("DCGM_FI_DEV_SM_CLOCK",), "MHz"),
    Panel(
        "clock_reasons",
        "compute",
        "Clock-event reasons (bitmask)",
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",),
        "bitmask",
    ),
    Panel("power", "compute", "GPU power", ("DCGM_FI_DEV_POWER_USAGE",), "W"),
    Panel("temp", "compute", "GPU temperature", ("DCGM_FI_DEV_GPU_TEMP",), "°C"),
    Panel("xid", "compute", "XID errors", ("DCGM_FI_DEV_XID_ERRORS",), "XID code"),
    Panel("cpu", "compute", "Host CPU utilization", ("node_cpu_utilization_ratio",), "%", scale=100.0),
    Panel(
        "link",
        "bandwidth",
        "Link throughput vs capacity",
        ("node_network_transmit_bytes_total", "node_network_receive_bytes_total"),
        "Gbit/s",
        8e-9,
        ("node_network_speed_bytes",),
    ),
    Panel("retrans", "bandwidth", "TCP retransmits", ("node_netstat_Tcp_RetransSegs",), "segments/s"),
    Panel(
        "drops",
        "bandwidth",
        "NIC drops",
        ("node_network_transmit_drop_total", "node_network_receive_drop_total"),
        "packets/s",
    ),
    Panel(
        "pcie",
        "bandwidth",
        "PCIe throughput",
        ("DCGM_FI_PROF_PCIE_TX_BYTES", "DCGM_FI_PROF_PCIE_RX_BYTES"),
        "GB/s",
        1e-9,
    ),
    Panel("nvlink", "bandwidth", "NVLink throughput", ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",), "GB/s", 1e-9),
    Panel("probe", "bandwidth", "Probe phases", ("probe_http_duration_seconds",), "ms", 1000.0),
    Panel(
        "fb",
        "memory",
        "GPU framebuffer used",
        ("DCGM_FI_DEV_FB_USED",),
        "GiB",
        1 / 1024,
        ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"),
    ),
    Panel("mem_copy", "memory", "GPU memory-copy utilization", ("DCGM_FI_DEV_MEM_COPY_UTIL",), "%"),
    Panel("fs_self", "memory", "Feature-store self time", (), "ms per request", hop="feature-store"),
    Panel(
        "redis",
        "memory",
        "Feature-store memory",
        ("redis_memory_used_bytes",),
        "GiB",
        1 / 2**30,
        ("redis_memory_max_bytes",),
    ),
    Panel("redis_miss", "memory", "Feature-store cache misses", ("redis_keyspace_misses_total",), "misses/s"),
    Panel(
        "host_mem",
        "memory",
        "Host memory available",
        ("node_memory_MemAvailable_bytes",),
        "GiB",
        1 / 2**30,
        ("node_memory_MemTotal_bytes",),
    ),
)
PANELS_BY_KEY = {p.key: p for p in PANELS}
OVERVIEW_PANELS: dict[str, tuple[str, ...]] = {
    "compute": ("gpu_util", "sm_clock"),
    "bandwidth": ("link", "retrans", "probe"),
    "memory": ("fb", "fs_self", "redis"),
}


def _need(store: Store | None) -> Store:
    if store is None:
        raise NotFoundError("panels_series: no store given and no data passed in")
    return store


def _counters() -> set[str]:

    return set(load_catalog().counters())


def panel_series(
    store: Store, w: Window, key: str, service: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values, capacity) of one panel, already in the panel's unit. Columns: t, service, series, value."""
    return panels_series(store, w, (key,), service)[key]


def panel_metrics(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """(metrics, counters) that panels read from samples: their values and capacities (gauges,
    e.g. FB_USED + FB_FREE, link speed); counters are the values the catalog calls counters."""
    unknown = [k for k in keys if k not in PANELS_BY_KEY]
    if unknown:
        raise NotFoundError(f"no resource panel {unknown[0]!r} (panels: {', '.join(PANELS_BY_KEY)})")
    panels = [PANELS_BY_KEY[k] for k in keys]
    values = {m for p in panels if p.hop is None for m in p.metrics}
    capacity = {m for p in panels if p.hop is None for m in p.capacity}
    return sorted(values | capacity), sorted(_counters() & values)


def panels_series(
    store: Store | None,
    w: Window,
    keys: Sequence[str],
    service: str | None = None,
    *,
    samples: pd.DataFrame | None = None,
    hops: pd.DataFrame | None = None,
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """panel_series of several panels from one scan of samples (a page's panels cost one query, not one each).

    `samples` (metric_series of panel_metrics(keys)) and `hops` (hop_latency_series) may be given
    when the caller has them cached; what is not given is queried.
    """
    metrics, counters = panel_metrics(keys)
    panels = [PANELS_BY_KEY[k] for k in dict.fromkeys(keys)]
    empty = pd.DataFrame(columns=["t", "service", "series", "value"])
    if samples is None:
        samples = metric_series(_need(store), w, metrics, counters=counters, service=service)
    both = samples
    if hops is None and any(p.hop is not None for p in panels):
        hops = hop_latency_series(_need(store), w)
    out: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for panel in panels:
        if panel.hop is not None:
            d = hops[hops["hop"] == panel.hop]  # type: ignore[index]
            out[panel.key] = (
                d.assign(service=panel.hop, series=d["part"], value=d["ms"])[
                    ["t", "service", "series", "value"]
                ],
                empty,
            )
            continue
        df = both[both["metric"].isin(panel.metrics)] if not both.empty else both
        if len(panel.metrics) > 1 and not df.empty:  # e.g. transmit and receive: name the direction
            df = df.assign(
                series=[
                    f"{s} {m.split('_')[2] if m.startswith('node_network') else m.rsplit('_', 2)[-2]}".strip()
                    for s, m in zip(df["series"], df["metric"], strict=True)
                ]
            )
        cap = empty
        c = both[both["metric"].isin(panel.capacity)] if panel.capacity and not both.empty else empty
        if not c.empty:
            per_series = c.groupby(["t", "service", "series"], as_index=False)["value"].sum()
            cap = per_series.groupby("t", as_index=False)["value"].max().assign(service="", series="capacity")
            cap["value"] = cap["value"] * panel.scale
        df = df[["t", "service", "series", "value"]].reset_index(drop=True) if not df.empty else empty.copy()
        df["value"] = df["value"] * panel.scale
        out[panel.key] = (df, cap)
    return out

"""Samples recorded by the real daemon on an NVIDIA H200 (docs/gpu-proof.md) read back through the store.

tests/fixtures/h200_nvml_samples.parquet is what `scripts/gpu_store_check.py` stored: 8 s idle, 20 s of
a bf16 matmul loop with 8 GiB held, 8 s idle. These tests check that real NVML output, not the fake's,
has the names, labels and units the catalog and the signal loader expect.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hopscope.catalog import load_catalog
from hopscope.model import TimeRange
from hopscope.signals import load_series
from hopscope.store import Store

FIXTURE = Path(__file__).parent / "fixtures" / "h200_nvml_samples.parquet"
# Read only when asked for (the energy counter is off by default); power is the compute signal.
CONTEXT_ONLY = {"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"}
EXPECTED_DIMENSION = {
    "DCGM_FI_DEV_GPU_UTIL": "compute",
    "DCGM_FI_DEV_SM_CLOCK": "compute",
    "DCGM_FI_DEV_FB_USED": "memory",
    "DCGM_FI_PROF_PCIE_TX_BYTES": "bandwidth",
    "DCGM_FI_PROF_PCIE_RX_BYTES": "bandwidth",
}


@pytest.fixture(scope="module")
def h200_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store.open(tmp_path_factory.mktemp("h200") / "store")
    store.append("samples", pq.read_table(FIXTURE))
    return store


def test_every_recorded_gpu_metric_is_in_the_catalog_with_its_dimension() -> None:
    table = pq.read_table(FIXTURE).to_pandas()
    metrics = set(table.loc[table.source == "nvml", "metric"])
    catalog = load_catalog()
    assert len(metrics) >= 12
    missing = sorted(m for m in metrics - CONTEXT_ONLY if m not in catalog)
    assert missing == []
    for metric, dimension in EXPECTED_DIMENSION.items():
        assert catalog[metric].dimension == dimension


def test_recorded_gpu_series_carry_dcgm_labels(h200_store: Store) -> None:
    labels = h200_store.query_df(
        "SELECT DISTINCT labels['gpu'] AS gpu, labels['UUID'] AS uuid, labels['modelName'] AS model, service "
        "FROM samples WHERE metric = 'DCGM_FI_DEV_GPU_UTIL'"
    )
    assert len(labels) == 1
    row = labels.iloc[0]
    assert row.gpu == "0" and row.uuid.startswith("GPU-") and row.model == "NVIDIA H200"
    assert row.service == "model-server"


def test_the_load_step_shows_in_bucketed_series(h200_store: Store) -> None:
    lo, hi = h200_store.query("SELECT min(ts) AS lo, max(ts) AS hi FROM samples").to_pylist()[0].values()
    window = TimeRange(lo.replace(microsecond=0), hi + timedelta(seconds=1))
    df = load_series(
        h200_store,
        [window],
        step_s=2,
        metrics=["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE"],
        services=["model-server"],
    )
    util = df[df.metric == "DCGM_FI_DEV_GPU_UTIL"].sort_values("ts")["value"].to_numpy()
    fb = df[df.metric == "DCGM_FI_DEV_FB_USED"].sort_values("ts")["value"].to_numpy()
    power = df[df.metric == "DCGM_FI_DEV_POWER_USAGE"].sort_values("ts")["value"].to_numpy()
    assert len(util) >= 15  # 36 s at 2 s buckets
    # idle at both ends, saturated in the middle
    assert util[:2].max() <= 5 and util[-2:].max() <= 5
    assert np.median(util[len(util) // 3 : 2 * len(util) // 3]) >= 95
    # 8 GiB held during the load, in MiB
    assert fb.max() - fb[0] == pytest.approx(8 * 1024, rel=0.1)
    assert power.max() > 3 * power[0]

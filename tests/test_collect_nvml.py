"""NVML collector against an injected fake NVML module (no GPU here); the real GPU path is scripts/gpu_check.sh."""

from __future__ import annotations

from datetime import datetime

import pytest
from fake_nvml import NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakeNvml

from hopscope.collectors.nvml import NvmlCollector
from hopscope.collectors.records import TargetResult
from hopscope.config.collect import NvmlConfig

NOW = datetime(2026, 11, 26, 12, 0, 0)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _collector(fake: FakeNvml, mono: Clock | None = None, **cfg: object) -> NvmlCollector:
    return NvmlCollector(
        NvmlConfig(service="model-server", **cfg),
        host="gpu-host",
        nvml=fake,
        clock=lambda: NOW,
        monotonic=mono or Clock(),
    )


def _by_metric(result: TargetResult) -> dict[str, float]:
    return {s.metric: s.value for s in result.samples if "pid" not in s.labels}


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("DCGM_FI_DEV_GPU_UTIL", 37.0),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", 12.0),
        ("DCGM_FI_DEV_FB_USED", 1024.0),
        ("DCGM_FI_DEV_FB_FREE", 81559.0 - 1024.0),
        ("DCGM_FI_DEV_SM_CLOCK", 1755.0),
        ("DCGM_FI_DEV_MEM_CLOCK", 2619.0),
        ("DCGM_FI_DEV_GPU_TEMP", 41.0),
        ("DCGM_FI_DEV_POWER_USAGE", 123.456),
        ("DCGM_FI_PROF_PCIE_TX_BYTES", 2048 * 1024.0),
        ("DCGM_FI_PROF_PCIE_RX_BYTES", 4096 * 1024.0),
        ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", 1.0),
    ],
)
def test_nvml_readings_are_stored_under_dcgm_exporter_names_and_units(metric: str, expected: float) -> None:
    [result] = _collector(FakeNvml()).collect()
    assert result.ok and result.target == "gpu0"
    assert _by_metric(result)[metric] == pytest.approx(expected)


def test_samples_carry_gpu_uuid_model_labels_service_host_and_source() -> None:
    fake = FakeNvml([FakeGpu("GPU-aaa"), FakeGpu("GPU-bbb", name="NVIDIA H200")])
    results = _collector(fake).collect()
    assert [r.target for r in results] == ["gpu0", "gpu1"]
    s = results[1].samples[0]
    assert s.labels == {"gpu": "1", "UUID": "GPU-bbb", "modelName": "NVIDIA H200"}
    assert (s.service, s.host, s.source, s.ts) == ("model-server", "gpu-host", "nvml", NOW)


def test_per_process_gpu_memory_is_stored_with_pid_and_unknown_usage_skipped() -> None:
    fake = FakeNvml([FakeGpu("GPU-0", procs=[(4242, 9194 * 1024 * 1024), (4243, None)])])
    [result] = _collector(fake).collect()
    procs = [s for s in result.samples if s.metric == "hopscope_gpu_process_memory_mib"]
    assert [(s.labels["pid"], s.value) for s in procs] == [("4242", 9194.0)]


def test_not_supported_field_is_absent_and_the_rest_is_stored() -> None:
    fake = FakeNvml([FakeGpu("GPU-0", unsupported={"power", "pcie"})])
    c = _collector(fake)
    [result] = c.collect()
    metrics = _by_metric(result)
    assert result.ok
    assert "DCGM_FI_DEV_POWER_USAGE" not in metrics and "DCGM_FI_PROF_PCIE_TX_BYTES" not in metrics
    assert metrics["DCGM_FI_DEV_GPU_UTIL"] == 37.0
    assert all(s.value == s.value for s in result.samples)  # no NaN placeholder either
    calls = fake.gpus[0].calls
    c.collect()
    assert fake.gpus[0].calls < 2 * calls  # unsupported fields are not asked again


def test_sentinel_values_are_never_stored() -> None:
    fake = FakeNvml([FakeGpu("GPU-0", temp=0xFFFFFFFF, pcie_tx_kbs=-1)])
    metrics = _by_metric(_collector(fake).collect()[0])
    assert "DCGM_FI_DEV_GPU_TEMP" not in metrics and "DCGM_FI_PROF_PCIE_TX_BYTES" not in metrics


def test_lost_gpu_is_marked_and_the_others_keep_being_sampled() -> None:
    fake = FakeNvml([FakeGpu("GPU-0"), FakeGpu("GPU-1"), FakeGpu("GPU-2")])
    mono = Clock()
    c = _collector(fake, mono)
    assert all(r.ok for r in c.collect())
    fake.gpus[1].lost = True
    results = {r.target: r for r in c.collect()}
    assert results["gpu0"].ok and results["gpu2"].ok
    assert not results["gpu1"].ok and "lost" in (results["gpu1"].error or "")
    mono.t += 1
    assert [r.target for r in c.collect()] == ["gpu0", "gpu2"]  # marked: not re-reported every second
    mono.t += 61
    assert "gpu1" in [r.target for r in c.collect() if not r.ok]  # reminded once a minute


@pytest.mark.parametrize("error", [NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED])
def test_init_failure_reports_the_reason_and_retries_every_minute(error: int) -> None:
    fake = FakeNvml(init_error=error)
    mono = Clock()
    c = _collector(fake, mono)
    [result] = c.collect()
    assert (
        not result.ok
        and "NVML init failed" in (result.error or "")
        and "retrying every 60 s" in (result.error or "")
    )
    mono.t += 30
    assert c.collect() == [] and fake.inits == 1  # not retried before a minute
    fake.init_error = None
    mono.t += 31
    results = c.collect()
    assert fake.inits == 2 and [r.target for r in results] == ["gpu0"] and results[0].ok


def test_xid_events_become_samples_of_the_gpu_they_hit() -> None:
    fake = FakeNvml([FakeGpu("GPU-0"), FakeGpu("GPU-1")])
    c = _collector(fake)
    c.collect()
    fake.pending_xids = [(1, 79), (0, 48)]
    xid = [r for r in c.collect() if r.target == "xid"][0]
    assert [(s.labels["gpu"], s.value) for s in xid.samples] == [("1", 79.0), ("0", 48.0)]
    assert all(s.metric == "DCGM_FI_DEV_XID_ERRORS" for s in xid.samples)


def test_nvlink_throughput_is_a_rate_between_two_reads_and_absent_on_a_single_gpu() -> None:
    fake = FakeNvml([FakeGpu("GPU-0", nvlink_kib=1000), FakeGpu("GPU-1")])
    mono = Clock()
    c = _collector(fake, mono)
    first = {r.target: _by_metric(r) for r in c.collect()}
    assert "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL" not in first["gpu0"]  # needs two reads
    fake.gpus[0].nvlink_kib = 3000
    mono.t += 2
    second = {r.target: _by_metric(r) for r in c.collect()}
    assert second["gpu0"]["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"] == pytest.approx(2000 * 1024 / 2)
    assert "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL" not in second["gpu1"]


def test_energy_counter_is_read_at_most_once_a_second() -> None:
    fake = FakeNvml()
    mono = Clock()
    c = _collector(fake, mono, energy=True)
    for _ in range(5):
        c.collect()
        mono.t += 0.25
    assert fake.energy_reads == 2  # at t=0 and t=1.0


def test_pcie_bytes_come_from_the_counters_where_supported_without_the_blocking_throughput_call() -> None:
    # The throughput call samples the link ~20 ms per direction: with counters it must not be made
    # (here it would fail: "pcie" is NotSupported on both GPUs).
    fake = FakeNvml(
        [
            FakeGpu("GPU-0", pcie_bytes=(10_000, 50_000), unsupported={"pcie"}),
            FakeGpu("GPU-1", unsupported={"pcie"}),
        ]
    )
    mono = Clock()
    c = _collector(fake, mono)
    first = {r.target: _by_metric(r) for r in c.collect()}
    assert "DCGM_FI_PROF_PCIE_TX_BYTES" not in first["gpu0"]  # a rate needs two reads
    fake.gpus[0].pcie_bytes = (30_000, 90_000)
    mono.t += 2
    second = {r.target: _by_metric(r) for r in c.collect()}
    assert second["gpu0"]["DCGM_FI_PROF_PCIE_TX_BYTES"] == pytest.approx(10_000.0)
    assert second["gpu0"]["DCGM_FI_PROF_PCIE_RX_BYTES"] == pytest.approx(20_000.0)
    # no counters and no throughput: no PCIe samples, and no error
    assert "DCGM_FI_PROF_PCIE_TX_BYTES" not in second["gpu1"]
    assert all(r.ok for r in c.collect())

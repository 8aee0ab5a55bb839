"""A stand-in for the `pynvml` module where no GPU exists (tests, the sampling-cost benchmark).

It answers the calls NvmlCollector makes, with the same error classes and
constants as nvidia-ml-py, and lets a test make a field `NotSupported`, a device
lost, init fail, or an XID event arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0
NVML_PCIE_UTIL_TX_BYTES = 0
NVML_PCIE_UTIL_RX_BYTES = 1
NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX = 138
NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX = 139
NVML_FI_DEV_PCIE_COUNT_TX_BYTES = 197
NVML_FI_DEV_PCIE_COUNT_RX_BYTES = 198
nvmlEventTypeXidCriticalError = 8

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_TIMEOUT: "Timeout",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(_MESSAGES.get(value, f"NVML error {value}"))
        self.value = value


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    util: int = 37
    mem_util: int = 12
    total_mib: int = 81559
    used_mib: int = 1024
    sm_clock: int = 1755
    mem_clock: int = 2619
    temp: int = 41
    power_mw: int = 123_456
    pcie_tx_kbs: int = 2048
    pcie_rx_kbs: int = 4096
    reasons: int = 0x1
    energy_mj: int = 10_000_000
    nvlink_kib: int | None = None  # None: NotSupported (a single GPU)
    pcie_bytes: tuple[int, int] | None = None  # cumulative (TX, RX) counters; None: NotSupported
    procs: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes or None)
    unsupported: set[str] = field(default_factory=set)
    lost: bool = False
    calls: int = 0


class FakeNvml:
    """Module-like object: pass it as `nvml=` to NvmlCollector."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu] | None = None, *, init_error: int | None = None) -> None:
        self.gpus = gpus if gpus is not None else [FakeGpu("GPU-0000")]
        self.init_error = init_error
        self.inits = 0
        self.pending_xids: list[tuple[int, int]] = []  # (gpu index, xid)
        self.energy_reads = 0
        for name, value in globals().items():
            if name.startswith(("NVML_", "nvmlEventType")):
                setattr(self, name, value)

    def _gpu(self, handle: Any, what: str) -> FakeGpu:
        gpu = self.gpus[handle]
        gpu.calls += 1
        if gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if what in gpu.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def nvmlInit(self) -> None:  # noqa: N802
        self.inits += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:  # noqa: N802
        pass

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetUUID(self, h: int) -> str:  # noqa: N802
        return self.gpus[h].uuid

    def nvmlDeviceGetName(self, h: int) -> str:  # noqa: N802
        return self.gpus[h].name

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:  # noqa: N802
        g = self._gpu(h, "util")
        return SimpleNamespace(gpu=g.util, memory=g.mem_util)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:  # noqa: N802
        g = self._gpu(h, "mem")
        mib = 1024 * 1024
        return SimpleNamespace(
            total=g.total_mib * mib, used=g.used_mib * mib, free=(g.total_mib - g.used_mib) * mib
        )

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:  # noqa: N802
        g = self._gpu(h, "sm_clock" if kind == NVML_CLOCK_SM else "mem_clock")
        return g.sm_clock if kind == NVML_CLOCK_SM else g.mem_clock

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:  # noqa: N802
        return self._gpu(h, "temp").temp

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:  # noqa: N802
        return self._gpu(h, "power").power_mw

    def nvmlDeviceGetPcieThroughput(self, h: int, counter: int) -> int:  # noqa: N802
        g = self._gpu(h, "pcie")
        return g.pcie_tx_kbs if counter == NVML_PCIE_UTIL_TX_BYTES else g.pcie_rx_kbs

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:  # noqa: N802
        return self._gpu(h, "reasons").reasons

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:  # noqa: N802
        self.energy_reads += 1
        return self._gpu(h, "energy").energy_mj

    def nvmlDeviceGetFieldValues(self, h: int, fields: list[Any]) -> list[Any]:  # noqa: N802
        g = self._gpu(h, "fields")
        out = []
        for field_id, _scope in fields:
            if field_id in (NVML_FI_DEV_PCIE_COUNT_TX_BYTES, NVML_FI_DEV_PCIE_COUNT_RX_BYTES):
                if g.pcie_bytes is None:
                    out.append(
                        SimpleNamespace(nvmlReturn=NVML_ERROR_NOT_SUPPORTED, value=SimpleNamespace(ullVal=0))
                    )
                else:
                    value = g.pcie_bytes[0 if field_id == NVML_FI_DEV_PCIE_COUNT_TX_BYTES else 1]
                    out.append(SimpleNamespace(nvmlReturn=NVML_SUCCESS, value=SimpleNamespace(ullVal=value)))
            elif g.nvlink_kib is None:
                out.append(
                    SimpleNamespace(nvmlReturn=NVML_ERROR_NOT_SUPPORTED, value=SimpleNamespace(ullVal=0))
                )
            else:
                out.append(
                    SimpleNamespace(nvmlReturn=NVML_SUCCESS, value=SimpleNamespace(ullVal=g.nvlink_kib // 2))
                )
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:  # noqa: N802
        g = self._gpu(h, "procs")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in g.procs]

    def nvmlEventSetCreate(self) -> str:  # noqa: N802
        return "event-set"

    def nvmlDeviceRegisterEvents(self, h: int, types: int, event_set: Any) -> None:  # noqa: N802
        self._gpu(h, "events")

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:  # noqa: N802
        if not self.pending_xids:
            raise NVMLError(NVML_ERROR_TIMEOUT)
        index, xid = self.pending_xids.pop(0)
        return SimpleNamespace(device=index, eventData=xid, eventType=nvmlEventTypeXidCriticalError)

    def nvmlEventSetFree(self, event_set: Any) -> None:  # noqa: N802
        pass

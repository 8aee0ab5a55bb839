"""Local NVIDIA GPUs through NVML (nvidia-ml-py), stored under dcgm-exporter names.

A field NVML does not support is absent (never a sentinel); a device that reports
`GpuIsLost` is marked and the others keep being sampled; an init failure (no
driver, version mismatch) leaves the collector reporting why, and it retries init
every `init_retry_s`.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hopscope.collectors.records import Sample, TargetResult

if TYPE_CHECKING:
    from hopscope.config.collect import NvmlConfig

# This module needs only the standard library and nvidia-ml-py, so scripts/gpu_check.py runs it on GPU
# images that have neither DuckDB nor pydantic.


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


log = logging.getLogger(__name__)

SOURCE = "nvml"
_MIB = 1024 * 1024
_SENTINELS = {0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFF}
_ALL_LINKS = 0xFFFFFFFF


class _Lost(Exception):
    pass


@dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    model: str
    labels: dict[str, str]
    lost: bool = False
    lost_reported_at: float = 0.0
    nvlink_prev: tuple[float, float] | None = None  # (monotonic s, KiB total)
    pcie_prev: tuple[float, float, float] | None = None  # (monotonic s, TX bytes, RX bytes)
    energy_at: float = 0.0
    unsupported: set[str] = field(default_factory=set)


def load_pynvml() -> Any:
    import pynvml  # noqa: PLC0415  (nvidia-ml-py; imported only where the collector runs)

    return pynvml


class NvmlCollector:
    """Samples every GPU once per call; `collect()` -> one TargetResult per GPU."""

    name = "nvml"

    def __init__(
        self,
        cfg: NvmlConfig | Any = None,
        *,
        host: str | None = None,
        nvml: Any = None,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if cfg is None:
            from hopscope.config.collect import NvmlConfig  # noqa: PLC0415  (gpu_check.py runs without pydantic)

            cfg = NvmlConfig()
        self.cfg = cfg
        self.interval_s = self.cfg.interval_s
        self.host = host
        self._nvml = nvml
        self._clock = clock
        self._mono = monotonic
        self._devices: list[_Device] = []
        self._ready = False
        self._next_init = 0.0
        self._events: Any = None
        self.init_error: str | None = None

    @property
    def targets_text(self) -> str:
        if not self._ready:
            return f"not initialised: {self.init_error}" if self.init_error else ""
        return ", ".join(f"gpu{d.index} {d.model}" for d in self._devices) or "no GPUs"

    # -- init ----------------------------------------------------------------------------------

    def init(self) -> str | None:
        """Initialise NVML and enumerate GPUs; returns None, or why it failed."""
        self._next_init = self._mono() + self.cfg.init_retry_s
        try:
            if self._nvml is None:
                self._nvml = load_pynvml()
            n = self._nvml
            n.nvmlInit()
        except Exception as exc:  # ImportError, NVMLError (driver missing, mismatch, ...)
            self.init_error = _reason(exc)
            self._ready = False
            return self.init_error
        try:
            self._devices = [self._open(i) for i in range(n.nvmlDeviceGetCount())]
        except Exception as exc:
            self.init_error = f"cannot enumerate GPUs: {_reason(exc)}"
            self._shutdown()
            return self.init_error
        self._events = self._register_xid()
        self._ready = True
        self.init_error = None
        return None

    def _open(self, index: int) -> _Device:
        n = self._nvml
        handle = n.nvmlDeviceGetHandleByIndex(index)
        uuid = _text(self._field_or(lambda: n.nvmlDeviceGetUUID(handle), f"gpu{index}"))
        model = _text(self._field_or(lambda: n.nvmlDeviceGetName(handle), "unknown"))
        return _Device(index, handle, uuid, model, {"gpu": str(index), "UUID": uuid, "modelName": model})

    def _field_or(self, fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except Exception:
            return default

    def _register_xid(self) -> Any:
        n = self._nvml
        try:
            event_set = n.nvmlEventSetCreate()
        except Exception as exc:
            log.info("NVML events unavailable (no XID errors): %s", _reason(exc))
            return None
        registered = 0
        for d in self._devices:
            try:
                n.nvmlDeviceRegisterEvents(d.handle, n.nvmlEventTypeXidCriticalError, event_set)
                registered += 1
            except Exception as exc:
                log.info("gpu%d: XID events not supported: %s", d.index, _reason(exc))
        return event_set if registered else None

    def _shutdown(self) -> None:
        self._ready = False
        try:
            self._nvml.nvmlShutdown()
        except Exception:
            pass

    def close(self) -> None:
        if self._ready:
            if self._events is not None:
                try:
                    self._nvml.nvmlEventSetFree(self._events)
                except Exception:
                    pass
            self._shutdown()

    # -- collect -------------------------------------------------------------------------------

    def collect(self) -> list[TargetResult]:
        if not self._ready:
            if self._mono() < self._next_init:
                return []
            err = self.init()
            if err is not None:
                return [
                    TargetResult(
                        "nvml",
                        False,
                        error=f"NVML init failed: {err}; retrying every {self.cfg.init_retry_s:g} s",
                    )
                ]
        now = self._clock()
        results: list[TargetResult] = []
        for d in self._devices:
            target = f"gpu{d.index}"
            if d.lost:
                if self._mono() - d.lost_reported_at >= self.cfg.init_retry_s:
                    d.lost_reported_at = self._mono()
                    results.append(
                        TargetResult(
                            target, False, error=f"{target} ({d.uuid}) is lost (NVML GpuIsLost); not sampled"
                        )
                    )
                continue
            try:
                samples = self.sample(d, now)
            except _Lost as exc:
                d.lost = True
                d.lost_reported_at = self._mono()
                results.append(
                    TargetResult(
                        target,
                        False,
                        error=f"{target} ({d.uuid}) is lost: {exc}; the other GPUs are still sampled",
                    )
                )
                continue
            results.append(TargetResult(target, True, tuple(samples)))
        xids = self._xid_samples(now)
        if xids:
            results.append(TargetResult("xid", True, tuple(xids)))
        return results

    def _read(self, d: _Device, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """One NVML call: NotSupported/other errors -> None (field absent); GpuIsLost -> _Lost."""
        if what in d.unsupported:
            return None
        n = self._nvml
        try:
            return fn(d.handle, *args)
        except n.NVMLError as exc:
            code = getattr(exc, "value", None)
            if code == n.NVML_ERROR_GPU_IS_LOST:
                raise _Lost(_reason(exc)) from None
            if code == n.NVML_ERROR_NOT_SUPPORTED:
                d.unsupported.add(what)  # never supported on this device: stop asking
            else:
                log.debug("gpu%d: %s failed: %s", d.index, what, _reason(exc))
            return None

    def sample(self, d: _Device, now: datetime) -> list[Sample]:
        n = self._nvml
        out: list[Sample] = []

        def put(metric: str, value: Any, scale: float = 1.0, labels: dict[str, str] | None = None) -> None:
            if value is None or isinstance(value, bool):
                return
            if isinstance(value, int) and (value in _SENTINELS or value < 0):
                return  # NVML's "not available" markers are not measurements
            out.append(
                Sample(
                    now, metric, float(value) * scale, SOURCE, self.cfg.service, self.host, labels or d.labels
                )
            )

        util = self._read(d, "util", n.nvmlDeviceGetUtilizationRates)
        if util is not None:
            put("DCGM_FI_DEV_GPU_UTIL", util.gpu)
            put("DCGM_FI_DEV_MEM_COPY_UTIL", util.memory)
        mem = self._read(d, "mem", n.nvmlDeviceGetMemoryInfo)
        if mem is not None:
            put("DCGM_FI_DEV_FB_USED", mem.used, 1 / _MIB)
            put("DCGM_FI_DEV_FB_FREE", mem.free, 1 / _MIB)
        put("DCGM_FI_DEV_SM_CLOCK", self._read(d, "sm_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_SM))
        put("DCGM_FI_DEV_MEM_CLOCK", self._read(d, "mem_clock", n.nvmlDeviceGetClockInfo, n.NVML_CLOCK_MEM))
        put("DCGM_FI_DEV_GPU_TEMP", self._read(d, "temp", n.nvmlDeviceGetTemperature, n.NVML_TEMPERATURE_GPU))
        put("DCGM_FI_DEV_POWER_USAGE", self._read(d, "power", n.nvmlDeviceGetPowerUsage), 1 / 1000)  # mW -> W
        self._pcie(d, put)
        reasons_fn = (
            getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or n.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        reasons = self._read(d, "reasons", reasons_fn)
        if reasons is not None and reasons != 0xFFFFFFFFFFFFFFFF:
            out.append(
                Sample(
                    now,
                    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
                    float(reasons),
                    SOURCE,
                    self.cfg.service,
                    self.host,
                    d.labels,
                )
            )
        self._nvlink(d, now, put)
        if self.cfg.energy and self._mono() - d.energy_at >= 1.0:
            # The energy counter costs ~4 ms a read: at most once a second.
            d.energy_at = self._mono()
            put(
                "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                self._read(d, "energy", n.nvmlDeviceGetTotalEnergyConsumption),
            )
        if self.cfg.process_memory:
            procs = self._read(d, "procs", n.nvmlDeviceGetComputeRunningProcesses)
            for p in procs or ():
                used = getattr(p, "usedGpuMemory", None)
                if used is None:
                    continue
                put("hopscope_gpu_process_memory_mib", used, 1 / _MIB, {**d.labels, "pid": str(p.pid)})
        return out

    def _pcie(self, d: _Device, put: Callable[..., None]) -> None:
        """PCIe bytes per second each way. From the cumulative byte counters where the driver has them
        (one field read, microseconds); else nvmlDeviceGetPcieThroughput, which samples the link for
        ~20 ms per direction and blocks the pass meanwhile (42 ms of 43 per pass on an H200)."""
        n = self._nvml
        if "pcie_counters" not in d.unsupported:
            fields = [(n.NVML_FI_DEV_PCIE_COUNT_TX_BYTES, 0), (n.NVML_FI_DEV_PCIE_COUNT_RX_BYTES, 0)]
            values = self._read(d, "pcie_counters", n.nvmlDeviceGetFieldValues, fields)
            if values and all(getattr(v, "nvmlReturn", 1) == n.NVML_SUCCESS for v in values):
                t = self._mono()
                tx, rx = float(values[0].value.ullVal), float(values[1].value.ullVal)
                prev, d.pcie_prev = d.pcie_prev, (t, tx, rx)
                if prev is not None and t > prev[0] and tx >= prev[1] and rx >= prev[2]:
                    put("DCGM_FI_PROF_PCIE_TX_BYTES", (tx - prev[1]) / (t - prev[0]))
                    put("DCGM_FI_PROF_PCIE_RX_BYTES", (rx - prev[2]) / (t - prev[0]))
                return
            d.unsupported.add("pcie_counters")
        put(
            "DCGM_FI_PROF_PCIE_TX_BYTES",
            self._read(d, "pcie_tx", n.nvmlDeviceGetPcieThroughput, n.NVML_PCIE_UTIL_TX_BYTES),
            1024,
        )
        put(
            "DCGM_FI_PROF_PCIE_RX_BYTES",
            self._read(d, "pcie_rx", n.nvmlDeviceGetPcieThroughput, n.NVML_PCIE_UTIL_RX_BYTES),
            1024,
        )

    def _nvlink(self, d: _Device, now: datetime, put: Callable[..., None]) -> None:
        """NVLink data throughput counters (KiB, all links) -> bytes per second between two reads."""
        n = self._nvml
        fields = [
            (n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, _ALL_LINKS),
            (n.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, _ALL_LINKS),
        ]
        values = self._read(d, "nvlink", n.nvmlDeviceGetFieldValues, fields)
        if not values:
            return
        total = 0.0
        for v in values:
            if getattr(v, "nvmlReturn", 1) != n.NVML_SUCCESS:
                d.unsupported.add("nvlink")  # a single GPU answers NotSupported per field
                return
            total += float(v.value.ullVal)
        t = self._mono()
        prev, d.nvlink_prev = d.nvlink_prev, (t, total)
        if prev is not None and t > prev[0] and total >= prev[1]:
            put("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", (total - prev[1]) * 1024 / (t - prev[0]))

    def _xid_samples(self, now: datetime) -> list[Sample]:
        if self._events is None:
            return []
        n = self._nvml
        by_handle = {_handle_key(d.handle): d for d in self._devices}
        out: list[Sample] = []
        for _ in range(64):  # drain what is pending without blocking
            try:
                data = n.nvmlEventSetWait_v2(self._events, 0)
            except n.NVMLError as exc:
                if getattr(exc, "value", None) != n.NVML_ERROR_TIMEOUT:
                    log.debug("NVML event wait failed: %s", _reason(exc))
                break
            d = by_handle.get(_handle_key(data.device))
            labels = d.labels if d is not None else {}
            out.append(
                Sample(
                    now,
                    "DCGM_FI_DEV_XID_ERRORS",
                    float(data.eventData),
                    SOURCE,
                    self.cfg.service,
                    self.host,
                    labels,
                )
            )
        return out


def _handle_key(handle: Any) -> Any:
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return id(handle)


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text

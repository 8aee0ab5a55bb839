"""The demo: a deterministic month of telemetry from a three-hop AI-serving system, with known incidents.

    result = generate(Path("sample_data/scenario.yaml"), Path("var/demo"))
    path = ensure_demo(Path("var/demo"), Path("sample_data/scenario.yaml"))   # only if missing or stale

The scenario (YAML, see ``sample_data/scenario.yaml``) is data: hosts, traffic, latency components,
payload sizes, link speed, GPU figures and a list of events (traffic surges, latency effects on a
component, cache pressure, metric overrides) with their ground truth. The code here is the model
that turns it into the store's tables:

* **Requests.** Poisson arrivals per second at ``base_rps`` x a daily cycle x the traffic of the
  events holding then. Each request gets five latency components (gateway self, gap to the
  feature store, feature-store self, gap to the model server, model-server self), lognormal with a
  straggler tail, plus the model of each cause: a feature-store cache miss adds a penalty; the
  payload to the model server takes ``bytes / link speed`` on the wire and queues for
  ``ms_per_unit * rho / (1 - rho)`` where ``rho`` is the demand on the busiest NIC of the link
  (capped at ``max_utilization``); latency effects of events scale or add to a component, for the
  requests served by the named hosts. Values are rounded to whole microseconds.
* **hop_minutes**: aggregated straight from those values (three edges: ``'' -> gateway``,
  ``gateway -> feature store``, ``gateway -> model server``), each edge in the minute of its own
  client span's start, exactly as :func:`hopscope.rollup.rollup_spans` would from the spans.
* **spans**: every request of the last ``hot_window``, every exemplar trace, and a
  ``sample_rate`` share of requests in each event window and in the equal-length window before it.
  Built from the same values, so rolling up a fully spanned minute gives back its row.
* **samples** every ``sample_step_s`` (dcgm-exporter, node_exporter, blackbox and redis_exporter
  names, ``source='demo'``) derived from the requests actually generated in each step (bytes on
  each NIC, GPU load, cache misses), then changed by the events' ``signals``. Counters are
  cumulative.
* **collector_runs**: one ok row per demo target per minute.
* **History.** Before the simulated days, ``history_days`` of hop_minutes only (the SLOs' 28-day
  windows count them): each minute is a copy of the same minute of the day on a simulated day
  where no event touches it, drawn at random per minute; no exemplars, no samples, no spans.
  Requests of a quiet minute depend only on the time of day, so a copy is as likely as a fresh
  draw, and costs nothing next to simulating the requests.

Random numbers come from ``numpy`` generators seeded with (seed, hour) or (seed, series), so the
same seed and the same ``end`` give the same store; the values do not depend on ``end`` at all,
only the timestamps do. Trace ids are a hash of (seed, request number).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import numpy as np
import pyarrow as pa
import yaml

from hopscope import histogram
from hopscope.catalog import load_catalog
from hopscope.durations import parse_duration, parse_utc
from hopscope.errors import ConfigError, HopscopeError
from hopscope.rollup import WATERMARK_KEY, check_thresholds
from hopscope.schema import COLLECTOR_RUNS, HOP_MINUTES, SAMPLES, SPANS
from hopscope.store import Store, utcnow

DEFAULT_SCENARIO = Path(__file__).resolve().parent.parent / "sample_data" / "scenario.yaml"
TRUTH_FILE = "scenario.json"
SOURCE = "demo"
GENERATOR_VERSION = 2  # bump when the model changes: ensure_demo then regenerates old stores
MAX_AGE = timedelta(hours=24)
COMPONENTS = (
    "gateway_self",
    "gap_feature_store",
    "feature_store_self",
    "gap_model_server",
    "model_server_self",
)
EDGE_ENTRY, EDGE_FS, EDGE_MS = 0, 1, 2
_MAX_YAML_BYTES = 1_000_000
_US_MIN = 60_000_000
_CHUNK_S = 3600
_MAX_MS = 1e5  # a request's component never exceeds 100 s
_HIST_LO = int(histogram.MIN_INDEX)
_HIST_N = int(histogram.bucket_index(_MAX_MS)) - _HIST_LO + 1
_GW_SPLIT = (0.5, 0.2, 0.3)  # gateway self time before, between and after its two calls
_OPS = ("set", "add", "scale", "bits")
_MSS = 1448  # TCP payload per segment
_NONE = np.array(None, dtype=object)  # a null for np.where over text


# ---------------------------------------------------------------------------------- scenario


@dataclass(frozen=True, slots=True)
class Lognormal:
    median: float
    sigma: float


@dataclass(frozen=True, slots=True)
class LatencyEffect:
    """While an event holds: component * scale + add_ms, for requests served by ``hosts`` (all if empty)."""

    scale: float = 1.0
    add_ms: float = 0.0
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SignalChange:
    """While an event holds, change a metric's series that match host/service/labels."""

    metric: str
    op: str  # set | add | scale | bits
    value: float
    host: str | None = None
    service: str | None = None
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    title: str
    start_s: int
    duration_s: int
    ramp_s: int
    traffic: float = 1.0
    latency: Mapping[str, LatencyEffect] = field(default_factory=dict)
    miss_ratio: float | None = None
    penalty_scale: float = 1.0
    error_rate: float = 0.0
    error_service: str | None = None
    signals: tuple[SignalChange, ...] = ()
    expect_breach: bool = True
    hop: str | None = None
    hop_kind: str | None = None
    dimension: str | None = None
    bubbleup: Mapping[str, str] | None = None
    note: str = ""
    slos: tuple[str, ...] = ()  # the SLOs the event must breach (backtests score each SLO on its own)


class CacheModel(TypedDict):
    """The feature store's cache (scenario key ``cache``)."""

    keys_per_request: int
    miss_ratio: float
    memory_max_bytes: float
    memory_used_ratio: float


class NetworkModel(TypedDict):
    """Every host's NIC (scenario key ``network``)."""

    device: str
    speed_bytes: float
    background: float
    max_utilization: float
    retransmit_ratio: float
    retransmit_ratio_saturated: float


class ErrorModel(TypedDict):
    """Background errors (scenario key ``errors``): a rate, split over services, and the gateway's timeout."""

    rate: float
    split: dict[str, float]
    timeout_ms: float


class GpuModel(TypedDict):
    """The model server's GPUs (scenario key ``gpu``)."""

    model_name: str
    uuids: dict[str, str]
    fb_total_mib: float
    fb_model_mib: float
    fb_per_rps_mib: float
    util_per_rps: float
    sm_clock_mhz: float
    idle_clock_mhz: float
    mem_clock_mhz: float
    temp_idle_c: float
    temp_per_util_c: float
    power_idle_w: float
    power_per_util_w: float
    pid: str
    process: str


class CanaryModel(TypedDict):
    """A span attribute telling the canary's requests from the stable ones (scenario key ``spans.canary``)."""

    attribute: str
    stable: str
    canary: str
    share: float


class _Place(TypedDict):
    """Where a series of the demo's samples runs (``_SeriesSet.add``'s keywords)."""

    service: str | None
    host: str | None
    labels: NotRequired[Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class Scenario:
    source: str
    digest: str
    name: str
    seed: int
    days: int
    history_days: int  # quiet days before the simulated ones: request rollups only, resampled
    step_s: int
    route: str
    thresholds_ms: tuple[float, ...]
    exemplars: int
    gateway: str
    feature_store: str
    model_server: str
    gw_host: str
    fs_host: str
    ms_hosts: tuple[str, ...]
    ports: Mapping[str, int]
    region: str
    base_rps: float
    daily_amplitude: float
    peak_s: int
    latency: Mapping[str, Lognormal]
    tail_probability: float
    tail_scale: Lognormal
    cache: CacheModel
    miss_penalty: Lognormal
    payload: Mapping[str, float]
    model_request: Lognormal
    network: NetworkModel
    queue: Mapping[str, tuple[float, float]]
    errors: ErrorModel
    gpu: GpuModel
    hosts: Mapping[str, Mapping[str, float]]
    probe_phases: Mapping[str, float]
    hot_window_s: int
    sample_rate: float
    canary: CanaryModel
    collector_interval_s: int
    events: tuple[Event, ...]

    @property
    def seconds(self) -> int:
        return self.days * 86400

    @property
    def all_hosts(self) -> tuple[str, ...]:
        return (self.gw_host, self.fs_host, *self.ms_hosts)

    def service_of(self, host: str) -> str:
        if host == self.gw_host:
            return self.gateway
        if host == self.fs_host:
            return self.feature_store
        return self.model_server


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """One event of the scenario placed in absolute time."""

    name: str
    title: str
    start: datetime
    end: datetime
    expect_breach: bool
    hop: str | None
    hop_kind: str | None
    dimension: str | None
    bubbleup: Mapping[str, str] | None
    traffic: float
    note: str
    slos: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "expect_breach": self.expect_breach,
            "hop": self.hop,
            "hop_kind": self.hop_kind,
            "dimension": self.dimension,
            "bubbleup": dict(self.bubbleup) if self.bubbleup else None,
            "traffic": self.traffic,
            "note": self.note,
            "slos": list(self.slos),
        }


@dataclass(frozen=True, slots=True)
class DemoResult:
    path: Path
    start: datetime
    end: datetime
    seconds: float
    rows: Mapping[str, int]
    size_bytes: int
    truth: tuple[GroundTruth, ...]
    history_start: datetime  # request rollups only from here to ``start``


class _Doc:
    """Typed reads from the parsed YAML; ConfigError names the file, the key path and the bad value."""

    def __init__(self, source: str, data: object, path: str = "") -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: {path or 'top level'}: expected a mapping, got {data!r}")
        self.source, self.path = source, path
        self.data: dict[object, object] = data

    def _where(self, key: str) -> str:
        return f"{self.source}: {self.path + '.' if self.path else ''}{key}"

    def has(self, key: str) -> bool:
        return key in self.data

    def sub(self, key: str, *, optional: bool = False) -> _Doc:
        if key not in self.data and optional:
            return _Doc(self.source, {}, f"{self.path + '.' if self.path else ''}{key}")
        return _Doc(self.source, self.get(key), f"{self.path + '.' if self.path else ''}{key}")

    def get(self, key: str, default: object = ...) -> object:
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._where(key)}: missing")
            return default
        return self.data[key]

    def num(
        self,
        key: str,
        default: object = ...,
        *,
        lo: float | None = None,
        hi: float | None = None,
        positive: bool = False,
    ) -> float:
        v = self.get(key, default)
        if isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{self._where(key)}: {v!r} is not a number")
        if positive and v <= 0:
            raise ConfigError(f"{self._where(key)}: {v!r} must be > 0")
        if lo is not None and v < lo:
            raise ConfigError(f"{self._where(key)}: {v!r} must be >= {lo}")
        if hi is not None and v > hi:
            raise ConfigError(f"{self._where(key)}: {v!r} must be <= {hi}")
        return float(v)

    def int_(self, key: str, default: object = ..., *, lo: int | None = None) -> int:
        v = self.num(key, default, lo=lo)
        if v != int(v):
            raise ConfigError(f"{self._where(key)}: {v!r} is not a whole number")
        return int(v)

    def text(self, key: str, default: object = ...) -> str:
        v = self.get(key, default)
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{self._where(key)}: {v!r} is not a non-empty string")
        return v

    def opt_text(self, key: str) -> str | None:
        """A string, or None where the key is missing or null."""
        v = self.get(key, None)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{self._where(key)}: {v!r} is not a string")
        return v

    def dist(self, key: str) -> Lognormal:
        d = self.sub(key)
        return Lognormal(d.num("median", positive=True), d.num("sigma", lo=0.0, hi=3.0))

    def duration(self, key: str, default: object = ...) -> int:
        v = self.get(key, default)
        seconds = _parse_duration(v)
        if seconds is None:
            raise ConfigError(f"{self._where(key)}: {v!r} is not a duration (e.g. 90s, 60m, 2h, 1d)")
        return seconds

    def clock(self, key: str, default: object = ...) -> int:
        v = self.get(key, default)
        m = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", str(v))
        if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59 or int(m.group(3) or 0) > 59:
            raise ConfigError(f"{self._where(key)}: {v!r} is not a time of day HH:MM")
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)


def _parse_duration(v: object) -> int | None:
    """Whole seconds of a scenario duration (the one grammar of hopscope.durations; a number is
    seconds, and may be 0 here: no ramp); None where it is not one."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) and v >= 0:
        return int(v)
    try:
        return int(parse_duration(v).total_seconds())
    except ValueError:
        return None


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file; ConfigError names the file, the key and the bad value."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the scenario: {exc}") from exc
    if len(raw) > _MAX_YAML_BYTES:
        raise ConfigError(f"{p}: scenario larger than {_MAX_YAML_BYTES} bytes")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    return parse_scenario(data, str(p), hashlib.sha256(raw).hexdigest())


def parse_scenario(data: object, source: str = "scenario", digest: str = "") -> Scenario:
    doc = _Doc(source, data)
    topo = doc.sub("topology")
    gw, fs, ms = topo.sub("gateway"), topo.sub("feature_store"), topo.sub("model_server")

    def hosts_of(d: _Doc) -> tuple[str, ...]:
        hosts = d.get("hosts")
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
            raise ConfigError(f"{d.source}: {d.path}.hosts: {hosts!r} is not a list of host names")
        return tuple(hosts)

    gw_hosts, fs_hosts, ms_hosts = hosts_of(gw), hosts_of(fs), hosts_of(ms)
    if len(gw_hosts) != 1 or len(fs_hosts) != 1:
        raise ConfigError(
            f"{source}: topology: the gateway and the feature store run on exactly one host each"
        )
    if len(set((*gw_hosts, *fs_hosts, *ms_hosts))) != 2 + len(ms_hosts):
        raise ConfigError(f"{source}: topology: every service needs its own hosts")
    lat = doc.sub("latency")
    latency = {c: lat.dist(c) for c in COMPONENTS}
    tail = lat.sub("model_server_tail")
    cache = doc.sub("cache")
    payload = doc.sub("payload")
    net = doc.sub("network")
    queue_doc = net.sub("queue", optional=True)
    queue: dict[str, tuple[float, float]] = {}
    for comp in queue_doc.data:
        if comp not in ("gap_feature_store", "gap_model_server"):
            raise ConfigError(
                f"{source}: network.queue.{comp}: not a gap component (gap_feature_store, gap_model_server)"
            )
        q = queue_doc.sub(comp)
        queue[comp] = (q.num("ms_per_unit", lo=0.0), q.num("sigma", 0.5, lo=0.0, hi=3.0))
    err = doc.sub("errors")
    split = err.sub("split", optional=True)
    services = (gw.text("service"), fs.text("service"), ms.text("service"))
    for svc in split.data:
        if svc not in services:
            raise ConfigError(
                f"{source}: errors.split.{svc}: not a service of the topology ({', '.join(services)})"
            )
    gpu = doc.sub("gpu")
    uuids = gpu.sub("uuids")
    for h in ms_hosts:
        uuids.text(h)
    hosts_doc = doc.sub("hosts")
    hosts = {}
    for h in (*gw_hosts, *fs_hosts, *ms_hosts):
        hd = hosts_doc.sub(h)
        hosts[h] = {
            k: hd.num(k, lo=0.0) for k in ("memory_bytes", "memory_used_bytes", "cpu_base", "cpu_per_rps")
        }
    probes = doc.sub("probes")
    phases_doc = probes.sub("phases")
    phases = {
        ph: phases_doc.num(ph, lo=0.0) for ph in ("resolve", "connect", "tls", "processing", "transfer")
    }
    spans = doc.sub("spans")
    canary = spans.sub("canary", optional=True)
    days = doc.int_("days", lo=1)
    step = doc.int_("sample_step_s", 30, lo=1)
    if 86400 % step:
        raise ConfigError(f"{source}: sample_step_s: {step} must divide a day")
    coll = doc.sub("collectors", optional=True)
    interval = coll.int_("interval_s", 60, lo=1)
    if interval % step:  # a run's rows add up whole sample steps of requests
        raise ConfigError(
            f"{source}: collectors.interval_s: {interval} must be a multiple of sample_step_s ({step})"
        )
    ev_list = doc.get("events", [])
    if not isinstance(ev_list, list):
        raise ConfigError(f"{source}: events: expected a list, got {ev_list!r}")
    all_ms_hosts = set(ms_hosts) | set(gw_hosts) | set(fs_hosts)
    events = tuple(
        _parse_event(_Doc(source, e, f"events[{i}]"), days, all_ms_hosts) for i, e in enumerate(ev_list)
    )
    names = [e.name for e in events]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: events: names must be unique, got {names}")
    history_days = doc.int_("history_days", 0, lo=0)
    if history_days:
        busy = np.flatnonzero(_quiet_minutes(days, events).sum(axis=0) == 0)
        if len(busy):
            raise ConfigError(
                f"{source}: history_days: the history repeats quiet minutes of the simulated days, but "
                f"{busy[0] // 60:02d}:{busy[0] % 60:02d} has an event on every day"
            )
    known_metrics = set(load_catalog())
    for i, ev in enumerate(events):
        if ev.error_service is not None and ev.error_service not in services:
            raise ConfigError(
                f"{source}: events[{i}].errors.service: {ev.error_service!r} is not one of {', '.join(services)}"
            )
        for j, sig in enumerate(ev.signals):
            if sig.metric not in known_metrics:
                raise ConfigError(
                    f"{source}: events[{i}].signals[{j}].metric: {sig.metric!r} is not in hopscope/catalog.yaml"
                )
    return Scenario(
        source=source,
        digest=digest,
        name=doc.text("name"),
        seed=doc.int_("seed", lo=0),
        days=days,
        history_days=history_days,
        step_s=step,
        route=doc.text("route"),
        thresholds_ms=_thresholds(doc),
        exemplars=doc.int_("exemplars", 3, lo=0),
        gateway=services[0],
        feature_store=services[1],
        model_server=services[2],
        gw_host=gw_hosts[0],
        fs_host=fs_hosts[0],
        ms_hosts=ms_hosts,
        ports={
            services[0]: gw.int_("port", 8080),
            services[1]: fs.int_("port", 6566),
            services[2]: ms.int_("port", 8000),
        },
        region=topo.text("region", "eu-west-1"),
        base_rps=doc.sub("traffic").num("base_rps", positive=True, hi=5000),
        daily_amplitude=doc.sub("traffic").num("daily_amplitude", 0.0, lo=0.0, hi=0.95),
        peak_s=doc.sub("traffic").clock("peak_at", "15:00"),
        latency=latency,
        tail_probability=tail.num("probability", lo=0.0, hi=1.0),
        tail_scale=tail.dist("scale"),
        cache={
            "keys_per_request": cache.int_("keys_per_request", lo=1),
            "miss_ratio": cache.num("miss_ratio", lo=0.0, hi=1.0),
            "memory_max_bytes": cache.num("memory_max_bytes", positive=True),
            "memory_used_ratio": cache.num("memory_used_ratio", lo=0.0, hi=1.0),
        },
        miss_penalty=cache.dist("miss_penalty"),
        payload={
            k: payload.num(k, lo=0.0)
            for k in (
                "entry_request",
                "entry_response",
                "features_request",
                "features_response",
                "model_response",
            )
        },
        model_request=payload.dist("model_request"),
        network={
            "device": net.text("device", "eth0"),
            "speed_bytes": net.num("speed_bytes", positive=True),
            "background": net.num("background_bytes_per_s", 0.0, lo=0.0),
            "max_utilization": net.num("max_utilization", 0.985, lo=0.5, hi=0.999),
            "retransmit_ratio": net.num("retransmit_ratio", 1e-4, lo=0.0, hi=1.0),
            "retransmit_ratio_saturated": net.num("retransmit_ratio_saturated", 0.03, lo=0.0, hi=1.0),
        },
        queue=queue,
        errors={
            "rate": err.num("rate", 0.0, lo=0.0, hi=1.0),
            "split": {str(s): split.num(str(s), lo=0.0) for s in split.data},
            "timeout_ms": err.num("timeout_ms", 1500, positive=True),
        },
        gpu={
            "model_name": gpu.text("model_name"),
            "uuids": {h: uuids.text(h) for h in ms_hosts},
            "fb_total_mib": gpu.num("fb_total_mib", lo=0.0),
            "fb_model_mib": gpu.num("fb_model_mib", lo=0.0),
            "fb_per_rps_mib": gpu.num("fb_per_rps_mib", lo=0.0),
            "util_per_rps": gpu.num("util_per_rps", lo=0.0),
            "sm_clock_mhz": gpu.num("sm_clock_mhz", lo=0.0),
            "idle_clock_mhz": gpu.num("idle_clock_mhz", lo=0.0),
            "mem_clock_mhz": gpu.num("mem_clock_mhz", lo=0.0),
            "temp_idle_c": gpu.num("temp_idle_c", lo=0.0),
            "temp_per_util_c": gpu.num("temp_per_util_c", lo=0.0),
            "power_idle_w": gpu.num("power_idle_w", lo=0.0),
            "power_per_util_w": gpu.num("power_per_util_w", lo=0.0),
            "pid": str(gpu.sub("process", optional=True).get("pid", "4217")),
            "process": str(gpu.sub("process", optional=True).get("name", "tritonserver")),
        },
        hosts=hosts,
        probe_phases=phases,
        hot_window_s=spans.duration("hot_window", "60m"),
        sample_rate=spans.num("sample_rate", 0.02, lo=0.0, hi=1.0),
        canary={
            "attribute": canary.text("attribute", "model.version"),
            "stable": canary.text("stable", "v1"),
            "canary": canary.text("canary", "v2"),
            "share": canary.num("share", 0.0, lo=0.0, hi=1.0),
        },
        collector_interval_s=interval,
        events=events,
    )


def _thresholds(doc: _Doc) -> tuple[float, ...]:
    raw = doc.get("thresholds_ms")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{doc.source}: thresholds_ms: {raw!r} is not a list of milliseconds")
    try:
        return tuple(check_thresholds(raw))
    except ConfigError as exc:
        raise ConfigError(f"{doc.source}: thresholds_ms: {str(exc).split(': ', 1)[1]}") from None


def _parse_event(d: _Doc, days: int, hosts: set[str]) -> Event:
    name = d.text("name")
    start = d.int_("day", lo=0) * 86400 + d.clock("at")
    duration = d.duration("duration")
    ramp = d.duration("ramp", 0)
    if duration <= 0:
        raise ConfigError(f"{d.source}: {d.path}.duration: must be > 0")
    if start + duration > days * 86400:
        raise ConfigError(f"{d.source}: {d.path}: event {name!r} ends after the scenario's {days} days")
    if 2 * ramp > duration:
        raise ConfigError(f"{d.source}: {d.path}.ramp: {ramp}s is more than half the duration ({duration}s)")
    lat = d.sub("latency", optional=True)
    latency = {}
    for comp in lat.data:
        if comp not in COMPONENTS:
            raise ConfigError(
                f"{d.source}: {d.path}.latency.{comp}: unknown component (components: {', '.join(COMPONENTS)})"
            )
        e = lat.sub(comp)
        eh = e.get("hosts", [])
        if not isinstance(eh, list) or any(h not in hosts for h in eh):
            raise ConfigError(
                f"{d.source}: {d.path}.latency.{comp}.hosts: {eh!r} names a host the topology lacks"
            )
        latency[comp] = LatencyEffect(e.num("scale", 1.0, lo=0.0), e.num("add_ms", 0.0), tuple(eh))
    cache = d.sub("cache", optional=True)
    errors = d.sub("errors", optional=True)
    signals = []
    raw_signals = d.get("signals", [])
    if not isinstance(raw_signals, list):
        raise ConfigError(f"{d.source}: {d.path}.signals: expected a list")
    for i, s in enumerate(raw_signals):
        sd = _Doc(d.source, s, f"{d.path}.signals[{i}]")
        ops = [op for op in _OPS if sd.has(op)]
        if len(ops) != 1:
            raise ConfigError(f"{d.source}: {sd.path}: give exactly one of {', '.join(_OPS)}")
        labels = tuple(
            sorted(
                (str(k), str(v)) for k, v in sd.data.items() if k not in ("metric", "host", "service", *_OPS)
            )
        )
        host = sd.get("host", None)
        if host is not None and host not in hosts:
            raise ConfigError(f"{d.source}: {sd.path}.host: {host!r} is not a host of the topology")
        signals.append(
            SignalChange(sd.text("metric"), ops[0], sd.num(ops[0]), host, sd.opt_text("service"), labels)
        )
    truth = d.sub("truth", optional=True)
    bubble = truth.get("bubbleup", None)
    if bubble is not None:
        bd = truth.sub("bubbleup")
        bubble = {"attribute": bd.text("attribute"), "value": bd.text("value")}
    hop_kind = truth.get("hop_kind", None)
    if hop_kind not in (None, "edge", "service"):
        raise ConfigError(f"{d.source}: {d.path}.truth.hop_kind: {hop_kind!r} is not 'edge' or 'service'")
    dimension = truth.get("dimension", None)
    if dimension not in (None, "compute", "bandwidth", "memory"):
        raise ConfigError(
            f"{d.source}: {d.path}.truth.dimension: {dimension!r} is not compute, bandwidth or memory"
        )
    slos = truth.get("slos", [])
    if not isinstance(slos, list) or not all(isinstance(x, str) and x for x in slos):
        raise ConfigError(f"{d.source}: {d.path}.truth.slos: {slos!r} is not a list of SLO names")
    return Event(
        name=name,
        title=str(d.get("title", name)),
        start_s=start,
        duration_s=duration,
        ramp_s=ramp,
        traffic=d.num("traffic", 1.0, positive=True),
        latency=latency,
        miss_ratio=cache.num("miss_ratio", lo=0.0, hi=1.0) if cache.has("miss_ratio") else None,
        penalty_scale=cache.num("penalty_scale", 1.0, lo=0.0),
        error_rate=errors.num("rate", 0.0, lo=0.0, hi=1.0),
        error_service=errors.opt_text("service"),
        signals=tuple(signals),
        expect_breach=bool(truth.get("expect_breach", True)),
        hop=truth.opt_text("hop"),
        hop_kind=hop_kind,
        dimension=dimension,
        bubbleup=bubble,
        note=str(truth.get("note", "")),
        slos=tuple(slos),
    )


# ------------------------------------------------------------------------------- the model


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def trace_words(seed: int, request_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two 64-bit halves of each request's trace id (a hash of seed and request number)."""
    with np.errstate(over="ignore"):
        hi = _splitmix64(request_ids.astype(np.uint64) ^ _splitmix64(np.array([seed], np.uint64))[0])
        lo = _splitmix64(hi ^ np.uint64(0x5DEECE66D))
    return hi, lo


def trace_hex(hi: np.ndarray, lo: np.ndarray) -> list[str]:
    return [f"{int(a):016x}{int(b):016x}" for a, b in zip(hi, lo, strict=True)]


def _event_weight(ev: Event, t: np.ndarray) -> np.ndarray:
    """0..1 strength of an event at times t (seconds from the start): ramps in and out inside its window."""
    inside = (t >= ev.start_s) & (t < ev.start_s + ev.duration_s)
    if ev.ramp_s <= 0:
        return inside.astype(np.float64)
    w = np.minimum((t - ev.start_s) / ev.ramp_s, (ev.start_s + ev.duration_s - t) / ev.ramp_s)
    return np.where(inside, np.clip(w, 0.0, 1.0), 0.0)


@dataclass
class _Timeline:
    """Per-second state of the system: rate, event weights, link load, cache and error rates."""

    rate: np.ndarray
    weights: dict[str, np.ndarray]
    rho: dict[str, np.ndarray]  # gap component -> link utilisation demand (uncapped)
    host_rho: dict[str, np.ndarray]
    miss_ratio: np.ndarray
    penalty_scale: np.ndarray
    error_rate: dict[str, np.ndarray]


def _timeline(sc: Scenario) -> _Timeline:
    t = np.arange(sc.seconds, dtype=np.float64) + 0.5
    daily = 1.0 + sc.daily_amplitude * np.cos(2 * np.pi * (t - sc.peak_s) / 86400.0)
    rate = sc.base_rps * daily
    weights = {ev.name: _event_weight(ev, t) for ev in sc.events}
    miss = np.full(sc.seconds, sc.cache["miss_ratio"])
    pscale = np.ones(sc.seconds)
    err = {s: np.full(sc.seconds, sc.errors["rate"] * share) for s, share in sc.errors["split"].items()}
    for ev in sc.events:
        w = weights[ev.name]
        rate = rate * (1.0 + w * (ev.traffic - 1.0))
        if ev.miss_ratio is not None:
            miss = miss + w * (ev.miss_ratio - sc.cache["miss_ratio"])
            pscale = pscale * (1.0 + w * (ev.penalty_scale - 1.0))
        if ev.error_rate:
            svc = ev.error_service or sc.model_server
            err[svc] = err.get(svc, np.zeros(sc.seconds)) + w * ev.error_rate
    # Demand on each NIC (bytes/s), from the expected rate: it drives the queueing delay.
    p, r = sc.payload, len(sc.ms_hosts)
    model_req = sc.model_request.median * math.exp(sc.model_request.sigma**2 / 2)
    bg = sc.network["background"]
    speed = sc.network["speed_bytes"]
    tx = {sc.gw_host: rate * (p["entry_response"] + p["features_request"] + model_req) + bg}
    rx = {sc.gw_host: rate * (p["entry_request"] + p["features_response"] + p["model_response"]) + bg}
    tx[sc.fs_host], rx[sc.fs_host] = rate * p["features_response"] + bg, rate * p["features_request"] + bg
    for h in sc.ms_hosts:
        tx[h], rx[h] = rate / r * p["model_response"] + bg, rate / r * model_req + bg
    host_rho = {h: np.maximum(tx[h], rx[h]) / speed for h in tx}
    rho = {
        "gap_feature_store": np.maximum(tx[sc.gw_host], rx[sc.fs_host]) / speed,
        "gap_model_server": np.maximum.reduce([tx[sc.gw_host], *(rx[h] for h in sc.ms_hosts)]) / speed,
    }
    return _Timeline(rate, weights, rho, host_rho, np.clip(miss, 0, 1), pscale, err)


def _queue_factor(sc: Scenario, rho: np.ndarray) -> np.ndarray:
    r: np.ndarray = np.minimum(rho, sc.network["max_utilization"])
    out: np.ndarray = r / (1.0 - r)
    return out


@dataclass
class _Requests:
    """One hour of requests: every per-request value the tables are built from."""

    rid: np.ndarray  # uint64 request number (hour << 32 | index)
    t_us: np.ndarray  # int64 microseconds from the scenario start
    replica: np.ndarray
    payload: np.ndarray
    miss: np.ndarray
    canary: np.ndarray
    tier: np.ndarray
    platform: np.ndarray
    pre: np.ndarray
    mid: np.ndarray
    post: np.ndarray
    gfs: np.ndarray
    fss: np.ndarray
    gms: np.ndarray
    mss: np.ndarray
    err_fs: np.ndarray
    err_ms: np.ndarray
    timeout: np.ndarray

    def take(self, idx: np.ndarray) -> _Requests:
        return _Requests(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    @staticmethod
    def concat(parts: list[_Requests]) -> _Requests:
        return _Requests(
            **{k: np.concatenate([getattr(p, k) for p in parts]) for k in _Requests.__dataclass_fields__}
        )

    def __len__(self) -> int:
        return len(self.rid)


def _us(ms: np.ndarray) -> np.ndarray:
    return np.rint(ms * 1000.0).astype(np.int64)


def _round_ms(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x, 3), 0.001, _MAX_MS)


def _edges(q: _Requests) -> list[dict[str, np.ndarray]]:
    """Per edge: start (us from the scenario start) and the values hop_minutes sums, as the spans give them."""
    fs_client = q.gfs + q.fss
    ms_client = q.gms + q.mss
    e2e = q.pre + fs_client + q.mid + ms_client + q.post
    fs_start = q.t_us + _us(q.pre)
    ms_start = fs_start + _us(fs_client) + _us(q.mid)
    err_ms = q.err_ms | q.timeout
    zeros = np.zeros(len(q))
    return [
        {
            "start": q.t_us,
            "dur": e2e,
            "client": zeros,
            "server": e2e,
            "gap": zeros,
            "self": q.pre + q.mid + q.post,
            "err": err_ms | q.err_fs,
        },
        {
            "start": fs_start,
            "dur": fs_client,
            "client": fs_client,
            "server": q.fss,
            "gap": np.maximum(fs_client - q.fss, 0.0),
            "self": q.fss,
            "err": q.err_fs,
        },
        {
            "start": ms_start,
            "dur": ms_client,
            "client": ms_client,
            "server": q.mss,
            "gap": np.maximum(ms_client - q.mss, 0.0),
            "self": q.mss,
            "err": err_ms,
        },
    ]


def _hour(sc: Scenario, tl: _Timeline, hour: int) -> _Requests:
    """Draw the requests of one hour (seeded by (seed, hour): independent of every other hour)."""
    rng = np.random.default_rng(np.random.SeedSequence([sc.seed, 1, hour]))
    secs = np.arange(hour * _CHUNK_S, min((hour + 1) * _CHUNK_S, sc.seconds))
    counts = rng.poisson(tl.rate[secs])
    sec = np.repeat(secs, counts)
    n = len(sec)
    t_us = sec.astype(np.int64) * 1_000_000 + rng.integers(0, 1_000_000, n)
    z = rng.standard_normal((8, n))
    u = rng.random((6, n))

    def ln(d: Lognormal, row: int) -> np.ndarray:
        out: np.ndarray = d.median * np.exp(d.sigma * z[row])
        return out

    lat = sc.latency
    replica = rng.integers(0, len(sc.ms_hosts), n).astype(np.int8)
    payload = sc.model_request.median * np.exp(sc.model_request.sigma * z[5])
    miss = u[0] < tl.miss_ratio[sec]
    comp = {
        "gateway_self": ln(lat["gateway_self"], 0),
        "gap_feature_store": ln(lat["gap_feature_store"], 1),
        "feature_store_self": ln(lat["feature_store_self"], 2)
        + miss * ln(sc.miss_penalty, 6) * tl.penalty_scale[sec],
        "gap_model_server": ln(lat["gap_model_server"], 3) + payload / sc.network["speed_bytes"] * 1000.0,
        "model_server_self": ln(lat["model_server_self"], 4)
        * np.where(
            u[1] < sc.tail_probability, sc.tail_scale.median * np.exp(sc.tail_scale.sigma * z[7]), 1.0
        ),
    }
    noise = np.exp(0.5 * rng.standard_normal((2, n)) - 0.125)  # mean-one lognormal jitter of queueing
    for i, (c, (per_unit, sigma)) in enumerate(sorted(sc.queue.items())):
        jitter = noise[i] ** (sigma / 0.5) if sigma else 1.0
        comp[c] = comp[c] + per_unit * _queue_factor(sc, tl.rho[c][sec]) * jitter
    # host index of each component's server: 0 = gateway host, 1 = feature-store host, 2.. = replicas
    hosts = np.asarray(sc.all_hosts, dtype=object)
    replica_host = replica.astype(np.int64) + 2
    host_of: dict[str, int | np.ndarray] = {
        "gateway_self": 0,
        "gap_feature_store": 1,
        "feature_store_self": 1,
        "gap_model_server": replica_host,
        "model_server_self": replica_host,
    }
    for ev in sc.events:
        w_all = tl.weights[ev.name][sec]
        if not ev.latency or not w_all.any():
            continue
        for c, eff in ev.latency.items():
            w = w_all
            if eff.hosts:
                w = w_all * np.isin(hosts, eff.hosts)[host_of[c]]
            comp[c] = comp[c] * (1.0 + w * (eff.scale - 1.0)) + w * eff.add_ms
    gw = comp["gateway_self"]
    pre, mid = _round_ms(gw * _GW_SPLIT[0]), _round_ms(gw * _GW_SPLIT[1])
    post = _round_ms(gw * _GW_SPLIT[2])
    err_u = u[2]
    ms_rate = tl.error_rate[sc.model_server][sec] if sc.model_server in tl.error_rate else np.zeros(n)
    fs_rate = tl.error_rate[sc.feature_store][sec] if sc.feature_store in tl.error_rate else np.zeros(n)
    gfs, fss = _round_ms(comp["gap_feature_store"]), _round_ms(comp["feature_store_self"])
    gms, mss = _round_ms(comp["gap_model_server"]), _round_ms(comp["model_server_self"])
    return _Requests(
        rid=(np.uint64(hour) << np.uint64(32)) | np.arange(n, dtype=np.uint64),
        t_us=t_us,
        replica=replica,
        payload=np.round(payload),
        miss=miss,
        canary=u[3] < sc.canary["share"],
        tier=(u[4] < 0.22).astype(np.int8),
        platform=np.minimum((u[5] * 3).astype(np.int8), 2),
        pre=pre,
        mid=mid,
        post=post,
        gfs=gfs,
        fss=fss,
        gms=gms,
        mss=mss,
        err_fs=(err_u >= ms_rate) & (err_u < ms_rate + fs_rate),
        err_ms=err_u < ms_rate,
        timeout=(gms + mss) > sc.errors["timeout_ms"],
    )


def _top_k_per_segment(values: np.ndarray, seg: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of each run of equal, sorted ``seg`` (ties: first index)."""
    if len(values) == 0 or k <= 0:
        return np.empty(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], seg[1:] != seg[:-1]]))
    seg_no = np.cumsum(np.concatenate([[True], seg[1:] != seg[:-1]])) - 1
    v = values.astype(np.float64).copy()
    out = []
    for _ in range(k):
        mx = np.maximum.reduceat(v, starts)
        hit = np.flatnonzero((v == mx[seg_no]) & np.isfinite(v))
        if len(hit) == 0:
            break
        first = hit[np.concatenate([[True], seg_no[hit][1:] != seg_no[hit][:-1]])]
        out.append(first)
        v[first] = -np.inf
    return np.sort(np.concatenate(out)) if out else np.empty(0, np.int64)


class _Accumulator:
    """Dense per-(edge, minute) sums for hop_minutes, and exemplar candidates."""

    def __init__(self, minutes: int, thresholds: tuple[float, ...]) -> None:
        self.m = minutes
        self.t = np.asarray(thresholds)
        shape = (3, minutes)
        self.count = np.zeros(shape, np.int64)
        self.errors = np.zeros(shape, np.int64)
        self.sums = {k: np.zeros(shape) for k in ("dur", "client", "server", "gap", "self")}
        self.max = np.zeros(shape)
        self.good = np.zeros((3, minutes, len(thresholds)), np.int64)
        self.hist = np.zeros((3, minutes, _HIST_N), np.int32)
        self.cand: list[tuple[np.ndarray, ...]] = []  # (edge, minute, dur, rid)

    def add(self, q: _Requests, edges: list[dict[str, np.ndarray]], k: int) -> np.ndarray:
        """Add one hour; returns the local indices of requests that may be exemplars."""
        entry_minute = q.t_us // _US_MIN
        cand_idx = []
        nt = len(self.t)
        for e, ed in enumerate(edges):
            minute = ed["start"] // _US_MIN
            ok = minute < self.m
            every = bool(ok.all())

            def sel(a: np.ndarray, ok: np.ndarray = ok, every: bool = every) -> np.ndarray:
                return a if every else a[ok]

            m = sel(minute)
            if len(m) == 0:
                continue
            lo = int(m.min())
            size = int(m.max()) - lo + 1
            local = m - lo
            sl = slice(lo, lo + size)
            self.count[e, sl] += np.bincount(local, minlength=size)
            self.errors[e, sl] += np.bincount(
                local, weights=sel(ed["err"]).astype(np.float64), minlength=size
            ).astype(np.int64)
            dur = sel(ed["dur"])
            for key in self.sums:
                self.sums[key][e, sl] += np.bincount(local, weights=sel(ed[key]), minlength=size)
            np.maximum.at(self.max[e], m, dur)
            # good counts: dur <= t[i] for every i >= the first threshold at or above dur
            first = np.searchsorted(self.t, dur, side="left")
            per = np.bincount(local * (nt + 1) + first, minlength=size * (nt + 1)).reshape(size, nt + 1)
            self.good[e, sl] += np.cumsum(per, axis=1)[:, :nt]
            b = np.clip(histogram.bucket_index(dur) - _HIST_LO, 0, _HIST_N - 1)
            self.hist[e, sl] += (
                np.bincount(local * _HIST_N + b, minlength=size * _HIST_N)
                .reshape(size, _HIST_N)
                .astype(np.int32)
            )
            # exemplar candidates: top k per entry minute among requests whose edge stays in that
            # minute, plus every request whose edge spills into the next minute
            spill = minute != entry_minute
            v = np.where(spill | ~ok, -np.inf, ed["dur"])
            idx = np.union1d(_top_k_per_segment(v, entry_minute, k), np.flatnonzero(spill & ok))
            self.cand.append((np.full(len(idx), e, np.int8), minute[idx], ed["dur"][idx], q.rid[idx]))
            cand_idx.append(idx)
        return np.unique(np.concatenate(cand_idx)) if cand_idx else np.empty(0, np.int64)

    def exemplars(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Final (edge, minute, rid) of the k slowest requests per edge and minute, slowest first."""
        if not self.cand or k <= 0:
            return np.empty(0, np.int8), np.empty(0, np.int64), np.empty(0, np.uint64)
        e, m, d, r = (np.concatenate([c[i] for c in self.cand]) for i in range(4))
        order = np.lexsort((r, -d, m, e))
        e, m, r = e[order], m[order], r[order]
        key = e.astype(np.int64) * (self.m + 1) + m
        first = np.searchsorted(key, key, side="left")
        keep = (np.arange(len(key)) - first) < k
        return e[keep], m[keep], r[keep]

    def take(self, minutes: np.ndarray) -> _Accumulator:
        """The sums of the given minutes, in that order, without exemplar candidates."""
        out = _Accumulator(0, tuple(self.t))
        out.m = len(minutes)
        out.count, out.errors = self.count[:, minutes], self.errors[:, minutes]
        out.sums = {k: v[:, minutes] for k, v in self.sums.items()}
        out.max, out.good, out.hist = self.max[:, minutes], self.good[:, minutes], self.hist[:, minutes]
        return out


def _quiet_minutes(days: int, events: Iterable[Event]) -> np.ndarray:
    """(days, 1440) booleans: minutes of the simulated days that no event touches (nor the minute
    after one, where its requests' calls spill)."""
    quiet = np.ones(days * 1440, dtype=bool)
    for ev in events:
        quiet[ev.start_s // 60 : (ev.start_s + ev.duration_s + 59) // 60 + 1] = False
    return quiet.reshape(days, 1440)


def _history_sources(sc: Scenario) -> np.ndarray:
    """For each minute of the history (``history_days`` x 1440), the simulated minute it repeats:
    the same minute of the day on a day drawn at random among those where it is quiet.

    The model has no memory between hours and its rate depends only on the time of day, so a quiet
    minute of the simulated days is a fair draw of the same minute of any quiet day. Drawn per
    minute, the history does not replay whole hours of the simulated days.
    """
    quiet = _quiet_minutes(sc.days, sc.events)
    n_quiet = quiet.sum(axis=0)
    rng = np.random.default_rng(np.random.SeedSequence([sc.seed, 4]))
    quiet_first = np.argsort(~quiet, axis=0, kind="stable")  # per minute of the day: its quiet days first
    pick = (rng.random((sc.history_days, 1440)) * n_quiet).astype(np.int64)
    day = quiet_first[pick, np.arange(1440)]
    out: np.ndarray = (day * 1440 + np.arange(1440)).ravel()
    return out


# ---------------------------------------------------------------------------------- tables


def _binary(words: list[np.ndarray]) -> pa.Array:
    """Big-endian bytes of several uint64 words per row, as an Arrow binary array."""
    n = len(words[0])
    raw = np.empty((n, 8 * len(words)), np.uint8)
    for i, w in enumerate(words):
        raw[:, 8 * i : 8 * (i + 1)] = np.ascontiguousarray(w, dtype=">u8").view(np.uint8).reshape(n, 8)
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(8 * len(words)), n, [None, pa.py_buffer(raw.tobytes())]
    )
    return fixed.cast(pa.binary())


def _map(keys: list[str], values: list[np.ndarray], n: int) -> pa.Array:
    """A MAP(VARCHAR, VARCHAR) column with the same keys on every row."""
    k = len(keys)
    offsets = (
        pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32)) if k else pa.array(np.zeros(n + 1, np.int32))
    )
    key_arr = pa.array(np.tile(np.asarray(keys, dtype=object), n), pa.string())
    vals = np.empty(n * k, dtype=object)
    for i, v in enumerate(values):
        vals[i::k] = v
    return pa.MapArray.from_arrays(offsets, key_arr, pa.array(vals, pa.string()))


def _const(value: object, n: int, typ: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, typ), n) if value is not None else pa.nulls(n, typ)


def _size_bucket(b: np.ndarray) -> np.ndarray:
    labels = np.array(["<4MB", "4-8MB", "8-16MB", ">=16MB"], dtype=object)
    return labels[np.searchsorted([4e6, 8e6, 16e6], b, side="right")]


def _spans(sc: Scenario, q: _Requests, start: datetime, kept_by: np.ndarray) -> pa.Table:
    """Five spans per request: gateway server, client+server for the feature store and the model server."""
    n = len(q)
    if n == 0:
        return SPANS.arrow_schema.empty_table()
    hi, lo = trace_words(sc.seed, q.rid)
    tid = _binary([hi, lo])
    with np.errstate(over="ignore"):
        sids = [_splitmix64(lo + np.uint64(k)) | np.uint64(1) for k in range(5)]
    base_us = int((start - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    fs_client = q.gfs + q.fss
    ms_client = q.gms + q.mss
    e2e = q.pre + fs_client + q.mid + ms_client + q.post
    t0 = base_us + q.t_us
    fs_c_start = t0 + _us(q.pre)
    fs_s_start = fs_c_start + _us(q.gfs) // 2
    ms_c_start = fs_c_start + _us(fs_client) + _us(q.mid)
    ms_s_start = ms_c_start + _us(q.gms) * 9 // 10  # the payload goes out before the server starts
    err_ms = q.err_ms | q.timeout
    gw_err = err_ms | q.err_fs
    ms_host = np.asarray(sc.ms_hosts, dtype=object)[q.replica]
    version = np.where(q.canary, sc.canary["canary"], sc.canary["stable"]).astype(object)
    size = _size_bucket(q.payload)
    cache = np.where(q.miss, "miss", "hit").astype(object)
    tier = np.array(["free", "premium"], dtype=object)[q.tier]
    platform = np.array(["web", "ios", "android"], dtype=object)[q.platform]
    region = np.full(n, sc.region, dtype=object)
    kept = kept_by.astype(object)
    ms_route = "/v1/models/{model}:predict"
    gw_status = np.where(q.timeout, 504, np.where(gw_err, 500, 200)).astype(np.int32)
    msg_ms = np.where(
        q.err_ms,
        "inference failed: CUDA error",
        np.where(q.timeout, "client disconnected: gateway deadline exceeded", _NONE),
    )
    msg_fs = np.where(q.err_fs, "feature lookup failed: backend unavailable", _NONE)

    def part(**cols: Any) -> pa.Table:
        arrays = []
        for c in SPANS.columns:
            v = cols.get(c.name)
            if v is None:
                arrays.append(pa.nulls(n, c.arrow))
            elif isinstance(v, pa.Array):
                arrays.append(v.cast(c.arrow) if v.type != c.arrow else v)
            elif isinstance(v, np.ndarray):
                arrays.append(
                    pa.array(v, c.arrow)
                    if c.arrow != pa.timestamp("us")
                    else pa.array(v.astype(np.int64), pa.int64()).cast(c.arrow)
                )
            else:
                arrays.append(_const(v, n, c.arrow))
        return pa.Table.from_arrays(arrays, schema=SPANS.arrow_schema)

    rows = [
        part(
            trace_id=tid,
            span_id=_binary([sids[0]]),
            service=sc.gateway,
            name=f"POST {sc.route}",
            kind=2,
            start_time=t0,
            duration_ms=e2e,
            status_code=np.where(gw_err, 2, 0).astype(np.int8),
            status_message=np.where(q.timeout, "upstream timeout", np.where(gw_err, "upstream error", _NONE)),
            http_route=sc.route,
            http_method="POST",
            http_status_code=gw_status,
            server_address="api.recommend.example",
            host_name=sc.gw_host,
            attributes=_map(
                ["cloud.region", "user.tier", "client.platform", "hopscope.kept_by"],
                [region, tier, platform, kept],
                n,
            ),
        ),
        part(
            trace_id=tid,
            span_id=_binary([sids[1]]),
            parent_span_id=_binary([sids[0]]),
            service=sc.gateway,
            name="POST /v1/features",
            kind=3,
            start_time=fs_c_start,
            duration_ms=fs_client,
            status_code=np.where(q.err_fs, 2, 0).astype(np.int8),
            http_method="POST",
            http_status_code=np.where(q.err_fs, 503, 200).astype(np.int32),
            server_address=sc.feature_store,
            peer_service=sc.feature_store,
            host_name=sc.gw_host,
            attributes=_map(["cloud.region"], [region], n),
        ),
        part(
            trace_id=tid,
            span_id=_binary([sids[2]]),
            parent_span_id=_binary([sids[1]]),
            service=sc.feature_store,
            name="POST /v1/features",
            kind=2,
            start_time=fs_s_start,
            duration_ms=q.fss,
            status_code=np.where(q.err_fs, 2, 0).astype(np.int8),
            status_message=msg_fs,
            http_route="/v1/features",
            http_method="POST",
            http_status_code=np.where(q.err_fs, 503, 200).astype(np.int32),
            server_address=sc.fs_host,
            host_name=sc.fs_host,
            attributes=_map(
                ["cloud.region", "feature_store.cache", "feature_store.keys"],
                [region, cache, np.full(n, str(sc.cache["keys_per_request"]), dtype=object)],
                n,
            ),
        ),
        part(
            trace_id=tid,
            span_id=_binary([sids[3]]),
            parent_span_id=_binary([sids[0]]),
            service=sc.gateway,
            name="POST /v1/models/recsys:predict",
            kind=3,
            start_time=ms_c_start,
            duration_ms=ms_client,
            status_code=np.where(err_ms, 2, 0).astype(np.int8),
            http_method="POST",
            http_status_code=np.where(q.timeout, 504, np.where(q.err_ms, 500, 200)).astype(np.int32),
            server_address=sc.model_server,
            peer_service=sc.model_server,
            host_name=sc.gw_host,
            attributes=_map(["cloud.region", "payload.size_bucket"], [region, size], n),
        ),
        part(
            trace_id=tid,
            span_id=_binary([sids[4]]),
            parent_span_id=_binary([sids[3]]),
            service=sc.model_server,
            name="POST /v1/models/recsys:predict",
            kind=2,
            start_time=ms_s_start,
            duration_ms=q.mss,
            status_code=np.where(err_ms, 2, 0).astype(np.int8),
            status_message=msg_ms,
            http_route=ms_route,
            http_method="POST",
            http_status_code=np.where(q.err_ms, 500, 200).astype(np.int32),
            server_address=ms_host,
            host_name=ms_host,
            attributes=_map(
                ["cloud.region", sc.canary["attribute"], "payload.size_bucket", "gpu.uuid"],
                [
                    region,
                    version,
                    size,
                    np.asarray([sc.gpu["uuids"][h] for h in sc.ms_hosts], dtype=object)[q.replica],
                ],
                n,
            ),
        ),
    ]
    return pa.concat_tables(rows)


def _hop_minutes(
    sc: Scenario, acc: _Accumulator, start: datetime, ex: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> pa.Table:
    edges = [("", sc.gateway), (sc.gateway, sc.feature_store), (sc.gateway, sc.model_server)]
    # rows sorted like rollup_spans: minute, client, server
    e_order = sorted(range(3), key=lambda e: edges[e])
    mm, ee = np.nonzero(acc.count[e_order].T)  # minute-major
    e_idx = np.asarray(e_order)[ee]
    n = len(mm)
    start_us = int((start - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    hist = acc.hist[e_idx, mm]
    hr, hb = np.nonzero(hist)
    h_off = np.concatenate([[0], np.cumsum(np.bincount(hr, minlength=n))]).astype(np.int32)
    nt = len(sc.thresholds_ms)
    g_off = np.arange(0, (n + 1) * nt, nt, dtype=np.int32) if nt else np.zeros(n + 1, np.int32)
    # exemplars: map (edge, minute) -> row
    row_of = np.full((3, acc.m), -1, np.int64)
    row_of[e_idx, mm] = np.arange(n)
    ex_e, ex_m, ex_r = ex
    ex_row = row_of[ex_e.astype(np.int64), ex_m]
    okx = ex_row >= 0
    order = np.argsort(ex_row[okx], kind="stable")
    hi, lo = trace_words(sc.seed, ex_r[okx][order])
    x_off = np.concatenate([[0], np.cumsum(np.bincount(ex_row[okx], minlength=n))]).astype(np.int32)
    out = {
        "minute": pa.array(start_us + mm.astype(np.int64) * _US_MIN, pa.int64()).cast(pa.timestamp("us")),
        "client": pa.array(np.asarray([edges[e][0] for e in range(3)], dtype=object)[e_idx], pa.string()),
        "server": pa.array(np.asarray([edges[e][1] for e in range(3)], dtype=object)[e_idx], pa.string()),
        "route": _const(sc.route, n, pa.string()),
        "count": pa.array(acc.count[e_idx, mm]),
        "errors": pa.array(acc.errors[e_idx, mm]),
        "duration_ms_sum": pa.array(acc.sums["dur"][e_idx, mm]),
        "duration_ms_max": pa.array(acc.max[e_idx, mm]),
        "client_ms_sum": pa.array(acc.sums["client"][e_idx, mm]),
        "server_ms_sum": pa.array(acc.sums["server"][e_idx, mm]),
        "gap_ms_sum": pa.array(acc.sums["gap"][e_idx, mm]),
        "self_ms_sum": pa.array(acc.sums["self"][e_idx, mm]),
        "skewed": pa.array(np.zeros(n, np.int64)),
        "hist_idx": pa.ListArray.from_arrays(pa.array(h_off), pa.array((hb + _HIST_LO).astype(np.int32))),
        "hist_cnt": pa.ListArray.from_arrays(pa.array(h_off), pa.array(hist[hr, hb].astype(np.int64))),
        "good_le_ms": pa.ListArray.from_arrays(
            pa.array(g_off), pa.array(np.tile(np.asarray(sc.thresholds_ms, np.float64), n))
        ),
        "good_cnt": pa.ListArray.from_arrays(
            pa.array(g_off), pa.array(acc.good[e_idx, mm].ravel().astype(np.int64))
        ),
        "exemplars": pa.ListArray.from_arrays(pa.array(x_off), pa.array(trace_hex(hi, lo), pa.string())),
    }
    return pa.Table.from_arrays([out[c] for c in HOP_MINUTES.column_names], schema=HOP_MINUTES.arrow_schema)


# ---------------------------------------------------------------------------------- samples


@dataclass
class _StepLoad:
    """What the requests actually did in each sample step (bytes, counts), per replica where it matters."""

    requests: np.ndarray
    misses: np.ndarray
    errors: np.ndarray
    replica_requests: np.ndarray  # (replicas, steps)
    replica_bytes: np.ndarray

    @staticmethod
    def zeros(steps: int, replicas: int) -> _StepLoad:
        return _StepLoad(
            np.zeros(steps),
            np.zeros(steps),
            np.zeros(steps),
            np.zeros((replicas, steps)),
            np.zeros((replicas, steps)),
        )

    def add(self, sc: Scenario, q: _Requests) -> None:
        step = (q.t_us // (1_000_000 * sc.step_s)).astype(np.int64)
        n = len(self.requests)
        self.requests += np.bincount(step, minlength=n)[:n]
        self.misses += np.bincount(step, weights=q.miss, minlength=n)[:n]
        self.errors += np.bincount(step, weights=q.err_ms | q.err_fs | q.timeout, minlength=n)[:n]
        for r in range(len(sc.ms_hosts)):
            mine = q.replica == r
            self.replica_requests[r] += np.bincount(step[mine], minlength=n)[:n]
            self.replica_bytes[r] += np.bincount(step[mine], weights=q.payload[mine], minlength=n)[:n]


class _SeriesSet:
    """Builds the samples table one series at a time, applying the events' signal changes."""

    def __init__(self, sc: Scenario, tl: _Timeline, start: datetime) -> None:
        self.sc = sc
        self.steps = sc.seconds // sc.step_s
        step_sec = np.arange(self.steps) * sc.step_s
        self.weights = {ev.name: tl.weights[ev.name][step_sec] for ev in sc.events}
        start_us = int((start - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
        self.ts_us = start_us + step_sec.astype(np.int64) * 1_000_000
        catalog = load_catalog()
        self.counters = set(catalog.counters())
        self.series: list[tuple[str, str | None, str | None, dict[str, str], np.ndarray]] = []

    def rng(self, *key: str) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence([self.sc.seed, 2, zlib.crc32("|".join(key).encode())])
        )

    def noise(self, sd: float, *key: str) -> np.ndarray:
        return self.rng(*key).normal(0.0, sd, self.steps)

    def add(
        self,
        metric: str,
        values: np.ndarray,
        *,
        service: str | None,
        host: str | None,
        labels: Mapping[str, str] | None = None,
        start_value: float = 0.0,
    ) -> np.ndarray:
        """Add a series; counters get per-step increments and are stored cumulative. Returns the stored values."""
        labels = dict(labels or {})
        v = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.steps,)).copy()
        for ev in self.sc.events:
            w = self.weights[ev.name]
            for s in ev.signals:
                if s.metric != metric or (s.host and s.host != host) or (s.service and s.service != service):
                    continue
                if any(labels.get(k) != val for k, val in s.labels):
                    continue
                if s.op == "set":
                    v = v + w * (s.value - v)
                elif s.op == "add":
                    v = v + w * s.value
                elif s.op == "scale":
                    v = v * (1.0 + w * (s.value - 1.0))
                else:
                    v = np.where(w > 0, (v.astype(np.int64) | int(s.value)).astype(np.float64), v)
        if metric in self.counters or metric.endswith("_total"):
            v = start_value + np.cumsum(np.maximum(v, 0.0))
        self.series.append((metric, service, host, labels, v))
        return v

    def table(self, lo: int, hi: int) -> pa.Table:
        """The rows of steps [lo, hi), series by series (good compression, zone maps per metric)."""
        n = hi - lo
        parts = []
        ts = pa.array(self.ts_us[lo:hi], pa.int64()).cast(pa.timestamp("us"))
        for metric, service, host, labels, v in self.series:
            parts.append(
                pa.Table.from_arrays(
                    [
                        ts,
                        _const(metric, n, pa.string()),
                        pa.array(v[lo:hi]),
                        _const(SOURCE, n, pa.string()),
                        _const(service, n, pa.string()),
                        _const(host, n, pa.string()),
                        _map(list(labels), [np.full(n, x, dtype=object) for x in labels.values()], n),
                    ],
                    schema=SAMPLES.arrow_schema,
                )
            )
        return pa.concat_tables(parts)


def _samples(sc: Scenario, tl: _Timeline, load: _StepLoad, start: datetime) -> _SeriesSet:
    ss = _SeriesSet(sc, tl, start)
    step = float(sc.step_s)
    steps = ss.steps
    sec = np.arange(steps) * sc.step_s
    p, net, gpu = sc.payload, sc.network, sc.gpu
    speed, bg = net["speed_bytes"], net["background"]
    cap = speed * net["max_utilization"] * step
    rps = load.requests / step
    # ---- GPUs
    for r, h in enumerate(sc.ms_hosts):
        lab = {"gpu": "0", "UUID": gpu["uuids"][h], "modelName": gpu["model_name"]}
        rr = load.replica_requests[r] / step
        kw: _Place = {"service": sc.model_server, "host": h, "labels": lab}
        util = ss.add(
            "DCGM_FI_DEV_GPU_UTIL",
            np.clip(np.round(gpu["util_per_rps"] * rr + ss.noise(1.5, h, "util")), 0, 100),
            **kw,
        )
        ss.add("DCGM_FI_PROF_SM_ACTIVE", np.clip(util / 100 * 0.82 + ss.noise(0.01, h, "sma"), 0, 1), **kw)
        ss.add("DCGM_FI_PROF_SM_OCCUPANCY", np.clip(util / 100 * 0.41 + ss.noise(0.01, h, "smo"), 0, 1), **kw)
        ss.add("DCGM_FI_DEV_SM_CLOCK", np.where(util < 1, gpu["idle_clock_mhz"], gpu["sm_clock_mhz"]), **kw)
        ss.add("DCGM_FI_DEV_MEM_CLOCK", np.full(steps, gpu["mem_clock_mhz"]), **kw)
        ss.add("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", np.where(util < 1, 1.0, 0.0), **kw)
        ss.add(
            "DCGM_FI_DEV_GPU_TEMP",
            np.round(gpu["temp_idle_c"] + gpu["temp_per_util_c"] * util + ss.noise(0.6, h, "temp")),
            **kw,
        )
        ss.add(
            "DCGM_FI_DEV_POWER_USAGE",
            np.round(gpu["power_idle_w"] + gpu["power_per_util_w"] * util + ss.noise(6, h, "pw"), 1),
            **kw,
        )
        ss.add("DCGM_FI_DEV_XID_ERRORS", np.zeros(steps), **kw)
        ss.add(
            "DCGM_FI_DEV_MEM_COPY_UTIL", np.clip(np.round(util * 0.3 + ss.noise(1, h, "mc")), 0, 100), **kw
        )
        used = ss.add(
            "DCGM_FI_DEV_FB_USED",
            np.round(np.minimum(gpu["fb_model_mib"] + gpu["fb_per_rps_mib"] * rr, gpu["fb_total_mib"] - 600)),
            **kw,
        )
        ss.add("DCGM_FI_DEV_FB_FREE", gpu["fb_total_mib"] - 571 - used, **kw)
        ss.add("DCGM_FI_PROF_PCIE_RX_BYTES", np.round(load.replica_bytes[r] / step), **kw)
        ss.add("DCGM_FI_PROF_PCIE_TX_BYTES", np.round(rr * p["model_response"]), **kw)
        ss.add(
            "hopscope_gpu_process_memory_mib",
            used - 612,
            service=sc.model_server,
            host=h,
            labels={**lab, "pid": gpu["pid"], "process": gpu["process"]},
        )
    # ---- NICs: bytes each host sent/received in each step, capped at the link speed
    n_req = load.requests
    tx = {
        sc.gw_host: n_req * (p["entry_response"] + p["features_request"]) + load.replica_bytes.sum(axis=0),
        sc.fs_host: n_req * p["features_response"],
    }
    rx = {
        sc.gw_host: n_req * (p["entry_request"] + p["features_response"] + p["model_response"]),
        sc.fs_host: n_req * p["features_request"],
    }
    for r, h in enumerate(sc.ms_hosts):
        tx[h] = load.replica_requests[r] * p["model_response"]
        rx[h] = load.replica_bytes[r]
    dev = {"device": net["device"]}
    for h in sc.all_hosts:
        svc = sc.service_of(h)
        t_b = np.minimum(tx[h] + bg * step * (1 + 0.1 * ss.noise(1, h, "bgt")), cap)
        r_b = np.minimum(rx[h] + bg * step * (1 + 0.1 * ss.noise(1, h, "bgr")), cap)
        rho = np.maximum(t_b, r_b) / (speed * step)
        t_p, r_p = t_b / _MSS + r_b / _MSS / 2, r_b / _MSS + t_b / _MSS / 2  # segments + ACKs
        sat = np.clip((rho - 0.9) / 0.08, 0, 1)
        kw2: _Place = {"service": svc, "host": h, "labels": dev}
        seed_v = float(zlib.crc32(h.encode()) % 10_000) * 1e8
        ss.add("node_network_transmit_bytes_total", t_b, start_value=seed_v * 3, **kw2)
        ss.add("node_network_receive_bytes_total", r_b, start_value=seed_v * 2, **kw2)
        ss.add("node_network_transmit_packets_total", np.round(t_p), start_value=round(seed_v / 500), **kw2)
        ss.add("node_network_receive_packets_total", np.round(r_p), start_value=round(seed_v / 700), **kw2)
        ss.add("node_network_transmit_drop_total", np.round(t_p * 2e-3 * sat), **kw2)
        ss.add("node_network_receive_drop_total", np.round(r_p * 5e-4 * sat), **kw2)
        ss.add("node_network_transmit_errs_total", np.zeros(steps), **kw2)
        ss.add("node_network_receive_errs_total", np.zeros(steps), **kw2)
        ss.add("node_network_speed_bytes", np.full(steps, speed), **kw2)
        ratio = net["retransmit_ratio"] + (
            net["retransmit_ratio_saturated"] - net["retransmit_ratio"]
        ) * np.clip((rho - 0.85) / 0.15, 0, 1)
        ss.add(
            "node_netstat_Tcp_RetransSegs",
            np.round(t_b / _MSS * ratio),
            service=svc,
            host=h,
            start_value=round(seed_v / 1e6),
        )
        # host CPU and memory
        hc = sc.hosts[h]
        host_rps = load.replica_requests[sc.ms_hosts.index(h)] / step if h in sc.ms_hosts else rps
        ss.add(
            "node_cpu_utilization_ratio",
            np.clip(hc["cpu_base"] + hc["cpu_per_rps"] * host_rps + ss.noise(0.01, h, "cpu"), 0, 1),
            service=svc,
            host=h,
        )
        ss.add("node_memory_MemTotal_bytes", np.full(steps, hc["memory_bytes"]), service=svc, host=h)
        extra = 0.0
        if h == sc.fs_host:
            extra = sc.cache["memory_max_bytes"] * sc.cache["memory_used_ratio"]
        avail = hc["memory_bytes"] - hc["memory_used_bytes"] - extra + ss.noise(4e7, h, "mem")
        ss.add("node_memory_MemAvailable_bytes", np.round(avail), service=svc, host=h)
    # ---- Redis (feature store)
    day = 2 * np.pi * (sec - sc.peak_s) / 86400.0
    mx = sc.cache["memory_max_bytes"]
    kw3: _Place = {"service": sc.feature_store, "host": sc.fs_host}
    ss.add("redis_memory_max_bytes", np.full(steps, mx), **kw3)
    used_r = ss.add(
        "redis_memory_used_bytes",
        np.round(mx * (sc.cache["memory_used_ratio"] + 0.015 * np.cos(day)) + ss.noise(2e6, "redis")),
        **kw3,
    )
    keys = sc.cache["keys_per_request"]
    missed_keys = load.misses * 3
    ss.add("redis_keyspace_misses_total", missed_keys, start_value=1_250_000, **kw3)
    ss.add("redis_keyspace_hits_total", n_req * keys - missed_keys, start_value=9.8e8, **kw3)
    full = np.clip((used_r / mx - 0.97) / 0.02, 0, 1)
    ss.add(
        "redis_evicted_keys_total",
        np.round(0.02 * step + missed_keys * 0.9 * full),
        start_value=48_211,
        **kw3,
    )
    # ---- probes from the gateway host, one target per server replica
    qf = {c: _queue_factor(sc, tl.rho[c][sec]) * per for c, (per, _s) in sc.queue.items()}
    targets = [(sc.gateway, sc.gw_host, None), (sc.feature_store, sc.fs_host, "gap_feature_store")]
    targets += [(sc.model_server, h, "gap_model_server") for h in sc.ms_hosts]
    for svc, h, gap in targets:
        target = f"http://{h}:{sc.ports[svc]}/healthz"
        delay = qf.get(gap, np.zeros(steps)) / 1000.0 if gap else np.zeros(steps)
        ph = sc.probe_phases
        extra_by_phase = {"resolve": 0.0, "connect": 0.15, "tls": 0.1, "processing": 0.0, "transfer": 0.5}
        for phase, base in ph.items():
            jitter = np.exp(0.15 * ss.noise(1, h, phase))
            ss.add(
                "probe_http_duration_seconds",
                base * jitter + extra_by_phase[phase] * delay,
                service=svc,
                host=h,
                labels={"phase": phase, "target": target},
            )
        ss.add("probe_success", np.ones(steps), service=svc, host=h, labels={"target": target})
        ss.add(
            "probe_http_status_code", np.full(steps, 200.0), service=svc, host=h, labels={"target": target}
        )
    return ss


def _collector_runs(sc: Scenario, start: datetime, ss: _SeriesSet, load: _StepLoad) -> pa.Table:
    """One ok run per demo target per interval: rows = the samples (or spans) it delivered."""
    per_target: dict[str, int] = {}
    for metric, _svc, host, labels, _v in ss.series:
        if metric.startswith(("DCGM", "hopscope_gpu")):
            t = f"dcgm://{host}:9400"
        elif metric.startswith("probe_"):
            t = labels.get("target", "")
        elif metric.startswith("redis_"):
            t = f"redis://{host}:9121"
        else:
            t = f"node://{host}:9100"
        per_target[t] = per_target.get(t, 0) + 1
    interval = sc.collector_interval_s
    n = sc.seconds // interval
    ts = np.arange(n, dtype=np.int64) * interval
    per_interval = interval / sc.step_s
    spans_per = (
        np.add.reduceat(load.requests, np.arange(0, len(load.requests), max(1, interval // sc.step_s)))[:n]
        * 5
    )
    rng = np.random.default_rng(np.random.SeedSequence([sc.seed, 3]))
    start_us = int((start - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    parts = []
    targets = sorted(per_target.items()) + [("otlp://0.0.0.0:4318", -1)]
    for target, series in targets:
        rows = spans_per if series < 0 else np.full(n, round(series * per_interval))
        dur = np.round(rng.lognormal(np.log(12 if series >= 0 else 4), 0.4, n), 3)
        parts.append(
            pa.Table.from_arrays(
                [
                    pa.array(
                        start_us + (ts + 1 + (zlib.crc32(target.encode()) % 20)) * 1_000_000, pa.int64()
                    ).cast(pa.timestamp("us")),
                    _const(SOURCE, n, pa.string()),
                    _const(target, n, pa.string()),
                    _const(True, n, pa.bool_()),
                    pa.array(np.asarray(rows, dtype=np.int64)),
                    pa.nulls(n, pa.string()),
                    pa.array(dur),
                ],
                schema=COLLECTOR_RUNS.arrow_schema,
            )
        )
    return pa.concat_tables(parts)


# ------------------------------------------------------------------------------- generation


def default_end(now: datetime | None = None) -> datetime:
    """Now (naive UTC) floored to the hour: the default end of the demo week."""
    return (now or utcnow()).replace(minute=0, second=0, microsecond=0, tzinfo=None)


def ground_truth(sc: Scenario, start: datetime) -> tuple[GroundTruth, ...]:
    return tuple(
        GroundTruth(
            name=ev.name,
            title=ev.title,
            start=start + timedelta(seconds=ev.start_s),
            end=start + timedelta(seconds=ev.start_s + ev.duration_s),
            expect_breach=ev.expect_breach,
            hop=ev.hop,
            hop_kind=ev.hop_kind,
            dimension=ev.dimension,
            bubbleup=ev.bubbleup,
            traffic=ev.traffic,
            note=ev.note,
            slos=ev.slos,
        )
        for ev in sorted(sc.events, key=lambda e: e.start_s)
    )


def truth_document(sc: Scenario, start: datetime, end: datetime) -> dict[str, Any]:
    """What scenario.json holds: where the store came from and every event in absolute time."""
    return {
        "scenario": sc.name,
        "scenario_file": str(Path(sc.source).resolve()),
        "generator_version": GENERATOR_VERSION,
        "scenario_sha256": sc.digest,
        "seed": sc.seed,
        "history_start": (start - timedelta(days=sc.history_days)).isoformat(),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "route": sc.route,
        "thresholds_ms": list(sc.thresholds_ms),
        "slo": {"service": sc.gateway, "route": sc.route, "threshold_ms": 200.0, "objective": 0.99},
        "events": [t.to_json() for t in ground_truth(sc, start)],
    }


def _history(sc: Scenario, acc: _Accumulator, start: datetime) -> list[pa.Table]:
    """hop_minutes of the ``history_days`` before ``start``, one table a day, resampled from the quiet
    minutes of the simulated days (no exemplars: no spans are kept that far back)."""
    sources = _history_sources(sc)
    none = (np.empty(0, np.int8), np.empty(0, np.int64), np.empty(0, np.uint64))
    first = start - timedelta(days=sc.history_days)
    return [
        _hop_minutes(sc, acc.take(sources[d * 1440 : (d + 1) * 1440]), first + timedelta(days=d), none)
        for d in range(sc.history_days)
    ]


def _keep_mask(sc: Scenario, q: _Requests, windows: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """(hot, sampled): requests of the hot window, and the sampled share of event and baseline windows."""
    t_s = q.t_us // 1_000_000
    hot = t_s >= sc.seconds - sc.hot_window_s
    hi, _lo = trace_words(sc.seed, q.rid)
    u = (hi >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    inside = np.zeros(len(q), dtype=bool)
    for a, b in windows:
        inside |= (t_s >= a) & (t_s < b)
    return hot, inside & (u < sc.sample_rate)


def generate(
    scenario: Path | str,
    store_path: Path | str,
    *,
    end: datetime | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> DemoResult:
    """Generate the scenario's store at ``store_path`` (replacing what is there) and its scenario.json.

    The store is built beside the target and moved into place when complete, so a failure leaves
    the previous store as it was.
    """
    t_start = time.monotonic()
    sc = load_scenario(scenario)
    end = default_end(end) if end is None else end.replace(tzinfo=None)
    start = end - timedelta(days=sc.days)
    target = Path(store_path)
    tmp = target.with_name(f".{target.name}.building")
    if tmp.exists():
        shutil.rmtree(tmp)
    report = progress or (lambda _stage, _fraction: None)
    cpu0 = time.process_time()
    try:
        rows = _build(sc, start, tmp, report)
        doc = truth_document(sc, start, end)
        doc["generation"] = {
            "seconds": round(time.monotonic() - t_start, 2),
            "cpu_seconds": round(time.process_time() - cpu0, 2),
            "size_bytes": sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()),
            "rows": rows,
        }
        (tmp / TRUTH_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    report("done", 1.0)
    return DemoResult(
        target,
        start,
        end,
        time.monotonic() - t_start,
        rows,
        size,
        ground_truth(sc, start),
        start - timedelta(days=sc.history_days),
    )


def _build(sc: Scenario, start: datetime, path: Path, report: Callable[[str, float], None]) -> dict[str, int]:
    report("timeline", 0.0)
    tl = _timeline(sc)
    minutes = sc.seconds // 60
    acc = _Accumulator(minutes, sc.thresholds_ms)
    load = _StepLoad.zeros(sc.seconds // sc.step_s, len(sc.ms_hosts))
    windows = [(max(0, ev.start_s - ev.duration_s), ev.start_s + ev.duration_s) for ev in sc.events]
    kept: list[_Requests] = []
    kept_kind: list[np.ndarray] = []
    hours = math.ceil(sc.seconds / _CHUNK_S)
    for hour in range(hours):
        q = _hour(sc, tl, hour)
        edges = _edges(q)
        cand = acc.add(q, edges, sc.exemplars)
        load.add(sc, q)
        hot, sampled = _keep_mask(sc, q, windows)
        is_cand = np.zeros(len(q), dtype=bool)
        is_cand[cand] = True
        keep = hot | sampled | is_cand
        kind = np.where(hot, "hot", np.where(sampled, "sample", "exemplar"))
        kept.append(q.take(np.flatnonzero(keep)))
        kept_kind.append(kind[keep])
        if hour % 8 == 0:
            report("requests", hour / hours)
    report("hop_minutes", 0.0)
    ex = acc.exemplars(sc.exemplars)
    hop = pa.concat_tables([*_history(sc, acc, start), _hop_minutes(sc, acc, start, ex)])
    # spans: hot, sampled, and the final exemplars (candidates that lost are dropped)
    pool = _Requests.concat(kept)
    kinds = np.concatenate(kept_kind)
    winners = np.isin(pool.rid, ex[2])
    keep = (kinds != "exemplar") | winners
    pool, kinds = pool.take(np.flatnonzero(keep)), kinds[keep]
    order = np.argsort(pool.t_us, kind="stable")
    pool, kinds = pool.take(order), kinds[order]
    report("samples", 0.0)
    ss = _samples(sc, tl, load, start)
    runs = _collector_runs(sc, start, ss, load)
    report("writing", 0.0)
    counts = {"hop_minutes": 0, "samples": 0, "spans": 0, "collector_runs": 0}
    with Store(path) as store:
        counts["hop_minutes"] = store.append("hop_minutes", hop)
        steps_per_day = 86400 // sc.step_s
        day_us = 86_400_000_000
        for d in range(sc.days):
            counts["samples"] += store.append("samples", ss.table(d * steps_per_day, (d + 1) * steps_per_day))
            sel = np.flatnonzero((pool.t_us >= d * day_us) & (pool.t_us < (d + 1) * day_us))
            if len(sel):
                counts["spans"] += store.append("spans", _spans(sc, pool.take(sel), start, kinds[sel]))
            report("writing", (d + 1) / sc.days)
        counts["collector_runs"] = store.append("collector_runs", runs)
        # The rollup job starts after the generated minutes: it must never rewrite them from the
        # sampled spans.
        end = start + timedelta(days=sc.days)
        state = {WATERMARK_KEY: end.isoformat(), "demo.end": end.isoformat(), "demo.scenario": sc.name}
        store.replace(
            "state",
            "key IN (?, ?, ?)",
            list(state),
            pa.table(
                {
                    "key": list(state),
                    "value": list(state.values()),
                    "updated": pa.array([utcnow()] * 3, pa.timestamp("us")),
                }
            ),
        )
    return counts


def read_truth(store_path: Path | str) -> dict[str, Any]:
    """The scenario.json written next to a demo store."""
    p = Path(store_path) / TRUTH_FILE
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HopscopeError(f"{p}: cannot read the demo's ground truth: {exc}") from exc
    if not isinstance(doc, dict) or "end" not in doc:
        raise HopscopeError(f"{p}: not a demo ground-truth file (no 'end')")
    return doc


def ensure_demo(
    store_path: Path | str,
    scenario: Path | str = DEFAULT_SCENARIO,
    *,
    now: datetime | None = None,
    max_age: timedelta = MAX_AGE,
    progress: Callable[[str, float], None] | None = None,
) -> Path:
    """Generate the demo store unless one from this scenario exists whose end is under ``max_age`` old."""
    path = Path(store_path)
    if (path / "catalog.sqlite").exists() and (path / TRUTH_FILE).exists():
        try:
            doc = read_truth(path)
            fresh = (now or utcnow()) - parse_utc(doc["end"]) <= max_age
            digest = hashlib.sha256(Path(scenario).read_bytes()).hexdigest()
            if (
                fresh
                and doc.get("scenario_sha256") == digest
                and doc.get("generator_version") == GENERATOR_VERSION
            ):
                return path
        except (HopscopeError, OSError, ValueError, TypeError):
            pass  # unreadable: generate it again
    generate(scenario, path, end=default_end(now), progress=progress)
    return path


def summary(result: DemoResult) -> Iterable[str]:
    """Lines for the CLI to print after a generation."""
    yield f"demo store: {result.path} ({result.size_bytes / 1e6:.1f} MB, {result.seconds:.1f} s)"
    if result.history_start < result.start:
        yield f"request rollups only: {result.history_start:%Y-%m-%d %H:%M} – {result.start:%Y-%m-%d %H:%M} UTC"
    yield f"data: {result.start:%Y-%m-%d %H:%M} – {result.end:%Y-%m-%d %H:%M} UTC"
    for table, n in result.rows.items():
        yield f"  {table}: {n:,} rows"
    for t in result.truth:
        what = f"{t.hop} ({t.hop_kind}, {t.dimension})" if t.expect_breach else "no breach expected"
        yield f"  {t.start:%a %H:%M}–{t.end:%H:%M} {t.name}: {what}"

"""Configuration of `hopscope collect`: the `[collect]` table of hopscope.toml.

Every model forbids unknown keys so a typo is an error that names the key, and
an empty `[collect]` table gives a working daemon: the OTLP receiver on
127.0.0.1:4318 (HTTP) and :4317 (gRPC), NVML at 1 s where a driver answers,
host network from /proc every 10 s, no probes and no Prometheus.
"""

from __future__ import annotations

import ipaddress
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from hopscope.durations import parse_duration
from hopscope.errors import ConfigError
from hopscope.redact import SECRET_QUERY_KEYS, redact

PRESETS = ("node_network", "blackbox", "dcgm", "spanmetrics", "servicegraph")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # 0.0.0.0 is not loopback; a host name may resolve beyond this machine


class TlsConfig(_Model):
    """TLS of the OTLP receiver, HTTP and gRPC alike (the OpenTelemetry Collector's `tls` keys)."""

    cert_file: Path | None = Field(default=None, description="PEM server certificate (chain); with key_file")
    key_file: Path | None = Field(default=None, description="PEM private key of cert_file, unencrypted")
    client_ca_file: Path | None = Field(
        default=None, description="PEM CA(s): clients must present a certificate it signed (mutual TLS)"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS needs both cert_file and key_file")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file (mutual TLS) needs cert_file and key_file")
        for key in ("cert_file", "key_file", "client_ca_file"):
            path = getattr(self, key)
            if path is not None and not path.is_file():
                raise ValueError(f"{key}: {str(path)!r}: no such file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class OtlpConfig(_Model):
    """OTLP trace receiver (HTTP on 4318, gRPC on 4317)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    http_port: int = Field(default=4318, ge=0, le=65535, description="0 picks a free port")
    grpc_enabled: bool = True
    grpc_port: int = Field(default=4317, ge=0, le=65535)
    bearer_token: SecretStr | None = Field(
        default=None, description="clients must send `Authorization: Bearer <token>`"
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    allow_unauthenticated: bool = Field(
        default=False,
        description="silence the start-up warning for a non-loopback host with neither bearer_token "
        "nor client_ca_file (something in front authenticates the clients)",
    )
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0, description="limit after decompression")
    max_queue_spans: int = Field(default=200_000, gt=0, description="spans waiting for a commit before 429")
    max_queue_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="decoded bytes waiting for a commit before 429"
    )
    commit_max_spans: int = Field(default=25_000, gt=0, description="most spans in one group commit")
    commit_min_spans: int = Field(
        default=10_000,
        gt=0,
        description="a commit costs ~30 ms: while more requests are decoding, wait for this many spans...",
    )
    commit_linger_s: float = Field(default=0.25, ge=0, description="...but no longer than this")
    ack_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="every request is answered within this (200 once committed, else 503 with Retry-After), "
        "well inside the OpenTelemetry exporters' 10 s timeout, so a retry never meets a late commit",
    )
    retry_after_s: int = Field(default=1, ge=1, le=300)
    max_concurrent_requests: int = Field(
        default=16,
        ge=1,
        le=256,
        description="OTLP/gRPC requests at once (a worker thread each, each holding its message); one more "
        "is refused RESOURCE_EXHAUSTED at once. OTLP/HTTP requests are bounded by max_connections and "
        "max_inflight_bytes instead",
    )
    max_inflight_bytes: int | None = Field(
        default=None,
        gt=0,
        description="the bodies (by Content-Length, then decompressed) of the admitted requests together; "
        "default 2 x max_body_bytes. Bodies over a quarter of it may hold three quarters at most, "
        "so big bodies trickling in never lock small exports out",
    )
    max_connections: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="open OTLP/HTTP connections (a thread each); one more cuts the longest idle one or one "
        "still sending its headers after 1 s, or if there is none is answered 503 and closed at once",
    )
    header_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="request line and headers must arrive within this, else the connection is cut",
    )
    body_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="the whole body must arrive within this, else 408 and close; short enough that a client "
        "refused meanwhile (429, Retry-After) still gets in within the exporters' 10 s",
    )
    idle_timeout_s: float = Field(
        default=30.0, gt=0, description="an idle keep-alive connection is closed after this"
    )
    attribute_value_length_limit: int = Field(
        default=4096,
        gt=0,
        description="string values are cut to this many characters, bytes values to this many bytes "
        "(the OpenTelemetry SDK's AttributeValueLengthLimit), span and resource attributes alike; "
        "counted in hopscope_otlp_attributes_truncated_total",
    )

    @model_validator(mode="after")
    def _budget(self) -> OtlpConfig:
        if self.max_inflight_bytes is not None and self.max_inflight_bytes < self.max_body_bytes:
            raise ValueError(
                f"max_inflight_bytes ({self.max_inflight_bytes}) is below max_body_bytes ({self.max_body_bytes}): "
                "a body of the largest size allowed could never be admitted"
            )
        return self

    @property
    def inflight_bytes(self) -> int:
        """max_inflight_bytes, or its default."""
        return self.max_inflight_bytes if self.max_inflight_bytes is not None else 2 * self.max_body_bytes


class NvmlConfig(_Model):
    """Local GPUs through NVML, stored under dcgm-exporter names."""

    enabled: bool = Field(default=True, description="enabled where an NVIDIA driver answers")
    interval_s: float = Field(default=1.0, gt=0)
    service: str | None = Field(default=None, description="service the GPUs belong to, e.g. model-server")
    process_memory: bool = True
    energy: bool = Field(
        default=False, description="read the energy counter (~4 ms a call; at most once a second)"
    )
    init_retry_s: float = Field(default=60.0, gt=0)


class NetworkConfig(_Model):
    """Host NICs and TCP retransmits from /proc and /sys (node_exporter names)."""

    enabled: bool = True
    interval_s: float = Field(default=10.0, gt=0)
    service: str | None = None
    proc_path: str = "/proc"
    sys_path: str = "/sys"
    devices: list[str] = Field(default_factory=list, description="only these NICs; empty means all")
    exclude: list[str] = Field(default_factory=lambda: ["lo"])


class ProbeTarget(_Model):
    url: str = Field(
        description="http:// or https://; user:password@ in it is sent as basic auth and never shown"
    )
    service: str | None = Field(default=None, description="service the probed endpoint belongs to")
    method: Literal["GET", "HEAD", "POST"] = "GET"
    timeout_s: float | None = Field(
        default=None, gt=0, description="the whole request, DNS to last byte; default the probes' timeout_s"
    )
    verify_tls: bool = True
    expect_status: list[int] = Field(default_factory=list, description="empty: any 2xx")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        try:
            parts = urlsplit(v.strip())
            parts.port  # noqa: B018  (raises on a port that is not a number in 0-65535)
        except ValueError as exc:
            raise ValueError(f"is not a URL ({exc})") from None
        if parts.scheme.lower() not in ("http", "https"):
            shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
            raise ValueError(f"has {shown}: write an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("has no host: write http://host[:port]/path")
        return v.strip()


class ProbeConfig(_Model):
    """HTTP(S) probes with blackbox_exporter phase names."""

    interval_s: float = Field(default=15.0, gt=0)
    timeout_s: float = Field(
        default=5.0, gt=0, description="deadline of one target's whole request (blackbox_exporter's timeout)"
    )
    max_parallel: int = Field(default=8, ge=1, le=256, description="targets probed at once")
    secret_query_keys: list[str] = Field(
        default_factory=lambda: list(SECRET_QUERY_KEYS),
        description="query keys whose values are shown, logged and stored as ***",
    )
    targets: list[ProbeTarget] = Field(default_factory=list)


class PromQuery(_Model):
    """One PromQL expression and how its labels map onto samples."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    query: str = Field(min_length=1)
    metric: str | None = Field(
        default=None, description="metric name to store; default the series' __name__, else `name`"
    )
    service: str | None = Field(default=None, description="fixed service for every series")
    service_label: str | None = Field(default=None, description="label whose value is the service")
    host_label: str | None = Field(default="instance", description="label whose value is the host")
    rename: dict[str, str] = Field(default_factory=dict, description="Prometheus label -> stored label")
    hop_labels: tuple[str, str] | None = Field(
        default=None, description="(client label, server label) -> label hop='client->server'"
    )
    step_s: float | None = Field(default=None, ge=1)


class PrometheusConfig(_Model):
    """Pull from a Prometheus-compatible HTTP API (Prometheus, Thanos, Mimir, VictoriaMetrics)."""

    url: str | None = Field(
        default=None, description="e.g. http://127.0.0.1:9090; unset disables the collector"
    )
    interval_s: float = Field(default=60.0, gt=0)
    step_s: float = Field(
        default=15.0, ge=1, description="seconds; whole seconds (the API rounds times to seconds)"
    )
    lag_s: float = Field(
        default=30.0,
        ge=0,
        description="pull up to now minus this, so late scrapes do not change stored points",
    )
    backfill: timedelta = Field(default=timedelta(days=30), description="history pulled on the first run")
    max_points: int = Field(
        default=11_000, ge=2, le=11_000, description="points per series per call (Prometheus refuses more)"
    )
    timeout_s: float = Field(default=10.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    deadline_s: float = Field(
        default=60.0, gt=0, description="overall time for one query's pull, retries included"
    )
    max_retry_after_s: float = Field(default=10.0, ge=0)
    bearer_token: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    verify_tls: bool = True
    presets: list[Literal["node_network", "blackbox", "dcgm", "spanmetrics", "servicegraph"]] = Field(
        default_factory=list
    )
    queries: list[PromQuery] = Field(default_factory=list)
    progress: bool = Field(default=True, description="progress bar on stderr during backfill")

    @field_validator("backfill", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.startswith("P"):  # ISO 8601 (P30D) is pydantic's own
            return parse_duration(v, bare_seconds=True)
        return v

    @model_validator(mode="after")
    def _check(self) -> PrometheusConfig:
        if self.bearer_token is not None and self.username is not None:
            raise ValueError("set either bearer_token or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        names = [q.name for q in self.queries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"query name {dup[0]!r} is used twice")
        return self


class MetricsConfig(_Model):
    """The daemon's own /metrics endpoint (prometheus-client)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class CollectConfig(_Model):
    """The `[collect]` table of hopscope.toml."""

    host_name: str = Field(default_factory=socket.gethostname, description="host column of local samples")
    rollup_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="roll spans into hop_minutes this often: the open minutes provisionally, so the charts "
        "and SLOs trail acknowledged spans by seconds (docs/performance.md, Freshness)",
    )
    maintain_interval_s: float = Field(default=300.0, gt=0)
    rollup_grace_s: float = Field(
        default=120.0,
        ge=0,
        description="a minute is rolled up this long after it closes: spans exported later are not counted",
    )
    leader_lease_s: float = Field(
        default=15.0,
        gt=0,
        description="a shared store: the leader (rollups, maintenance, alerts) renews its lease every third "
        "of this; when it dies another collector takes over within this plus a third",
    )
    heal_after_s: float = Field(
        default=30.0,
        gt=0,
        description="writes failing this long: reopen the store connection (frees a leaked lock)",
    )
    stop_timeout_s: float = Field(
        default=15.0, gt=0, description="SIGTERM: commit what was acknowledged and exit within this"
    )
    otlp: OtlpConfig = Field(default_factory=OtlpConfig)
    nvml: NvmlConfig = Field(default_factory=NvmlConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    probes: ProbeConfig = Field(default_factory=ProbeConfig)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


def load_collect_config(data: dict[str, Any] | None, *, source: str = "hopscope.toml") -> CollectConfig:
    """Validate a `[collect]` table; ConfigError names the key and the bad value."""
    try:
        return CollectConfig.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source, prefix="collect")) from None


def format_validation_error(exc: ValidationError, *, source: str, prefix: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join([prefix, *(str(p) for p in err["loc"])])
        value = err.get("input")
        shown = "" if isinstance(value, dict) or err["type"] == "missing" else f": {redact(repr(value))}"
        if "secret" in key.lower() or "token" in key.lower() or "password" in key.lower():
            shown = ""  # never echo a secret
        parts.append(f"{source}: {key}{shown}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)

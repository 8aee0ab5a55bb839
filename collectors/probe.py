"""HTTP(S) probes with blackbox_exporter names, phase timings from httpcore's trace events.

    probe_http_duration_seconds{phase=resolve|connect|tls|processing|transfer}
    probe_success, probe_http_status_code

Each probe resolves the host itself (timed: `resolve`), then connects to that
address on a fresh connection so `connect` and `tls` are measured every time
(SNI and Host still name the original host). Timeouts, refused connections and
TLS errors become failed probes (probe_success=0) with the reason.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from collectors.records import Sample, TargetResult
from hopscope.config.collect import ProbeConfig, ProbeTarget
from hopscope.store import utcnow

SOURCE = "probe"
PHASES = ("resolve", "connect", "tls", "processing", "transfer")

# httpcore trace event -> (phase, edge). Processing runs from sending the request to the response headers.
_EDGES = {
    "connection.connect_tcp.started": ("connect", 0),
    "connection.connect_tcp.complete": ("connect", 1),
    "connection.start_tls.started": ("tls", 0),
    "connection.start_tls.complete": ("tls", 1),
    "http11.send_request_headers.started": ("processing", 0),
    "http2.send_request_headers.started": ("processing", 0),
    "http11.receive_response_headers.complete": ("processing", 1),
    "http2.receive_response_headers.complete": ("processing", 1),
    "http11.receive_response_body.started": ("transfer", 0),
    "http2.receive_response_body.started": ("transfer", 0),
    "http11.receive_response_body.complete": ("transfer", 1),
    "http2.receive_response_body.complete": ("transfer", 1),
}


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    target: str
    success: bool
    status_code: int | None
    phases: dict[str, float]  # seconds
    error: str | None


def _resolve(host: str, port: int) -> str:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


class ProbeCollector:
    """Probes every configured target once per call; one TargetResult per target."""

    name = "probe"

    def __init__(
        self,
        cfg: ProbeConfig,
        *,
        host: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        resolver: Callable[[str, int], str] = _resolve,
        transport_factory: Callable[[ProbeTarget], httpx.BaseTransport] | None = None,
    ) -> None:
        self.cfg = cfg
        self.interval_s = cfg.interval_s
        self.host = host
        self._clock = clock
        self._resolve = resolver
        self._transport_factory = transport_factory

    @property
    def targets_text(self) -> str:
        return ", ".join(t.url for t in self.cfg.targets)

    def probe(self, target: ProbeTarget) -> ProbeOutcome:
        timeout = target.timeout_s or self.cfg.timeout_s
        marks: dict[tuple[str, int], float] = {}

        def trace(event: str, info: dict[str, Any]) -> None:
            edge = _EDGES.get(event)
            if edge is not None and edge not in marks:
                marks[edge] = time.perf_counter()

        parts = urlsplit(target.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        phases: dict[str, float] = {}
        status: int | None = None
        error: str | None = None
        t0 = time.perf_counter()
        try:
            try:
                address = self._resolve(host, port)
            except (OSError, UnicodeError) as exc:
                raise _ProbeFailed(f"cannot resolve {host!r}: {exc}") from None
            phases["resolve"] = time.perf_counter() - t0
            netloc = f"[{address}]" if ":" in address else address
            if parts.port:
                netloc += f":{parts.port}"
            url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
            host_header = host + (f":{parts.port}" if parts.port else "")
            transport = self._transport_factory(target) if self._transport_factory else None
            with httpx.Client(
                verify=target.verify_tls,
                timeout=timeout,
                transport=transport,
                follow_redirects=False,
                trust_env=False,
            ) as client:
                with client.stream(
                    target.method,
                    url,
                    headers={"Host": host_header, "Connection": "close", "User-Agent": "hopscope-probe"},
                    extensions={"trace": trace, "sni_hostname": host, "timeout": _timeouts(timeout)},
                ) as response:
                    status = response.status_code
                    for _ in response.iter_raw():
                        if time.perf_counter() - t0 > timeout:
                            raise _ProbeFailed(f"body not read within {timeout:g} s")
        except _ProbeFailed as exc:
            error = str(exc)
        except httpx.TimeoutException as exc:
            error = f"timeout after {timeout:g} s ({type(exc).__name__})"
        except httpx.ConnectError as exc:
            cause = exc.__context__ or exc.__cause__
            error = f"cannot connect to {host}:{port}: {_cause_text(exc, cause)}"
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        for phase in PHASES[1:]:
            start, end = marks.get((phase, 0)), marks.get((phase, 1))
            if start is not None and end is not None:
                phases[phase] = max(0.0, end - start)
        if error is None and status is not None:
            ok = status in target.expect_status if target.expect_status else 200 <= status < 300
            if not ok:
                error = f"HTTP status {status} (expected {target.expect_status or '2xx'})"
        return ProbeOutcome(target.url, error is None, status, phases, error)

    def collect(self) -> Iterable[TargetResult]:
        results = []
        for target in self.cfg.targets:
            now = self._clock()
            outcome = self.probe(target)
            labels = {"target": target.url}
            samples = [
                Sample(
                    now,
                    "probe_http_duration_seconds",
                    secs,
                    SOURCE,
                    target.service,
                    self.host,
                    {**labels, "phase": phase},
                )
                for phase, secs in outcome.phases.items()
            ]
            samples.append(
                Sample(
                    now,
                    "probe_success",
                    1.0 if outcome.success else 0.0,
                    SOURCE,
                    target.service,
                    self.host,
                    labels,
                )
            )
            if outcome.status_code is not None:
                samples.append(
                    Sample(
                        now,
                        "probe_http_status_code",
                        float(outcome.status_code),
                        SOURCE,
                        target.service,
                        self.host,
                        labels,
                    )
                )
            results.append(TargetResult(target.url, outcome.success, tuple(samples), outcome.error))
        return results


class _ProbeFailed(Exception):
    pass


def _timeouts(timeout: float) -> dict[str, float]:
    return {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}


def _cause_text(exc: BaseException, cause: BaseException | None) -> str:
    text = str(exc)
    if isinstance(cause, OSError) and cause.strerror:
        text = cause.strerror
    if "refused" in text.lower():
        return "connection refused"
    return text or type(exc).__name__

"""HTTP(S) probes with blackbox_exporter names, phase timings from httpcore's trace events.

    probe_http_duration_seconds{phase=resolve|connect|tls|processing|transfer}
    probe_success, probe_http_status_code

Each probe resolves the host itself (timed: `resolve`), then connects to that
address on a fresh connection so `connect` and `tls` are measured every time
(SNI and Host still name the original host). Timeouts, refused connections and
TLS errors become failed probes (probe_success=0) with the reason.

Like blackbox_exporter, `timeout_s` is a deadline for the whole request, DNS to
last byte: httpcore bounds each read, so a server that sends one byte a second
would hold a probe forever. Every socket operation gets only the time left to
the deadline; the phase it cuts is reported with its time so far and named in
the error. Targets are probed in parallel (at most `max_parallel` at once) and
each result is yielded as it completes, so one slow target delays no other.
A probe stuck where no timeout reaches (a resolver that does not answer) is
given up at the deadline plus a short grace and reported the same way.

User-info in a target URL is sent as basic auth; the URL is shown, logged and
stored with it and with the values of secret query keys redacted.
"""

from __future__ import annotations

import base64
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

import httpcore
import httpx

from hopscope.collectors.records import Sample, TargetResult
from hopscope.config.collect import ProbeConfig, ProbeTarget
from hopscope.redact import redact
from hopscope.store import utcnow

SOURCE = "probe"
PHASES = ("resolve", "connect", "tls", "processing", "transfer")
_DOING = {
    "resolve": "resolving the host",
    "connect": "connecting",
    "tls": "in the TLS handshake",
    "processing": "waiting for the response headers",
    "transfer": "reading the body",
}

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

# A probe that has not returned this long after its deadline is given up (only a blocking resolver
# gets there: every socket operation ends by the deadline).
GRACE_S = 0.5
_POLL_S = 0.1  # how often the collecting loop looks at deadlines and at close()
_MIN_OP_S = 0.001  # a socket timeout of 0 would make it non-blocking: past the deadline, time out at once


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    target: str  # redacted
    success: bool
    status_code: int | None
    phases: dict[str, float]  # seconds
    error: str | None
    timed_out: str | None = None  # the phase the deadline cut
    duration_s: float = 0.0


def _resolve(host: str, port: int) -> str:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


class _Attempt:
    """One target's probe in flight: its deadline and phase marks, shared by its thread and the watcher."""

    def __init__(self, target: ProbeTarget, timeout_s: float, started: datetime) -> None:
        self.target = target
        self.timeout_s = timeout_s
        self.started = started
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + timeout_s
        self.tls = urlsplit(target.url).scheme.lower() == "https"
        self._marks: dict[tuple[str, int], float] = {("resolve", 0): self.t0}
        self._lock = threading.Lock()

    def mark(self, phase: str, edge: int) -> None:
        with self._lock:
            self._marks.setdefault((phase, edge), time.perf_counter())

    def phases(self, cut_at: float | None = None) -> tuple[dict[str, float], str | None]:
        """Seconds of each completed phase; with `cut_at`, also the phase in progress then (and its name)."""
        with self._lock:
            marks = dict(self._marks)
        done: dict[str, float] = {}
        for phase in PHASES:
            start, end = marks.get((phase, 0)), marks.get((phase, 1))
            if start is not None and end is not None:
                done[phase] = max(0.0, end - start)
        if cut_at is None:
            return done, None
        order = [p for p in PHASES if p != "tls" or self.tls]
        started = [p for p in order if (p, 0) in marks and p not in done]
        if started:
            cut, since = started[-1], marks[(started[-1], 0)]
        else:  # between two phases: the cut one is the next after the last that completed
            last = max((i for i, p in enumerate(order) if p in done), default=-1)
            cut = order[min(last + 1, len(order) - 1)]
            since = marks.get((order[last], 1), self.t0) if last >= 0 else self.t0
        done[cut] = max(0.0, cut_at - since)
        return done, cut

    def timed_out(self) -> ProbeOutcome:
        """The outcome of a probe the deadline cut, phases measured up to the deadline."""
        now = time.perf_counter()
        phases, cut = self.phases(min(now, self.deadline))
        phase = cut or "resolve"
        error = f"timeout after {self.timeout_s:g} s in phase {phase} ({_DOING[phase]})"
        return ProbeOutcome("", False, None, phases, error, phase, now - self.t0)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with every connect, TLS handshake, read and write cut at one deadline.

    httpcore gives each socket operation the full timeout (the headers loop reads its timeout once), so
    a server that sends one byte a second holds a request forever; here each gets the time left."""

    def __init__(self, inner: httpcore.NetworkBackend, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _left(self._deadline, timeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, _left(self._deadline, timeout), socket_options)
        return _DeadlineStream(stream, self._deadline)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _left(self._deadline, timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _left(self._deadline, timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        stream = self._inner.start_tls(ssl_context, server_hostname, _left(self._deadline, timeout))
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


def _left(deadline: float, timeout: float | None) -> float:
    """The smaller of an operation's own timeout and the time left to the deadline (never 0: that
    would make the socket non-blocking rather than time out)."""
    left = max(_MIN_OP_S, deadline - time.perf_counter())
    return left if timeout is None else min(timeout, left)


class ProbeCollector:
    """Probes every configured target once per call, in parallel; one TargetResult per target as it completes."""

    name = "probe"

    def __init__(
        self,
        cfg: ProbeConfig,
        *,
        host: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        resolver: Callable[[str, int], str] = _resolve,
        network_backend: httpcore.NetworkBackend | None = None,
    ) -> None:
        self.cfg = cfg
        self.interval_s = cfg.interval_s
        self.host = host
        self._clock = clock
        self._resolve = resolver
        self._backend = network_backend or httpcore.SyncBackend()
        self._closing = threading.Event()
        self._ssl: dict[bool, ssl.SSLContext] = {}
        self._ssl_lock = threading.Lock()

    def _ssl_context(self, verify: bool) -> ssl.SSLContext:
        """One context per verify setting (loading the CA bundle costs ~50 ms), shared by the probes."""
        with self._ssl_lock:
            if verify not in self._ssl:
                self._ssl[verify] = httpx.create_ssl_context(verify=verify, trust_env=False)
            return self._ssl[verify]

    def shown(self, text: str, target: ProbeTarget | None = None) -> str:
        """`text` as it may be shown, logged or stored: no user-info, no secret query values."""
        return redact(
            text, secrets=_secrets(target, self.cfg) if target else (), query_keys=self.cfg.secret_query_keys
        )

    @property
    def targets_text(self) -> str:
        return ", ".join(self.shown(t.url) for t in self.cfg.targets)

    def interrupt(self) -> None:
        """The daemon is stopping: collect() returns at once, leaving probes in flight unreported."""
        self._closing.set()

    def probe(self, target: ProbeTarget, attempt: _Attempt | None = None) -> ProbeOutcome:
        timeout = target.timeout_s or self.cfg.timeout_s
        attempt = attempt or _Attempt(target, timeout, self._clock())

        def trace(event: str, info: dict[str, Any]) -> None:
            edge = _EDGES.get(event)
            if edge is not None:
                attempt.mark(*edge)

        parts = urlsplit(target.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
        headers = [("Host", host + (f":{parts.port}" if parts.port else "")), ("Connection", "close")]
        headers.append(("User-Agent", "hopscope-probe"))
        if parts.username is not None:  # user:password@ is basic auth (RFC 3986 user-info, percent-encoded)
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers.append(("Authorization", f"Basic {base64.b64encode(credentials).decode()}"))
        status: int | None = None
        error: str | None = None
        try:
            try:
                address = self._resolve(host, port)
            except (OSError, UnicodeError) as exc:
                raise _ProbeFailed(f"cannot resolve {host!r}: {exc}") from None
            if time.perf_counter() >= attempt.deadline:
                return self._redacted(attempt.timed_out(), target)
            attempt.mark("resolve", 1)
            netloc = f"[{address}]" if ":" in address else address
            if parts.port:
                netloc += f":{parts.port}"
            url = urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))
            with (
                httpcore.ConnectionPool(
                    ssl_context=self._ssl_context(target.verify_tls) if attempt.tls else None,
                    network_backend=_DeadlineBackend(self._backend, attempt.deadline),
                ) as pool,
                pool.stream(
                    target.method,
                    url,
                    headers=headers,
                    extensions={"trace": trace, "sni_hostname": host, "timeout": _timeouts(timeout)},
                ) as response,
            ):
                status = response.status
                for _ in response.iter_stream():
                    if time.perf_counter() >= attempt.deadline:  # bytes keep coming, but too long
                        raise httpcore.ReadTimeout("the body did not end by the deadline")
        except _ProbeFailed as exc:
            error = str(exc)
        except httpcore.TimeoutException:
            return self._redacted(attempt.timed_out(), target)
        except httpcore.ConnectError as exc:
            if time.perf_counter() >= attempt.deadline:
                return self._redacted(attempt.timed_out(), target)
            error = f"cannot connect to {host}:{port}: {_cause_text(exc, exc.__context__ or exc.__cause__)}"
        except Exception as exc:  # noqa: BLE001 - TLS, protocol and network errors are the probe's result
            if time.perf_counter() >= attempt.deadline:  # an error the deadline itself caused
                return self._redacted(attempt.timed_out(), target)
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        phases, _ = attempt.phases()
        if error is None and status is not None:
            ok = status in target.expect_status if target.expect_status else 200 <= status < 300
            if not ok:
                error = f"HTTP status {status} (expected {target.expect_status or '2xx'})"
        outcome = ProbeOutcome(
            "", error is None, status, phases, error, duration_s=time.perf_counter() - attempt.t0
        )
        return self._redacted(outcome, target)

    def _redacted(self, outcome: ProbeOutcome, target: ProbeTarget) -> ProbeOutcome:
        error = self.shown(outcome.error, target) if outcome.error else None
        return replace(outcome, target=self.shown(target.url), error=error)

    def collect(self) -> Iterator[TargetResult]:
        """Every target once, at most `max_parallel` at a time; each result as soon as it is known."""
        todo = deque(self.cfg.targets)
        active: set[_Attempt] = set()
        done: queue.Queue[tuple[_Attempt, ProbeOutcome]] = queue.Queue()
        while (todo or active) and not self._closing.is_set():
            while todo and len(active) < self.cfg.max_parallel:
                target = todo.popleft()
                attempt = _Attempt(target, target.timeout_s or self.cfg.timeout_s, self._clock())
                active.add(attempt)
                threading.Thread(
                    target=self._probe_into, args=(attempt, done), name="probe", daemon=True
                ).start()
            give_up_at = min(a.deadline for a in active) + GRACE_S
            try:
                attempt, outcome = done.get(timeout=min(_POLL_S, max(0.0, give_up_at - time.perf_counter())))
            except queue.Empty:
                now = time.perf_counter()
                for late in [a for a in active if now >= a.deadline + GRACE_S]:
                    active.discard(late)  # its thread ends by itself; what it reports then is dropped
                    yield self._result(late, self._redacted(late.timed_out(), late.target))
                continue
            if attempt in active:
                active.discard(attempt)
                yield self._result(attempt, outcome)

    def _probe_into(self, attempt: _Attempt, done: queue.Queue[tuple[_Attempt, ProbeOutcome]]) -> None:
        try:
            outcome = self.probe(attempt.target, attempt)
        except Exception as exc:  # noqa: BLE001 - a bug in one probe is that probe's failure, not a lost row
            phases, _ = attempt.phases()
            error = self.shown(f"{type(exc).__name__}: {exc}", attempt.target)
            outcome = ProbeOutcome(self.shown(attempt.target.url), False, None, phases, error)
        done.put((attempt, outcome))

    def _result(self, attempt: _Attempt, outcome: ProbeOutcome) -> TargetResult:
        target = attempt.target
        now = attempt.started
        labels = {"target": outcome.target}

        def sample(metric: str, value: float, extra: Mapping[str, str] | None = None) -> Sample:
            return Sample(now, metric, value, SOURCE, target.service, self.host, {**labels, **(extra or {})})

        samples = [
            sample("probe_http_duration_seconds", secs, {"phase": phase})
            for phase, secs in outcome.phases.items()
        ]
        samples.append(sample("probe_success", 1.0 if outcome.success else 0.0))
        if outcome.status_code is not None:
            samples.append(sample("probe_http_status_code", float(outcome.status_code)))
        return TargetResult(
            outcome.target, outcome.success, tuple(samples), outcome.error, duration_s=outcome.duration_s
        )


class _ProbeFailed(Exception):
    pass


def _timeouts(timeout: float) -> dict[str, float]:
    return {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}


def _secrets(target: ProbeTarget, cfg: ProbeConfig) -> list[str]:
    """The password and the secret query values of a target, raw and decoded (errors may quote either)."""
    parts = urlsplit(target.url)
    keys = {k.lower() for k in cfg.secret_query_keys}
    values = [parts.password or ""]
    for pair in parts.query.replace(";", "&").split("&"):
        key, _, value = pair.partition("=")
        if unquote_plus(key).lower() in keys:
            values.append(value)
    return sorted({s for v in values if v for s in (v, unquote_plus(v))}, key=len, reverse=True)


def _cause_text(exc: BaseException, cause: BaseException | None) -> str:
    text = str(exc)
    if isinstance(cause, OSError) and cause.strerror:
        text = cause.strerror
    if "refused" in text.lower():
        return "connection refused"
    return text or type(exc).__name__

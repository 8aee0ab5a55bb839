"""HTTP phase probes against local servers: a delayed first byte, a closed port, a timeout, a TLS mismatch."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from collectors.probe import ProbeCollector
from hopscope.config.collect import ProbeConfig, ProbeTarget

DELAY_S = 0.3


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/hang":
            time.sleep(2)
        elif self.path != "/fast":
            time.sleep(DELAY_S)  # delay the first byte
        status = 503 if self.path == "/down" else 200
        body = b"ok" * 1000
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _run(
    url: str, timeout: float = 2.0, service: str | None = "feature-store"
) -> tuple[bool, dict, str | None]:
    c = ProbeCollector(
        ProbeConfig(timeout_s=timeout, targets=[ProbeTarget(url=url, service=service)]), host="prober"
    )
    [result] = list(c.collect())
    values: dict = {}
    for s in result.samples:
        key = s.metric if "phase" not in s.labels else f"{s.metric}:{s.labels['phase']}"
        values[key] = s.value
        assert (
            s.labels["target"] == url and s.service == service and s.source == "probe" and s.host == "prober"
        )
    return result.ok, values, result.error


def test_delayed_first_byte_shows_in_processing_phase(server: str) -> None:
    ok, v, err = _run(f"http://{server}/health")
    assert ok and err is None
    assert v["probe_success"] == 1.0 and v["probe_http_status_code"] == 200.0
    assert DELAY_S <= v["probe_http_duration_seconds:processing"] < DELAY_S + 0.25
    for phase in ("resolve", "connect", "transfer"):
        assert 0 <= v[f"probe_http_duration_seconds:{phase}"] < 0.1
    assert "probe_http_duration_seconds:tls" not in v  # plain http has no TLS phase


def test_fast_endpoint_has_small_processing(server: str) -> None:
    ok, v, _ = _run(f"http://{server}/fast")
    assert ok and v["probe_http_duration_seconds:processing"] < DELAY_S / 2


def test_closed_port_gives_probe_success_0_with_the_reason() -> None:
    ok, v, err = _run(f"http://127.0.0.1:{_closed_port()}/health")
    assert not ok and v["probe_success"] == 0.0
    assert "connection refused" in (err or "").lower()
    assert "probe_http_status_code" not in v


@pytest.mark.parametrize(
    ("path", "timeout", "reason"),
    [("/hang", 0.5, "timeout"), ("/down", 2.0, "HTTP status 503")],
)
def test_timeouts_and_bad_status_are_failed_probes(
    server: str, path: str, timeout: float, reason: str
) -> None:
    ok, v, err = _run(f"http://{server}{path}", timeout=timeout)
    assert not ok and v["probe_success"] == 0.0 and reason in (err or "")


def test_tls_to_a_plain_http_port_is_a_failed_probe_not_a_crash(server: str) -> None:
    ok, v, err = _run(f"https://{server}/health")
    assert not ok and v["probe_success"] == 0.0 and err


def test_unresolvable_host_is_a_failed_probe() -> None:
    def resolver(host: str, port: int) -> str:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    c = ProbeCollector(
        ProbeConfig(targets=[ProbeTarget(url="http://no-such-host.invalid/")]), resolver=resolver
    )
    [result] = list(c.collect())
    assert not result.ok and "cannot resolve" in (result.error or "")

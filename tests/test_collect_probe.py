"""HTTP phase probes against local servers: a delayed first byte, a closed port, a timeout, a TLS mismatch,
a server that drips its answer one byte a second, credentials in the URL, and the daemon around them."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from hopscope.collectors.probe import GRACE_S, ProbeCollector
from hopscope.collectors.runner import RecordSink, run_once
from hopscope.collectors.selfmetrics import SelfMetrics
from hopscope.config.collect import ProbeConfig, ProbeTarget, load_collect_config
from hopscope.errors import ConfigError
from hopscope.redact import redact
from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[1]
DELAY_S = 0.3


class _Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str | None]] = []  # (path, Authorization) of every request

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append((self.path, self.headers.get("Authorization")))
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


class _Drip:
    """A socket server that answers one byte a second: its headers (`headers`) or its body (`body`)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed: the test is over
                return
            self.accepted.set()
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = conn.recv(65536)
                body = b"x" * 600
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Pad: %s\r\n\r\n" % (len(body), b"p" * 600)
                if b" /body " in request:
                    conn.sendall(head)
                    data = body
                else:
                    data = head + body
                for byte in data:
                    conn.sendall(bytes([byte]))
                    time.sleep(1.0)
            except OSError:  # the prober gave up
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def drip() -> Iterator[_Drip]:
    d = _Drip()
    yield d
    d.close()


@pytest.mark.parametrize(("path", "phase"), [("/headers", "processing"), ("/body", "transfer")])
def test_a_dripping_target_fails_at_its_deadline_in_the_phase_it_was_in_while_a_fast_one_lands_at_once(
    server: str, drip: _Drip, path: str, phase: str
) -> None:
    deadline = 1.5
    slow_url, fast_url = f"http://127.0.0.1:{drip.port}{path}", f"http://{server}/fast"
    cfg = ProbeConfig(timeout_s=deadline, targets=[ProbeTarget(url=slow_url), ProbeTarget(url=fast_url)])
    t0 = time.perf_counter()
    arrived = {}
    for result in ProbeCollector(cfg).collect():
        arrived[result.target] = (time.perf_counter() - t0, result)
    cycle = time.perf_counter() - t0
    fast_at, fast = arrived[fast_url]
    assert fast.ok and fast_at < 0.5  # not behind the slow target, though listed after it
    slow_at, slow = arrived[slow_url]
    values = {s.labels.get("phase", s.metric): s.value for s in slow.samples}
    assert not slow.ok and values["probe_success"] == 0.0 and "probe_http_status_code" not in values
    assert f"timeout after {deadline:g} s in phase {phase}" in (slow.error or "")
    phases = {k: v for k, v in values.items() if k != "probe_success"}
    assert sum(phases.values()) == pytest.approx(deadline, abs=0.1)  # every phase up to the deadline
    assert phases[phase] > deadline / 2  # the cut phase holds the time it took
    assert deadline <= slow_at < deadline + 0.3 and cycle < deadline + 0.3
    assert slow.duration_s == pytest.approx(deadline, abs=0.2)


def test_each_target_has_its_own_duration_not_the_time_since_the_pass_began(server: str) -> None:
    urls = [f"http://{server}/health", f"http://{server}/fast"]  # one after the other: the first takes 0.3 s
    cfg = ProbeConfig(max_parallel=1, targets=[ProbeTarget(url=u) for u in urls])
    sink = RecordSink(None, SelfMetrics())
    runs = {r.target: r for r in run_once(ProbeCollector(cfg), sink, SelfMetrics())}
    assert runs[urls[0]].duration_ms >= DELAY_S * 1000
    assert runs[urls[1]].duration_ms < DELAY_S * 1000 / 2


def test_a_probe_that_no_timeout_reaches_is_given_up_at_its_deadline(server: str) -> None:
    def stuck_resolver(host: str, port: int) -> str:  # a resolver that does not answer
        time.sleep(3)
        return "127.0.0.1"

    cfg = ProbeConfig(timeout_s=0.5, targets=[ProbeTarget(url=f"http://{server}/fast")])
    t0 = time.perf_counter()
    [result] = list(ProbeCollector(cfg, resolver=stuck_resolver).collect())
    assert time.perf_counter() - t0 < 0.5 + GRACE_S + 0.2
    assert not result.ok and "in phase resolve" in (result.error or "")


def test_interrupt_ends_a_pass_at_once_without_reporting_what_is_in_flight(drip: _Drip) -> None:
    cfg = ProbeConfig(timeout_s=30, targets=[ProbeTarget(url=f"http://127.0.0.1:{drip.port}/headers")])
    c = ProbeCollector(cfg)
    threading.Timer(0.5, c.interrupt).start()
    t0 = time.perf_counter()
    assert list(c.collect()) == [] and time.perf_counter() - t0 < 1.0


PASSWORD, API_KEY = "pw-S3cr3t!", "KEY-VALUE-987"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:pw@h:8/x?api_key=v&page=2", "http://***@h:8/x?api_key=***&page=2"),
        ("https://h/x?Token=abc;sig=def#frag", "https://h/x?Token=***;sig=***#frag"),
        ("GET http://u@h/?monkey=1&key=2 failed", "GET http://***@h/?monkey=1&key=*** failed"),
        (
            "http://h/?x-amz-signature=aa&X-Amz-Credential=bb",
            "http://h/?x-amz-signature=***&X-Amz-Credential=***",
        ),
        ("http://h/path?q=1", "http://h/path?q=1"),
    ],
)
def test_redact_hides_user_info_and_secret_query_values(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_credentials_in_a_url_are_sent_as_basic_auth_and_never_shown(server: str) -> None:
    url = f"http://alice:{PASSWORD.replace('!', '%21')}@{server}/fast?api_key={API_KEY}&page=2"
    _Slow.seen.clear()
    [result] = list(ProbeCollector(ProbeConfig(targets=[ProbeTarget(url=url)])).collect())
    assert result.ok
    expected = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert _Slow.seen == [(f"/fast?api_key={API_KEY}&page=2", expected)]
    assert result.target == f"http://***@{server}/fast?api_key=***&page=2"
    assert {s.labels["target"] for s in result.samples} == {result.target}


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("ftp://files.example/x", "scheme 'ftp': write an http:// or https:// URL"),
        ("health.example/x", "no scheme"),
        ("http:///health", "has no host"),
        ("http://:8080/health", "has no host"),
        ("http://h:99999/", "is not a URL"),
    ],
)
def test_a_bad_probe_url_is_a_config_error_naming_the_key(url: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_collect_config({"probes": {"targets": [{"url": "http://ok/"}, {"url": url}]}})
    assert "collect.probes.targets.1.url" in str(err.value) and needle in str(err.value)


def test_a_bad_probe_url_error_does_not_echo_its_password() -> None:
    with pytest.raises(ConfigError) as err:
        load_collect_config({"probes": {"targets": [{"url": f"ftp://alice:{PASSWORD}@h/?token={API_KEY}"}]}})
    assert PASSWORD not in str(err.value) and API_KEY not in str(err.value)


def test_the_daemon_stops_at_once_beside_a_dripping_target_and_never_shows_credentials(
    server: str, drip: _Drip, tmp_path: Path
) -> None:
    """`hopscope collect` with a slow target (30 s deadline) and a fast one that carries credentials."""
    fast = f"http://alice:{PASSWORD}@{server}/fast?api_key={API_KEY}"
    config = tmp_path / "hopscope.toml"
    config.write_text(
        "[collect]\nhost_name = 'test'\nstop_timeout_s = 15\n[collect.otlp]\nenabled = false\n"
        "[collect.metrics]\nenabled = false\n[collect.nvml]\nenabled = false\n[collect.network]\nenabled = false\n"
        "[collect.probes]\ninterval_s = 60\ntimeout_s = 30\n"
        f"[[collect.probes.targets]]\nurl = 'http://127.0.0.1:{drip.port}/headers'\n"
        f"[[collect.probes.targets]]\nurl = '{fast}'\n"
    )
    store_dir = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    _Slow.seen.clear()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hopscope.collectors.cli", "--config", str(config), "--store", str(store_dir),
         "--log-level", "DEBUG"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (_Slow.seen and drip.accepted.is_set()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _Slow.seen, "the daemon never probed the fast target"
        time.sleep(0.5)  # the fast row is in the sink; the slow probe is reading its headers
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        stop_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    assert stop_s < 5, f"stopping took {stop_s:.1f} s"
    assert _Slow.seen[0][1] == "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert f"http://***@{server}/fast?api_key=***" in output  # the start-up line names the target, redacted
    with Store(store_dir) as s:
        labels = s.query("SELECT labels['target'] AS t, metric, value FROM samples").to_pylist()
        runs = s.query("SELECT target, ok, error FROM collector_runs WHERE collector = 'probe'").to_pylist()
    assert {r["t"] for r in labels} == {f"http://***@{server}/fast?api_key=***"}
    assert runs == [{"target": f"http://***@{server}/fast?api_key=***", "ok": True, "error": None}]
    for stored in (output, repr(labels), repr(runs)):
        assert PASSWORD not in stored and API_KEY not in stored and "alice" not in stored


def test_the_secret_query_keys_are_configurable(server: str) -> None:
    cfg = ProbeConfig(
        secret_query_keys=["session"], targets=[ProbeTarget(url=f"http://{server}/fast?session=s1&q=2")]
    )
    [result] = list(ProbeCollector(cfg).collect())
    assert result.target == f"http://{server}/fast?session=***&q=2"

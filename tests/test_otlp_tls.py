"""Transport security of the OTLP receiver: TLS and mutual TLS with the real OpenTelemetry SDK exporters
(HTTP and gRPC), bad certificate files as one clear error, and the warning for an open, unauthenticated port."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.certs import Pki, make_pki
from support.waiting import wait_until

from hopscope.collectors.otlp import OtlpReceiver
from hopscope.config.collect import OtlpConfig, load_collect_config
from hopscope.errors import ConfigError
from hopscope.store import Store


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def _exporter_trusts_its_certificate_file(monkeypatch: pytest.MonkeyPatch) -> None:
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE win over a session's `verify` (psf/requests#3829),
    # so where they are set the HTTP exporter's certificate_file is ignored (docs/security.md says so).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    s = Store(tmp_path_factory.mktemp("otlp-tls") / "store")
    yield s
    s.close()


def _receiver(store: Store, pki: Pki, *, mutual: bool) -> OtlpReceiver:
    tls = {"cert_file": pki.server_cert, "key_file": pki.server_key}
    if mutual:
        tls["client_ca_file"] = pki.ca
    return OtlpReceiver(store, OtlpConfig(http_port=0, grpc_port=0, tls=tls))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_receiver(store: Store, pki: Pki) -> Iterator[OtlpReceiver]:
    r = _receiver(store, pki, mutual=False)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def mtls_receiver(store: Store, pki: Pki) -> Iterator[OtlpReceiver]:
    r = _receiver(store, pki, mutual=True)
    r.start()
    yield r
    r.stop()


def _spans(service: str) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("tls-test").start_as_current_span("GET /health"):
        pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def _stored(store: Store, service: str) -> int:
    return int(
        store.query("SELECT count(*) AS n FROM spans WHERE service = ?", [service]).to_pylist()[0]["n"]
    )


def _http(
    r: OtlpReceiver, pki: Pki, scheme: str = "https", client: tuple[Path, Path] | None = None
) -> HttpExporter:
    return HttpExporter(
        endpoint=f"{scheme}://127.0.0.1:{r.http_port}/v1/traces",
        certificate_file=str(pki.ca),
        client_certificate_file=str(client[0]) if client else None,
        client_key_file=str(client[1]) if client else None,
        timeout=2,
    )


def _grpc(r: OtlpReceiver, pki: Pki, client: tuple[Path, Path] | None = None) -> GrpcExporter:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=client[1].read_bytes() if client else None,
        certificate_chain=client[0].read_bytes() if client else None,
    )
    return GrpcExporter(endpoint=f"127.0.0.1:{r.grpc_port}", credentials=creds, timeout=2)


def test_the_sdk_exporters_deliver_over_tls_on_http_and_grpc(
    tls_receiver: OtlpReceiver, pki: Pki, store: Store
) -> None:
    assert tls_receiver.addresses[0].startswith("OTLP/HTTP https://")
    assert _http(tls_receiver, pki).export(_spans("tls-http")) == SpanExportResult.SUCCESS
    assert _grpc(tls_receiver, pki).export(_spans("tls-grpc")) == SpanExportResult.SUCCESS
    assert (_stored(store, "tls-http"), _stored(store, "tls-grpc")) == (1, 1)


def test_a_plaintext_client_gets_nothing_from_a_tls_receiver(
    tls_receiver: OtlpReceiver, pki: Pki, store: Store
) -> None:
    assert _http(tls_receiver, pki, scheme="http").export(_spans("plain-http")) == SpanExportResult.FAILURE
    insecure = GrpcExporter(endpoint=f"127.0.0.1:{tls_receiver.grpc_port}", insecure=True, timeout=2)
    assert insecure.export(_spans("plain-grpc")) == SpanExportResult.FAILURE
    assert (_stored(store, "plain-http"), _stored(store, "plain-grpc")) == (0, 0)
    assert tls_receiver.metrics.tls_handshakes_failed._value.get() >= 1


def test_mutual_tls_serves_a_client_certificate_of_the_ca(
    mtls_receiver: OtlpReceiver, pki: Pki, store: Store
) -> None:
    client = (pki.client_cert, pki.client_key)
    assert _http(mtls_receiver, pki, client=client).export(_spans("mtls-http")) == SpanExportResult.SUCCESS
    assert _grpc(mtls_receiver, pki, client=client).export(_spans("mtls-grpc")) == SpanExportResult.SUCCESS
    assert (_stored(store, "mtls-http"), _stored(store, "mtls-grpc")) == (1, 1)


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_mutual_tls_refuses_a_client_without_a_certificate_of_the_ca(
    mtls_receiver: OtlpReceiver, pki: Pki, store: Store, who: str
) -> None:
    client = None if who == "no certificate" else (pki.rogue_cert, pki.rogue_key)
    service = f"refused-{who.split()[0]}"
    assert (
        _http(mtls_receiver, pki, client=client).export(_spans(service + "-http")) == SpanExportResult.FAILURE
    )
    assert (
        _grpc(mtls_receiver, pki, client=client).export(_spans(service + "-grpc")) == SpanExportResult.FAILURE
    )
    assert (_stored(store, service + "-http"), _stored(store, service + "-grpc")) == (0, 0)


def test_mutual_tls_refuses_before_reading_a_request(mtls_receiver: OtlpReceiver, pki: Pki) -> None:
    # urllib trusts the CA but has no client certificate: the handshake fails, no HTTP status comes back.
    import ssl  # noqa: PLC0415

    ctx = ssl.create_default_context(cafile=pki.ca)
    with pytest.raises(OSError):
        urllib.request.urlopen(
            f"https://127.0.0.1:{mtls_receiver.http_port}/v1/traces", context=ctx, timeout=5
        )


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"cert_file": "server.pem"}, "TLS needs both cert_file and key_file"),
        ({"client_ca_file": "ca.pem"}, "client_ca_file (mutual TLS) needs cert_file and key_file"),
        ({"cert_file": "server.pem", "key_file": "missing.key"}, "missing.key': no such file"),
    ],
)
def test_tls_keys_that_cannot_work_are_one_error_naming_the_key(
    pki: Pki, tls: dict[str, str], message: str
) -> None:
    folder = pki.ca.parent
    tls = {k: str(folder / v) for k, v in tls.items()}
    with pytest.raises(ConfigError) as err:
        load_collect_config({"otlp": {"tls": tls}})
    assert "collect.otlp.tls" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    ("cert", "key", "client_ca", "message"),
    [
        ("server.pem", "client.key", None, "are not a PEM certificate and its unencrypted private key"),
        ("ca.pem", "ca.pem", None, "are not a PEM certificate and its unencrypted private key"),
        ("server.pem", "server.key", "server.key", "client_ca_file"),
    ],
    ids=["key of another certificate", "no key", "a key for a CA"],
)
def test_tls_files_that_do_not_load_are_one_error_naming_them(
    pki: Pki, store: Store, cert: str, key: str, client_ca: str | None, message: str
) -> None:
    folder = pki.ca.parent
    tls = {"cert_file": folder / cert, "key_file": folder / key}
    if client_ca is not None:
        tls["client_ca_file"] = folder / client_ca
    cfg = OtlpConfig(http_port=0, grpc_port=0, tls=tls)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as err:
        OtlpReceiver(store, cfg)
    assert message in str(err.value) and str(folder / (client_ca or key)) in str(err.value)


@pytest.mark.parametrize(
    ("settings", "warned"),
    [
        ({"host": "0.0.0.0"}, True),
        ({"host": "localhost"}, False),
        ({"host": "127.0.0.1"}, False),
        ({"host": "0.0.0.0", "bearer_token": "t0ken"}, False),
        ({"host": "0.0.0.0", "allow_unauthenticated": True}, False),
    ],
    ids=["open", "localhost", "loopback", "token", "override"],
)
def test_a_receiver_open_beyond_loopback_without_a_token_warns_at_start(
    store: Store, caplog: pytest.LogCaptureFixture, settings: dict[str, object], warned: bool
) -> None:
    r = OtlpReceiver(store, OtlpConfig(http_port=0, grpc_enabled=False, **settings))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="hopscope.collectors.otlp"):
        r.start()
    r.stop(grace_s=1)
    warnings = [m for m in caplog.messages if "authenticates no client" in m]
    assert bool(warnings) == warned, caplog.messages
    if warned:
        assert "allow_unauthenticated = true" in warnings[0] and "bearer_token" in warnings[0]


def test_hopscope_collect_serves_tls_on_an_open_address_and_warns_that_it_authenticates_no_client(
    pki: Pki, tmp_path: Path
) -> None:
    """The real entry point: `hopscope collect --config` on 0.0.0.0 with TLS takes an export over https,
    and says at start that nobody is authenticated (the override is tested on the receiver above)."""
    root = Path(__file__).resolve().parents[1]
    config = tmp_path / "hopscope.toml"
    config.write_text(
        f"[store]\npath = '{tmp_path / 'store'}'\n"
        "[collect.otlp]\nhost = '0.0.0.0'\nhttp_port = 0\ngrpc_enabled = false\n"
        f"[collect.otlp.tls]\ncert_file = '{pki.server_cert}'\nkey_file = '{pki.server_key}'\n"
        "[collect.metrics]\nenabled = false\n[collect.nvml]\nenabled = false\n[collect.network]\nenabled = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    log = tmp_path / "collect.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hopscope.cli", "collect", "--config", str(config)],
            cwd=root, env=env, stdout=err, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_until(lambda: proc.poll() is not None or "https://0.0.0.0:" in log.read_text(), 60, "the start")
        text = log.read_text()
        port = int(re.search(r"https://0\.0\.0\.0:(\d+)/v1/traces", text).group(1))  # type: ignore[union-attr]
        exporter = HttpExporter(endpoint=f"https://127.0.0.1:{port}/v1/traces", certificate_file=str(pki.ca))
        assert exporter.export(_spans("collect-tls")) == SpanExportResult.SUCCESS
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert "WARNING" in text and "authenticates no client" in text, text

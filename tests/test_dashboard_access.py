"""Who may load the dashboard and who may frame it, in Chromium against `hopscope dashboard`: the trusted
user header mode refuses without the header and serves with it, every response forbids framing, and
docs/nginx/hopscope-dashboard.conf, as shipped, signs people in and passes the header on."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.binaries import require_binary
from support.certs import make_pki
from support.demo import RULES
from support.servers import stop_process
from support.waiting import wait_until

from hopscope.config import load_config
from hopscope.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NGINX_EXAMPLE = ROOT / "docs" / "nginx" / "hopscope-dashboard.conf"
HEADER = "X-Forwarded-User"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def hopscope_dashboard(store: Path, log: Path, **settings: str) -> Iterator[str]:
    """`hopscope dashboard` on `store` with [dashboard] settings from the environment, stopped by its id."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_DASHBOARD")}
    env |= {f"HOPSCOPE_DASHBOARD__{k.upper()}": v for k, v in settings.items()}
    env |= {"HOPSCOPE_SLO__RULES": RULES}
    cmd = [sys.executable, "-m", "hopscope.cli", "dashboard", "--store", str(store), "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: proc.poll() is not None or _up(url + "/_stcore/health"), 60, "the dashboard's start"
        )
        assert proc.poll() is None, log.read_text()[-2000:]
        yield url
    finally:
        stop_process(proc, 10)


@pytest.fixture(scope="module")
def guarded(dash_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("dashboard-access") / "dashboard.log"
    with hopscope_dashboard(dash_store, log, user_header=f'"{HEADER}"') as url:
        yield url


def _overview_drawn(page: Any) -> None:
    page.wait_for_selector("h1", timeout=60_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot .gtitle')]"
        ".some(t => t.textContent.startsWith('End-to-end latency'))",
        timeout=60_000,
    )


def _no_framing(headers: dict[str, str]) -> None:
    assert headers.get("x-frame-options") == "DENY"
    assert headers.get("content-security-policy") == "frame-ancestors 'none'"
    assert headers.get("referrer-policy") == "no-referrer"


def test_without_the_proxys_header_the_dashboard_refuses_and_shows_nothing(
    guarded: str, browser: Any
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(guarded + "/?range=7d")
        assert response.status == 403
        _no_framing(response.headers)
        assert "served only through its sign-in proxy" in page.inner_text("body")
        assert page.query_selector("h1") is None
        # The WebSocket the app runs over is refused as well, not only the page.
        ws = page.evaluate(
            """url => new Promise(done => { const w = new WebSocket(url);
                 w.onopen = () => done('open'); w.onerror = () => done('refused'); })""",
            guarded.replace("http", "ws") + "/_stcore/stream",
        )
        assert ws == "refused"
    finally:
        context.close()


def test_with_the_proxys_header_the_dashboard_serves_and_forbids_framing(guarded: str, browser: Any) -> None:
    context = browser.new_context(
        extra_http_headers={HEADER: "alice"}, viewport={"width": 1500, "height": 1100}
    )
    try:
        page = context.new_page()
        response = page.goto(guarded + "/?range=7d")
        assert response.status == 200
        _no_framing(response.headers)
        _overview_drawn(page)
        # Another origin framing it gets Chromium's refusal, not the dashboard.
        framer = context.new_page()
        framer.set_content(f'<iframe id="d" src="{guarded}/" width="800" height="600"></iframe>')
        wait_until(
            lambda: len(framer.frames) == 2 and framer.frames[1].url != "about:blank", 20, "the frame's load"
        )
        framer.wait_for_timeout(500)
        assert framer.frames[1].url.startswith("chrome-error://"), framer.frames[1].url
    finally:
        context.close()


def test_the_health_check_needs_no_header(guarded: str) -> None:
    assert _up(guarded + "/_stcore/health")


@pytest.mark.parametrize(
    ("key", "value"),
    [("user_header", "X-User: alice"), ("frame_ancestors", ["https://a.example https://b.example"])],
)
def test_a_header_or_frame_source_that_would_inject_is_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, environ={f"HOPSCOPE_DASHBOARD__{key.upper()}": repr(value).replace("'", '"')})
    assert f"dashboard.{key}" in str(err.value)


def test_with_streamlits_oidc_login_configured_a_stranger_sees_only_the_sign_in_button(
    dash_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest  # noqa: PLC0415  (Streamlit's test harness, this test only)

    monkeypatch.setenv("HOPSCOPE_STORE", str(dash_store))
    monkeypatch.setenv("HOPSCOPE_SLO_RULES", RULES)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=90)
    at.secrets["auth"] = {
        "redirect_uri": "http://127.0.0.1:8501/oauth2callback",
        "cookie_secret": "not-a-secret",
        "client_id": "hopscope",
        "client_secret": "not-a-secret",
        "server_metadata_url": "https://idp.example.com/.well-known/openid-configuration",
    }
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [b.label for b in at.button] == ["Sign in"]
    assert [t.value for t in at.title] == ["hopscope"]
    assert not at.get("plotly_chart") and not at.metric, "nothing of the store is shown"


def _nginx_conf(tmp: Path, dashboard: str, listen: int) -> Path:
    """The shipped example, with this test's ports and files in place of /etc/nginx's."""
    pki = make_pki(tmp)
    digest = base64.b64encode(hashlib.sha1(b"s3cret").digest()).decode()  # noqa: S324  (nginx's {SHA} scheme)
    (tmp / "htpasswd").write_text(f"alice:{{SHA}}{digest}\n")
    server = (
        NGINX_EXAMPLE.read_text()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{listen} ssl;")
        .replace("http://127.0.0.1:8501", dashboard)
        .replace("/etc/nginx/tls/hopscope.pem", str(pki.server_cert))
        .replace("/etc/nginx/tls/hopscope.key", str(pki.server_key))
        .replace("/etc/nginx/hopscope.htpasswd", str(tmp / "htpasswd"))
    )
    conf = tmp / "nginx.conf"
    # As root, nginx's workers would drop to nobody, who cannot read pytest's private tmp folder.
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}pid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\nhttp {{\n"
        f"access_log off;\nclient_body_temp_path {tmp}/body;\nproxy_temp_path {tmp}/proxy;\n"
        f"fastcgi_temp_path {tmp}/f;\nuwsgi_temp_path {tmp}/u;\nscgi_temp_path {tmp}/s;\n{server}\n}}\n"
    )
    return conf


def test_the_shipped_nginx_example_signs_people_in_and_passes_the_header(
    guarded: str, browser: Any, tmp_path: Path
) -> None:
    nginx = require_binary("/usr/sbin/nginx", "nginx-light")
    listen = _free_port()
    conf = _nginx_conf(tmp_path, guarded, listen)
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"])
    url = f"https://127.0.0.1:{listen}"
    try:
        wait_until(lambda: proc.poll() is not None or _port_open(listen), 20, "nginx's start")
        assert proc.poll() is None, (tmp_path / "error.log").read_text()
        stranger = browser.new_context(ignore_https_errors=True)
        try:  # a client's own header is no sign-in: nginx asks for one (Chromium's request API: a page
            # without credentials to offer fails the navigation instead of showing the 401)
            assert stranger.request.get(url + "/", headers={HEADER: "mallory"}).status == 401
        finally:
            stranger.close()
        alice = browser.new_context(
            ignore_https_errors=True,
            http_credentials={"username": "alice", "password": "s3cret"},
            viewport={"width": 1500, "height": 1100},
        )
        try:
            page = alice.new_page()
            response = page.goto(url + "/?range=7d")
            assert response.status == 200, (tmp_path / "error.log").read_text()[-2000:]
            _no_framing(response.headers)
            _overview_drawn(page)  # the app's WebSocket went through nginx with the header too
        finally:
            alice.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

"""A real Alertmanager (Debian's prometheus-alertmanager) whose one receiver is a webhook to a small HTTP
sink in the test process: what Alertmanager notifies arrives in ``WebhookSink.notifications``."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from support.binaries import require_binary
from support.servers import ServerProcess, free_port

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


class WebhookSink:
    """Collects the webhook notifications Alertmanager POSTs (one JSON document each)."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    sink.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Every alert notified so far (a notification holds its group's alerts), optionally by status and labels."""
        with self._lock:
            found = [a for n in self.notifications for a in n["alerts"]]
        return [
            a
            for a in found
            if (status is None or a["status"] == status)
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_config(webhook_url: str) -> str:
    """One route to the webhook; short group waits so a test sees a notification within seconds, and a
    repeat interval longer than any test, so a second notification of an alert means a new alert."""
    return (
        "route:\n"
        "  receiver: sink\n"
        "  group_by: [alertname, slo, severity]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 4h\n"
        "receivers:\n"
        "  - name: sink\n"
        "    webhook_configs:\n"
        f"      - url: {webhook_url}\n"
        "        send_resolved: true\n"
    )


@contextmanager
def alertmanager(root: Path, webhook_url: str) -> Iterator[ServerProcess]:
    """Alertmanager on a free loopback port with its own config and storage under ``root``, clustering off."""
    binary = require_binary(ALERTMANAGER, "prometheus-alertmanager")
    root.mkdir(parents=True, exist_ok=True)
    config = root / "alertmanager.yml"
    config.write_text(alertmanager_config(webhook_url))
    port = free_port()
    server = ServerProcess(
        port,
        [binary, f"--config.file={config}", f"--storage.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        root / "alertmanager.log",
    )  # fmt: skip
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

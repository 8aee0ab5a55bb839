"""Clients that misbehave against an OTLP/HTTP receiver, on real sockets, and a watch on its process.

Each attack opens its connections, sends what it sends, then waits for the receiver to close them,
recording when: `Attack.cut_after_s` is how long each connection lived after its last byte was sent.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_collect(
    tmp: Path, otlp_keys: str, *, root: Path = ROOT
) -> tuple[subprocess.Popen[bytes], int, int]:
    """`hopscope collect` of the checkout `root` in a subprocess, OTLP/HTTP only (with `otlp_keys`
    added to [collect.otlp]), /metrics on, no NVML or network collector; its output goes to
    tmp/collect.log, its store to tmp/store. Returns once it listens: (process, HTTP port, /metrics port)."""
    http_port, metrics_port = free_port(), free_port()
    config = tmp / "hopscope.toml"
    config.write_text(
        "[collect]\nhost_name = 'test'\n"
        f"[collect.otlp]\nhttp_port = {http_port}\ngrpc_enabled = false\n{otlp_keys}\n"
        f"[collect.metrics]\nport = {metrics_port}\n[collect.nvml]\nenabled = false\n"
        "[collect.network]\nenabled = false\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    env["PYTHONPATH"] = str(root)
    with (tmp / "collect.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hopscope.collectors.cli", "--config", str(config), "--store", str(tmp / "store")],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError((tmp / "collect.log").read_text())
        try:
            socket.create_connection(("127.0.0.1", http_port), timeout=0.2).close()
            return proc, http_port, metrics_port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("hopscope collect did not start listening within 60 s")


def proc_status(pid: int) -> tuple[float, int]:
    """(resident MiB, threads) of a process, from /proc/PID/status."""
    status = _status_kib(pid)
    return status["VmRSS"] / 1024, status["Threads"]


def anon_mib(pid: int) -> float:
    """The process's resident memory less its file-backed pages (RssAnon + RssShmem), in MiB.

    RSS also counts the pages of the libraries it maps (DuckDB, Arrow, ...) that the kernel maps from
    the page cache, and how many it maps depends on what the page cache holds: the same daemon sits at
    ~220 MiB at rest beside libraries installed long ago and ~295 MiB beside a venv just installed."""
    status = _status_kib(pid)
    return (status["RssAnon"] + status["RssShmem"]) / 1024


def _status_kib(pid: int) -> dict[str, int]:
    wanted = ("VmRSS", "RssAnon", "RssShmem", "Threads")
    out = dict.fromkeys(wanted, 0)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in wanted:
            out[key] = int(value.split()[0])
    return out


class Watch:
    """Samples a process's RSS and threads every `every_s` in a thread; keeps the peaks."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid = pid
        self.peak_rss_mib = 0.0
        self.peak_anon_mib = 0.0
        self.peak_threads = 0
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(0.05):
            try:
                rss, threads = proc_status(self.pid)
                anon = anon_mib(self.pid)
            except (FileNotFoundError, ProcessLookupError):
                return
            self.peak_rss_mib = max(self.peak_rss_mib, rss)
            self.peak_anon_mib = max(self.peak_anon_mib, anon)
            self.peak_threads = max(self.peak_threads, threads)
            self.samples.append((time.monotonic() - t0, rss, threads))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Attack:
    """Connections that send part of a request and stall; what happened to each."""

    port: int
    host: str = "127.0.0.1"
    token: str | None = None
    opened: int = 0
    refused_at_once: int = 0  # answered (429/503) or closed before the stall began
    statuses: list[int] = field(default_factory=list)
    cut_after_s: list[float] = field(default_factory=list)
    still_open: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _headers(self, length: int) -> bytes:
        auth = f"Authorization: Bearer {self.token}\r\n" if self.token else ""
        return (
            f"POST /v1/traces HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/x-protobuf\r\n"
            f"{auth}Content-Length: {length}\r\n\r\n"
        ).encode()

    def stalled_bodies(self, n: int, length: int, missing: int, wait_s: float) -> None:
        """n connections each sending all but `missing` bytes of a `length`-byte body, then stalling."""
        self._run(n, lambda: (self._headers(length), b"\0" * (length - missing)), wait_s)

    def half_headers(self, n: int, wait_s: float) -> None:
        """n connections each sending half of a request's headers, then stalling."""
        head = self._headers(10_000)
        self._run(n, lambda: (head[: len(head) // 2], b""), wait_s)

    def half_bodies(self, n: int, length: int, wait_s: float) -> None:
        """n connections each sending whole headers and half of a small body, then stalling."""
        self._run(n, lambda: (self._headers(length), b"\0" * (length // 2)), wait_s)

    def _run(self, n: int, parts: object, wait_s: float) -> None:
        threads = [threading.Thread(target=self._one, args=(parts, wait_s), daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _one(self, parts: object, wait_s: float) -> None:
        head, body = parts()  # type: ignore[operator]
        try:
            sock = socket.create_connection((self.host, self.port), timeout=wait_s)
        except OSError:
            with self._lock:
                self.refused_at_once += 1
            return
        with self._lock:
            self.opened += 1
        try:
            sock.sendall(head)
            if body:
                sock.sendall(body)
        except OSError:  # closed while sending: refused before the stall
            with self._lock:
                self.refused_at_once += 1
            sock.close()
            return
        stalled_at = time.monotonic()
        try:
            data = sock.recv(4096)  # blocks until the receiver answers or closes
        except TimeoutError:
            with self._lock:
                self.still_open += 1
            sock.close()
            return
        except OSError:
            data = b""
        lived = time.monotonic() - stalled_at
        with self._lock:
            if data.startswith(b"HTTP/1.1 "):
                self.statuses.append(int(data[9:12]))
            if lived < 0.5 and data[9:12] in (b"429", b"503"):
                self.refused_at_once += 1
            else:
                self.cut_after_s.append(lived)
        sock.close()

"""The store's backends for the tests: `local` (SQLite catalog and Parquet in the folder, the default) and
`postgres+s3` (a real PostgreSQL catalog and a real S3-compatible bucket).

PostgreSQL is Debian's `postgresql` package: a temporary cluster (initdb, pg_ctl) is started once per
session in a temporary folder on a free port, as `nobody` when the tests run as root (PostgreSQL refuses
to run as root), with password authentication. The S3 server is `moto` in server mode (PyPI
`moto[server]`), started once per session on a free port: an S3-compatible endpoint, not AWS itself.
Each store gets a database and a bucket prefix of its own. A missing component skips, except under
CI=true, where it fails.

A test takes the `stores` fixture and opens its stores with `stores(path, **kwargs)`; it runs once per
backend. Tests that are about the SQLite catalog itself (WAL, its locks, a read-only or full disk) carry
`@pytest.mark.sqlite_only("why")` and are skipped on the other backend with that reason.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.binaries import in_ci

from hopscope.store import Backend, S3Settings, Store

PASSWORD_ENV = "HOPSCOPE_TEST_PGPASSWORD"  # not PGPASSWORD: the store must pass a named variable on itself
S3_KEY = "hopscope-test-key"
S3_SECRET = "hopscope-test-secret"
BUCKET = "hopscope-test"
BACKENDS = ("local", "postgres+s3")


def _missing(message: str) -> None:
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


@dataclass
class PostgresServer:
    bin: Path
    port: int
    user: str
    password: str
    env: dict[str, str] = field(default_factory=dict)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = "hs_" + secrets.token_hex(6)
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name],
            env={**os.environ, "PGPASSWORD": self.password},
            check=True,
            capture_output=True,
            timeout=30,
        )
        return name


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A temporary PostgreSQL cluster with password authentication, for this session only."""
    pg_bin = _postgres_bin()
    if pg_bin is None:
        _missing("PostgreSQL not found: install the Debian package 'postgresql' (make test does so as root)")
    assert pg_bin is not None
    root = Path(tempfile.mkdtemp(prefix="hopscope-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        run_as = {"user": "nobody", "group": "nogroup"}
        shutil.chown(root, "nobody", "nogroup")
    password = secrets.token_urlsafe(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    if run_as:
        shutil.chown(pwfile, "nobody", "nogroup")
    data, port = root / "data", free_port()
    subprocess.run(
        [str(pg_bin / "initdb"), "-D", str(data), "-U", "hopscope", f"--pwfile={pwfile}",
         "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True, timeout=120, **run_as,
    )  # fmt: skip
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(
        [str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True, capture_output=True, timeout=120, **run_as,
    )  # fmt: skip
    server = PostgresServer(pg_bin, port, "hopscope", password)
    previous = os.environ.get(PASSWORD_ENV)
    os.environ[PASSWORD_ENV] = password  # the stores' worker processes inherit it
    try:
        yield server
    finally:
        subprocess.run(
            [str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True, timeout=60, **run_as,
        )  # fmt: skip
        if previous is None:
            os.environ.pop(PASSWORD_ENV, None)
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class S3Server:
    endpoint: str  # host:port

    def settings(self) -> S3Settings:
        return S3Settings(endpoint=self.endpoint, region="us-east-1", url_style="path", use_ssl=False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3-compatible server on a free port, with one bucket; credentials in AWS_* variables."""
    try:
        import boto3
        import moto.server  # noqa: F401
    except ImportError:
        _missing("moto[server] not installed: pip install -e '.[dev]' (make test does so)")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    try:
        _wait_port(port, proc, "moto_server")
        boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)
        yield S3Server(f"127.0.0.1:{port}")
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Stores:
    """Opens the test's stores on one backend; the same path always means the same store."""

    def __init__(self, kind: str, postgres: PostgresServer | None, s3: S3Server | None) -> None:
        self.kind = kind
        self._postgres = postgres
        self._s3 = s3
        self._backends: dict[Path, Backend] = {}

    def backend(self, path: str | Path) -> Backend | None:
        if self.kind == "local":
            return None
        key = Path(path).resolve()
        if key not in self._backends:
            assert self._postgres is not None and self._s3 is not None
            database = self._postgres.create_database()
            self._backends[key] = Backend(
                self._postgres.url(database),
                f"s3://{BUCKET}/{database}",
                password_env=PASSWORD_ENV,
                s3=self._s3.settings(),
            )
        return self._backends[key]

    def __call__(self, path: str | Path, **kwargs: Any) -> Store:
        return Store(path, backend=self.backend(path), **kwargs)

    def argv(self, path: str | Path) -> list[str]:
        """The path and backend, as tests/store_worker.py and other processes take them."""
        backend = self.backend(path)
        return [str(path), backend.to_json() if backend else ""]


@pytest.fixture(params=BACKENDS)
def stores(request: pytest.FixtureRequest) -> Stores:
    marker = request.node.get_closest_marker("sqlite_only")
    if request.param == "local":
        return Stores("local", None, None)
    if marker is not None:
        pytest.skip(f"SQLite catalog only: {marker.args[0] if marker.args else ''}")
    return Stores(
        request.param, request.getfixturevalue("postgres_server"), request.getfixturevalue("s3_server")
    )


def open_from_argv(path: str, backend_json: str, **kwargs: Any) -> Store:
    """The other half of Stores.argv, in a worker process."""
    return Store(path, backend=Backend.from_json(backend_json) if backend_json else None, **kwargs)

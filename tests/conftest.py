"""Shared fixtures: the demo store (generated once per session) and real system binaries.

A test that needs a Debian package (prometheus, prometheus-node-exporter, chromium) calls
`require_binary`: it skips with a reason naming the package, except under CI=true, where a
missing component fails the run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "sample_data" / "scenario.yaml"
# A fixed end keeps the demo store, and every figure read from it, the same in every run.
DEMO_END = datetime(2026, 11, 20, 12, 0)
# The demo scenario's SLI, which the diagnosis no longer assumes: tests name it as a user's SLO would.
DEMO_TARGET = {"service": "api-gateway", "route": "/recommend", "threshold_ms": 200.0}
# The store's backends (local; PostgreSQL + S3) as fixtures: `stores`, `postgres_server`, `s3_server`.
pytest_plugins = ["store_backends"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_binary(path: str, package: str) -> str:
    """The binary's path, or skip (fail under CI=true) naming the Debian package that provides it."""
    found = path if os.path.isabs(path) and os.access(path, os.X_OK) else shutil.which(path)
    if found:
        return found
    message = f"{path} not found: install the Debian package {package!r} (make test does so as root)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def load_benchmark(name: str) -> ModuleType:
    """A script under benchmarks/ (not a package), imported once so tests can reuse its functions."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo scenario's store, generated once per session with a fixed end."""
    from hopscope.demo import generate

    path = tmp_path_factory.mktemp("demo") / "store"
    generate(SCENARIO, path, end=DEMO_END)
    return path

"""Shared fixtures: the demo store (generated once per session), the dashboard's stores and one Chromium.

Plain helpers shared by several test modules live in tests/support/; test modules import those, never
each other or this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from support.binaries import require_binary
from support.demo import DEMO_END, SCENARIO
from support.handbuilt import build_store

from hopscope.demo import generate
from hopscope.store import Store

# The store's backends (local; PostgreSQL + S3) as fixtures: `stores`, `postgres_server`, `s3_server`.
pytest_plugins = ["store_backends"]

H200 = Path(__file__).resolve().parent / "fixtures" / "h200_nvml_samples.parquet"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo scenario's store, generated once per session with a fixed end."""
    path = tmp_path_factory.mktemp("demo") / "store"
    generate(SCENARIO, path, end=DEMO_END)
    return path


@pytest.fixture(scope="session")
def dash_store(demo_store: Path) -> Path:
    """The demo store (generated once per session by demo_store)."""
    return demo_store


@pytest.fixture(scope="session")
def evil_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-built store whose span names are script and img tags."""
    path = tmp_path_factory.mktemp("evil") / "store"
    build_store(path, evil=True).close()
    return path


@pytest.fixture(scope="session")
def h200_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding only 36 s of real 1 Hz NVML samples (idle, 20 s of matmul with 8 GiB held, idle)."""
    path = tmp_path_factory.mktemp("h200") / "store"
    s = Store.open(path)
    s.append("samples", pq.read_table(H200))
    s.close()
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (Playwright's sync API allows one running instance per thread)."""
    chromium = require_binary("/usr/bin/chromium", "chromium")
    # Playwright is a dev extra only browser tests need: imported here, not when conftest loads.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium_browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield chromium_browser
        chromium_browser.close()

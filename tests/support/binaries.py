"""Real system binaries (Debian packages) the tests start: found, or the test is skipped with a reason.

A test that needs a Debian package (prometheus, prometheus-node-exporter, chromium) calls
`require_binary`: it skips with a reason naming the package, except under CI=true, where a
missing component fails the run.
"""

from __future__ import annotations

import os
import shutil

import pytest


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

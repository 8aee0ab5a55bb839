"""Waiting for something to happen: poll its condition until a deadline, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    """Return once `predicate()` is true; fail naming `what` did not happen if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout:g} s")
        time.sleep(interval)

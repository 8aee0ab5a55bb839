"""hop_minutes rows built by hand, for SLO tests on a real store: one row per minute x edge."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from hopscope import histogram


def hop_minute_row(
    minute: datetime,
    client: str,
    server: str,
    durations: np.ndarray,
    errors: int,
    thresholds: list[float],
    route: str = "/recommend",
) -> dict:
    """One minute of one edge: the requests' durations (ms), how many failed, and exact counts at
    or under each threshold (``good_le_ms``); the histogram holds every duration."""
    idx, cnt = histogram.from_values(durations)
    return {
        "minute": minute,
        "client": client,
        "server": server,
        "route": route,
        "count": len(durations),
        "errors": errors,
        "duration_ms_sum": float(durations.sum()),
        "duration_ms_max": float(durations.max()),
        "client_ms_sum": 0.0,
        "server_ms_sum": float(durations.sum()),
        "gap_ms_sum": 0.0,
        "self_ms_sum": 0.0,
        "skewed": 0,
        "hist_idx": idx,
        "hist_cnt": cnt,
        "good_le_ms": thresholds,
        "good_cnt": [int((durations <= t).sum()) for t in thresholds],
        "exemplars": [],
    }


def gateway_minute(rng: np.random.Generator, minute: datetime, breach: tuple[datetime, datetime]) -> dict:
    """A minute of the api-gateway's /recommend entry edge: 20 requests of 20-120 ms; inside
    ``breach`` half of them take 400 ms and two fail."""
    slow = breach[0] <= minute < breach[1]
    d = rng.uniform(20, 120, 20)
    if slow:
        d[:10] = 400.0
    return hop_minute_row(minute, "", "api-gateway", d, 2 if slow else 0, [200.0])

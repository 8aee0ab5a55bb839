"""Durations and times, one grammar each everywhere: hopscope.toml, SLO files, the CLI, the dashboard and demo.

    parse_duration("90s") == timedelta(seconds=90)
    parse_duration("1h30m") == timedelta(minutes=90)        # parts add up, Prometheus-style
    parse_duration("500ms"), parse_duration("2w")           # units: ms s m h d w
    parse_duration(90, bare_seconds=True)                   # a TOML number: seconds

A duration is positive. A bare number is seconds only where the caller says so (a TOML value
that is a number); in text ("5") it is refused, since "5 what?" has no safe answer.

    parse_utc("2025-03-01T12:00") == datetime(2025, 3, 1, 12)        # no offset: already UTC
    parse_utc("2025-03-01T14:00+02:00") == datetime(2025, 3, 1, 12)  # an offset is converted
    parse_utc("2025-03-01T12:00Z")                                    # Z is UTC

A time is ISO 8601 and comes back naive UTC, the store's time everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(value: Any, *, bare_seconds: bool = False) -> timedelta:
    """``5m``, ``1h30m``, ``500ms``, ``28d``, ``2w`` -> timedelta; ValueError naming the value otherwise."""
    if bare_seconds and isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"{value!r} is not a positive number of seconds")
        return timedelta(seconds=float(value))
    text = str(value).strip()
    if not text or _PART.sub("", text).strip() != "":
        raise ValueError(f"{value!r} is not a duration like 500ms, 30s, 5m, 1h30m or 28d")
    total = sum((float(num) * _UNIT[unit] for num, unit in _PART.findall(text)), timedelta(0))
    if total <= timedelta(0):
        raise ValueError(f"{value!r} is not a positive duration")
    return total


def format_duration(td: timedelta) -> str:
    """timedelta -> the shortest Prometheus-style label (``1h``, ``30m``, ``3d``, ``90s``)."""
    secs = int(round(td.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def parse_utc(value: str | datetime) -> datetime:
    """ISO-8601 text (or a datetime) -> naive UTC; ValueError naming the value otherwise."""
    if isinstance(value, datetime):
        t = value
    else:
        try:
            t = datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO time like 2025-03-01T12:00 or 2025-03-01T12:00Z"
            ) from None
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t

"""Reading a daemon's /metrics page (Prometheus text exposition) in tests."""

from __future__ import annotations


def metric_value(text: str, sample: str) -> float:
    """The value of one sample (name and labels, as exposed), or 0 while it is not exposed yet."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0

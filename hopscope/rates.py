"""Counter rates, defined once: per-sample increases summed per bucket, over the seconds they span.

A counter's increase between two samples of one series is the difference, except where the value
dropped: the counter restarted from 0, so the new value is the increase (Prometheus ``increase()``
semantics). A bucket's rate is the sum of the increases of its samples (each against the sample
before it, which may lie in the bucket before) over the sum of the seconds between them; a series'
first sample has no increase.

``counter_rate_sql`` is the definition in DuckDB (the dashboard's charts, the diagnosis' SQL read),
``counter_rates`` the same in numpy (the diagnosis' one-scan read); tests tie the two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def counter_rate_sql(rows: str, series: Sequence[str], bucket: str) -> str:
    """SQL of one row per series and bucket of `rows` (a relation with the columns series..., bucket,
    ts, value): columns series..., bucket, value (the per-second rate; NULL when no time passed) and
    n (the increases counted). Names are identifiers from the caller's code, never input."""
    k = ", ".join(series)
    return f"""SELECT {k}, {bucket}, sum(CASE WHEN dv < 0 THEN value ELSE dv END) / nullif(sum(dt), 0) AS value,
               count(*) AS n
        FROM (
            SELECT {k}, {bucket}, value, value - lag(value) OVER w AS dv, epoch(ts) - epoch(lag(ts) OVER w) AS dt
            FROM {rows} WINDOW w AS (PARTITION BY {k} ORDER BY ts)
        ) WHERE dv IS NOT NULL GROUP BY {k}, {bucket}"""


def counter_rates(
    series: np.ndarray, us: np.ndarray, value: np.ndarray, cell: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """counter_rate_sql in numpy: (cells, rates) from rows sorted by series, then time.

    series: an integer per row naming its series; us: its time (microseconds); value: the counter;
    cell: the bucket its increase counts in (any integer naming series and bucket; < 0: counted in none).
    rates[j] is the per-second rate of cells[j] (NaN where no time passed), cells ascending.
    """
    cur = np.flatnonzero(series[1:] == series[:-1]) + 1
    prev = cur - 1
    dv = value[cur] - value[prev]
    increase = np.where(dv < 0, value[cur], dv)
    dt = us[cur] / 1e6 - us[prev] / 1e6
    keep = cell[cur] >= 0
    cells, inv = np.unique(cell[cur][keep], return_inverse=True)
    num = np.bincount(inv.ravel(), weights=increase[keep], minlength=len(cells))
    den = np.bincount(inv.ravel(), weights=dt[keep], minlength=len(cells))
    with np.errstate(all="ignore"):
        return cells, np.where(den != 0, num / den, np.nan)

"""Log-spaced latency buckets: any percentile or threshold within 5 % relative error.

Bucket ``i`` holds durations in ``(GAMMA**(i-1), GAMMA**i]`` milliseconds and is
read back as the geometric middle of its bounds, so the relative error of any
value read from it is at most ``(sqrt(GAMMA) - 1) ≈ 4.9 %``. Durations at or
below ``MIN_MS`` all go to bucket ``MIN_INDEX``.

``quantile`` reads a quantile in Python, ``quantiles_sql`` the same in DuckDB (tests tie the two).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

GAMMA = 1.1
MIN_MS = 0.001
_LOG_GAMMA = math.log(GAMMA)
MIN_INDEX = math.ceil(math.log(MIN_MS) / _LOG_GAMMA)


def bucket_index(ms: np.ndarray | float) -> np.ndarray:
    """Bucket index for each duration in milliseconds."""
    arr = np.maximum(np.asarray(ms, dtype=np.float64), MIN_MS)
    return np.maximum(np.ceil(np.log(arr) / _LOG_GAMMA - 1e-9), MIN_INDEX).astype(np.int32)


def bucket_value(idx: np.ndarray | int) -> np.ndarray:
    """Representative value (geometric middle) of each bucket, in milliseconds."""
    return np.power(GAMMA, np.asarray(idx, dtype=np.float64) - 0.5)


def bucket_upper(idx: np.ndarray | int) -> np.ndarray:
    return np.power(GAMMA, np.asarray(idx, dtype=np.float64))


def merge(
    idx_lists: Sequence[Sequence[int]], cnt_lists: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Sum several sparse histograms into one, sorted by bucket index."""
    if not idx_lists:
        return np.empty(0, np.int32), np.empty(0, np.int64)
    idx = np.concatenate([np.asarray(i, dtype=np.int32) for i in idx_lists])
    cnt = np.concatenate([np.asarray(c, dtype=np.int64) for c in cnt_lists])
    if idx.size == 0:
        return idx, cnt
    uniq, inv = np.unique(idx, return_inverse=True)
    return uniq.astype(np.int32), np.bincount(inv, weights=cnt).astype(np.int64)


def quantile(idx: Sequence[int] | np.ndarray, cnt: Sequence[int] | np.ndarray, q: float) -> float | None:
    """The q-quantile (0..1) of a sparse histogram; None when it is empty."""
    i = np.asarray(idx, dtype=np.int32)
    c = np.asarray(cnt, dtype=np.int64)
    total = int(c.sum())
    if total == 0:
        return None
    order = np.argsort(i)
    i, c = i[order], c[order]
    rank = q * total
    pos = int(np.searchsorted(np.cumsum(c), max(rank, 1e-12), side="left"))
    return float(bucket_value(i[min(pos, len(i) - 1)]))


def quantiles_sql(rows: str, keys: Sequence[str], quantiles: Mapping[str, float]) -> str:
    """SQL of quantile() in DuckDB: one row per group of `keys` in `rows` (a relation or CTE with the
    columns keys..., hist_idx, hist_cnt), with the merged histogram's quantiles as the columns named
    by `quantiles` (name -> q in 0..1). Names and keys are identifiers from the caller's code, never input."""
    k = ", ".join(keys)
    # as quantile(): the first bucket whose running count reaches q x total (in floats), read at its middle
    cols = ", ".join(
        f"pow({GAMMA!r}::DOUBLE, min(i) FILTER (WHERE cum >= greatest({float(q)!r}::DOUBLE * tot, 1e-12)) - 0.5)"
        f" AS {name}"
        for name, q in quantiles.items()
    )
    return f"""SELECT {k}, {cols} FROM (
            SELECT {k}, i, sum(c) OVER (PARTITION BY {k} ORDER BY i) AS cum, sum(c) OVER (PARTITION BY {k}) AS tot
            FROM (
                SELECT {k}, i, sum(c) AS c
                FROM (SELECT {k}, unnest(hist_idx) AS i, unnest(hist_cnt) AS c FROM {rows})
                GROUP BY {k}, i
            )
        ) GROUP BY {k}"""


def count_at_most(
    idx: Sequence[int] | np.ndarray, cnt: Sequence[int] | np.ndarray, threshold_ms: float
) -> int:
    """Approximate count of durations <= threshold (buckets wholly below it)."""
    i = np.asarray(idx, dtype=np.int32)
    c = np.asarray(cnt, dtype=np.int64)
    return int(c[i <= int(bucket_index(threshold_ms))].sum())


def from_values(ms: np.ndarray) -> tuple[list[int], list[int]]:
    """Sparse histogram of raw durations."""
    if len(ms) == 0:
        return [], []
    uniq, counts = np.unique(bucket_index(ms), return_counts=True)
    return uniq.tolist(), counts.tolist()

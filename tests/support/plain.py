"""A store as a reader with no identity: nothing is kept for it by folder and snapshot (held rows, the
SLO minute cache, corrections), so every answer comes from a read: what a cached answer must equal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from hopscope.store import Store


class PlainStore:
    """`store`'s query() and query_df() only."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        return self._store.query(sql, params)

    def query_df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self._store.query_df(sql, params)

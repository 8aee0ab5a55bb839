"""The Resources page's data: which of its panels have samples."""

from __future__ import annotations

from collections.abc import Sequence

from hopscope.dashboard import cache, state
from hopscope.query import spans, windows


def panels_with_data(w: windows.Window, keys: Sequence[str], service: str | None = None) -> set[str]:
    """The panel keys among `keys` that have samples in the window (one query for them all)."""
    gen = state.gen_of(spans.hop_latency_series)
    panels = cache.panels(state.cache_path(), state.data_end(), w, tuple(keys), service, gen)
    return {k for k, (df, _) in panels.items() if not df.empty}

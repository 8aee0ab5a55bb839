"""SLO statuses that include the minutes not rolled up yet, read from the raw spans.

The rollup writes a minute to ``hop_minutes`` only once it is 2 minutes old (so late spans still
land), at its next tick: an evaluation of ``hop_minutes`` alone pages 2 to 3.5 minutes after the
alert windows hold. For entry-edge SLIs (the trace's root SERVER span of a service, the SLO engine's
raw path ``minute_arrays_from_spans``) the minutes past the rollup's watermark are read from
``spans`` instead; hop SLIs need the rollup's client/server pairing and stay on ``hop_minutes``.
Everything else is the SLO engine's own evaluation (``status_from_arrays`` on the same arrays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

import numpy as np

from hopscope.durations import parse_utc
from hopscope.model import ReadStore
from hopscope.slo.burn import MinuteArrays, SloStatus, status_from_arrays, status_grid_start
from hopscope.slo.corrections import attach_corrections
from hopscope.slo.model import SLO
from hopscope.slo.source import minute_arrays_from_spans, minute_arrays_many, series_of

WATERMARK_KEY = "rollup.watermark"  # hopscope.rollup's: minutes before it are in hop_minutes
_MAX_TAIL = timedelta(hours=1)  # a rollup this far behind is stuck: do not scan an unbounded tail


def _floor(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


class _StateStore(ReadStore, Protocol):
    def get_state(self, key: str) -> str | None: ...


def rollup_watermark(store: _StateStore) -> datetime | None:
    raw = store.get_state(WATERMARK_KEY)
    if not raw:
        return None
    try:
        return _floor(parse_utc(raw))
    except ValueError:
        return None


def entry_edge(slo: SLO) -> bool:
    """The SLO reads an entry edge (what the raw-span path can count)."""
    series = series_of(slo)
    return series is not None and series.client == ""


def overlay(base: MinuteArrays, tail: MinuteArrays) -> MinuteArrays:
    """``base`` with the minutes ``tail`` covers replaced by ``tail``'s (pure)."""
    good, total = base.good.copy(), base.total.copy()
    a, b = max(tail.t0, base.t0), min(tail.t0 + tail.n, base.t0 + base.n)
    if b > a:
        good[a - base.t0 : b - base.t0] = tail.good[a - tail.t0 : b - tail.t0]
        total[a - base.t0 : b - base.t0] = tail.total[a - tail.t0 : b - tail.t0]
    return MinuteArrays(base.t0, np.asarray(good), np.asarray(total))


def evaluate_fresh(store: _StateStore, slos: Sequence[SLO], now: datetime) -> list[SloStatus]:
    """Every SLO's status at ``now`` (floored to the minute), its newest minutes from ``spans`` where
    the rollup has not reached them. With the rollup caught up this is ``evaluate_many``'s answer."""
    now = _floor(now)
    if not slos:
        return []
    slos = attach_corrections(store, slos)  # the stored ones; status_from_arrays leaves their minutes out
    start = min(status_grid_start(s, now) for s in slos)
    arrays = minute_arrays_many(store, slos, start, now)
    mark = rollup_watermark(store)
    entries = [s for s in slos if entry_edge(s)]
    names = {s.name for s in entries}
    if mark is not None and mark < now and entries:
        since = max(mark, now - _MAX_TAIL)
        tail = minute_arrays_from_spans(store, entries, since, now)
        arrays = {**arrays, **{s.name: overlay(arrays[s.name], tail[s.name]) for s in entries}}
    out = []
    for s in slos:
        status = status_from_arrays(s, arrays[s.name], now)
        if mark is not None and mark < now and s.name in names:
            note = f"minutes from {mark:%H:%M} UTC read from raw spans (not rolled up yet)"
            status = replace(status, notes=(*status.notes, note))
        out.append(status)
    return out

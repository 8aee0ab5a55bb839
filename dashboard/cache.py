"""The dashboard's memoisation: what is cached, keyed on what, and for how long.

- a view call (`call`), per the end of the data the view reads (its generation: `hop_minutes`' end and a
  revision of its provisional minutes for rollup views, `samples`' end for sample views), so new data
  refreshes it at once; the TTL only bounds what that does not see (late rows, collector runs);
- a series view on a live range (`incremental`): buckets already final are kept, only newer ones read;
- a figure (`figure`), per its inputs: a view input as the call (`Q`) and its generation, a DataFrame by
  its content; a refresh whose views returned the same data reuses the figure (`figure_of`);
- "now"-relative facts (`live_view`: the data's end, each source's last sample), per store snapshot,
  the snapshot re-read at most every LIVE_TTL_S.

Functions are passed by reference. Streamlit cannot hash a function, so the caches key one by its
module and qualified name (`fn_key`): pass module-level functions, not closures that differ only in
what they capture.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FunctionType
from typing import Concatenate, Generic, NamedTuple, ParamSpec, TypeVar, cast

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io
import streamlit as st

from hopscope import charts
from hopscope.config import dashboard_location
from hopscope.dashboard.panels import PANELS_BY_KEY, panel_metrics, panel_series, panels_series
from hopscope.model import ReadStore
from hopscope.query import changes, samples, slos, spans, store_info, windows
from hopscope.query.tail import Tail
from hopscope.store import Store, current_snapshot

P = ParamSpec("P")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

View = Callable[..., object]  # a hopscope.views function: view(store, *args, **kwargs)
Builder = Callable[..., go.Figure]  # a hopscope.charts figure builder
Kwargs = tuple[tuple[str, object], ...]  # keyword arguments, sorted by name: hashable and order-free
End = datetime | None  # the end of the data a view reads (None: no data yet)


class Gen(NamedTuple):
    """A view's generation: the end of the data it reads, and a revision of its newest rows (the rollup
    rewrites its provisional minutes in place, so their end alone does not move when they change)."""

    end: End
    rev: tuple[float, ...] = ()
    start: End = None  # the oldest row: a kept series is read afresh once retention deleted from it


# Cached views are keyed on their generation (re-read every LIVE_TTL_S), so new data refreshes them at
# once; the TTL only bounds what the generation does not see (late rows, collector runs).
CACHE_TTL_S = 120
# The store's snapshot is re-read at most this often (~3 ms); "now"-relative facts (the data's end, each
# source's last sample) are re-read only when it moved (any write moves it). Short: it adds to the time a
# new span takes to show (rollup every 5 s + this + the page's 5-s refresh, docs/performance.md).
LIVE_TTL_S = 2
# Figures are cached by their inputs' content, so they may live longer than the views.
FIGURE_TTL_S = 600
# Store statistics (size, rows per table and per source: full scans) are re-read at most this often,
# whatever new data lands meanwhile.
STATS_TTL_S = 300
# The lists behind the filters (services, routes: a scan of every rollup and sample) change rarely:
# re-read at most this often rather than whenever new data lands.
LISTS_TTL_S = 60
# Buckets ending this long before the data's end are final: the rollup rewrites the open minute and the two
# of its grace (provisional) until then; scrapes land up to a minute late.
SETTLE = timedelta(minutes=4)
# An incrementally kept series is re-read in full this often (rows that landed later than SETTLE).
FULL_EVERY_S = 300.0

# Views whose rows are time buckets, each computed from its own rows only: when new data lands, the
# buckets that were already final are kept and only the newer ones are queried (a live tick on a 28-day
# range reads minutes of data, not 28 days).
INCREMENTAL: frozenset[View] = frozenset(
    {
        spans.latency_series,
        spans.traffic_series,
        spans.hop_latency_series,
        spans.hop_series,
        samples.metric_series,
    }
)
# Views read from hop_minutes only, and from samples only: each is keyed on its own table's end, so a
# new sample each second does not re-run the per-minute rollup queries (and SLO evaluations).
HOP_VIEWS: frozenset[View] = frozenset({
    spans.latency_series, spans.traffic_series, spans.hop_latency_series, spans.hop_edges, spans.hop_series,
    slos.breach_table, slos.slo_statuses, slos.slo_timeline, spans.exemplar_traces, spans.exemplars_named,
    slos.incident,
})  # fmt: skip
SAMPLE_VIEWS: frozenset[View] = frozenset(
    {
        samples.metric_series,
        panel_series,
        panels_series,
        samples.evidence_series,
        store_info.sample_metrics,
    }
)


def fn_key(fn: Callable[..., object]) -> str:
    """A function as the caches key it: 'module.qualname'."""
    return f"{fn.__module__}.{fn.__qualname__}"


_DIGESTS: dict[int, tuple[pd.DataFrame, str]] = {}


def digest(df: pd.DataFrame) -> str:
    """A DataFrame's content hash, computed once per object: the breaches feed every chart of a page."""
    hit = _DIGESTS.get(id(df))
    if hit is not None and hit[0] is df:
        return hit[1]
    h = hashlib.blake2b(repr(tuple(df.columns)).encode(), digest_size=16)
    try:
        rows = pd.util.hash_pandas_object(df, index=True)
    except TypeError:  # unhashable cells (lists, dicts): hash their text
        rows = pd.util.hash_pandas_object(df.astype(str), index=True)
    h.update(rows.to_numpy().tobytes())
    if len(_DIGESTS) > 64:
        _DIGESTS.clear()
    _DIGESTS[id(df)] = (df, h.hexdigest())
    return _DIGESTS[id(df)][1]


HASH_FUNCS = {FunctionType: fn_key, pd.DataFrame: digest}


class LRU(Generic[K, V]):
    """A thread-safe map of at most `size` entries: the least recently used one goes first."""

    def __init__(self, size: int) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[K, V] = OrderedDict()
        self.size = size

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            return None

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def open_store(path: str) -> Store:
    """The process's one Store at `path` (opening costs ~0.5 s): its catalog and data where
    `hopscope dashboard` said (a shared store), else in the folder."""
    return Store.open(dashboard_location(Path(path)), create=False)


@st.cache_resource(show_spinner=False)
def memo() -> LRU[tuple[object, ...], object]:
    """Incrementally kept series (`Kept`) and per-metric samples, shared by every session of the process.

    Pages need overlapping metric sets (the Overview's GPU utilization is also on Resources): each page
    queries only the metrics no page has read yet for this window, in one query, and shares the rest.
    """
    return LRU(400)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=500, hash_funcs=HASH_FUNCS)
def call(path: str, gen: Gen, fn: Callable[..., R], args: tuple[object, ...], kwargs: Kwargs) -> R:
    """fn(store, *args, **kwargs), per store, generation and arguments (unhashable ones by content);
    its reads see the snapshot the page read (`snapshot`): the store's newest rows, held in memory
    (changes.held), are then brought to it once for every view of the tick."""
    w = args[0] if args else None
    with changes.pinned(open_store(path), snapshot(path)):
        if fn in INCREMENTAL and isinstance(w, windows.Window) and isinstance(gen.end, datetime):
            step_s = w.sample_step_s if fn in SAMPLE_VIEWS else w.step_s
            from_tail = gen if fn in HOP_VIEWS else None  # they read hop_minutes only
            return cast(R, incremental(path, gen.end, fn, w, args[1:], kwargs, step_s, gen.start, from_tail))
        return fn(open_store(path), *args, **dict(kwargs))


class Kept(NamedTuple):
    start: datetime
    cutoff: datetime  # buckets before this are final
    df: pd.DataFrame
    built: float  # time.monotonic() of the last full read
    data_start: End  # the table's oldest row then: retention deleting rows makes the head stale


def incremental(
    path: str,
    gen: datetime,
    fn: Callable[..., pd.DataFrame],
    w: windows.Window,
    rest: tuple[object, ...],
    kwargs: Kwargs,
    step_s: int,
    data_start: End = None,
    from_tail: Gen | None = None,
) -> pd.DataFrame:
    """fn(store, w, *rest, **kwargs) of a series view bucketed by step_s, as of the data's end `gen`: the
    buckets that were final at the last read are kept, and only the newer ones are queried. `data_start`
    (the table's oldest row, where known): when it moved, retention deleted rows and all is read again.
    `from_tail` (a view of hop_minutes only): the newer buckets come from that generation's `hop_tail`,
    one read shared by every such series of the tick."""
    kw = dict(kwargs)
    if data_start is None and fn in SAMPLE_VIEWS:  # samples' oldest row, from the held samples: no read
        held = held_rows(path, "samples")
        data_start = held.lo if held is not None else None
    lru = memo()
    key = ("incremental", path, fn, rest, kwargs, w.step_s, w.sample_step_s)
    kept = lru.get(key)
    now = time.monotonic()
    if (
        isinstance(kept, Kept)
        and kept.start <= w.start < kept.cutoff <= w.end
        and now - kept.built < FULL_EVERY_S
        and kept.data_start == data_start
    ):
        src: ReadStore = open_store(path)
        if from_tail is not None and isinstance(from_tail.end, datetime):
            shared = hop_tail(path, from_tail)
            src = shared if shared.covers(kept.cutoff) else src
        elif fn is samples.metric_series:  # reads samples only
            held = held_rows(path, "samples")
            src = held.tail() if held is not None and held.covers(kept.cutoff) else src
        tail = fn(src, w.part(kept.cutoff), *rest, **kw)
        head = kept.df[(kept.df["t"] >= w.start) & (kept.df["t"] < kept.cutoff)]
        df = pd.concat([head, tail], ignore_index=True) if len(tail) else head.reset_index(drop=True)
        built = kept.built
    else:
        df, built = fn(open_store(path), w, *rest, **kw), now
    settled = min(gen, w.end) - SETTLE
    cutoff = datetime.fromtimestamp(settled.replace(tzinfo=UTC).timestamp() // step_s * step_s, UTC).replace(
        tzinfo=None
    )
    if w.start < cutoff:
        lru.put(key, Kept(w.start, cutoff, df, built, data_start))
    return df


@st.cache_resource(show_spinner=False)
def tails() -> LRU[tuple[str, Gen], Tail]:
    """The hop_minutes tails of the latest generations (a live tick asks for one; two sessions may be a
    generation apart)."""
    return LRU(4)


def hop_tail(path: str, gen: Gen) -> Tail:
    """hop_minutes' rows from an hour before the buckets not yet final at `gen` (coarse buckets start up to
    an hour earlier), read once per generation and shared by the tick's series."""
    assert gen.end is not None
    key = (path, gen)
    hit = tails().get(key)
    if hit is None:
        since = (gen.end - SETTLE).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
        held = held_rows(path, "hop_minutes")
        hit = held.tail() if held is not None and held.covers(since) else Tail.read(open_store(path), since)
        tails().put(key, hit)
    return hit


def held_rows(path: str, table: str) -> changes.Held | None:
    """`table`'s newest rows held in memory (changes.held), as of the snapshot the page reads (`snapshot`,
    re-read at most every LIVE_TTL_S) or a later one: only the rows changed since are read."""
    snap = snapshot(path)
    return changes.held(open_store(path), table, snap) if snap is not None else None


@st.cache_data(ttl=STATS_TTL_S, show_spinner=False, max_entries=20, hash_funcs=HASH_FUNCS)
def stats(path: str, fn: Callable[[Store], R]) -> R:
    """A store statistic (table_stats, store_size, sample_counts), whatever data landed since."""
    return fn(open_store(path))


@st.cache_data(ttl=LISTS_TTL_S, show_spinner=False, max_entries=20, hash_funcs=HASH_FUNCS)
def names(path: str, fn: Callable[[Store], list[str]]) -> list[str]:
    """A list behind a filter (services, routes), whatever data landed since."""
    return fn(open_store(path))


class Q(NamedTuple):
    """A view call, as a figure input: the figure's cache keys on this, not on the DataFrame's content."""

    fn: View
    args: tuple[object, ...]
    kwargs: Kwargs
    item: int | None = None  # for a view returning a tuple: which element

    def at(self, item: int) -> Q:
        """The view's result[item] (e.g. slo_timeline's burn-rate frame)."""
        return self._replace(item=item)


def _resolve(path: str, gens: Mapping[View, Gen], x: object) -> object:
    if not isinstance(x, Q):
        return x
    out = call(path, gens[x.fn], x.fn, x.args, x.kwargs)
    return out if x.item is None else cast(Sequence[object], out)[x.item]


def _epoch_ms_x(fig: go.Figure) -> None:
    """Time axes as numbers: each trace's datetime x becomes float milliseconds since the epoch (UTC), on
    an axis typed "date". Plotly shows the same dates, but the browser gets a binary array instead of
    ISO strings it must parse one by one (~40 % less JSON; the parsing was 5 % of a page's script time)."""
    dated = set()
    for trace in fig.data:
        x = getattr(trace, "x", None)
        if x is None or trace.type not in ("scatter", "bar"):
            continue
        arr = np.asarray(x)
        ms = charts.epoch_ms(arr)
        if ms is not arr:  # it held datetimes (the time charts' x is epoch ms already)
            trace.x = ms
            dated.add(trace.xaxis or "x")
    for axis in dated:
        fig.layout["xaxis" + axis[1:]].type = "date"


def freeze(fig: go.Figure) -> go.Figure:
    """Serialise a cached figure once: st.plotly_chart calls fig.to_dict() and JSON-encodes that on every
    rerun (deep copy + base64 of every array, ~10 ms a chart); hand it the plain-JSON dict made once."""
    _epoch_ms_x(fig)
    spec = json.loads(plotly.io.to_json(fig, validate=False))
    object.__setattr__(fig, "to_dict", lambda: spec)
    return fig


@st.cache_resource(ttl=CACHE_TTL_S, show_spinner=False, max_entries=300, hash_funcs=HASH_FUNCS)
def figure(
    path: str, gens: tuple[tuple[View, Gen], ...], builder: Builder, args: tuple[object, ...], kwargs: Kwargs
) -> go.Figure:
    """builder(*args, **kwargs) with each Q input replaced by its view's result.

    gens: each view input's generation (the key: the figure is rebuilt when one moves).
    """
    by_fn = dict(gens)
    args = tuple(_resolve(path, by_fn, a) for a in args)
    kwargs = tuple((k, _resolve(path, by_fn, v)) for k, v in kwargs)
    return figure_of(builder, args, kwargs)


@st.cache_resource(ttl=FIGURE_TTL_S, show_spinner=False, max_entries=300, hash_funcs=HASH_FUNCS)
def figure_of(builder: Builder, args: tuple[object, ...], kwargs: Kwargs) -> go.Figure:
    """The figure by its inputs' content: a refresh whose views re-ran but returned the same data reuses it."""
    return freeze(builder(*args, **dict(kwargs)))


@st.cache_resource(ttl=CACHE_TTL_S, show_spinner=False, max_entries=300, hash_funcs=HASH_FUNCS)
def panel_figure(
    path: str,
    gen: End,
    w: windows.Window,
    key: str,
    service: str | None,
    breaches: pd.DataFrame | None,
    compact: bool,
    batch: tuple[str, ...],
    hops_gen: Gen | None = None,
) -> go.Figure | None:
    """One resource panel's figure, or None when the panel has no samples.

    Its data comes from panels_series over every panel of the page (`batch`): one query, cached,
    serves them all.
    """
    panel = PANELS_BY_KEY[key]
    df, cap = panels(path, gen, w, batch, service, hops_gen)[key]
    if df.empty:
        return None
    # width: the column the legend must fit, on a 1024 px screen (Overview: a third, Resources: a half). Too
    # wide an estimate lets a many-series legend run over the plot; too narrow only adds top margin.
    kwargs = {"title": panel.title, "unit": panel.unit, "dimension": panel.dimension, "capacity": cap,
              "breaches": breaches, "height": 220 if compact else 260, "x_range": (w.start, w.end),
              "width": 280 if compact else 420}  # fmt: skip
    return figure_of(charts.resource_chart, (df,), tuple(sorted(kwargs.items())))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=100)
def panels(
    path: str,
    gen: End,
    w: windows.Window,
    batch: tuple[str, ...],
    service: str | None,
    hops_gen: Gen | None = None,
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """panels_series of a page's panels, from per-metric cached samples and the cached hop series
    (`hops_gen`: that series' generation as the page's own hop chart keys it, so both share one read)."""
    metrics, counters = panel_metrics(batch)
    samples = _samples(path, gen, w, tuple(metrics), tuple(counters), service)
    hops = None
    if any(PANELS_BY_KEY[k].hop for k in batch):
        hops = call(
            path, hops_gen or Gen(gen), spans.hop_latency_series, (w, None), ()
        )  # as the Overview asks
    return panels_series(None, w, batch, service, samples=samples, hops=hops)


def _samples(
    path: str,
    gen: End,
    w: windows.Window,
    metrics: tuple[str, ...],
    counters: tuple[str, ...],
    service: str | None,
) -> pd.DataFrame:
    """samples.metric_series(w, metrics) assembled from per-metric memo entries; the missing ones in one query."""
    lru = memo()
    key = (path, gen, w, service)
    have: dict[str, pd.DataFrame] = {}
    for m in metrics:
        hit = lru.get((*key, m))
        if isinstance(hit, pd.DataFrame):
            have[m] = hit
    missing = [m for m in metrics if m not in have]
    if missing:
        wanted = tuple(c for c in counters if c in missing)
        if isinstance(gen, datetime):
            kwargs = (("counters", wanted), ("service", service))
            df = incremental(path, gen, samples.metric_series, w, (tuple(missing),), kwargs, w.sample_step_s)
        else:
            df = samples.metric_series(open_store(path), w, missing, counters=wanted, service=service)
        by_metric = dict(tuple(df.groupby("metric", sort=False))) if not df.empty else {}
        for m in missing:
            have[m] = by_metric.get(m, df.iloc[0:0])
            lru.put((*key, m), have[m])
    frames = [have[m] for m in metrics if not have[m].empty]
    if not frames:
        return pd.DataFrame(columns=["t", "metric", "service", "series", "value"])
    return pd.concat(frames, ignore_index=True).sort_values("t", kind="stable", ignore_index=True)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=20)
def snapshot(path: str) -> int | None:
    """The store's snapshot (it moves with every write), re-read at most every LIVE_TTL_S."""
    return current_snapshot(open_store(path))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=40, hash_funcs=HASH_FUNCS)
def at_snapshot(
    path: str, snap: int | tuple[str, int], fn: Callable[..., R], args: tuple[object, ...], kwargs: Kwargs
) -> R:
    with changes.pinned(open_store(path), snap if isinstance(snap, int) else None):
        return fn(open_store(path), *args, **dict(kwargs))


def live_view(path: str, fn: Callable[Concatenate[Store, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
    """fn(store, *args, **kwargs) as of the store's snapshot, re-read at most every LIVE_TTL_S: the data's
    end and the freshness queries (~70 ms) run again only when something was written."""
    snap: int | tuple[str, int] | None = snapshot(path)
    if snap is None:  # no snapshot to key on: every LIVE_TTL_S
        snap = ("clock", int(time.monotonic() // LIVE_TTL_S))
    return at_snapshot(path, snap, fn, args, tuple(sorted(kwargs.items())))

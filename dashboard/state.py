"""What every page shares: the store, the time range and filters (in st.query_params), cached views.

Query parameters are validated against allow-lists before use, so a shared
link can choose a view but never inject anything: an unknown value falls
back to the default with a visible warning.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import streamlit as st

from dashboard import panels
from hopscope.config import DASHBOARD_REFRESH_ENV, DASHBOARD_RULES_ENV, DASHBOARD_STORE_ENV, DEMO_STORE
from hopscope.durations import parse_utc
from hopscope.errors import HopscopeError
from hopscope.query import samples, slos, spans, store_info, windows
from hopscope.store import Store, current_snapshot, utcnow

DEFAULT_RULES = Path("slo_rules")
# Cached views are keyed on the data's end (data_end(), re-read every LIVE_TTL_S), so new data
# refreshes them at once; the TTL only bounds what data_end does not see (late rows, collector runs).
CACHE_TTL_S = 120
# The store's snapshot is re-read at most this often; "now"-relative facts (the data's end, each source's
# last sample) are re-read only when it moved (any write moves it).
LIVE_TTL_S = 5
# Figures are cached by their inputs' content, so they may live longer than the views.
FIGURE_TTL_S = 600
REFRESH_CHOICES: dict[str, int | None] = {"off": None, "5s": 5, "10s": 10, "30s": 30, "1m": 60, "5m": 300}
DEFAULT_RANGE = "24h"
DEFAULT_REFRESH = "30s"
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|<>~$])")


def page(title: str) -> None:
    """Start a page: make sure it runs inside app.py's navigation, then draw its title.

    Streamlit runs a URL such as /incident straight from pages/incident.py (its legacy
    multipage mode, chosen because a pages/ folder exists) until app.py's st.navigation has
    run once in the process; switch the process to st.navigation and rerun through app.py.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()
    st.title(title)


def _args() -> argparse.Namespace:
    return _parse_args(tuple(sys.argv[1:]))


@functools.lru_cache(maxsize=4)
def _parse_args(argv: tuple[str, ...]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--store")
    parser.add_argument("--rules")
    return parser.parse_known_args(list(argv))[0]


def store_path() -> Path:
    """`--store PATH` after `--` on the streamlit command line, else $HOPSCOPE_STORE, else var/demo."""
    return Path(_args().store or os.environ.get(DASHBOARD_STORE_ENV) or DEMO_STORE)


def rules_path() -> Path:
    """`--rules PATH`, else $HOPSCOPE_SLO_RULES, else ./slo_rules, else the repository's slo_rules/."""
    given = _args().rules or os.environ.get(DASHBOARD_RULES_ENV)
    if given:
        return Path(given)
    return DEFAULT_RULES if DEFAULT_RULES.exists() else Path(__file__).resolve().parents[1] / DEFAULT_RULES


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    return Store(path, create=False)


def store() -> Store:
    """The process's one Store (opening costs ~0.5 s); stops the page with what to do if there is none."""
    path = store_path()
    try:
        return _open_store(str(path))
    except HopscopeError as exc:
        st.info(
            f"No data yet: no store at `{path}`. Run `hopscope demo` for the demo data or `hopscope collect` to start collecting."
        )
        st.caption(esc_md(str(exc)))
        st.stop()
        raise  # unreachable: st.stop() raises


# The pages name views by string (the caches key on it): the functions of the read modules.
_VIEWS: dict[str, Callable[..., Any]] = {
    name: fn
    for module in (windows, spans, samples, slos, store_info, panels)
    for name, fn in vars(module).items()
    if callable(fn) and getattr(fn, "__module__", None) == module.__name__
}


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=500)
def _cached(
    path: str, gen: Any, name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> Any:
    if name in INCREMENTAL and args and isinstance(args[0], windows.Window) and isinstance(gen, datetime):
        return _incremental(path, gen, name, args[0], args[1:], kwargs)
    return _VIEWS[name](_open_store(path), *args, **dict(kwargs))


# Views whose rows are time buckets, each computed from its own rows only: when new data lands, the
# buckets that were already final are kept and only the newer ones are queried (a live tick on a 28-day
# range reads minutes of data, not 28 days).
INCREMENTAL = frozenset(
    {"latency_series", "traffic_series", "hop_latency_series", "hop_series", "metric_series"}
)
# Buckets ending this long before the data's end are final (rollups and scrapes land up to a minute late).
SETTLE = timedelta(minutes=3)
# An incrementally kept series is re-read in full this often (rows that landed later than SETTLE).
FULL_EVERY_S = 300.0


class _Kept(NamedTuple):
    start: datetime
    cutoff: datetime  # buckets before this are final
    df: Any
    built: float  # time.monotonic() of the last full read


def _incremental(
    path: str,
    gen: datetime,
    name: str,
    w: windows.Window,
    rest: tuple[Any, ...],
    kwargs: tuple[tuple[str, Any], ...],
) -> Any:
    import time as clock

    import pandas as pd

    fn, kw = _VIEWS[name], dict(kwargs)
    step = w.sample_step_s if name == "metric_series" else w.step_s
    memo = _sample_memo()
    key = ("incremental", path, name, rest, kwargs, w.step_s, w.sample_step_s)
    kept = memo.get(key)
    now = clock.monotonic()
    if kept is not None and kept.start <= w.start < kept.cutoff <= w.end and now - kept.built < FULL_EVERY_S:
        tail = fn(_open_store(path), w.part(kept.cutoff), *rest, **kw)
        head = kept.df[(kept.df["t"] >= w.start) & (kept.df["t"] < kept.cutoff)]
        df = pd.concat([head, tail], ignore_index=True) if len(tail) else head.reset_index(drop=True)
        built = kept.built
    else:
        df, built = fn(_open_store(path), w, *rest, **kw), now
    settled = min(gen, w.end) - SETTLE
    cutoff = datetime.fromtimestamp(settled.replace(tzinfo=UTC).timestamp() // step * step, UTC).replace(
        tzinfo=None
    )
    if w.start < cutoff:
        memo.put(key, _Kept(w.start, cutoff, df, built))
    return df


def view(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call hopscope.query.<name>(store, ...) through st.cache_data (TTL CACHE_TTL_S)."""
    if name.startswith("_") or name not in _VIEWS:
        raise ValueError(f"hopscope.query has no view {name!r}")
    store()
    return _cached(str(store_path()), gen_of(name), name, args, tuple(sorted(kwargs.items())))


# Store statistics (size, rows per table and per source: full scans) are re-read at most this often,
# whatever new data lands meanwhile.
STATS_TTL_S = 300


@st.cache_data(ttl=STATS_TTL_S, show_spinner=False, max_entries=20)
def _cached_stats(path: str, name: str) -> Any:
    return _VIEWS[name](_open_store(path))


# The lists behind the filters (services, routes: a scan of every rollup and sample) change rarely:
# re-read at most this often rather than whenever new data lands.
LISTS_TTL_S = 60


@st.cache_data(ttl=LISTS_TTL_S, show_spinner=False, max_entries=20)
def _cached_list(path: str, name: str) -> Any:
    return _VIEWS[name](_open_store(path))


def names(name: str) -> list[str]:
    """spans.services or spans.routes, cached LISTS_TTL_S whatever data lands."""
    if name not in ("services", "routes"):
        raise ValueError(f"hopscope.query has no list {name!r}")
    store()
    return list(_cached_list(str(store_path()), name))


def stats(name: str) -> Any:
    """hopscope.query's <name>(store) for store statistics (table_stats, store_size, sample_counts): cached STATS_TTL_S."""
    if name not in ("table_stats", "store_size", "sample_counts"):
        raise ValueError(f"hopscope.query has no store statistic {name!r}")
    store()
    return _cached_stats(str(store_path()), name)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=50)
def _cached_report(path: str, gen: Any, rules_dir: str, slo: str, window: str) -> Any:
    from hopscope.report import build_report

    return build_report(_open_store(path), rules=rules_dir, slo=slo, window=window, causes=False)


class Q(NamedTuple):
    """A view call, as a figure input: figure() keys its cache on this, not on the DataFrame's content."""

    name: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]
    item: int | None = None  # for a view returning a tuple: which element

    def at(self, item: int) -> Q:
        """The view's result[item] (e.g. slo_timeline's burn-rate frame)."""
        return self._replace(item=item)


def q(name: str, *args: Any, **kwargs: Any) -> Q:
    """hopscope.query's <name>(store, *args, **kwargs) as a figure() input."""
    if name.startswith("_") or name not in _VIEWS:
        raise ValueError(f"hopscope.query has no view {name!r}")
    return Q(name, args, tuple(sorted(kwargs.items())))


def _resolve(path: str, gens: dict[str, Any], x: Any) -> Any:
    if not isinstance(x, Q):
        return x
    out = _cached(path, gens[x.name], x.name, x.args, x.kwargs)
    return out if x.item is None else out[x.item]


_DIGESTS: dict[int, tuple[Any, str]] = {}


def _digest(df: Any) -> str:
    """A DataFrame's content hash, computed once per object: the breaches feed every chart of a page."""
    hit = _DIGESTS.get(id(df))
    if hit is not None and hit[0] is df:
        return hit[1]
    import hashlib

    import pandas as pd

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


def _epoch_ms_x(fig: Any) -> None:
    """Time axes as numbers: each trace's datetime x becomes float milliseconds since the epoch (UTC), on
    an axis typed "date". Plotly shows the same dates, but the browser gets a binary array instead of
    ISO strings it must parse one by one (~40 % less JSON; the parsing was 5 % of a page's script time)."""
    import numpy as np

    epoch_ms = _charts().epoch_ms
    dated = set()
    for trace in fig.data:
        x = getattr(trace, "x", None)
        if x is None or trace.type not in ("scatter", "bar"):
            continue
        arr = np.asarray(x)
        ms = epoch_ms(arr)
        if ms is not arr:  # it held datetimes (the time charts' x is epoch ms already)
            trace.x = ms
            dated.add(trace.xaxis or "x")
    for axis in dated:
        fig.layout["xaxis" + axis[1:]].type = "date"


def _freeze(fig: Any) -> Any:
    """Serialise a cached figure once: st.plotly_chart calls fig.to_dict() and JSON-encodes that on every
    rerun (deep copy + base64 of every array, ~10 ms a chart); hand it the plain-JSON dict made once."""
    if fig is None:
        return None
    import json

    import plotly.io

    _epoch_ms_x(fig)

    spec = json.loads(plotly.io.to_json(fig, validate=False))
    object.__setattr__(fig, "to_dict", lambda: spec)
    return fig


def _hash_funcs() -> dict[Any, Callable[[Any], Any]]:
    import pandas as pd

    return {pd.DataFrame: _digest}


@st.cache_resource(ttl=CACHE_TTL_S, show_spinner=False, max_entries=300, hash_funcs=_hash_funcs())
def _cached_figure(
    path: str, gen: Any, builder: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> Any:
    gens = dict(gen)  # each view input's data end (the key: the figure is rebuilt when one moves)
    args = tuple(_resolve(path, gens, a) for a in args)
    kwargs = tuple((k, _resolve(path, gens, v)) for k, v in kwargs)
    return _figure_of(builder, args, kwargs)


@st.cache_resource(ttl=FIGURE_TTL_S, show_spinner=False, max_entries=300, hash_funcs=_hash_funcs())
def _figure_of(builder: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]) -> Any:
    """The figure by its inputs' content: a refresh whose views re-ran but returned the same data reuses it."""
    return _freeze(getattr(_charts(), builder)(*args, **dict(kwargs)))


def figure(builder: str, *args: Any, **kwargs: Any) -> Any:
    """dashboard.charts.<builder>(...), built once per distinct input within CACHE_TTL_S.

    Building a Plotly figure costs 20-80 ms, far more than the cached views feeding it, so a
    live refresh tick whose inputs did not change reuses the figure. Pass view results as
    q("view", ...) so the key is the view call (cheap to hash), not the DataFrame; other
    arguments are hashed by Streamlit. The figure is shared: callers must not modify it.
    """
    if builder.startswith("_") or not callable(getattr(_charts(), builder, None)):
        raise ValueError(f"dashboard.charts has no builder {builder!r}")
    store()
    inputs = [x for x in (*args, *kwargs.values()) if isinstance(x, Q)]
    gens = tuple(sorted({(x.name, gen_of(x.name)) for x in inputs}, key=lambda g: g[0]))
    return _cached_figure(str(store_path()), gens, builder, args, tuple(sorted(kwargs.items())))


@st.cache_resource(ttl=CACHE_TTL_S, show_spinner=False, max_entries=300, hash_funcs=_hash_funcs())
def _panel_figure(
    path: str,
    gen: Any,
    w: windows.Window,
    key: str,
    service: str | None,
    breaches: Any,
    compact: bool,
    batch: tuple[str, ...],
) -> Any:
    """(figure or None when the panel has no samples) for one resource panel.

    Its data comes from panels.panels_series over every panel of the page (`batch`): one query, cached,
    serves them all.
    """
    panel = panels.PANELS_BY_KEY[key]
    df, cap = _panels(path, gen, w, batch, service)[key]
    if df.empty:
        return None
    # width: the column the legend must fit, on a 1024 px screen (Overview: a third, Resources: a half). Too
    # wide an estimate lets a many-series legend run over the plot; too narrow only adds top margin.
    kwargs = {"title": panel.title, "unit": panel.unit, "dimension": panel.dimension, "capacity": cap,
              "breaches": breaches, "height": 220 if compact else 260, "x_range": (w.start, w.end),
              "width": 280 if compact else 420}  # fmt: skip
    return _figure_of("resource_chart", (df,), tuple(sorted(kwargs.items())))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=100)
def _panels(path: str, gen: Any, w: windows.Window, batch: tuple[str, ...], service: str | None) -> Any:
    """panels.panels_series of a page's panels, from per-metric cached samples and the cached hop series."""
    metrics, counters = panels.panel_metrics(batch)
    samples = _samples(path, gen, w, tuple(metrics), tuple(counters), service)
    hops = None
    if any(panels.PANELS_BY_KEY[k].hop for k in batch):
        hops = _cached(path, gen, "hop_latency_series", (w, None), ())  # as the Overview asks for it
    return panels.panels_series(None, w, batch, service, samples=samples, hops=hops)


class _SampleMemo:
    """metric_series results per (store, data end, window, service, metric), most recent first out last.

    Pages need overlapping metric sets (the Overview's GPU utilization is also on Resources): each page
    queries only the metrics no page has read yet for this window, in one query, and shares the rest.
    """

    def __init__(self, size: int = 400) -> None:
        import threading
        from collections import OrderedDict

        self.lock = threading.Lock()
        self.items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self.size = size

    def get(self, key: tuple[Any, ...]) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            return None

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def _sample_memo() -> _SampleMemo:
    return _SampleMemo()


def _samples(
    path: str,
    gen: Any,
    w: windows.Window,
    metrics: tuple[str, ...],
    counters: tuple[str, ...],
    service: str | None,
) -> Any:
    """samples.metric_series(w, metrics) assembled from per-metric cache entries; the missing ones in one query."""
    import pandas as pd

    memo = _sample_memo()
    key = (path, gen, w, service)
    have = {m: memo.get((*key, m)) for m in metrics}
    missing = [m for m, df in have.items() if df is None]
    if missing:
        kwargs = (("counters", tuple(c for c in counters if c in missing)), ("service", service))
        if isinstance(gen, datetime):
            df = _incremental(path, gen, "metric_series", w, (tuple(missing),), kwargs)
        else:
            df = samples.metric_series(_open_store(path), w, missing, **dict(kwargs))
        by_metric = dict(tuple(df.groupby("metric", sort=False))) if not df.empty else {}
        for m in missing:
            have[m] = by_metric.get(m, df.iloc[0:0])
            memo.put((*key, m), have[m])
    frames = [f for f in have.values() if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["t", "metric", "service", "series", "value"])
    return pd.concat(frames, ignore_index=True).sort_values("t", kind="stable", ignore_index=True)


def _charts() -> Any:
    from dashboard import charts

    return charts


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=20)
def _live(path: str) -> Any:
    """The store's snapshot (it moves with every write), re-read at most every LIVE_TTL_S."""
    return current_snapshot(_open_store(path))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=40)
def _at_snapshot(path: str, snap: Any, name: str, args: tuple[Any, ...]) -> Any:
    return _VIEWS[name](_open_store(path), *args)


def _live_view(path: str, name: str, args: tuple[Any, ...]) -> Any:
    """hopscope.query's <name>(store, *args) as of the store's snapshot, re-read at most every LIVE_TTL_S: the data's
    end and the freshness queries (~70 ms) run again only when something was written."""
    import time as clock

    snap = _live(path)
    if snap is None:  # no snapshot to key on: every LIVE_TTL_S
        snap = ("clock", int(clock.monotonic() // LIVE_TTL_S))
    return _at_snapshot(path, snap, name, args)


# Views read from hop_minutes only, and from samples only: each is keyed on its own table's end, so a
# new sample each second does not re-run the per-minute rollup queries (and SLO evaluations).
HOP_VIEWS = frozenset({"latency_series", "traffic_series", "hop_latency_series", "hop_edges", "hop_series",
                       "breach_table", "slo_statuses", "slo_timeline", "exemplar_traces", "exemplars_named",
                       "incident"})  # fmt: skip
SAMPLE_VIEWS = frozenset(
    {"metric_series", "panel_series", "panels_series", "evidence_series", "sample_metrics"}
)


def gen_of(name: str) -> Any:
    """What a view's cache entry is keyed on: the end of the data it reads (both tables' when unknown)."""
    store()
    hops, samples = _live_view(str(store_path()), "data_ends", ())
    if name in HOP_VIEWS:
        return hops
    if name in SAMPLE_VIEWS:
        return samples
    return data_end()


def data_end() -> Any:
    """windows.data_end(store), re-read at most every LIVE_TTL_S seconds."""
    store()
    ends = [t for t in _live_view(str(store_path()), "data_ends", ()) if t is not None]
    return max(ends) if ends else None


def freshness(now: Any, by_target: bool = False) -> Any:
    """samples.freshness at `now`, its queries re-run at most every LIVE_TTL_S seconds."""
    store()
    newest = _live_view(str(store_path()), "data_ends", ())[1]  # already read this tick: one query fewer
    seen = _live_view(str(store_path()), "last_seen", (by_target, False, newest))
    if by_target:  # the Collectors page shows rows written: per source, counted once per CACHE_TTL_S
        seen = seen.merge(stats("sample_counts"), on="source", how="left")
    return samples.freshness_at(seen, now)


def slo_report(slo: str, window: str) -> Any:
    """hopscope.report.build_report (without causes: see incident_causes) through st.cache_data."""
    store()
    return _cached_report(str(store_path()), data_end(), rules(), slo, window)


@st.cache_data(ttl=3600, show_spinner=False, max_entries=500)
def _cached_cause(path: str, rules_dir: str, key: str) -> str:
    return slos.incident_cause(_open_store(path), rules_dir, key)


def incident_causes(rep: Any) -> Any:
    """The report with each incident's one-line cause (diagnoses are slow: each cached for an hour)."""
    from hopscope.report import with_causes

    with st.spinner(f"Diagnosing {len(rep.incidents)} incident(s)…"):
        causes = {i["id"]: _cached_cause(str(store_path()), rules(), i["id"]) for i in rep.incidents}
    return with_causes(rep, causes)


def esc_md(text: Any) -> str:
    """Telemetry text made literal inside st.markdown (no links, images or emphasis from data)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


# ------------------------------------------------------------------ query parameters


def param(name: str, allowed: Sequence[str], default: str) -> str:
    """A query parameter, if it is one of `allowed`; otherwise the default (and a warning)."""
    value = st.query_params.get(name)
    if value is None or value == "":
        return default
    if value not in allowed:
        st.warning(f"Ignoring `?{name}=`: {esc_md(value[:60])!s} is not one of {', '.join(allowed)}.")
        return default
    return value


def set_param(name: str, value: str | None, default: str | None = None) -> None:
    if value is None or value == default:
        st.query_params.pop(name, None)
    elif st.query_params.get(name) != value:
        st.query_params[name] = value


def synced_select(
    label: str,
    name: str,
    options: Sequence[str],
    default: str,
    key: str,
    *,
    sidebar: bool = False,
    segmented: bool = False,
    **kw: Any,
) -> str:
    """A selectbox (or segmented control) mirroring ?name=: a value set elsewhere (a link, a chart
    click) moves the widget, and a choice in the widget moves the parameter. Returns the value chosen."""
    value = param(name, options, default)
    seen, page_seen = f"_{key}_param", f"_{key}_page"
    # A widget's state belongs to the page it was drawn on: on another page the same key starts afresh.
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    here = getattr(get_script_run_ctx(), "page_script_hash", "")
    if (
        key not in st.session_state
        or st.session_state.get(seen) != value
        or st.session_state.get(page_seen) != here
        or st.session_state[key] is None
    ):
        st.session_state[key] = value  # before the widget exists: it starts there
    st.session_state[page_seen] = here
    where = st.sidebar if sidebar else st
    if segmented:  # a click on the chosen option deselects it: keep the choice
        picked = where.segmented_control(label, list(options), key=key, **kw) or value
    else:
        picked = where.selectbox(label, list(options), key=key, **kw)
    set_param(name, picked, default)
    st.session_state[seen] = picked
    return str(picked)


# Parameters every page shares: they follow the person from page to page, as a Grafana time range does.
SHARED_PARAMS = ("range", "from", "to", "refresh", "service", "route")
_SAVED = "_shared_params"


def restore_shared_params() -> None:
    """A page reached from the sidebar starts with no query (Streamlit drops it on a page switch):
    give it the shared parameters the previous page ended with. A link that names any keeps its own."""
    saved = st.session_state.get(_SAVED)
    if saved and not any(n in st.query_params for n in SHARED_PARAMS):
        st.query_params.update(saved)


def save_shared_params() -> None:
    st.session_state[_SAVED] = {n: st.query_params[n] for n in SHARED_PARAMS if n in st.query_params}


TIMING_ENV = "HOPSCOPE_TIMING_LOG"


def log_run_time(page: str, seconds: float) -> None:
    """Append "page<TAB>seconds" to $HOPSCOPE_TIMING_LOG, if set: the server's share of a page load
    (benchmarks/dashboard.py reads it to split server time from browser time)."""
    path = os.environ.get(TIMING_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{page or 'overview'}\t{seconds:.4f}\n")


@contextmanager
def timed(name: str) -> Iterator[None]:
    """log_run_time(name, the block's duration): a fragment's rerun (a live refresh tick) is not a page run."""
    import time as clock

    started = clock.perf_counter()
    try:
        yield
    finally:
        log_run_time(name, clock.perf_counter() - started)


ALL = "(all)"


def service_filter() -> str | None:
    """The shared service filter (?service=, set by the sidebar or by a click on the Hops graph)."""
    picked = synced_select(
        "Service", "service", [ALL, *names("services")], ALL, "service_select", sidebar=True
    )
    return None if picked == ALL else picked


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_utc(text)
    except ValueError:
        st.warning(f"Ignoring a time that is not ISO 8601: {esc_md(text[:40])}")
        return None


def time_range() -> tuple[str, datetime | None, datetime | None]:
    """The shared time range from the sidebar (and ?range= or ?from=&to=): (key, start, end)."""
    choices = [*windows.RANGES, "custom"]
    picked = synced_select("Time range", "range", choices, DEFAULT_RANGE, "range_select", sidebar=True)
    if picked != "custom":
        st.query_params.pop("from", None)
        st.query_params.pop("to", None)
        return picked, None, None
    latest = windows.window(store(), "24h")
    lo = _parse_time(st.query_params.get("from")) or latest.end - timedelta(days=1)
    hi = _parse_time(st.query_params.get("to")) or latest.end
    dates = st.sidebar.date_input("From / to (UTC)", value=(lo.date(), hi.date()), key="abs_dates")
    if isinstance(dates, tuple) and len(dates) == 2:
        lo = datetime.combine(dates[0], time())
        hi = datetime.combine(dates[1], time()) + timedelta(days=1)
    set_param("from", lo.isoformat(timespec="minutes"))
    set_param("to", hi.isoformat(timespec="minutes"))
    return "custom", lo, hi


def window(spec: tuple[str, datetime | None, datetime | None]) -> windows.Window:
    """Resolve a time_range() against the store's clock now (not cached: "now" moves)."""
    key, lo, hi = spec
    try:
        return windows.window(
            store(), key if key in windows.RANGES else DEFAULT_RANGE, start=lo, end=hi, last=data_end()
        )
    except HopscopeError as exc:
        st.warning(str(exc))
        return windows.window(store(), DEFAULT_RANGE)


def route_filter() -> str | None:
    """The route filter (?route=), None for all routes; with one route there is nothing to choose."""
    routes = names("routes")
    if len(routes) <= 1:
        return None  # the same rows as filtering by the one route, and the same cache entries as other pages
    picked = synced_select("Route", "route", ["(all)", *routes], "(all)", "route_select", sidebar=True)
    return None if picked == "(all)" else picked


def default_refresh() -> str:
    """The Auto-refresh choice whose seconds $HOPSCOPE_REFRESH_SECONDS names (0 = off), else DEFAULT_REFRESH."""
    raw = os.environ.get(DASHBOARD_REFRESH_ENV, "").strip()
    for label, seconds in REFRESH_CHOICES.items():
        if raw == str(seconds or 0):
            return label
    return DEFAULT_REFRESH


def refresh_interval() -> int | None:
    """Auto-refresh period in seconds (None = paused), from the sidebar and ?refresh=."""
    picked = synced_select(
        "Auto-refresh", "refresh", list(REFRESH_CHOICES), default_refresh(), "refresh_select", sidebar=True,
        help="How often live charts re-query the store; 'off' pauses.",
    )  # fmt: skip
    return REFRESH_CHOICES[picked]


def window_caption(w: windows.Window) -> None:
    """Say which time the page shows, and that it is a replay when the data stopped."""
    if w.replay and w.data_end is not None:
        st.caption(
            f"{w.label} · {bucket_text(w)} · replay: the data ends at {w.data_end:%Y-%m-%d %H:%M} UTC (no new data for a while; shown as of then)"
        )
    else:
        st.caption(f"{w.label} · live · {bucket_text(w)}")


def bucket_text(w: windows.Window) -> str:
    """'bucket 1 min' or, where samples get finer buckets, 'bucket 1 min (samples 5 s)'."""

    def text(s: int) -> str:
        return f"{s // 60} min" if s % 60 == 0 else f"{s} s"

    sample = f" (samples {text(w.sample_step_s)})" if w.sample_step_s != w.step_s else ""
    return f"bucket {text(w.step_s)}{sample}"


def chart(fig: Any, key: str, *, clickable: bool = True, on_pick: Callable[[str], None] | None = None) -> Any:
    """st.plotly_chart with the options every page wants.

    A click on a point with customdata calls on_pick(customdata); by default that is a breach
    marker and opens its Incident page.
    """
    pick = on_pick or _open_incident
    event = st.plotly_chart(
        fig,
        key=key,
        on_select="rerun" if clickable else "ignore",
        selection_mode="points",
        config={"displaylogo": False},
    )
    if clickable:
        picked = next((str(cd) for cd in map(_customdata, _points(event)) if cd), None)
        # The selection outlives the click (it is widget state): act once per new selection, so that a
        # later choice elsewhere (a selectbox, a link) is not overridden by an old click on every rerun.
        seen = f"_{key}_picked"
        if picked != st.session_state.get(seen):
            st.session_state[seen] = picked
            if picked:
                pick(picked)
    return event


def _customdata(point: dict[str, Any]) -> Any:
    cd = point.get("customdata")
    if isinstance(cd, list):
        cd = cd[0] if cd else None
    return cd


def _open_incident(key: str) -> None:
    st.switch_page("pages/incident.py", query_params={"incident": key})


def _points(event: Any) -> list[dict[str, Any]]:
    try:
        return list(event["selection"]["points"])
    except (KeyError, TypeError):
        return []


# ------------------------------------------------------------------ panels shared by pages


def freshness_line(w: windows.Window) -> None:
    """One line per data source: "last sample 4 s ago", stale sources marked."""
    df = freshness(utcnow().replace(microsecond=0))
    if df.empty:
        st.caption("No collector has written anything yet: start `hopscope collect`.")
        return
    parts = []
    for row in df.itertuples(index=False):
        age = row.age
        mark = ":orange[stale]" if row.stale else ":green[fresh]"
        parts.append(f"**{esc_md(row.source)}** {mark} · last sample {age} ago")
    st.caption("  |  ".join(parts))


def resource_row(w: windows.Window, breaches: Any, service: str | None = None) -> None:
    """Compute, bandwidth and memory side by side, two or three charts each, in their colours."""

    cols = st.columns(3)
    batch = tuple(k for keys in panels.OVERVIEW_PANELS.values() for k in keys)
    for col, (dimension, keys) in zip(cols, panels.OVERVIEW_PANELS.items(), strict=True):
        with col:
            st.markdown(f"#### :{_DIM_MD[dimension]}[{dimension.capitalize()}]")
            panel_charts(w, keys, breaches, service=service, compact=True, batch=batch)


_DIM_MD = {"compute": "orange", "bandwidth": "blue", "memory": "green"}


def panels_with_data(w: windows.Window, keys: Sequence[str], service: str | None = None) -> set[str]:
    """The panel keys among `keys` that have samples in the window (one query for them all)."""
    store()
    panels = _panels(str(store_path()), data_end(), w, tuple(keys), service)
    return {k for k, (df, _) in panels.items() if not df.empty}


def panel_charts(
    w: windows.Window,
    keys: Sequence[str],
    breaches: Any,
    *,
    service: str | None = None,
    compact: bool = False,
    batch: Sequence[str] = (),
) -> int:
    """Draw each resource panel that has data; returns how many were drawn.

    batch: every panel key the page shows (default: keys), read from the store in one query.
    """
    batch = tuple(batch or keys)
    drawn = 0
    for key in keys:
        panel = panels.PANELS_BY_KEY[key]
        store()
        fig = _panel_figure(str(store_path()), data_end(), w, key, service, breaches, compact, batch)
        if fig is None:
            if not compact:
                continue
            st.caption(
                f"{panel.title}: no samples in this range (metrics: {', '.join(panel.metrics) or panel.hop})."
            )
            continue
        chart(fig, f"panel_{key}")
        drawn += 1
    return drawn


def rules() -> str:
    return str(rules_path())


def breaches_in(w: windows.Window) -> Any:
    """Breaches overlapping the window (a DataFrame), or None where SLOs cannot be evaluated."""
    try:
        return view("breach_table", rules(), w.start, w.end)
    except (ImportError, HopscopeError) as exc:
        st.caption(f"Breaches not shown: {esc_md(exc)}")
        return None


def slo_tiles(w: windows.Window) -> Any:
    """One tile per SLO (state, SLI vs objective, budget, burn rates); returns the breaches in the window."""
    try:
        statuses = view("slo_statuses", rules(), w.end)
    except (ImportError, HopscopeError) as exc:
        st.warning(f"SLOs not evaluated: {esc_md(exc)}")
        return None
    if statuses.empty:
        st.info(f"No SLOs defined: add one to {esc_md(rules())}/ (see `hopscope slo check`).")
        return None
    from dashboard import charts

    cols = st.columns(min(len(statuses), 4))
    for i, row in enumerate(statuses.itertuples(index=False)):
        with cols[i % len(cols)], st.container(border=True):
            state_name = row.alert_state if row.alert_state in charts.SEVERITY_BADGES else "no data"
            st.markdown(f"**{esc_md(row.slo)}**")
            alert = {"ok": "no alert firing", "no data": "no events"}.get(
                state_name, f"{state_name} alert firing"
            )
            st.badge(f"{state_name.upper()} · {alert}", color=charts.SEVERITY_BADGES[state_name])
            # One above the other: side by side, a 1024 px screen cut both numbers to "9…".
            st.metric(
                f"SLI · {row.window}",
                _pct(row.sli),
                help=f"good events / all events over the SLO's {row.window} window up to now (objective "
                f"{_pct(row.objective)}); the burn rates below say how fast it is going now",
            )
            spent = (
                row.budget_remaining is not None
                and row.budget_remaining == row.budget_remaining
                and row.budget_remaining <= 0
            )
            st.metric(
                "Budget left",
                _pct(row.budget_remaining, 1),
                delta="exhausted" if spent else None,
                delta_color="inverse",
                delta_arrow="off",
                help=f"error budget left of the {row.window} window: 1 - (1 - SLI) / (1 - objective); below 0 "
                "the SLO is missed for the window, whether or not a burn-rate alert fires now",
            )
            burns = " · ".join(
                f"{esc_md(k)} ×{v:.1f}" for k, v in row.burn_rates.items() if v == v and v is not None
            )
            st.caption(f"objective {_pct(row.objective)} · burn {burns or 'n/a'}")
    return breaches_in(w)


def _pct(x: Any, digits: int = 2) -> str:
    if x is None or x != x:
        return "no data"
    return f"{100 * float(x):.{digits}f}%"


def breach_links(breaches: Any) -> None:
    """Links to the Incident page for each breach in range."""
    if breaches is None or len(breaches) == 0:
        st.caption("No breaches in this range.")
        return
    st.markdown("**Breaches in this range** (shaded on the charts; click a marker or a link)")
    cols = st.columns(min(len(breaches), 3))  # when to read it first: a narrow column cuts the end
    for i, b in enumerate(breaches.itertuples(index=False)):
        with cols[i % len(cols)]:
            st.page_link(
                "pages/incident.py",
                label=f"Incident {b.number} · {b.start:%b %d %H:%M} · {b.slo}",
                query_params={"incident": str(b.number)},
            )


# ------------------------------------------------------------------ incident page sections


def incident_picker() -> tuple[Any, str]:
    """The list of breaches and the one picked (?incident= number or id; unknown ones say so)."""
    try:
        table = view("breach_table", rules())
    except (ImportError, HopscopeError) as exc:
        st.warning(f"Incidents cannot be listed: {esc_md(exc)}")
        st.stop()
    if table.empty:
        st.info(
            "No breaches in the stored history: nothing has burned an error budget fast enough to alert. See the Overview for live status."
        )
        st.stop()
    labels = {
        str(r.number): f"{r.number} · {r.slo} · {r.start:%Y-%m-%d %H:%M} · {r.severity}"
        for r in table.itertuples()
    }
    key = st.query_params.get("incident") or str(table["number"].iloc[-1])
    if key in set(table["id"]):
        key = str(table.loc[table["id"] == key, "number"].iloc[0])
    if key not in labels:
        st.error(f"Unknown incident {esc_md(key[:40])}: pick one of the {len(labels)} below.")
        key = str(table["number"].iloc[-1])
    picked = st.selectbox("Incident", list(labels), index=list(labels).index(key), format_func=labels.get)
    set_param("incident", picked)
    with st.expander(f"All {len(table)} breaches", expanded=False):
        st.dataframe(
            table,
            hide_index=True,
            column_config={"budget_consumed": st.column_config.ProgressColumn(min_value=0, max_value=1)},
        )
    return table, picked


def cause_sections(d: dict[str, Any], incident: tuple[Any, Any]) -> None:
    """The ranked causes, each with its evidence table and its top signals next to the hop's latency.

    The evidence charts show the incident and as long before it (windows.evidence_window), not the
    page's window: the baseline windows lie days earlier, so the baseline is drawn as the level the
    diagnosis measured there, for the signal and for the hop.
    """
    import pandas as pd

    st.subheader("Ranked causes")
    used = str((d.get("baseline") or {}).get("used") or "").replace("_", " ")
    if used:
        st.caption(f"Dashed levels on the charts: the baseline the diagnosis compared with ({esc_md(used)}).")
    ew = windows.evidence_window(
        pd.Timestamp(incident[0]).to_pydatetime(), pd.Timestamp(incident[1]).to_pydatetime()
    )
    hop_base = {h["hop"]: h.get("baseline_ms") for h in (d.get("decomposition") or {}).get("hops", [])}
    for cause in d["causes"]:
        with st.expander(
            f"#{cause['rank']} {cause['hop']} · {cause['dimension']} · {100 * cause['share_of_added_latency']:.0f}% of added latency",
            expanded=cause["rank"] == 1,
        ):
            st.markdown(esc_md(cause["summary"]))
            ev = pd.DataFrame(cause["evidence"])
            if ev.empty:
                st.caption("No linked resource signal.")
                continue
            # "name" says metric and place; the full series key and labels stay in the JSON
            shown = ev.drop(columns=["labels", "signal", "metric"], errors="ignore")
            st.dataframe(
                shown, hide_index=True, column_config={"name": st.column_config.TextColumn("signal")}
            )
            hop = q("hop_series", ew, cause["hop"])
            for e in cause["evidence"][:2]:
                sig = q("evidence_series", ew, e["metric"], e["labels"])
                where = samples.series_label(e["labels"])
                fig = figure(
                    "evidence_chart",
                    sig,
                    hop,
                    signal_name=e["metric"],
                    title=f"{e['metric']} · {where}" if where else e["metric"],
                    unit=e.get("unit") or "",
                    dimension=e["dimension"],
                    hop_name=cause["hop"],
                    incident=incident,
                    baseline_value=e.get("baseline"),
                    hop_baseline_ms=hop_base.get(cause["hop"]),
                    x_range=(ew.start, ew.end),
                )
                chart(fig, f"ev_{cause['rank']}_{e['signal']}", clickable=False)

"""What every page shares: the store, the time range and filters (in st.query_params), cached views.

Query parameters are validated against allow-lists before use, so a shared
link can choose a view but never inject anything: an unknown value falls
back to the default with a visible warning.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time as clock
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Concatenate, Literal, ParamSpec, TypeVar, cast

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from hopscope import charts
from hopscope.config import DASHBOARD_REFRESH_ENV, DASHBOARD_RULES_ENV, DASHBOARD_STORE_ENV, DEMO_STORE
from hopscope.dashboard import cache, panels
from hopscope.durations import parse_utc
from hopscope.errors import HopscopeError
from hopscope.markdown import literal
from hopscope.query import samples, slos, spans, windows
from hopscope.store import Store

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_RULES = Path("slo_rules")
REFRESH_CHOICES: dict[str, int | None] = {"off": None, "5s": 5, "10s": 10, "30s": 30, "1m": 60, "5m": 300}
DEFAULT_RANGE = "24h"
DEFAULT_REFRESH = "5s"  # with rollups every 5 s, a span shows within ~15 s (docs/performance.md)


def page(title: str) -> None:
    """Start a page: make sure it runs inside app.py's navigation, then draw its title.

    Streamlit runs a URL such as /incident straight from pages/incident.py (its legacy
    multipage mode, chosen because a pages/ folder exists) until app.py's st.navigation has
    run once in the process; switch the process to st.navigation and rerun through app.py.
    """
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


def store() -> Store:
    """The process's one Store (opening costs ~0.5 s); stops the page with what to do if there is none."""
    path = store_path()
    try:
        return cache.open_store(str(path))
    except HopscopeError as exc:
        st.info(
            f"No data yet: no store at `{path}`. Run `hopscope demo` for the demo data or `hopscope collect` to start collecting."
        )
        st.caption(literal(str(exc)))
        st.stop()
        raise  # unreachable: st.stop() raises


def cache_path() -> str:
    """The store's path as the caches key it, once the store is known to open (else the page stops)."""
    store()
    return str(store_path())


def view(fn: Callable[Concatenate[Store, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
    """fn(store, *args, **kwargs) for a hopscope.query function, cached until the data it reads moves."""
    path = cache_path()
    return cache.call(path, gen_of(fn), fn, args, tuple(sorted(kwargs.items())))


def names(fn: Callable[[Store], list[str]]) -> list[str]:
    """spans.services or spans.routes, cached cache.LISTS_TTL_S whatever data lands."""
    return list(cache.names(cache_path(), fn))


def stats(fn: Callable[[Store], R]) -> R:
    """A store statistic (store_info.table_stats, store_size, sample_counts), cached cache.STATS_TTL_S."""
    return cache.stats(cache_path(), fn)


def q(fn: Callable[Concatenate[Store, P], object], *args: P.args, **kwargs: P.kwargs) -> cache.Q:
    """fn(store, *args, **kwargs) as a figure() input."""
    return cache.Q(fn, args, tuple(sorted(kwargs.items())))


def figure(builder: Callable[..., go.Figure], *args: object, **kwargs: object) -> go.Figure:
    """builder(*args, **kwargs) for a hopscope.charts builder, built once per distinct input within cache.CACHE_TTL_S.

    Building a Plotly figure costs 20-80 ms, far more than the cached views feeding it, so a
    live refresh tick whose inputs did not change reuses the figure. Pass view results as
    q(spans.latency_series, ...) so the key is the view call (cheap to hash), not the DataFrame; other
    arguments are hashed by Streamlit. The figure is shared: callers must not modify it.
    (The builder's parameters are not checked here: a q() stands in for the DataFrame it gives.)
    """
    path = cache_path()
    inputs = [x for x in (*args, *kwargs.values()) if isinstance(x, cache.Q)]
    gens = tuple(sorted({(x.fn, gen_of(x.fn)) for x in inputs}, key=lambda g: cache.fn_key(g[0])))
    return cache.figure(path, gens, builder, args, tuple(sorted(kwargs.items())))


def gen_of(fn: Callable[..., object]) -> cache.Gen:
    """What a view's cache entry is keyed on: the end of the data it reads (both tables' when unknown),
    with the revision of the provisional minutes for views of hop_minutes."""
    marks = cache.live_view(cache_path(), windows.data_marks)
    if fn in cache.HOP_VIEWS:
        return cache.Gen(marks.hops_end, marks.hops_rev, marks.hops_start)
    if fn in cache.SAMPLE_VIEWS:  # the oldest sample too: retention deleting some is seen at once
        return cache.Gen(marks.samples_end, start=marks.samples_start)
    return cache.Gen(data_end(), marks.hops_rev, marks.hops_start)


def data_end() -> datetime | None:
    """windows.data_end(store), re-read at most every cache.LIVE_TTL_S seconds."""
    marks = cache.live_view(cache_path(), windows.data_marks)
    ends = [t for t in (marks.hops_end, marks.samples_end) if t is not None]
    return max(ends) if ends else None


def freshness(now: datetime, by_target: bool = False) -> pd.DataFrame:
    """samples.freshness at `now`, its queries re-run at most every cache.LIVE_TTL_S seconds."""
    path = cache_path()
    newest = cache.live_view(path, windows.data_marks).samples_end  # already read this tick: one query fewer
    seen = cache.live_view(path, samples.last_seen, by_target, False, newest)
    if by_target:  # the Collectors page shows rows written: per source, counted once per cache.STATS_TTL_S
        seen = seen.merge(stats(samples.sample_counts), on="source", how="left")
    return samples.freshness_at(seen, now)


# ------------------------------------------------------------------ query parameters


def param(name: str, allowed: Sequence[str], default: str) -> str:
    """A query parameter, if it is one of `allowed`; otherwise the default (and a warning)."""
    value = st.query_params.get(name)
    if value is None or value == "":
        return default
    if value not in allowed:
        st.warning(f"Ignoring `?{name}=`: {literal(value[:60])!s} is not one of {', '.join(allowed)}.")
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
    help: str | None = None,
) -> str:
    """A selectbox (or segmented control) mirroring ?name=: a value set elsewhere (a link, a chart
    click) moves the widget, and a choice in the widget moves the parameter. Returns the value chosen."""
    value = param(name, options, default)
    seen, page_seen = f"_{key}_param", f"_{key}_page"
    # A widget's state belongs to the page it was drawn on: on another page the same key starts afresh.
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
        picked = where.segmented_control(label, list(options), key=key, help=help) or value
    else:
        picked = where.selectbox(label, list(options), key=key, help=help)
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
    started = clock.perf_counter()
    try:
        yield
    finally:
        log_run_time(name, clock.perf_counter() - started)


ALL = "(all)"


def service_filter() -> str | None:
    """The shared service filter (?service=, set by the sidebar or by a click on the Hops graph)."""
    picked = synced_select(
        "Service", "service", [ALL, *names(spans.services)], ALL, "service_select", sidebar=True
    )
    return None if picked == ALL else picked


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_utc(text)
    except ValueError:
        st.warning(f"Ignoring a time that is not ISO 8601: {literal(text[:40])}")
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
    routes = names(spans.routes)
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


def chart(
    fig: go.Figure, key: str, *, clickable: bool = True, on_pick: Callable[[str], None] | None = None
) -> None:
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


def _customdata(point: Mapping[str, object]) -> object:
    cd = point.get("customdata")
    if isinstance(cd, list):
        cd = cd[0] if cd else None
    return cd


def _open_incident(key: str) -> None:
    st.switch_page("pages/incident.py", query_params={"incident": key})


def _points(event: object) -> list[Mapping[str, object]]:
    """The points a click selected; none where st.plotly_chart returned no selection state."""
    if not isinstance(event, dict):  # a chart drawn with on_select="ignore"
        return []
    try:
        return list(event["selection"]["points"])
    except (KeyError, TypeError):
        return []


def panel_charts(
    w: windows.Window,
    keys: Sequence[str],
    breaches: pd.DataFrame | None,
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
        fig = cache.panel_figure(
            cache_path(),
            data_end(),
            w,
            key,
            service,
            breaches,
            compact,
            batch,
            gen_of(spans.hop_latency_series),
        )
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


def breaches_in(w: windows.Window) -> pd.DataFrame | None:
    """Breaches overlapping the window (a DataFrame), or None where SLOs cannot be evaluated."""
    try:
        return view(slos.breach_table, rules(), w.start, w.end)
    except (ImportError, HopscopeError) as exc:
        st.caption(f"Breaches not shown: {literal(exc)}")
        return None


BadgeColor = Literal["red", "orange", "yellow", "blue", "green", "violet", "gray", "grey", "primary"]


def badge_color(severity: str) -> BadgeColor:
    """The st.badge colour of an alert severity (charts.SEVERITY_BADGES; gray for one it does not know)."""
    return cast(BadgeColor, charts.SEVERITY_BADGES.get(severity, "gray"))

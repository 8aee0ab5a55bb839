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
from collections.abc import Callable, Sequence
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import streamlit as st

from hopscope import views
from hopscope.errors import HopscopeError
from hopscope.store import Store

STORE_ENV = "HOPSCOPE_STORE"
RULES_ENV = "HOPSCOPE_SLO_RULES"
DEFAULT_STORE = Path("var/demo")
DEFAULT_RULES = Path("slo_rules")
# Cached views are keyed on the data's end (data_end(), re-read every LIVE_TTL_S), so new data
# refreshes them at once; the TTL only bounds what data_end does not see (late rows, collector runs).
CACHE_TTL_S = 120
# "Now"-relative facts (the data's end, each source's last sample) are re-read at most this often.
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
    return Path(_args().store or os.environ.get(STORE_ENV) or DEFAULT_STORE)


def rules_path() -> Path:
    """`--rules PATH`, else $HOPSCOPE_SLO_RULES, else ./slo_rules, else the repository's slo_rules/."""
    given = _args().rules or os.environ.get(RULES_ENV)
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


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=500)
def _cached(
    path: str, gen: Any, name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]
) -> Any:
    return getattr(views, name)(_open_store(path), *args, **dict(kwargs))


def view(name: str, *args: Any, **kwargs: Any) -> Any:
    """Call hopscope.views.<name>(store, ...) through st.cache_data (TTL CACHE_TTL_S)."""
    if name.startswith("_") or not callable(getattr(views, name, None)):
        raise ValueError(f"hopscope.views has no view {name!r}")
    store()
    return _cached(str(store_path()), data_end(), name, args, tuple(sorted(kwargs.items())))


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False, max_entries=50)
def _cached_report(path: str, gen: Any, rules_dir: str, slo: str, window: str) -> Any:
    from hopscope.report import build_report

    return build_report(_open_store(path), rules=rules_dir, slo=slo, window=window, causes=False)


class Q(NamedTuple):
    """A view call, as a figure input: figure() keys its cache on this, not on the DataFrame's content."""

    name: str
    args: tuple[Any, ...]
    kwargs: tuple[tuple[str, Any], ...]


def q(name: str, *args: Any, **kwargs: Any) -> Q:
    """views.<name>(store, *args, **kwargs) as a figure() input."""
    if name.startswith("_") or not callable(getattr(views, name, None)):
        raise ValueError(f"hopscope.views has no view {name!r}")
    return Q(name, args, tuple(sorted(kwargs.items())))


def _resolve(path: str, gen: Any, x: Any) -> Any:
    return _cached(path, gen, x.name, x.args, x.kwargs) if isinstance(x, Q) else x


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


def _freeze(fig: Any) -> Any:
    """Serialise a cached figure once: st.plotly_chart calls fig.to_dict() and JSON-encodes that on every
    rerun (deep copy + base64 of every array, ~10 ms a chart); hand it the plain-JSON dict made once."""
    if fig is None:
        return None
    import json

    import plotly.io

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
    args = tuple(_resolve(path, gen, a) for a in args)
    kwargs = tuple((k, _resolve(path, gen, v)) for k, v in kwargs)
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
    return _cached_figure(str(store_path()), data_end(), builder, args, tuple(sorted(kwargs.items())))


@st.cache_resource(ttl=CACHE_TTL_S, show_spinner=False, max_entries=300, hash_funcs=_hash_funcs())
def _panel_figure(
    path: str, gen: Any, w: views.Window, key: str, service: str | None, breaches: Any, compact: bool
) -> Any:
    """(figure or None when the panel has no samples) for one resource panel."""
    panel = views.PANELS_BY_KEY[key]
    df, cap = _cached(path, gen, "panel_series", (w, key, service), ())
    if df.empty:
        return None
    kwargs = {"title": panel.title, "unit": panel.unit, "dimension": panel.dimension, "capacity": cap,
              "breaches": breaches, "height": 220 if compact else 260}  # fmt: skip
    return _figure_of("resource_chart", (df,), tuple(sorted(kwargs.items())))


def _charts() -> Any:
    from dashboard import charts

    return charts


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False, max_entries=20)
def _live(path: str, name: str, args: tuple[Any, ...]) -> Any:
    return getattr(views, name)(_open_store(path), *args)


def data_end() -> Any:
    """views.data_end(store), re-read at most every LIVE_TTL_S seconds."""
    store()
    return _live(str(store_path()), "data_end", ())


def freshness(now: Any, by_target: bool = False) -> Any:
    """views.freshness at `now`, its queries re-run at most every LIVE_TTL_S seconds."""
    store()
    return views.freshness_at(_live(str(store_path()), "last_seen", (by_target,)), now)


def slo_report(slo: str, window: str) -> Any:
    """hopscope.report.build_report (without causes: see incident_causes) through st.cache_data."""
    store()
    return _cached_report(str(store_path()), data_end(), rules(), slo, window)


@st.cache_data(ttl=3600, show_spinner=False, max_entries=500)
def _cached_cause(path: str, rules_dir: str, key: str) -> str:
    return views.incident_cause(_open_store(path), rules_dir, key)


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
    label: str, name: str, options: Sequence[str], default: str, key: str, *, sidebar: bool = False, **kw: Any
) -> str:
    """A selectbox mirroring ?name=: a value set elsewhere (a link, a chart click) moves the widget,
    and a choice in the widget moves the parameter. Returns the value chosen."""
    value = param(name, options, default)
    seen = f"_{key}_param"
    if key not in st.session_state or st.session_state.get(seen) != value:
        st.session_state[key] = value  # before the widget exists: it starts there
    picked = (st.sidebar if sidebar else st).selectbox(label, list(options), key=key, **kw)
    set_param(name, picked, default)
    st.session_state[seen] = picked
    return str(picked)


ALL = "(all)"


def service_filter() -> str | None:
    """The shared service filter (?service=, set by the sidebar or by a click on the Hops graph)."""
    picked = synced_select(
        "Service", "service", [ALL, *view("services")], ALL, "service_select", sidebar=True
    )
    return None if picked == ALL else picked


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        st.warning(f"Ignoring a time that is not ISO 8601: {esc_md(text[:40])}")
        return None


def time_range() -> tuple[str, datetime | None, datetime | None]:
    """The shared time range from the sidebar (and ?range= or ?from=&to=): (key, start, end)."""
    choices = [*views.RANGES, "custom"]
    key = param("range", choices, DEFAULT_RANGE)
    picked = st.sidebar.selectbox("Time range", choices, index=choices.index(key), key="range_select")
    set_param("range", picked, DEFAULT_RANGE)
    if picked != "custom":
        st.query_params.pop("from", None)
        st.query_params.pop("to", None)
        return picked, None, None
    latest = views.window(store(), "24h")
    lo = _parse_time(st.query_params.get("from")) or latest.end - timedelta(days=1)
    hi = _parse_time(st.query_params.get("to")) or latest.end
    dates = st.sidebar.date_input("From / to (UTC)", value=(lo.date(), hi.date()), key="abs_dates")
    if isinstance(dates, tuple) and len(dates) == 2:
        lo = datetime.combine(dates[0], time())
        hi = datetime.combine(dates[1], time()) + timedelta(days=1)
    set_param("from", lo.isoformat(timespec="minutes"))
    set_param("to", hi.isoformat(timespec="minutes"))
    return "custom", lo, hi


def window(spec: tuple[str, datetime | None, datetime | None]) -> views.Window:
    """Resolve a time_range() against the store's clock now (not cached: "now" moves)."""
    key, lo, hi = spec
    try:
        return views.window(
            store(), key if key in views.RANGES else DEFAULT_RANGE, start=lo, end=hi, last=data_end()
        )
    except HopscopeError as exc:
        st.warning(str(exc))
        return views.window(store(), DEFAULT_RANGE)


def route_filter() -> str | None:
    routes = view("routes")
    if len(routes) <= 1:
        return routes[0] if routes else None
    choices = ["(all)", *routes]
    picked = st.sidebar.selectbox(
        "Route", choices, index=choices.index(param("route", choices, "(all)")), key="route_select"
    )
    set_param("route", picked, "(all)")
    return None if picked == "(all)" else picked


def refresh_interval() -> int | None:
    """Auto-refresh period in seconds (None = paused), from the sidebar and ?refresh=."""
    choices = list(REFRESH_CHOICES)
    picked = st.sidebar.selectbox(
        "Auto-refresh",
        choices,
        index=choices.index(param("refresh", choices, DEFAULT_REFRESH)),
        key="refresh_select",
        help="How often live charts re-query the store; 'off' pauses.",
    )
    set_param("refresh", picked, DEFAULT_REFRESH)
    return REFRESH_CHOICES[picked]


def window_caption(w: views.Window) -> None:
    """Say which time the page shows, and that it is a replay when the data stopped."""
    if w.replay and w.data_end is not None:
        st.caption(
            f"{w.label} · demo data, ends at {w.data_end:%Y-%m-%d %H:%M} UTC (no new data for a while; shown as of then)"
        )
    else:
        st.caption(f"{w.label} · live · bucket {w.step_s // 60} min")


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


def freshness_line(w: views.Window) -> None:
    """One line per data source: "last sample 4 s ago", stale sources marked."""
    df = freshness(views.utcnow().replace(microsecond=0))
    if df.empty:
        st.caption("No collector has written anything yet: start `hopscope collect`.")
        return
    parts = []
    for row in df.itertuples(index=False):
        age = row.age
        mark = ":orange[stale]" if row.stale else ":green[fresh]"
        parts.append(f"**{esc_md(row.source)}** {mark} · last sample {age} ago")
    st.caption("  |  ".join(parts))


def resource_row(w: views.Window, breaches: Any, service: str | None = None) -> None:
    """Compute, bandwidth and memory side by side, two or three charts each, in their colours."""

    cols = st.columns(3)
    for col, (dimension, keys) in zip(cols, views.OVERVIEW_PANELS.items(), strict=True):
        with col:
            st.markdown(f"#### :{_DIM_MD[dimension]}[{dimension.capitalize()}]")
            panel_charts(w, keys, breaches, service=service, compact=True)


_DIM_MD = {"compute": "orange", "bandwidth": "blue", "memory": "green"}


def panel_charts(
    w: views.Window, keys: Sequence[str], breaches: Any, *, service: str | None = None, compact: bool = False
) -> int:
    """Draw each resource panel that has data; returns how many were drawn."""

    drawn = 0
    for key in keys:
        panel = views.PANELS_BY_KEY[key]
        store()
        fig = _panel_figure(str(store_path()), data_end(), w, key, service, breaches, compact)
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


def breaches_in(w: views.Window) -> Any:
    """Breaches overlapping the window (a DataFrame), or None where SLOs cannot be evaluated."""
    try:
        return view("breach_table", rules(), w.start, w.end)
    except (ImportError, HopscopeError) as exc:
        st.caption(f"Breaches not shown: {esc_md(exc)}")
        return None


def slo_tiles(w: views.Window) -> Any:
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
            a, b = st.columns(2)
            a.metric("SLI now", _pct(row.sli), help=f"objective {_pct(row.objective)} over {row.window}")
            b.metric("Budget left", _pct(row.budget_remaining, 1))
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
    cols = st.columns(min(len(breaches), 4))
    for i, b in enumerate(breaches.itertuples(index=False)):
        with cols[i % len(cols)]:
            st.page_link(
                "pages/incident.py",
                label=f"Incident {b.number} · {b.slo} · {b.start:%b %d %H:%M}",
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


def cause_sections(d: dict[str, Any], w: views.Window, incident: tuple[Any, Any]) -> None:
    """The ranked causes, each with its evidence table and its top signals next to the hop's latency."""
    import pandas as pd

    from dashboard import charts

    st.subheader("Ranked causes")
    baseline = next(
        ((pd.Timestamp(x["start"]), pd.Timestamp(x["end"])) for x in d["baseline"]["windows"] if x["used"]),
        None,
    )
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
            st.dataframe(ev.drop(columns=["labels"], errors="ignore"), hide_index=True)
            hop = view("hop_series", w, cause["hop"])
            for e in cause["evidence"][:2]:
                sig = view("evidence_series", w, e["metric"], e["labels"])
                fig = charts.evidence_chart(
                    sig,
                    hop,
                    signal_name=e["signal"],
                    unit=e.get("unit") or "",
                    dimension=e["dimension"],
                    hop_name=cause["hop"],
                    baseline=baseline,
                    incident=incident,
                )
                chart(fig, f"ev_{cause['rank']}_{e['signal']}", clickable=False)

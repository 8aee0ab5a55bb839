"""The Overview page's sections: data freshness, SLO tiles, breach links and the row of resource panels."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hopscope import charts
from hopscope.dashboard import panels, state
from hopscope.errors import HopscopeError
from hopscope.markdown import literal
from hopscope.query import slos, windows
from hopscope.store import utcnow


def freshness_line() -> None:
    """One line per data source: "last sample 4 s ago", stale sources marked."""
    df = state.freshness(utcnow().replace(microsecond=0))
    if df.empty:
        st.caption("No collector has written anything yet: start `hopscope collect`.")
        return
    parts = []
    for row in df.itertuples(index=False):
        age = row.age
        mark = ":orange[stale]" if row.stale else ":green[fresh]"
        parts.append(f"**{literal(row.source)}** {mark} · last sample {age} ago")
    st.caption("  |  ".join(parts))


def resource_row(w: windows.Window, breaches: pd.DataFrame | None, service: str | None = None) -> None:
    """Compute, bandwidth and memory side by side, two or three charts each, in their colours."""

    cols = st.columns(3)
    batch = tuple(k for keys in panels.OVERVIEW_PANELS.values() for k in keys)
    for col, (dimension, keys) in zip(cols, panels.OVERVIEW_PANELS.items(), strict=True):
        with col:
            st.markdown(f"#### :{_DIM_MD[dimension]}[{dimension.capitalize()}]")
            state.panel_charts(w, keys, breaches, service=service, compact=True, batch=batch)


_DIM_MD = {"compute": "orange", "bandwidth": "blue", "memory": "green"}


def slo_tiles(w: windows.Window) -> pd.DataFrame | None:
    """One tile per SLO (state, SLI vs objective, budget, burn rates); returns the breaches in the window."""
    try:
        statuses = state.view(slos.slo_statuses, state.rules(), w.end)
    except (ImportError, HopscopeError) as exc:
        st.warning(f"SLOs not evaluated: {literal(exc)}")
        return None
    if statuses.empty:
        st.info(f"No SLOs defined: add one to {literal(state.rules())}/ (see `hopscope slo check`).")
        return None
    cols = st.columns(min(len(statuses), 4))
    for i, row in enumerate(statuses.itertuples(index=False)):
        with cols[i % len(cols)], st.container(border=True):
            state_name = row.alert_state if row.alert_state in charts.SEVERITY_BADGES else "no data"
            st.markdown(f"**{literal(row.slo)}**")
            alert = {"ok": "no alert firing", "no data": "no events"}.get(
                state_name, f"{state_name} alert firing"
            )
            st.badge(f"{state_name.upper()} · {alert}", color=state.badge_color(state_name))
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
                f"{literal(k)} ×{v:.1f}" for k, v in row.burn_rates.items() if v == v and v is not None
            )
            st.caption(f"objective {_pct(row.objective)} · burn {burns or 'n/a'}")
    return state.breaches_in(w)


def _pct(x: float | None, digits: int = 2) -> str:
    if x is None or x != x:
        return "no data"
    return f"{100 * float(x):.{digits}f}%"


def breach_links(breaches: pd.DataFrame | None) -> None:
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
                label=f"Incident {b.number} · {b.start:%b %d %H:%M} · {literal(b.slo)}",
                query_params={"incident": str(b.number)},
            )

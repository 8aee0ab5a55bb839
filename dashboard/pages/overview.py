"""Overview: SLO tiles, end-to-end latency and traffic, latency by hop, the three resources, freshness."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hopscope import charts
from hopscope.dashboard import first, state
from hopscope.dashboard.pages.widgets import overview
from hopscope.markdown import literal
from hopscope.query import slos, spans, windows

state.page("Overview")
spec = state.time_range()
route = state.route_filter()
service = state.service_filter()
every = state.refresh_interval()


@st.fragment(run_every=every)
def live() -> None:
    with state.timed("overview#live"):  # a live refresh tick reruns this function only
        _live()


def _live() -> None:
    w = state.window(spec)
    state.window_caption(w)
    # The main chart first: the freshness line and SLO tiles above it, the traffic beside it and the rest
    # below are sections drawn once the browser has drawn the end-to-end latency (hopscope.dashboard.first).
    head(w)
    breaches = state.breaches_in(w)
    if state.view(spans.latency_series, w, route).empty:  # e.g. GPU samples but no traces yet: resources only
        st.info(
            "No requests in this range: start `hopscope collect` with traces (or run `hopscope demo`), or pick a longer time range."
        )
        first.no_main_chart()
    else:
        left, right = st.columns(2)
        with left:
            threshold = slos.entry_latency_threshold(state.rules(), route)  # the SLO's line, if one
            first.main_chart(
                state.figure(
                    charts.latency_chart,
                    state.q(spans.latency_series, w, route),
                    breaches,
                    threshold_ms=threshold,
                ),
                "latency",
            )
        with right:
            traffic(w, breaches)
    below(w, breaches)


@first.later("overview_head")
def head(w: windows.Window) -> None:
    overview.freshness_line()
    overview.slo_tiles(w)


@first.later("overview_traffic")
def traffic(w: windows.Window, breaches: pd.DataFrame | None) -> None:
    state.chart(
        state.figure(charts.traffic_chart, state.q(spans.traffic_series, w, route), breaches), "traffic"
    )


@first.later("overview_below")
def below(w: windows.Window, breaches: pd.DataFrame | None) -> None:
    if not state.view(spans.latency_series, w, route).empty:
        state.chart(
            state.figure(charts.hop_stack_chart, state.q(spans.hop_latency_series, w, route), breaches),
            "hops",
        )
        overview.breach_links(breaches)
    if service:
        st.caption(f"Resources of **{literal(service)}** only (Service filter in the sidebar).")
    overview.resource_row(w, breaches, service)


live()

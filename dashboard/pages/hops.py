"""Hops: the service graph with each edge's p99, rate and errors; click a service or edge to focus the charts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hopscope import charts
from hopscope.dashboard import first, state
from hopscope.markdown import literal
from hopscope.model import Hop
from hopscope.query import spans, windows

state.page("Hops")
spec = state.time_range()
route = state.route_filter()
w = state.window(spec)
state.window_caption(w)
edges = state.view(spans.hop_edges, w, route)
if edges.empty:
    st.info(
        "No hop data in this range: start `hopscope collect` (spans roll up into hops every minute), or pick a longer range."
    )
    st.stop()
hops = sorted(
    {*edges["server"], *(str(Hop(c, s)) for c, s in zip(edges["client"], edges["server"], strict=True) if c)}
)


def pick(hop: str) -> None:
    """A click on a service or an edge label focuses the page on it (the selectbox follows ?hop=)."""
    if hop in hops and hop != st.query_params.get("hop"):
        state.set_param("hop", hop)
        st.rerun()


choice = state.synced_select(
    "Focus on hop", "hop", ["(all hops)", *hops], "(all hops)", "hop_select",
    help="Or click a service or an edge label in the graph.",
)  # fmt: skip
focus = "" if choice == "(all hops)" else choice
if focus:  # the other pages' service filter follows: the service the hop runs on (an edge's server)
    state.set_param("service", Hop.parse(focus).server)
first.main_chart(
    state.figure(charts.service_graph, state.q(spans.hop_edges, w, route), focus or None),
    "graph",
    on_pick=pick,
)


@first.later("hops_rest")
def details(w: windows.Window, edges: pd.DataFrame, focus: str) -> None:
    """Latency by hop, the focused hop's charts and the table of edges: drawn after the graph."""
    focus_hop = Hop.parse(focus)
    client, server = focus_hop.client, focus_hop.server
    breaches = state.breaches_in(w)
    series = state.q(spans.hop_latency_series, w, route)
    state.chart(state.figure(charts.hop_stack_chart, series, breaches, highlight=focus or None), "hop_stack")
    if focus:
        st.subheader(literal(focus))
        left, right = st.columns(2)
        one = state.view(spans.hop_series, w, focus)
        kind = "bandwidth" if client else "compute"
        with left:
            fig = state.figure(charts.resource_chart, one.assign(service=focus, series="", value=one["ms"]),
                               title=f"{focus}: time per request", unit="ms", dimension=kind, breaches=breaches)  # fmt: skip
            state.chart(fig, "hop_focus")
        into = client if client else str(edges.loc[edges["server"] == server, "client"].iloc[0])
        title = f"{Hop(into or '(clients)', server)}: latency as the caller sees it"
        lat = state.q(spans.latency_series, w, route, into, server)
        with right:
            state.chart(state.figure(charts.latency_chart, lat, breaches, title=title), "hop_latency")
        at = edges["server"] == server  # the focused edge, or the edges into and out of the focused service
        edges = edges[at & (edges["client"] == client) if client else at | (edges["client"] == server)]
    table = edges.assign(
        hop=[str(Hop(c or "(clients)", s)) for c, s in zip(edges["client"], edges["server"], strict=True)]
    )
    st.dataframe(
        table[["hop", "rps", "error_ratio", "p99", "mean_ms", "gap_ms", "self_ms"]],
        hide_index=True,
        column_config={
            "rps": st.column_config.NumberColumn("requests/s", format="%.2f"),
            "error_ratio": st.column_config.NumberColumn("errors", format="percent"),
            "p99": st.column_config.NumberColumn("p99 (ms)", format="%.1f"),
            "mean_ms": st.column_config.NumberColumn("mean (ms)", format="%.1f"),
            "gap_ms": st.column_config.NumberColumn("network gap (ms)", format="%.1f"),
            "self_ms": st.column_config.NumberColumn("server self (ms)", format="%.1f"),
        },
    )


details(w, edges, focus)

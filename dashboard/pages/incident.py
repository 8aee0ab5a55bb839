"""Incident: one breach (?incident=N or id): timeline, ranked causes with evidence, hop waterfall, traces, BubbleUp."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from hopscope import charts
from hopscope.dashboard import first, state
from hopscope.dashboard.pages.widgets import incident
from hopscope.markdown import literal
from hopscope.query import slos, spans, windows

state.page("Incident")
table, picked = incident.incident_picker()


@first.later("incident_breaches")
def all_breaches(table: pd.DataFrame) -> None:
    incident.breach_list(table)  # a data grid (its own JavaScript): after the main chart


all_breaches(table)
b = dict(table[table["number"].astype(str) == picked].iloc[0])
st.subheader(f"Incident {b['number']} · {literal(b['slo'])}")
st.badge(str(b["severity"]).upper(), color=state.badge_color(b["severity"]))
c = st.columns(4)
c[0].metric("Start (UTC)", f"{b['start']:%b %d %H:%M}")
c[1].metric("Duration", f"{(b['end'] - b['start']).total_seconds() / 60:.0f} min")
c[2].metric("Peak burn rate", f"×{b['peak_burn_rate']:.1f}")
c[3].metric("Budget consumed", f"{100 * b['budget_consumed']:.1f}%")


def _naive(text: str | None, default: object) -> datetime:
    """An ISO time of the diagnosis JSON ('...Z') as naive UTC; `default` when absent."""
    t = pd.Timestamp(text if text else default)
    naive: datetime = (t.tz_convert(None) if t.tzinfo is not None else t).to_pydatetime()
    return naive


w = windows.context_window(b["start"], b["end"])
band = table[table["number"] == b["number"]]
timeline = state.q(slos.slo_timeline, state.rules(), b["slo"], w)
objective = slos.get_slo(state.rules(), b["slo"]).objective
excluded = state.view(slos.slo_corrections, state.rules(), b["slo"], w.start, w.end)  # budget corrections
left, right = st.columns(2)
with left:
    state.chart(
        state.figure(charts.sli_chart, timeline.at(0), objective, band, excluded), "sli", clickable=False
    )
with right:
    first.main_chart(
        state.figure(charts.burn_rate_chart, timeline.at(1), timeline.at(2), band, excluded),
        "burn",
        clickable=False,
    )


def _kept() -> str:
    """How long spans are kept, in words (rollups, and so exemplar ids, are kept far longer)."""
    keep, exemplar = state.view(spans.span_retention)
    days = [f"{t.total_seconds() / 86400:g} d" for t in (keep, exemplar) if t is not None]
    return f"spans are kept {days[0]}, exemplar traces {days[-1]}" if days else "spans expire"


@first.later("incident_diagnosis")
def diagnosis(b: dict[str, Any], picked: str) -> None:
    """The diagnosis and what it found (causes, waterfall, traces, BubbleUp): drawn after the timeline."""
    # The diagnosis compares the incident with its baselines over every linked signal: it can take a while.
    with st.spinner("Diagnosing: which hop, and is it compute, bandwidth or memory…"):
        d = state.view(slos.incident, state.rules(), picked).diagnosis.to_dict()
    top = d["causes"][0] if d["causes"] else None
    if top:
        # the summary itself begins with the share ("100% of the added latency (+13.6 ms per request) is in ...")
        st.success(f"**{literal(top['hop'])}** · {top['dimension']} — {literal(top['summary'])}")
    else:
        st.warning(f"No clear cause. Checked: {literal('; '.join(d['checked']))}")
    # how much of the rise the hops explain; the residual is named, above all when it is most of it
    explained = d.get("explained") or {}
    if explained.get("partial"):
        st.warning(literal(explained["statement"]))
    elif explained.get("statement"):
        st.caption(
            f"{literal(explained['statement'])}; residual {explained['residual']:+.4g} {explained['unit']}."
        )
    for gap in d.get("data_gaps") or []:
        st.warning(literal(gap["note"]))

    # The numbers come from the part of the breach that burned budget: an alert holds a breach open after
    # recovery (hopscope.diagnosis.baseline.burning_span).
    dw = d.get("diagnosed_window") or {}
    read = (_naive(dw.get("start"), b["start"]), _naive(dw.get("end"), b["end"]))
    if read != (pd.Timestamp(b["start"]).to_pydatetime(), pd.Timestamp(b["end"]).to_pydatetime()):
        st.caption(
            f"Diagnosed over {read[0]:%b %d %H:%M}–{read[1]:%H:%M} UTC, the part of the breach that burned budget; "
            "the breach stays open until its alert windows clear."
        )
    incident.cause_sections(d, read)

    if d.get("decomposition"):
        hops = pd.DataFrame(d["decomposition"]["hops"])
        dims = {c["hop"]: c["dimension"] for c in d["causes"]}
        waterfall = state.figure(charts.hop_waterfall_chart, hops.assign(dimension=hops["hop"].map(dims)))
        state.chart(waterfall, "waterfall", clickable=False)

    st.subheader("Slow-trace exemplars")
    traces = state.view(spans.exemplar_traces, read[0], read[1])

    if traces.empty:
        named = state.view(spans.exemplars_named, read[0], read[1])
        if named:
            st.caption(
                f"The rollups name {named} slow-trace exemplar{'s' if named != 1 else ''} in this window, but "
                f"none of their spans are stored any more ({_kept()}; latency rollups much longer)."
            )
        else:
            st.caption("No exemplar traces were recorded in this window.")
    else:
        tid = st.selectbox(
            "Trace",
            list(traces["trace_id"]),
            format_func=lambda t: f"{t} · {traces.set_index('trace_id').loc[t, 'duration_ms']:.0f} ms",
        )
        trace_rows = state.view(spans.trace_spans, tid)
        if trace_rows.empty:
            st.caption(f"No spans are stored for trace {tid} ({_kept()}).")
        else:
            state.chart(
                state.figure(charts.trace_gantt_chart, state.q(spans.trace_spans, tid)),
                "trace",
                clickable=False,
            )

    bubble = pd.DataFrame(d["bubbleup"]["attributes"])
    if bubble.empty:
        st.caption(f"BubbleUp: {literal(d['bubbleup'].get('note') or 'no attribute stands out')}")
    else:
        bub = bubble.rename(columns={"baseline_fraction": "baseline", "incident_slow_fraction": "incident"})
        state.chart(state.figure(charts.bubbleup_chart, bub), "bubbleup", clickable=False)


diagnosis(b, picked)

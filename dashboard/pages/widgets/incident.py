"""The Incident page's sections: the breach picker and the ranked causes with their evidence charts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from hopscope import charts
from hopscope.dashboard import state
from hopscope.errors import HopscopeError
from hopscope.markdown import literal
from hopscope.query import samples, slos, spans, windows


def incident_picker() -> tuple[pd.DataFrame, str]:
    """The list of breaches and the one picked (?incident= number or id; unknown ones say so)."""
    try:
        table = state.view(slos.breach_table, state.rules())
    except (ImportError, HopscopeError) as exc:
        st.warning(f"Incidents cannot be listed: {literal(exc)}")
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
        st.error(f"Unknown incident {literal(key[:40])}: pick one of the {len(labels)} below.")
        key = str(table["number"].iloc[-1])
    numbers = list(labels)
    picked = str(st.selectbox("Incident", numbers, index=numbers.index(key), format_func=lambda n: labels[n]))
    state.set_param("incident", picked)
    return table, picked


def breach_list(table: pd.DataFrame) -> None:
    """Every breach in a table, folded away under the picker."""
    with st.expander(f"All {len(table)} breaches", expanded=False):
        st.dataframe(
            table,
            hide_index=True,
            column_config={"budget_consumed": st.column_config.ProgressColumn(min_value=0, max_value=1)},
        )


def cause_sections(d: dict[str, Any], incident: tuple[datetime, datetime]) -> None:
    """The ranked causes, each with its evidence table and its top signals next to the hop's latency.

    The evidence charts show the incident and as long before it (windows.evidence_window), not the
    page's window: the baseline windows lie days earlier, so the baseline is drawn as the level the
    diagnosis measured there, for the signal and for the hop.
    """
    st.subheader("Ranked causes")
    used = str((d.get("baseline") or {}).get("used") or "").replace("_", " ")
    if used:
        st.caption(
            f"Dashed levels on the charts: the baseline the diagnosis compared with ({literal(used)})."
        )
    ew = windows.evidence_window(*incident)
    hop_base = {h["hop"]: h.get("baseline_ms") for h in (d.get("decomposition") or {}).get("hops", [])}
    for cause in d["causes"]:
        with st.expander(
            f"#{cause['rank']} {literal(cause['hop'])} · {cause['dimension']} · "
            f"{100 * cause['share_of_added_latency']:.0f}% of added latency",
            expanded=cause["rank"] == 1,
        ):
            st.markdown(literal(cause["summary"]))
            ev = pd.DataFrame(cause["evidence"])
            if ev.empty:
                st.caption("No linked resource signal.")
                continue
            # "name" says metric and place; the full series key and labels stay in the JSON
            shown = ev.drop(columns=["labels", "signal", "metric"], errors="ignore")
            st.dataframe(
                shown, hide_index=True, column_config={"name": st.column_config.TextColumn("signal")}
            )
            hop = state.q(spans.hop_series, ew, cause["hop"])
            for e in cause["evidence"][:2]:
                sig = state.q(samples.evidence_series, ew, e["metric"], e["labels"])
                where = samples.series_label(e["labels"])
                fig = state.figure(
                    charts.evidence_chart,
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
                state.chart(fig, f"ev_{cause['rank']}_{e['signal']}", clickable=False)

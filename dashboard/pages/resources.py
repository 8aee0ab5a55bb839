"""Resources: per GPU (utilization, clocks and clock-event reasons, framebuffer, PCIe/NVLink, power, temperature, XIDs),
per NIC (throughput vs link speed, drops, retransmits), probes by phase, feature store and host memory."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hopscope.dashboard import first, state
from hopscope.dashboard.pages.widgets import resources
from hopscope.query import windows

SECTIONS = {
    "GPU": ("gpu_util", "sm_clock", "clock_reasons", "fb", "mem_copy", "pcie", "nvlink", "power", "temp", "xid"),
    "Network": ("link", "drops", "retrans"),
    "Probes": ("probe",),
    "Feature store & hosts": ("redis", "redis_miss", "host_mem", "cpu"),
}  # fmt: skip
ALL_KEYS = tuple(k for keys in SECTIONS.values() for k in keys)

state.page("Resources")
spec = state.time_range()
svc = state.service_filter()
every = state.refresh_interval()
st.caption(
    "Colours: :orange[compute] · :blue[bandwidth] · :green[memory]. Counters are shown as per-second rates."
)


@st.fragment(run_every=every)
def live() -> None:
    w = state.window(spec)
    state.window_caption(w)
    # Only the chosen section is drawn (a hidden tab's charts would cost the browser as much as shown
    # ones); its data comes with the others' in one query. The default is the first section with data.
    has = resources.panels_with_data(w, ALL_KEYS, svc)
    default = next((name for name, keys in SECTIONS.items() if has & set(keys)), "GPU")
    section = state.synced_select(
        "Section", "section", list(SECTIONS), default, "section_select", segmented=True
    )
    breaches = state.breaches_in(w)
    shown = [key for key in SECTIONS[section] if key in has]
    # The main chart first: the section's first panel; the others, in two columns as before, are drawn
    # once the browser has drawn it (hopscope.dashboard.first).
    cols = st.columns(2)
    if shown:
        with cols[0]:
            state.panel_charts(w, shown[:1], breaches, service=svc, batch=ALL_KEYS)
            first.arm(f"panel_{shown[0]}")
        for i, col in enumerate(cols):
            with col:
                more(w, shown[2 - i :: 2], breaches, i)
    else:
        first.no_main_chart()
    if not has:
        st.info(
            "No resource samples yet: start `hopscope collect` with the NVML, node_exporter or probe collectors enabled."
        )
    elif not shown:
        st.info(
            "No samples for these signals in this range: check the collectors (Collectors page) or widen the time range."
        )


@first.later("resources_more_left")
def _more_left(w: windows.Window, keys: list[str], breaches: pd.DataFrame | None) -> None:
    state.panel_charts(w, keys, breaches, service=svc, batch=ALL_KEYS)


@first.later("resources_more_right")
def _more_right(w: windows.Window, keys: list[str], breaches: pd.DataFrame | None) -> None:
    state.panel_charts(w, keys, breaches, service=svc, batch=ALL_KEYS)


def more(w: windows.Window, keys: list[str], breaches: pd.DataFrame | None, column: int) -> None:
    """The section's other panels in one column (a fragment each: one key names one fragment)."""
    if keys:
        (_more_left if column == 0 else _more_right)(w, keys, breaches)


live()

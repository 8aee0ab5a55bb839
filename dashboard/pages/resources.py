"""Resources: per GPU (utilization, clocks and clock-event reasons, framebuffer, PCIe/NVLink, power, temperature, XIDs),
per NIC (throughput vs link speed, drops, retransmits), probes by phase, feature store and host memory."""

from __future__ import annotations

import streamlit as st

from hopscope.dashboard import state
from hopscope.dashboard.pages.widgets import resources

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
    cols = st.columns(2)
    n = 0
    for key in SECTIONS[section]:
        with cols[n % 2]:
            n += state.panel_charts(w, [key], breaches, service=svc, batch=ALL_KEYS)
    if not has:
        st.info(
            "No resource samples yet: start `hopscope collect` with the NVML, node_exporter or probe collectors enabled."
        )
    elif n == 0:
        st.info(
            "No samples for these signals in this range: check the collectors (Collectors page) or widen the time range."
        )


live()

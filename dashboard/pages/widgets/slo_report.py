"""The SLO report page's data: the report and each incident's one-line cause, cached."""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from hopscope.dashboard import cache, state
from hopscope.query import slos
from hopscope.report import SloReport, build_report, with_causes
from hopscope.slo.corrections import read_corrections


@st.cache_data(ttl=cache.CACHE_TTL_S, show_spinner=False, max_entries=50)
def _cached_report(
    path: str, gen: datetime | None, rules_dir: str, slo: str, window: str, corrections: str
) -> SloReport:
    return build_report(cache.open_store(path), rules=rules_dir, slo=slo, window=window, causes=False)


def slo_report(slo: str, window: str) -> SloReport:
    """hopscope.report.build_report (without causes: see incident_causes) through st.cache_data; a
    correction recorded with `hopscope slo correct` shows at once (it moves no data end)."""
    path = state.cache_path()
    stored = repr(sorted(read_corrections(cache.open_store(path)).items()))
    return _cached_report(path, state.data_end(), state.rules(), slo, window, stored)


@st.cache_data(ttl=3600, show_spinner=False, max_entries=500)
def _cached_cause(path: str, rules_dir: str, key: str) -> str:
    return slos.incident_cause(cache.open_store(path), rules_dir, key)


def incident_causes(rep: SloReport) -> SloReport:
    """The report with each incident's one-line cause (diagnoses are slow: each cached for an hour)."""
    with st.spinner(f"Diagnosing {len(rep.incidents)} incident(s)…"):
        causes = {
            i["id"]: _cached_cause(str(state.store_path()), state.rules(), i["id"]) for i in rep.incidents
        }
    return with_causes(rep, causes)

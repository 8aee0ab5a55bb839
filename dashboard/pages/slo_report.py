"""SLO report: compliance and error budget over 7/28/90 days or the calendar month, incidents and their cost, exports."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hopscope import charts, report
from hopscope.dashboard import first, state
from hopscope.dashboard.pages.widgets import slo_report
from hopscope.errors import HopscopeError
from hopscope.markdown import literal
from hopscope.query import slos
from hopscope.report import SloReport

state.page("SLO report")
try:
    names = state.view(slos.slo_names, state.rules())
except (ImportError, HopscopeError) as exc:
    st.warning(f"SLOs cannot be loaded: {literal(exc)}")
    st.stop()
if not names:
    st.info(f"No SLOs defined: add one to {literal(state.rules())}/ (check it with `hopscope slo check`).")
    st.stop()
slo = state.param("slo", names, names[0])
window = state.param("window", list(report.WINDOWS), "28d")
left, right = st.columns([2, 1])
slo = left.selectbox("SLO", names, index=names.index(slo), key="slo_select")
window = right.segmented_control("Window", list(report.WINDOWS), default=window, key="window_select") or "28d"
state.set_param("slo", slo, names[0])
state.set_param("window", window, "28d")

rep = slo_report.slo_report(slo, window)
st.caption(
    f"{literal(rep.description)} · {rep.start:%Y-%m-%d %H:%M} – {rep.end:%Y-%m-%d %H:%M} UTC · {rep.coverage}"
)
c = st.columns(4)
c[0].metric("SLI", report._pct(rep.sli), help=f"{rep.good:,.0f} good of {rep.total:,.0f} events")
c[1].metric("Objective", report._pct(rep.objective))
c[2].metric("Budget remaining", report._pct(rep.budget_remaining, 1))
c[3].metric("Incidents", len(rep.incidents))
VERDICTS: dict[bool | None, tuple[state.BadgeColor, str]] = {
    True: ("green", "COMPLIANT"),
    False: ("red", "NOT COMPLIANT"),
    None: ("gray", "NO DATA"),
}
color, verdict = VERDICTS[rep.compliant]
st.badge(verdict, color=color)

if rep.burndown.empty:
    st.info("No events for this SLO in the window: nothing to report yet.")
    first.no_main_chart()
else:
    excluded = report.corrections_frame(rep)
    first.main_chart(
        state.figure(charts.budget_burndown_chart, rep.burndown, excluded), "burndown", clickable=False
    )
if rep.corrections:
    st.caption(f"Excluded from the SLI, budget and alerts (budget corrections): {rep.excluded_minutes:,} min")
    st.dataframe(report.corrections_frame(rep), hide_index=True)


@first.later("slo_report_rest")
def incidents_and_exports(rep: SloReport, slo: str, window: str) -> None:
    """The incidents with their causes (a diagnosis each), the hop sub-budgets and the exports: after the burn-down."""
    st.subheader("Incidents")
    rep = slo_report.incident_causes(rep)
    if rep.incidents:
        inc = pd.DataFrame(rep.incidents)
        inc["length_min"] = (inc["end"] - inc["start"]).dt.total_seconds() / 60
        st.dataframe(
            inc[["number", "start", "length_min", "severity", "budget_consumed", "cause"]],
            hide_index=True,
            column_config={
                "budget_consumed": st.column_config.ProgressColumn(
                    "share of this report's budget",
                    min_value=0,
                    max_value=1,
                    format="percent",
                    help="The share of this report's error budget the incident spent (what the burn-down fell "
                    "by while it lasted); the incidents' shares add up to at most the budget consumed.",
                ),
                "length_min": st.column_config.NumberColumn("length (min)", format="%.0f"),
            },
        )
        state.chart(state.figure(charts.incident_cost_chart, inc), "incident_cost", clickable=False)
        for i in rep.incidents:
            st.page_link(
                "pages/incident.py",
                label=f"Open incident {i['number']} ({i['start']:%b %d %H:%M})",
                query_params={"incident": str(i["number"])},
            )
    else:
        st.success("No incidents in this window.")

    if rep.hop_budgets:
        st.subheader("Hop sub-budgets")
        state.chart(
            state.figure(charts.hop_budget_chart, pd.DataFrame(rep.hop_budgets)),
            "hop_budgets",
            clickable=False,
        )

    st.subheader("Export")
    e = st.columns(3)
    stem = f"slo-report-{slo}-{window}"
    # The HTML (charts and plotly.js inline, ~5 MB) is built when the button is clicked, not on every rerun.
    e[0].download_button(
        "HTML (self-contained)", lambda: report.to_html(rep), f"{stem}.html", "text/html", on_click="ignore"
    )
    e[1].download_button("CSV", report.to_csv(rep), f"{stem}.csv", "text/csv", on_click="ignore")
    e[2].download_button(
        "Markdown", report.to_markdown(rep), f"{stem}.md", "text/markdown", on_click="ignore"
    )
    st.caption(
        f"From the command line: `hopscope report --slo {slo} --window {window} --format html -o {stem}.html`"
    )


incidents_and_exports(rep, slo, window)

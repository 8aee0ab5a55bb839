"""Collectors: each source's last success, error rate, rows written and backfill progress; store size and retention."""

from __future__ import annotations

import streamlit as st

from hopscope import charts, health
from hopscope.dashboard import first, state
from hopscope.markdown import literal
from hopscope.query import samples, store_info
from hopscope.store import utcnow

state.page("Collectors")


spec = state.time_range()
every = state.refresh_interval()


@st.fragment(run_every=every)
def live() -> None:
    w = state.window(spec)
    state.window_caption(w)
    # The main chart first: the write and alert health and the table of targets sit above it but are
    # drawn once the browser has drawn it (hopscope.dashboard.first).
    health_and_targets()
    if state.view(store_info.collector_runs, w).empty:
        st.caption("No collection attempts recorded in this range.")
        first.no_main_chart()
    else:
        first.main_chart(
            state.figure(charts.collector_chart, state.q(store_info.collector_runs, w)),
            "runs",
            clickable=False,
        )


@first.later("collectors_health")
def health_and_targets() -> None:
    status = health.read_status(state.store_path())
    writes = health.write_health(status)
    if writes is not None:
        show = {"ok": st.success, "warning": st.warning, "error": st.error}[writes.level]
        show(literal(writes.headline))  # Streamlit reads it as Markdown: a host name is text, not markup
        for row in range(0, len(writes.figures), 4):  # four tiles a row stay readable at 1024 px
            for col, (label, value) in zip(st.columns(4), writes.figures[row : row + 4], strict=False):
                col.metric(label, value)
    alerts = health.alert_health(status)  # SLO evaluation and delivery to Alertmanager
    if alerts is not None:
        show = {"ok": st.success, "warning": st.warning, "error": st.error}[alerts.level]
        show(literal(alerts.headline))
        st.caption(" · ".join(f"{literal(label)}: {literal(value)}" for label, value in alerts.figures))
    now = utcnow().replace(microsecond=0)
    fresh = state.freshness(now, True)
    if fresh.empty:
        st.info("No collector has run yet: start `hopscope collect` (or `hopscope demo` for demo data).")
    else:
        stale = int(fresh["stale"].sum())
        st.markdown(
            f"**{len(fresh)} collector targets** · "
            + (
                f":orange[{stale} stale] (no sample for over {samples.STALE_AFTER.total_seconds() / 60:.0f} min)"
                if stale
                else ":green[all fresh]"
            )
        )
        st.caption(
            "Attempts, failures and rows count every collection run the store keeps (see retention below), "
            "not only the range above; the chart below is the range."
        )
        shown = fresh.assign(last_error=fresh["last_error"].fillna(""))  # no error: an empty cell, not "None"
        st.dataframe(
            shown[[c for c in samples.FRESHNESS_COLUMNS if c != "age_s"]],
            hide_index=True,
            column_config={
                "last_seen": st.column_config.DatetimeColumn(
                    "last sample (UTC)", format="YYYY-MM-DD HH:mm:ss"
                ),
                "error_ratio": st.column_config.NumberColumn("error rate", format="percent"),
                "attempts": st.column_config.NumberColumn("attempts", format="localized"),
                "failures": st.column_config.NumberColumn("failures", format="localized"),
                "rows": st.column_config.NumberColumn("rows written", format="localized"),
                "last_error": st.column_config.TextColumn("last error"),
            },
        )


@first.later("collectors_store")
def store_and_progress() -> None:
    """The store's size and tables, and the incremental jobs' progress: read once per STATS_TTL_S."""
    st.subheader("Store")
    size = state.stats(store_info.store_size)
    st.metric("Size on disk", f"{size / 1e6:,.1f} MB")
    st.dataframe(
        state.stats(store_info.table_stats),
        hide_index=True,
        column_config={
            "retention_days": st.column_config.NumberColumn("retention (days)"),
            "rows": st.column_config.NumberColumn("rows", format="localized"),
        },
    )
    progress = state.view(store_info.state_rows, "")
    st.subheader("Backfill and watermarks")
    if progress.empty:
        st.caption("No incremental job has recorded progress yet.")
    else:
        st.dataframe(progress, hide_index=True)


live()
store_and_progress()

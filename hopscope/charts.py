"""Pure Plotly figure builders: a DataFrame in, a go.Figure out. No Streamlit, no store.

Colours mean the same thing on every chart: one per resource dimension, one per
alert severity, one per percentile. Telemetry text (hop, span and label names)
is HTML-escaped before Plotly sees it, since Plotly renders a subset of HTML in
names and hover text.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd
import plotly.graph_objects as go

from hopscope.model import Hop

DIMENSION_COLORS: dict[str, str] = {"compute": "#E8710A", "bandwidth": "#1A73E8", "memory": "#12A37F"}
SEVERITY_COLORS: dict[str, str] = {
    "ok": "#2E7D32",
    "ticket": "#F9A825",
    "page": "#D32F2F",
    "no data": "#78909C",
}
# Streamlit badge colours for the same severities.
SEVERITY_BADGES: dict[str, str] = {"ok": "green", "ticket": "orange", "page": "red", "no data": "gray"}
PERCENTILE_COLORS: dict[str, str] = {"p50": "#5C6BC0", "p95": "#AB47BC", "p99": "#EF5350"}
# Colours drawn as data are mid-tones: each keeps a contrast of at least 2.5:1 against both themes'
# backgrounds (Streamlit's #FFFFFF and #0E1117); near-black or near-white ones vanish on one of them.
# Self-time hops cycle through these; network hops use shades of the bandwidth colour.
SELF_COLORS = ("#8E24AA", "#E8710A", "#12A37F", "#8D6E63", "#C2185B", "#00838F")
NETWORK_COLORS = ("#1A73E8", "#42A5F5", "#1565C0", "#0288D1", "#536DFE", "#00ACC1")
# Reference data (baselines, capacity, non-critical spans): a grey that reads on both themes.
NEUTRAL_COLOR = "#9E9E9E"
# One colour per burn-rate alert window.
BURN_COLORS = ("#D32F2F", "#F57C00", "#B8860B", "#9C27B0", "#1976D2", "#388E3C")
BAND_MARKER_NAME = "breaches"
EXCLUDED_COLOR = "#607D8B"  # budget corrections: a grey-blue band, not a severity colour
EXCLUDED_NAME = "excluded (correction)"
# Breach markers of different SLOs sit on rows this far apart (fraction of the plot's height).
MARKER_ROW_STEP = 0.08
TIME_AXIS = "time (UTC)"
# A series with this many points or fewer also draws its points (as Grafana does): a line
# through one point draws nothing, and a few points joined by straight lines hide where the data is.
MARKERS_UP_TO = 60
MARKER = {"size": 5}
# A point in time as the builders take it: what pd.Timestamp reads (tables hold naive UTC).
Instant: TypeAlias = datetime | pd.Timestamp | np.datetime64


def line_mode(n: int) -> str:
    """Plotly's scatter mode for a series of n points: lines, with markers when they are few."""
    return "lines+markers" if n <= MARKERS_UP_TO else "lines"


def esc(text: object) -> str:
    """Telemetry text made safe for Plotly labels and hover text."""
    return html.escape(str(text), quote=False)


def _base_layout(*, y_title: str, height: int = 300, title: str | None = None) -> dict[str, Any]:
    return {
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 64 if title else 30, "b": 10},
        "title": {"text": esc(title), "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top", "font": {"size": 15}}
        if title
        else None,
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0, "font": {"size": 11}},
        "hovermode": "x unified",
        "xaxis": {"title": {"text": TIME_AXIS}},
        "yaxis": {"title": {"text": y_title}},
    }  # fmt: skip


def _layout(fig: go.Figure, *, y_title: str, height: int = 300, title: str | None = None) -> go.Figure:
    fig.update_layout(_base_layout(y_title=y_title, height=height, title=title))
    return fig


def _ms(t: Instant) -> float:
    """One datetime as epoch_ms gives an array's: float milliseconds since the epoch (UTC)."""
    return float(pd.Timestamp(t).value / 1e6)


def epoch_ms(values: npt.ArrayLike) -> npt.NDArray[np.generic]:
    """Datetimes as float milliseconds since the epoch (UTC), for an axis typed "date": Plotly shows the
    same dates, but the browser gets one binary array instead of ISO strings it must parse one by one.
    Anything else comes back as ``np.asarray(values)`` (the same object for an array)."""
    arr = np.asarray(values)
    if arr.dtype == object:
        if not len(arr) or not hasattr(arr[0], "to_datetime64"):
            return arr
        arr = np.array([v.to_datetime64() for v in arr])
    if not np.issubdtype(arr.dtype, np.datetime64):
        return arr
    return arr.astype("datetime64[us]").astype("int64") / 1000.0


def _line(x: npt.ArrayLike, y: npt.ArrayLike, name: str, **kw: Any) -> dict[str, Any]:
    """A scatter trace as a dict: x on the time axis (epoch ms), markers when the points are few."""
    ys = y.to_numpy(dtype=float, na_value=np.nan) if isinstance(y, pd.Series) else np.asarray(y, dtype=float)
    return {"type": "scatter", "x": epoch_ms(x), "y": ys, "name": name,
            "mode": line_mode(len(ys)), "marker": MARKER, **kw}  # fmt: skip


def _hline(
    y: float, color: str, text: str | None, dash: str = "dash"
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A horizontal line across the plot and its label at the right end (what fig.add_hline draws)."""
    shape = {"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": y, "y1": y,
             "line": {"color": color, "dash": dash}}  # fmt: skip
    if not text:
        return shape, None
    note = {"text": text, "xref": "x domain", "x": 1, "yref": "y", "y": y, "xanchor": "right",
            "yanchor": "bottom", "showarrow": False}  # fmt: skip
    return shape, note


# The legend's font (size 11) is ~6.2 px per character; each entry adds its line sample and spacing.
LEGEND_CHAR_PX, LEGEND_ENTRY_PX, LEGEND_ROW_PX = 6.2, 46, 18
MAX_LEGEND_ENTRIES = 9  # a resource chart with more series shows none (hover names them)


def legend_top(names: Sequence[str], width: int, *, top: int = 64) -> int:
    """The top margin that leaves a horizontal legend of these entries room under a title, in a chart
    about `width` px wide: one row fits in the usual 64 px, each further row adds LEGEND_ROW_PX."""
    rows, used = 1, 0.0
    for name in names:
        w = len(html.unescape(str(name))) * LEGEND_CHAR_PX + LEGEND_ENTRY_PX
        if used and used + w > width - 20:
            rows, used = rows + 1, 0.0
        used += w
    return top + LEGEND_ROW_PX * (rows - 1)


def time_figure(
    traces: list[dict[str, Any]],
    breaches: pd.DataFrame | None = None,
    *,
    y_title: str,
    title: str | None = None,
    height: int = 300,
    layout: dict[str, Any] | None = None,
    hlines: Sequence[tuple[dict[str, Any], dict[str, Any] | None]] = (),
    excluded: pd.DataFrame | None = None,
) -> go.Figure:
    """A time chart built in one go (each add_trace / update_layout / add_hline re-validates the figure:
    several times the cost): the common layout, a date x axis, horizontal lines, the breach bands, and
    the periods excluded from the SLO (``excluded``: start, end, reason; its budget corrections)."""
    lay = _base_layout(y_title=y_title, height=height, title=title)
    lay["xaxis"]["type"] = "date"
    for key, value in (layout or {}).items():
        lay[key] = (
            {**lay[key], **value} if isinstance(value, dict) and isinstance(lay.get(key), dict) else value
        )
    shapes = [sh for sh, _ in hlines]
    notes = [n for _, n in hlines if n is not None]
    traces = list(traces)
    if breaches is not None and not breaches.empty:
        band_shapes, marker = _breach_parts(breaches, _x_extent(traces))
        shapes += band_shapes
        traces.append(marker)
        # A click selects the first hovered point: under "x unified" hover that is a line (not
        # selectable), so Streamlit's on_select would get no point and a marker could not open its
        # incident. "closest" makes the click pick the marker; a spike line keeps the time guide.
        lay["yaxis9"] = {"overlaying": "y", "range": [0, 1.05], "visible": False, "fixedrange": True}
        lay["hovermode"] = "closest"
        lay["xaxis"].update(
            {"showspikes": True, "spikemode": "across", "spikethickness": 1, "spikedash": "dot"}
        )
    if excluded is not None and not excluded.empty:
        ex_shapes, ex_notes = _excluded_parts(excluded, _x_extent(traces))
        shapes += ex_shapes
        notes += ex_notes
    if shapes:
        lay["shapes"] = shapes
    if notes:
        lay["annotations"] = notes
    return _unvalidated(traces, lay)


def _excluded_parts(
    excluded: pd.DataFrame, extent: tuple[float, float] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each excluded period shaded across the plot, labelled at its top ("excluded: reason"), cut to the
    series' extent as breach bands are."""
    shapes, notes = [], []
    for c in excluded.itertuples(index=False):
        x0, x1 = _ms(c.start), _ms(c.end)
        if extent is not None:
            x0, x1 = max(x0, extent[0]), min(x1, extent[1])
            if x0 >= x1:
                continue
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0, "y1": 1,
                       "fillcolor": EXCLUDED_COLOR, "opacity": 0.18, "line": {"width": 0}, "layer": "below",
                       "name": EXCLUDED_NAME})  # fmt: skip
        notes.append({"text": f"excluded: {esc(str(c.reason))[:60]}", "xref": "x", "x": (x0 + x1) / 2,
                      "yref": "paper", "y": 1, "yanchor": "bottom", "showarrow": False,
                      "font": {"size": 10, "color": EXCLUDED_COLOR}})  # fmt: skip
    return shapes, notes


def _unvalidated(traces: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    """go.Figure without Plotly's per-property validation (half the cost of building and serialising a
    time chart, paid on every live refresh that brings new data). The specs are plain dicts written here;
    tests/test_dashboard_views.py re-validates what every builder returns."""
    try:
        return go.Figure(data=traces, layout=layout, _validate=False)
    except TypeError:  # a Plotly without the private switch: validate
        return go.Figure(data=traces, layout=layout)


def _x_extent(traces: list[dict[str, Any]]) -> tuple[float, float] | None:
    """The first and last x (epoch ms) of the time traces, None when they have no point."""
    lows, highs = [], []
    for tr in traces:
        x = np.asarray(tr.get("x", ()))
        if len(x) and np.issubdtype(x.dtype, np.number):
            lows.append(float(np.nanmin(x)))
            highs.append(float(np.nanmax(x)))
    return (min(lows), max(highs)) if lows else None


def _breach_parts(
    breaches: pd.DataFrame, extent: tuple[float, float] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each breach [start, end) shaded by severity, and a clickable marker (customdata = id) on each.

    extent: the series' first and last x (epoch ms): a band is cut to it, so that a breach that began
    before the range shown does not stretch the time axis over hours without data."""
    xs, ys, texts, ids, colors, shapes = [], [], [], [], [], []
    # One marker row per SLO: one event often breaches several SLOs at the same minute.
    rows = {slo: i for i, slo in enumerate(dict.fromkeys(str(s) for s in breaches["slo"]))}
    for b in breaches.itertuples(index=False):
        x0, x1 = _ms(b.start), _ms(b.end)
        if extent is not None:
            x0, x1 = max(x0, extent[0]), min(x1, extent[1])
            if x0 >= x1:
                continue
        color = SEVERITY_COLORS.get(str(b.severity), SEVERITY_COLORS["page"])
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0, "y1": 1,
                       "fillcolor": color, "opacity": 0.15, "line": {"width": 0}, "layer": "below"})  # fmt: skip
        xs.append((x0 + x1) / 2)
        ys.append(1.0 - MARKER_ROW_STEP * rows[str(b.slo)])
        texts.append(
            f"incident {esc(getattr(b, 'number', b.id))} · {esc(b.slo)} · {esc(b.severity)}<br>click to open"
        )
        ids.append(str(b.id))
        colors.append(color)
    marker = {"type": "scatter", "x": xs, "y": ys, "yaxis": "y9", "mode": "markers",
              "marker": {"symbol": "triangle-down", "size": 14, "color": colors}, "name": BAND_MARKER_NAME,
              "customdata": ids, "hovertext": texts, "hoverinfo": "text", "showlegend": False}  # fmt: skip
    return shapes, marker


def latency_chart(
    df: pd.DataFrame,
    breaches: pd.DataFrame | None = None,
    *,
    threshold_ms: float | None = None,
    title: str = "End-to-end latency",
) -> go.Figure:
    """p50/p95/p99 over time (ms), end to end unless the title says which edge."""
    traces = [
        _line(df["t"], df[q], q, line={"color": PERCENTILE_COLORS[q], "width": 1.6})
        for q in ("p50", "p95", "p99")
    ]
    hlines = (
        [_hline(threshold_ms, SEVERITY_COLORS["page"], f"SLO threshold {threshold_ms:g} ms")]
        if threshold_ms
        else []
    )
    return time_figure(traces, breaches, y_title="latency (ms)", title=title, hlines=hlines)


def traffic_chart(df: pd.DataFrame, breaches: pd.DataFrame | None = None) -> go.Figure:
    """Requests per second, with the error ratio (%) on a second axis."""
    traces = [
        _line(df["t"], df["rps"], "requests/s", fill="tozeroy", line={"color": "#5C6BC0", "width": 1.2}),
        _line(df["t"], df["error_ratio"] * 100, "errors (%)", yaxis="y2", opacity=0.45,
              line={"color": SEVERITY_COLORS["page"], "width": 0.8}),
    ]  # fmt: skip
    y2 = {
        "title": {"text": "errors (%)"},
        "overlaying": "y",
        "side": "right",
        "rangemode": "tozero",
        "showgrid": False,
        "tickformat": ".2~g",  # 0.078, not 0.0775 (the auto ticks of a small percentage)
    }
    return time_figure(traces, breaches, y_title="requests/s", title="Traffic", layout={"yaxis2": y2})


def hop_colors(hops: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A stable colour per hop: network hops in bandwidth blues, self times from SELF_COLORS."""
    out: dict[str, str] = {}
    n_self = n_net = 0
    for hop, part in sorted(set(hops)):
        if part == "network":
            out[hop] = NETWORK_COLORS[n_net % len(NETWORK_COLORS)]
            n_net += 1
        else:
            out[hop] = SELF_COLORS[n_self % len(SELF_COLORS)]
            n_self += 1
    return out


def hop_stack_chart(
    df: pd.DataFrame, breaches: pd.DataFrame | None = None, *, highlight: str | None = None
) -> go.Figure:
    """Per-hop latency per request, stacked: the layers add up to the mean end-to-end latency."""
    pairs = df[["hop", "part"]].drop_duplicates()  # per hop, not per row: a 28-day range has 50k rows
    colors = hop_colors(zip(pairs["hop"].astype(str), pairs["part"].astype(str), strict=True))
    order = (
        df.groupby(["part", "hop"], observed=True)["ms"]
        .mean()
        .reset_index()
        .sort_values(["part", "ms"], ascending=[False, False])
    )
    rows = {str(hop): d for hop, d in df.groupby("hop", sort=False, observed=True)}
    traces = []
    for row in order.itertuples(index=False):
        d = rows[str(row.hop)]
        label = f"{row.hop} ({'network' if row.part == 'network' else 'self'})"
        width = 3 if highlight and row.hop == highlight else 0.5
        traces.append(
            _line(d["t"], d["ms"], esc(label), stackgroup="hops", hovertemplate="%{y:.1f} ms",
                  line={"color": colors[str(row.hop)], "width": width})
        )  # fmt: skip
    return time_figure(traces, breaches, y_title="ms per request", title="Latency by hop (stacked mean)")


def resource_chart(
    df: pd.DataFrame,
    *,
    title: str,
    unit: str,
    dimension: str,
    capacity: pd.DataFrame | None = None,
    breaches: pd.DataFrame | None = None,
    scale: float = 1.0,
    height: int = 260,
    x_range: tuple[Instant, Instant] | None = None,
    width: int = 650,
) -> go.Figure:
    """One resource signal over time, one line per series, in its dimension's colour; capacity dashed.

    width: about how wide the chart will be drawn (px): a legend of many series wraps onto more rows,
    and the plot moves down to leave them room under the title (the plot keeps its height).

    x_range: the time range shown (the page's window), so that a series covering part of it is drawn
    where it lies, not stretched across the plot (a lone point would get a millisecond-wide axis).
    """
    base = DIMENSION_COLORS.get(dimension, "#607D8B")
    traces = []
    groups = df.groupby(["service", "series"], sort=False, observed=True) if not df.empty else []
    for i, ((service, series), d) in enumerate(groups):
        name = " ".join(p for p in (str(service), str(series)) if p) or title
        dash = ("solid", "dot", "dashdot", "longdash")[i % 4]
        # cliponaxis off: a point on the window's edge is drawn whole (those outside stay hidden)
        traces.append(
            _line(d["t"], d["value"].to_numpy(dtype=float) * scale, esc(name), cliponaxis=False,
                  line={"color": base, "width": 1.5, "dash": dash})
        )  # fmt: skip
    if capacity is not None and not capacity.empty:
        traces.append(
            _line(capacity["t"], capacity["value"].to_numpy(dtype=float) * scale, "capacity", cliponaxis=False,
                  marker={"size": 3}, line={"color": "#9E9E9E", "dash": "dash", "width": 1})
        )  # fmt: skip
    xaxis = {} if x_range is None else {"range": list(x_range)}
    extra: dict[str, Any] = {}
    if len(traces) > MAX_LEGEND_ENTRIES:
        # 20 probe series (4 targets x 5 phases) made a legend taller than the plot, scrolling over it:
        # the names stay in the hover, a subtitle says how to narrow the chart down.
        top = 64
        extra = {"showlegend": False, "title": {"subtitle": {
            "text": f"{len(traces)} series: hover for names, or pick one service in the sidebar"}}}  # fmt: skip
    else:
        top = legend_top([tr["name"] for tr in traces], width)
    return time_figure(
        traces, breaches, y_title=unit, title=title, height=height + top - 64,
        layout={"hovermode": "x", "yaxis": {"rangemode": "tozero"}, "xaxis": xaxis, "margin": {"t": top},
                **extra},
    )  # fmt: skip


def sli_chart(
    df: pd.DataFrame,
    objective: float,
    breaches: pd.DataFrame | None = None,
    excluded: pd.DataFrame | None = None,
) -> go.Figure:
    """SLI per bucket (ratio of good events, %) with the objective; excluded periods shaded."""
    traces = [_line(df["t"], df["sli"] * 100, "SLI", line={"color": "#5C6BC0"})]
    hl = _hline(objective * 100, SEVERITY_COLORS["page"], f"objective {objective * 100:g}%")
    return time_figure(
        traces, breaches, y_title="good events (%)", title="SLI", hlines=[hl], excluded=excluded
    )


def burn_rate_chart(
    df: pd.DataFrame,
    thresholds: dict[str, float],
    breaches: pd.DataFrame | None = None,
    excluded: pd.DataFrame | None = None,
) -> go.Figure:
    """Burn rate per alert window (columns t + one per window) with each window's alert factor;
    excluded periods shaded (their minutes burn nothing)."""
    palette = BURN_COLORS
    traces = [
        _line(df["t"], df[col], esc(col), line={"color": palette[i % len(palette)], "width": 1.4})
        for i, col in enumerate(c for c in df.columns if c != "t")
    ]
    hlines = [
        _hline(factor, palette[i % len(palette)], f"{esc(name)} ×{factor:.4g}", dash="dot")
        for i, (name, factor) in enumerate(thresholds.items())
    ]
    return time_figure(traces, breaches, y_title="burn rate (× budget)", title="Burn rate per alert window",
                       hlines=hlines, excluded=excluded)  # fmt: skip


def budget_burndown_chart(df: pd.DataFrame, excluded: pd.DataFrame | None = None) -> go.Figure:
    """Error budget remaining (%) over the SLO window, with the ideal straight line; the periods excluded
    by budget corrections shaded (the budget stays flat across them)."""
    traces = [
        _line(
            df["t"],
            df["budget_remaining"] * 100,
            "budget remaining",
            fill="tozeroy",
            line={"color": "#5C6BC0"},
        )
    ]
    if "ideal" in df:
        traces.append(
            _line(df["t"], df["ideal"] * 100, "even burn", line={"dash": "dot", "color": "#9E9E9E"})
        )
    hl = _hline(0, SEVERITY_COLORS["page"], None, dash="solid")
    return time_figure(
        traces,
        y_title="error budget remaining (%)",
        title="Error budget burn-down",
        hlines=[hl],
        excluded=excluded,
    )


def hop_waterfall_chart(df: pd.DataFrame) -> go.Figure:
    """Baseline vs incident latency per hop (ms), as grouped bars with the added time labelled."""
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            y=[esc(h) for h in df["hop"]],
            x=df["baseline_ms"],
            name="baseline",
            orientation="h",
            marker_color="#9E9E9E",
        )
    )
    fig.add_trace(
        go.Bar(
            y=[esc(h) for h in df["hop"]],
            x=df["incident_ms"],
            name="incident",
            orientation="h",
            marker_color=[
                DIMENSION_COLORS.get(str(d), "#EF5350") for d in df.get("dimension", [None] * len(df))
            ],
            text=[f"+{a:.0f} ms" if a > 0 else f"{a:.0f} ms" for a in df["incident_ms"] - df["baseline_ms"]],
            textposition="outside",
        )
    )
    fig.update_layout(
        barmode="group",
        height=60 + 40 * max(len(df), 1),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title="Hop decomposition: baseline vs incident",
        xaxis_title="ms per request",
        yaxis={"autorange": "reversed"},
    )
    return fig


def comparison_chart(df: pd.DataFrame, *, value: str, unit: str, dimension: str | None = None) -> go.Figure:
    """Baseline vs incident bars for named items (columns: name, baseline, incident)."""
    fig = go.Figure()
    names = [esc(n) for n in df["name"]]
    fig.add_trace(go.Bar(x=names, y=df["baseline"], name="baseline", marker_color="#9E9E9E"))
    fig.add_trace(
        go.Bar(
            x=names,
            y=df["incident"],
            name="incident",
            marker_color=DIMENSION_COLORS.get(dimension or "", "#EF5350"),
        )
    )
    fig.update_layout(
        barmode="group",
        height=280,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title=esc(value),
        yaxis_title=unit,
    )
    return fig


# The hop's latency next to a resource signal: a mid-tone that reads on the light and the dark theme
# (Streamlit's backgrounds #FFFFFF and #0E1117), unlike the dimension colours of the signal.
HOP_LINE_COLOR = "#A259C4"
# Units shown otherwise than stored: (factor, axis title). A bitmask signal is read as 1 when a bad bit
# is set (samples.evidence_series), so its mean is a share of samples.
UNIT_VIEWS: dict[str, tuple[float, str]] = {"bitmask": (100.0, "% of samples with a bad bit set")}


def evidence_chart(
    signal: pd.DataFrame,
    hop: pd.DataFrame,
    *,
    signal_name: str,
    unit: str,
    dimension: str,
    hop_name: str,
    baseline: tuple[Instant | None, Instant | None] | None = None,
    incident: tuple[Instant | None, Instant | None] | None = None,
    baseline_value: float | None = None,
    hop_baseline_ms: float | None = None,
    x_range: tuple[Instant, Instant] | None = None,
    title: str | None = None,
    width: int = 700,
) -> go.Figure:
    """A resource signal next to the hop latency it explains: the incident shaded, each one's baseline
    level (what the diagnosis compared with) dashed in its colour.

    x_range: the time shown (e.g. windows.evidence_window: the incident and as long before it); a baseline
    window outside it is not drawn (it lies days earlier: drawn, it would squeeze the incident into a
    corner) but its level is. Labels sit in the legend, not on the plot, where lines would cross them.
    """
    scale, y_title = UNIT_VIEWS.get(unit, (1.0, unit))
    color = DIMENSION_COLORS.get(dimension, "#607D8B")
    lo, hi = (_ms(x_range[0]), _ms(x_range[1])) if x_range is not None else (None, None)
    traces = [
        _line(signal["t"], signal["value"].to_numpy(dtype=float) * scale, esc(signal_name),
              line={"color": color, "width": 2})
    ]  # fmt: skip
    ends = (lo, hi) if lo is not None else _x_extent(traces) or _x_extent([_line(hop["t"], hop["ms"], "")])
    if baseline_value is not None and np.isfinite(baseline_value) and ends is not None:
        traces.append({"type": "scatter", "x": list(ends), "y": [baseline_value * scale] * 2, "mode": "lines",
                       "name": "baseline level", "line": {"color": color, "dash": "dash", "width": 1.2},
                       "hoverinfo": "skip"})  # fmt: skip
    traces.append(
        _line(hop["t"], hop["ms"], f"{esc(hop_name)} latency (ms)", yaxis="y2",
              line={"color": HOP_LINE_COLOR, "dash": "dot", "width": 2})
    )  # fmt: skip
    if hop_baseline_ms is not None and np.isfinite(hop_baseline_ms) and ends is not None:
        traces.append({"type": "scatter", "x": list(ends), "y": [hop_baseline_ms] * 2, "mode": "lines",
                       "yaxis": "y2", "name": "hop baseline (ms)", "hoverinfo": "skip",
                       "line": {"color": HOP_LINE_COLOR, "dash": "dash", "width": 1.2}})  # fmt: skip
    shapes = []
    for window, fill, label in (
        (incident, SEVERITY_COLORS["page"], "incident"),
        (baseline, NEUTRAL_COLOR, "baseline window"),
    ):
        if window is None or window[0] is None or window[1] is None:
            continue
        x0, x1 = _ms(window[0]), _ms(window[1])
        if lo is not None and hi is not None:
            x0, x1 = max(x0, lo), min(x1, hi)
        if x0 >= x1:
            continue
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": x0, "x1": x1, "y0": 0, "y1": 1,
                       "fillcolor": fill, "opacity": 0.12, "line": {"width": 0}, "layer": "below",
                       "name": label, "showlegend": True})  # fmt: skip
    names = [str(t["name"]) for t in traces] + [str(sh["name"]) for sh in shapes]
    top = legend_top(names, width, top=64 if title else 30)
    y2 = {"title": {"text": "hop latency (ms)"}, "overlaying": "y", "side": "right", "showgrid": False,
          "rangemode": "tozero"}  # fmt: skip
    layout: dict[str, Any] = {"yaxis2": y2, "yaxis": {"rangemode": "tozero"}, "margin": {"t": top, "r": 10},
                              "hovermode": "x"}  # fmt: skip
    if lo is not None:
        layout["xaxis"] = {"range": [lo, hi]}
    if shapes:
        layout["shapes"] = shapes
    return time_figure(traces, y_title=y_title, title=title, height=260 + top - 30, layout=layout)


def trace_gantt_chart(spans: pd.DataFrame) -> go.Figure:
    """A trace waterfall: one bar per span from its offset, critical path in red."""
    labels = [f"{esc(s)} · {esc(n)}" for s, n in zip(spans["service"], spans["name"], strict=True)]
    colors = ["#D32F2F" if c else "#90A4AE" for c in spans["critical"]]
    fig = go.Figure(
        go.Bar(
            y=[f"{i}. {lab}" for i, lab in enumerate(labels, 1)],
            x=spans["duration_ms"],
            base=spans["offset_ms"],
            orientation="h",
            marker_color=colors,
            hovertext=[f"{lab}<br>{d:.1f} ms" for lab, d in zip(labels, spans["duration_ms"], strict=True)],
            hoverinfo="text",
            name="spans",
        )
    )
    fig.update_layout(
        height=80 + 26 * len(spans),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title="Trace waterfall (critical path in red)",
        xaxis_title="ms from trace start",
        yaxis={"autorange": "reversed"},
        showlegend=False,
    )
    return fig


def service_graph(edges: pd.DataFrame, selected: str | None = None) -> go.Figure:
    """Services as nodes in call order, edges labelled with p99, rate and error ratio."""
    nodes = ["(clients)"]
    for row in edges.itertuples(index=False):
        for n in (row.client or "(clients)", row.server):
            if n not in nodes:
                nodes.append(n)
    depth: dict[str, int] = {"(clients)": 0}
    for _ in range(len(nodes)):
        for row in edges.itertuples(index=False):
            depth[row.server] = max(depth.get(row.server, 0), depth.get(row.client or "(clients)", 0) + 1)
    levels: dict[int, list[str]] = {}
    for n in nodes:
        levels.setdefault(depth.get(n, 0), []).append(n)
    pos = {n: (d, -i + (len(ns) - 1) / 2) for d, ns in levels.items() for i, n in enumerate(ns)}
    self_ms = dict(zip(edges["server"], edges["self_ms"], strict=True)) if not edges.empty else {}
    fig = go.Figure()
    for row in edges.itertuples(index=False):
        a, b = pos[row.client or "(clients)"], pos[row.server]
        hop = str(Hop(row.client, row.server) if row.client else Hop.service(row.server))
        width = 6 if selected == hop else 2 + min(row.rps, 200) / 40
        fig.add_trace(
            go.Scatter(
                x=[a[0], b[0]],
                y=[a[1], b[1]],
                mode="lines",
                line={"width": width, "color": DIMENSION_COLORS["bandwidth"]},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[(a[0] + b[0]) / 2],
                y=[(a[1] + b[1]) / 2 + 0.08],
                mode="markers+text",
                marker={"size": 12, "color": DIMENSION_COLORS["bandwidth"]},
                text=[
                    f"p99 {row.p99 or 0:.0f} ms · {row.rps:.1f}/s · {100 * (row.error_ratio or 0):.2f}% err"
                ],
                textposition="top center",
                customdata=[hop],
                hovertext=[f"{esc(hop)}: network gap {row.gap_ms or 0:.1f} ms/request"],
                hoverinfo="text",
                showlegend=False,
                name="edges",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[pos[n][0] for n in nodes],
            y=[pos[n][1] for n in nodes],
            mode="markers+text",
            marker={
                "size": 34,
                "color": [
                    "#90A4AE" if n == "(clients)" else SELF_COLORS[0] if selected == n else "#5C6BC0"
                    for n in nodes
                ],
            },
            text=[esc(n) if n not in self_ms else f"{esc(n)}<br>self {self_ms[n]:.1f} ms" for n in nodes],
            textposition="bottom center",
            customdata=[n for n in nodes],
            hoverinfo="text",
            hovertext=[esc(n) for n in nodes],
            showlegend=False,
            name="services",
        )
    )
    fig.update_layout(
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title="Service graph (edge: p99 · rate · errors)",
        xaxis={"visible": False},
        yaxis={
            "visible": False,
            "range": [min(p[1] for p in pos.values()) - 0.8, max(p[1] for p in pos.values()) + 0.8],
        },
    )
    return fig


def bubbleup_chart(df: pd.DataFrame) -> go.Figure:
    """BubbleUp: share of incident vs baseline requests per attribute value (columns attribute, value, baseline, incident)."""
    names = [f"{esc(a)}={esc(v)}" for a, v in zip(df["attribute"], df["value"], strict=True)]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(y=names, x=df["baseline"] * 100, name="baseline", orientation="h", marker_color="#9E9E9E")
    )
    fig.add_trace(
        go.Bar(
            y=names,
            x=df["incident"] * 100,
            name="incident",
            orientation="h",
            marker_color=SEVERITY_COLORS["page"],
        )
    )
    fig.update_layout(
        barmode="group",
        height=80 + 34 * len(df),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        title="BubbleUp: attributes over-represented in the incident",
        xaxis_title="share of requests (%)",
        yaxis={"autorange": "reversed"},
    )
    return fig


def collector_chart(df: pd.DataFrame) -> go.Figure:
    """Rows written per collector per bucket, failures marked."""
    fig = go.Figure()
    for i, (name, d) in enumerate(df.groupby("collector")):
        fig.add_trace(
            go.Bar(x=d["t"], y=d["rows"], name=esc(name), marker_color=SELF_COLORS[i % len(SELF_COLORS)])
        )
        fail = d[d["failures"] > 0]
        if not fail.empty:
            fig.add_trace(
                go.Scatter(
                    x=fail["t"],
                    y=fail["rows"],
                    mode="markers",
                    name=f"{esc(name)} failures",
                    marker={"symbol": "x", "color": SEVERITY_COLORS["page"], "size": 9},
                )
            )
    _layout(fig, y_title="rows written", title="Collector runs")
    fig.update_layout(barmode="stack")
    return fig


def series_names(fig: go.Figure) -> Sequence[str]:
    """Names of a figure's traces (tests and accessibility text)."""
    return [t.name for t in fig.data]


def incident_cost_chart(df: pd.DataFrame) -> go.Figure:
    """Error budget each incident consumed (%), coloured by severity (columns number, start, severity, budget_consumed)."""
    fig = go.Figure(
        go.Bar(
            x=[f"#{n} {s:%b %d %H:%M}" for n, s in zip(df["number"], df["start"], strict=True)],
            y=df["budget_consumed"] * 100,
            marker_color=[SEVERITY_COLORS.get(str(s), SEVERITY_COLORS["page"]) for s in df["severity"]],
            text=[esc(c) for c in df.get("cause", [""] * len(df))],
            hovertemplate="%{x}<br>%{y:.1f}% of the budget<br>%{text}<extra></extra>",
            textposition="none",
            name="budget consumed",
        )
    )
    fig.update_layout(
        height=300,
        margin={"l": 10, "r": 10, "t": 64, "b": 10},
        title={"text": "Budget consumed per incident", "x": 0.01},
        xaxis_title="incident (start, UTC)",
        yaxis_title="error budget consumed (%)",
    )
    return fig


def hop_budget_chart(df: pd.DataFrame) -> go.Figure:
    """Hop sub-budgets: mean and worst-hour time per request against each hop's budget (ms)."""
    names = [esc(h) for h in df["hop"]]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=df["budget_ms"], name="budget", marker_color="#90A4AE"))
    fig.add_trace(go.Bar(x=names, y=df["mean_ms"], name="mean", marker_color="#5C6BC0"))
    fig.add_trace(
        go.Bar(x=names, y=df["worst_hour_ms"], name="worst hour", marker_color=SEVERITY_COLORS["page"])
    )
    fig.update_layout(
        barmode="group",
        height=300,
        margin={"l": 10, "r": 10, "t": 64, "b": 10},
        title={"text": "Hop sub-budgets", "x": 0.01},
        xaxis_title="hop",
        yaxis_title="ms per request",
    )
    return fig

"""SLO reports for product managers: compliance, error budget, incidents and their cost, hop sub-budgets.

    rep = build_report(store, rules="slo_rules", slo="recommend-latency", window="28d")
    Path("r.html").write_text(to_html(rep))      # self-contained: plotly.js and the data inline
    to_csv(rep); to_markdown(rep)

`report(...)` is the `hopscope report` command (typer annotations); mount it with
``app.command()(report)``.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict

import numpy as np
import pandas as pd
import typer

from hopscope import charts, model
from hopscope.cli_options import ConfigOpt, RulesOpt, StoreOpt, write_output
from hopscope.config import read_store
from hopscope.errors import ConfigError, NotFoundError
from hopscope.markdown import literal
from hopscope.query import slos, spans, windows
from hopscope.slo import budget_burndown, minute_series
from hopscope.slo.corrections import attach_corrections
from hopscope.slo.model import Correction
from hopscope.store import Store

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from hopscope.slo import SLO

WINDOWS: dict[str, timedelta | None] = {
    "7d": timedelta(days=7),
    "28d": timedelta(days=28),
    "90d": timedelta(days=90),
    "month": None,
}
FORMATS = ("html", "csv", "md")


class ReportIncident(TypedDict):
    """One breach in a report; ``budget_consumed`` is its share of this report's budget."""

    number: int
    id: str
    start: datetime
    end: datetime
    severity: str
    budget_consumed: float
    cause: str  # one line ("" where the report was made without causes)


class HopBudget(TypedDict):
    """A hop's sub-budget against its mean per request (None: no requests in the window)."""

    hop: str
    budget_ms: float
    mean_ms: float | None
    worst_hour_ms: float | None
    used: float | None  # mean / budget


@dataclass(frozen=True, slots=True)
class SloReport:
    slo: str
    description: str
    objective: float
    window: str
    start: datetime
    end: datetime
    good: float
    total: float
    sli: float | None
    budget_consumed: float | None  # fraction of the window's error budget spent
    incidents: tuple[ReportIncident, ...]
    hop_budgets: tuple[HopBudget, ...]
    burndown: pd.DataFrame = field(repr=False)  # t, budget_remaining, ideal
    generated: datetime | None = None
    data_from: datetime | None = None  # the first minute of the window with events
    data_minutes: int = 0  # minutes of the window with events
    # periods excluded from the SLI, the budget and the alerts that overlap the window (oldest first)
    corrections: tuple[Correction, ...] = ()
    components: tuple[tuple[str, float], ...] = ()  # a composite SLO's (component, weight)

    @property
    def excluded_minutes(self) -> int:
        """Minutes of the window inside a correction."""
        return sum(
            int((min(c.end, self.end) - max(c.start, self.start)).total_seconds() // 60)
            for c in self.corrections
        )

    @property
    def coverage(self) -> str:
        """How much of the window the figures stand on: a 28d report over a week of data says so."""
        if self.data_from is None:
            return "no events in this window"
        days, have = (self.end - self.start).total_seconds() / 86400, self.data_minutes / 1440
        return f"events from {self.data_from:%Y-%m-%d %H:%M} UTC; {have:.1f} of the window's {days:.0f} days have data"

    @property
    def compliant(self) -> bool | None:
        return None if self.sli is None else self.sli >= self.objective

    @property
    def budget_remaining(self) -> float | None:
        return None if self.budget_consumed is None else 1.0 - self.budget_consumed


INCIDENT_SHARE_NOTE = (
    "An incident's share is of this report's error budget (what the burn-down fell by while it lasted). "
    "`hopscope incidents` gives each breach's share of one full SLO period's budget at the traffic seen; "
    "the two differ while the store holds less than the report's window of data."
)


def report_span(end: datetime, window: str) -> tuple[datetime, datetime]:
    """[start, end) of a report window ending at `end`: a rolling 7/28/90 days or the calendar month so far."""
    if window not in WINDOWS:
        raise ConfigError(f"--window: {window!r} is not one of {', '.join(WINDOWS)}")
    length = WINDOWS[window]
    if length is None:
        return end.replace(day=1, hour=0, minute=0, second=0, microsecond=0), end
    return end - length, end


def build_report(
    store: Store,
    *,
    rules: str,
    slo: str,
    window: str = "28d",
    now: datetime | None = None,
    causes: bool = True,
) -> SloReport:
    """Compliance, budget, burn-down, incidents (with a one-line cause) and hop sub-budgets of one SLO."""

    spec = attach_corrections(store, [slos.get_slo(rules, slo)])[0]
    current, _, _ = windows.effective_now(store, now)
    end = current.replace(second=0, microsecond=0)
    start, end = report_span(end, window)
    minutes = minute_series(store, spec, start, end)
    good = float(minutes["good"].sum()) if not minutes.empty else 0.0
    total = float(minutes["total"].sum()) if not minutes.empty else 0.0
    sli = good / total if total else None
    seen = minutes.loc[minutes["total"] > 0, "minute"] if not minutes.empty else pd.Series([], dtype=object)
    burn = pd.DataFrame(columns=["t", "budget_remaining", "ideal"])
    consumed: float | None = None
    cum = None  # the budget consumed by the end of each minute of the span
    if not minutes.empty:
        bd = budget_burndown(spec, minutes, start, end)
        cum = (bd["minute"].to_numpy(dtype="datetime64[us]"), bd["consumed"].fillna(0.0).to_numpy())
        step = f"{model.step_for(start, end)}s"
        bd["t"] = pd.to_datetime(bd["minute"]).dt.floor(step)
        burn = (
            bd.groupby("t", as_index=False)["remaining"]
            .last()
            .rename(columns={"remaining": "budget_remaining"})
        )
        span = (end - start).total_seconds()
        burn["ideal"] = 1.0 - (burn["t"] - pd.Timestamp(start)).dt.total_seconds() / span
        last = bd["consumed"].dropna()
        consumed = float(last.iloc[-1]) if len(last) else None
    table = slos.breach_table(store, rules, start, end)
    incidents: list[ReportIncident] = []
    for b in table[table["slo"] == slo].to_dict("records"):
        incidents.append(
            {
                "number": b["number"],
                "id": b["id"],
                "start": b["start"],
                "end": b["end"],
                "severity": b["severity"],
                # its share of this report's budget: what the burn-down fell by while it lasted (within
                # the span), so that the incidents' shares add up to at most the budget consumed
                "budget_consumed": _consumed_between(cum, b["start"], b["end"]),
                "cause": slos.incident_cause(store, rules, b["id"]) if causes else "",
            }
        )
    return SloReport(
        slo=spec.name, description=spec.description, objective=spec.objective, window=window, start=start, end=end,
        good=good, total=total, sli=sli, budget_consumed=consumed, incidents=tuple(incidents),
        hop_budgets=tuple(_hop_budgets(store, spec, start, end)), burndown=burn, generated=end,
        data_from=pd.Timestamp(seen.min()).to_pydatetime() if len(seen) else None, data_minutes=len(seen),
        corrections=tuple(c for c in spec.corrections if c.overlaps(start, end)),
        components=tuple((c.name, c.weight) for c in spec.sli.components),
    )  # fmt: skip


def _consumed_between(cum: tuple[np.ndarray, np.ndarray] | None, start: datetime, end: datetime) -> float:
    """Budget consumed over the minutes [start, end) of a burn-down (minute, cumulative consumed)."""
    if cum is None:
        return 0.0
    minute, consumed = cum

    def by(t: datetime) -> float:  # consumed by the end of the minutes before t
        i = int(np.searchsorted(minute, np.datetime64(pd.Timestamp(t).to_datetime64(), "us"), side="left"))
        return float(consumed[i - 1]) if i > 0 else 0.0

    return max(by(end) - by(start), 0.0)


def _hop_budgets(store: Store, spec: SLO, start: datetime, end: datetime) -> list[HopBudget]:
    budgets = dict(getattr(spec, "hop_budgets_ms", {}) or {})
    if not budgets:
        return []
    w = windows.Window(start, end, 3600, False, None)
    hops = spans.hop_latency_series(store, w, spec.sli.route)
    out: list[HopBudget] = []
    for hop, budget in budgets.items():
        d = hops[hops["hop"] == hop]["ms"]
        mean = float(d.mean()) if len(d) else None
        worst = float(d.max()) if len(d) else None
        out.append({"hop": hop, "budget_ms": float(budget), "mean_ms": mean, "worst_hour_ms": worst,
                    "used": (mean / budget) if mean is not None and budget else None})  # fmt: skip
    return out


# ----------------------------------------------------------------------------------- formats


def _pct(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def summary_rows(rep: SloReport) -> list[tuple[str, str]]:
    rows = [
        ("SLO", rep.slo),
        ("Window", f"{rep.window}: {rep.start:%Y-%m-%d %H:%M} – {rep.end:%Y-%m-%d %H:%M} UTC"),
        ("Objective", _pct(rep.objective)),
        ("SLI (good / total)", f"{_pct(rep.sli)} ({rep.good:,.0f} / {rep.total:,.0f})"),
        ("Compliant", {True: "yes", False: "NO", None: "no data"}[rep.compliant]),
        ("Error budget consumed", _pct(rep.budget_consumed, 1)),
        ("Error budget remaining", _pct(rep.budget_remaining, 1)),
        ("Incidents", str(len(rep.incidents))),
        ("Data", rep.coverage),
    ]
    if rep.components:
        rows.insert(1, ("Composite of", ", ".join(f"{n} (weight {w:g})" for n, w in rep.components)))
    if rep.corrections:
        rows.append(
            (
                "Excluded (corrections)",
                f"{len(rep.corrections)} period(s), {rep.excluded_minutes:,} min: not in the SLI, the budget or the alerts",
            )
        )
    return rows


CORRECTIONS_NOTE = (
    "Budget corrections: these periods count in neither the SLI nor the error budget, and raise no alert "
    "(declared in the SLO file, or recorded with `hopscope slo correct`)."
)


def corrections_frame(rep: SloReport) -> pd.DataFrame:
    """The report's corrections as rows: start, end, minutes, source, id, reason (what charts shade)."""
    return slos.corrections_table(rep.corrections)


def with_causes(rep: SloReport, causes: dict[str, str]) -> SloReport:
    """The report with each incident's one-line cause filled in (by incident id)."""

    return replace(
        rep, incidents=tuple({**i, "cause": causes.get(i["id"], i["cause"])} for i in rep.incidents)
    )


def to_csv(rep: SloReport) -> str:
    """One row per incident (one row with empty incident columns when there is none), with the SLO summary on each."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["slo", "window", "start", "end", "objective", "sli", "good", "total", "compliant", "budget_consumed",
                "incident", "incident_id", "incident_start", "incident_end", "severity", "incident_budget_consumed", "cause",
                "excluded_from", "excluded_to", "excluded_reason"])  # fmt: skip
    head = [rep.slo, rep.window, rep.start.isoformat(), rep.end.isoformat(), rep.objective, "" if rep.sli is None else f"{rep.sli:.6f}",
            f"{rep.good:.0f}", f"{rep.total:.0f}", "" if rep.compliant is None else rep.compliant,
            "" if rep.budget_consumed is None else f"{rep.budget_consumed:.6f}"]  # fmt: skip
    for i in rep.incidents or ([] if rep.corrections else [None]):
        if i is None:
            w.writerow([*head, "", "", "", "", "", "", "", "", "", ""])
        else:
            w.writerow(
                [
                    *head,
                    i["number"],
                    i["id"],
                    i["start"].isoformat(),
                    i["end"].isoformat(),
                    i["severity"],
                    f"{i['budget_consumed']:.6f}",
                    i["cause"],
                    "",
                    "",
                    "",
                ]
            )
    for c in rep.corrections:  # one row per excluded period, its incident columns empty
        w.writerow([*head, "", "", "", "", "", "", "", c.start.isoformat(), c.end.isoformat(), c.reason])
    return buf.getvalue()


def to_markdown(rep: SloReport) -> str:
    lines = [f"# SLO report: {literal(rep.slo)}", "", literal(rep.description), "", "| | |", "|---|---|"]
    lines += [f"| {k} | {literal(v)} |" for k, v in summary_rows(rep)]
    lines += ["", "## Incidents", ""]
    if rep.incidents:
        lines += [
            "| # | id | start (UTC) | length | severity | share of this report's budget | cause |",
            "|---|---|---|---|---|---|---|",
        ]
        for i in rep.incidents:
            mins = (i["end"] - i["start"]).total_seconds() / 60
            lines.append(
                f"| {i['number']} | {i['id']} | {i['start']:%Y-%m-%d %H:%M} | {mins:.0f} min | {i['severity']} | {_pct(i['budget_consumed'], 1)} | {literal(i['cause'])} |"
            )
        lines += ["", INCIDENT_SHARE_NOTE]
    else:
        lines.append("No incidents in this window.")
    if rep.corrections:
        lines += [
            "",
            "## Excluded periods (budget corrections)",
            "",
            "| from (UTC) | to (UTC) | minutes | source | reason |",
            "|---|---|---|---|---|",
        ]
        for c in rep.corrections:
            src = c.source + (f" {c.id}" if c.id else "")
            lines.append(
                f"| {c.start:%Y-%m-%d %H:%M} | {c.end:%Y-%m-%d %H:%M} | {c.minutes} | {src} | {literal(c.reason)} |"
            )
        lines += ["", CORRECTIONS_NOTE]
    if rep.hop_budgets:
        lines += [
            "",
            "## Hop sub-budgets (mean per request)",
            "",
            "| hop | budget | mean | worst hour | used |",
            "|---|---|---|---|---|",
        ]
        for h in rep.hop_budgets:
            lines.append(
                f"| {literal(h['hop'])} | {h['budget_ms']:g} ms | {_ms(h['mean_ms'])} | {_ms(h['worst_hour_ms'])} | {_pct(h['used'], 0)} |"
            )
    return "\n".join(lines) + "\n"


def _ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} ms"


def to_html(rep: SloReport) -> str:
    """A self-contained HTML page: plotly.js and every figure's data inline, no network needed to open it."""

    esc = html.escape
    summary = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in summary_rows(rep))

    def standalone(fig: go.Figure, div_id: str, first: bool = False) -> str:
        # Outside Streamlit's theme the figures need room for their axis titles and tick labels. Time
        # charts come unvalidated (charts.time_figure): a validated copy resolves the template by name.
        fig = type(fig)(fig.to_dict())
        fig.update_layout(template="plotly_white", margin={"l": 80, "r": 30, "t": 70, "b": 70})
        fig.update_xaxes(automargin=True)
        fig.update_yaxes(automargin=True)
        return str(
            fig.to_html(full_html=False, include_plotlyjs=first, div_id=div_id, config={"displaylogo": False})
        )

    excluded = corrections_frame(rep)
    parts = [standalone(charts.budget_burndown_chart(rep.burndown, excluded), "burndown", first=True)]
    if rep.incidents:
        inc = pd.DataFrame(rep.incidents)
        parts.append(standalone(charts.incident_cost_chart(inc), "incident-cost"))
        rows = "".join(
            f"<tr><td>{i['number']}</td><td>{esc(str(i['id']))}</td><td>{i['start']:%Y-%m-%d %H:%M}</td><td>{(i['end'] - i['start']).total_seconds() / 60:.0f} min</td>"
            f"<td>{esc(str(i['severity']))}</td><td>{_pct(i['budget_consumed'], 1)}</td><td>{esc(str(i['cause']))}</td></tr>"
            for i in rep.incidents
        )
        incidents = (
            "<table><tr><th>#</th><th>id</th><th>start (UTC)</th><th>length</th><th>severity</th><th>share of this report's budget</th>"
            f"<th>cause</th></tr>{rows}</table><p class='note'>{esc(INCIDENT_SHARE_NOTE.replace('`', ''))}</p>"
        )
    else:
        incidents = "<p>No incidents in this window.</p>"
    hops = ""
    if rep.corrections:
        rows = "".join(
            f"<tr><td>{c.start:%Y-%m-%d %H:%M}</td><td>{c.end:%Y-%m-%d %H:%M}</td><td>{c.minutes}</td>"
            f"<td>{esc(c.source + (' ' + c.id if c.id else ''))}</td><td>{esc(c.reason)}</td></tr>"
            for c in rep.corrections
        )
        incidents += (
            "<h2>Excluded periods (budget corrections)</h2><table><tr><th>from (UTC)</th><th>to (UTC)</th>"
            f"<th>minutes</th><th>source</th><th>reason</th></tr>{rows}</table>"
            f"<p class='note'>{esc(CORRECTIONS_NOTE.replace('`', ''))}</p>"
        )
    if rep.hop_budgets:
        hb = pd.DataFrame(rep.hop_budgets)
        parts.append(standalone(charts.hop_budget_chart(hb), "hop-budgets"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SLO report: {esc(rep.slo)}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data:; font-src data:">
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
th,td{{border:1px solid #ddd;padding:4px 10px;text-align:left}}th{{background:#f5f5f5}}</style></head>
<body><h1>SLO report: {esc(rep.slo)}</h1><p>{esc(rep.description)}</p><table>{summary}</table>
<h2>Error budget</h2>{parts[0]}<h2>Incidents</h2>{incidents}{"".join(parts[1:])}{hops}
<p><small>generated by hopscope from data up to {rep.end:%Y-%m-%d %H:%M} UTC</small></p></body></html>
"""


def render(rep: SloReport, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    return {"html": to_html, "csv": to_csv, "md": to_markdown}[fmt](rep)


def report(
    slo: Annotated[str, typer.Option("--slo", help="SLO name (see `hopscope slo status`).")],
    window: Annotated[
        str, typer.Option("--window", help="7d, 28d, 90d or month (calendar month so far).")
    ] = "28d",
    format: Annotated[
        str, typer.Option("--format", help="html (self-contained, charts included), csv or md.")
    ] = "html",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    store: StoreOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Write an SLO report: compliance, error budget, burn-down, incidents and their cost."""
    if format not in FORMATS:
        raise ConfigError(f"--format: {format!r} is not one of {', '.join(FORMATS)}")
    report_span(datetime(2000, 1, 1), window)  # validates --window before any work
    where, rules = read_store(store, rules, config)
    if not where.exists():
        raise NotFoundError(f"{where}: no store here; run `hopscope demo` or `hopscope collect` first")
    st = Store.open(where, create=False)
    text = render(build_report(st, rules=str(rules), slo=slo, window=window), format)
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_output(output, text)
        typer.echo(f"wrote {output} ({len(text.encode()) / 1e3:.0f} kB)", err=True)

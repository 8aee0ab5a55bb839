"""`hopscope incidents` and `hopscope explain`: plain functions with typer annotations.

Mount them on the main app:  app.command()(incidents); app.command()(explain)
Domain errors (HopscopeError) propagate to the main app's single error handler.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hopscope.cli_options import ConfigOpt, RulesOpt, StoreOpt
from hopscope.config import configured_catalog, read_store
from hopscope.diagnosis import Diagnosis, diagnose_breach
from hopscope.durations import parse_duration
from hopscope.errors import ConfigError, NotFoundError
from hopscope.slo import find_breaches, load_slos, store_now
from hopscope.store import Store, StoreLocation, utcnow

if TYPE_CHECKING:  # imported where used, for the CLI's start-up time
    from hopscope.model import ReadStore
    from hopscope.slo import SLO, Breach
    from hopscope.store import Store

SPAN_SLI_KINDS = ("latency", "availability")
EXPLAIN_LOOKBACK = timedelta(days=400)


def _open(where: StoreLocation) -> Store:

    return Store.open(where, create=False)


def _slos(rules: Path, name: str | None) -> list[SLO]:

    slos, errors = load_slos(rules)
    for err in errors:
        typer.echo(f"warning: {err}", err=True)
    slos = [s for s in slos if s.sli.kind in SPAN_SLI_KINDS or s.composite]  # composites: on a component
    if name is not None:
        slos = [s for s in slos if s.name == name]
        if not slos:
            raise NotFoundError(f"{rules}: no SLO named {name!r} with a span-based SLI")
    return slos


def _now(store: ReadStore) -> datetime:

    return store_now(store) or utcnow()


def _since(text: str) -> timedelta:

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from exc


def _breaches(store: ReadStore, slos: list[SLO], start: datetime, end: datetime) -> list[tuple[Breach, SLO]]:

    out = []
    for slo in slos:
        for b in find_breaches(store, slo, start=start, end=end):
            out.append((b, slo))
    out.sort(key=lambda t: (t[0].start, t[0].slo))
    return out


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _top(d: Diagnosis) -> str:
    c = d.top
    if c is None:
        return d.verdict
    of = " of errors" if c.share_of == "errors" else ""
    dec = d.decomposition
    if dec is not None and dec.partial:  # the hops' share alone would read as a share of the whole
        return f"{c.hop} ({c.hop_kind}, {c.dimension}) {c.share:.0%} of the hops{of}, {c.share_total or 0:.0%} of all"
    return f"{c.hop} ({c.hop_kind}, {c.dimension}) {c.share:.0%}{of}"


def _explained(d: Diagnosis) -> str:
    """The EXPLAINED column: the share of the added end-to-end mean on hops ("partly" below 70%)."""
    dec = d.decomposition
    f = dec.explained if dec is not None else None
    if dec is None or f is None:
        return "-"
    return f"partly: {f:.0%}" if dec.partial else f"{f:.0%}"


def _change(change: float | None, incident: float) -> str:
    if change is None:  # the baseline was 0
        return "from 0" if incident else "0"
    return f"{change:+.0%}"


def incidents(
    since: Annotated[
        str, typer.Option("--since", help="How far back from the store's latest data, e.g. 7d, 24h.")
    ] = "7d",
    slo: Annotated[str | None, typer.Option("--slo", help="Only this SLO (by name).")] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON array (docs/incident-schema.json).")
    ] = False,
    store: StoreOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
) -> None:
    """List SLO breaches with their top cause (hop and resource)."""
    where, rules = read_store(store, rules, config)
    st = _open(where)
    end = _now(st)
    found = _breaches(st, _slos(rules, slo), end - _since(since), end)
    catalog = configured_catalog(config)  # the packaged catalog + [diagnosis] of hopscope.toml
    results = [diagnose_breach(st, b, s, with_bubbleup=False, catalog=catalog) for b, s in found]
    if json_out:
        typer.echo(json.dumps([d.summary_dict() for d in results], indent=2))
        return
    if not results:
        typer.echo(f"no breaches in the last {since}")
        return
    rows = [
        [d.id, d.slo, d.start.strftime("%Y-%m-%d %H:%M"), f"{(d.end - d.start).total_seconds() / 60:.0f}m",
         d.severity, f"{d.budget_consumed:.1%}", _explained(d), _top(d)]
        for d in results
    ]  # fmt: skip
    typer.echo(
        _table(["ID", "SLO", "START (UTC)", "LENGTH", "SEVERITY", "BUDGET", "EXPLAINED", "TOP CAUSE"], rows)
    )
    typer.echo(
        "BUDGET: the share of one full SLO period's error budget (at the traffic seen) the breach spent. "
        "EXPLAINED: the share of the added end-to-end latency (or errors) on hops hopscope sees; the rest "
        "is the residual."
    )


def render(d: Diagnosis) -> str:
    """A readable diagnosis: a few summary lines, the evidence table, the hop table."""
    lines = [
        f"incident {d.id}  SLO {d.slo or '-'}  {d.severity}  {d.start:%Y-%m-%d %H:%M}..{d.end:%H:%M} UTC",
        f"verdict: {d.verdict_line}",
    ]
    if d.decomposition and d.decomposition.measure == "errors":
        e = d.decomposition.end_to_end
        lines.append(
            f"end to end: errors {e.baseline_bad_fraction or 0:.3%} -> {e.incident_bad_fraction or 0:.3%} of requests "
            "(availability SLO: the added errors are decomposed, not the latency)"
        )
    elif d.decomposition:
        e = d.decomposition.end_to_end
        lines.append(
            f"end to end: p{e.percentile * 100:g} {e.baseline_pct_ms or 0:.0f} -> {e.incident_pct_ms or 0:.0f} ms, "
            f"mean {e.baseline_mean_ms:.1f} -> {e.incident_mean_ms:.1f} ms"
            + (
                f", over {e.threshold_ms:g} ms: {e.baseline_bad_fraction or 0:.2%} -> {e.incident_bad_fraction or 0:.2%}"
                if e.threshold_ms
                else ""
            )
        )
    if d.decomposition and d.decomposition.explained is not None and not d.decomposition.partial:
        lines.append(f"explained: {d.decomposition.statement()}")
    lines.append(f"baseline: {d.baseline.description} ({d.baseline.note})")
    for c in d.causes:
        lines.append(f"#{c.rank} {c.hop} [{c.hop_kind}, {c.dimension}, score {c.score:.2f}]: {c.summary}")
    for n in d.notes:
        if d.causes and d.decomposition and n == d.decomposition.statement():
            continue  # said in the verdict line
        lines.append(f"note: {n}")
    ev = [(c.rank, e) for c in d.causes for e in c.evidence]
    if ev:
        lines += ["", "evidence:"]
        lines.append(
            _table(
                ["#", "SIGNAL", "DIM", "BASELINE", "INCIDENT", "CHANGE", "UTIL", "CORR", "SCORE"],
                [
                    [str(r), e.short, e.dimension, f"{e.baseline:.4g}", f"{e.incident:.4g}", _change(e.change, e.incident),
                     f"{e.utilization:.0%}" if e.utilization is not None else "-",
                     f"{e.correlation:+.2f}" if e.correlation is not None else "-", f"{e.score:.2f}"]
                    for r, e in ev
                ],
            )
        )  # fmt: skip
    if d.decomposition and d.decomposition.measure == "errors":
        lines += ["", "own errors by service (errors per 1000 requests):"]
        lines.append(
            _table(
                ["HOP", "KIND", "BASELINE", "INCIDENT", "ADDED", "SHARE"],
                [
                    [h.hop, h.hop_kind, f"{1000 * h.baseline_ms:.2f}", f"{1000 * h.incident_ms:.2f}",
                     f"{1000 * h.added_ms:+.2f}", f"{h.share:.0%}" + ("" if h.significant else " (noise)")]
                    for h in d.decomposition.hops
                ],
            )
        )  # fmt: skip
    elif d.decomposition:
        dec = d.decomposition
        lines += ["", "hops (per-request mean, ms):"]
        lines.append(
            _table(
                ["HOP", "KIND", "BASELINE", "INCIDENT", "ADDED", "SHARE", "OF ALL", "BUDGET"],
                [
                    [h.hop, h.hop_kind, f"{h.baseline_ms:.1f}", f"{h.incident_ms:.1f}", f"{h.added_ms:+.1f}",
                     f"{h.share:.0%}" + ("" if h.significant else " (noise)"),
                     f"{dec.share_of_total(h.added_ms) or 0:.0%}", f"{h.budget_ms:g}" if h.budget_ms else "-"]
                    for h in dec.hops
                ],
            )
        )  # fmt: skip
        lines.append(
            f"residual (on no hop): {dec.residual_ms:+.1f} ms. SHARE: of the hops' added latency; "
            "OF ALL: of the whole end-to-end rise"
        )
    if d.bubbleup:
        lines += ["", "over-represented among slow spans: " + ", ".join(
            f"{b.attribute}={b.value} ({b.incident_slow_fraction:.0%} vs {b.baseline_fraction:.0%})" for b in d.bubbleup)]  # fmt: skip
    if d.exemplars:
        lines += ["", "exemplar traces: " + " ".join(d.exemplars[:5])]
    return "\n".join(lines)


def find_incident(st: ReadStore, slos: list[SLO], incident_id: str) -> tuple[Breach, SLO]:
    """The breach with this id (and its SLO), searched over the stored history, one SLO at a time."""

    end = _now(st)
    for slo in slos:
        for b in find_breaches(st, slo, start=end - EXPLAIN_LOOKBACK, end=end):
            if b.id == incident_id:
                return b, slo
    raise NotFoundError(
        f"no incident with id {incident_id!r}; list them with `hopscope incidents --since 90d`"
    )


def explain(
    incident_id: Annotated[str, typer.Argument(help="Incident id from `hopscope incidents`.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the full diagnosis as JSON.")] = False,
    slo: Annotated[str | None, typer.Option("--slo", help="The incident's SLO (faster lookup).")] = None,
    store: StoreOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Explain one incident: which hop, which resource, and the evidence."""
    where, rules = read_store(store, rules, config)
    st = _open(where)
    breach, spec = find_incident(st, _slos(rules, slo), incident_id)
    d = diagnose_breach(st, breach, spec, catalog=configured_catalog(config))
    typer.echo(json.dumps(d.to_dict(), indent=2) if json_out else render(d))

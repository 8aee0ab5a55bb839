"""``hopscope slo``: check, status, correct, corrections, import, export, backtest.

Mounted by the main app as ``app.add_typer(slo_cli.app, name="slo")``. Domain
errors are raised as HopscopeError subclasses; the main CLI prints them as one line.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from hopscope.cli_options import ConfigOpt, RulesOpt, StoreOpt, write_output
from hopscope.config import read_paths, read_store
from hopscope.durations import parse_duration, parse_utc
from hopscope.errors import HopscopeError, NotFoundError, SpecError
from hopscope.slo.backtest import backtest as run_backtest
from hopscope.slo.backtest import load_truth, variants
from hopscope.slo.burn import SloStatus
from hopscope.slo.corrections import add_correction, delete_correction, read_corrections
from hopscope.slo.export import PROMETHEUS_KINDS, prometheus_rules_yaml
from hopscope.slo.formats.hopscope import to_document
from hopscope.slo.loader import load_slos, load_window_tables, parse_documents, read_yaml_docs
from hopscope.slo.model import SLO, with_corrections
from hopscope.slo.source import evaluate_many, store_now
from hopscope.store import Store, StoreLocation, utcnow

app = typer.Typer(
    help="SLOs: validate specs, status now, budget corrections, import OpenSLO/Sloth, export Prometheus rules, "
    "backtest alert policies."
)

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
NowOpt = Annotated[
    str | None,
    typer.Option("--now", help="evaluate at this naive-UTC time (ISO); default: now, or the end of the data"),
]
SloOpt = Annotated[list[str] | None, typer.Option("--slo", help="only these SLOs (repeatable)")]


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):  # naive UTC, marked as such (as incidents --json does)
        return v.isoformat() + ("Z" if v.tzinfo is None else "")
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def _load(rules: Path, names: list[str] | None = None, *, strict: bool = False) -> list[SLO]:

    slos, errors = load_slos(rules)
    for e in errors:
        typer.echo(f"refused: {e}", err=True)
    if strict and errors:
        raise SpecError(f"{rules}: {len(errors)} spec error(s); see above")
    if names:
        known = {s.name for s in slos}
        for n in names:
            if n not in known:
                raise NotFoundError(
                    f"--slo: {n!r} is not an SLO in {rules} (known: {', '.join(sorted(known))})"
                )
        slos = [s for s in slos if s.name in names]
    return slos


def _open_store(where: StoreLocation) -> Store:
    return Store.open(where, create=False)


def _parse_now(now: str | None) -> datetime | None:
    if now is None:
        return None
    try:
        return parse_utc(now)
    except ValueError as exc:
        raise HopscopeError(f"--now: {exc}") from None


@app.command()
def check(rules: RulesOpt = None, config: ConfigOpt = None) -> None:
    """Validate SLO specs and alert window tables; exit 2 if any is refused."""

    _, rules = read_paths(None, rules, config)

    slos, errors = load_slos(rules)
    for s in slos:
        tiers = (
            ", ".join(f"{t.severity} {t.label} x{t.factor:g}" for t in s.alerting.active_tiers) or "no alerts"
        )
        typer.echo(
            f"ok  {s.name}: {s.sli.kind}, objective {s.objective:g}, window {s.window.label}, {s.alerting.policy}: {tiers}"
        )
        if s.composite:
            parts = ", ".join(f"{c.name} x{c.weight:g}" for c in s.sli.components)
            typer.echo(f"    combines: {parts}")
        for c in s.corrections:
            typer.echo(f"    excluded: {c.start:%Y-%m-%d %H:%M} – {c.end:%Y-%m-%d %H:%M} UTC ({c.reason})")
        for n in s.notes:
            typer.echo(f"    note: {n}")
    for e in errors:
        typer.echo(f"bad {e}", err=True)
    if errors:
        raise SpecError(f"{rules}: {len(errors)} of {len(slos) + len(errors)} spec(s) refused")
    typer.echo(f"{len(slos)} SLO(s) valid")


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v * 100:.3f}%" if pct else f"{v:.2f}"


@app.command()
def status(
    store: StoreOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    now: NowOpt = None,
    slo: SloOpt = None,
) -> None:
    """Every SLO now: SLI, objective, budget remaining, burn rates, alert state, time to exhaustion,
    and the breaches that burned budget in its period."""

    where, rules = read_store(store, rules, config)
    slos = _load(rules, slo)
    st = _open_store(where)
    at = _parse_now(now)
    if at is None:
        at = utcnow()
        end = store_now(st)
        if end is not None and end < at - timedelta(minutes=5):
            typer.echo(f"data ends at {end:%Y-%m-%d %H:%M} UTC; evaluating there", err=True)
            at = end
    statuses = evaluate_many(st, slos, now=at)
    if json_out:
        typer.echo(json.dumps([_status_json(s) for s in statuses], indent=2))
        return
    labels = sorted({k for s in statuses for k in s.burn_rates}, key=lambda x: _duration_key(x))
    head = ["SLO", "SLI", "objective", "budget left", *[f"burn {k}" for k in labels], "state", "exhausted in"]
    rows = []
    for s in statuses:
        if s.budget_remaining is not None and s.budget_remaining <= 0:
            tte = "exhausted"
        else:
            tte = "-" if s.time_to_exhaustion is None else _fmt_td(s.time_to_exhaustion)
        rows.append(
            [s.slo, _fmt(s.sli, True), f"{s.objective * 100:g}%", _fmt(s.budget_remaining, True)]
            + [_fmt(s.burn_rates.get(k)) for k in labels]
            + [s.alert_state, tte]
        )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    _print_breaches(statuses)
    _print_corrections(statuses)
    for spec in slos:
        if spec.composite:
            parts = ", ".join(f"{c.name} x{c.weight:g}" for c in spec.sli.components)
            typer.echo(f"{spec.name}: composite of {parts} (weighted good/total events)")
    for s in statuses:
        if s.gaps:
            typer.echo(
                f"{s.slo}: {len(s.gaps)} data gap(s), {s.gap_minutes} min without data in the period (not counted as good)"
            )
        for n in s.notes:
            typer.echo(f"{s.slo}: note: {n}")
    typer.echo(f"at {at:%Y-%m-%d %H:%M} UTC")


def _status_json(s: SloStatus) -> dict[str, Any]:
    """A status as JSON; each breach also gets its length in minutes and whether it is still open."""
    out: dict[str, Any] = _jsonable(asdict(s))
    for b, js in zip(s.breaches, out["breaches"], strict=True):
        js["minutes"] = int(b.duration.total_seconds() // 60)
        js["ongoing"] = s.now is not None and b.end >= s.now
    return out


def _fmt_minutes(td: timedelta) -> str:
    m = int(td.total_seconds() // 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m"


def _print_breaches(statuses: list[SloStatus]) -> None:
    """The breaches that burned each SLO's budget in its period, oldest first."""
    rows = []
    for s in statuses:
        for b in s.breaches:
            ongoing = s.now is not None and b.end >= s.now
            rows.append(
                [
                    s.slo, f"{b.start:%Y-%m-%d %H:%M}", _fmt_minutes(b.duration) + (" (open)" if ongoing else ""),
                    b.severity, f"{b.peak_burn_rate:.3g}", f"{b.budget_consumed * 100:.1f}%", ", ".join(b.windows),
                ]
            )  # fmt: skip
    if not rows:
        typer.echo("no breaches in the SLOs' periods")
        return
    typer.echo("")
    typer.echo("breaches in each SLO's period (budget: share of one period's error budget)")
    head = ["SLO", "start (UTC)", "length", "severity", "peak burn", "budget", "windows"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    typer.echo("")


def _print_corrections(statuses: list[SloStatus]) -> None:
    """The excluded periods (corrections) of each SLO's period: not in its SLI, budget or alerts."""
    rows = [
        [s.slo, f"{c.start:%Y-%m-%d %H:%M}", f"{c.end:%Y-%m-%d %H:%M}", c.source, c.id or "-", c.reason]
        for s in statuses
        for c in s.corrections
    ]
    if not rows:
        return
    typer.echo("excluded from SLI, budget and alerts (corrections)")
    _table(["SLO", "from (UTC)", "to (UTC)", "source", "id", "reason"], rows)
    typer.echo("")


def _table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _parse_time(value: str, option: str) -> datetime:
    try:
        return parse_utc(value)
    except ValueError as exc:
        raise SpecError(f"{option}: {exc}") from None


@app.command()
def correct(
    slo: Annotated[str, typer.Option("--slo", help="the SLO whose budget to correct")],
    from_: Annotated[
        str, typer.Option("--from", help="start, ISO time (no offset: UTC), e.g. 2026-03-01T02:00Z")
    ],
    to: Annotated[str, typer.Option("--to", help="end (exclusive), ISO time")],
    reason: Annotated[str, typer.Option("--reason", help="why the period is excluded (shown in reports)")],
    store: StoreOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Exclude a period (maintenance, a dependency's known outage) from an SLO's SLI, error budget and
    alerts; recorded in the store. List with `hopscope slo corrections`, remove with --delete."""

    start, end = _parse_time(from_, "--from"), _parse_time(to, "--to")
    where, rules = read_store(store, rules, config)
    spec = _load(rules, [slo])[0]
    st = Store.open(where, create=False)
    c = add_correction(st, spec, start, end, reason)
    if json_out:
        typer.echo(json.dumps(_jsonable({"slo": spec.name, **asdict(c)}), indent=2))
        return
    typer.echo(
        f"correction {c.id}: {spec.name} excludes {c.start:%Y-%m-%d %H:%M} – {c.end:%Y-%m-%d %H:%M} UTC "
        f"({c.minutes} min): {c.reason}"
    )


@app.command()
def corrections(
    store: StoreOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    json_out: JsonOpt = False,
    slo: SloOpt = None,
    delete: Annotated[
        str | None, typer.Option("--delete", help="delete the stored correction with this id")
    ] = None,
) -> None:
    """Budget corrections of every SLO: those in the SLO files (source spec) and those recorded with
    `hopscope slo correct` (source store, with an id)."""

    where, rules = read_store(store, rules, config)
    st = Store.open(where, create=False)
    if delete is not None:
        name, c = delete_correction(st, delete)
        typer.echo(
            f"deleted correction {c.id} of {name} ({c.start:%Y-%m-%d %H:%M} – {c.end:%Y-%m-%d %H:%M} UTC)"
        )
        return
    specs = _load(rules, slo)
    stored = read_corrections(st)
    items = [(s.name, c) for s in specs for c in with_corrections(s, stored.get(s.name, ())).corrections]
    known = {s.name for s in specs}
    # a stored correction whose SLO left the rules is listed too (it can still be deleted)
    items += [(n, c) for n, cs in stored.items() if n not in known and not slo for c in cs]
    if json_out:
        typer.echo(
            json.dumps([_jsonable({"slo": n, **asdict(c), "minutes": c.minutes}) for n, c in items], indent=2)
        )
        return
    if not items:
        typer.echo("no corrections")
        return
    _table(
        ["SLO", "from (UTC)", "to (UTC)", "minutes", "source", "id", "reason"],
        [
            [
                n,
                f"{c.start:%Y-%m-%d %H:%M}",
                f"{c.end:%Y-%m-%d %H:%M}",
                str(c.minutes),
                c.source,
                c.id or "-",
                c.reason,
            ]
            for n, c in items
        ],
    )


def _duration_key(label: str) -> float:

    try:
        return parse_duration(label).total_seconds()
    except ValueError:
        return 0.0


def _fmt_td(td: timedelta) -> str:
    h = td.total_seconds() / 3600
    return f"{h / 24:.1f}d" if h >= 48 else f"{h:.1f}h"


@app.command("import")
def import_(
    source: Annotated[Path, typer.Argument(help="OpenSLO or Sloth YAML file")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write hopscope/v1 YAML here (default: stdout)")
    ] = None,
    rules: RulesOpt = None,
) -> None:
    """Convert an OpenSLO (v1, v1alpha) or Sloth (prometheus/v1, PrometheusServiceLevel) file to hopscope/v1 YAML."""

    tables, _ = load_window_tables(rules or Path("slo_rules"))  # custom window tables, if any
    docs = read_yaml_docs(source)
    slos, errors = parse_documents(docs, str(source), tables or None)
    for e in errors:
        typer.echo(f"refused: {e}", err=True)
    if not slos:
        raise SpecError(f"{source}: nothing to import ({len(errors)} refused)")
    text = yaml.safe_dump_all([to_document(s) for s in slos], sort_keys=False, allow_unicode=True)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_output(out, text)
        typer.echo(f"wrote {len(slos)} SLO(s) to {out}", err=True)


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", help="output format")] = "prometheus",
    rules: RulesOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="write here (default: stdout)")] = None,
    slo: SloOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Prometheus recording and alerting rules (Sloth-compatible) for the Prometheus-sourced SLOs."""

    if fmt != "prometheus":
        raise HopscopeError(f"--format: {fmt!r} is not supported (prometheus)")
    _, rules = read_paths(None, rules, config)
    slos = _load(rules, slo, strict=True)  # a refused spec must not ship as a rule file without it
    if not any(s.sli.kind in PROMETHEUS_KINDS for s in slos):
        raise SpecError(f"{rules}: no Prometheus-sourced SLO to export (span SLIs are evaluated by hopscope)")
    text = prometheus_rules_yaml(slos)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_output(out, text)
        typer.echo(f"wrote {out}", err=True)


@app.command()
def backtest(
    store: StoreOpt = None,
    rules: RulesOpt = None,
    config: ConfigOpt = None,
    truth: Annotated[
        Path | None,
        typer.Option(
            "--truth",
            help="ground truth: scenario.json or a YAML/JSON list of {start, end[, slo]} windows (default: <store>/scenario.json)",
        ),
    ] = None,
    policy: Annotated[
        list[str] | None, typer.Option("--policy", help="what-if: another window table by name (repeatable)")
    ] = None,
    objective: Annotated[
        list[float] | None, typer.Option("--objective", help="what-if: another objective (repeatable)")
    ] = None,
    min_events: Annotated[
        list[int] | None,
        typer.Option("--min-events", min=0, help="what-if: another minimum-events guard (repeatable)"),
    ] = None,
    slo: SloOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay alert policies over stored history; precision, recall, detection and reset time vs ground truth."""

    where, rules = read_store(store, rules, config)
    slos = _load(rules, slo)
    st = _open_store(where)
    windows = load_truth(truth or where.path / "scenario.json")
    results = run_backtest(
        st, variants(slos, rules, policy or [], objective or [], min_events or []), windows
    )
    if json_out:
        typer.echo(json.dumps(_jsonable([asdict(r) for r in results]), indent=2))
        return
    head = [
        "variant",
        "SLO",
        "alerts",
        "TP",
        "FP",
        "FN",
        "precision",
        "recall",
        "detect (med)",
        "reset (med)",
    ]
    rows: list[list[object]] = []
    for r in results:
        rows.append(
            [
                r.variant, r.slo, r.alerts, r.true_positives, r.false_positives, r.missed,
                _fmt(r.precision), _fmt(r.recall),
                "-" if r.detection_median is None else _fmt_td(r.detection_median),
                "-" if r.reset_median is None else _fmt_td(r.reset_median),
            ]
        )  # fmt: skip
    lines: list[list[object]] = [list(head), *rows]
    widths = [max(len(str(x[i])) for x in lines) for i in range(len(head))]
    for line in lines:
        typer.echo("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())

"""SLO specs (``apiVersion: hopscope/v1``, ``kind: SLO``) and alert window tables, validated.

Every refusal is a :class:`SpecError` whose message names the file, the path
inside it and the bad value. :func:`load_slos` refuses one bad file or SLO on
its own and loads the rest.
"""

from __future__ import annotations

import calendar as _calendar
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from hopscope.durations import format_duration, parse_duration
from hopscope.errors import SpecError

API_VERSION = "hopscope/v1"
SLI_KINDS = ("latency", "availability", "prometheus_ratio", "prometheus_histogram")
SPAN_KINDS = ("latency", "availability")
SEVERITIES = ("page", "ticket")
BUDGETING = ("occurrences", "timeslices", "ratio_timeslices")
DEFAULT_POLICY = "sre-workbook"
MAX_FILE_BYTES = 1_000_000
DEFAULT_RULES = Path("slo_rules")
# Nominal lengths of calendar periods, used where a length must be fixed (burn factors).
CALENDAR_NOMINAL = {"month": timedelta(days=30), "week": timedelta(days=7)}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


# -- durations --------------------------------------------------------------------------------


# -- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """The SLO period: rolling (``28d``) or calendar (``month``/``week`` in a time zone)."""

    kind: str = "rolling"  # rolling | calendar
    length: timedelta | None = timedelta(days=28)  # rolling only
    unit: str | None = None  # calendar only: month | week
    tz: str = "UTC"

    @property
    def label(self) -> str:
        if self.kind == "rolling" and self.length is not None:
            return format_duration(self.length)
        return f"{self.unit} ({self.tz})"

    @property
    def nominal(self) -> timedelta:
        """Length used for burn-rate factors: the rolling length, or 30d/7d for calendar periods."""
        if self.kind == "rolling" and self.length is not None:
            return self.length
        return CALENDAR_NOMINAL[self.unit or "month"]

    def period(self, now: datetime) -> tuple[datetime, datetime]:
        """The budget period that holds ``now`` (naive UTC): [start, end)."""
        if self.kind == "rolling":
            assert self.length is not None
            return now - self.length, now
        zone = ZoneInfo(self.tz)
        local = now.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
        if self.unit == "week":
            start_local = (local - timedelta(days=local.weekday())).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            start_local = start_local.replace(tzinfo=None)
            end_local = start_local + timedelta(days=7)
        else:
            start_local = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
            days = _calendar.monthrange(start_local.year, start_local.month)[1]
            end_local = start_local + timedelta(days=days)
        return _to_utc(start_local, zone), _to_utc(end_local, zone)


def _to_utc(local_naive: datetime, zone: ZoneInfo) -> datetime:
    return local_naive.replace(tzinfo=zone).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Budgeting:
    """Occurrences (every event counts), or time slices (a slice is good when its ratio meets slice_objective)."""

    method: str = "occurrences"
    slice: timedelta | None = None
    slice_objective: float | None = None  # timeslices only


@dataclass(frozen=True, slots=True)
class SLI:
    kind: str
    service: str | None = None
    route: str | None = None
    hop: str | None = None
    threshold_ms: float | None = None
    # Prometheus SLIs; queries carry Sloth's {{.window}} placeholder.
    good_query: str | None = None
    error_query: str | None = None
    total_query: str | None = None
    error_ratio_query: str | None = None
    metric: str | None = None  # histogram base name (without _bucket / _count)
    selector: str = ""  # label matchers without braces: job="x",code!="500"
    le: str | None = None  # the bucket bound as written, in seconds

    @property
    def edge(self) -> tuple[str, str]:
        """(client, server) of the hop_minutes rows this span SLI reads."""
        if self.hop and "->" in self.hop:
            client, server = self.hop.split("->", 1)
            return client, server
        return "", self.service or ""


@dataclass(frozen=True, slots=True)
class AlertTier:
    """One long/short window pair: fires when both burn faster than factor."""

    severity: str
    long: timedelta
    short: timedelta
    factor: float

    @property
    def label(self) -> str:
        return f"{format_duration(self.long)}/{format_duration(self.short)}"


@dataclass(frozen=True, slots=True)
class WindowTable:
    name: str
    period: timedelta
    tiers: tuple[
        tuple[str, timedelta, timedelta, float | None, float | None], ...
    ]  # sev, long, short, factor, budget%
    scale: str = "factors"  # factors: recompute factors from budget%; windows: scale windows by period
    source_file: Path | None = None

    def resolve(self, period: timedelta) -> tuple[AlertTier, ...]:
        """The tiers for an SLO of this period."""
        out = []
        ratio = period / self.period
        for sev, long, short, factor, pct in self.tiers:
            if self.scale == "windows":
                long, short = long * ratio, short * ratio
                f = factor if factor is not None else (pct or 0) / 100 * self.period / long
            elif pct is not None:
                f = pct / 100 * (period / long)
            else:
                f = float(factor or 0)
            out.append(AlertTier(sev, long, short, round(f, 6)))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Alerting:
    policy: str = DEFAULT_POLICY
    tiers: tuple[AlertTier, ...] = ()
    disabled: tuple[str, ...] = ()
    min_events: int = 0
    # Warm-up guard: a tier fires only once its long window holds at least min_coverage x its short
    # window's length of minutes with data. At the start of data (or after a long collection gap) a
    # 3d window holding one minute sees no more than that minute: the pair degenerates into a
    # one-minute alert at factor 1. 0 turns the guard off (what Prometheus/Sloth rules do).
    min_coverage: float = 1.0
    name: str | None = None  # alert name for exported rules
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    page_labels: Mapping[str, str] = field(default_factory=dict)
    ticket_labels: Mapping[str, str] = field(default_factory=dict)
    page_annotations: Mapping[str, str] = field(default_factory=dict)
    ticket_annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def active_tiers(self) -> tuple[AlertTier, ...]:
        return tuple(
            t for t in self.tiers if t.severity not in self.disabled and t.label not in self.disabled
        )

    @property
    def windows(self) -> tuple[timedelta, ...]:
        """Every distinct window of the policy, shortest first."""
        return tuple(sorted({w for t in self.tiers for w in (t.short, t.long)}))


@dataclass(frozen=True, slots=True)
class SLO:
    name: str
    description: str
    objective: float
    window: Window
    sli: SLI
    budgeting: Budgeting = Budgeting()
    hop_budgets_ms: Mapping[str, float] = field(default_factory=dict)
    alerting: Alerting = Alerting()
    service: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    source_file: Path | None = None
    notes: tuple[str, ...] = ()  # warnings that do not refuse the SLO (e.g. hop budgets over threshold)

    @property
    def error_budget(self) -> float:
        return 1.0 - self.objective


# -- validation helpers -----------------------------------------------------------------------


class _At:
    """A position inside a spec file, for messages: ``file: spec.sli.kind: 'x' ...``."""

    def __init__(self, file: str, path: str = "", doc: int = 0) -> None:
        self.file, self.path, self.doc = file, path, doc

    def __truediv__(self, key: str | int) -> _At:
        sub = f"[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else str(key))
        if isinstance(key, int):
            sub = f"{self.path}{sub}"
        return _At(self.file, sub, self.doc)

    def where(self) -> str:
        doc = f" (document {self.doc + 1})" if self.doc else ""
        return f"{self.file}{doc}: {self.path}" if self.path else f"{self.file}{doc}"

    def fail(self, msg: str) -> SpecError:
        return SpecError(f"{self.where()}: {msg}")


def _mapping(v: Any, at: _At, allowed: Iterable[str] | None = None) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise at.fail(f"{_short(v)} is not a mapping")
    if allowed is not None:
        allowed = tuple(allowed)
        for k in v:
            if k not in allowed:
                raise (at / str(k)).fail(f"unknown field; expected one of {', '.join(allowed)}")
    return v


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _str(v: Any, at: _At, *, required: bool = False) -> str | None:
    if v is None:
        if required:
            raise at.fail("is required")
        return None
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise at.fail(f"{_short(v)} is not text")
    return str(v)


def _ratio(v: Any, at: _At) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise at.fail(f"{_short(v)} is not a ratio in (0, 1)")
    f = float(v)
    if not 0 < f < 1:
        hint = f"; write {f / 100:g}" if 1 < f < 100 else ""
        raise at.fail(f"{v!r} is not a ratio in (0, 1){hint}")
    return f


def _positive(v: Any, at: _At) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v) > 0 or float(v) != float(v):
        raise at.fail(f"{_short(v)} is not a positive number")
    return float(v)


def _duration(v: Any, at: _At) -> timedelta:
    try:
        return parse_duration(v)
    except ValueError as e:
        raise at.fail(str(e)) from None


def _labels(v: Any, at: _At) -> dict[str, str]:
    m = _mapping(v, at)
    return {str(k): str(val) for k, val in m.items()}


def _tz(v: Any, at: _At) -> str:
    name = _str(v, at) or "UTC"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise at.fail(f"{name!r} is not a time zone (IANA name like Europe/Paris)") from None
    return name


# -- window tables ----------------------------------------------------------------------------


def parse_window_table(doc: Any, file: str, name: str | None = None) -> WindowTable:
    """A hopscope ``AlertWindows`` table, or Sloth's ``sloth.slok.dev/v1 AlertWindows``."""
    at = _At(file)
    d = _mapping(doc, at)
    if d.get("apiVersion") == "sloth.slok.dev/v1":
        spec = _mapping(d.get("spec"), at / "spec", ("sloPeriod", "page", "ticket"))
        period = _duration(spec.get("sloPeriod"), at / "spec" / "sloPeriod")
        tiers: list[tuple[str, timedelta, timedelta, float | None, float | None]] = []
        for sev in SEVERITIES:
            sev_map = _mapping(spec.get(sev), at / "spec" / sev, ("quick", "slow"))
            for speed in ("quick", "slow"):
                w_at = at / "spec" / sev / speed
                w = _mapping(sev_map.get(speed), w_at, ("errorBudgetPercent", "shortWindow", "longWindow"))
                pct = _positive(w.get("errorBudgetPercent"), w_at / "errorBudgetPercent")
                long = _duration(w.get("longWindow"), w_at / "longWindow")
                short = _duration(w.get("shortWindow"), w_at / "shortWindow")
                tiers.append((sev, long, short, None, pct))
        return WindowTable(name or Path(file).stem, period, tuple(tiers), "factors", Path(file))
    d = _mapping(doc, at, ("apiVersion", "kind", "name", "period", "scale", "tiers"))
    if d.get("apiVersion") != API_VERSION or d.get("kind") != "AlertWindows":
        raise at.fail(
            f"apiVersion/kind {d.get('apiVersion')!r}/{d.get('kind')!r} is not {API_VERSION}/AlertWindows"
        )
    tname = _str(d.get("name"), at / "name") or name or Path(file).stem
    period = _duration(d.get("period"), at / "period")
    scale = d.get("scale", "factors")
    if scale not in ("factors", "windows"):
        raise (at / "scale").fail(f"{scale!r} is not one of factors, windows")
    raw = d.get("tiers")
    if not isinstance(raw, list) or not raw:
        raise (at / "tiers").fail(f"{_short(raw)} is not a non-empty list")
    tiers = []
    for i, t in enumerate(raw):
        t_at = at / "tiers" / i
        tm = _mapping(t, t_at, ("severity", "long", "short", "factor", "budget_percent"))
        sev = str(tm.get("severity"))
        if sev not in SEVERITIES:
            raise (t_at / "severity").fail(f"{tm.get('severity')!r} is not one of {', '.join(SEVERITIES)}")
        long = _duration(tm.get("long"), t_at / "long")
        short = _duration(tm.get("short"), t_at / "short")
        if short >= long:
            raise (t_at / "short").fail(
                f"{tm.get('short')!r} is not shorter than the long window {tm.get('long')!r}"
            )
        factor = _positive(tm["factor"], t_at / "factor") if "factor" in tm else None
        percent = _positive(tm["budget_percent"], t_at / "budget_percent") if "budget_percent" in tm else None
        if factor is None and percent is None:
            raise t_at.fail("needs factor or budget_percent")
        tiers.append((sev, long, short, factor, percent))
    return WindowTable(tname, period, tuple(tiers), scale, Path(file))


def load_window_tables(rules: Path | str = DEFAULT_RULES) -> tuple[dict[str, WindowTable], list[SpecError]]:
    """Every table under ``<rules>/alert_windows/*.yaml``, by name."""
    tables: dict[str, WindowTable] = {}
    errors: list[SpecError] = []
    folder = Path(rules) / "alert_windows"
    for f in sorted(folder.glob("*.y*ml")) if folder.is_dir() else []:
        try:
            t = parse_window_table(_read_yaml_docs(f)[0], str(f))
            tables[t.name] = t
        except SpecError as e:
            errors.append(e)
    return tables, errors


# -- reading files ----------------------------------------------------------------------------


def _read_yaml_docs(path: Path) -> list[Any]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SpecError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit for a spec file")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: is not UTF-8 text") from None
    return parse_yaml_text(text, str(path))


def parse_yaml_text(text: str, file: str) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{file}:{where}: not valid YAML ({problem})") from None


# -- hopscope/v1 SLO --------------------------------------------------------------------------

_SPEC_KEYS = ("description", "service", "objective", "window", "budgeting", "sli", "hopBudgetsMs", "alerting")
_SLI_KEYS = (
    "kind",
    "service",
    "route",
    "hop",
    "thresholdMs",
    "goodQuery",
    "errorQuery",
    "totalQuery",
    "errorRatioQuery",
    "metric",
    "selector",
    "le",
)
_ALERT_KEYS = (
    "policy",
    "disable",
    "minEvents",
    "minCoverage",
    "name",
    "labels",
    "annotations",
    "pageLabels",
    "ticketLabels",
    "pageAnnotations",
    "ticketAnnotations",
)


def parse_slo(
    doc: Any, file: str, tables: Mapping[str, WindowTable] | None = None, *, doc_index: int = 0
) -> SLO:
    """One ``hopscope/v1`` SLO document -> :class:`SLO`; SpecError naming file, path and value."""
    at = _At(file, doc=doc_index)
    d = _mapping(doc, at, ("apiVersion", "kind", "metadata", "spec"))
    if d.get("apiVersion") != API_VERSION:
        raise (at / "apiVersion").fail(f"{d.get('apiVersion')!r} is not {API_VERSION}")
    if d.get("kind") != "SLO":
        raise (at / "kind").fail(f"{d.get('kind')!r} is not SLO")
    meta = _mapping(d.get("metadata"), at / "metadata", ("name", "labels", "displayName"))
    name = _str(meta.get("name"), at / "metadata" / "name", required=True)
    assert name is not None
    if not _NAME.match(name):
        raise (at / "metadata" / "name").fail(f"{name!r} is not a name (letters, digits, - _ . :)")
    sa = at / "spec"
    spec = _mapping(d.get("spec"), sa, _SPEC_KEYS)
    if "objective" not in spec:
        raise (sa / "objective").fail("is required (a ratio in (0, 1), e.g. 0.999)")
    objective = _ratio(spec["objective"], sa / "objective")
    window = _parse_window(spec.get("window", "28d"), sa / "window")
    budgeting = _parse_budgeting(spec.get("budgeting", "occurrences"), sa / "budgeting")
    sli = _parse_sli(spec.get("sli"), sa / "sli")
    notes: list[str] = []
    hop_budgets: dict[str, float] = {}
    hb = _mapping(spec.get("hopBudgetsMs"), sa / "hopBudgetsMs")
    for hop, ms in hb.items():
        hop_budgets[str(hop)] = _positive(ms, sa / "hopBudgetsMs" / str(hop))
    if hop_budgets:
        if sli.kind not in ("latency", "prometheus_histogram") or sli.threshold_ms is None:
            raise (sa / "hopBudgetsMs").fail(
                f"hop budgets need a latency SLI with a threshold; sli.kind is {sli.kind!r}"
            )
        total = sum(hop_budgets.values())
        if total > sli.threshold_ms + 1e-9:
            notes.append(
                f"{(sa / 'hopBudgetsMs').where()}: hop budgets sum to {total:g} ms, over the "
                f"{sli.threshold_ms:g} ms threshold by {total - sli.threshold_ms:g} ms"
            )
    alerting = _parse_alerting(spec.get("alerting"), sa / "alerting", window, tables)
    return SLO(
        name=name,
        description=_str(spec.get("description"), sa / "description") or "",
        objective=objective,
        window=window,
        sli=sli,
        budgeting=budgeting,
        hop_budgets_ms=hop_budgets,
        alerting=alerting,
        service=_str(spec.get("service"), sa / "service") or sli.service,
        labels=_labels(meta.get("labels"), at / "metadata" / "labels"),
        source_file=Path(file),
        notes=tuple(notes),
    )


def _parse_window(v: Any, at: _At) -> Window:
    if isinstance(v, str) and v in CALENDAR_NOMINAL:
        return Window("calendar", None, v, "UTC")
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        length = _duration(v, at)
        if length < timedelta(minutes=5):
            raise at.fail(f"{v!r} is shorter than 5m")
        return Window("rolling", length)
    m = _mapping(v, at, ("rolling", "calendar", "timeZone"))
    if "rolling" in m:
        if "calendar" in m:
            raise at.fail("has both rolling and calendar; choose one")
        return _parse_window(m["rolling"], at / "rolling")
    unit = m.get("calendar")
    if unit not in CALENDAR_NOMINAL:
        raise (at / "calendar").fail(f"{unit!r} is not one of month, week")
    return Window("calendar", None, str(unit), _tz(m.get("timeZone"), at / "timeZone"))


def _parse_budgeting(v: Any, at: _At) -> Budgeting:
    if isinstance(v, str):
        v = {"method": v}
    m = _mapping(v, at, ("method", "slice", "sliceObjective"))
    method = m.get("method", "occurrences")
    if method not in BUDGETING:
        raise (at / "method").fail(f"{method!r} is not one of {', '.join(BUDGETING)}")
    if method == "occurrences":
        for k in ("slice", "sliceObjective"):
            if k in m:
                raise (at / k).fail("only applies to timeslices or ratio_timeslices budgeting")
        return Budgeting()
    sl = _duration(m.get("slice", "1m"), at / "slice")
    if sl < timedelta(minutes=1) or sl.total_seconds() % 60:
        raise (at / "slice").fail(
            f"{m.get('slice')!r} is not a whole number of minutes (hop_minutes is per minute)"
        )
    so = None
    if method == "timeslices":
        if "sliceObjective" not in m:
            raise (at / "sliceObjective").fail("is required for timeslices budgeting (a ratio, e.g. 0.95)")
        so = _ratio(m["sliceObjective"], at / "sliceObjective")
    elif "sliceObjective" in m:
        raise (at / "sliceObjective").fail("only applies to timeslices budgeting")
    return Budgeting(method, sl, so)


def _parse_sli(v: Any, at: _At) -> SLI:
    m = _mapping(v, at, _SLI_KEYS)
    if not m:
        raise at.fail("is required")
    kind = m.get("kind")
    if kind not in SLI_KINDS:
        raise (at / "kind").fail(f"{kind!r} is not one of {', '.join(SLI_KINDS)}")
    allowed = {
        "latency": {"kind", "service", "route", "hop", "thresholdMs"},
        "availability": {"kind", "service", "route", "hop"},
        "prometheus_ratio": {"kind", "goodQuery", "errorQuery", "totalQuery", "errorRatioQuery"},
        "prometheus_histogram": {"kind", "metric", "selector", "le"},
    }[kind]
    for k in m:
        if k not in allowed:
            raise (at / k).fail(f"does not apply to a {kind} SLI (it takes {', '.join(sorted(allowed))})")
    if kind in SPAN_KINDS:
        service = _str(m.get("service"), at / "service", required=True)
        route = _str(m.get("route"), at / "route")
        hop = _str(m.get("hop"), at / "hop")
        if hop is not None:
            parts = hop.split("->")
            if len(parts) != 2 or not all(p.strip() for p in parts):
                if len(parts) == 1:
                    raise (at / "hop").fail(
                        f"{hop!r} is a service's self time, which has no latency histogram; "
                        f"name an edge like 'api-gateway->{hop}'"
                    )
                raise (at / "hop").fail(f"{hop!r} is not an edge like 'client->server'")
            hop = "->".join(p.strip() for p in parts)
        thr = None
        if kind == "latency":
            if "thresholdMs" not in m:
                raise (at / "thresholdMs").fail("is required for a latency SLI")
            thr = _positive(m["thresholdMs"], at / "thresholdMs")
        return SLI(kind, service=service, route=route, hop=hop, threshold_ms=thr)
    if kind == "prometheus_ratio":
        q = {k: _str(m.get(k), at / k) for k in ("goodQuery", "errorQuery", "totalQuery", "errorRatioQuery")}
        if q["errorRatioQuery"]:
            if q["goodQuery"] or q["errorQuery"] or q["totalQuery"]:
                raise (at / "errorRatioQuery").fail("excludes goodQuery/errorQuery/totalQuery")
        else:
            if not q["totalQuery"]:
                raise (at / "totalQuery").fail("is required with goodQuery or errorQuery")
            if bool(q["goodQuery"]) == bool(q["errorQuery"]):
                raise (at / "goodQuery").fail("give exactly one of goodQuery or errorQuery")
        return SLI(
            kind,
            good_query=q["goodQuery"],
            error_query=q["errorQuery"],
            total_query=q["totalQuery"],
            error_ratio_query=q["errorRatioQuery"],
        )
    metric = _str(m.get("metric"), at / "metric", required=True)
    assert metric is not None
    if not re.match(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$", metric):
        raise (at / "metric").fail(f"{metric!r} is not a Prometheus metric name")
    le = _str(m.get("le"), at / "le", required=True)
    try:
        le_s = float(le or "")
    except ValueError:
        raise (at / "le").fail(f"{le!r} is not a bucket bound in seconds") from None
    if not le_s > 0:
        raise (at / "le").fail(f"{le!r} is not a positive bucket bound in seconds")
    selector = (_str(m.get("selector"), at / "selector") or "").strip().strip("{}")
    return SLI(kind, metric=metric, selector=selector, le=le, threshold_ms=le_s * 1000)


def _parse_alerting(v: Any, at: _At, window: Window, tables: Mapping[str, WindowTable] | None) -> Alerting:
    m = _mapping(v, at, _ALERT_KEYS)
    policy = _str(m.get("policy"), at / "policy") or DEFAULT_POLICY
    tables = tables if tables is not None else default_window_tables()
    if policy not in tables:
        raise (at / "policy").fail(
            f"{policy!r} is not a window table; known: {', '.join(sorted(tables)) or 'none'}"
        )
    tiers = tables[policy].resolve(window.nominal)
    raw_dis = m.get("disable", [])
    if isinstance(raw_dis, str):
        raw_dis = [raw_dis]
    if not isinstance(raw_dis, list):
        raise (at / "disable").fail(f"{_short(raw_dis)} is not a list of severities or tier labels")
    labels = {t.label for t in tiers}
    for i, x in enumerate(raw_dis):
        if x not in SEVERITIES and x not in labels:
            raise (at / "disable" / i).fail(
                f"{x!r} is not page, ticket or a tier of {policy} ({', '.join(sorted(labels))})"
            )
    me = m.get("minEvents", 0)
    if isinstance(me, bool) or not isinstance(me, int) or me < 0:
        raise (at / "minEvents").fail(f"{_short(me)} is not a whole number >= 0")
    mc = m.get("minCoverage", 1.0)
    if isinstance(mc, bool) or not isinstance(mc, (int, float)) or not 0 <= float(mc) <= 12:
        raise (at / "minCoverage").fail(
            f"{_short(mc)} is not a number in [0, 12] (share of the short window's length that the "
            "long window must hold with data before a tier may fire; 0 turns the guard off)"
        )
    return Alerting(
        policy=policy,
        tiers=tiers,
        disabled=tuple(str(x) for x in raw_dis),
        min_events=me,
        min_coverage=float(mc),
        name=_str(m.get("name"), at / "name"),
        labels=_labels(m.get("labels"), at / "labels"),
        annotations=_labels(m.get("annotations"), at / "annotations"),
        page_labels=_labels(m.get("pageLabels"), at / "pageLabels"),
        ticket_labels=_labels(m.get("ticketLabels"), at / "ticketLabels"),
        page_annotations=_labels(m.get("pageAnnotations"), at / "pageAnnotations"),
        ticket_annotations=_labels(m.get("ticketAnnotations"), at / "ticketAnnotations"),
    )


_DEFAULT_TABLES: dict[str, WindowTable] | None = None


def default_window_tables() -> dict[str, WindowTable]:
    """The shipped tables: ``slo_rules/alert_windows`` next to this package's checkout."""
    global _DEFAULT_TABLES
    if _DEFAULT_TABLES is None:
        here = Path(__file__).resolve().parents[2] / "slo_rules"
        tables, _ = load_window_tables(here if here.is_dir() else DEFAULT_RULES)
        _DEFAULT_TABLES = tables
    return _DEFAULT_TABLES


def with_policy(slo: SLO, table: WindowTable, *, min_events: int | None = None) -> SLO:
    """The same SLO under another window table (what-if)."""
    alerting = replace(
        slo.alerting,
        policy=table.name,
        tiers=table.resolve(slo.window.nominal),
        disabled=tuple(d for d in slo.alerting.disabled if d in SEVERITIES),
        min_events=slo.alerting.min_events if min_events is None else min_events,
    )
    return replace(slo, alerting=alerting)


# -- loading ----------------------------------------------------------------------------------


def parse_documents(
    docs: Sequence[Any], file: str, tables: Mapping[str, WindowTable] | None = None
) -> tuple[list[SLO], list[SpecError]]:
    """Every SLO document of one file (hopscope/v1, OpenSLO or Sloth); each refused on its own."""
    from hopscope.slo.importers import import_documents

    slos: list[SLO] = []
    errors: list[SpecError] = []
    others: list[Any] = []
    for i, doc in enumerate(docs):
        if isinstance(doc, dict) and doc.get("apiVersion") == API_VERSION:
            others.append(None)
            if doc.get("kind") == "AlertWindows":
                continue
            try:
                slos.append(parse_slo(doc, file, tables, doc_index=i))
            except SpecError as e:
                errors.append(e)
        else:
            others.append(doc)
    if any(d is not None for d in others):
        # Peer specs go in together: OpenSLO v1 documents refer to each other by name.
        got, errs = import_documents(others, file, tables)
        slos.extend(got)
        errors.extend(errs)
    return slos, errors


def load_slos(path: Path | str = DEFAULT_RULES) -> tuple[list[SLO], list[SpecError]]:
    """Every SLO under ``path`` (a folder of YAML files, or one file); bad ones are refused one by one."""
    p = Path(path)
    rules_dir = p if p.is_dir() else p.parent
    tables, errors = load_window_tables(rules_dir)
    if not tables:
        tables = default_window_tables()
    if p.is_dir():
        files = sorted(f for f in p.glob("*.y*ml") if f.is_file())
    elif p.exists():
        files = [p]
    else:
        return [], [SpecError(f"{p}: no such file or folder")]
    slos: list[SLO] = []
    seen: dict[str, Path | None] = {}
    for f in files:
        try:
            docs = _read_yaml_docs(f)
        except SpecError as e:
            errors.append(e)
            continue
        got, errs = parse_documents(docs, str(f), tables)
        errors.extend(errs)
        for s in got:
            if s.name in seen:
                errors.append(
                    SpecError(f"{f}: metadata.name: {s.name!r} is already defined in {seen[s.name]}")
                )
                continue
            seen[s.name] = f
            slos.append(s)
    return slos, errors


def slo_thresholds_ms(slos: Iterable[SLO]) -> list[float]:
    """Every latency threshold the span SLOs use, sorted, once each (the rollup counts them exactly)."""
    return sorted({float(s.sli.threshold_ms) for s in slos if s.sli.kind == "latency" and s.sli.threshold_ms})

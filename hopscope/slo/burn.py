"""Error budgets, burn rates, alert states and breaches: pure math over a minute frame.

The input is a frame with columns ``minute`` (naive UTC), ``good`` and
``total`` — one row per minute that had data. A minute without a row is a
*gap*: it is reported, and never counted as good. Nothing here reads the store.

Definitions (Google SRE Workbook, "Alerting on SLOs"):

- error ratio over a window = (total - good) / total; burn rate = error ratio / (1 - objective);
- a tier fires when both its long and its short window burn faster than its factor
  (and the long window holds at least ``min_events`` events);
- budget consumed = bad events / allowed bad events in the period (time slices: bad slices /
  allowed bad slices of the whole period);
- time to exhaustion = budget remaining x period / current burn rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from hopscope.errors import HopscopeError
from hopscope.slo.spec import SLO, AlertTier, format_duration

_MIN = np.timedelta64(1, "m")


class MinuteFrameError(HopscopeError):
    """A minute frame handed to the SLO math is malformed (missing columns, good > total, ...)."""


@dataclass(frozen=True, slots=True)
class Breach:
    """An interval during which an alert condition of an SLO held."""

    id: str
    slo: str
    start: datetime
    end: datetime
    severity: str
    peak_burn_rate: float
    budget_consumed: float
    windows: tuple[str, ...]

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class SloStatus:
    slo: str
    objective: float
    sli: float | None
    good: float
    total: float
    budget_remaining: float | None
    budget_consumed: float | None
    burn_rates: dict[str, float | None]
    alert_state: str  # ok | ticket | page | no data
    time_to_exhaustion: timedelta | None
    gaps: tuple[tuple[datetime, datetime], ...]
    period_start: datetime | None = None
    period_end: datetime | None = None
    now: datetime | None = None
    firing: tuple[str, ...] = ()  # "page 1h/5m", ...
    gap_minutes: int = 0
    notes: tuple[str, ...] = field(default=())


# -- frames -> dense arrays -------------------------------------------------------------------


def _minute_ints(values: pd.Series | np.ndarray) -> np.ndarray:
    arr = np.asarray(pd.to_datetime(values)).astype("datetime64[m]")
    return arr.astype(np.int64)


def _to_dt(m: int) -> datetime:
    return pd.Timestamp(np.datetime64(int(m), "m")).to_pydatetime()


def _dt_int(t: datetime) -> int:
    """Minute index of a naive-UTC datetime, rounded down."""
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.value // 60_000_000_000)


@dataclass(frozen=True, slots=True)
class _Dense:
    """Per-minute events on a dense grid [t0, t0 + n): good, total, has_data; cumulative sums."""

    t0: int
    good: np.ndarray
    total: np.ndarray
    data: np.ndarray  # bool: the minute (or slice) had data
    cg: np.ndarray  # len n + 1
    ct: np.ndarray
    cd: np.ndarray

    @property
    def n(self) -> int:
        return len(self.good)

    def window(self, end: np.ndarray | int, minutes: int) -> tuple[np.ndarray, np.ndarray]:
        """(good, total) summed over the ``minutes`` minutes ending at grid index ``end`` (exclusive)."""
        e = np.clip(np.asarray(end), 0, self.n)
        s = np.clip(e - minutes, 0, self.n)
        return self.cg[e] - self.cg[s], self.ct[e] - self.ct[s]


def _validate(df: pd.DataFrame) -> pd.DataFrame:
    missing = {"minute", "good", "total"} - set(df.columns)
    if missing:
        raise MinuteFrameError(f"minute frame: missing column(s) {', '.join(sorted(missing))}")
    if len(df) == 0:
        return df
    good = df["good"].to_numpy(dtype=np.float64)
    total = df["total"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(good) | ~np.isfinite(total) | (good < 0) | (total < 0) | (good > total + 1e-9)
    if bad.any():
        i = int(np.argmax(bad))
        raise MinuteFrameError(
            f"minute frame: row {i} (minute {df['minute'].iloc[i]}): good={good[i]!r}, total={total[i]!r} "
            "is not 0 <= good <= total"
        )
    return df


def _dense(slo: SLO, df: pd.DataFrame, start: int | None = None, end: int | None = None) -> _Dense:
    """Dense per-minute (or per-slice) events from a minute frame, after the SLO's budgeting method."""
    df = _validate(df)
    mins = _minute_ints(df["minute"]) if len(df) else np.empty(0, np.int64)
    lo = int(mins.min()) if start is None and len(mins) else (start if start is not None else 0)
    hi = int(mins.max()) + 1 if end is None and len(mins) else (end if end is not None else lo)
    n = max(hi - lo, 0)
    good = np.zeros(n)
    total = np.zeros(n)
    if len(mins):
        keep = (mins >= lo) & (mins < hi)
        idx = mins[keep] - lo
        good = np.bincount(idx, weights=df["good"].to_numpy(dtype=np.float64)[keep], minlength=n)[:n]
        total = np.bincount(idx, weights=df["total"].to_numpy(dtype=np.float64)[keep], minlength=n)[:n]
    data = total > 0
    b = slo.budgeting
    if b.method != "occurrences" and n:
        k = int((b.slice or timedelta(minutes=1)).total_seconds() // 60)
        # Slices aligned to the epoch; each slice's event sits on its last minute, so an
        # unfinished slice at the end is not counted yet.
        first_slot = lo // k
        pos = np.arange(lo, hi) // k - first_slot
        nslots = int(pos[-1]) + 1
        sg = np.bincount(pos, weights=good, minlength=nslots)
        st = np.bincount(pos, weights=total, minlength=nslots)
        has = st > 0
        ratio = np.divide(sg, st, out=np.zeros_like(sg), where=has)
        if b.method == "timeslices":
            s_good = np.where(has, (ratio >= (b.slice_objective or 0) - 1e-12).astype(float), 0.0)
        else:
            s_good = np.where(has, ratio, 0.0)
        s_total = has.astype(float)
        good = np.zeros(n)
        total = np.zeros(n)
        data = np.zeros(n, bool)
        last_minute = (
            (np.arange(nslots) + first_slot) * k + k - 1 - lo
        )  # grid index of each slice's last minute
        ok = last_minute < n
        good[last_minute[ok]] = s_good[ok]
        total[last_minute[ok]] = s_total[ok]
        data[last_minute[ok]] = has[ok]
    cg = np.concatenate([[0.0], np.cumsum(good)])
    ct = np.concatenate([[0.0], np.cumsum(total)])
    cd = np.concatenate([[0], np.cumsum(data.astype(np.int64))])
    return _Dense(lo, good, total, data, cg, ct, cd)


def _minutes(td: timedelta) -> int:
    return max(int(round(td.total_seconds() / 60)), 1)


def _burn(good: np.ndarray, total: np.ndarray, budget: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, (total - good) / np.where(total > 0, total, 1) / budget, np.nan)


def _opt(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _gaps(d: _Dense, lo: int, hi: int, slice_minutes: int = 1) -> list[tuple[datetime, datetime]]:
    """Runs of minutes (or slices) without data in grid range [lo, hi)."""
    lo, hi = max(lo, 0), min(hi, d.n)
    if hi <= lo:
        return []
    if slice_minutes > 1:
        # data flags sit on each slice's last minute: test those positions only
        pos = np.arange(lo, hi)
        is_last = ((pos + d.t0) % slice_minutes) == slice_minutes - 1
        missing = is_last & ~d.data[lo:hi]
        out = []
        for p in pos[missing]:
            out.append((_to_dt(d.t0 + p - slice_minutes + 1), _to_dt(d.t0 + p + 1)))
        return _merge_runs(out)
    missing = ~d.data[lo:hi]
    if not missing.any():
        return []
    edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(_to_dt(d.t0 + lo + s), _to_dt(d.t0 + lo + e)) for s, e in zip(starts, ends, strict=True)]


def _merge_runs(runs: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for s, e in runs:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


# -- status -----------------------------------------------------------------------------------


def window_labels(slo: SLO) -> list[str]:
    return [format_duration(w) for w in slo.alerting.windows]


def _period_budget_units(slo: SLO, period_minutes: int) -> float | None:
    """Allowed bad units in a whole period for time-slice budgeting (None for occurrences)."""
    if slo.budgeting.method == "occurrences":
        return None
    k = _minutes(slo.budgeting.slice or timedelta(minutes=1))
    return slo.error_budget * (period_minutes // k)


def status_from_minutes(slo: SLO, minutes_df: pd.DataFrame, now: datetime) -> SloStatus:
    """The SLO's state at ``now``: SLI over its period, budget, burn rate per window, alert state."""
    p_start, p_end = slo.window.period(now)
    now_i, ps_i, pe_i = _dt_int(now), _dt_int(p_start), _dt_int(p_end)
    longest = max([_minutes(w) for w in slo.alerting.windows] + [now_i - ps_i])
    d = _dense(slo, minutes_df, start=now_i - longest, end=now_i)
    end = d.n  # grid index of `now` (exclusive)
    g, t = d.window(end, now_i - ps_i)
    good, total = float(g), float(t)
    budget = slo.error_budget
    k = _minutes(slo.budgeting.slice) if slo.budgeting.slice else 1
    gaps = _gaps(d, end - (now_i - ps_i), end, k)
    gap_minutes = int(sum((e - s).total_seconds() // 60 for s, e in gaps))
    burn_rates: dict[str, float | None] = {}
    for w in slo.alerting.windows:
        wg, wt = d.window(end, _minutes(w))
        burn_rates[format_duration(w)] = _opt(float(_burn(np.array([wg]), np.array([wt]), budget)[0]))
    if total <= 0:
        return SloStatus(
            slo.name, slo.objective, None, good, total, None, None, burn_rates, "no data", None,
            tuple(gaps), p_start, p_end, now, (), gap_minutes, slo.notes,
        )  # fmt: skip
    sli = good / total
    period_units = _period_budget_units(slo, pe_i - ps_i)
    if period_units is not None:
        consumed = (total - good) / period_units if period_units > 0 else float("inf")
    else:
        consumed = (1 - sli) / budget
    remaining = 1.0 - consumed
    firing = []
    for tier in slo.alerting.active_tiers:
        if _tier_fires(d, tier, budget, slo.alerting.min_events, np.array([end]))[0]:
            firing.append(f"{tier.severity} {tier.label}")
    state = "page" if any(f.startswith("page") for f in firing) else ("ticket" if firing else "ok")
    current = _current_burn(slo, burn_rates)
    tte: timedelta | None = None
    if remaining <= 0:
        tte = timedelta(0)
    elif current is not None and current > 0:
        tte = (p_end - p_start) * (remaining / current)
    return SloStatus(
        slo.name, slo.objective, sli, good, total, remaining, consumed, burn_rates, state, tte,
        tuple(gaps), p_start, p_end, now, tuple(firing), gap_minutes, slo.notes,
    )  # fmt: skip


def _current_burn(slo: SLO, burn_rates: dict[str, float | None]) -> float | None:
    """The 'current' burn rate: the shortest long window of the policy (1h in the SRE Workbook table)."""
    tiers = slo.alerting.tiers
    if not tiers:
        return burn_rates.get("1h")
    return burn_rates.get(format_duration(min(t.long for t in tiers)))


def _tier_fires(d: _Dense, tier: AlertTier, budget: float, min_events: int, ends: np.ndarray) -> np.ndarray:
    lg, lt = d.window(ends, _minutes(tier.long))
    sg, st = d.window(ends, _minutes(tier.short))
    bl = _burn(lg, lt, budget)
    bs = _burn(sg, st, budget)
    with np.errstate(invalid="ignore"):
        return (bl > tier.factor) & (bs > tier.factor) & (lt >= max(min_events, 1))


# -- timelines --------------------------------------------------------------------------------


def burn_rate_series(slo: SLO, minutes_df: pd.DataFrame) -> pd.DataFrame:
    """Burn rate per minute (index ``minute``) for every window of the policy (columns ``1h``, ``5m`` ...).

    A window without events is NaN (a gap in a plotted line), never 0.
    """
    d = _dense(slo, minutes_df)
    ends = np.arange(1, d.n + 1)
    out = {}
    for w in slo.alerting.windows:
        g, t = d.window(ends, _minutes(w))
        out[format_duration(w)] = _burn(g, t, slo.error_budget)
    idx = pd.DatetimeIndex(
        np.arange(d.t0, d.t0 + d.n).astype("datetime64[m]").astype("datetime64[ns]"), name="minute"
    )
    return pd.DataFrame(out, index=idx)


def alert_series(slo: SLO, minutes_df: pd.DataFrame) -> pd.DataFrame:
    """Per minute, whether each active tier fires (columns ``page 1h/5m`` ...)."""
    d = _dense(slo, minutes_df)
    ends = np.arange(1, d.n + 1)
    out = {
        f"{t.severity} {t.label}": _tier_fires(d, t, slo.error_budget, slo.alerting.min_events, ends)
        for t in slo.alerting.active_tiers
    }
    idx = pd.DatetimeIndex(
        np.arange(d.t0, d.t0 + d.n).astype("datetime64[m]").astype("datetime64[ns]"), name="minute"
    )
    return pd.DataFrame(out, index=idx)


def budget_burndown(slo: SLO, minutes_df: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Error budget remaining over [start, end), minute by minute: columns minute, good, total, bad, consumed, remaining.

    Occurrences: the allowed bad events are (1 - objective) x the events of the whole span,
    where the minutes with data so far stand for the rest (exact once the span is over).
    Time slices: (1 - objective) x the number of slices in the span.
    """
    s_i, e_i = _dt_int(start), _dt_int(end)
    d = _dense(slo, minutes_df, start=s_i, end=e_i)
    bad = np.cumsum(d.total - d.good)
    units = _period_budget_units(slo, e_i - s_i)
    if units is None:
        covered = int(d.data.sum())
        per_minute = d.total.sum() / covered if covered else 0.0
        units = slo.error_budget * per_minute * (e_i - s_i)
    with np.errstate(divide="ignore", invalid="ignore"):
        consumed = np.where(units > 0, bad / units if units else 0.0, np.nan)
    minute = np.arange(d.t0, d.t0 + d.n).astype("datetime64[m]").astype("datetime64[ns]")
    return pd.DataFrame(
        {
            "minute": minute,
            "good": d.good,
            "total": d.total,
            "bad": bad,
            "consumed": consumed,
            "remaining": 1 - consumed,
        }
    )


# -- breaches ---------------------------------------------------------------------------------


def breach_id(slo_name: str, start: datetime) -> str:
    """Stable id: the same SLO and start give the same id on every evaluation (a tier upgrade keeps it)."""
    return hashlib.sha1(f"{slo_name}|{start.isoformat()}".encode()).hexdigest()[:12]


def breaches_from_minutes(
    slo: SLO, minutes_df: pd.DataFrame, *, merge_gap: timedelta = timedelta(0)
) -> list[Breach]:
    """Intervals during which any active tier fired; severity is the highest that fired in it."""
    d = _dense(slo, minutes_df)
    tiers = slo.alerting.active_tiers
    if d.n == 0 or not tiers:
        return []
    ends = np.arange(1, d.n + 1)  # evaluation at the end of each minute
    budget = slo.error_budget
    fires = []
    burns = []
    for t in tiers:
        f = _tier_fires(d, t, budget, slo.alerting.min_events, ends)
        lg, lt = d.window(ends, _minutes(t.long))
        fires.append(f)
        burns.append(np.where(f, _burn(lg, lt, budget), 0.0))
    fire_m = np.vstack(fires)
    burn_m = np.vstack(burns)
    anyf = fire_m.any(axis=0)
    if not anyf.any():
        return []
    edges = np.diff(np.concatenate([[0], anyf.astype(np.int8), [0]]))
    starts = list(np.flatnonzero(edges == 1))
    stops = list(np.flatnonzero(edges == -1))
    gap = _minutes(merge_gap) if merge_gap > timedelta(0) else 0
    runs: list[tuple[int, int]] = []
    for s, e in zip(starts, stops, strict=True):
        if runs and gap and s - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))
    period_m = _minutes(slo.window.nominal)
    units = _period_budget_units(slo, period_m)
    out = []
    for s, e in runs:
        fired = fire_m[:, s:e].any(axis=1)
        sev = (
            "page" if any(f and t.severity == "page" for f, t in zip(fired, tiers, strict=True)) else "ticket"
        )
        peak = float(np.nanmax(burn_m[:, s:e]))
        bad = float((d.total[s:e] - d.good[s:e]).sum())
        if units is None:
            lo = max(e - period_m, 0)
            covered = int(d.cd[e] - d.cd[lo])
            per_minute = (d.ct[e] - d.ct[lo]) / covered if covered else 0.0
            allowed = budget * per_minute * period_m
        else:
            allowed = units
        consumed = float(min(bad / allowed, 1.0)) if allowed > 0 else 1.0
        start = _to_dt(d.t0 + s)
        out.append(
            Breach(
                id=breach_id(slo.name, start),
                slo=slo.name,
                start=start,
                end=_to_dt(d.t0 + e),
                severity=sev,
                peak_burn_rate=peak,
                budget_consumed=consumed,
                windows=tuple(t.label for f, t in zip(fired, tiers, strict=True) if f),
            )
        )
    return out


def breaches_overlapping(breaches: Sequence[Breach], start: datetime, end: datetime) -> list[Breach]:
    return [b for b in breaches if b.start < end and b.end > start]

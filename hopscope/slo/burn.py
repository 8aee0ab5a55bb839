"""Error budgets, burn rates, alert states and breaches: pure math over a minute frame.

The input is a frame with columns ``minute`` (naive UTC), ``good`` and
``total`` — one row per minute that had data — or the same as :class:`MinuteArrays`
(a dense minute grid; the ``*_from_arrays`` functions). A minute without data is a
*gap*: it is reported, and never counted as good. Nothing here reads the store.

Definitions (Google SRE Workbook, "Alerting on SLOs"):

- error ratio over a window = (total - good) / total; burn rate = error ratio / (1 - objective);
- a tier fires when both its long and its short window burn faster than its factor
  (and the long window holds at least ``min_events`` events, and at least ``min_coverage`` x
  the short window's length of minutes with data: no firing while the windows warm up);
- budget consumed = bad events / allowed bad events in the period (time slices: bad slices /
  allowed bad slices of the whole period);
- time to exhaustion = budget remaining x period / current burn rate;
- a breach's budget consumed = its bad events / the error budget of one nominal period at the
  traffic of the period ending with it (not capped at 1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from hopscope.durations import format_duration
from hopscope.errors import HopscopeError
from hopscope.slo.model import SLO, AlertTier, Correction, excluded_minutes

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
    breaches: tuple[Breach, ...] = ()  # breaches overlapping [period_start, now), oldest first
    # excluded periods overlapping [period_start, now) and their minutes there: not in the SLI, the
    # budget or the alerts, and not counted as gaps
    corrections: tuple[Correction, ...] = ()
    excluded_minutes: int = 0


# -- frames -> dense arrays -------------------------------------------------------------------


def _minute_ints(values: pd.Series | np.ndarray) -> np.ndarray:
    arr = np.asarray(pd.to_datetime(values)).astype("datetime64[m]")
    return arr.astype(np.int64)


def _to_dt(m: int | np.integer[Any]) -> datetime:
    out: datetime = pd.Timestamp(np.datetime64(int(m), "m")).to_pydatetime()
    return out


def _dt_int(t: datetime) -> int:
    """Minute index of a naive-UTC datetime, rounded down."""
    ts = pd.Timestamp(t)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.value // 60_000_000_000)


@dataclass(frozen=True, slots=True)
class MinuteArrays:
    """Events on a dense minute grid: ``good[i]``/``total[i]`` of minute ``t0 + i`` (minutes since the epoch).

    The array form of a minute frame, for callers that keep per-minute series (the source's cache):
    a minute with ``total == 0`` had no data (a gap).
    """

    t0: int
    good: np.ndarray
    total: np.ndarray

    @property
    def n(self) -> int:
        return len(self.total)

    @property
    def start(self) -> datetime:
        return _to_dt(self.t0)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, start: int | None = None, end: int | None = None) -> MinuteArrays:
        """A minute frame (minute, good, total) on the grid [start, end) (default: its own minutes); validated."""
        df = _validate(df)
        mins = _minute_ints(df["minute"]) if len(df) else np.empty(0, np.int64)
        lo = start if start is not None else (int(mins.min()) if len(mins) else 0)
        hi = end if end is not None else (int(mins.max()) + 1 if len(mins) else lo)
        n = max(hi - lo, 0)
        good: np.ndarray = np.zeros(n)
        total: np.ndarray = np.zeros(n)
        if len(mins) and n:
            keep = (mins >= lo) & (mins < hi)
            idx = mins[keep] - lo
            good = np.bincount(idx, weights=df["good"].to_numpy(dtype=np.float64)[keep], minlength=n)[:n]
            total = np.bincount(idx, weights=df["total"].to_numpy(dtype=np.float64)[keep], minlength=n)[:n]
        return cls(lo, good, total)

    def window(self, start: int, end: int) -> MinuteArrays:
        """The grid [start, end), zeros where this one has no minutes."""
        n = max(end - start, 0)
        good, total = np.zeros(n), np.zeros(n)
        a, b = max(start, self.t0), min(end, self.t0 + self.n)
        if b > a:
            good[a - start : b - start] = self.good[a - self.t0 : b - self.t0]
            total[a - start : b - start] = self.total[a - self.t0 : b - self.t0]
        return MinuteArrays(start, good, total)

    def to_frame(self) -> pd.DataFrame:
        """Columns minute (naive UTC), good, total: one row per minute with data."""
        idx = np.flatnonzero(self.total > 0)
        minute = (idx + self.t0).astype("datetime64[m]").astype("datetime64[us]")
        return pd.DataFrame({"minute": minute, "good": self.good[idx], "total": self.total[idx]})


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
    step: int = 1  # minutes per data flag: 1, or the slice length under time-slice budgeting
    excluded: np.ndarray | None = None  # bool: the minute (or slice) lies in a correction (None: none does)
    memo: dict[tuple[str, int, int], np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def n(self) -> int:
        return len(self.good)

    def _ranged(self, name: str, first: int, minutes: int) -> np.ndarray:
        """Sum of column ``name`` (cg, ct, cd) over the ``minutes`` minutes ending at each grid index
        ``first .. n`` (exclusive ends), by slicing the cumulative sums; memoized per grid."""
        key = (name, first, minutes)
        hit = self.memo.get(key)
        if hit is not None:
            return hit
        c = getattr(self, name)
        n = self.n
        length = n + 1 - first
        pad = min(max(minutes - first, 0), length)  # ends before `minutes`: the window starts at 0
        starts = c[first + pad - minutes : n + 1 - minutes] if pad < length else c[:0]
        if pad:
            starts = np.concatenate([np.full(pad, c[0]), starts])
        hit = np.asarray(c[first : n + 1] - starts)
        self.memo[key] = hit
        return hit

    def burn(self, first: int, minutes: int, budget: float) -> np.ndarray:
        """Burn rate over ``minutes`` at each end ``first .. n`` (NaN where the window has no events)."""
        key = ("burn", first, minutes)
        hit = self.memo.get(key)
        if hit is None:
            hit = _burn(self._ranged("cg", first, minutes), self._ranged("ct", first, minutes), budget)
            self.memo[key] = hit
        return hit

    def window(self, end: np.ndarray | int, minutes: int) -> tuple[np.ndarray, np.ndarray]:
        """(good, total) summed over the ``minutes`` minutes ending at grid index ``end`` (exclusive)."""
        e = np.clip(np.asarray(end), 0, self.n)
        s = np.clip(e - minutes, 0, self.n)
        return self.cg[e] - self.cg[s], self.ct[e] - self.ct[s]

    def covered(self, end: np.ndarray | int, minutes: int) -> np.ndarray:
        """Minutes with data among the ``minutes`` minutes ending at grid index ``end`` (exclusive)."""
        e = np.clip(np.asarray(end), 0, self.n)
        s = np.clip(e - minutes, 0, self.n)
        return np.asarray((self.cd[e] - self.cd[s]) * self.step)


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


def combine_arrays(
    parts: Sequence[tuple[float, MinuteArrays, Sequence[Correction]]], t0: int, n: int
) -> MinuteArrays:
    """A composite SLI's events on the grid [t0, t0 + n): the sum of ``weight x`` each component's good
    and total (weighted occurrences), each component's excluded minutes (its corrections) left out."""
    good, total = np.zeros(max(n, 0)), np.zeros(max(n, 0))
    for weight, arr, corrections in parts:
        w = arr.window(t0, t0 + n)
        g, t = w.good, w.total
        if corrections:
            keep = ~excluded_minutes(corrections, t0, n)
            g, t = g * keep, t * keep
        good += weight * g
        total += weight * t
    return MinuteArrays(t0, good, total)


def without_excluded(slo: SLO, arr: MinuteArrays) -> MinuteArrays:
    """The arrays with the SLO's excluded minutes (its corrections) emptied: what its SLI counts."""
    if not slo.corrections:
        return arr
    keep = ~excluded_minutes(slo.corrections, arr.t0, arr.n)
    return MinuteArrays(arr.t0, arr.good * keep, arr.total * keep)


def _dense(slo: SLO, df: pd.DataFrame, start: int | None = None, end: int | None = None) -> _Dense:
    """Dense per-minute (or per-slice) events from a minute frame, after the SLO's budgeting method."""
    return _dense_arrays(slo, MinuteArrays.from_frame(df, start, end))


def _dense_arrays(slo: SLO, arr: MinuteArrays) -> _Dense:
    """Dense per-minute (or per-slice) events from minute arrays, after the SLO's budgeting method.

    Minutes inside the SLO's corrections count nothing (as if they had no events) and are flagged
    ``excluded`` (not gaps); under time slices a slice with an excluded minute is excluded whole.
    """
    lo, n = arr.t0, arr.n
    hi = lo + n
    good, total = arr.good, arr.total
    excluded = excluded_minutes(slo.corrections, lo, n) if slo.corrections else None
    if excluded is not None and excluded.any():
        good, total = np.where(excluded, 0.0, good), np.where(excluded, 0.0, total)
    else:
        excluded = None
    data = total > 0
    b = slo.budgeting
    k = 1
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
        s_excl = None
        if excluded is not None:
            s_excl = np.bincount(pos, weights=excluded.astype(float), minlength=nslots) > 0
            has &= ~s_excl
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
        if s_excl is not None:
            excluded = np.zeros(n, bool)
            excluded[last_minute[ok]] = s_excl[ok]
    cg = np.concatenate([[0.0], np.cumsum(good)])
    ct = np.concatenate([[0.0], np.cumsum(total)])
    cd = np.concatenate([[0], np.cumsum(data.astype(np.int64))])
    return _Dense(lo, good, total, data, cg, ct, cd, k, excluded=excluded)


def _minutes(td: timedelta) -> int:
    return max(int(round(td.total_seconds() / 60)), 1)


def _burn(good: np.ndarray, total: np.ndarray, budget: float) -> np.ndarray:
    """(total - good) / total / budget; NaN where total is 0."""
    good, total = np.asarray(good, dtype=np.float64), np.asarray(total, dtype=np.float64)
    out = np.full(total.shape, np.nan)
    np.divide(total - good, total, out=out, where=total > 0)
    out /= budget
    return out


def _opt(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _gaps(d: _Dense, lo: int, hi: int, slice_minutes: int = 1) -> list[tuple[datetime, datetime]]:
    """Runs of minutes (or slices) without data in grid range [lo, hi); excluded ones are no gaps."""
    lo, hi = max(lo, 0), min(hi, d.n)
    if hi <= lo:
        return []
    absent = ~d.data if d.excluded is None else ~d.data & ~d.excluded
    if slice_minutes > 1:
        # data flags sit on each slice's last minute: test those positions only
        pos = np.arange(lo, hi)
        is_last = ((pos + d.t0) % slice_minutes) == slice_minutes - 1
        missing = is_last & absent[lo:hi]
        out = []
        for p in pos[missing]:
            out.append((_to_dt(d.t0 + p - slice_minutes + 1), _to_dt(d.t0 + p + 1)))
        return _merge_runs(out)
    missing = absent[lo:hi]
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


def _period_budget_units(slo: SLO, period_minutes: int, excluded: int = 0) -> float | None:
    """Allowed bad units in a whole period for time-slice budgeting (None for occurrences); the
    ``excluded`` minutes of the period (corrections) hold no slices."""
    if slo.budgeting.method == "occurrences":
        return None
    k = _minutes(slo.budgeting.slice or timedelta(minutes=1))
    return slo.error_budget * (max(period_minutes - excluded, 0) // k)


def status_grid_start(slo: SLO, now: datetime, *, breaches: bool = True) -> datetime:
    """The earliest minute :func:`status_from_arrays` reads: the period and the longest alert window
    before ``now``; with ``breaches``, also one nominal period before the period's start (what a
    breach's budget share is measured against)."""
    p_start, _ = slo.window.period(now)
    now_i, ps_i = _dt_int(now), _dt_int(p_start)
    longest = max([_minutes(w) for w in slo.alerting.windows] + [now_i - ps_i])
    if not breaches:
        return _to_dt(now_i - longest)
    return _to_dt(min(now_i - longest, ps_i - _minutes(slo.window.nominal)))


def status_from_minutes(
    slo: SLO, minutes_df: pd.DataFrame, now: datetime, *, breaches: bool = True
) -> SloStatus:
    """The SLO's state at ``now``: SLI over its period, budget, burn rate per window, alert state,
    and (``breaches``) the breaches that overlap the period."""
    arr = MinuteArrays.from_frame(minutes_df, _dt_int(status_grid_start(slo, now)), _dt_int(now))
    return status_from_arrays(slo, arr, now, breaches=breaches)


def status_from_arrays(slo: SLO, arrays: MinuteArrays, now: datetime, *, breaches: bool = True) -> SloStatus:
    """:func:`status_from_minutes` on minute arrays (minutes outside them count as no data)."""
    p_start, p_end = slo.window.period(now)
    now_i, ps_i, pe_i = _dt_int(now), _dt_int(p_start), _dt_int(p_end)
    d = _dense_arrays(slo, arrays.window(_dt_int(status_grid_start(slo, now, breaches=breaches)), now_i))
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
    found = tuple(_breaches(slo, d, first_end=max(end - (now_i - ps_i), 1))) if breaches else ()
    corrections = tuple(c for c in slo.corrections if c.overlaps(p_start, now))
    excluded = int(excluded_minutes(corrections, ps_i, now_i - ps_i).sum())
    if total <= 0:
        return SloStatus(
            slo.name, slo.objective, None, good, total, None, None, burn_rates, "no data", None,
            tuple(gaps), p_start, p_end, now, (), gap_minutes, slo.notes, found, corrections, excluded,
        )  # fmt: skip
    sli = good / total
    in_period = int(excluded_minutes(slo.corrections, ps_i, pe_i - ps_i).sum())
    period_units = _period_budget_units(slo, pe_i - ps_i, in_period)
    if period_units is not None:
        consumed = (total - good) / period_units if period_units > 0 else float("inf")
    else:
        consumed = (1 - sli) / budget
    remaining = 1.0 - consumed
    firing = []
    for tier in slo.alerting.active_tiers:
        if _fires(d, slo, tier, end)[0]:
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
        tuple(gaps), p_start, p_end, now, tuple(firing), gap_minutes, slo.notes, found, corrections, excluded,
    )  # fmt: skip


def _current_burn(slo: SLO, burn_rates: dict[str, float | None]) -> float | None:
    """The 'current' burn rate: the shortest long window of the policy (1h in the SRE Workbook table)."""
    tiers = slo.alerting.tiers
    if not tiers:
        return burn_rates.get("1h")
    return burn_rates.get(format_duration(min(t.long for t in tiers)))


def _tier_fires(
    d: _Dense, tier: AlertTier, budget: float, min_events: int, first: int, min_coverage: float = 1.0
) -> np.ndarray:
    """Per evaluation end ``first .. d.n`` (grid indexes, exclusive): both windows burn faster than the
    factor, the long window holds at least ``min_events`` events and ``min_coverage`` x the short
    window's length of minutes with data."""
    long_m, short_m = _minutes(tier.long), _minutes(tier.short)
    bl = d.burn(first, long_m, budget)
    bs = d.burn(first, short_m, budget)
    lt = d._ranged("ct", first, long_m)
    warm = d._ranged("cd", first, long_m) * d.step >= min_coverage * short_m - 1e-9
    with np.errstate(invalid="ignore"):
        return (bl > tier.factor) & (bs > tier.factor) & (lt >= max(min_events, 1)) & warm


def _fires(d: _Dense, slo: SLO, tier: AlertTier, first: int) -> np.ndarray:
    a = slo.alerting
    return _tier_fires(d, tier, slo.error_budget, a.min_events, first, a.min_coverage)


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
    out = {f"{t.severity} {t.label}": _fires(d, slo, t, 1) for t in slo.alerting.active_tiers}
    idx = pd.DatetimeIndex(
        np.arange(d.t0, d.t0 + d.n).astype("datetime64[m]").astype("datetime64[ns]"), name="minute"
    )
    return pd.DataFrame(out, index=idx)


def budget_burndown(slo: SLO, minutes_df: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    """Error budget remaining over [start, end), minute by minute: columns minute, good, total, bad, consumed, remaining.

    Occurrences: the allowed bad events are (1 - objective) x the events of the span, so the last
    minute's ``consumed`` is the status's (1 - SLI) / (1 - objective) over the same span, data gaps
    included (minutes without data add no events; they are not assumed to have had traffic).
    Time slices: (1 - objective) x the number of slices in the span. Minutes inside the SLO's
    corrections add nothing (and hold no slices).
    """
    s_i, e_i = _dt_int(start), _dt_int(end)
    d = _dense(slo, minutes_df, start=s_i, end=e_i)
    bad = np.cumsum(d.total - d.good)
    units = _period_budget_units(slo, e_i - s_i, int(excluded_minutes(slo.corrections, s_i, e_i - s_i).sum()))
    if units is None:
        units = slo.error_budget * float(d.total.sum())
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
    """Intervals during which any active tier fired; severity is the highest that fired in it.

    A breach's ``budget_consumed`` is its bad events (bad slices) over the error budget of one
    nominal SLO period at the traffic of the period that ends with the breach (minutes with data
    stand for the gaps). It is not capped: 1.3 means the breach alone spent 1.3 periods' budgets.
    """
    return breaches_from_arrays(slo, MinuteArrays.from_frame(minutes_df), merge_gap=merge_gap)


def breaches_from_arrays(
    slo: SLO, arrays: MinuteArrays, *, merge_gap: timedelta = timedelta(0)
) -> list[Breach]:
    """:func:`breaches_from_minutes` on minute arrays."""
    return _breaches(slo, _dense_arrays(slo, arrays), merge_gap=merge_gap)


@dataclass(frozen=True, slots=True)
class BreachMemo:
    """An evaluation :func:`breaches_since` can continue from: the SLO, its dense grid, its breaches."""

    slo: SLO
    dense: _Dense
    breaches: tuple[Breach, ...]


def breaches_since(slo: SLO, arrays: MinuteArrays, prev: BreachMemo | None = None) -> BreachMemo:
    """:func:`breaches_from_arrays` (no merge gap), re-evaluated only from the first minute where the
    grid differs from ``prev``'s (a live store: the newest minutes).

    The alert condition at the end of a minute depends on that minute and earlier ones only, so where
    the grids agree up to minute ``c`` the conditions up to ``c`` are the same; the evaluation restarts
    at a minute before ``c`` that does not fire (see :func:`_breaches`), and every earlier breach is
    kept as it was. The result is the same as a full evaluation.
    """
    d = _dense_arrays(slo, arrays)
    old = prev.dense if prev is not None else None
    if (
        prev is None
        or old is None
        or old.t0 != d.t0
        or old.step != d.step
        or d.n < old.n
        or not (prev.slo is slo or prev.slo == slo)
    ):
        return BreachMemo(slo, replace(d, memo={}), tuple(_breaches(slo, d)))
    m = old.n
    diff = (d.good[:m] != old.good) | (d.total[:m] != old.total) | (d.data[:m] != old.data)
    c = int(np.argmax(diff)) if diff.any() else m
    if c == m == d.n:
        return BreachMemo(slo, old, prev.breaches)
    first, found = _breaches_from(slo, d, max(c, 1))
    # minute first - 1 does not fire (unless first == 1): each earlier breach ends before it
    kept = tuple(b for b in prev.breaches if b.start < _to_dt(d.t0 + first - 1)) if first > 1 else ()
    return BreachMemo(slo, replace(d, memo={}), kept + tuple(found))


def _breaches(
    slo: SLO, d: _Dense, *, first_end: int = 1, merge_gap: timedelta = timedelta(0)
) -> list[Breach]:
    """Breaches on a dense grid whose minutes end at grid index ``first_end`` or later (evaluation at the
    end of each minute); a breach already firing there is followed back to its true start."""
    return _breaches_from(slo, d, first_end, merge_gap)[1]


def _breaches_from(
    slo: SLO, d: _Dense, first_end: int = 1, merge_gap: timedelta = timedelta(0)
) -> tuple[int, list[Breach]]:
    """(first, breaches): :func:`_breaches`, and the first evaluation end it looked at: the alert
    condition does not hold there, unless it is 1."""
    tiers = slo.alerting.active_tiers
    if d.n == 0 or not tiers:
        return 1, []
    budget = slo.error_budget
    first = min(max(first_end, 1), d.n)
    while True:
        fire_m = np.vstack([_fires(d, slo, t, first) for t in tiers])
        if first == 1 or not fire_m[:, 0].any():
            break
        first = max(1, first - 1440)  # firing at the first end: its start lies earlier
    anyf = fire_m.any(axis=0)
    if not anyf.any():
        return first, []
    burn_m = np.vstack(
        [
            np.where(f, d.burn(first, _minutes(t.long), budget), 0.0)
            for f, t in zip(fire_m, tiers, strict=True)
        ]
    )
    edges = np.diff(np.concatenate([[0], anyf.astype(np.int8), [0]]))
    starts = [int(x) for x in np.flatnonzero(edges == 1)]
    stops = [int(x) for x in np.flatnonzero(edges == -1)]
    gap = _minutes(merge_gap) if merge_gap > timedelta(0) else 0
    runs: list[tuple[int, int]] = []
    for s, e in zip(starts, stops, strict=True):
        if runs and gap and s - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))
    period_m = _minutes(slo.window.nominal)
    units = _period_budget_units(slo, period_m)
    off = first - 1  # grid index of the minute evaluated at the first end
    out = []
    for s, e in runs:
        fired = [bool(x) for x in np.asarray(fire_m[:, s:e].any(axis=1))]
        sev = (
            "page" if any(f and t.severity == "page" for f, t in zip(fired, tiers, strict=True)) else "ticket"
        )
        peak = float(np.nanmax(burn_m[:, s:e]))
        gs, ge = s + off, e + off  # grid minutes [gs, ge)
        bad = float((d.total[gs:ge] - d.good[gs:ge]).sum())
        if units is None:
            lo = max(ge - period_m, 0)
            covered = int(d.cd[ge] - d.cd[lo])
            per_minute = (d.ct[ge] - d.ct[lo]) / covered if covered else 0.0
            allowed = budget * per_minute * period_m
        else:
            allowed = units
        consumed = float(bad / allowed) if allowed > 0 else 1.0
        start = _to_dt(d.t0 + gs)
        out.append(
            Breach(
                id=breach_id(slo.name, start),
                slo=slo.name,
                start=start,
                end=_to_dt(d.t0 + ge),
                severity=sev,
                peak_burn_rate=peak,
                budget_consumed=consumed,
                windows=tuple(t.label for f, t in zip(fired, tiers, strict=True) if f),
            )
        )
    return first, out


def breaches_overlapping(breaches: Sequence[Breach], start: datetime, end: datetime) -> list[Breach]:
    return [b for b in breaches if b.start < end and b.end > start]

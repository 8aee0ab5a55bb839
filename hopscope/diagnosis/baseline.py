"""The baseline: the same-length window just before the incident, and the same hours on earlier days.

Candidates that are empty, thin, or themselves degraded (burning the SLO's budget faster than it
allows and 1.5x the other candidates, or far slower than them) are left out, each with its
reason; too little left is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from hopscope.diagnosis.hops import E2E, REQUESTS
from hopscope.diagnosis.model import Baseline, BaselineWindow, Target
from hopscope.model import TimeRange

MIN_WINDOW_REQUESTS = 20
MIN_BASELINE_REQUESTS = 200
SLOW_FACTOR = 1.5  # a candidate this much slower than the candidates' median is contaminated
# a degraded candidate is still used (with a note) when nothing better exists and the incident's bad
# fraction is at least this many times its own
BETTER_FACTOR = 2.0
MAX_SHIFTS = 3  # times the previous window moves back before an onset that began inside it


BURN_BUCKET = timedelta(minutes=5)
MIN_BURNING = timedelta(minutes=15)


def burning_span(
    minutes: pd.DataFrame, objective: float, start: datetime, end: datetime, bucket: timedelta = BURN_BUCKET
) -> tuple[datetime, datetime] | None:
    """The part of a breach [start, end) that burned error budget: from the first to the end of the last
    ``bucket`` whose bad fraction exceeds 1 - objective (minute frame: minute, good, total).

    A breach lasts as long as an alert condition holds: a 3d/6h tier keeps one open for hours after the
    SLI recovered, and diagnosing all of it would dilute the change with healthy minutes. None when
    nothing is left to trim (a slow burn, or no data): diagnose the whole breach. At least MIN_BURNING.
    """
    if minutes.empty:
        return None
    t = pd.to_datetime(minutes["minute"])
    keep = ((t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))).to_numpy()
    if not keep.any():
        return None
    k = ((t[keep] - pd.Timestamp(start)) // pd.Timedelta(bucket)).to_numpy()
    sums = minutes.loc[keep, ["good", "total"]].groupby(k).sum()
    sums = sums[sums["total"] > 0]
    burning = sums.index[(sums["total"] - sums["good"]) / sums["total"] > 1 - objective]
    if len(burning) == 0:
        return None
    lo = start + bucket * int(burning.min())
    hi = min(end, start + bucket * (int(burning.max()) + 1))
    hi = min(end, max(hi, lo + MIN_BURNING))
    return None if (lo, hi) == (start, end) else (lo, hi)


def candidate_windows(
    start: datetime, end: datetime, days: int = 7, *, before: datetime | None = None
) -> list[tuple[TimeRange, str]]:
    """The previous same-length window, then the same hours on each of ``days`` earlier days.

    ``before``: the previous window ends there instead of at ``start`` (the SLI's onset, or the
    breach's start when the diagnosed window is a later part of it)."""
    length = end - start
    prev_end = min(start, before) if before is not None else start
    prev = TimeRange(prev_end - length, prev_end)
    out = [(prev, "previous")]
    for k in range(1, days + 1):
        w = TimeRange(start - timedelta(days=k), end - timedelta(days=k))
        if w.end <= prev.start or w.start >= start:  # no overlap with the previous window, onset or incident
            out.append((w, f"same_hours_-{k}d"))
    return out


def onset(
    bad: pd.DataFrame, previous: TimeRange, target: Target, step_s: int, prev_id: int = 1
) -> datetime | None:
    """Where the SLI's rise began, when it began inside the previous window: the start of the trailing
    run of its buckets whose bad fraction rose (over what the objective allows and SLOW_FACTOR x the
    usual bucket of all candidate windows). None when its last bucket is not one of them.

    ``bad``: window, ts (bucket), total, bad, as for choose_baseline; window ``prev_id`` is ``previous``.
    """
    if bad.empty or (target.threshold_ms is None and target.measure != "errors"):
        return None
    win = bad["window"].to_numpy()
    total = bad["total"].to_numpy(dtype=float)
    with np.errstate(all="ignore"):
        frac = np.where(total > 0, bad["bad"].to_numpy(dtype=float) / total, np.nan)
    cand = (win >= 1) & np.isfinite(frac)
    if not cand.any():
        return None
    usual = float(np.median(frac[cand]))
    mine = (win == prev_id) & (total > 0)
    order = np.argsort(bad["ts"].to_numpy()[mine], kind="stable")
    ts = bad["ts"].to_numpy()[mine][order]
    f = frac[mine][order]
    risen = np.isfinite(f) & (f > 1 - target.objective) & (f > SLOW_FACTOR * usual)
    run = 0
    while run < len(risen) and risen[len(risen) - 1 - run]:
        run += 1
    if run == 0:
        return None
    return previous.start + timedelta(seconds=int(ts[len(ts) - run]) * step_s)


def choose_baseline(
    candidates: Sequence[tuple[TimeRange, str]],
    ids: Sequence[int],
    wide: pd.DataFrame,
    bad: pd.DataFrame,
    target: Target,
) -> tuple[Baseline, list[int]]:
    """Keep the candidate windows fit to compare with; say why each other one was left out.

    ``bad``: window, total, bad per bucket (requests over the threshold, or errors for an
    availability SLI; NaN where not counted exactly).
    """
    judged = target.threshold_ms is not None or target.measure == "errors"
    # numpy columns once (the same sums as pandas' Series.sum of the same rows)
    empty = wide.empty
    win = wide.index.get_level_values("window").to_numpy() if not empty else np.zeros(0, dtype=int)
    req = wide[REQUESTS].to_numpy(dtype=float) if not empty else np.zeros(0)
    e2e = wide[E2E].to_numpy(dtype=float) if not empty else np.zeros(0)
    has_bad = judged and not bad.empty
    b_win = bad["window"].to_numpy() if has_bad else np.zeros(0, dtype=int)
    b_total = bad["total"].to_numpy(dtype=float) if has_bad else np.zeros(0)
    b_bad = bad["bad"].to_numpy(dtype=float) if has_bad else np.zeros(0)
    what = (
        "errors"
        if target.measure == "errors"
        else f"requests over {target.threshold_ms:g} ms"
        if judged
        else ""
    )
    stats = []
    for (w, kind), i in zip(candidates, ids, strict=True):
        m = win == i
        n = float(np.nansum(req[m])) if m.any() else 0.0
        mean = float(np.nansum(e2e[m])) / n if n else float("nan")
        bad_frac = None
        if has_bad:
            bm = b_win == i
            tot = float(np.nansum(b_total[bm]))
            if tot > 0 and not np.isnan(b_bad[bm]).any():
                bad_frac = float(np.nansum(b_bad[bm])) / tot
        stats.append((w, kind, i, int(n), mean, bad_frac))
    ok_means = [s[4] for s in stats if s[3] >= MIN_WINDOW_REQUESTS]
    median = float(np.median(ok_means)) if ok_means else float("nan")
    windows: list[BaselineWindow] = []
    used_ids = []
    degraded: list[tuple[float, int]] = []  # (bad fraction, position) of candidates left out as degraded
    for w, kind, i, n, mean, bad_frac in stats:
        # over the objective AND well above the other candidates: a system that always runs over
        # its objective still has a normal state to compare with
        others = [s[5] for s in stats if s[2] != i and s[3] >= MIN_WINDOW_REQUESTS and s[5] is not None]
        usual = float(np.median(others)) if others else 0.0
        reason = ""
        if n == 0:
            reason = "no requests"
        elif n < MIN_WINDOW_REQUESTS:
            reason = f"only {n} requests"
        elif bad_frac is not None and bad_frac > 1 - target.objective and bad_frac > SLOW_FACTOR * usual:
            reason = f"degraded itself: {bad_frac:.2%} {what}"
            degraded.append((bad_frac, len(windows)))
        elif target.measure == "latency" and len(ok_means) >= 3 and mean > SLOW_FACTOR * median:
            reason = f"degraded itself: mean {mean:.1f} ms vs {median:.1f} ms in the other windows"
        windows.append(BaselineWindow(w.start, w.end, kind, n, used=not reason, reason=reason))
        if not reason:
            used_ids.append(i)
    note_degraded = ""
    inc_bad = _bad_fraction(b_win, b_total, b_bad, 0) if has_bad else None
    if not used_ids and degraded and inc_bad is not None:
        # Every candidate is worse than the objective: the best one is still a comparison when the
        # incident is far worse (a fault that began before the page; a system always over its objective).
        frac, pos = min(degraded)
        if frac <= inc_bad / BETTER_FACTOR:
            bw = windows[pos]
            windows[pos] = BaselineWindow(bw.start, bw.end, bw.kind, bw.requests, used=True)
            used_ids.append(stats[pos][2])
            note_degraded = f"baseline itself degraded: {frac:.2%} {what} vs {inc_bad:.2%} in the incident; "
    total = sum(bw.requests for bw in windows if bw.used)
    sufficient = total >= MIN_BASELINE_REQUESTS
    if not used_ids:
        note = "no baseline window had usable data: nothing to compare the incident with"
    elif not sufficient:
        note = (
            f"too little baseline data: {total} requests in the usable windows (need {MIN_BASELINE_REQUESTS})"
        )
    else:
        used = [bw for bw in windows if bw.used]
        spans = ", ".join(f"{bw.kind} {bw.start:%m-%d %H:%M}-{bw.end:%H:%M}" for bw in used)
        note = f"{note_degraded}{len(used_ids)} window(s), {total} requests: {spans} UTC"
    return Baseline(tuple(windows), sufficient, note), used_ids


def _bad_fraction(b_win: np.ndarray, b_total: np.ndarray, b_bad: np.ndarray, window: int) -> float | None:
    m = b_win == window
    tot = float(np.nansum(b_total[m]))
    if tot <= 0 or np.isnan(b_bad[m]).any():
        return None
    return float(np.nansum(b_bad[m])) / tot

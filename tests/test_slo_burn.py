"""SLO math on hand-built minute frames: SRE Workbook numbers, calendar DST month, time slices, zero traffic."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from hopscope.slo import (
    SLI,
    SLO,
    Budgeting,
    MinuteFrameError,
    Window,
    breaches_from_minutes,
    budget_burndown,
    burn_rate_series,
    default_window_tables,
    status_from_minutes,
    with_policy,
)

T0 = datetime(2025, 1, 1)


def make_slo(
    objective: float = 0.999, window: Window | None = None, policy: str = "sre-workbook", **kw: object
) -> SLO:
    window = window or Window("rolling", timedelta(days=30))
    table = default_window_tables()[policy]
    base = SLO("t", "", objective, window, SLI("availability", service="api-gateway"), **kw)  # type: ignore[arg-type]
    return with_policy(base, table)


def frame(
    n_minutes: int,
    rate: float = 1000.0,
    start: datetime = T0,
    bad: dict[tuple[int, int], float] | None = None,
) -> pd.DataFrame:
    """n minutes of `rate` events; bad maps (first, last+1) minute ranges to an error ratio."""
    total = np.full(n_minutes, rate)
    good = total.copy()
    for (a, b), ratio in (bad or {}).items():
        good[a:b] = rate * (1 - ratio)
    return pd.DataFrame(
        {"minute": pd.date_range(start, periods=n_minutes, freq="min"), "good": good, "total": total}
    )


DAYS30 = 30 * 1440


@pytest.mark.parametrize(
    ("long_minutes", "factor", "consumed"),
    [
        # SRE Workbook table 5-8: burning at the factor for the long window consumes this share of a 30d budget
        (60, 14.4, 0.02),
        (360, 6.0, 0.05),
        (3 * 1440, 1.0, 0.10),
    ],
)
def test_sre_workbook_budget_consumed_per_window_and_factor(
    long_minutes: int, factor: float, consumed: float
) -> None:
    slo = make_slo(0.999)
    ratio = factor * 0.001
    df = frame(DAYS30, bad={(DAYS30 - long_minutes, DAYS30): ratio})
    st = status_from_minutes(slo, df, T0 + timedelta(days=30))
    assert st.budget_consumed == pytest.approx(consumed)
    assert st.budget_remaining == pytest.approx(1 - consumed)
    label = {60: "1h", 360: "6h", 4320: "3d"}[long_minutes]
    assert st.burn_rates[label] == pytest.approx(factor)
    assert st.sli == pytest.approx(1 - consumed * 0.001)


@pytest.mark.parametrize(
    ("ratio_x_budget", "expected_state", "expected_firing"),
    [
        # 6h at 15x: both page tiers, and the 3d window burns 15 x 6/72 = 1.25x > 1: the ticket too
        (15.0, "page", ("page 1h/5m", "page 6h/30m", "ticket 3d/6h")),
        (7.0, "page", ("page 6h/30m",)),  # above 6, below 14.4; 3d: 7 x 6/72 = 0.58x
        (2.0, "ok", ()),  # the 3d ticket tier needs 3d at >1x; 6h of 2x over 3d is 0.17x
        (0.5, "ok", ()),
    ],
)
def test_alert_fires_when_both_windows_exceed_the_factor(
    ratio_x_budget: float, expected_state: str, expected_firing: tuple[str, ...]
) -> None:
    slo = make_slo(0.999)
    df = frame(DAYS30, bad={(DAYS30 - 360, DAYS30): ratio_x_budget * 0.001})
    st = status_from_minutes(slo, df, T0 + timedelta(days=30))
    assert st.alert_state == expected_state
    assert st.firing == expected_firing


def test_short_window_resets_the_page_once_the_burst_is_over() -> None:
    slo = make_slo(0.999)
    # 30 minutes at 100% errors, then 10 clean minutes: the 1h window still burns, the 5m one no longer does
    df = frame(DAYS30, bad={(DAYS30 - 40, DAYS30 - 10): 1.0})
    st = status_from_minutes(slo, df, T0 + timedelta(days=30))
    assert st.burn_rates["1h"] == pytest.approx(500.0)
    assert st.burn_rates["5m"] == pytest.approx(0.0)
    assert "page 1h/5m" not in st.firing


def test_zero_traffic_gives_no_data_never_nan() -> None:
    slo = make_slo()
    empty = pd.DataFrame({"minute": pd.Series([], dtype="datetime64[ns]"), "good": [], "total": []})
    st = status_from_minutes(slo, empty, T0)
    assert st.alert_state == "no data"
    assert st.sli is None and st.budget_remaining is None and st.budget_consumed is None
    assert all(v is None for v in st.burn_rates.values())
    assert st.time_to_exhaustion is None
    assert st.gaps == ((T0 - timedelta(days=30), T0),)
    assert breaches_from_minutes(slo, empty) == []


def test_a_quiet_window_has_no_burn_rate_and_the_gap_is_reported() -> None:
    slo = make_slo()
    df = frame(DAYS30 - 120)  # traffic stops two hours before now
    st = status_from_minutes(slo, df, T0 + timedelta(days=30))
    assert st.burn_rates["5m"] is None and st.burn_rates["1h"] is None
    assert st.burn_rates["6h"] == pytest.approx(0.0)
    assert st.gaps == ((T0 + timedelta(days=30) - timedelta(hours=2), T0 + timedelta(days=30)),)
    assert st.gap_minutes == 120
    assert st.sli == 1.0 and st.total == (DAYS30 - 120) * 1000, "gap minutes are not counted as good events"


def test_minimum_events_guard_stops_pages_at_low_traffic() -> None:
    slo = make_slo()
    # 1 request a minute, the last 10 fail: burn 1000x on 5m and ~167x on 1h
    df = frame(DAYS30, rate=1.0, bad={(DAYS30 - 10, DAYS30): 1.0})
    now = T0 + timedelta(days=30)
    assert status_from_minutes(slo, df, now).alert_state == "page"
    guarded = replace(slo, alerting=replace(slo.alerting, min_events=1000))
    st = status_from_minutes(guarded, df, now)
    # the page tiers' long windows hold 60 and 360 events < 1000; the 3d ticket window holds 4,320
    assert st.firing == ("ticket 3d/6h",) and st.burn_rates["1h"] == pytest.approx(10 / 60 / 0.001)


def test_time_to_exhaustion_is_remaining_budget_over_current_burn() -> None:
    slo = make_slo(0.999)
    df = frame(DAYS30, bad={(DAYS30 - 60, DAYS30): 0.0144})  # 1h at 14.4x: 2% consumed, 98% left
    st = status_from_minutes(slo, df, T0 + timedelta(days=30))
    assert st.time_to_exhaustion == pytest.approx(timedelta(days=30) * 0.98 / 14.4, abs=timedelta(seconds=1))


def test_calendar_month_across_dst_budgets_743_hours_of_time_slices() -> None:
    # March 2025, New York: 2025-03-01 05:00 UTC .. 2025-04-01 04:00 UTC = 743 h = 44,580 one-minute slices
    slo = make_slo(
        0.999,
        window=Window("calendar", None, "month", "America/New_York"),
        budgeting=Budgeting("timeslices", timedelta(minutes=1), 0.95),
    )
    start = datetime(2025, 3, 1, 5)
    n = 743 * 60
    # ten slices below the slice objective (90% good), eleven just at it (95%: good)
    df = frame(n, rate=100, start=start, bad={(1000, 1010): 0.10, (2000, 2011): 0.05})
    st = status_from_minutes(slo, df, datetime(2025, 4, 1, 3, 59))  # the last minute of March in New York
    assert (st.period_start, st.period_end) == (start, datetime(2025, 4, 1, 4))
    assert st.total == n - 1 and st.good == n - 1 - 10
    assert st.budget_consumed == pytest.approx(10 / (0.001 * 44580))


def test_calendar_month_budget_counts_the_whole_month_while_it_runs() -> None:
    slo = make_slo(
        0.99,
        window=Window("calendar", None, "month", "America/New_York"),
        budgeting=Budgeting("timeslices", timedelta(minutes=1), 0.99),
    )
    start = datetime(2025, 3, 1, 5)
    df = frame(1440, rate=10, start=start, bad={(0, 100): 0.5})  # first day: 100 bad slices
    st = status_from_minutes(slo, df, start + timedelta(days=1))
    assert st.budget_consumed == pytest.approx(100 / (0.01 * 44580))
    assert st.sli == pytest.approx(1 - 100 / 1440)


@pytest.mark.parametrize(
    ("method", "slice_objective", "good_units", "total_units"),
    [
        # 5-minute slices of 100 req/min; slice 0: 4% bad (good at 95%), slice 1: 6% bad (bad), slice 2: no traffic
        ("timeslices", 0.95, 2, 3),
        # ratio time slices: the mean of the slices' ratios
        ("ratio_timeslices", None, 0.96 + 0.94 + 1.0, 3),
    ],
)
def test_time_slice_budgeting(
    method: str, slice_objective: float | None, good_units: float, total_units: int
) -> None:
    slo = make_slo(
        0.9,
        window=Window("rolling", timedelta(minutes=25)),
        budgeting=Budgeting(method, timedelta(minutes=5), slice_objective),
    )
    rows = []
    for m in range(25):
        if 10 <= m < 15:
            continue  # slice 2: no traffic
        bad = 4 if m < 5 else (6 if m < 10 else 0)
        rows.append((T0 + timedelta(minutes=m), 100 - bad, 100))
    df = pd.DataFrame(rows, columns=["minute", "good", "total"])
    st = status_from_minutes(slo, df, T0 + timedelta(minutes=25))
    assert st.total == total_units + 1  # slices 0, 1, 3, 4 have data; slice 2 is a gap
    assert st.good == pytest.approx(good_units + 1)
    assert st.gaps == ((T0 + timedelta(minutes=10), T0 + timedelta(minutes=15)),)
    five_slices_budget = 0.1 * 5
    assert st.budget_consumed == pytest.approx((st.total - st.good) / five_slices_budget)


def test_breaches_are_intervals_with_severity_peak_and_budget() -> None:
    slo = make_slo(0.999)
    n = 10 * 1440
    df = frame(n, bad={(5000, 5060): 0.2})  # one hour at 200x
    (b,) = breaches_from_minutes(slo, df)
    assert b.severity == "page" and b.slo == "t"
    # minute 5000 alone: 5m window = 0.2/5/0.001 = 40x, 1h window = 0.2/60/0.001 = 3.3x: not yet;
    # the 1h window passes 14.4x after 5 bad minutes (5 x 0.2 / 60 / 0.001 = 16.7x)
    assert b.start == T0 + timedelta(minutes=5004)
    assert b.peak_burn_rate == pytest.approx(200.0)
    assert "1h/5m" in b.windows
    minutes_bad = 5060 - 5004
    assert b.budget_consumed == pytest.approx(minutes_bad * 200 / (0.001 * 1000 * DAYS30))


def test_breach_start_is_the_first_minute_both_windows_exceed() -> None:
    slo = make_slo(0.999)
    df = frame(2 * 1440, bad={(1440, 1500): 1.0})
    (b,) = breaches_from_minutes(slo, df)
    # minute 1440 alone: 5m window = 1/5 x 1000 = 200x, 1h window = 1/60 x 1000 = 16.7x > 14.4: fires at once
    assert b.start == T0 + timedelta(minutes=1440)


def test_breaches_are_stable_across_evaluations_and_growing_history() -> None:
    slo = make_slo(0.999)
    df = frame(6 * 1440, bad={(3000, 3030): 0.5, (7000, 7020): 0.5})
    first = breaches_from_minutes(slo, df)
    again = breaches_from_minutes(slo, df.copy())
    assert first == again and len(first) == 2
    assert len({b.id for b in first}) == 2
    longer = pd.concat([df, frame(1440, start=T0 + timedelta(days=6))], ignore_index=True)
    assert [b.id for b in breaches_from_minutes(slo, longer)][:2] == [b.id for b in first]


def test_high_traffic_at_a_normal_error_ratio_does_not_breach() -> None:
    slo = make_slo(0.999)
    df = frame(3 * 1440, bad={(0, 3 * 1440): 0.0005})
    df.loc[1000:1360, ["good", "total"]] *= 3  # x3 traffic for 6h, same error ratio
    assert breaches_from_minutes(slo, df) == []


def test_burn_rate_series_has_one_column_per_window_and_nan_without_traffic() -> None:
    slo = make_slo(0.999)
    df = frame(120, bad={(60, 120): 0.01})
    series = burn_rate_series(slo, df)
    assert list(series.columns) == ["5m", "30m", "1h", "6h", "3d"]
    assert series["5m"].iloc[-1] == pytest.approx(10.0)
    assert series["1h"].iloc[-1] == pytest.approx(10.0)
    assert series["1h"].iloc[59] == pytest.approx(0.0)
    gap = frame(10).iloc[[0, 1, 2]]
    gap = pd.concat([gap, frame(1, start=T0 + timedelta(minutes=9))])
    s2 = burn_rate_series(slo, gap)
    assert math.isnan(s2["5m"].iloc[8]), "a 5m window with no events has no burn rate"


def test_budget_burndown_reaches_the_consumed_share() -> None:
    slo = make_slo(0.99)
    df = frame(1440, rate=100, bad={(100, 110): 1.0})
    bd = budget_burndown(slo, df, T0, T0 + timedelta(days=1))
    assert bd["remaining"].iloc[0] == pytest.approx(1.0)
    assert bd["consumed"].iloc[-1] == pytest.approx(1000 / (0.01 * 144000))
    assert bd["remaining"].is_monotonic_decreasing


@pytest.mark.parametrize(
    ("good", "total", "message"),
    [
        (5, 4, "is not 0 <= good <= total"),
        (-1, 4, "is not 0 <= good <= total"),
        (float("nan"), 4, "is not 0 <= good <= total"),
    ],
)
def test_malformed_minute_frames_are_refused_clearly(good: float, total: float, message: str) -> None:
    df = pd.DataFrame({"minute": [T0], "good": [good], "total": [total]})
    with pytest.raises(MinuteFrameError, match=message):
        status_from_minutes(make_slo(), df, T0 + timedelta(minutes=1))
    with pytest.raises(MinuteFrameError, match="missing column"):
        status_from_minutes(make_slo(), df.drop(columns="good"), T0)


def test_disabled_tiers_never_fire() -> None:
    slo = make_slo(0.999)
    slo = replace(slo, alerting=replace(slo.alerting, disabled=("page",)))
    df = frame(DAYS30, bad={(DAYS30 - 60, DAYS30): 1.0})
    st = status_from_minutes(slo, df, T0 + timedelta(days=30))
    assert st.alert_state == "ticket" and st.firing == ("ticket 3d/6h",)
    enabled = status_from_minutes(make_slo(0.999), df, T0 + timedelta(days=30))
    assert enabled.alert_state == "page"  # the same burn pages where the tier is not disabled


def _gap_frame() -> pd.DataFrame:
    """A clean day, four days without data, then a day whose first minute burns 1.15x."""
    back = T0 + timedelta(days=5)
    return pd.concat([frame(1440), frame(1440, start=back, bad={(0, 1): 0.00115})], ignore_index=True)


@pytest.mark.parametrize(
    ("case", "df", "min_coverage", "expected"),
    [
        # One minute of data at 1.15x: with the guard off the 3d/6h pair (both windows = that minute)
        # fires at factor 1; with it on, the 3d window needs 6h of minutes with data first.
        ("first minute of data burns 1.15x", frame(1440, bad={(0, 1): 0.00115}), 1.0, []),
        ("first minute of data burns 1.15x", frame(1440, bad={(0, 1): 0.00115}), 0.0, [(0, 1, "ticket")]),
        # The same after a collection gap longer than the 3d window: the window holds one minute again.
        ("first minute after a 4-day gap", _gap_frame(), 1.0, []),
        ("first minute after a 4-day gap", _gap_frame(), 0.0, [(5 * 1440, 5 * 1440 + 1, "ticket")]),
        # 100% errors from the first minute: the 1h/5m page waits for 5 minutes of data (fires at the
        # end of minute 4), holds until the 30m window of the 6h/30m pair drops the bad hour
        # (minute 89); the 3d/6h ticket may fire only once 6h of data exist (minute 359): the 6h
        # window then holds 60 of 360 minutes at 1000x = 167x > 1, until the bad hour leaves it.
        (
            "an outage from the first minute",
            frame(1440, bad={(0, 60): 1.0}),
            1.0,
            [(4, 89, "page"), (359, 419, "ticket")],
        ),
        ("an outage from the first minute", frame(1440, bad={(0, 60): 1.0}), 0.0, [(0, 419, "page")]),
        # Half coverage: the 1h/5m pair needs 2.5 minutes of data, so it fires at the end of minute 2.
        (
            "an outage from the first minute",
            frame(1440, bad={(0, 60): 1.0}),
            0.5,
            [(2, 89, "page"), (179, 419, "ticket")],
        ),
    ],
)
def test_tiers_do_not_fire_until_their_long_window_holds_the_short_windows_length_of_data(
    case: str, df: pd.DataFrame, min_coverage: float, expected: list[tuple[int, int, str]]
) -> None:
    slo = make_slo(0.999)
    slo = replace(slo, alerting=replace(slo.alerting, min_coverage=min_coverage))
    got = [(b.start, b.end, b.severity) for b in breaches_from_minutes(slo, df)]
    t0 = df["minute"].iloc[0]
    assert got == [(t0 + timedelta(minutes=a), t0 + timedelta(minutes=b), s) for a, b, s in expected], case


def test_time_slices_count_their_length_towards_window_coverage() -> None:
    # 5-minute slices: the first slice (minutes 0-4) is all errors; its event lands on its last minute.
    # One slice of data = 5 minutes: enough for the 1h/5m pair, not for 6h/30m (needs 30) or 3d/6h.
    slo = make_slo(0.999, budgeting=Budgeting("timeslices", timedelta(minutes=5), 0.99))
    st = status_from_minutes(slo, frame(5, bad={(0, 5): 1.0}), T0 + timedelta(minutes=5))
    assert st.firing == ("page 1h/5m",)
    st = status_from_minutes(slo, frame(30, bad={(0, 30): 1.0}), T0 + timedelta(minutes=30))
    assert st.firing == ("page 1h/5m", "page 6h/30m")

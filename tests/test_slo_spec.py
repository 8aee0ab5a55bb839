"""SLO specs: validation messages name file, path and bad value; bad files refused one by one; window tables."""

from __future__ import annotations

import os
import shutil
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hopscope.errors import SpecError
from hopscope.slo import load_slos, load_window_tables, parse_duration, slo_thresholds_ms
from hopscope.slo.loader import parse_window_table
from hopscope.slo.model import Window

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "slo_rules"

GOOD = """\
apiVersion: hopscope/v1
kind: SLO
metadata: {name: NAME}
spec:
  objective: 0.99
  window: 28d
  sli: {kind: latency, service: api-gateway, route: /recommend, thresholdMs: 200}
"""


def _rules(tmp_path: Path, files: dict[str, str]) -> Path:
    shutil.copytree(RULES / "alert_windows", tmp_path / "alert_windows")
    for name, text in files.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def test_shipped_rules_load_without_errors_and_cover_the_demo_system() -> None:
    slos, errors = load_slos(RULES)
    assert errors == []
    by_name = {s.name: s for s in slos}
    lat = by_name["recommend-latency"]
    assert (lat.objective, lat.sli.threshold_ms, lat.sli.route, lat.sli.edge) == (
        0.99,
        200,
        "/recommend",
        ("", "api-gateway"),
    )
    assert sum(lat.hop_budgets_ms.values()) <= 200
    assert by_name["recommend-availability"].objective == 0.999
    gpu = by_name["model-server-latency"]
    assert gpu.sli.edge == ("api-gateway", "model-server") and gpu.hop_budgets_ms
    assert slo_thresholds_ms(slos) == [150.0, 200.0]


@pytest.mark.parametrize(
    ("replace", "message"),
    [
        ("objective: 0.99", "spec.objective: 99.9 is not a ratio in (0, 1); write 0.999"),
        ("window: 28d", "spec.window: '28x' is not a duration like 500ms, 30s, 5m, 1h30m or 28d"),
        ("thresholdMs: 200", "spec.sli.thresholdMs: -5 is not a positive number"),
        (
            "kind: latency",
            "spec.sli.kind: 'p99' is not one of latency, availability, prometheus_ratio, prometheus_histogram",
        ),
        (
            "route: /recommend",
            "spec.sli.hop: 'model-server' is a service's self time, which has no latency histogram",
        ),
        ("window: 28d", "spec.windw: unknown field; expected one of"),
        ("window: 28d", "spec.window.calendar: 'year' is not one of month, week"),
        ("window: 28d", "spec.window.timeZone: 'Mars/Base' is not a time zone"),
    ],
)
def test_bad_field_is_refused_with_file_path_and_value(tmp_path: Path, replace: str, message: str) -> None:
    bad = {
        "objective: 0.99": "objective: 99.9",
        "window: 28d": {
            "spec.window: '28x'": "window: 28x",
            "spec.windw": "windw: 28d",
            "spec.window.calendar": "window: {calendar: year}",
            "spec.window.timeZone": "window: {calendar: month, timeZone: Mars/Base}",
        },
        "thresholdMs: 200": "thresholdMs: -5",
        "kind: latency": "kind: p99",
        "route: /recommend": "route: /recommend, hop: model-server",
    }[replace]
    if isinstance(bad, dict):
        bad = next(v for k, v in bad.items() if message.startswith(k))
    rules = _rules(
        tmp_path,
        {
            "recs.yaml": GOOD.replace("NAME", "bad").replace(replace, bad),
            "ok.yaml": GOOD.replace("NAME", "fine"),
        },
    )
    slos, errors = load_slos(rules)
    assert [s.name for s in slos] == ["fine"], "the good file still loads"
    assert len(errors) == 1
    assert str(errors[0]).startswith(f"{rules / 'recs.yaml'}: ")
    assert message in str(errors[0])


def test_one_bad_slo_in_a_multi_document_file_is_refused_alone(tmp_path: Path) -> None:
    text = (
        GOOD.replace("NAME", "a")
        + "---\n"
        + GOOD.replace("NAME", "b").replace("0.99", "1.5")
        + "---\n"
        + GOOD.replace("NAME", "c")
    )
    slos, errors = load_slos(_rules(tmp_path, {"multi.yaml": text}))
    assert [s.name for s in slos] == ["a", "c"]
    assert "(document 2): spec.objective: 1.5 is not a ratio in (0, 1)" in str(errors[0])


def test_invalid_yaml_and_duplicate_names_are_refused(tmp_path: Path) -> None:
    rules = _rules(
        tmp_path,
        {
            "a.yaml": GOOD.replace("NAME", "x"),
            "b.yaml": GOOD.replace("NAME", "x"),
            "c.yaml": "spec: [unclosed",
        },
    )
    slos, errors = load_slos(rules)
    assert [s.name for s in slos] == ["x"]
    text = " | ".join(map(str, errors))
    assert "b.yaml: metadata.name: 'x' is already defined in" in text
    assert "c.yaml: line" in text and "not valid YAML" in text


def test_hop_budgets_over_the_threshold_are_reported_not_refused(tmp_path: Path) -> None:
    text = GOOD.replace("NAME", "h") + "  hopBudgetsMs: {api-gateway: 150, model-server: 80}\n"
    slos, errors = load_slos(_rules(tmp_path, {"h.yaml": text}))
    assert errors == []
    assert "hop budgets sum to 230 ms, over the 200 ms threshold by 30 ms" in slos[0].notes[0]


@pytest.mark.parametrize(
    ("alerting", "active"),
    [
        ("{}", ["page 1h/5m", "page 6h/30m", "ticket 3d/6h"]),
        ("{disable: [ticket]}", ["page 1h/5m", "page 6h/30m"]),
        ("{disable: [6h/30m]}", ["page 1h/5m", "ticket 3d/6h"]),
        ("{policy: sloth, disable: [page]}", ["ticket 1d/2h", "ticket 3d/6h"]),
    ],
)
def test_tiers_can_be_disabled_by_severity_or_label(tmp_path: Path, alerting: str, active: list[str]) -> None:
    text = GOOD.replace("NAME", "t").replace("window: 28d", "window: 30d") + f"  alerting: {alerting}\n"
    slos, errors = load_slos(_rules(tmp_path, {"t.yaml": text}))
    assert errors == []
    assert [f"{t.severity} {t.label}" for t in slos[0].alerting.active_tiers] == active


def test_unknown_policy_names_the_known_tables(tmp_path: Path) -> None:
    text = GOOD.replace("NAME", "p") + "  alerting: {policy: nagios}\n"
    _, errors = load_slos(_rules(tmp_path, {"p.yaml": text}))
    assert (
        "spec.alerting.policy: 'nagios' is not a window table; known: pyrra, sloth, sloth-7d, sre-workbook"
        in str(errors[0])
    )


@pytest.mark.parametrize(
    ("policy", "period", "expected"),
    [
        # SRE Workbook table 5-8: factor = budget share x period / long window
        (
            "sre-workbook",
            "30d",
            [("page", "1h", "5m", 14.4), ("page", "6h", "30m", 6.0), ("ticket", "3d", "6h", 1.0)],
        ),
        (
            "sloth",
            "30d",
            [
                ("page", "1h", "5m", 14.4),
                ("page", "6h", "30m", 6.0),
                ("ticket", "1d", "2h", 3.0),
                ("ticket", "3d", "6h", 1.0),
            ],
        ),
        # Pyrra keeps its factors and scales the windows with the period
        (
            "pyrra",
            "28d",
            [
                ("page", "1h", "5m", 14.0),
                ("page", "6h", "30m", 7.0),
                ("ticket", "1d", "2h", 2.0),
                ("ticket", "4d", "6h", 1.0),
            ],
        ),
        (
            "pyrra",
            "7d",
            [
                ("page", "15m", "75s", 14.0),
                ("page", "90m", "450s", 7.0),
                ("ticket", "6h", "30m", 2.0),
                ("ticket", "1d", "90m", 1.0),
            ],
        ),
        (
            "sloth-7d",
            "7d",
            [
                ("page", "1h", "5m", 13.44),
                ("page", "6h", "30m", 3.5),
                ("ticket", "1d", "2h", 1.4),
                ("ticket", "3d", "6h", 0.98),
            ],
        ),
    ],
)
def test_window_tables_resolve_factors_for_the_slo_period(
    policy: str, period: str, expected: list[tuple]
) -> None:
    tables, errors = load_window_tables(RULES)
    assert errors == []
    tiers = tables[policy].resolve(parse_duration(period))
    got = [(t.severity, t.long, t.short, t.factor) for t in tiers]
    want = [(s, parse_duration(lg), parse_duration(sh), f) for s, lg, sh, f in expected]
    assert [g[:3] for g in got] == [w[:3] for w in want]
    assert [g[3] for g in got] == pytest.approx([w[3] for w in want])


def test_sloth_alert_windows_files_read_as_custom_tables() -> None:
    import yaml

    folder = ROOT.parent / "shared" / "conformance" / "sloth" / "examples" / "windows"
    if not folder.is_dir():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{folder} absent (the shared Sloth conformance specs)")
        pytest.skip(f"{folder} absent")
    t = parse_window_table(yaml.safe_load((folder / "7d.yaml").read_text()), "7d.yaml")
    tiers = t.resolve(timedelta(days=7))
    assert [x.label for x in tiers] == ["1h/5m", "6h/30m", "1d/2h", "3d/6h"]
    assert tiers[0].factor == pytest.approx(0.08 * 168)


def test_bad_window_table_is_refused_with_path(tmp_path: Path) -> None:
    rules = _rules(tmp_path, {})
    (rules / "alert_windows" / "mine.yaml").write_text(
        "apiVersion: hopscope/v1\nkind: AlertWindows\nname: mine\nperiod: 30d\ntiers:\n"
        "  - {severity: page, long: 5m, short: 1h, factor: 14}\n"
    )
    _, errors = load_window_tables(rules)
    assert "mine.yaml: tiers[0].short: '1h' is not shorter than the long window '5m'" in str(errors[0])


@pytest.mark.parametrize(
    ("unit", "tz", "now", "start", "end"),
    [
        # March 2025 in New York: EST -> EDT on the 9th, so the month is 743 hours long
        (
            "month",
            "America/New_York",
            datetime(2025, 3, 15),
            datetime(2025, 3, 1, 5),
            datetime(2025, 4, 1, 4),
        ),
        # November 2025: EDT -> EST on the 2nd, 745 hours
        (
            "month",
            "America/New_York",
            datetime(2025, 11, 30, 12),
            datetime(2025, 11, 1, 4),
            datetime(2025, 12, 1, 5),
        ),
        ("month", "UTC", datetime(2024, 2, 29, 23, 59), datetime(2024, 2, 1), datetime(2024, 3, 1)),
        # ISO weeks start on Monday, local midnight
        (
            "week",
            "Europe/Paris",
            datetime(2025, 3, 30, 12),
            datetime(2025, 3, 23, 23),
            datetime(2025, 3, 30, 22),
        ),
    ],
)
def test_calendar_periods_follow_the_time_zone_across_dst(
    unit: str, tz: str, now: datetime, start: datetime, end: datetime
) -> None:
    assert Window("calendar", None, unit, tz).period(now) == (start, end)


@pytest.mark.parametrize(
    ("text", "td"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(minutes=90)),
        ("28d", timedelta(days=28)),
        ("2w", timedelta(days=14)),
    ],
)
def test_durations_parse(text: str, td: timedelta) -> None:
    assert parse_duration(text) == td


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "-1h", "0m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_missing_rules_path_is_an_error_not_a_crash(tmp_path: Path) -> None:
    slos, errors = load_slos(tmp_path / "nope")
    assert slos == [] and isinstance(errors[0], SpecError) and "no such file or folder" in str(errors[0])


@pytest.mark.parametrize(
    ("alerting", "coverage", "message"),
    [
        ("{}", 1.0, None),
        ("{minCoverage: 0}", 0.0, None),
        ("{minCoverage: 0.5}", 0.5, None),
        ("{minCoverage: -1}", None, "spec.alerting.minCoverage: -1 is not a number in [0, 12]"),
        ("{minCoverage: yes}", None, "spec.alerting.minCoverage: True is not a number in [0, 12]"),
    ],
)
def test_the_warm_up_guard_is_read_from_min_coverage(
    tmp_path: Path, alerting: str, coverage: float | None, message: str | None
) -> None:
    from hopscope.slo import to_document

    text = GOOD.replace("NAME", "c") + f"  alerting: {alerting}\n"
    slos, errors = load_slos(_rules(tmp_path, {"c.yaml": text}))
    if message is None:
        assert errors == [] and slos[0].alerting.min_coverage == coverage
        doc = to_document(slos[0])
        assert doc["spec"]["alerting"].get("minCoverage", 1.0) == coverage
    else:
        assert slos == [] and message in str(errors[0])

"""Budget corrections: excluded periods leave the SLI, the error budget and the burn-rate alerts untouched.

A real DuckLake store holds two days of 20 requests a minute to api-gateway; on day 2, 09:00-10:00,
half the requests take 400 ms (over the 200 ms threshold) and 2 a minute fail. The same data with
and without a correction over that hour: without it the page tier fires and the budget is spent,
with it (declared in the SLO file or recorded with `hopscope slo correct`) nothing fires and the
budget stays whole. The report, `slo status` and `slo corrections` show the correction.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.hop_minutes import gateway_minute
from typer.testing import CliRunner

from hopscope import charts, report
from hopscope.errors import NotFoundError, SpecError
from hopscope.slo import (
    add_correction,
    delete_correction,
    evaluate,
    find_breaches,
    load_slos,
    read_corrections,
    to_document,
)
from hopscope.slo.backtest import Incident, backtest
from hopscope.slo.cli import app
from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 6, 1)
END = T0 + timedelta(days=2)
BREACH = (T0 + timedelta(days=1, hours=9), T0 + timedelta(days=1, hours=10))
runner = CliRunner()

SLO_YAML = """\
apiVersion: hopscope/v1
kind: SLO
metadata: {name: NAME}
spec:
  description: 99% of /recommend requests within 200 ms.
  objective: 0.99
  window: 28d
  sli: {kind: latency, service: api-gateway, route: /recommend, thresholdMs: 200}
"""
SPEC_CORRECTION = """\
  corrections:
    - {from: "2025-06-02T09:00Z", to: "2025-06-02T10:00Z", reason: planned model rollout}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    rng = np.random.default_rng(42)
    rows = []
    for m in range(2 * 1440):
        minute = T0 + timedelta(minutes=m)
        rows.append(gateway_minute(rng, minute, BREACH))
    s = Store(tmp_path_factory.mktemp("corr") / "store")
    s.append("hop_minutes", pd.DataFrame(rows))
    yield s
    s.close()


def _rules(tmp_path: Path, files: dict[str, str]) -> Path:
    shutil.copytree(ROOT / "slo_rules" / "alert_windows", tmp_path / "alert_windows")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.fixture()
def rules(tmp_path: Path) -> Path:
    """Three copies of one SLO: plain, with the breach hour excluded in its file, and one for the store."""
    return _rules(
        tmp_path,
        {
            "plain.yaml": SLO_YAML.replace("NAME", "plain"),
            "spec.yaml": SLO_YAML.replace("NAME", "in-spec") + SPEC_CORRECTION,
            "stored.yaml": SLO_YAML.replace("NAME", "in-store"),
        },
    )


@pytest.fixture()
def clean(store: Store) -> Iterator[Store]:
    """The store without stored corrections before and after each test that records some."""
    store.delete("slo_corrections", "true", [])
    yield store
    store.delete("slo_corrections", "true", [])


def _slos(rules: Path) -> dict:
    got, errors = load_slos(rules)
    assert errors == []
    return {s.name: s for s in got}


@pytest.mark.parametrize("name", ["in-spec", "in-store"])
def test_an_excluded_window_holding_a_breach_leaves_the_budget_untouched_and_raises_no_alert(
    clean: Store, rules: Path, name: str
) -> None:
    slos = _slos(rules)
    if name == "in-store":
        add_correction(clean, slos[name], *BREACH, "planned model rollout")
    during = BREACH[0] + timedelta(minutes=30)
    # without a correction the same data pages, spends the budget and leaves a breach
    plain = evaluate(clean, slos["plain"], now=during)
    assert plain.alert_state == "page" and plain.firing
    assert plain.budget_remaining is not None and plain.budget_remaining < 0.7
    assert [b.severity for b in find_breaches(clean, slos["plain"])] == ["page"]
    # with it: no tier fires during or after it, no breach over the whole history, the budget is whole
    for now in (during, BREACH[1], BREACH[1] + timedelta(minutes=5), END):
        st = evaluate(clean, slos[name], now=now)
        assert st.alert_state == "ok" and st.firing == (), now
    assert find_breaches(clean, slos[name]) == []
    st = evaluate(clean, slos[name], now=END)
    assert st.budget_consumed == 0.0 and st.budget_remaining == 1.0 and st.sli == 1.0
    assert st.total == (2 * 1440 - 60) * 20  # the hour's events count nowhere
    assert st.excluded_minutes == 60
    assert [(c.start, c.end, c.reason) for c in st.corrections] == [(*BREACH, "planned model rollout")]
    assert all(not (s < BREACH[1] and e > BREACH[0]) for s, e in st.gaps)  # excluded is not a gap


def test_a_correction_excludes_only_its_minutes(clean: Store, rules: Path) -> None:
    """Half the breach hour excluded: the other half still burns the budget by its own events."""
    slos = _slos(rules)
    add_correction(clean, slos["in-store"], BREACH[0], BREACH[0] + timedelta(minutes=30), "half")
    st = evaluate(clean, slos["in-store"], now=END)
    good, total = (2 * 1440 - 30) * 20 - 30 * 10, (2 * 1440 - 30) * 20
    assert st.total == total and st.good == good
    assert st.budget_consumed == pytest.approx((1 - good / total) / 0.01)


def test_the_report_shows_the_correction_in_every_format(clean: Store, rules: Path) -> None:
    slos = _slos(rules)
    add_correction(clean, slos["in-store"], *BREACH, "planned <model> rollout")
    with_hole = report.build_report(
        clean, rules=str(rules), slo="in-store", window="7d", now=END, causes=False
    )
    plain = report.build_report(clean, rules=str(rules), slo="plain", window="7d", now=END, causes=False)
    assert plain.corrections == () and plain.budget_consumed is not None and plain.budget_consumed > 0.5
    assert len(plain.incidents) == 1 and with_hole.incidents == ()
    assert with_hole.budget_consumed == 0.0 and with_hole.excluded_minutes == 60
    md = report.to_markdown(with_hole)
    assert "## Excluded periods (budget corrections)" in md
    assert "| 2025-06-02 09:00 | 2025-06-02 10:00 | 60 |" in md and "Excluded (corrections)" in md
    page = report.to_html(with_hole)
    assert "Excluded periods" in page and "planned &lt;model&gt; rollout" in page
    rows = list(csv.DictReader(io.StringIO(report.to_csv(with_hole))))
    assert [(r["excluded_from"], r["excluded_reason"]) for r in rows] == [
        ("2025-06-02T09:00:00", "planned <model> rollout")
    ]
    # the burn-down chart shades the period, labelled with its reason
    fig = charts.budget_burndown_chart(with_hole.burndown, report.corrections_frame(with_hole))
    shaded = [s for s in fig.layout.shapes if s.name == charts.EXCLUDED_NAME]
    assert len(shaded) == 1
    assert any("planned" in str(a.text) for a in fig.layout.annotations)


def test_cli_round_trip_correct_list_delete(clean: Store, rules: Path) -> None:
    base = ["--store", str(clean.path), "--rules", str(rules)]
    r = runner.invoke(
        app,
        ["correct", *base, "--slo", "in-store", "--from", "2025-06-02T09:00Z", "--to", "2025-06-02T11:00+01:00",
         "--reason", "failover drill"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "excludes 2025-06-02 09:00 – 2025-06-02 10:00 UTC (60 min): failover drill" in r.output
    listed = json.loads(runner.invoke(app, ["corrections", *base, "--json"]).output)
    by = {(c["slo"], c["source"]): c for c in listed}
    assert set(by) == {("in-spec", "spec"), ("in-store", "store")}
    mine = by[("in-store", "store")]
    assert (mine["start"], mine["end"], mine["reason"], mine["minutes"]) == (
        "2025-06-02T09:00:00Z", "2025-06-02T10:00:00Z", "failover drill", 60,
    )  # fmt: skip
    status = runner.invoke(app, ["status", *base, "--now", "2025-06-03T00:00", "--json", "--slo", "in-store"])
    (st,) = json.loads(status.output)
    assert st["alert_state"] == "ok" and st["budget_remaining"] == 1.0 and st["excluded_minutes"] == 60
    assert st["corrections"][0]["id"] == mine["id"]
    text = runner.invoke(app, ["status", *base, "--now", "2025-06-03T00:00", "--slo", "in-store"]).output
    assert "excluded from SLI, budget and alerts" in text and "failover drill" in text
    r = runner.invoke(app, ["corrections", *base, "--delete", mine["id"]])
    assert r.exit_code == 0 and f"deleted correction {mine['id']} of in-store" in r.output
    listed = json.loads(runner.invoke(app, ["corrections", *base, "--json"]).output)
    assert [(c["slo"], c["source"]) for c in listed] == [("in-spec", "spec")]
    assert evaluate(clean, _slos(rules)["in-store"], now=END).alert_state != "no data"
    assert find_breaches(clean, _slos(rules)["in-store"]) != []  # deleted: the breach counts again


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (["--from", "2025-06-02T10:00Z", "--to", "2025-06-02T09:00Z"], SpecError, "--to: 2025-06-02T09:00:00 is not after --from"),
        (["--from", "2025-06-02T10:00Z", "--to", "2025-06-02T10:00Z"], SpecError, "is not after --from"),
        (["--from", "yesterday", "--to", "2025-06-02T09:00Z"], SpecError, "--from: 'yesterday' is not an ISO time"),
        (["--from", "2025-06-02T09:00Z", "--to", "2025-13-02"], SpecError, "--to: '2025-13-02' is not an ISO time"),
        (["--slo", "no-such", "--from", "2025-06-02T09:00Z", "--to", "2025-06-02T10:00Z"], NotFoundError, "'no-such' is not an SLO"),
        (["--from", "2025-06-02T09:00Z", "--to", "2025-06-02T10:00Z", "--reason", "  "], SpecError, "--reason: is empty"),
        # overlaps the one stored below, and the one in the file of in-spec
        (["--from", "2025-06-01T23:30Z", "--to", "2025-06-02T00:30Z"], SpecError, "overlaps correction"),
        (["--slo", "in-spec", "--from", "2025-06-02T09:59Z", "--to", "2025-06-02T12:00Z"], SpecError, "overlaps a correction in"),
    ],
)  # fmt: skip
def test_cli_refuses_bad_corrections_with_a_clear_error_and_loses_nothing(
    clean: Store, rules: Path, args: list[str], error: type[Exception], message: str
) -> None:
    kept = add_correction(
        clean, _slos(rules)["in-store"], datetime(2025, 6, 1, 23), datetime(2025, 6, 2), "kept"
    )
    opts = {"--slo": "in-store", "--reason": "r"}
    for i in range(0, len(args), 2):
        opts[args[i]] = args[i + 1]
    flat = [x for k, v in opts.items() for x in (k, v)]
    r = runner.invoke(app, ["correct", "--store", str(clean.path), "--rules", str(rules), *flat])
    assert r.exit_code != 0
    assert isinstance(r.exception, error) and message in str(r.exception), r.exception
    assert read_corrections(clean) == {"in-store": (kept,)}


def test_deleting_an_unknown_correction_names_those_there_are(clean: Store, rules: Path) -> None:
    kept = add_correction(clean, _slos(rules)["in-store"], *BREACH, "kept")
    with pytest.raises(NotFoundError, match=f"no stored correction 'nope' \\(stored: {kept.id}\\)"):
        delete_correction(clean, "nope")
    assert read_corrections(clean) == {"in-store": (kept,)}


@pytest.mark.parametrize(
    ("corrections", "message"),
    [
        ("[{from: 2025-06-02T10:00Z, to: 2025-06-02T09:00Z, reason: x}]", "spec.corrections[0].to: 2025-06-02T09:00:00 is not after from"),
        ("[{from: soon, to: 2025-06-02T09:00Z, reason: x}]", "spec.corrections[0].from: 'soon' is not an ISO time"),
        ("[{from: 2025-06-02T09:00Z, to: 2025-06-02T10:00Z}]", "spec.corrections[0].reason: is required"),
        ("[{from: 2025-06-02T09:00Z, to: 2025-06-02T10:00Z, reason: ''}]", "spec.corrections[0].reason: is empty"),
        ("[{from: 2025-06-02T09:00Z, to: 2025-06-02T10:00Z, reason: x, why: y}]", "spec.corrections[0].why: unknown field"),
        ("{from: 2025-06-02T09:00Z}", "spec.corrections: {'from'"),
        (
            "[{from: 2025-06-02T09:00Z, to: 2025-06-02T10:00Z, reason: a}, {from: 2025-06-02T09:30Z, to: 2025-06-02T11:00Z, reason: b}]",
            "spec.corrections: 2025-06-02T09:30 – 2025-06-02T11:00 ('b') overlaps",
        ),
    ],
)  # fmt: skip
def test_bad_corrections_in_the_slo_file_are_refused_naming_file_and_field(
    tmp_path: Path, corrections: str, message: str
) -> None:
    rules = _rules(
        tmp_path,
        {"bad.yaml": SLO_YAML.replace("NAME", "bad") + f"  corrections: {corrections}\n",
         "good.yaml": SLO_YAML.replace("NAME", "good")},
    )  # fmt: skip
    slos, errors = load_slos(rules)
    assert [s.name for s in slos] == ["good"]
    assert len(errors) == 1 and f"bad.yaml: {message}" in str(errors[0]), errors


def test_corrections_in_the_file_survive_a_write_and_read_back(rules: Path) -> None:
    slo = _slos(rules)["in-spec"]
    doc = to_document(slo)
    assert doc["spec"]["corrections"] == [
        {"from": "2025-06-02T09:00:00Z", "to": "2025-06-02T10:00:00Z", "reason": "planned model rollout"}
    ]
    again = _rules(rules / "again", {"x.yaml": json.dumps(doc)})
    assert _slos(again)["in-spec"].corrections == slo.corrections


def test_backtest_neither_alerts_nor_counts_a_miss_inside_a_correction(clean: Store, rules: Path) -> None:
    slos = _slos(rules)
    results = backtest(
        clean, {"as written": [slos["plain"], slos["in-spec"]]}, [Incident("rollout", *BREACH)]
    )
    by = {r.slo: r for r in results}
    assert (by["plain"].alerts, by["plain"].detected, by["plain"].missed) == (1, 1, 0)
    assert (by["in-spec"].alerts, by["in-spec"].incidents, by["in-spec"].missed) == (0, 0, 0)


def test_time_slices_inside_a_correction_are_neither_bad_nor_allowed(clean: Store, rules: Path) -> None:
    """Time-slice budgeting: the excluded hour holds no slices, and the period's allowed bad slices shrink."""
    text = SLO_YAML.replace("NAME", "sliced").replace(
        "  window: 28d\n",
        "  window: 28d\n  budgeting: {method: timeslices, slice: 5m, sliceObjective: 0.9}\n",
    )
    (rules / "sliced.yaml").write_text(text + SPEC_CORRECTION)
    (rules / "sliced-plain.yaml").write_text(text.replace("sliced", "sliced-plain"))
    slos = _slos(rules)
    plain, fixed = (evaluate(clean, slos[n], now=END) for n in ("sliced-plain", "sliced"))
    slices = 2 * 1440 // 5
    assert (plain.total, plain.good) == (slices, slices - 12)  # the breach hour: 12 bad slices
    assert (fixed.total, fixed.good) == (slices - 12, slices - 12)
    assert fixed.budget_consumed == 0.0 and fixed.alert_state == "ok"
    assert plain.budget_consumed == pytest.approx(12 / (0.01 * (28 * 1440 // 5)))


def test_the_dashboards_slo_report_lists_and_shades_the_correction(
    clean: Store, rules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    add_correction(clean, _slos(rules)["in-store"], *BREACH, "planned model rollout")
    monkeypatch.setenv("HOPSCOPE_STORE", str(clean.path))
    monkeypatch.setenv("HOPSCOPE_SLO_RULES", str(rules))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=90)
    at.query_params.update({"slo": "in-store", "window": "7d"})
    at.run()
    at.switch_page("pages/slo_report.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Budget remaining"] == "100.0%"
    assert any("Excluded from the SLI, budget and alerts" in c.value for c in at.caption)
    table = at.dataframe[0].value
    assert list(table["reason"]) == ["planned model rollout"] and list(table["minutes"]) == [60]
    burndown = next(json.loads(c.proto.spec) for c in at.get("plotly_chart"))
    shaded = [s for s in burndown["layout"]["shapes"] if s.get("name") == charts.EXCLUDED_NAME]
    assert len(shaded) == 1


def test_hopscope_slo_correct_with_bad_times_is_one_line_on_stderr_and_exit_2(
    clean: Store, rules: Path
) -> None:
    argv = ["slo", "correct", "--store", str(clean.path), "--rules", str(rules), "--slo", "in-store",
            "--from", "2025-06-02T10:00Z", "--to", "2025-06-02T09:00Z", "--reason", "x"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", *argv], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "hopscope: error: --to: 2025-06-02T09:00:00 is not after --from (2025-06-02T10:00:00)"
    ]
    assert read_corrections(clean) == {}

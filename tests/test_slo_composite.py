"""Composite SLOs: an SLI of weighted good/total events of other SLOs, with its own objective, budget and alerts.

A real DuckLake store holds two days of /recommend on api-gateway (20 requests a minute; day 2,
09:00-10:00: half of them over 200 ms and 2 a minute failing) and /search on search (10 a minute;
day 1, 12:00-12:30: 1 a minute failing). The composite ``journey`` weighs recommend latency 2 and
search availability 1; its numbers must equal a hand computation from the rows written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.hop_minutes import gateway_minute, hop_minute_row
from typer.testing import CliRunner

from hopscope import report
from hopscope.markdown import literal
from hopscope.slo import add_correction, evaluate, evaluate_many, find_breaches, load_slos, to_document
from hopscope.slo.cli import app
from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 6, 1)
END = T0 + timedelta(days=2)
BREACH = (T0 + timedelta(days=1, hours=9), T0 + timedelta(days=1, hours=10))
SEARCH_ERRORS = (T0 + timedelta(hours=12), T0 + timedelta(hours=12, minutes=30))
runner = CliRunner()


def _slo(name: str, sli: str, window: str = "28d", objective: float = 0.99) -> str:
    return f"""\
apiVersion: hopscope/v1
kind: SLO
metadata: {{name: {name}}}
spec:
  objective: {objective}
  window: {window}
  sli: {sli}
---
"""


LAT = _slo("rec-latency", "{kind: latency, service: api-gateway, route: /recommend, thresholdMs: 200}")
AVAIL = _slo("search-availability", "{kind: availability, service: search, route: /search}", objective=0.999)
JOURNEY = _slo(
    "journey", "{kind: composite, components: [{slo: rec-latency, weight: 2}, search-availability]}"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, pd.DataFrame]]:
    rng = np.random.default_rng(7)
    rows = []
    for m in range(2 * 1440):
        minute = T0 + timedelta(minutes=m)
        rows.append(gateway_minute(rng, minute, BREACH))
        failing = SEARCH_ERRORS[0] <= minute < SEARCH_ERRORS[1]
        rows.append(
            hop_minute_row(minute, "", "search", rng.uniform(5, 50, 10), 1 if failing else 0, [], "/search")
        )
    frame = pd.DataFrame(rows)
    s = Store(tmp_path_factory.mktemp("composite") / "store")
    s.append("hop_minutes", frame)
    yield s, frame
    s.close()


def _rules(tmp_path: Path, text: str) -> Path:
    shutil.copytree(ROOT / "slo_rules" / "alert_windows", tmp_path / "alert_windows")
    (tmp_path / "slos.yaml").write_text(text)
    return tmp_path


@pytest.fixture()
def slos(tmp_path: Path) -> dict:
    got, errors = load_slos(_rules(tmp_path, LAT + AVAIL + JOURNEY))
    assert errors == []
    return {s.name: s for s in got}


def _by_hand(frame: pd.DataFrame, start: datetime, end: datetime) -> tuple[float, float]:
    """(good, total) of journey over [start, end): 2 x recommend's under-200-ms count + search's non-errors."""
    f = frame[(frame["minute"] >= start) & (frame["minute"] < end)]
    rec, search = f[f["server"] == "api-gateway"], f[f["server"] == "search"]
    rec_good = float(sum(c[0] for c in rec["good_cnt"]))
    search_good = float((search["count"] - search["errors"]).sum())
    return 2 * rec_good + search_good, 2 * float(rec["count"].sum()) + float(search["count"].sum())


def test_composite_numbers_equal_a_hand_computation_from_component_counts(
    data: tuple[Store, pd.DataFrame], slos: dict
) -> None:
    store, frame = data
    st = evaluate(store, slos["journey"], now=END)
    good, total = _by_hand(frame, T0, END)
    assert (st.good, st.total) == (good, total)
    assert st.sli == pytest.approx(good / total)
    assert st.budget_consumed == pytest.approx((1 - good / total) / 0.01)
    lat, avail = evaluate_many(store, [slos["rec-latency"], slos["search-availability"]], now=END)
    assert st.good == 2 * lat.good + avail.good and st.total == 2 * lat.total + avail.total
    # burn rate over the last hour of the breach: the weighted bad events of that hour
    during = BREACH[0] + timedelta(minutes=30)
    g, t = _by_hand(frame, during - timedelta(hours=1), during)
    assert evaluate(store, slos["journey"], now=during).burn_rates["1h"] == pytest.approx((1 - g / t) / 0.01)


def test_composite_has_its_own_alerts_and_breaches(data: tuple[Store, pd.DataFrame], slos: dict) -> None:
    store, _ = data
    during = evaluate(store, slos["journey"], now=BREACH[0] + timedelta(minutes=30))
    assert during.alert_state == "page"  # 5m: 20 bad of 50 weighted events, a burn of 40 > 14.4
    found = find_breaches(store, slos["journey"])
    assert [b.severity for b in found if b.start < BREACH[1] and b.end > BREACH[0]] == ["page"]
    assert all(b.slo == "journey" for b in found)


def test_a_components_correction_is_excluded_from_the_composite(
    data: tuple[Store, pd.DataFrame], slos: dict
) -> None:
    store, frame = data
    store.delete("slo_corrections", "true", [])
    try:
        add_correction(store, slos["rec-latency"], *BREACH, "model rollout")
        st = evaluate(store, slos["journey"], now=END)
        good, total = _by_hand(frame, T0, END)
        hour_g, hour_t = _by_hand(frame[frame["server"] == "api-gateway"], *BREACH)
        assert (st.good, st.total) == (good - hour_g, total - hour_t)
        assert [
            b for b in find_breaches(store, slos["journey"]) if b.start < BREACH[1] and b.end > BREACH[0]
        ] == []
    finally:
        store.delete("slo_corrections", "true", [])


def test_status_and_report_show_the_composite(
    data: tuple[Store, pd.DataFrame], slos: dict, tmp_path: Path
) -> None:
    store, frame = data
    rules = slos["journey"].source_file.parent
    out = runner.invoke(
        app, ["status", "--store", str(store.path), "--rules", str(rules), "--now", "2025-06-03T00:00"]
    )
    assert out.exit_code == 0, out.output
    row = next(line for line in out.output.splitlines() if line.startswith("journey "))
    good, total = _by_hand(frame, T0, END)
    assert f"{good / total * 100:.3f}%" in row
    assert "journey: composite of rec-latency x2, search-availability x1" in out.output
    checked = runner.invoke(app, ["check", "--rules", str(rules)])
    assert "combines: rec-latency x2, search-availability x1" in checked.output
    # causes: a composite's breach is diagnosed on the component that burned the most in it
    rep = report.build_report(store, rules=str(rules), slo="journey", window="7d", now=END, causes=True)
    assert rep.sli == pytest.approx(good / total) and rep.components == (
        ("rec-latency", 2.0),
        ("search-availability", 1.0),
    )
    names = literal("rec-latency (weight 2), search-availability (weight 1)")
    assert f"| Composite of | {names} |" in report.to_markdown(rep)
    assert len(rep.incidents) == 1 and rep.incidents[0]["cause"]


def test_a_composite_writes_back_as_it_was_read(slos: dict, tmp_path: Path) -> None:
    doc = to_document(slos["journey"])
    assert doc["spec"]["sli"] == {
        "kind": "composite",
        "components": [{"slo": "rec-latency", "weight": 2.0}, {"slo": "search-availability"}],
    }
    text = LAT + AVAIL + json.dumps(doc)
    again = {s.name: s for s in load_slos(_rules(tmp_path / "again", text))[0]}

    def parts(slo):  # noqa: ANN001, ANN202
        return [(c.name, c.weight, c.slo.sli if c.slo else None) for c in slo.sli.components]

    assert parts(again["journey"]) == parts(slos["journey"])


@pytest.mark.parametrize(
    ("text", "refused", "message"),
    [
        (_slo("j", "{kind: composite, components: [rec-latency, nope]}"), ["j"],
         "j.yaml: spec.sli.components[1].slo: 'nope' is not an SLO (known: "),
        (_slo("a", "{kind: composite, components: [b]}") + _slo("b", "{kind: composite, components: [rec-latency, a]}"),
         ["a", "b"], "composite SLOs form a cycle: a -> b -> a"),
        (_slo("j", "{kind: composite, components: [j]}"), ["j"], "spec.sli.components[0].slo: composite SLOs form a cycle: j -> j"),
        (_slo("w", "{kind: latency, service: search, thresholdMs: 100}", window="7d") + _slo("j", "{kind: composite, components: [w]}"),
         ["j"], "spec.sli.components[0].slo: 'w' has window 7d; the components of a composite share its window (28d)"),
        (_slo("p", "{kind: prometheus_ratio, errorQuery: 'e', totalQuery: 't'}") + _slo("j", "{kind: composite, components: [p]}"),
         ["j"], "'p' is a prometheus_ratio SLI, evaluated by Prometheus"),
        (_slo("j", "{kind: composite, components: [rec-latency, {slo: rec-latency, weight: 2}]}"), ["j"],
         "spec.sli.components[1].slo: 'rec-latency' is listed twice"),
        (_slo("j", "{kind: composite, components: []}"), ["j"], "spec.sli.components: [] is not a non-empty list"),
        (_slo("j", "{kind: composite, components: [{slo: rec-latency, weight: 0}]}"), ["j"],
         "spec.sli.components[0].weight: 0 is not a positive number"),
        (_slo("j", "{kind: composite, service: x, components: [rec-latency]}"), ["j"], "spec.sli.service: does not apply to a composite SLI"),
        (_slo("bad", "{kind: latency}") + _slo("j", "{kind: composite, components: [bad]}"), ["bad", "j"],
         "spec.sli.components[0].slo: 'bad' was refused (see its error)"),
    ],
)  # fmt: skip
def test_bad_composites_are_refused_with_a_clear_error_and_the_rest_load(
    tmp_path: Path, text: str, refused: list[str], message: str
) -> None:
    rules = _rules(tmp_path, LAT + AVAIL)
    (rules / "j.yaml").write_text(text)
    slos, errors = load_slos(rules)
    names = {s.name for s in slos}
    assert {"rec-latency", "search-availability"} <= names and not names & set(refused)
    assert len(errors) == len(refused), errors
    assert any(message in str(e) for e in errors), errors


def test_hopscope_incidents_lists_a_composites_breach_diagnosed_on_its_component(
    data: tuple[Store, pd.DataFrame], slos: dict
) -> None:
    from hopscope.cli import app as main_app
    from hopscope.diagnosis import diagnose_breach

    store, _ = data
    rules = slos["journey"].source_file.parent
    args = ["--store", str(store.path), "--rules", str(rules)]
    r = runner.invoke(main_app, ["incidents", *args, "--since", "3d", "--slo", "journey", "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.output)
    assert [i["slo"] for i in listed] == ["journey"]
    (breach,) = [
        b for b in find_breaches(store, slos["journey"]) if b.start < BREACH[1] and b.end > BREACH[0]
    ]
    d = diagnose_breach(store, breach, slos["journey"], with_bubbleup=False)
    assert d.slo == "journey" and any("diagnosed on its component rec-latency" in n for n in d.notes)


def test_a_composite_of_composites_multiplies_the_weights(
    data: tuple[Store, pd.DataFrame], tmp_path: Path
) -> None:
    outer = _slo("outer", "{kind: composite, components: [{slo: journey, weight: 3}, rec-latency]}")
    got, errors = load_slos(_rules(tmp_path, LAT + AVAIL + JOURNEY + outer))
    assert errors == []
    store, frame = data
    st = evaluate(store, {s.name: s for s in got}["outer"], now=END)
    good, total = _by_hand(frame, T0, END)  # journey: 2 x recommend + search
    rec = frame[frame["server"] == "api-gateway"]
    rec_good, rec_total = float(sum(c[0] for c in rec["good_cnt"])), float(rec["count"].sum())
    assert (st.good, st.total) == (3 * good + rec_good, 3 * total + rec_total)  # recommend counts 7 times

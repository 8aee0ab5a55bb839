"""Diagnosis on the generated demo store (conftest's session ``demo_store``), checked against the
ground truth the generator writes next to it (scenario.json), never against literals."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from support.demo import DEMO_TARGET
from typer.testing import CliRunner

from hopscope.cli import app
from hopscope.diagnosis import VERDICT_CAUSE, VERDICT_NONE, diagnose, diagnose_breach
from hopscope.slo import find_breaches, load_slos
from hopscope.store import Store
from testbed import sweep

ROOT = Path(__file__).parents[1]
RULES = ROOT / "slo_rules"
SCHEMA = json.loads((ROOT / "docs" / "incident-schema.json").read_text())


truth_events = sweep.truth_events  # scenario.json events, normalised (one reader for both)


def _ts(x: Any) -> datetime:
    return datetime.fromisoformat(str(x).replace("Z", "")).replace(tzinfo=None)


@pytest.fixture(scope="module")
def demo(demo_store: Path) -> tuple[Store, list[dict[str, Any]]]:
    truth = json.loads((demo_store / "scenario.json").read_text())
    return Store(demo_store, create=False), truth_events(truth)


def _overlapping(items: list[dict[str, Any]], ev: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in items if _ts(i["start"]) < ev["end"] and _ts(i["end"]) > ev["start"]]


def test_demo_incidents_are_diagnosed_as_the_ground_truth_says(
    demo: tuple[Store, list[dict[str, Any]]],
) -> None:
    store, events = demo
    expected = [e for e in events if e["expect_breach"]]
    assert len(expected) >= 3
    for ev in expected:
        d = diagnose(store, **DEMO_TARGET, start=ev["start"], end=ev["end"], with_bubbleup=False)
        assert d.verdict == VERDICT_CAUSE, (ev["name"], d.notes)
        top = d.causes[0]
        assert (top.hop, top.hop_kind, top.dimension) == (ev["hop"], ev["hop_kind"], ev["dimension"]), (
            ev["name"],
            [(c.hop, c.dimension, round(c.score, 2)) for c in d.causes],
        )


def test_demo_high_traffic_window_has_no_clear_cause(demo: tuple[Store, list[dict[str, Any]]]) -> None:
    store, events = demo
    healthy = [e for e in events if not e["expect_breach"]]
    assert healthy
    for ev in healthy:
        d = diagnose(store, **DEMO_TARGET, start=ev["start"], end=ev["end"], with_bubbleup=False)
        assert d.verdict == VERDICT_NONE and d.causes == (), (
            ev["name"],
            [(c.hop, c.dimension) for c in d.causes],
        )


def test_demo_breach_with_bubbleup_finds_the_attribute_the_scenario_planted(
    demo: tuple[Store, list[dict[str, Any]]], demo_store: Path
) -> None:
    store, _ = demo
    raw = json.loads((demo_store / "scenario.json").read_text())["events"]
    planted = [e for e in raw if (e.get("bubbleup") or (e.get("truth") or {}).get("bubbleup"))]
    assert planted
    ev = planted[0]
    want = ev.get("bubbleup") or ev["truth"]["bubbleup"]
    d = diagnose(store, **DEMO_TARGET, start=_ts(ev["start"]), end=_ts(ev["end"]))
    doc = d.to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert (want["attribute"], want["value"]) in {(b.attribute, b.value) for b in d.bubbleup}, d.bubbleup_note
    assert doc["exemplars"] and doc["decomposition"]["hops"] and doc["baseline"]["windows"]


def test_incidents_cli_json_lists_the_ground_truth_incidents_with_their_top_causes(
    demo: tuple[Store, list[dict[str, Any]]], demo_store: Path
) -> None:
    _, events = demo
    runner = CliRunner()
    args = ["--store", str(demo_store), "--rules", str(RULES)]
    res = runner.invoke(app, ["incidents", "--since", "7d", "--slo", "recommend-latency", "--json", *args])
    assert res.exit_code == 0, res.output
    items = json.loads(res.stdout)
    assert isinstance(items, list) and items
    table = runner.invoke(app, ["incidents", "--since", "7d", "--slo", "recommend-latency", *args]).stdout
    for item in items:
        jsonschema.validate(item, SCHEMA)
        assert item["slo"] == "recommend-latency"
        # the contract's fraction is capped at 1; the uncapped figure is the one the table prints
        assert item["budget_consumed"] == min(item["budget_consumed_uncapped"], 1.0)
        assert f"{item['budget_consumed_uncapped']:.1%}" in table
    for ev in events:
        hits = _overlapping(items, ev)
        if not ev["expect_breach"]:
            assert hits == [], ev["name"]
            continue
        assert hits, ev["name"]
        # the breach outlasts the event (its alert windows clear later); the diagnosis reads the event
        w = hits[0]["diagnosed_window"]
        assert ev["start"] - timedelta(minutes=30) <= _ts(w["start"]) and _ts(w["end"]) <= ev[
            "end"
        ] + timedelta(minutes=30), (ev["name"], w)
        top = hits[0]["causes"][0]
        assert hits[0]["verdict"] == VERDICT_CAUSE
        assert (top["hop"], top["hop_kind"], top["dimension"]) == (
            ev["hop"],
            ev["hop_kind"],
            ev["dimension"],
        ), ev["name"]

    text = runner.invoke(app, ["explain", items[0]["id"], "--slo", "recommend-latency", *args])
    assert text.exit_code == 0, text.output
    assert "verdict: cause found" in text.stdout and "hops (per-request mean, ms):" in text.stdout
    missing = runner.invoke(app, ["explain", "nope", "--slo", "recommend-latency", *args])
    assert missing.exit_code != 0 and "nope" in str(missing.exception or missing.output)


def test_availability_slo_diagnoses_the_demo_incidents_on_errors_and_never_on_latency(
    demo: tuple[Store, list[dict[str, Any]]],
) -> None:
    store, events = demo
    slo = next(s for s in load_slos(RULES)[0] if s.sli.kind == "availability")
    judged = []
    for ev in events:
        d = diagnose(
            store, start=ev["start"], end=ev["end"], service=slo.sli.service, route=slo.sli.route,
            sli_kind="availability", objective=slo.objective, slo=slo.name, with_bubbleup=False,
        )  # fmt: skip
        doc = d.to_dict()
        jsonschema.validate(doc, SCHEMA)
        if d.decomposition is None:
            continue
        judged.append(d)
        assert doc["decomposition"]["measure"] == "errors"
        assert all(r["unit"] == "errors per request" for r in doc["decomposition"]["hops"])
        assert all(c["share_of"] == "errors" and c["hop_kind"] == "service" for c in doc["causes"])
        e = d.decomposition.end_to_end
        if d.causes:  # named only when the error SLI burned beyond what the objective allows
            assert (e.incident_bad_fraction or 0) > 1 - slo.objective
    assert judged
    # breaches the SLO engine finds for it carry the same contract
    for b in find_breaches(store, slo):
        jsonschema.validate(diagnose_breach(store, b, slo, with_bubbleup=False).summary_dict(), SCHEMA)

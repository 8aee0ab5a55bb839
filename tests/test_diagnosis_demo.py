"""Diagnosis on the generated demo store, checked against the ground truth the generator writes."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
from typer.testing import CliRunner

from hopscope.diagnosis import VERDICT_CAUSE, VERDICT_NONE, diagnose, diagnose_breach
from hopscope.diagnosis.cli import explain, incidents
from hopscope.store import Store

ROOT = Path(__file__).parents[1]
SCHEMA = json.loads((ROOT / "docs" / "incident-schema.json").read_text())
HOP_KIND = {"edge": "network", "network": "network", "service": "service"}


def _ts(x: Any) -> datetime:
    return datetime.fromisoformat(str(x).replace("Z", "")).replace(tzinfo=None)


def truth_events(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Normalise scenario.json events: name, start, end, expect_breach, hop, hop_kind, dimension."""
    out = []
    for ev in truth.get("events") or truth.get("incidents") or []:
        t = {**ev, **(ev.get("truth") or {})}
        out.append(
            {
                "name": t.get("name", ""),
                "start": _ts(t["start"]),
                "end": _ts(t["end"]),
                "expect_breach": bool(t.get("expect_breach", "hop" in t)),
                "hop": t.get("hop"),
                "hop_kind": HOP_KIND.get(str(t.get("hop_kind")), t.get("hop_kind")),
                "dimension": t.get("dimension") or ("unknown" if t.get("hop") else None),
            }
        )
    return out


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[dict[str, Any]], Path]:
    gen = pytest.importorskip(
        "hopscope.demo", reason="the demo generator (hopscope/demo.py) is not there yet"
    )
    path = tmp_path_factory.mktemp("demo") / "store"
    gen.generate(ROOT / "sample_data" / "scenario.yaml", path)
    truth = json.loads((path / "scenario.json").read_text())
    return Store(path), truth_events(truth), path


def test_demo_incidents_are_diagnosed_as_the_ground_truth_says(
    demo: tuple[Store, list[dict[str, Any]], Path],
) -> None:
    store, events, _ = demo
    expected = [e for e in events if e["expect_breach"]]
    assert len(expected) >= 3
    for ev in expected:
        d = diagnose(store, start=ev["start"], end=ev["end"])
        assert d.verdict == VERDICT_CAUSE, (ev["name"], d.notes)
        top = d.causes[0]
        assert (top.hop, top.hop_kind, top.dimension) == (ev["hop"], ev["hop_kind"], ev["dimension"]), (
            ev["name"],
            [(c.hop, c.dimension, round(c.score, 2)) for c in d.causes],
        )
        jsonschema.validate(d.to_dict(), SCHEMA)


def test_demo_high_traffic_window_has_no_clear_cause(demo: tuple[Store, list[dict[str, Any]], Path]) -> None:
    store, events, _ = demo
    healthy = [e for e in events if not e["expect_breach"]]
    assert healthy
    for ev in healthy:
        d = diagnose(store, start=ev["start"], end=ev["end"])
        assert d.verdict == VERDICT_NONE and d.causes == (), (
            ev["name"],
            [(c.hop, c.dimension) for c in d.causes],
        )


def test_demo_breaches_from_the_slo_engine_carry_the_right_top_cause(
    demo: tuple[Store, list[dict[str, Any]], Path],
) -> None:
    slo_mod = pytest.importorskip("hopscope.slo")
    store, events, _ = demo
    slos, _errors = slo_mod.load_slos(ROOT / "slo_rules")
    slo = next(s for s in slos if s.name == "recommend-latency")
    breaches = slo_mod.find_breaches(store, slo)
    for ev in events:
        hits = [b for b in breaches if b.start < ev["end"] and b.end > ev["start"]]
        if not ev["expect_breach"]:
            assert hits == [], ev["name"]
            continue
        assert hits, ev["name"]
        d = diagnose_breach(store, hits[0], slo, with_bubbleup=False)
        assert (d.causes[0].hop, d.causes[0].dimension) == (ev["hop"], ev["dimension"]), ev["name"]


def test_incidents_and_explain_cli_print_the_contract(demo: tuple[Store, list[dict[str, Any]], Path]) -> None:
    pytest.importorskip("hopscope.slo")
    _, _, path = demo
    app = typer.Typer()
    app.command()(incidents)
    app.command()(explain)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "incidents",
            "--since",
            "30d",
            "--slo",
            "recommend-latency",
            "--json",
            "--store",
            str(path),
            "--rules",
            str(ROOT / "slo_rules"),
        ],
    )
    assert res.exit_code == 0, res.output
    items = json.loads(res.stdout)
    assert items
    for item in items:
        jsonschema.validate(item, SCHEMA)
    found = [i for i in items if i["verdict"] == "cause found"]
    assert len(found) >= 3
    text = runner.invoke(
        app, ["explain", found[0]["id"], "--store", str(path), "--rules", str(ROOT / "slo_rules")]
    )
    assert text.exit_code == 0, text.output
    assert "verdict:" in text.stdout and "hops (per-request mean, ms):" in text.stdout
    full = runner.invoke(
        app, ["explain", found[0]["id"], "--json", "--store", str(path), "--rules", str(ROOT / "slo_rules")]
    )
    doc = json.loads(full.stdout)
    jsonschema.validate(doc, SCHEMA)
    assert doc["decomposition"]["hops"] and doc["baseline"]["windows"]
    missing = runner.invoke(
        app, ["explain", "nope", "--store", str(path), "--rules", str(ROOT / "slo_rules")]
    )
    assert missing.exit_code != 0

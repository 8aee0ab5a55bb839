"""Scenario sweep: generate each small scenario in tests/fixtures/scenarios, diagnose its events,
and score (hop, dimension) against the ground truth the generator writes. Prints the accuracy and a
confusion table (run with -s to see them)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_diagnosis_demo import truth_events

from hopscope.diagnosis import VERDICT_NONE, diagnose
from hopscope.store import Store

SCENARIOS = sorted((Path(__file__).parent / "fixtures" / "scenarios").glob("*.yaml"))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    gen = pytest.importorskip(
        "hopscope.demo", reason="the demo generator (hopscope/demo.py) is not there yet"
    )
    out = []
    for scenario in SCENARIOS:
        path = tmp_path_factory.mktemp(scenario.stem) / "store"
        gen.generate(scenario, path)
        store = Store(path)
        for ev in truth_events(json.loads((path / "scenario.json").read_text())):
            d = diagnose(store, start=ev["start"], end=ev["end"], with_bubbleup=False)
            out.append(
                {
                    "scenario": scenario.stem,
                    "event": ev,
                    "got": [(c.hop, c.dimension) for c in d.causes],
                    "verdict": d.verdict,
                }
            )
        store.close()
    return out


@pytest.mark.slow
def test_sweep_accuracy_of_hop_and_dimension(results: list[dict[str, Any]]) -> None:
    causal = [r for r in results if r["event"]["expect_breach"]]
    healthy = [r for r in results if not r["event"]["expect_breach"]]
    top1 = sum(1 for r in causal if r["got"][:1] == [(r["event"]["hop"], r["event"]["dimension"])])
    top3 = sum(1 for r in causal if (r["event"]["hop"], r["event"]["dimension"]) in r["got"][:3])
    confusion = Counter(
        (
            f"{r['event']['hop']}/{r['event']['dimension']}",
            "/".join(r["got"][0]) if r["got"] else "no clear cause",
        )
        for r in causal
    )
    print(
        f"\nsweep: {len(causal)} incidents, top-1 {top1}/{len(causal)}, top-3 {top3}/{len(causal)}; "
        f"healthy windows with no cause: {sum(r['verdict'] == VERDICT_NONE for r in healthy)}/{len(healthy)}"
    )
    for (want, got), n in sorted(confusion.items()):
        print(f"  {want:40s} -> {got:40s} {n}")
    assert top3 == len(causal)
    assert top1 >= 0.9 * len(causal)
    assert all(r["verdict"] == VERDICT_NONE for r in healthy)

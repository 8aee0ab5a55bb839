"""The demo scenario as the tests use it: its fixed end, its SLI, its rules and its ground truth."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from hopscope.query import slos
from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "sample_data" / "scenario.yaml"
RULES = str(ROOT / "slo_rules")
# A fixed end keeps the demo store, and every figure read from it, the same in every run.
DEMO_END = datetime(2026, 11, 20, 12, 0)
# The demo scenario's SLI, which the diagnosis no longer assumes: tests name it as a user's SLO would.
DEMO_TARGET = {"service": "api-gateway", "route": "/recommend", "threshold_ms": 200.0}


def truth(store: Path, name: str) -> dict[str, Any]:
    """One event of the scenario's ground truth, written next to the store."""
    events = json.loads((store / "scenario.json").read_text())["events"]
    return next(e for e in events if e["name"] == name)


def breach_for(store: Path, event: dict[str, Any], slo: str = "recommend-latency") -> dict[str, Any]:
    """The breach of an SLO that overlaps a ground-truth event."""
    st = Store(store, create=False)
    try:
        start, end = datetime.fromisoformat(event["start"]), datetime.fromisoformat(event["end"])
        df = slos.breach_table(st, RULES, start, end)
        return dict(df[df["slo"] == slo].iloc[0])
    finally:
        st.close()

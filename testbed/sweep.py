"""The scenario sweep behind `benchmarks/diagnosis_sweep.py` and tests/test_diagnosis_sweep.py.

Each scenario in tests/fixtures/scenarios is generated with the demo generator (3 days, 4 req/s),
its events are diagnosed and compared with the ground truth the generator writes (scenario.json);
every scenario also gets a control window (its event's hours one day earlier, untouched) that must
come out "no clear cause". `run_sweep` returns a Summary: top-1 / top-3 accuracy and a confusion table.

What the generator's YAML cannot express is tested by hand-built stores in tests/test_diagnosis.py:
a missing collector (no GPU series), two true causes in one event, an availability breach.
The method sees only the store; it is never told scenario names or truth.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hopscope.demo import generate as generate_demo
from hopscope.diagnosis import diagnose
from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "tests" / "fixtures" / "scenarios").glob("*.yaml"))
END = datetime(2026, 11, 20, 12, 0)  # fixed: the same stores every run
HOP_KIND = {"edge": "network", "network": "network", "service": "service"}
NO_CAUSE = "no clear cause"


def _ts(x: Any) -> datetime:
    return datetime.fromisoformat(str(x).replace("Z", "")).replace(tzinfo=None)


def truth_events(truth: dict[str, Any]) -> list[dict[str, Any]]:
    """Normalise scenario.json events: name, start, end, expect_breach, hop, hop_kind, dimension.

    An event with a hop but no dimension (a cause no resource signal shows) expects "unknown".
    """
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


@dataclass(frozen=True, slots=True)
class Case:
    scenario: str
    event: str
    expected: tuple[str, str] | None  # (hop, dimension); None = a healthy window
    got: tuple[tuple[str, str], ...]  # ranked (hop, dimension)
    verdict: str
    seconds: float

    @property
    def top1(self) -> bool:
        return self.expected is not None and self.got[:1] == (self.expected,)

    @property
    def top3(self) -> bool:
        return self.expected is not None and self.expected in self.got[:3]


@dataclass
class Summary:
    cases: list[Case] = field(default_factory=list)

    @property
    def causal(self) -> list[Case]:
        return [c for c in self.cases if c.expected is not None]

    @property
    def healthy(self) -> list[Case]:
        return [c for c in self.cases if c.expected is None]

    @property
    def top1(self) -> float:
        return sum(c.top1 for c in self.causal) / max(1, len(self.causal))

    @property
    def top3(self) -> float:
        return sum(c.top3 for c in self.causal) / max(1, len(self.causal))

    @property
    def invented(self) -> list[Case]:
        """Healthy windows that were given a cause."""
        return [c for c in self.healthy if c.verdict != NO_CAUSE]

    def confusion(self) -> Counter[tuple[str, str]]:
        return Counter(
            ("/".join(c.expected) if c.expected else "healthy", "/".join(c.got[0]) if c.got else NO_CAUSE)
            for c in self.cases
        )

    def report(self) -> str:
        n = len(self.causal)
        lines = [
            f"sweep: {n} incidents in {len({c.scenario for c in self.cases})} scenarios: "
            f"top-1 {sum(c.top1 for c in self.causal)}/{n} ({self.top1:.0%}), "
            f"top-3 {sum(c.top3 for c in self.causal)}/{n} ({self.top3:.0%}); "
            f"healthy windows with a cause invented: {len(self.invented)}/{len(self.healthy)}",
            "",
            f"{'expected (hop/dimension)':42s} {'diagnosed top-1':42s} n",
        ]
        for (want, got), k in sorted(self.confusion().items()):
            mark = "" if want == got or (want == "healthy" and got == NO_CAUSE) else "   <- wrong"
            lines.append(f"{want:42s} {got:42s} {k}{mark}")
        lines += ["", f"{'scenario':32s} {'event':22s} {'top-1':42s} seconds"]
        for c in self.cases:
            lines.append(
                f"{c.scenario:32s} {c.event:22s} {'/'.join(c.got[0]) if c.got else NO_CAUSE:42s} {c.seconds:.2f}"
            )
        return "\n".join(lines)


def control_window(ev: dict[str, Any], events: list[dict[str, Any]]) -> tuple[datetime, datetime] | None:
    """The event's hours one day earlier, if no event touches them (nor the hours before them)."""
    start, end = ev["start"] - timedelta(days=1), ev["end"] - timedelta(days=1)
    length = end - start
    for other in events:
        if other["start"] < end and other["end"] > start - length:
            return None
    return start, end


def generate(scenario: Path, workdir: Path) -> Path:
    """Generate one scenario's store under workdir (the demo generator, fixed end)."""
    path = workdir / scenario.stem
    generate_demo(scenario, path, end=END)
    return path


def diagnose_store(path: Path, scenario: str) -> list[Case]:
    """Diagnose every event of a generated store, and one control window per event."""
    truth = json.loads((path / "scenario.json").read_text())
    events = truth_events(truth)
    target = {k: truth["slo"][k] for k in ("service", "route", "threshold_ms")}  # the scenario's SLI
    store = Store(path, create=False)
    out: list[Case] = []
    try:
        windows: list[tuple[str, datetime, datetime, tuple[str, str] | None]] = []
        for ev in events:
            want = (ev["hop"], ev["dimension"]) if ev["expect_breach"] else None
            windows.append((ev["name"], ev["start"], ev["end"], want))
            ctl = control_window(ev, events)
            if ctl is not None:
                windows.append((f"{ev['name']} -1d", *ctl, None))
        for name, start, end, want in windows:
            t = time.perf_counter()
            d = diagnose(store, start=start, end=end, with_bubbleup=False, **target)
            got = tuple((c.hop, c.dimension) for c in d.causes)
            out.append(Case(scenario, name, want, got, d.verdict, time.perf_counter() - t))
    finally:
        store.close()
    return out


def run_sweep(scenarios: list[Path], workdir: Path) -> Summary:
    """Generate and diagnose each scenario in turn (one at a time: small stores, little memory)."""
    summary = Summary()
    for sc in scenarios:
        summary.cases += diagnose_store(generate(sc, workdir), sc.stem)
    return summary

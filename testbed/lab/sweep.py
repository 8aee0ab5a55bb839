"""`hopscope lab sweep`: every scenario in turn (warm-up, fault, recovery), each diagnosed with
`hopscope incidents --json` and `explain --json`, and one table of how the diagnosis did.

    rows = sweep(["bandwidth", "cpu"], out=Path("var/lab-sweep"))    # runs them (root, minutes each)
    print(table(rows))                                               # the markdown table and totals

Per fault: its (hop, dimension) truth, whether the SLO breached, the top cause, where the truth ranks
among the causes (right when within the first k, k the faults at once), the share of the added
end-to-end latency the hops explain and the first alert. Per control: the causes named (goal 0).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.lab.runner import LabError, LabResult, Outcome, run_lab
from testbed.lab.scenario import SCENARIOS, load_scenario
from testbed.workdir import say_stderr

# the goals of issue 14, as the table's totals judge them
GOAL_TOP1 = 0.9
GOAL_TOP3 = 1.0
GOAL_EXPLAINED = 0.8


@dataclass(frozen=True, slots=True)
class Row:
    scenario: str
    outcome: Outcome | None  # None: the scenario could not run
    seconds: float
    load: tuple[float, float]  # 1-minute load average at the scenario's start and end
    error: str = ""


def scenario_names(directory: Path = SCENARIOS) -> list[str]:
    """Every scenario shipped (the topology file is not one), in a fixed order: faults, then controls."""
    names = sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "topology")
    controls = [
        n
        for n in names
        if not any(
            t.get("expect_breach", "hop" in t) for _, t in load_scenario(directory / f"{n}.yaml").truth
        )
    ]
    return [n for n in names if n not in controls] + controls


def sweep(
    names: Sequence[str],
    out: Path,
    progress: Callable[[str], None] | None = say_stderr,
    run: Callable[..., LabResult] = run_lab,
) -> list[Row]:
    """Run each scenario (kept under ``out/<name>``), write ``out/sweep.json`` and ``out/sweep.md``."""
    say = progress or (lambda _line: None)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    for k, name in enumerate(names, 1):
        sc = load_scenario(name)
        load0 = os.getloadavg()[0]
        t0 = time.monotonic()
        say(f"sweep: {name} ({k}/{len(names)}), load average {load0:.1f}")
        try:
            result = run(sc, keep=out / name, progress=progress)
        except LabError as exc:
            rows.append(
                Row(name, None, round(time.monotonic() - t0, 1), (load0, os.getloadavg()[0]), str(exc))
            )
            say(f"sweep: {name}: could not run: {exc}")
            continue
        if result.explain is not None:
            (out / name / "explain.json").write_text(json.dumps(result.explain, indent=1))
        for o in result.outcomes:
            rows.append(Row(name, o, result.seconds, (load0, os.getloadavg()[0])))
    (out / "sweep.json").write_text(json.dumps([_row_dict(r) for r in rows], indent=1))
    (out / "sweep.md").write_text(table(rows) + "\n")
    return rows


def _row_dict(r: Row) -> dict[str, Any]:
    o = r.outcome
    return {
        "scenario": r.scenario,
        "seconds": r.seconds,
        "load_average": list(r.load),
        "error": r.error,
        "outcome": None if o is None else {k: getattr(o, k) for k in o.__dataclass_fields__},
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def table(rows: Sequence[Row]) -> str:
    """The sweep's markdown table, then its totals against the goals."""
    head = ("| scenario | event | truth | breach | top cause | truth's rank | top-1 | top-3 | causes on control "
            "| hops explain | first alert | load |")  # fmt: skip
    lines = [head, "|" + " --- |" * 12]
    faults = [r for r in rows if r.outcome is not None and r.outcome.expect_breach]
    controls = [r for r in rows if r.outcome is not None and not r.outcome.expect_breach]
    for r in rows:
        o = r.outcome
        load = f"{r.load[0]:.1f}–{r.load[1]:.1f}"
        if o is None:
            lines.append(f"| `{r.scenario}` | – | – | could not run: {r.error} | | | | | | | | {load} |")
            continue
        if o.expect_breach:
            in1 = o.rank is not None and o.rank <= o.at_once
            in3 = o.rank is not None and o.rank <= 3
            rank = (
                "–"
                if o.rank is None
                else f"{o.rank}" + (f" (of {o.at_once} at once)" if o.at_once > 1 else "")
            )
            first = "–" if o.first_alert_s is None else f"{o.first_alert_s:.0f} s"
            lines.append(
                f"| `{r.scenario}` | {o.event} | {o.expected} | {'yes' if o.breached else 'no'} | {o.top or '–'} "
                f"| {rank} | {'✔' if in1 else '✘'} | {'✔' if in3 else '✘'} | | {_pct(o.share_explained)} "
                f"| {first} | {load} |"
            )
        else:
            named = len(o.causes)
            lines.append(
                f"| `{r.scenario}` | {o.event} | no breach | {'yes' if o.breached else 'no'} | {o.top or '–'} "
                f"| | | | {named} | | | {load} |"
            )
    n = len(faults)
    top1 = sum(
        1 for r in faults if r.outcome and r.outcome.rank is not None and r.outcome.rank <= r.outcome.at_once
    )
    top3 = sum(1 for r in faults if r.outcome and r.outcome.rank is not None and r.outcome.rank <= 3)
    named = sum(len(r.outcome.causes) for r in controls if r.outcome)
    hop_faults = [r.outcome for r in faults if r.outcome]
    explained = [
        o for o in hop_faults if o.share_explained is not None and o.share_explained >= GOAL_EXPLAINED
    ]
    lines += [
        "",
        f"top-1 (hop, dimension): {top1}/{n} = {_pct(top1 / n if n else None)} (goal ≥ {GOAL_TOP1:.0%}); "
        f"top-3: {top3}/{n} = {_pct(top3 / n if n else None)} (goal {GOAL_TOP3:.0%}); "
        f"causes named on {len(controls)} controls: {named} (goal 0); "
        f"hops explain ≥ {GOAL_EXPLAINED:.0%} of the added latency in {len(explained)}/{len(hop_faults)} faults",
    ]
    return "\n".join(lines)


__all__ = ["Row", "scenario_names", "sweep", "table"]

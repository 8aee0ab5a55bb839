"""`hopscope lab`: run a lab scenario (testbed/lab/) for real and judge the diagnosis against its truth.

The lab drives network namespaces, tc and cgroups, and ships in the repository's checkout only
(testbed/ is not part of the wheel): it is imported from there at run time, so nothing in the core
depends on it or on the lab topology's service names.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from hopscope.errors import HopscopeError

CHECKOUT = Path(__file__).resolve().parents[1]

app = typer.Typer(
    help="The lab: real services in network namespaces, real kernel faults (root; from a checkout).",
    no_args_is_help=True,
)


def _lab() -> ModuleType:
    if not (CHECKOUT / "testbed" / "lab" / "__init__.py").is_file():
        raise HopscopeError(f"{CHECKOUT}: no testbed/lab here; the lab runs from a checkout of hopscope")
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    return importlib.import_module("testbed.lab")


@app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="a scenario name (testbed/lab/scenarios/) or a YAML file")],
    keep: Annotated[
        Path | None, typer.Option("--keep", help="keep the store, logs, configs and result.json in DIR")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the result as one JSON object")] = False,
) -> None:
    """Build the lab, run SCENARIO's phases and faults, diagnose, and compare the top cause with the truth.

    Exit 0 when every truth event came out right, 1 when the diagnosis disagreed, 2 when the lab could
    not run (not root, a binary missing, another lab running, a component that did not start)."""
    lab = _lab()
    try:
        sc = lab.load_scenario(scenario)
        lab.check_requirements()
        result = lab.run_lab(sc, keep=keep)
    except (lab.LabError, lab.ScenarioError, lab.NetError) as exc:
        raise HopscopeError(str(exc)) from None
    typer.echo(json.dumps(result.to_dict(), indent=1) if json_out else lab.format_result(result))
    if not result.ok:
        raise typer.Exit(1)


@app.command("sweep")
def sweep(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(help="scenario names or files (default: every one in testbed/lab/scenarios/)"),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="each scenario's kept run, sweep.json and sweep.md go here")
    ] = Path("var/lab-sweep"),
) -> None:
    """Run every scenario (warm-up, fault, recovery), diagnose each, and print the accuracy table:
    top-1 and top-3 (hop, dimension), causes named on the controls, the share of the added latency
    the hops explain, time to first alert. Minutes per scenario; root.

    Exit 0 when every scenario came out right, 1 when one did not, 2 when the lab could not run."""
    lab = _lab()
    lab_sweep = importlib.import_module("testbed.lab.sweep")  # from the checkout, as _lab() imports it

    try:
        names = scenarios or lab_sweep.scenario_names()
        for name in names:
            lab.load_scenario(name)  # a bad name or file is refused before minutes of running
        lab.check_requirements()
        rows = lab_sweep.sweep(names, out)
    except (lab.LabError, lab.ScenarioError, lab.NetError) as exc:
        raise HopscopeError(str(exc)) from None
    typer.echo(lab_sweep.table(rows))
    typer.echo(f"\nkept in {out} (sweep.json, sweep.md, <scenario>/result.json, explain.json, explain-*.txt)")
    if any(r.outcome is None or not r.outcome.correct for r in rows):
        raise typer.Exit(1)

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

"""The lab: real services in network namespaces, real kernel faults, hopscope's diagnosis judged on them.

    hopscope lab run bandwidth [--keep DIR] [--json]      (root)

The topology and each scenario are data (testbed/lab/scenarios/*.yaml); see docs/lab.md.
"""

from testbed.lab.net import NetError
from testbed.lab.runner import LabError, LabResult, Outcome, check_requirements, format_result, run_lab
from testbed.lab.scenario import Scenario, ScenarioError, load_scenario

__all__ = [
    "LabError",
    "LabResult",
    "NetError",
    "Outcome",
    "Scenario",
    "ScenarioError",
    "check_requirements",
    "format_result",
    "load_scenario",
    "run_lab",
]

"""The lab for real (testbed/lab/): three services in network namespaces, a tc tbf cap on the link into
the model server, `hopscope collect` with Prometheus + node_exporter, then `hopscope incidents --json`.

About 3 minutes (marked slow). Needs root (namespaces, veth, tc): skipped with the reason without it;
a missing binary fails the run under CI=true (tests/support/binaries.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support.binaries import require_binary

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # testbed/ is not an installed package
    sys.path.insert(0, str(ROOT))

from testbed.lab import LabError, check_requirements, format_result, load_scenario, run_lab  # noqa: E402


def test_every_shipped_scenario_loads_and_names_a_known_fault_in_its_truth() -> None:
    for path in sorted((ROOT / "testbed" / "lab" / "scenarios").glob("*.yaml")):
        if path.stem == "topology":
            continue
        sc = load_scenario(path)
        assert sc.phases and sc.truth, path
        names = {f.name for f in sc.faults} | {p.name for p in sc.phases}
        assert {k for k, _ in sc.truth} <= names, path


@pytest.mark.slow
def test_a_bandwidth_cap_on_the_model_servers_link_breaches_and_is_blamed_on_that_link() -> None:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root: network namespaces, veth links and tc")
    for binary, package in (("/usr/bin/prometheus", "prometheus"),
                            ("/usr/bin/prometheus-node-exporter", "prometheus-node-exporter"),
                            ("ip", "iproute2"), ("tc", "iproute2")):  # fmt: skip
        require_binary(binary, package)
    r = run_lab(load_scenario("bandwidth"), progress=None)
    summary = "\n" + format_result(r)
    (cap,) = [o for o in r.outcomes if o.event == "cap"]
    fault = next(p for p in r.phases if "cap" in p.faults)
    assert fault.over_threshold is not None and fault.over_threshold > 0.2, (
        f"the cap did not slow requests{summary}"
    )
    assert cap.breached, f"no SLO breach during the cap{summary}"
    assert cap.top == "api-gateway->model-server (bandwidth)", f"top cause {cap.top}{summary}"
    assert cap.top_hop_kind == "network", summary
    assert cap.share_explained is not None and cap.share_explained >= 0.8, summary


def test_the_lab_refuses_to_start_without_root_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="the lab needs root"):
        check_requirements()

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


# -- the lab's containers, its judge of two faults at once, the sweep's table: fast, no lab run ----------


def _fake_cgroupfs(root: Path, group: str, *, limit: int, throttled_ns: int, majfaults: int) -> None:
    """The files a cgroup v1 group holds (cpu, cpuacct, memory), as the kernel writes them."""
    for c in ("cpu", "cpuacct", "memory"):
        (root / c / group).mkdir(parents=True)
        (root / c / "cgroup.procs").write_text("")
    (root / "cpuacct" / group / "cpuacct.usage").write_text("2500000000\n")
    (root / "cpu" / group / "cpu.stat").write_text(
        f"nr_periods 600\nnr_throttled 40\nthrottled_time {throttled_ns}\nnr_bursts 0\nburst_time 0\n"
    )
    mem = root / "memory" / group
    (mem / "memory.usage_in_bytes").write_text("100000000\n")
    (mem / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (mem / "memory.failcnt").write_text("7\n")
    (mem / "memory.stat").write_text(
        f"rss 50000000\ntotal_rss 50000000\ntotal_inactive_file 30000000\ntotal_pgfault 900\ntotal_pgmajfault {majfaults}\n"
    )
    (mem / "memory.kmem.usage_in_bytes").write_text("4000000\n")


def test_the_containers_are_exported_in_cadvisors_names_and_definitions(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    from testbed.lab.cgroups import Cgroups  # noqa: PLC0415

    _fake_cgroupfs(tmp_path, "hsl1-model-server", limit=2**63 - 4096, throttled_ns=1_500_000_000, majfaults=3)
    # the hybrid layout's v2 hierarchy: no controllers, but each group's pressure stall information
    unified = tmp_path / "unified"
    (unified / "hsl1-model-server").mkdir(parents=True)
    for d in (unified, unified / "hsl1-model-server"):
        (d / "cgroup.procs").write_text("")
        for res, some, full in (("cpu", 2_500_000, 1_000_000), ("memory", 750_000, 250_000), ("io", 0, 0)):
            (d / f"{res}.pressure").write_text(
                f"some avg10=1.00 avg60=0.50 avg300=0.10 total={some}\nfull avg10=0.50 avg60=0.20 avg300=0.05 total={full}\n"
            )
    text = Cgroups(["model-server"], "hsl1", root=tmp_path, parents={}).exposition()
    got = {
        (s.name, s.labels.get("failure_type", "")): (s.value, s.labels["container"])
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert got[("container_cpu_cfs_throttled_seconds_total", "")] == (1.5, "lab-model-server")
    assert got[("container_cpu_cfs_throttled_periods_total", "")][0] == 40
    assert got[("container_cpu_usage_seconds_total", "")][0] == 2.5
    assert got[("container_memory_working_set_bytes", "")][0] == 70_000_000  # usage - inactive file
    assert got[("container_spec_memory_limit_bytes", "")][0] == 0  # unlimited, as cAdvisor says it
    assert got[("container_memory_failures_total", "pgmajfault")][0] == 3
    # PSI in cAdvisor's names: "some" is waiting, "full" stalled, microseconds as seconds
    assert got[("container_pressure_cpu_waiting_seconds_total", "")] == (2.5, "lab-model-server")
    assert got[("container_pressure_memory_stalled_seconds_total", "")][0] == 0.25
    assert got[("container_pressure_io_waiting_seconds_total", "")][0] == 0
    # cAdvisor's name has no _total (Prometheus stores it so; only this parser appends one)
    assert 'container_memory_failcnt{container="lab-model-server",id="/hsl1-model-server"} 7' in text


def test_a_memory_fault_sets_the_limit_to_anonymous_and_kernel_memory_plus_the_headroom(
    tmp_path: Path,
) -> None:
    from testbed.lab.cgroups import Cgroups  # noqa: PLC0415

    _fake_cgroupfs(tmp_path, "hsl1-feature-store", limit=2**63 - 4096, throttled_ns=0, majfaults=0)
    groups = Cgroups(["feature-store"], "hsl1", root=tmp_path, parents={})
    assert groups.set_memory_headroom("feature-store", 48 << 20) == 50_000_000 + 4_000_000 + (48 << 20)
    assert (tmp_path / "memory" / "hsl1-feature-store" / "memory.limit_in_bytes").read_text() == str(
        54_000_000 + (48 << 20)
    )
    groups.set_cpu_quota("feature-store", 0.1)
    assert (tmp_path / "cpu" / "hsl1-feature-store" / "cpu.cfs_quota_us").read_text() == "10000"


def test_two_faults_at_once_are_each_right_within_the_first_two_causes_and_a_control_by_silence() -> None:
    from testbed.lab.runner import judge  # noqa: PLC0415
    from testbed.lab.sweep import Row, table  # noqa: PLC0415

    span = {"start": "2026-12-07T10:01:00", "end": "2026-12-07T10:02:00"}
    events = [
        {"name": "quota", "expect_breach": True, "hop": "model-server", "dimension": "compute", **span},
        {"name": "squeeze", "expect_breach": True, "hop": "feature-store", "dimension": "memory", **span},
    ]
    incident = {
        "id": "abc", "start": "2026-12-07T10:01:00", "end": "2026-12-07T10:04:00", "verdict": "cause found",
        "causes": [{"hop": "feature-store", "dimension": "memory", "hop_kind": "service"},
                   {"hop": "model-server", "dimension": "compute", "hop_kind": "service"},
                   {"hop": "model-server", "dimension": "bandwidth", "hop_kind": "service"}],
    }  # fmt: skip
    explained = {"decomposition": {"end_to_end": {"incident_mean_ms": 300.0, "baseline_mean_ms": 100.0},
                                   "residual_ms": 20.0}}  # fmt: skip
    quota, squeeze = judge(events, [incident], lambda _id: explained)
    assert (quota.rank, quota.at_once, quota.correct) == (2, 2, True)
    assert (squeeze.rank, squeeze.correct, squeeze.share_explained) == (1, True, 0.9)
    alone = judge(events[:1], [incident], lambda _id: explained)[0]
    assert (alone.rank, alone.at_once, alone.correct) == (2, 1, False)  # one fault: only the top counts

    control = {"name": "control", "expect_breach": False, "hop": None, "dimension": None, **span}
    (noisy,) = judge([control], [incident], lambda _id: explained)
    assert not noisy.correct and len(noisy.causes) == 3
    text = table([Row("cpu-memory", quota, 200, (4.0, 5.0)), Row("cpu-memory", squeeze, 200, (4.0, 5.0)),
                  Row("cpu", alone, 190, (5.0, 6.0)), Row("healthy", noisy, 180, (6.0, 6.0))])  # fmt: skip
    assert "top-1 (hop, dimension): 2/3 = 67%" in text and "top-3: 3/3 = 100%" in text
    assert "causes named on 1 controls: 3 (goal 0)" in text
    assert "hops explain ≥ 80% of the added latency in 3/3 faults" in text


def test_cpu_and_memory_faults_are_refused_where_cgroup_v1_is_not_mounted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from testbed.lab import cgroups  # noqa: PLC0415

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(cgroups, "available", lambda: "no cgroup v1 cpu controller under /sys/fs/cgroup")
    with pytest.raises(LabError, match="cpu and memory faults need cgroup v1 containers"):
        check_requirements(lambda _b: "/usr/bin/x", sc=load_scenario("cpu-memory"))
    check_requirements(lambda _b: "/usr/bin/x", sc=load_scenario("bandwidth"))  # a network fault runs

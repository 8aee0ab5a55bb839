"""Host network collector: saved /proc and /sys files, and this machine's real /proc."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from hopscope.collectors.network import NetworkCollector, parse_net_dev, parse_snmp_retrans
from hopscope.config.collect import NetworkConfig

FIX = Path(__file__).parent / "fixtures" / "collect"
NOW = datetime(2026, 11, 26, 12, 0, 0)


def _collector(**cfg: object) -> NetworkCollector:
    c = NetworkConfig(proc_path=str(FIX / "proc"), sys_path=str(FIX / "sys"), service="api-gateway", **cfg)
    return NetworkCollector(c, host="node-1", clock=lambda: NOW)


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        ("node_network_receive_bytes_total", 1234567890),
        ("node_network_receive_packets_total", 2345678),
        ("node_network_receive_errs_total", 3),
        ("node_network_receive_drop_total", 17),
        ("node_network_transmit_bytes_total", 987654321),
        ("node_network_transmit_packets_total", 1876543),
        ("node_network_transmit_errs_total", 1),
        ("node_network_transmit_drop_total", 5),
        ("node_network_speed_bytes", 25000 * 125000),
    ],
)
def test_nic_counters_and_speed_use_node_exporter_names(metric: str, value: float) -> None:
    results = {r.target: r for r in _collector().collect()}
    eth0 = {s.metric: s for s in results["eth0"].samples}
    assert eth0[metric].value == value
    assert eth0[metric].labels == {"device": "eth0"}
    assert (eth0[metric].service, eth0[metric].host, eth0[metric].source) == (
        "api-gateway",
        "node-1",
        "network",
    )


def test_loopback_excluded_and_nic_without_speed_has_no_speed_sample() -> None:
    results = {r.target: r for r in _collector().collect()}
    assert "lo" not in results
    assert "node_network_speed_bytes" not in {s.metric for s in results["veth1"].samples}


def test_tcp_retransmits_read_by_column_name() -> None:
    assert parse_snmp_retrans((FIX / "proc/net/snmp").read_text()) == 4321
    tcp = {r.target: r for r in _collector().collect()}["tcp"]
    assert [(s.metric, s.value) for s in tcp.samples] == [("node_netstat_Tcp_RetransSegs", 4321.0)]


def test_only_listed_devices_when_configured() -> None:
    assert [r.target for r in _collector(devices=["veth1"]).collect()] == ["veth1", "tcp"]


def test_missing_proc_becomes_failed_results_not_an_exception(tmp_path: Path) -> None:
    c = NetworkCollector(NetworkConfig(proc_path=str(tmp_path), sys_path=str(tmp_path)), clock=lambda: NOW)
    assert c.available() is not None
    results = list(c.collect())
    assert results and not any(r.ok for r in results) and all(r.error for r in results)


def test_real_proc_of_this_machine_parses() -> None:
    nics = parse_net_dev(Path("/proc/net/dev").read_text())
    assert any(n.device == "lo" for n in nics)
    assert parse_snmp_retrans(Path("/proc/net/snmp").read_text()) is not None
    assert all(r.ok for r in NetworkCollector(NetworkConfig()).collect())

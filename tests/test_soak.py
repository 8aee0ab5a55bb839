"""A short soak of the real `hopscope collect` (testbed/soak.py): OpenTelemetry SDK clients, probes, host
network and a real Prometheus + node_exporter, rollups and maintenance, under two CPU hogs.

Each part has its own tests; this one catches what only shows when they all run together for a while:
a maintenance run that blocks the writer into refusals, a store error after a compaction, rollups that
fall behind, a daemon that does not stop on SIGTERM. It takes about 3 minutes (marked slow).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.binaries import require_binary

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # testbed/ is not an installed package
    sys.path.insert(0, str(ROOT))

from testbed.soak import SoakConfig, format_summary, run_soak  # noqa: E402

ROLLUP_S = 10.0


@pytest.mark.slow
def test_a_soak_under_cpu_hogs_stores_each_acknowledged_span_once_and_keeps_rollups_on_time() -> None:
    prometheus = require_binary("/usr/bin/prometheus", "prometheus")
    node_exporter = require_binary("/usr/bin/prometheus-node-exporter", "prometheus-node-exporter")
    r = run_soak(
        SoakConfig(
            seconds=140,
            spans_per_second=300,
            hogs=2,
            rollup_interval_s=ROLLUP_S,
            maintain_interval_s=30,
            batch_size=128,
            span_age_s=60,  # so the rollup (which waits 2 minutes for late spans) writes rows in time
            prometheus_bin=prometheus,
            node_exporter_bin=node_exporter,
        ),
        progress=None,
    )
    summary = "\n" + format_summary(r)
    assert r.acknowledged > 0.9 * 300 * 140, f"the clients sent too little to judge{summary}"
    assert r.refused_total == 0, f"the daemon refused spans: {r.refused}{summary}"
    assert r.store_errors_total == 0, f"the store refused writes: {r.store_errors}{summary}"
    assert r.failed == 0, f"{r.failed} spans were in SDK exports that failed{summary}"
    assert r.dropped == 0, f"{r.dropped} spans were dropped from the SDK queues, never exported{summary}"
    assert r.lost == 0 and r.acked_missing == 0, (
        f"acknowledged {r.acknowledged}, stored distinct {r.spans_distinct}: lost {r.lost}, "
        f"acknowledged but missing {r.acked_missing}{summary}"
    )
    assert r.duplicates == 0, f"stored {r.spans_stored} spans, {r.spans_distinct} distinct{summary}"
    assert r.rollup_lag_max_s is not None and r.rollup_lag_max_s <= 2 * ROLLUP_S, (
        f"rollup lag reached {r.rollup_lag_max_s} s, over 2 x {ROLLUP_S:g} s{summary}"
    )
    assert (r.maintenance_ok or 0) >= 3 and r.maintenance_failed == 0, (
        f"maintenance cycles ok {r.maintenance_ok}, failed {r.maintenance_failed}{summary}"
    )
    assert (r.hop_minutes_rows or 0) > 0, f"no hop_minutes rows were rolled up{summary}"
    for source in ("prometheus", "probe", "network"):
        assert r.samples_by_source.get(source, 0) > 0, f"no samples from {source}{summary}"
    assert r.daemon_exit_code == 0 and r.stop_seconds is not None and r.stop_seconds <= 15, (
        f"the daemon exited {r.daemon_exit_code} {r.stop_seconds} s after SIGTERM{summary}"
    )

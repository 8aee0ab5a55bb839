"""Scenario sweep: every small scenario in tests/fixtures/scenarios is generated, its events are
diagnosed and scored on (hop, dimension) against the ground truth the generator writes; each also
gets a healthy control window. Run with -s to see the accuracy and the confusion table (the same
report as `benchmarks/diagnosis_sweep.py`).

The generator's YAML cannot drop a collector, give two true causes for one event or breach on
errors: those cases are hand-built in tests/test_diagnosis.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from testbed import sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Every scenario generated once for the module (one at a time), diagnosed, then scored."""
    assert len(sweep.SCENARIOS) >= 8
    result = sweep.run_sweep(sweep.SCENARIOS, tmp_path_factory.mktemp("sweep"))
    print("\n" + result.report())
    return result


@pytest.mark.slow
def test_sweep_names_the_true_hop_and_dimension_first_in_nine_of_ten_incidents(summary: object) -> None:
    assert summary.top1 >= 0.9, summary.report()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_sweep_lists_the_true_cause_among_the_top_three_in_every_incident(summary: object) -> None:
    assert summary.top3 == 1.0, summary.report()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_sweep_invents_no_cause_for_healthy_windows(summary: object) -> None:
    healthy = summary.healthy  # type: ignore[attr-defined]
    assert len(healthy) >= len(sweep.SCENARIOS)  # every scenario's control window, plus its healthy events
    assert summary.invented == [], summary.report()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_sweep_covers_every_hop_kind_and_dimension_and_a_cause_with_no_signal(summary: object) -> None:
    wanted = {c.expected for c in summary.causal}  # type: ignore[attr-defined]
    hops = {h for h, _ in wanted}
    assert {"api-gateway->model-server", "api-gateway->feature-store"} & hops  # network hops
    assert {"api-gateway", "feature-store", "model-server"} <= hops  # every service's self time
    assert {d for _, d in wanted} >= {"compute", "bandwidth", "memory", "unknown"}


def test_control_window_is_the_event_hours_a_day_earlier_unless_an_event_touches_them() -> None:
    ev = {"start": datetime(2026, 1, 3, 10), "end": datetime(2026, 1, 3, 11)}
    assert sweep.control_window(ev, [ev]) == (datetime(2026, 1, 2, 10), datetime(2026, 1, 2, 11))
    earlier = {"start": datetime(2026, 1, 2, 9, 30), "end": datetime(2026, 1, 2, 9, 40)}
    assert sweep.control_window(ev, [ev, earlier]) is None

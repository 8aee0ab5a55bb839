"""SLO state on the daemon's /metrics: the hopscope_slo_* gauges equal `hopscope slo status --json` at the
same time, and the page passes `promtool check metrics` (Debian's prometheus package)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.binaries import require_binary
from support.demo import RULES, breach_for, truth
from support.waiting import wait_until
from typer.testing import CliRunner

from hopscope.alerting import METRICS, STATE_KEY
from hopscope.alerting.fresh import WATERMARK_KEY, evaluate_fresh, overlay
from hopscope.cli import app
from hopscope.collectors.runner import Daemon
from hopscope.collectors.selfmetrics import SelfMetrics
from hopscope.config.alerting import AlertingConfig
from hopscope.config.collect import CollectConfig
from hopscope.health import read_status
from hopscope.rollup import rollup_spans
from hopscope.slo import MinuteArrays, evaluate_many, load_slos
from hopscope.store import Store

PROMTOOL = "/usr/bin/promtool"


@pytest.fixture(scope="module")
def daemon(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Path]]:
    """`hopscope collect` on a copy of the demo store, its SLOs evaluated every second in the flash sale
    (the tests only read it)."""
    path = tmp_path_factory.mktemp("slo-metrics") / "store"
    shutil.copytree(demo_store, path)
    at = breach_for(demo_store, truth(demo_store, "flash-sale"))["start"] + timedelta(minutes=15)
    store = Store(path, create=False)
    slos, _ = load_slos(RULES)
    cfg = CollectConfig.model_validate({"otlp": {"enabled": False}, "metrics": {"port": 0}})
    d = Daemon(
        store,
        cfg,
        collectors=[],
        out=io.StringIO(),
        slos=slos,
        alerting=AlertingConfig(evaluation_interval=timedelta(seconds=1)),
        slo_clock=lambda: at,
    )
    d.start()
    try:
        yield d, path
    finally:
        d.stop()
        store.close()


def _evaluated(d: Daemon) -> None:
    wait_until(
        lambda: "\nhopscope_slo_evaluation_timestamp_seconds " in _scrape(d), 30, "a first SLO evaluation"
    )


def _firing_in_status_file(store: Path) -> int:
    status = read_status(store)
    return int((status.alerting or {}).get("firing", 0)) if status is not None else 0


def _scrape(d: Daemon) -> str:
    return requests.get(f"http://127.0.0.1:{d.metrics_port}/metrics", timeout=5).text


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, f"{name}{labels}: {found}"
    return found[0] if found else None


def test_slo_gauges_equal_slo_status_json_at_the_same_time(daemon: tuple[Daemon, Path]) -> None:
    d, path = daemon
    _evaluated(d)
    samples = _samples(_scrape(d))  # one scrape: one evaluation's values
    at = datetime.fromtimestamp(_one(samples, "hopscope_slo_evaluation_timestamp_seconds") or 0, UTC)
    now = at.replace(tzinfo=None).isoformat()
    result = CliRunner().invoke(
        app, ["slo", "status", "--json", "--store", str(path), "--rules", RULES, "--now", now]
    )
    assert result.exit_code == 0, result.output
    statuses: list[dict[str, Any]] = json.loads(result.stdout)
    slos = {s.name: s for s in load_slos(RULES)[0]}
    assert {s["slo"] for s in statuses} == set(slos) and len(statuses) == 3
    firing_seen = 0
    for s in statuses:
        slo = slos[s["slo"]]
        ids = {"slo": s["slo"], "service": slo.service or "", **slo.labels}
        assert _one(samples, "hopscope_slo_objective_ratio", **ids) == s["objective"]
        assert _one(samples, "hopscope_slo_window_seconds", **ids) == 28 * 86400
        assert _one(samples, "hopscope_slo_sli_ratio", **ids) == pytest.approx(s["sli"], rel=1e-12)
        assert _one(samples, "hopscope_slo_error_budget_remaining_ratio", **ids) == pytest.approx(
            s["budget_remaining"], rel=1e-12
        )
        assert _one(samples, "hopscope_slo_period_events", **ids) == s["total"]
        assert _one(samples, "hopscope_slo_period_good_events", **ids) == s["good"]
        assert _one(samples, "hopscope_slo_data_gap_seconds", **ids) == s["gap_minutes"] * 60
        tte = s["time_to_exhaustion"]  # seconds; the JSON's and the gauge's roundings differ by 1 us
        want = None if tte is None else pytest.approx(tte, abs=2e-6)
        assert _one(samples, "hopscope_slo_time_to_exhaustion_seconds", **ids) == want
        assert s["burn_rates"], "the flash sale burns in every window"
        for window, burn in s["burn_rates"].items():
            assert _one(samples, "hopscope_slo_burn_rate", **ids, window=window) == pytest.approx(
                burn, rel=1e-12
            )
        for tier in slo.alerting.active_tiers:
            value = _one(samples, "hopscope_slo_alert_firing", **ids, severity=tier.severity,
                         long_window=tier.label.split("/")[0], short_window=tier.label.split("/")[1])  # fmt: skip
            assert value == (1.0 if f"{tier.severity} {tier.label}" in s["firing"] else 0.0)
            firing_seen += int(value or 0)
    assert firing_seen >= 2, "the flash sale fires page tiers"


def test_metrics_page_passes_promtool_check_metrics(daemon: tuple[Daemon, Path]) -> None:
    promtool = require_binary(PROMTOOL, "prometheus")
    d, path = daemon
    _evaluated(d)
    text = _scrape(d)
    for name in METRICS:
        assert f"# TYPE {name} gauge" in text
    for name in ("hopscope_slo_evaluations_total", "hopscope_alerts"):
        assert name in text
    # The daemon keeps its alerts in the store (through its one writer) and says so in its status file.
    wait_until(lambda: d.store.get_state(STATE_KEY), 30, "the alert state in the store")
    assert '"severity": "page"' in (d.store.get_state(STATE_KEY) or "")
    wait_until(lambda: _firing_in_status_file(path) >= 2, 10, "the firing alerts in the status file")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_dashboard_charts_only_metrics_the_daemon_exposes() -> None:
    """Every metric docs/grafana-slo-dashboard.json queries is one the daemon serves (a renamed metric
    would leave an empty panel)."""
    dashboard = json.loads(
        (Path(__file__).resolve().parents[1] / "docs" / "grafana-slo-dashboard.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["definition"])
    used = {m for e in exprs for m in re.findall(r"hopscope_[a-z_]+", e)}
    families = list(SelfMetrics().registry.collect())
    served = set(METRICS) | {f.name + ("_total" if f.type == "counter" else "") for f in families}
    assert used and used <= served, used - served


T0 = datetime(2026, 11, 20, 10, 0)


def _root_spans(minutes: int, slow_from: int, per_minute: int = 60) -> pa.Table:
    """Root SERVER spans of api-gateway /recommend: 20-180 ms, then 450 ms from minute ``slow_from``."""
    rng = np.random.default_rng(7)
    n = minutes * per_minute
    offset_us = np.arange(n) * (60_000_000 // per_minute)
    start = np.datetime64(T0, "us") + offset_us.astype("timedelta64[us]")
    ms = np.where(np.arange(n) // per_minute >= slow_from, 450.0, rng.uniform(20, 180, n))
    return pa.table(
        {
            "trace_id": [int(i).to_bytes(16, "big") for i in range(n)],
            "span_id": [int(i).to_bytes(8, "big") for i in range(n)],
            "parent_span_id": pa.array([None] * n, pa.binary()),
            "service": ["api-gateway"] * n,
            "name": ["POST /recommend"] * n,
            "kind": [2] * n,
            "start_time": start,
            "duration_ms": ms,
            "status_code": [0] * n,
            "http_route": ["/recommend"] * n,
            "http_status_code": [200] * n,
        }
    )


def test_minutes_past_the_rollup_watermark_are_read_from_the_raw_spans(tmp_path: Path) -> None:
    """The alert loop does not wait for the rollup's 2 min grace: the minutes past its watermark come
    from the raw spans, and count as the rollup later counts them."""
    slo = next(s for s in load_slos(RULES)[0] if s.name == "recommend-latency")
    spans = _root_spans(30, slow_from=22)
    now = T0 + timedelta(minutes=30)
    store = Store(tmp_path / "store")
    try:
        store.append("spans", spans)
        rolled_up_to = T0 + timedelta(minutes=20)
        early = store.query("SELECT * FROM spans WHERE start_time < ?", [rolled_up_to])
        store.append("hop_minutes", rollup_spans(early, [200.0]))
        store.set_state(WATERMARK_KEY, rolled_up_to.isoformat())
        late = evaluate_many(store, [slo], now=now)[0]
        fresh = evaluate_fresh(store, [slo], now)[0]
        assert late.firing == () and late.total == 20 * 60, (
            "hop_minutes alone: the slow minutes are not there"
        )
        assert fresh.total == 30 * 60 and "page 1h/5m" in fresh.firing
        assert any("read from raw spans" in n for n in fresh.notes)

        rest = store.query("SELECT * FROM spans WHERE start_time >= ?", [rolled_up_to])
        store.append("hop_minutes", rollup_spans(rest, [200.0]))
        store.set_state(WATERMARK_KEY, now.isoformat())
        caught_up = evaluate_many(store, [slo], now=now)[0]
    finally:
        store.close()
    assert (fresh.good, fresh.total, fresh.firing) == (caught_up.good, caught_up.total, caught_up.firing)
    assert fresh.burn_rates == pytest.approx(caught_up.burn_rates, rel=1e-12)


def test_overlay_replaces_the_minutes_the_tail_covers() -> None:
    base = MinuteArrays(100, np.array([1.0, 1, 1, 1]), np.array([2.0, 2, 2, 2]))
    tail = MinuteArrays(102, np.array([0.0, 0, 5]), np.array([3.0, 3, 9]))
    out = overlay(base, tail)
    assert (out.t0, out.good.tolist(), out.total.tolist()) == (100, [1, 1, 0, 0], [2, 2, 3, 3])

"""SLO engine over a real DuckLake store: minute frames from hop_minutes, status, breaches, CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hopscope import histogram
from hopscope.slo import evaluate, evaluate_many, find_breaches, load_slos, minute_series
from hopscope.slo.cli import app
from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "slo_rules"
T0 = datetime(2025, 6, 1)
N = 4 * 1440  # four days of minutes


def _row(
    minute: datetime, client: str, server: str, durations: np.ndarray, errors: int, thresholds: list[float]
) -> dict:
    idx, cnt = histogram.from_values(durations)
    return {
        "minute": minute,
        "client": client,
        "server": server,
        "route": "/recommend",
        "count": len(durations),
        "errors": errors,
        "duration_ms_sum": float(durations.sum()),
        "duration_ms_max": float(durations.max()),
        "client_ms_sum": 0.0,
        "server_ms_sum": float(durations.sum()),
        "gap_ms_sum": 0.0,
        "self_ms_sum": 0.0,
        "skewed": 0,
        "hist_idx": idx,
        "hist_cnt": cnt,
        "good_le_ms": thresholds,
        "good_cnt": [int((durations <= t).sum()) for t in thresholds],
        "exemplars": [],
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Four days of 20 req/min; on day 3, 09:00-10:00, half the requests take 400 ms and 10% fail.

    The entry edge keeps the exact 200 ms count; the model-server edge keeps no exact
    counts, so its 150 ms SLI reads the histogram.
    """
    rng = np.random.default_rng(42)
    rows = []
    incident = (2 * 1440 + 9 * 60, 2 * 1440 + 10 * 60)
    for m in range(N):
        if 3 * 1440 <= m < 3 * 1440 + 30:
            continue  # a 30-minute collection gap on day 4
        slow = incident[0] <= m < incident[1]
        d = rng.uniform(20, 120, 20)
        if slow:
            d[:10] = 400.0
        minute = T0 + timedelta(minutes=m)
        rows.append(_row(minute, "", "api-gateway", d, 2 if slow else 0, [200.0]))
        rows.append(_row(minute, "api-gateway", "model-server", d * 0.6, 0, []))
    s = Store(tmp_path_factory.mktemp("slo") / "store")
    s.append("hop_minutes", pd.DataFrame(rows))
    yield s
    s.close()


@pytest.fixture(scope="module")
def slos() -> dict:
    got, errors = load_slos(RULES)
    assert errors == []
    return {s.name: s for s in got}


def test_minute_series_reads_exact_counts_and_falls_back_to_the_histogram(store: Store, slos: dict) -> None:
    start = T0 + timedelta(days=2, hours=9)
    lat = minute_series(store, slos["recommend-latency"], start, start + timedelta(hours=1))
    assert len(lat) == 60 and (lat["total"] == 20).all() and (lat["good"] == 10).all()
    avail = minute_series(store, slos["recommend-availability"], start, start + timedelta(hours=1))
    assert (avail["good"] == 18).all()
    gpu = minute_series(store, slos["model-server-latency"], start, start + timedelta(hours=1))
    # 240 ms > 150 ms for the slow half; the rest 12..72 ms, all in buckets below 150 ms
    assert (gpu["good"] == 10).all() and (gpu["total"] == 20).all()
    quiet = minute_series(store, slos["recommend-latency"], T0, T0 + timedelta(hours=1))
    assert (quiet["good"] == quiet["total"]).all()


def test_the_collection_gap_has_no_rows_and_is_reported(store: Store, slos: dict) -> None:
    now = T0 + timedelta(days=3, hours=1)
    st = evaluate(store, slos["recommend-availability"], now=now)
    gap = (T0 + timedelta(days=3), T0 + timedelta(days=3, minutes=30))
    assert gap in st.gaps
    assert st.total == (N - (N - 3 * 1440 - 60) - 30) * 20


def test_evaluate_many_matches_evaluate_one_by_one(store: Store, slos: dict) -> None:
    now = T0 + timedelta(days=2, hours=9, minutes=30)
    many = evaluate_many(store, list(slos.values()), now=now)
    assert many == [evaluate(store, s, now=now) for s in slos.values()]
    by = {s.slo: s for s in many}
    assert by["recommend-latency"].alert_state == "page"
    assert by["recommend-latency"].burn_rates["5m"] == pytest.approx(0.5 / 0.01)
    assert by["recommend-availability"].burn_rates["1h"] == pytest.approx((30 * 2) / (60 * 20) / 0.001)


def test_find_breaches_over_stored_history_is_stable(store: Store, slos: dict) -> None:
    slo = slos["recommend-latency"]
    first = find_breaches(store, slo)
    assert first == find_breaches(store, slo)
    pages = [b for b in first if b.severity == "page"]
    assert len(pages) == 1
    b = pages[0]
    # 28d SLO: page factor 2% x 672h / 1h = 13.44; after k bad minutes the 1h window burns
    # k/60 x 0.5 / 0.01 = 0.833k, first above 13.44 at k = 17, the minute starting 09:16
    assert b.start == T0 + timedelta(days=2, hours=9, minutes=16)
    assert b.peak_burn_rate == pytest.approx(50.0)


runner = CliRunner()


def test_cli_check_lists_the_shipped_slos() -> None:
    r = runner.invoke(app, ["check", "--rules", str(RULES)])
    assert r.exit_code == 0, r.output
    assert "recommend-latency: latency, objective 0.99, window 28d" in r.output
    assert "3 SLO(s) valid" in r.output


def test_cli_check_fails_on_a_bad_spec(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: hopscope/v1\nkind: SLO\nmetadata: {name: x}\nspec: {objective: 99.9, sli: {kind: availability, service: a}}\n"
    )
    r = runner.invoke(app, ["check", "--rules", str(tmp_path / "bad.yaml")])
    assert r.exit_code != 0
    assert "spec.objective: 99.9 is not a ratio in (0, 1); write 0.999" in r.output + str(r.exception)


def test_cli_status_json_shows_budget_and_alert_state(store: Store) -> None:
    now = (T0 + timedelta(days=2, hours=9, minutes=30)).isoformat()
    r = runner.invoke(
        app, ["status", "--store", str(store.path), "--rules", str(RULES), "--json", "--now", now]
    )
    assert r.exit_code == 0, r.output
    rows = {x["slo"]: x for x in json.loads(r.stdout)}
    assert rows["recommend-latency"]["alert_state"] == "page"
    assert 0 < rows["recommend-latency"]["budget_consumed"] < 1
    table = runner.invoke(app, ["status", "--store", str(store.path), "--rules", str(RULES), "--now", now])
    assert "recommend-latency" in table.output and "page" in table.output and "burn 1h" in table.output

"""Cross-check: burn rates from a real Prometheus running the exported rules' expressions on the same
series equal hopscope's own evaluation (hop_minutes in a real DuckLake store) within 1%.

The series are backfilled with ``promtool tsdb create-blocks-from openmetrics`` into a TSDB that a
real ``/usr/bin/prometheus`` then serves on a free loopback port; the exported rule file's
``slo:sli_error:ratio_rate<w>`` expressions are sent to its HTTP API (``/api/v1/query``) at a few
instants. Recording rules cannot run on backfilled history, so the test asks for the expressions
the rules record, at the instants the rules would run.

Why they agree exactly, not just within 1%: every counter is sampled at each minute boundary, and
Prometheus 2.x range selectors are closed at both ends, so ``rate(x[1h])`` at a minute boundary sees
61 samples spanning exactly the 60 minutes hopscope's 1h window sums; ``rate()`` then has nothing to
extrapolate (the first and last samples sit on the range's edges), and where a window reaches back
past the first sample (the 3d window on two days of data) the extrapolation factor is the same for
the numerator and the denominator (same timestamps, both counters start at 0), so it cancels in
the ratio. Measured here: largest relative difference ~1e-13 (float rounding). Off the minute grid
the windows no longer hold the same minutes: queried at hh:mm:30, ``rate()`` sees the events of
w - 30 s and extrapolates them to w, and next to the edge of the error burst the 5m ratios then
differ by up to 37% (tried by hand); Prometheus >= 3 (left-open ranges) would drop one minute of
every window the same way. The period is checked as ``rate()[28d]``, a ratio of sums like
hopscope's; Sloth's ``ratio_rate30d`` recording averages 5m ratios instead (and needs recorded history).
"""

from __future__ import annotations

import socket
import subprocess
import time
from datetime import datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest
from support.binaries import require_binary
from support.servers import stop_process

from hopscope.slo import SLI, SLO, Window, default_window_tables, evaluate_many, with_policy
from hopscope.slo.burn import _dt_int
from hopscope.slo.export import openmetrics_lines, recorded_error_ratio_exprs
from hopscope.store import Store

pytestmark = pytest.mark.slow

T0 = datetime(2025, 3, 1)
DAYS = 2
N = DAYS * 1440
ROUTE = "/recommend"
# Instants on the minute grid: quiet, inside the error burst, inside the slow spell, after both.
INSTANTS = [
    T0 + timedelta(hours=20),
    T0 + timedelta(hours=30, minutes=10),
    T0 + timedelta(hours=30, minutes=25),
    T0 + timedelta(hours=40, minutes=45),
    T0 + timedelta(hours=47, minutes=59),
]


def traffic() -> dict[str, np.ndarray]:
    """Per minute: requests, errors and requests within 200 ms (seeded)."""
    rng = np.random.default_rng(4242)
    minute = np.arange(N)
    rate = 400 + 200 * np.sin(2 * np.pi * minute / 1440)  # a daily cycle
    total = rng.poisson(rate).astype(float)
    err_p = np.where((minute >= 30 * 60) & (minute < 30 * 60 + 20), 0.3, 0.001)  # a 20-minute error burst
    slow_p = np.where((minute >= 39 * 60) & (minute < 41 * 60), 0.08, 0.003)  # two slow hours
    errors = rng.binomial(total.astype(int), err_p).astype(float)
    good_latency = total - rng.binomial(total.astype(int), slow_p)
    return {"total": total, "errors": errors, "good_latency": good_latency}


def _slos() -> dict[str, SLO]:
    """The same two objectives twice: read from hop_minutes by hopscope, and from Prometheus."""
    table = default_window_tables()["sre-workbook"]
    window = Window("rolling", timedelta(days=28))

    def make(name: str, objective: float, sli: SLI) -> SLO:
        return with_policy(SLO(name, "", objective, window, sli, service="recs"), table)

    return {
        "hop-availability": make(
            "hop-availability", 0.999, SLI("availability", service="api-gateway", route=ROUTE)
        ),
        "hop-latency": make(
            "hop-latency", 0.99, SLI("latency", service="api-gateway", route=ROUTE, threshold_ms=200.0)
        ),
        "prom-availability": make(
            "prom-availability",
            0.999,
            SLI(
                "prometheus_ratio",
                error_query=f'sum(rate(http_server_requests_total{{route="{ROUTE}",code="5xx"}}[{{{{.window}}}}]))',
                total_query=f'sum(rate(http_server_requests_total{{route="{ROUTE}"}}[{{{{.window}}}}]))',
            ),
        ),
        "prom-latency": make(
            "prom-latency",
            0.99,
            SLI(
                "prometheus_histogram",
                metric="http_server_request_duration_seconds",
                selector=f'route="{ROUTE}"',
                le="0.2",
                threshold_ms=200.0,
            ),
        ),
    }


def _hop_minutes(t: dict[str, np.ndarray]) -> pd.DataFrame:
    n = len(t["total"])
    count = t["total"].astype(np.int64)
    return pd.DataFrame(
        {
            "minute": pd.date_range(T0, periods=n, freq="min"),
            "client": "",
            "server": "api-gateway",
            "route": ROUTE,
            "count": count,
            "errors": t["errors"].astype(np.int64),
            "duration_ms_sum": count * 80.0,
            "duration_ms_max": 900.0,
            "client_ms_sum": 0.0,
            "server_ms_sum": count * 80.0,
            "gap_ms_sum": 0.0,
            "self_ms_sum": 0.0,
            "skewed": 0,
            "hist_idx": [[46]] * n,
            "hist_cnt": [[int(c)] for c in count],
            "good_le_ms": [[200.0]] * n,
            "good_cnt": [[int(g)] for g in t["good_latency"]],
            "exemplars": [[]] * n,
        }
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real Prometheus serving the backfilled series; yields its base URL."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    binary = require_binary("/usr/bin/prometheus", "prometheus")
    tmp = tmp_path_factory.mktemp("prom")
    t = traffic()
    t0 = _dt_int(T0)
    series = [
        ("http_server_requests_total", {"route": ROUTE, "code": "2xx"}, t0, t["total"] - t["errors"]),
        ("http_server_requests_total", {"route": ROUTE, "code": "5xx"}, t0, t["errors"]),
        ("http_server_request_duration_seconds_count", {"route": ROUTE}, t0, t["total"]),
        ("http_server_request_duration_seconds_bucket", {"route": ROUTE, "le": "0.2"}, t0, t["good_latency"]),
    ]
    om = tmp / "series.om"
    with om.open("w") as f:
        for chunk in openmetrics_lines(series):
            f.write(chunk)
    tsdb = tmp / "tsdb"
    r = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(tsdb)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    config = tmp / "prometheus.yml"
    config.write_text("global: {scrape_interval: 1m, evaluation_interval: 1m}\n")
    port = _free_port()
    log = (tmp / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            "--storage.tsdb.retention.time=3650d",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield url
    finally:
        stop_process(proc, 20)
        log.close()


@pytest.fixture(scope="module")
def hopscope_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("hop") / "store")
    store.append("hop_minutes", _hop_minutes(traffic()))
    yield store
    store.close()


def _query(url: str, expr: str, at: datetime) -> float | None:
    r = httpx.get(
        f"{url}/api/v1/query",
        params={"query": expr, "time": f"{(pd.Timestamp(at) - pd.Timestamp(0)).total_seconds():.0f}"},
        timeout=30,
    )
    r.raise_for_status()
    body = r.json()
    assert body["status"] == "success", body
    result = body["data"]["result"]
    if not result:
        return None
    assert len(result) == 1, result
    v = float(result[0]["value"][1])
    return None if np.isnan(v) else v


@pytest.mark.parametrize("kind", ["availability", "latency"])
def test_prometheus_burn_rates_from_the_exported_rules_equal_hopscopes_within_one_percent(
    kind: str, prometheus: str, hopscope_store: Store
) -> None:
    slos = _slos()
    ours, theirs = slos[f"hop-{kind}"], slos[f"prom-{kind}"]
    exprs = recorded_error_ratio_exprs(theirs)
    assert set(exprs) == {"5m", "30m", "1h", "6h", "3d"}
    compared, worst = 0, 0.0
    for at in INSTANTS:
        (status,) = evaluate_many(hopscope_store, [ours], now=at, breaches=False)
        for window, expr in exprs.items():
            ratio = _query(prometheus, expr, at)
            prom_burn = None if ratio is None else ratio / theirs.error_budget
            mine = status.burn_rates[window]
            assert mine is not None and prom_burn is not None, (at, window)
            assert prom_burn == pytest.approx(mine, rel=0.01, abs=1e-9), (at, window, prom_burn, mine)
            compared += 1
            worst = max(worst, abs(prom_burn - mine) / max(abs(mine), 1e-12))
        # the period: the same ratio of sums over 28d (all the data), i.e. hopscope's budget consumed
        period_ratio = _query(prometheus, exprs["5m"].replace("[5m]", "[28d]"), at)
        assert period_ratio / theirs.error_budget == pytest.approx(status.budget_consumed, rel=0.01)
    assert compared == len(INSTANTS) * 5
    print(f"{kind}: {compared} burn rates compared with Prometheus, largest relative difference {worst:.1e}")
    # and the data did burn: the error burst (300x) and the slow spell (8x) show in both
    peak = max(_query(prometheus, exprs["5m"], at) or 0.0 for at in INSTANTS) / theirs.error_budget
    assert peak > 6

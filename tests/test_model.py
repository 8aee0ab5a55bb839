"""The shared ideas (hop, time range, series key, UTC time) and the computations defined once in SQL
and in Python (histogram quantiles, counter rates): each SQL tied to its Python twin on the same data."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from hopscope import histogram
from hopscope.durations import parse_utc
from hopscope.errors import StoreError
from hopscope.model import Hop, SeriesKey, TimeRange
from hopscope.query import samples, windows
from hopscope.rates import counter_rate_sql, counter_rates
from hopscope.signals import load_series
from hopscope.store import Store

T0 = datetime(2026, 3, 2, 10, 0)


@pytest.mark.parametrize(
    "text,hop",
    [
        ("api-gateway->model-server", Hop("api-gateway", "model-server", "network")),
        ("model-server", Hop("", "model-server", "service")),
        ("external->api-gateway", Hop("external", "api-gateway")),
    ],
)
def test_a_hop_reads_back_from_the_name_it_prints(text: str, hop: Hop) -> None:
    assert Hop.parse(text) == hop
    assert str(hop) == text


def test_the_sql_name_of_a_hop_is_the_python_one() -> None:
    got = duckdb.sql(f"SELECT {Hop.sql('c', 's')} AS h FROM (SELECT 'gw' AS c, 'model' AS s)").fetchone()
    assert got == (str(Hop("gw", "model")),)


def test_a_time_range_must_end_after_it_starts() -> None:
    assert TimeRange(T0, T0 + timedelta(minutes=5)).seconds == 300
    with pytest.raises(StoreError, match="not after its start"):
        TimeRange(T0, T0)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-03-02T10:00", T0),
        ("2026-03-02T10:00:00Z", T0),
        ("2026-03-02T12:00+02:00", T0),
        (" 2026-03-02 10:00 ", T0),
    ],
)
def test_times_are_read_as_naive_utc(text: str, expected: datetime) -> None:
    assert parse_utc(text) == expected


def test_a_time_that_is_not_iso_is_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match="'yesterday' is not an ISO time"):
        parse_utc("yesterday")


def test_a_series_key_leaves_out_empty_names_and_labels_without_a_value() -> None:
    key = SeriesKey.of("m", None, "", {"phase": "tls", "device": None, "gpu": "0"})
    assert str(key) == 'm{gpu="0",phase="tls"}'
    assert SeriesKey.of("m", "svc", "h1", [("b", "2"), ("a", "1")]) == SeriesKey.of(
        "m", "svc", "h1", {"a": "1", "b": "2"}
    )


def test_the_series_key_built_in_sql_is_the_python_one() -> None:
    rows = [
        ("m", "svc", "h1", {"gpu": "0", "device": "eth0"}),
        ("m", "", None, {"target": "http://x/", "phase": None}),
        ("n", None, "h2", {}),
        ("n", "svc", "", {"empty": ""}),
    ]
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE t (i INT, metric VARCHAR, service VARCHAR, host VARCHAR, labels MAP(VARCHAR, VARCHAR))"
    )
    for i, (m, s, h, labels) in enumerate(rows):
        con.execute(
            "INSERT INTO t VALUES (?, ?, ?, ?, MAP(?::VARCHAR[], ?::VARCHAR[]))",
            [i, m, s, h, list(labels), list(labels.values())],
        )
    got = [k for (k,) in con.execute(f"SELECT {SeriesKey.SQL} FROM t ORDER BY i").fetchall()]
    assert got == [str(SeriesKey.of(m, s, h, labels)) for m, s, h, labels in rows]


def _histograms(rng: random.Random) -> dict[str, list[tuple[list[int], list[int]]]]:
    """Per group a few sparse histograms (one per minute); one group's counts put a cut on a bucket's edge."""
    out: dict[str, list[tuple[list[int], list[int]]]] = {}
    for g in ("a", "b", "c"):
        rows = []
        for _ in range(rng.randint(1, 4)):
            idx = sorted(rng.sample(range(-20, 80), rng.randint(1, 12)))
            rows.append((idx, [rng.randint(1, 50) for _ in idx]))
        out[g] = rows
    out["edge"] = [([10, 20], [50, 25]), ([30], [25])]  # p50 lands exactly on bucket 10's running count
    return out


def test_histogram_quantiles_in_sql_are_the_python_ones() -> None:
    data = _histograms(random.Random(42))
    con = duckdb.connect()
    con.execute("CREATE TABLE rows (g VARCHAR, hist_idx INT[], hist_cnt BIGINT[])")
    for g, hists in data.items():
        for idx, cnt in hists:
            con.execute("INSERT INTO rows VALUES (?, ?, ?)", [g, idx, cnt])
    qs = {"p10": 0.1, "p50": 0.5, "p95": 0.95, "p99": 0.99, "p100": 1.0}
    got = con.execute(f"SELECT * FROM ({histogram.quantiles_sql('rows', ['g'], qs)}) ORDER BY g").fetchall()
    assert [r[0] for r in got] == sorted(data)
    for row in got:
        idx, cnt = histogram.merge(*zip(*data[row[0]], strict=True))
        expected = [histogram.quantile(idx, cnt, q) for q in qs.values()]
        assert list(row[1:]) == pytest.approx(expected, rel=1e-12)
    assert dict(zip(qs, got[[r[0] for r in got].index("edge")][1:], strict=True))["p50"] == pytest.approx(
        float(histogram.bucket_value(10))
    )


# Two counters sampled every 15 s: "a" restarts from 0 before its 5th sample, "b" twice, once at a bucket's edge.
COUNTER_TS = [T0 + timedelta(seconds=15 * i) for i in range(12)]
COUNTERS = {
    "a": [0.0, 150.0, 300.0, 450.0, 150.0, 300.0, 450.0, 600.0, 750.0, 900.0, 1050.0, 1200.0],
    "b": [10.0, 20.0, 30.0, 40.0, 5.0, 15.0, 25.0, 35.0, 0.0, 100.0, 200.0, 300.0],
}


def test_counter_rates_in_sql_are_the_python_ones_across_resets() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE s (sid INT, b INT, ts TIMESTAMP, value DOUBLE)")
    for sid, values in enumerate(COUNTERS.values()):
        for ts, v in zip(COUNTER_TS, values, strict=True):
            con.execute("INSERT INTO s VALUES (?, ?, ?, ?)", [sid, (ts - T0) // timedelta(minutes=1), ts, v])
    sql = counter_rate_sql("s", ["sid"], "b")
    got = {(sid, b): v for sid, b, v, _ in con.execute(f"SELECT * FROM ({sql}) ORDER BY sid, b").fetchall()}

    series = np.repeat(np.arange(len(COUNTERS)), len(COUNTER_TS))
    us = np.tile([(t - datetime(1970, 1, 1)) // timedelta(microseconds=1) for t in COUNTER_TS], len(COUNTERS))
    value = np.concatenate([np.array(v) for v in COUNTERS.values()])
    buckets = np.tile([(t - T0) // timedelta(minutes=1) for t in COUNTER_TS], len(COUNTERS))
    cells, rates = counter_rates(series, us, value, series * 10 + buckets)
    assert got == pytest.approx({(int(c) // 10, int(c) % 10): r for c, r in zip(cells, rates, strict=True)})
    # a reset counts the new value as the increase: "a" rises 150 per sample throughout
    assert [got[(0, b)] for b in range(3)] == pytest.approx([10.0, 10.0, 10.0])


def test_the_evidence_chart_reads_a_counter_as_the_diagnosis_does_across_a_reset(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    n = len(COUNTER_TS)
    store.append(
        "samples",
        pa.table(
            {
                "ts": pa.array(COUNTER_TS * 2, pa.timestamp("us")),
                "metric": ["node_network_receive_bytes_total"] * 2 * n,
                "value": COUNTERS["a"] + COUNTERS["b"],
                "source": ["test"] * 2 * n,
                "service": ["api-gateway"] * 2 * n,
                "host": ["gw-1"] * 2 * n,
                "labels": pa.array(
                    [[("device", "eth0")]] * n + [[("device", "eth1")]] * n, pa.map_(pa.string(), pa.string())
                ),
            }
        ),
    )
    span = TimeRange(T0, T0 + timedelta(minutes=3))
    read = load_series(store, [span], step_s=60)
    w = windows.Window(span.start, span.end, 60, False, None, 60)
    for device in ("eth0", "eth1"):
        labels = {"service": "api-gateway", "host": "gw-1", "device": device}
        chart = samples.evidence_series(store, w, "node_network_receive_bytes_total", labels)
        diagnosis = read[read["labels"].map(lambda lab, d=device: lab.get("device") == d)]
        assert chart["value"].tolist() == pytest.approx(diagnosis["value"].tolist())
        assert len(chart) == 3

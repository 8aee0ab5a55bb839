"""The shared ideas (hop, time range, series key, UTC time) and the computations defined once in SQL
and in Python (histogram quantiles, counter rates): each SQL tied to its Python twin on the same data."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pytest

from hopscope.durations import parse_utc
from hopscope.errors import StoreError
from hopscope.model import Hop, SeriesKey, TimeRange

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

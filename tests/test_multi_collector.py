"""Three `hopscope collect` processes on one shared store (PostgreSQL catalog + S3 data), the leader killed.

Real parts: Debian's PostgreSQL in a temporary cluster and moto's S3-compatible server
(tests/store_backends.py), the real daemons as subprocesses, the OpenTelemetry SDK (OTLP/HTTP) as
clients. The scenario is testbed/fleet.py; by hand, for longer:

    HOPSCOPE_FLEET_SECONDS=120 .venv/bin/python -m pytest -s tests/test_multi_collector.py
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
from store_backends import PostgresServer, S3Server, Stores

from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # testbed/ is not an installed package
    sys.path.insert(0, str(ROOT))

from testbed.fleet import FleetConfig, run_fleet  # noqa: E402

LEASE_S = 3.0


def test_three_collectors_store_each_acknowledged_span_once_and_one_leader_at_a_time_rolls_every_minute(
    tmp_path: Path, postgres_server: PostgresServer, s3_server: S3Server
) -> None:
    backend = Stores("postgres+s3", postgres_server, s3_server).backend(tmp_path / "shared")
    assert backend is not None
    seconds = float(os.environ.get("HOPSCOPE_FLEET_SECONDS", "0"))
    r = run_fleet(FleetConfig(work=tmp_path, collectors=3, seconds=seconds, lease_s=LEASE_S), backend)
    print(json.dumps(r.to_dict(), indent=1, default=str))
    logs = "\n".join(f"--- collector {i}:\n{tail}" for i, tail in r.logs.items())

    assert r.acknowledged > 0 and r.acked_missing == 0, logs
    assert r.duplicates == 0, logs
    assert r.read_errors == [] and r.reads > 0
    # One leader at a time, as every collector's /metrics said, sampled every 0.25 s; the terms each
    # collector logged taking are distinct and the killed leader's successor took a later one.
    assert r.scrapes > 20 and r.most_leaders_at_once == 1 and r.rollups_while_standing_by == 0
    assert len({t for t, _ in r.terms}) == len(r.terms) and len(r.terms) >= 2
    # Handed over within the lease (plus a renewal's third and the scrape's period).
    assert r.next_leader not in (None, r.first_leader)
    assert r.takeover_s is not None and r.takeover_s <= LEASE_S * 4 / 3 + 1.5, r.takeover_s
    # No minute skipped or rolled twice: the rollups of two leaders equal one rollup of the same spans.
    assert r.final_watermark is not None and r.first_watermark is not None
    assert r.final_watermark > r.first_watermark
    assert r.hop_minutes_keys_repeated == 0
    assert r.hop_minutes_rows > 0 and r.hop_minutes_equal_to_one_rollup, logs
    assert r.rollup_runs.get("failed", 0) == 0 and r.rollup_runs.get("ok", 0) > 0


def _rows(metric: str, i: int, n: int) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([datetime(2026, 1, 1) + timedelta(seconds=i)] * n, pa.timestamp("us")),
            "metric": [metric] * n,
            "value": [float(i * 1000 + j) for j in range(n)],
            "source": ["test"] * n,
        }
    )


def test_an_append_refused_for_a_conflict_with_another_writer_is_retried_and_stored_once(
    tmp_path: Path, postgres_server: PostgresServer, s3_server: S3Server
) -> None:
    """Another collector's append and the leader's delete-and-insert on one table conflict in DuckLake
    ("Transaction conflict - attempting to insert into table ... but another transaction has deleted
    inlined data from it"): the refused commit is retried, and stored once."""
    stores = Stores("postgres+s3", postgres_server, s3_server)
    appender = stores(tmp_path / "shared")
    leader = appender.clone()  # a connection of its own, as another process would have
    stop = threading.Event()

    def churn() -> None:
        i = 0
        while not stop.is_set():
            leader.replace("samples", "metric = ?", ["leader"], _rows("leader", i, 5))
            i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for i in range(40):
            appender.append("samples", _rows("appended", i, 20))
    finally:
        stop.set()
        thread.join(60)
    counts = appender.query(
        "SELECT count(*) AS n, count(DISTINCT value) AS d FROM samples WHERE metric = 'appended'"
    ).to_pylist()[0]
    assert counts == {"n": 40 * 20, "d": 40 * 20}
    assert appender.conflicts_retried + leader.conflicts_retried > 0  # the conflict did happen
    leader.close()
    appender.close()


def test_collectors_starting_at_once_on_a_new_shared_catalog_all_open_it(
    tmp_path: Path, postgres_server: PostgresServer, s3_server: S3Server
) -> None:
    """Each creates DuckLake's tables; PostgreSQL refuses all but one, and the others attach again."""
    backend = Stores("postgres+s3", postgres_server, s3_server).backend(tmp_path / "new")
    opened: list[Store] = []
    errors: list[Exception] = []

    def open_one(i: int) -> None:
        try:
            opened.append(Store(tmp_path / f"collector-{i}", backend=backend))
        except Exception as exc:  # noqa: BLE001 - the finding
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(opened) == 3
    opened[0].append("samples", _rows("first", 0, 3))
    assert all(s.count("samples") == 3 for s in opened)
    for s in opened:
        s.close()

"""The leader lease (hopscope/leader.py) on a real PostgreSQL catalog database, and the embedded store's
sole leader. The whole fleet (three collectors, the leader killed, no rollup by a collector standing by)
is tests/test_multi_collector.py."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import duckdb
import pytest
from store_backends import PostgresServer, S3Server, Stores

from hopscope.collectors.runner import Daemon
from hopscope.config.collect import CollectConfig
from hopscope.leader import LeaseLeader, SoleLeader, leader_for
from hopscope.store import Backend, Store


class Clock:
    """A monotonic clock the test moves: the lease's own bound is on it; the catalog keeps real time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def backend(tmp_path: Path, postgres_server: PostgresServer, s3_server: S3Server) -> Backend:
    found = Stores("postgres+s3", postgres_server, s3_server).backend(tmp_path / "shared")
    assert found is not None
    return found


def test_one_collector_takes_the_lease_and_another_only_once_it_expires(backend: Backend) -> None:
    a = LeaseLeader(backend, holder="a", lease_s=1.0)
    b = LeaseLeader(backend, holder="b", lease_s=1.0)
    a._connection(), b._connection()  # connected first: the lease counts from the start of a renewal
    first = a.renew()
    assert first is not None and first.holder == "a" and a.is_leader()
    seen = b.renew()
    assert seen is not None and seen.holder == "a" and not b.is_leader()
    # a stops renewing (dies): b takes the row once it has expired, in a new term.
    time.sleep(1.1)
    taken = b.renew()
    assert taken is not None and (taken.holder, taken.term) == ("b", first.term + 1) and b.is_leader()
    assert not a.is_leader()  # its own bound ran out before the row expired
    again = a.renew()
    assert again is not None and again.holder == "b" and not a.is_leader()


def test_a_holder_counts_itself_leader_no_longer_than_the_lease_after_its_last_renewal(
    backend: Backend,
) -> None:
    clock = Clock()
    a = LeaseLeader(backend, holder="a", lease_s=30.0, clock=clock)
    assert a.renew() is not None and a.is_leader()
    clock.now += 29.0
    assert a.is_leader()
    clock.now += 1.0  # renewals stopped (a hung thread, a lost catalog): leadership runs out on its own
    assert not a.is_leader()


def test_a_clean_stop_hands_the_lease_over_at_the_next_renewal(backend: Backend) -> None:
    a = LeaseLeader(backend, holder="a", lease_s=60.0)
    b = LeaseLeader(backend, holder="b", lease_s=60.0)
    a.start()
    assert a.is_leader()
    b.renew()
    assert not b.is_leader()
    a.stop()
    assert not a.is_leader()
    state = b.renew()
    assert state is not None and state.holder == "b" and b.is_leader()
    b.stop()


def test_an_unreachable_catalog_is_a_logged_failure_and_leadership_runs_out(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()

    def refuse(_: Backend) -> duckdb.DuckDBPyConnection:
        raise duckdb.IOException("Unable to connect to Postgres at 127.0.0.1:1: Connection refused")

    a = LeaseLeader(backend, holder="a", lease_s=5.0, clock=clock)
    assert a.renew() is not None and a.is_leader()
    a._connect = refuse
    a._drop_connection()
    with caplog.at_level(logging.INFO, logger="hopscope.leader"):
        assert a.renew() is None
        assert a.is_leader()  # still inside the lease it holds
        clock.now += 5.0
        assert a.renew() is None and not a.is_leader()
    assert "cannot renew the lease" in caplog.text and "Connection refused" in caplog.text
    assert "a no longer leads" in caplog.text


def test_the_embedded_store_has_one_collector_that_always_leads(tmp_path: Path) -> None:
    assert isinstance(leader_for(None), SoleLeader)
    assert isinstance(leader_for(Backend(None, str(tmp_path / "data"))), SoleLeader)
    store = Store(tmp_path / "store")
    daemon = Daemon(store, CollectConfig.model_validate({"otlp": {"enabled": False}}))
    try:
        assert daemon.leader is not None and daemon.leader.is_leader()
        assert daemon.metrics.registry.get_sample_value("hopscope_leader") == 1.0
    finally:
        assert daemon.writer is not None
        daemon.writer.close()
        store.close()

"""Which collector leads: the one that runs a store's rollups, maintenance and alert evaluation.

Several `hopscope collect` processes may write one shared store (a PostgreSQL catalog): every one of
them appends spans and samples, and exactly one at a time does the work that must not run twice at
once. That one holds a lease: a row in the catalog database,

    hopscope_leader(name = 'leader', holder, term, expires)

renewed every ``lease_s / 3``. A collector takes the row over only once its ``expires`` has passed
(PostgreSQL's clock decides, so the hosts' clocks never matter); ``term`` grows by one at every
change of holder. A holder counts itself leader until ``lease_s`` after it *started* its last
successful renewal, on its own monotonic clock: that ends before the row's expiry, which the server
set later, so two collectors never both believe they lead. A holder that dies (kill -9, a lost host)
stops renewing and another takes over within ``lease_s`` plus one renewal interval; one that stops
cleanly gives the lease up at once.

Why a lease row rather than pg_try_advisory_lock: an advisory lock belongs to one PostgreSQL session,
and DuckDB's postgres extension runs statements on pooled connections of its own choosing, so a
holder could not tell it still held one; a row with an expiry needs no session at all.

The embedded store (SQLite catalog) has one collector: ``SoleLeader`` always leads.

    leader = leader_for(store.backend, holder="host-a:4242", lease_s=15)
    leader.start()
    if leader.is_leader(): run_rollup(...)
    leader.stop()                                  # gives the lease up
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import duckdb

from hopscope.errors import StoreError
from hopscope.store import CATALOG_DB, Backend, catalog_database, redact

log = logging.getLogger(__name__)

LEASE_TABLE = "hopscope_leader"
LEASE_NAME = "leader"
DEFAULT_LEASE_S = 15.0
_STATEMENT_TIMEOUT_MS = 5000

_CREATE = (
    f"CREATE TABLE IF NOT EXISTS {LEASE_TABLE} (name text PRIMARY KEY, holder text NOT NULL, "
    "term bigint NOT NULL, expires timestamptz NOT NULL, acquired timestamptz NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class LeaseState:
    """The lease row as one renewal read it."""

    holder: str
    term: int
    expires_in_s: float  # by the catalog's clock, when it was read


class Leadership(Protocol):
    """What the daemon asks before a rollup, a maintenance slice or an alert evaluation."""

    holder: str

    def is_leader(self) -> bool: ...
    def term(self) -> int: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class SoleLeader:
    """The embedded store's one collector: always the leader."""

    def __init__(self, holder: str | None = None) -> None:
        self.holder = holder or default_holder()

    def is_leader(self) -> bool:
        return True

    def term(self) -> int:
        return 1

    def start(self) -> None:
        log.info("leader: %s (embedded store: the only collector)", self.holder)

    def stop(self) -> None:
        pass


def default_holder(host: str | None = None) -> str:
    """host:pid:random: unique per process start, readable in the lease row and the log."""
    return f"{host or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseLeader:
    """A lease row in a shared store's catalog database, renewed on a thread of its own."""

    def __init__(
        self,
        backend: Backend,
        *,
        holder: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        renew_s: float | None = None,
        on_change: Callable[[bool, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[[Backend], duckdb.DuckDBPyConnection] = catalog_database,
    ) -> None:
        if lease_s <= 0:
            raise ValueError(f"lease_s: {lease_s!r} must be > 0")
        self.backend = backend
        self.holder = holder or default_holder()
        self.lease_s = lease_s
        self.renew_s = renew_s if renew_s is not None else lease_s / 3
        self._on_change = on_change
        self._clock = clock
        self._connect = connect
        self._con: duckdb.DuckDBPyConnection | None = None
        self._until = float("-inf")  # leader while clock() < this
        self._term = 0
        self._leading = False  # as last reported (log, on_change)
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- asking ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        return self._clock() < self._until

    def term(self) -> int:
        """The term this collector leads in, or led in last (0: never led)."""
        return self._term

    # -- renewing -------------------------------------------------------------------------

    def renew(self) -> LeaseState | None:
        """One round: take the lease if it is free or expired, extend it if it is ours; then read it.

        Returns the row (None where the catalog could not be reached: leadership then runs out at its
        deadline, never before)."""
        started = self._clock()
        me = _sql_literal(self.holder)
        upsert = (
            f"SET statement_timeout = {_STATEMENT_TIMEOUT_MS}; "
            f"INSERT INTO {LEASE_TABLE} AS l VALUES ('{LEASE_NAME}', {me}, 1, "
            f"clock_timestamp() + make_interval(secs => {self.lease_s!r}), clock_timestamp()) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
            "term = l.term + CASE WHEN l.holder = excluded.holder THEN 0 ELSE 1 END, "
            "expires = excluded.expires, "
            "acquired = CASE WHEN l.holder = excluded.holder THEN l.acquired ELSE excluded.acquired END "
            "WHERE l.holder = excluded.holder OR l.expires < clock_timestamp()"
        )
        read = (
            f"SELECT holder, term, extract(epoch FROM expires - clock_timestamp())::float8 AS left_s "
            f"FROM {LEASE_TABLE} WHERE name = '{LEASE_NAME}'"
        )
        try:
            con = self._connection()
            con.execute("CALL postgres_execute(?, ?)", [CATALOG_DB, upsert])
            row = con.execute("SELECT * FROM postgres_query(?, ?)", [CATALOG_DB, read]).fetchone()
        except (duckdb.Error, StoreError) as exc:
            self._drop_connection()
            text = redact(str(exc), self.backend.secrets())
            if text != self.last_error:
                log.warning("leader: cannot renew the lease in the catalog: %s", text)
            self.last_error = text
            self._report()
            return None
        self.last_error = None
        if row is None:  # the row was deleted between the two statements: the next round writes it again
            self._report()
            return None
        state = LeaseState(str(row[0]), int(row[1]), float(row[2]))
        if state.holder == self.holder and state.expires_in_s > 0:
            # Counted from before the upsert, on this host's clock: ends before the row's expiry.
            self._until = min(started + self.lease_s, self._clock() + state.expires_in_s)
            self._term = state.term
        elif state.holder != self.holder:
            self._until = float("-inf")
        self._report(state)
        return state

    def release(self) -> None:
        """Give the lease up now (a clean stop): another collector takes over at its next renewal."""
        was = self.is_leader()
        self._until = float("-inf")
        if not was:
            return
        sql = (
            f"SET statement_timeout = {_STATEMENT_TIMEOUT_MS}; UPDATE {LEASE_TABLE} SET expires = "
            f"clock_timestamp() - interval '1 second' WHERE name = '{LEASE_NAME}' AND holder = "
            f"{_sql_literal(self.holder)}"
        )
        try:
            self._connection().execute("CALL postgres_execute(?, ?)", [CATALOG_DB, sql])
        except (duckdb.Error, StoreError) as exc:  # it runs out at its expiry instead
            log.warning(
                "leader: could not give the lease up (it expires on its own): %s",
                redact(str(exc), self.backend.secrets()),
            )
        self._report()

    def _report(self, state: LeaseState | None = None) -> None:
        leading = self.is_leader()
        if leading == self._leading:
            return
        self._leading = leading
        if leading:
            log.info(
                "leader: %s now leads (term %d): rollups, maintenance and alerts run here",
                self.holder,
                self._term,
            )
        else:
            other = f"; {state.holder} holds the lease (term {state.term})" if state else ""
            log.info("leader: %s no longer leads (term %d)%s", self.holder, self._term, other)
        if self._on_change is not None:
            self._on_change(leading, self._term)

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            con = self._connect(self.backend)
            try:
                con.execute("CALL postgres_execute(?, ?)", [CATALOG_DB, _CREATE])
            except duckdb.Error:
                con.close()
                raise
            self._con = con
        return self._con

    def _drop_connection(self) -> None:
        if self._con is not None:
            try:
                self._con.close()
            except duckdb.Error:
                pass
            self._con = None

    # -- the thread -----------------------------------------------------------------------

    def start(self) -> None:
        self.renew()  # the first round on the caller's thread: a leader leads from the start
        if not self.is_leader():
            log.info("leader: %s stands by; another collector leads", self.holder)
        self._thread = threading.Thread(target=self._loop, name="leader-lease", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.renew_s):
            try:
                self.renew()
            except Exception:  # a bug here must not end the renewals; leadership then runs out
                log.exception("leader: renewing the lease failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_STATEMENT_TIMEOUT_MS / 1000 + 1)
        self.release()
        self._drop_connection()


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def leader_for(
    backend: Backend | None,
    *,
    holder: str | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    on_change: Callable[[bool, int], None] | None = None,
) -> Leadership:
    """A lease for a shared store (PostgreSQL catalog); the embedded store's sole collector otherwise."""
    if backend is not None and backend.postgres:
        return LeaseLeader(backend, holder=holder, lease_s=lease_s, on_change=on_change)
    return SoleLeader(holder)

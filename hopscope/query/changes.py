"""The newest rows of a table kept in memory in step with the store, by reading only what changed.

    held = changes.held(store, "hop_minutes")   # synced to the store's snapshot now
    held.tail()                                  # a ReadStore over its rows from held.since on (tail.Tail)
    held.lo, held.hi                             # the table's oldest and newest time
    held.first_change(a, b)                      # the oldest time changed between snapshots a and b

A DuckLake read costs ~15-25 ms of catalog work before it reads a row, whatever it reads. A live page
reads the newest rows of a table many times a tick (series, the data's end, the SLO windows'
newest minutes), each after a few rows changed. Here they are read once per snapshot: the first time
whole (from HOLD before the newest row on), then only the rows each new snapshot inserted or deleted
(``ducklake_table_changes``, by row id: DuckLake never gives a row id twice, and a merge or a flush
keeps them). Where the changes cannot be told (a snapshot expired, a change of another kind), the
rows are read whole again. Held per store (its folder and catalog file) and table; a store with
neither (a plain DuckDB connection) holds nothing and its callers read the store.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from hopscope.model import ReadStore
from hopscope.query.tail import Tail
from hopscope.store import LAKE, current_snapshot, store_identity

# The tables held, and the time column of each (an allow-list: the names go into SQL).
TIME_COLUMN: Final = {"hop_minutes": "minute", "samples": "ts"}
# How much of each table is held: the newest HOLD (from the start of an hour), up to twice that before
# the oldest part is dropped. hop_minutes: a tick's coarse buckets start up to an hour before the
# newest final ones, and the SLO windows re-read the minutes changed since the last evaluation.
HOLD: Final = {"hop_minutes": timedelta(hours=3), "samples": timedelta(minutes=90)}
# Snapshot changes that insert or delete rows, and those that only rewrite files (row ids kept).
ROW_CHANGES: Final = frozenset(
    {"tables_inserted_into", "tables_deleted_from", "inlined_insert", "inlined_delete"}
)
FILE_CHANGES: Final = frozenset({"merge_adjacent", "flushed_inlined", "compacted"})
INSERTS: Final = frozenset({"tables_inserted_into", "inlined_insert"})
STEPS_KEPT = 64  # the changes of this many snapshot steps are remembered (first_change)
# At most this many rows are held per table: beyond, only the newest half of them (a busy store's
# samples: 500 series at 1 Hz are 2.7M rows in 90 minutes); older windows are read from the store.
MAX_ROWS = 1_000_000


class Unknown:
    """What first_change returns where the changes are not known: everything may have changed."""


UNKNOWN: Final = Unknown()


@dataclass(slots=True)
class Held:
    """A table's rows from `since` on, as of snapshot `snap` (see the module doc)."""

    table: str
    snap: int
    since: datetime
    rows: pa.Table  # every column, and rowid
    lo: datetime | None  # the table's oldest time (all of it, not only what is held)
    hi: datetime | None  # its newest time
    # (from snapshot, to snapshot, oldest time changed: None nothing, UNKNOWN everything)
    steps: list[tuple[int, int, datetime | None | Unknown]] = field(default_factory=list)
    _tail: Tail | None = None

    def tail(self) -> Tail:
        """The held rows as a ReadStore (the table under its own name), made once per snapshot."""
        if self._tail is None:
            self._tail = Tail(self.rows.drop_columns(["rowid"]), self.since, name=self.table)
        return self._tail

    def covers(self, start: datetime) -> bool:
        return start >= self.since

    def first_change(self, a: int | None, b: int) -> datetime | None | Unknown:
        """The oldest time of a row inserted or deleted after snapshot `a` up to `b`: None when none was."""
        if a is None or a > b:
            return UNKNOWN
        if a == b:
            return None
        first: datetime | None = None
        at = a
        for x, y, t in self.steps:
            if x < at:
                continue
            if x != at or y > b:
                return UNKNOWN
            if isinstance(t, Unknown):
                return UNKNOWN
            if t is not None:
                first = t if first is None else min(first, t)
            at = y
            if at == b:
                return first
        return UNKNOWN


@dataclass(slots=True)
class _StoreLog:
    """One store's held tables, its snapshots' changes read so far, and its tables' ids."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    tables: dict[str, Held] = field(default_factory=dict)
    snapshots: dict[int, list[tuple[str, list[str]]]] = field(default_factory=dict)
    # each snapshot's time: a store regenerated in place (same folder, snapshot ids again) shows as changed
    times: dict[int, object] = field(default_factory=dict)
    table_ids: dict[str, int] = field(default_factory=dict)
    reads: int = 0


_LOCK = threading.Lock()
_STORES: OrderedDict[tuple[Any, ...], _StoreLog] = OrderedDict()
MAX_STORES = 8


_TOKENS: weakref.WeakKeyDictionary[object, int] = weakref.WeakKeyDictionary()
_NEXT = itertools.count()


def _log(store: ReadStore) -> _StoreLog | None:
    """The store's log, per store object: a store regenerated in place is opened anew (a new object), and
    may reach the snapshot id held of the old one."""
    ident = store_identity(store, with_mtime=False)
    if ident is None:
        return None
    with _LOCK:
        try:
            token = _TOKENS.get(store)
            if token is None:
                token = _TOKENS[store] = next(_NEXT)
        except TypeError:  # not weakly referable: not held
            return None
        ident = (*ident, token)
        log = _STORES.pop(ident, None) or _StoreLog()
        _STORES[ident] = log
        while len(_STORES) > MAX_STORES:
            _STORES.popitem(last=False)
    return log


def clear() -> None:
    """Forget every store's held rows (tests, the benchmark's cold case)."""
    with _LOCK:
        _STORES.clear()


def reads(store: ReadStore) -> int:
    """Store reads made for this store's held tables so far (for tests)."""
    log = _log(store)
    return 0 if log is None else log.reads


_PINS = threading.local()


@contextmanager
def pinned(store: ReadStore, snap: int | None) -> Iterator[None]:
    """Within the block, this thread's snapshot(store) is `snap` (a page's views read the snapshot the
    page read, instead of one read each). None: nothing pinned."""
    pins: dict[int, int] = getattr(_PINS, "map", None) or {}
    _PINS.map = pins
    before = pins.get(id(store))
    if snap is not None:
        pins[id(store)] = snap
    try:
        yield
    finally:
        if before is None:
            pins.pop(id(store), None)
        else:
            pins[id(store)] = before


def snapshot(store: ReadStore) -> int | None:
    """The snapshot pinned for this thread (pinned), else the store's current one (a read)."""
    pins: dict[int, int] | None = getattr(_PINS, "map", None)
    snap = pins.get(id(store)) if pins else None
    return snap if snap is not None else current_snapshot(store)


def held(store: ReadStore, table: str, snap: int | None = None, *, create: bool = True) -> Held | None:
    """`table`'s held rows as of the store's current snapshot (`snap`: as of that one or a later one, when
    the caller read it); None for a store that cannot be held (no identity, no snapshot). `create` False:
    None unless this store's table is held already (a one-shot reader need not pay the first whole read)."""
    if table not in TIME_COLUMN:
        raise ValueError(f"{table!r} is not held: one of {', '.join(TIME_COLUMN)}")
    log = _log(store)
    if log is None or (not create and table not in log.tables):
        return None
    pins: dict[int, int] | None = getattr(_PINS, "map", None)
    snap = snap if snap is not None or not pins else pins.get(id(store))
    given = snap is not None
    snap = current_snapshot(store) if snap is None else snap
    if snap is None:
        return None
    with log.lock:
        h = log.tables.get(table)
        if h is not None and h.snap >= snap and (given or h.snap == snap):
            return h
        if h is not None and h.snap < snap:
            try:
                h = _advance(store, log, h, snap)
            except Exception:  # noqa: BLE001 - a catalog without the change functions: read it whole
                h = None
        else:
            h = None
        if h is None:
            old = log.tables.get(table)
            h = _read_whole(store, log, table, snap)
            if old is not None:
                h.steps = [*old.steps, (old.snap, snap, UNKNOWN)][-STEPS_KEPT:]
        log.tables[table] = h
        return h


def touched(store: ReadStore, table: str, a: int, b: int) -> bool | None:
    """Whether snapshots after `a` up to `b` changed rows of `table` (any table of the store); None: not
    known (snapshots expired, a store without a log). Shares the snapshot list held() reads."""
    log = _log(store)
    if log is None:
        return None
    with log.lock:
        if a not in log.times:  # its time not seen: a store regenerated in place would not show
            return None
        try:
            kinds = _kinds(store, log, table, a, b)
        except Exception:  # noqa: BLE001
            return None
    return None if kinds is None else bool(kinds - FILE_CHANGES)


def _query(store: ReadStore, log: _StoreLog, sql: str, params: list[Any]) -> pa.Table:
    log.reads += 1
    return store.query(sql, params)


def _read_whole(store: ReadStore, log: _StoreLog, table: str, snap: int) -> Held:
    col = TIME_COLUMN[table]
    at = f'"{table}" AT (VERSION => ?)'
    ends = _query(store, log, f'SELECT min("{col}") AS lo, max("{col}") AS hi FROM {at}', [snap]).to_pylist()[
        0
    ]
    lo, hi = ends["lo"], ends["hi"]
    since = _since(table, hi) if hi is not None else datetime(1970, 1, 1)
    rows = _query(store, log, f'SELECT rowid, * FROM {at} WHERE "{col}" >= ?', [snap, since])
    return _bounded(Held(table, snap, since, rows, lo, hi))


def _bounded(h: Held) -> Held:
    """`h` holding at most MAX_ROWS rows: beyond, from the time where the newest half of them begins."""
    if h.rows.num_rows <= MAX_ROWS:
        return h
    col = TIME_COLUMN[h.table]
    ordered = pc.take(h.rows.column(col), pc.sort_indices(h.rows.column(col)))
    newest = ordered[h.rows.num_rows - MAX_ROWS // 2].as_py()
    h.since = max(h.since, newest.replace(second=0, microsecond=0))
    h.rows = h.rows.filter(
        pc.greater_equal(h.rows.column(col), pa.scalar(h.since, h.rows.schema.field(col).type))
    )
    return h


def _since(table: str, hi: datetime) -> datetime:
    return (hi - HOLD[table]).replace(minute=0, second=0, microsecond=0)


def _kinds(store: ReadStore, log: _StoreLog, table: str, a: int, b: int) -> set[str] | None:
    """The kinds of change to `table` in the snapshots after `a` up to `b`; None where some expired."""
    unknown = [s for s in range(a + 1, b + 1) if s not in log.snapshots]
    if unknown:
        # from the last one known on: its time must not have changed (else the store is another one)
        first = unknown[0] - 1 if unknown[0] - 1 in log.times else unknown[0]
        rows = _query(
            store,
            log,
            "SELECT snapshot_id, snapshot_time, changes FROM ducklake_snapshots(?) "
            "WHERE snapshot_id >= ? AND snapshot_id <= ?",
            [LAKE, first, b],
        ).to_pylist()
        for r in rows:
            sid = int(r["snapshot_id"])
            if log.times.setdefault(sid, r["snapshot_time"]) != r["snapshot_time"]:
                log.snapshots.clear()
                log.times.clear()
                log.tables.clear()
                return None
            log.snapshots[sid] = _pairs(r["changes"])
        if len(log.snapshots) > 4 * STEPS_KEPT:
            for s in sorted(log.snapshots)[: len(log.snapshots) - 2 * STEPS_KEPT]:
                del log.snapshots[s]
                log.times.pop(s, None)
    if any(s not in log.snapshots for s in range(a + 1, b + 1)):
        return None
    if table not in log.table_ids:
        for r in _query(
            store, log, "SELECT table_name, table_id FROM ducklake_table_info(?)", [LAKE]
        ).to_pylist():
            log.table_ids[str(r["table_name"])] = int(r["table_id"])
    tid = log.table_ids.get(table)
    kinds: set[str] = set()
    for s in range(a + 1, b + 1):
        for kind, ids in log.snapshots[s]:
            if tid is None or not ids or str(tid) in ids:
                kinds.add(kind)
    return kinds


def _pairs(changes: Any) -> list[tuple[str, list[str]]]:
    items = changes.items() if isinstance(changes, dict) else (changes or [])
    out = []
    for item in items:
        key, ids = item if isinstance(item, tuple) else (item.get("key"), item.get("value"))
        out.append((str(key), [str(x) for x in (ids or [])]))
    return out


_MEM = duckdb.connect()  # applies the changes to the held rows (in memory; one thread at a time)
_MEM_LOCK = threading.Lock()


def _advance(store: ReadStore, log: _StoreLog, h: Held, snap: int) -> Held | None:
    """The held rows at `snap` from those at h.snap and the rows changed in between; None: read whole."""
    kinds = _kinds(store, log, h.table, h.snap, snap)
    if kinds is None or not kinds <= ROW_CHANGES | FILE_CHANGES:
        return None
    col = TIME_COLUMN[h.table]
    first: datetime | None = None
    rows, lo, hi = h.rows, h.lo, h.hi
    if kinds - FILE_CHANGES:
        inserts_only = kinds - FILE_CHANGES <= INSERTS
        if inserts_only:  # the insertions alone cost about half of all the changes
            ch = _query(
                store,
                log,
                "SELECT ?::BIGINT AS snapshot_id, rowid, 'insert' AS change_type, * "
                f"FROM ducklake_table_insertions(?, 'main', '{h.table}', ?, ?)",
                [snap, LAKE, h.snap + 1, snap],
            )
        else:
            ch = _query(
                store,
                log,
                f"SELECT * FROM ducklake_table_changes(?, 'main', '{h.table}', ?, ?)",
                [LAKE, h.snap + 1, snap],
            )
        if ch.num_rows:
            if inserts_only:  # no row ids to take out, each row inserted once
                times = ch.column(col)
                first = added_lo = pc.min(times).as_py()
                added_hi, lo_gone, hi_gone = pc.max(times).as_py(), False, False
                since = pa.scalar(h.since, ch.schema.field(col).type)
                kept = ch.drop_columns(["snapshot_id", "change_type"]).filter(pc.greater_equal(times, since))
            else:
                with _MEM_LOCK:
                    cur = _MEM.cursor()
                    try:
                        cur.register("ch", ch)
                        # per row id its last change; the rows whose last change put them in, from `since` on
                        kept = cur.execute(
                            f"""SELECT * EXCLUDE (snapshot_id, change_type) FROM ch
                            QUALIFY row_number() OVER (PARTITION BY rowid ORDER BY snapshot_id DESC,
                                change_type IN ('insert', 'update_postimage') DESC) = 1
                                AND change_type IN ('insert', 'update_postimage') AND "{col}" >= ?""",
                            [h.since],
                        ).fetch_arrow_table()
                        stats = cur.execute(
                            f"""SELECT min("{col}") AS first, max("{col}") FILTER (WHERE change_type IN
                                ('insert', 'update_postimage')) AS added_hi,
                              min("{col}") FILTER (WHERE change_type IN ('insert', 'update_postimage')) AS added_lo,
                              bool_or(change_type IN ('delete', 'update_preimage') AND "{col}" <= ?) AS lo_gone,
                              bool_or(change_type IN ('delete', 'update_preimage') AND "{col}" >= ?) AS hi_gone
                            FROM ch""",
                            [lo, hi],
                        ).fetchone()
                    finally:
                        cur.close()
                assert stats is not None
                first, added_hi, added_lo, lo_gone, hi_gone = stats
                gone = pc.is_in(rows.column("rowid"), value_set=ch.column("rowid"))
                rows = rows.filter(pc.invert(gone))
            if kept.num_rows:
                rows = pa.concat_tables([rows, kept.select(rows.column_names).cast(rows.schema)])
            if lo_gone or lo is None:
                got = _query(
                    store, log, f'SELECT min("{col}") AS lo FROM "{h.table}" AT (VERSION => ?)', [snap]
                )
                lo = got.column(0)[0].as_py()
            elif added_lo is not None:
                lo = min(lo, added_lo)
            if added_hi is not None and (hi is None or added_hi > hi):
                hi = added_hi
            elif hi_gone:
                newest = pc.max(rows.column(col)).as_py() if rows.num_rows else None
                if newest is None:
                    return None  # nothing held shows the newest row now: read whole
                hi = newest
    out = Held(h.table, snap, h.since, rows, lo, hi, [*h.steps, (h.snap, snap, first)][-STEPS_KEPT:])
    if hi is not None and hi - out.since > 2 * HOLD[h.table]:  # drop the oldest part: nothing to read
        out.since = _since(h.table, hi)
        out.rows = out.rows.filter(
            pc.greater_equal(out.rows.column(col), pa.scalar(out.since, out.rows.schema.field(col).type))
        )
    return _bounded(out)

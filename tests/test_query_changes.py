"""query.changes: the newest rows of a table held in memory equal a fresh read after every kind of write,
and what they answer (the data's marks, the SLO corrections) costs no read of its own."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from support.handbuilt import edge_rows
from support.plain import PlainStore

from hopscope.query import changes, windows
from hopscope.slo import load_slos
from hopscope.slo.corrections import add_correction, read_corrections
from hopscope.store import Store

END = datetime(2026, 11, 20, 12, 0)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    changes.clear()
    s = Store(tmp_path / "store", file_grace=timedelta(0))
    yield s
    s.close()
    changes.clear()


def _hops(first: datetime, minutes: int, rng: random.Random, spike: bool = False) -> pd.DataFrame:
    return pd.DataFrame(
        [r for m in range(minutes) for r in edge_rows(first + timedelta(minutes=m), rng, spike)]
    )


def _samples(first: datetime, seconds: int, value: float = 1.0) -> pd.DataFrame:
    ts = [first + timedelta(seconds=i) for i in range(seconds)]
    return pd.DataFrame({"ts": ts, "metric": "DCGM_FI_DEV_GPU_UTIL", "value": value, "source": "nvml",
                         "service": "model-server", "host": "gpu-1"})  # fmt: skip


def _same_as_a_read(s: Store, table: str, what: str) -> changes.Held:
    held = changes.held(s, table)
    assert held is not None
    col = changes.TIME_COLUMN[table]
    fresh = s.query(f"SELECT rowid, * FROM {table} WHERE {col} >= ? ORDER BY rowid", [held.since])
    mine = held.rows.sort_by("rowid")
    assert mine.to_pylist() == fresh.to_pylist(), f"{table} rows after {what}"
    ends = s.query(f"SELECT min({col}) AS lo, max({col}) AS hi FROM {table}").to_pylist()[0]
    assert (held.lo, held.hi) == (ends["lo"], ends["hi"]), f"{table} ends after {what}"
    marks = windows.data_marks(s)
    assert marks._replace(samples_start=None) == windows.data_marks(PlainStore(s)), f"data marks after {what}"
    oldest = s.query("SELECT min(ts) AS lo FROM samples").to_pylist()[0]["lo"]
    assert marks.samples_start == oldest, f"the oldest sample after {what}"
    return held


def test_held_rows_equal_a_fresh_read_after_appends_rewrites_deletes_and_maintenance(store: Store) -> None:
    """What the rollup (a new minute, the provisional minutes rewritten), retention (the oldest rows
    deleted) and maintenance (inlined rows flushed, files merged) do to the tables; the held rows, the
    tables' ends and the data marks equal a fresh read each time, and a write costs at most its
    snapshots and its changed rows (no whole read)."""
    rng = random.Random(42)
    start = END - timedelta(hours=5)
    store.append("hop_minutes", _hops(start, 5 * 60, rng))
    store.append("samples", _samples(END - timedelta(hours=2), 7200))
    _same_as_a_read(store, "hop_minutes", "the first read")
    _same_as_a_read(store, "samples", "the first read")
    whole = changes.reads(store)

    newest = END - timedelta(minutes=1)
    store.replace(
        "hop_minutes",
        "minute >= ?",
        [newest - timedelta(minutes=2)],
        _hops(newest - timedelta(minutes=2), 3, rng, True),
    )
    _same_as_a_read(store, "hop_minutes", "the provisional minutes rewritten")
    store.append("hop_minutes", _hops(END, 1, rng))
    store.append("samples", _samples(END, 60, 2.0))
    _same_as_a_read(store, "hop_minutes", "a new minute")
    _same_as_a_read(store, "samples", "new samples")
    assert changes.reads(store) - whole <= 2 + 2 + 2 + 1, "the snapshot lists and the changed rows only"

    store.delete("hop_minutes", "minute < ?", [start + timedelta(minutes=30)])
    store.delete("samples", "ts < ?", [END - timedelta(minutes=100)])
    _same_as_a_read(store, "hop_minutes", "retention deleting the oldest minutes")
    _same_as_a_read(store, "samples", "retention deleting the oldest samples")
    store.maintain(retention=False)
    _same_as_a_read(store, "hop_minutes", "maintenance")
    _same_as_a_read(store, "samples", "maintenance")
    store.delete("hop_minutes", "minute >= ?", [END])
    _same_as_a_read(store, "hop_minutes", "the newest minute deleted")
    # hours later: the oldest held rows are dropped, not read
    store.append("hop_minutes", _hops(END, 7 * 60, rng))
    held = _same_as_a_read(store, "hop_minutes", "seven more hours")
    assert held.since > END and held.rows.num_rows == 3 * (held.hi - held.since) / timedelta(minutes=1) + 3


def test_a_busy_table_is_held_from_where_its_newest_rows_begin(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond MAX_ROWS only the newest half is held (memory stays bounded); a window before it is read
    from the store by the callers (covers() says no)."""
    monkeypatch.setattr(changes, "MAX_ROWS", 600)
    store.append("samples", _samples(END - timedelta(hours=1), 3600))
    held = _same_as_a_read(store, "samples", "the first read")
    assert held.rows.num_rows <= 600 and not held.covers(END - timedelta(minutes=10))
    store.append("samples", _samples(END, 1200, 2.0))
    held = _same_as_a_read(store, "samples", "twenty minutes more")
    assert held.rows.num_rows <= 600 and held.since >= END


def test_first_change_names_the_oldest_time_written_and_unknown_where_it_cannot_tell(store: Store) -> None:
    rng = random.Random(1)
    store.append("hop_minutes", _hops(END - timedelta(hours=1), 60, rng))
    a = changes.held(store, "hop_minutes")
    assert a is not None
    store.append("samples", _samples(END, 10))  # another table: nothing of hop_minutes changed
    b = changes.held(store, "hop_minutes")
    assert b is not None and b.first_change(a.snap, b.snap) is None
    store.replace(
        "hop_minutes", "minute = ?", [END - timedelta(minutes=5)], _hops(END - timedelta(minutes=5), 1, rng)
    )
    store.append("hop_minutes", _hops(END, 1, rng))
    c = changes.held(store, "hop_minutes")
    assert c is not None and c.first_change(a.snap, c.snap) == END - timedelta(minutes=5)
    assert c.first_change(b.snap, c.snap) == END - timedelta(minutes=5)
    assert c.first_change(a.snap - 1, c.snap) is changes.UNKNOWN, "before the first held snapshot"
    assert c.first_change(None, c.snap) is changes.UNKNOWN


def test_a_store_regenerated_in_place_is_read_afresh(tmp_path: Path) -> None:
    """The same folder rebuilt (a demo store regenerated): its snapshot ids start again, and what was held
    of the old one is not taken for the new one's."""
    changes.clear()
    path = tmp_path / "store"
    rng = random.Random(3)
    for first, n in ((END - timedelta(hours=1), 60), (END - timedelta(hours=2), 30)):
        shutil.rmtree(path, ignore_errors=True)
        s = Store(path)
        try:
            s.append("hop_minutes", _hops(first, n, rng))
            s.append("hop_minutes", _hops(first + timedelta(minutes=n), 1, rng))
            _same_as_a_read(s, "hop_minutes", f"building {first}")
        finally:
            s.close()
    changes.clear()


def test_stored_corrections_are_read_again_only_when_their_table_changed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SLO engine asks for the stored corrections on every evaluation: a write to another table (a
    new minute) keeps them; a new correction is read."""
    slo = load_slos(ROOT / "slo_rules")[0][0]
    reads: list[str] = []
    real = Store.query

    def query(self: Store, sql: str, params: object = None) -> pa.Table:
        if "slo_corrections" in sql:
            reads.append(sql)
        return real(self, sql, params)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "query", query)
    rng = random.Random(5)
    for m in range(3):  # the snapshots' times are seen before a kept answer is trusted
        store.append("hop_minutes", _hops(END + timedelta(minutes=m), 1, rng))
        changes.held(store, "hop_minutes")
        assert read_corrections(store) == {}
    before = len(reads)
    store.append("hop_minutes", _hops(END + timedelta(minutes=3), 1, rng))
    changes.held(store, "hop_minutes")
    assert read_corrections(store) == {} and len(reads) == before, "another table changed: not read"
    add_correction(store, slo, END, END + timedelta(minutes=10), "load test", now=END + timedelta(hours=1))
    got = read_corrections(store)
    assert [c.reason for c in got[slo.name]] == ["load test"] and len(reads) > before

"""dashboard.cache: what is read once, what is read again when the data moves, and what is dropped."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from support.handbuilt import edge_rows

from hopscope.dashboard import cache
from hopscope.query import changes, samples, spans, windows
from hopscope.store import Store

END = datetime(2026, 11, 20, 12, 0)
LATER = END + timedelta(minutes=1)
CALLS: list[tuple[str, object]] = []  # what the fake views below were asked, in order
BUILT: list[int] = []  # the row counts the fake figure builder was given, in order


def rows(store: object, n: int) -> pd.DataFrame:
    CALLS.append(("rows", n))
    return pd.DataFrame({"x": range(n)})


def columns(store: object, n: int) -> pd.DataFrame:
    CALLS.append(("columns", n))
    return pd.DataFrame({f"c{i}": [i] for i in range(n)})


def labelled(store: object, labels: Mapping[str, str]) -> str:
    CALLS.append(("labelled", dict(labels)))
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def bars(df: pd.DataFrame) -> go.Figure:
    BUILT.append(len(df))
    return go.Figure(go.Bar(x=df["x"], y=df["x"]))


def _clear() -> None:
    for cached in (
        cache.call,
        cache.figure,
        cache.figure_of,
        cache.snapshot,
        cache.at_snapshot,
        cache.memo,
        cache.tails,
    ):
        cached.clear()
    CALLS.clear()
    BUILT.clear()


@pytest.fixture(autouse=True)
def fake_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cache, "open_store", lambda path: object())  # the fake views read no store
    _clear()
    yield
    _clear()


def test_a_view_is_read_once_per_store_generation_and_arguments() -> None:
    first = cache.call("p", END, rows, (3,), ())
    pd.testing.assert_frame_equal(cache.call("p", END, rows, (3,), ()), first)
    assert CALLS == [("rows", 3)], "the same call at the same generation is a hit"
    cache.call("p", LATER, rows, (3,), ())  # new data landed
    cache.call("other", END, rows, (3,), ())  # another store
    cache.call("p", END, rows, (4,), ())
    assert CALLS == [("rows", 3), ("rows", 3), ("rows", 3), ("rows", 4)]


def test_two_views_called_with_the_same_arguments_keep_their_own_results() -> None:
    assert list(cache.call("p", END, rows, (2,), ()).columns) == ["x"]
    assert list(cache.call("p", END, columns, (2,), ()).columns) == ["c0", "c1"]
    assert CALLS == [("rows", 2), ("columns", 2)]


def test_unhashable_arguments_key_the_entry_by_their_content() -> None:
    """A dict argument (a series' labels) is hashed item by item, in its order, not by its id."""
    assert cache.call("p", END, labelled, ({"gpu": "0", "host": "a"},), ()) == "gpu=0,host=a"
    assert cache.call("p", END, labelled, (dict(gpu="0", host="a"),), ()) == "gpu=0,host=a"  # another object
    assert cache.call("p", END, labelled, ({"gpu": "1", "host": "a"},), ()) == "gpu=1,host=a"
    assert [c[1] for c in CALLS] == [{"gpu": "0", "host": "a"}, {"gpu": "1", "host": "a"}]


def test_the_memo_drops_the_least_recently_used_entry_beyond_its_size() -> None:
    lru = cache.LRU[str, int](2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "b" is now the least recently used
    lru.put("c", 3)
    assert (lru.get("a"), lru.get("b"), lru.get("c"), len(lru)) == (1, None, 3, 2)


def test_a_figure_is_rebuilt_when_its_data_changes_not_when_only_the_generation_moved() -> None:
    three = cache.Q(rows, (3,), ())
    first = cache.figure("p", ((rows, END),), bars, (three,), ())
    assert cache.figure("p", ((rows, END),), bars, (three,), ()) is first
    assert (CALLS, BUILT) == ([("rows", 3)], [3])
    assert first.to_dict()["data"][0]["type"] == "bar"  # serialised once, as the browser gets it
    moved = cache.figure("p", ((rows, LATER),), bars, (three,), ())  # new data, but not for this view
    assert moved is first
    assert (CALLS, BUILT) == ([("rows", 3), ("rows", 3)], [3]), "the view is re-read, the figure kept"
    cache.figure("p", ((rows, LATER),), bars, (cache.Q(rows, (4,), ()),), ())
    assert BUILT == [3, 4]


def test_live_facts_are_re_read_when_the_store_changed_and_only_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data's end and freshness are keyed on the store's snapshot (re-read every LIVE_TTL_S): an idle
    store costs one tiny query a tick, and any write (even a failed collector run, which moves no
    data end) is seen at the next re-read."""
    s = Store(tmp_path / "store")
    try:
        monkeypatch.setattr(cache, "open_store", lambda path: s)
        calls: list[int] = []
        real = samples.last_seen
        monkeypatch.setattr(samples, "last_seen", lambda st, *a: calls.append(1) or real(st, *a))

        def run(ok: bool, minute: int) -> None:
            s.append("collector_runs", pd.DataFrame({
                "ts": [END + timedelta(minutes=minute)], "collector": ["prometheus"], "target": ["http://prom:9090"],
                "ok": [ok], "rows": [10], "error": [None if ok else "timeout"], "duration_ms": [3.0],
            }))  # fmt: skip

        def tick() -> pd.DataFrame:
            cache.snapshot.clear()  # LIVE_TTL_S has passed: the snapshot is re-read
            return cache.live_view("bench", samples.last_seen, False, False, None)

        run(True, 0)
        first = tick()
        assert (int(first["attempts"].iloc[0]), len(calls)) == (1, 1)
        pd.testing.assert_frame_equal(tick(), first)
        assert len(calls) == 1, "no write since: not queried again"
        run(False, 1)
        after = tick()
        assert (int(after["attempts"].iloc[0]), int(after["failures"].iloc[0]), len(calls)) == (2, 1, 2)
    finally:
        s.close()


def test_a_kept_live_series_equals_a_fresh_read_after_rewrites_appends_deletes_and_maintenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live Overview keeps the final buckets of its series and reads only the newer ones: whatever the
    rollup and maintenance did meanwhile (the open minute rewritten in place, a new minute, retention
    deleting the oldest minutes, files merged), the kept series equals a fresh read."""
    s = Store(tmp_path / "store", file_grace=timedelta(0))
    try:
        monkeypatch.setattr(cache, "open_store", lambda path: s)
        rng = random.Random(42)
        start = END - timedelta(minutes=50)
        s.append(
            "hop_minutes",
            pd.DataFrame([r for m in range(50) for r in edge_rows(start + timedelta(minutes=m), rng, False)]),
        )
        w = windows.window(s, "1h", now=END + timedelta(seconds=30))

        def check(what: str) -> None:
            marks = windows.data_marks(s)
            gen = cache.Gen(marks.hops_end, marks.hops_rev, marks.hops_start)
            for fn in (spans.latency_series, spans.traffic_series, spans.hop_latency_series):
                kept = cache.call("p", gen, fn, (w, None), ())
                pd.testing.assert_frame_equal(kept, fn(s, w, None), obj=f"{fn.__name__} after {what}")

        check("the first read")
        newest = END - timedelta(minutes=1)
        s.replace("hop_minutes", "minute = ?", [newest], pd.DataFrame(edge_rows(newest, rng, True)))
        check("the open minute rewritten (provisional)")
        s.append("hop_minutes", pd.DataFrame(edge_rows(END, rng, True)))
        check("a new minute")
        s.delete("hop_minutes", "minute < ?", [start + timedelta(minutes=5)])
        check("retention deleting the oldest minutes")
        s.maintain(retention=False)
        check("maintenance")
        assert len(cache.tails()) > 0, "the newer buckets came from the shared tail read"
    finally:
        s.close()


def test_a_kept_sample_series_equals_a_fresh_read_after_appends_deletes_and_maintenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resource panels' sample series keep their final buckets and take the newer ones from the
    samples held in memory (query.changes): new samples, retention deleting the oldest ones, and
    maintenance leave it equal to a fresh read, with no read of samples but the changed rows."""
    s = Store(tmp_path / "store", file_grace=timedelta(0))
    try:
        monkeypatch.setattr(cache, "open_store", lambda path: s)
        changes.clear()

        def land(first: datetime, seconds: int, value: float) -> None:
            ts = [first + timedelta(seconds=i) for i in range(seconds)]
            s.append("samples", pd.DataFrame({"ts": ts, "metric": "DCGM_FI_DEV_GPU_UTIL", "value": value,
                                              "source": "nvml", "service": "model-server", "host": "gpu-1"}))  # fmt: skip

        land(END - timedelta(minutes=50), 50 * 60, 40.0)
        w = windows.window(s, "1h", now=END + timedelta(seconds=30))
        args = (w, ("DCGM_FI_DEV_GPU_UTIL",))
        kwargs = (("counters", ()), ("service", None))

        def check(what: str) -> None:
            cache.snapshot.clear()
            marks = windows.data_marks(s)  # as the pages key a sample view (state.gen_of)
            gen = cache.Gen(marks.samples_end, start=marks.samples_start)
            kept = cache.call("p", gen, samples.metric_series, args, kwargs)
            fresh = samples.metric_series(s, w, ("DCGM_FI_DEV_GPU_UTIL",))
            pd.testing.assert_frame_equal(kept, fresh, obj=f"metric_series after {what}")

        check("the first read")
        land(END - timedelta(seconds=10), 40, 90.0)  # the newest seconds again (late), and new ones
        check("new samples")
        s.delete("samples", "ts < ?", [END - timedelta(minutes=45)])
        check("retention deleting the oldest samples")
        s.maintain(retention=False)
        check("maintenance")
        held = changes.held(s, "samples")
        assert held is not None and held.rows.num_rows == s.count("samples")
    finally:
        s.close()
        changes.clear()

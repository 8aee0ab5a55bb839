"""Rollups of spans into hop_minutes, on hand-built traces whose answers were worked out by hand."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from hopscope import histogram
from hopscope.errors import ConfigError, StoreError
from hopscope.rollup import UNKNOWN_CLIENT, WATERMARK_KEY, provisional_from, rollup_spans, run_rollup
from hopscope.schema import HOP_MINUTES, SPANS
from hopscope.store import Store

T0 = datetime(2026, 3, 2, 12, 0, 0)
THRESHOLDS = [100.0, 200.0, 300.0, 500.0]


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def sid(n: int) -> bytes:
    return n.to_bytes(8, "big")


def span(
    trace: int,
    span_id: int,
    parent: int | None,
    service: str,
    kind: int,
    start_ms: float,
    dur: float,
    *,
    base: datetime = T0,
    route: str | None = None,
    status: int = 0,
    http: int | None = None,
    peer: str | None = None,
) -> dict:
    return {
        "trace_id": tid(trace),
        "span_id": sid(span_id),
        "parent_span_id": sid(parent) if parent is not None else None,
        "service": service,
        "name": f"{service} span",
        "kind": kind,
        "start_time": base + timedelta(milliseconds=start_ms),
        "duration_ms": dur,
        "status_code": status,
        "http_route": route,
        "http_status_code": http,
        "peer_service": peer,
        "host_name": f"{service}-host",
    }


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SPANS.arrow_schema)


def three_hop(trace: int = 1, base: datetime = T0, *, ms_server: float = 50.0, status: int = 0) -> list[dict]:
    """gateway server 100 ms; feature-store client 30 / server 25; model-server client 60 / server 50."""
    k = trace * 10
    return [
        span(trace, k + 1, None, "api-gateway", 2, 0, 100, base=base, route="/recommend", http=200),
        span(trace, k + 2, k + 1, "api-gateway", 3, 5, 30, base=base, peer="feature-store"),
        span(trace, k + 3, k + 2, "feature-store", 2, 7.5, 25, base=base, route="/features", http=200),
        span(trace, k + 4, k + 1, "api-gateway", 3, 38, 60, base=base, peer="model-server"),
        span(
            trace,
            k + 5,
            k + 4,
            "model-server",
            2,
            43,
            ms_server,
            base=base,
            route="/v1/predict",
            status=status,
        ),
    ]


def by_edge(t: pa.Table) -> dict[tuple[str, str], dict]:
    return {(r["client"], r["server"]): r for r in t.to_pylist()}


def test_three_hop_trace_gives_exact_gaps_self_times_and_entry_route() -> None:
    rows = by_edge(rollup_spans(table(three_hop()), THRESHOLDS))
    assert set(rows) == {
        ("", "api-gateway"),
        ("api-gateway", "feature-store"),
        ("api-gateway", "model-server"),
    }
    expected = {
        # edge: (duration, client, server, gap, self)
        ("", "api-gateway"): (100, 0, 100, 0, 10),
        ("api-gateway", "feature-store"): (30, 30, 25, 5, 25),
        ("api-gateway", "model-server"): (60, 60, 50, 10, 50),
    }
    for edge, (d, c, s, g, selftime) in expected.items():
        r = rows[edge]
        assert r["route"] == "/recommend", "every edge carries the entry span's route"
        assert r["minute"] == T0
        assert (r["count"], r["errors"], r["skewed"]) == (1, 0, 0)
        assert r["duration_ms_sum"] == pytest.approx(d)
        assert r["duration_ms_max"] == pytest.approx(d)
        assert r["client_ms_sum"] == pytest.approx(c)
        assert r["server_ms_sum"] == pytest.approx(s)
        assert r["gap_ms_sum"] == pytest.approx(g)
        assert r["self_ms_sum"] == pytest.approx(selftime)
        assert r["exemplars"] == [tid(1).hex()]
        assert r["good_le_ms"] == THRESHOLDS
        assert r["good_cnt"] == [1, 1, 1, 1]
        assert sum(r["hist_cnt"]) == 1


def test_output_has_the_exact_hop_minutes_arrow_schema() -> None:
    out = rollup_spans(table(three_hop()), THRESHOLDS)
    assert out.schema.equals(HOP_MINUTES.arrow_schema)  # Store.conform would cast nothing


def test_self_time_merges_overlapping_client_calls_and_clips_them_to_the_server_span() -> None:
    # server 0..100; parallel client calls 10..50 and 30..70 (union 10..70 = 60); one 90..130 clipped to 10.
    rows = [
        span(1, 1, None, "gw", 2, 0, 100, route="/r"),
        span(1, 2, 1, "gw", 3, 10, 40),
        span(1, 3, 1, "gw", 3, 30, 40),
        span(1, 4, 1, "gw", 3, 90, 40),
    ]
    out = by_edge(rollup_spans(table(rows), THRESHOLDS))
    assert out[("", "gw")]["self_ms_sum"] == pytest.approx(100 - 60 - 10)


def test_client_calls_behind_an_internal_span_of_the_same_service_count_as_outgoing() -> None:
    rows = [
        span(1, 1, None, "gw", 2, 0, 100, route="/r"),
        span(1, 2, 1, "gw", 1, 5, 80),  # INTERNAL handler span
        span(1, 3, 2, "gw", 3, 10, 30),
        span(1, 4, 3, "fs", 2, 12, 20),
    ]
    out = by_edge(rollup_spans(table(rows), THRESHOLDS))
    assert out[("", "gw")]["self_ms_sum"] == pytest.approx(70)
    assert out[("gw", "fs")]["gap_ms_sum"] == pytest.approx(10)


def test_clock_skew_gives_zero_gap_and_is_counted_never_a_negative_duration() -> None:
    # model-server span (70 ms) outlasts its client span (60 ms): skewed, gap 0.
    out = by_edge(rollup_spans(table(three_hop(ms_server=70.0)), THRESHOLDS))
    ms = out[("api-gateway", "model-server")]
    assert ms["skewed"] == 1
    assert ms["gap_ms_sum"] == 0.0
    assert ms["duration_ms_sum"] == pytest.approx(60)
    assert out[("api-gateway", "feature-store")]["skewed"] == 0
    for r in out.values():
        for col in ("duration_ms_sum", "gap_ms_sum", "self_ms_sum", "client_ms_sum", "server_ms_sum"):
            assert r[col] >= 0


@pytest.mark.parametrize(
    ("case", "rows", "expected_edges"),
    [
        (
            "server span whose parent never arrived: unknown caller, not the entry edge",
            [span(1, 2, 99, "model-server", 2, 0, 40)],
            {(UNKNOWN_CLIENT, "model-server"): 1},
        ),
        (
            "client span with no server child: edge to its peer.service",
            [span(1, 1, None, "fs", 2, 0, 50, route="/f"), span(1, 2, 1, "fs", 3, 5, 20, peer="redis")],
            {("", "fs"): 1, ("fs", "redis"): 1},
        ),
        (
            "client span with no child and no peer: edge to '?'",
            [span(1, 2, 77, "gw", 3, 0, 20)],
            {("gw", UNKNOWN_CLIENT): 1},
        ),
        (
            "server span under a non-client span of another service: edge without client timing",
            [span(1, 1, None, "gw", 2, 0, 50, route="/r"), span(1, 2, 1, "fs", 2, 5, 20)],
            {("", "gw"): 1, ("gw", "fs"): 1},
        ),
        (
            "internal and producer spans alone make no edge",
            [span(1, 1, None, "job", 1, 0, 5), span(1, 2, 1, "job", 4, 1, 1)],
            {},
        ),
    ],
)
def test_orphans_and_missing_spans_follow_the_documented_edge_rules(
    case: str, rows: list[dict], expected_edges: dict
) -> None:
    out = rollup_spans(table(rows), THRESHOLDS)
    assert {(r["client"], r["server"]): r["count"] for r in out.to_pylist()} == expected_edges, case
    for r in out.to_pylist():
        assert r["duration_ms_sum"] >= 0 and r["gap_ms_sum"] >= 0 and r["self_ms_sum"] >= 0


def test_orphan_server_span_keeps_its_own_duration_and_no_gap() -> None:
    r = rollup_spans(table([span(1, 2, 99, "model-server", 2, 0, 40, route="/v1")]), THRESHOLDS).to_pylist()[
        0
    ]
    assert (
        r["client"],
        r["route"],
        r["duration_ms_sum"],
        r["client_ms_sum"],
        r["gap_ms_sum"],
        r["self_ms_sum"],
    ) == (
        UNKNOWN_CLIENT,
        "/v1",
        40.0,
        0.0,
        0.0,
        40.0,
    )


def test_bad_values_never_crash_negative_and_missing_durations_count_as_zero() -> None:
    rows = [
        span(1, 1, None, "gw", 2, 0, -5.0, route="/r"),
        span(2, 1, None, "gw", 2, 0, float("nan"), route="/r"),
        span(3, 1, None, "gw", 2, 0, 10.0, route="/r"),
        span(3, 1, None, "gw", 2, 0, 10.0, route="/r"),  # the same span sent twice counts once
        span(4, 4, 4, "gw", 2, 0, 10.0, route="/r"),  # its own parent: an impossible cycle
    ]
    r = by_edge(rollup_spans(table(rows), THRESHOLDS))
    assert r[("", "gw")]["count"] == 3
    assert r[("", "gw")]["duration_ms_sum"] == pytest.approx(10.0)
    assert r[("", "gw")]["good_cnt"] == [3, 3, 3, 3]
    assert r[("gw", "gw")]["count"] == 1  # the cycle: parent found (itself), not a client span


def test_errors_come_from_the_server_span_status_or_a_5xx() -> None:
    spans = three_hop(1, status=2) + three_hop(2) + three_hop(3)
    spans[-5]["http_status_code"] = 503  # trace 3's gateway span answers 503
    out = by_edge(rollup_spans(table(spans), THRESHOLDS))
    assert out[("api-gateway", "model-server")]["errors"] == 1
    assert out[("", "api-gateway")]["errors"] == 1
    assert out[("api-gateway", "feature-store")]["errors"] == 0


def test_each_edge_lands_in_the_minute_of_its_own_span_start() -> None:
    base = T0 + timedelta(seconds=59, milliseconds=970)  # gateway starts 30 ms before the minute ends
    out = rollup_spans(table(three_hop(base=base)), THRESHOLDS).to_pylist()
    minutes = {(r["client"], r["server"]): r["minute"] for r in out}
    assert minutes[("", "api-gateway")] == T0
    assert minutes[("api-gateway", "feature-store")] == T0  # client span starts at +5 ms
    assert minutes[("api-gateway", "model-server")] == T0 + timedelta(minutes=1)  # client span at +38 ms


def test_thresholds_are_counted_exactly_at_and_around_the_boundary() -> None:
    durations = [99.999, 100.0, 100.001, 200.0, 250.0, 300.0, 499.0, 500.0, 501.0, 1000.0]
    rows = [span(i + 1, 1, None, "gw", 2, i, d, route="/r") for i, d in enumerate(durations)]
    r = rollup_spans(table(rows), [500, 100, 300, 200]).to_pylist()[0]
    assert r["good_le_ms"] == [100.0, 200.0, 300.0, 500.0]
    assert r["good_cnt"] == [2, 4, 6, 8]
    assert r["count"] == 10
    assert r["duration_ms_max"] == 1000.0


def test_histogram_quantiles_are_within_five_percent_of_the_exact_ones() -> None:
    rng = np.random.default_rng(42)
    durations = rng.lognormal(np.log(60), 0.5, 5000)
    rows = [
        span(i + 1, 1, None, "gw", 2, (i % 50000) / 1000, float(d), route="/r")
        for i, d in enumerate(durations)
    ]
    r = rollup_spans(table(rows), THRESHOLDS).to_pylist()[0]
    assert sum(r["hist_cnt"]) == 5000
    for q in (0.5, 0.9, 0.99):
        got = histogram.quantile(r["hist_idx"], r["hist_cnt"], q)
        assert got == pytest.approx(float(np.quantile(durations, q)), rel=0.05)


def test_exemplars_are_the_slowest_distinct_traces_in_lowercase_hex() -> None:
    rows = [
        span(t, 1, None, "gw", 2, t, float(d), route="/r")
        for t, d in [(0xAB, 10), (0xCD, 500), (0xEF, 300), (0x12, 40)]
    ]
    rows.append(span(0xCD, 2, None, "gw", 2, 0, 450, route="/r"))  # a second root of the same trace
    r = rollup_spans(table(rows), THRESHOLDS, exemplars=3).to_pylist()[0]
    assert r["exemplars"] == [tid(0xCD).hex(), tid(0xEF).hex(), tid(0x12).hex()]
    assert all(len(x) == 32 and x == x.lower() for x in r["exemplars"])


def test_rows_do_not_depend_on_the_order_of_the_input_spans() -> None:
    spans = [s for t in range(1, 40) for s in three_hop(t, T0 + timedelta(seconds=t * 3), ms_server=40.0 + t)]
    a = rollup_spans(table(spans), THRESHOLDS)
    b = rollup_spans(table(list(reversed(spans))), THRESHOLDS)
    assert a.equals(b)


def test_accepts_a_pandas_dataframe_and_refuses_missing_columns_with_a_clear_error() -> None:
    df = table(three_hop()).to_pandas()
    assert rollup_spans(df, THRESHOLDS).num_rows == 3
    with pytest.raises(StoreError, match="spans.duration_ms"):
        rollup_spans(df.drop(columns=["duration_ms"]), THRESHOLDS)
    with pytest.raises(ConfigError, match="-1"):
        rollup_spans(df, [100, -1])
    assert rollup_spans(df.iloc[0:0], THRESHOLDS).num_rows == 0


# -------------------------------------------------------------------------- incremental job


def _minute_traces(minute: datetime, n: int, first: int) -> list[dict]:
    return [
        s
        for i in range(n)
        for s in three_hop(first + i, minute + timedelta(seconds=i * 5), ms_server=40.0 + i)
    ]


def _hop_rows(store: Store) -> list[dict]:
    return store.query("SELECT * FROM hop_minutes ORDER BY minute, client, server, route").to_pylist()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "store")
    yield s
    s.close()


def test_rolling_the_same_minutes_twice_gives_the_same_rows_not_double_counts(store: Store) -> None:
    store.append("spans", table(_minute_traces(T0, 6, 1) + _minute_traces(T0 + timedelta(minutes=1), 4, 100)))
    now = T0 + timedelta(minutes=10)
    assert run_rollup(store, THRESHOLDS, now=now) == 6
    first = _hop_rows(store)
    store.set_state(WATERMARK_KEY, T0.isoformat())  # rewind: the same minutes again
    assert run_rollup(store, THRESHOLDS, now=now) == 6
    assert _hop_rows(store) == first
    entry = [r for r in first if r["client"] == ""]
    assert [r["count"] for r in entry] == [6, 4]


def test_watermark_moves_and_only_newly_closed_minutes_are_rolled(store: Store) -> None:
    final = {"provisional": False}
    store.append("spans", table(_minute_traces(T0, 3, 1)))
    # minute T0 closes at T0+1m; with a 2-minute grace it is final from T0+3m on.
    assert run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=2, seconds=59), **final) == 0
    assert run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=3, seconds=30), **final) == 3
    assert datetime.fromisoformat(store.get_state(WATERMARK_KEY)) == T0 + timedelta(minutes=1)
    # nothing new closed yet
    assert run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=3, seconds=50), **final) == 0
    # spans for a later minute arrive; minute T0's rows stay as they were
    store.append("spans", table(_minute_traces(T0 + timedelta(minutes=3), 2, 50)))
    before = [r for r in _hop_rows(store) if r["minute"] == T0]
    assert run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=6), **final) == 3
    assert datetime.fromisoformat(store.get_state(WATERMARK_KEY)) == T0 + timedelta(minutes=4)
    rows = _hop_rows(store)
    assert [r for r in rows if r["minute"] == T0] == before
    assert {r["minute"] for r in rows} == {T0, T0 + timedelta(minutes=3)}


def _entry_counts(store: Store) -> dict[datetime, int]:
    return {r["minute"]: r["count"] for r in _hop_rows(store) if r["client"] == ""}


def test_the_open_minute_is_rolled_provisionally_and_replaced_not_duplicated(store: Store) -> None:
    store.append("spans", table(_minute_traces(T0, 3, 1)))
    # 20 s into the minute its rows are there already; it is provisional, as is the grace before it
    assert run_rollup(store, THRESHOLDS, now=T0 + timedelta(seconds=20)) == 3
    assert _entry_counts(store) == {T0: 3}
    assert provisional_from(store) == T0 - timedelta(minutes=2)
    # more spans of the same minute: the next run rewrites it, 3 + 2, not 3 + 5
    store.append("spans", table(_minute_traces(T0 + timedelta(seconds=30), 2, 20)))
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(seconds=50))
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(seconds=55))
    assert _entry_counts(store) == {T0: 5}
    assert len(_hop_rows(store)) == 3  # one row per edge, not one per run
    # once final, the minute is rolled no more: a span stored after the grace is not counted
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=3, seconds=5))
    assert provisional_from(store) == T0 + timedelta(minutes=1)
    store.append("spans", table(_minute_traces(T0 + timedelta(seconds=40), 1, 40)))
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=3, seconds=10))
    assert _entry_counts(store) == {T0: 5}


def test_a_late_span_lands_in_its_own_minute_not_the_one_it_arrived_in(store: Store) -> None:
    store.append("spans", table(_minute_traces(T0 + timedelta(minutes=1), 4, 1)))
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=1, seconds=30))
    assert _entry_counts(store) == {T0 + timedelta(minutes=1): 4}
    # an exporter that retried for a minute delivers minute T0's spans 90 s after that minute closed
    store.append("spans", table(_minute_traces(T0 + timedelta(seconds=10), 2, 50)))
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=2, seconds=30))
    assert _entry_counts(store) == {T0: 2, T0 + timedelta(minutes=1): 4}
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=5))  # both final now: the same counts
    assert _entry_counts(store) == {T0: 2, T0 + timedelta(minutes=1): 4}


def test_a_late_client_span_turns_a_provisional_unknown_caller_into_its_edge(store: Store) -> None:
    trace = three_hop(1, T0 + timedelta(seconds=10))
    gateway_client = [s for s in trace if s["service"] == "api-gateway" and s["kind"] == 3]
    store.append("spans", table([s for s in trace if s not in gateway_client]))
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(seconds=40))
    first = by_edge(pa.Table.from_pylist(_hop_rows(store)))
    assert (UNKNOWN_CLIENT, "model-server") in first and ("api-gateway", "model-server") not in first
    store.append("spans", table(gateway_client))  # the gateway's client spans, a batch later
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(seconds=50))
    edges = by_edge(pa.Table.from_pylist(_hop_rows(store)))
    assert set(edges) == {
        ("", "api-gateway"),
        ("api-gateway", "feature-store"),
        ("api-gateway", "model-server"),
    }
    assert sum(r["count"] for r in edges.values()) == 3


def test_a_pair_split_across_chunks_is_rolled_whole(store: Store) -> None:
    base = T0 + timedelta(seconds=59, milliseconds=970)
    store.append("spans", table(three_hop(1, base)))
    # Roll minute T0 alone, then minute T0+1: the model-server edge (client span in T0+1) comes whole.
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=3))
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=4))
    rows = {(r["client"], r["server"]): r for r in _hop_rows(store)}
    assert rows[("api-gateway", "model-server")]["minute"] == T0 + timedelta(minutes=1)
    assert rows[("api-gateway", "model-server")]["gap_ms_sum"] == pytest.approx(10)
    assert rows[("api-gateway", "model-server")]["route"] == "/recommend"


def test_minutes_without_spans_keep_their_rollups(store: Store) -> None:
    old = rollup_spans(table(_minute_traces(T0, 2, 1)), THRESHOLDS)
    store.append("hop_minutes", old)  # rollups whose spans have expired
    store.append("spans", table(_minute_traces(T0 + timedelta(minutes=5), 2, 10)))
    store.set_state(WATERMARK_KEY, (T0 - timedelta(minutes=5)).isoformat())
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=10))
    assert {r["minute"] for r in _hop_rows(store)} == {T0, T0 + timedelta(minutes=5)}


def test_bad_watermark_is_a_clear_error(store: Store) -> None:
    store.set_state(WATERMARK_KEY, "yesterday")
    with pytest.raises(StoreError, match="rollup.watermark"):
        run_rollup(store, THRESHOLDS, now=T0)


def test_empty_store_rolls_nothing(store: Store) -> None:
    assert run_rollup(store, THRESHOLDS, now=T0) == 0
    assert store.get_state(WATERMARK_KEY) is None
    assert pd.DataFrame(_hop_rows(store)).empty


class _ShortSpanReads(Store):
    """A store whose span reads for a rollup come back without minute T0's spans, as one racing a file
    cleanup once did in a daemon: a minute's rows must not be lost to such a read."""

    short = False

    def query(self, sql: str, params: object = None) -> pa.Table:  # type: ignore[override]
        t = super().query(sql, params)  # type: ignore[arg-type]
        if self.short and sql.startswith('SELECT "trace_id"'):
            keep = [s >= T0 + timedelta(minutes=1) for s in t.column("start_time").to_pylist()]
            t = t.filter(pa.array(keep))
        return t


def test_a_read_that_comes_back_short_never_deletes_a_minutes_rows(tmp_path: Path) -> None:
    s = _ShortSpanReads(tmp_path / "store")
    try:
        s.append("spans", table(_minute_traces(T0, 3, 1) + _minute_traces(T0 + timedelta(minutes=1), 2, 50)))
        run_rollup(s, THRESHOLDS, now=T0 + timedelta(minutes=1, seconds=30))
        assert _entry_counts(s) == {T0: 3, T0 + timedelta(minutes=1): 2}
        s.short = True
        run_rollup(s, THRESHOLDS, now=T0 + timedelta(minutes=1, seconds=35))
        assert _entry_counts(s) == {T0: 3, T0 + timedelta(minutes=1): 2}
    finally:
        s.close()


def test_rows_without_a_watermark_are_rolled_on_from_their_grace_not_from_the_first_span(
    store: Store,
) -> None:
    store.append("spans", table(_minute_traces(T0, 3, 1) + _minute_traces(T0 + timedelta(minutes=30), 2, 50)))
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=30, seconds=20))
    store.delete("state", "key = ?", [WATERMARK_KEY])
    store.delete("hop_minutes", "minute = ?", [T0])  # what a re-roll from the first span would bring back
    run_rollup(store, THRESHOLDS, now=T0 + timedelta(minutes=30, seconds=40))
    assert _entry_counts(store) == {T0 + timedelta(minutes=30): 2}
    assert provisional_from(store) == T0 + timedelta(minutes=28)

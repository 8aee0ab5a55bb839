"""SLO engine over a real DuckLake store: minute frames from hop_minutes, status, breaches, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from support.hop_minutes import hop_minute_row as _row
from support.plain import PlainStore
from typer.testing import CliRunner

from hopscope.errors import SpecError
from hopscope.query import changes
from hopscope.query import slos as query_slos
from hopscope.rollup import rollup_spans
from hopscope.slo import (
    SLI,
    Budgeting,
    MinuteArrays,
    MinuteCache,
    breaches_from_arrays,
    evaluate,
    evaluate_many,
    find_breaches,
    load_slos,
    minute_arrays_from_spans,
    minute_arrays_many,
    minute_series,
)
from hopscope.slo.burn import breaches_since
from hopscope.slo.cli import app
from hopscope.slo.source import find_breaches_many
from hopscope.store import Store

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "slo_rules"
T0 = datetime(2025, 6, 1)
N = 4 * 1440  # four days of minutes


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Four days of 20 req/min; on day 3, 09:00-10:00, half the requests take 400 ms and 10% fail.

    The entry edge keeps the exact 200 ms count; the model-server edge keeps no exact
    counts, so its 150 ms SLI reads the histogram.
    """
    rng = np.random.default_rng(42)
    rows = []
    incident = (2 * 1440 + 9 * 60, 2 * 1440 + 10 * 60)
    for m in range(N):
        if 3 * 1440 <= m < 3 * 1440 + 30:
            continue  # a 30-minute collection gap on day 4
        slow = incident[0] <= m < incident[1]
        d = rng.uniform(20, 120, 20)
        if slow:
            d[:10] = 400.0
        minute = T0 + timedelta(minutes=m)
        rows.append(_row(minute, "", "api-gateway", d, 2 if slow else 0, [200.0]))
        rows.append(_row(minute, "api-gateway", "model-server", d * 0.6, 0, []))
    s = Store(tmp_path_factory.mktemp("slo") / "store")
    s.append("hop_minutes", pd.DataFrame(rows))
    yield s
    s.close()


@pytest.fixture(scope="module")
def slos() -> dict:
    got, errors = load_slos(RULES)
    assert errors == []
    return {s.name: s for s in got}


def test_minute_series_reads_exact_counts_and_falls_back_to_the_histogram(store: Store, slos: dict) -> None:
    start = T0 + timedelta(days=2, hours=9)
    lat = minute_series(store, slos["recommend-latency"], start, start + timedelta(hours=1))
    assert len(lat) == 60 and (lat["total"] == 20).all() and (lat["good"] == 10).all()
    avail = minute_series(store, slos["recommend-availability"], start, start + timedelta(hours=1))
    assert (avail["good"] == 18).all()
    gpu = minute_series(store, slos["model-server-latency"], start, start + timedelta(hours=1))
    # 240 ms > 150 ms for the slow half; the rest 12..72 ms, all in buckets below 150 ms
    assert (gpu["good"] == 10).all() and (gpu["total"] == 20).all()
    quiet = minute_series(store, slos["recommend-latency"], T0, T0 + timedelta(hours=1))
    assert (quiet["good"] == quiet["total"]).all()


def test_the_collection_gap_has_no_rows_and_is_reported(store: Store, slos: dict) -> None:
    now = T0 + timedelta(days=3, hours=1)
    st = evaluate(store, slos["recommend-availability"], now=now)
    gap = (T0 + timedelta(days=3), T0 + timedelta(days=3, minutes=30))
    assert gap in st.gaps
    assert st.total == (N - (N - 3 * 1440 - 60) - 30) * 20


def test_evaluate_many_matches_evaluate_one_by_one(store: Store, slos: dict) -> None:
    now = T0 + timedelta(days=2, hours=9, minutes=30)
    many = evaluate_many(store, list(slos.values()), now=now)
    assert many == [evaluate(store, s, now=now) for s in slos.values()]
    by = {s.slo: s for s in many}
    assert by["recommend-latency"].alert_state == "page"
    assert by["recommend-latency"].burn_rates["5m"] == pytest.approx(0.5 / 0.01)
    assert by["recommend-availability"].burn_rates["1h"] == pytest.approx((30 * 2) / (60 * 20) / 0.001)


def test_find_breaches_over_stored_history_is_stable(store: Store, slos: dict) -> None:
    slo = slos["recommend-latency"]
    first = find_breaches(store, slo)
    assert first == find_breaches(store, slo)
    pages = [b for b in first if b.severity == "page"]
    assert len(pages) == 1
    b = pages[0]
    # 28d SLO: page factor 2% x 672h / 1h = 13.44; after k bad minutes the 1h window burns
    # k/60 x 0.5 / 0.01 = 0.833k, first above 13.44 at k = 17, the minute starting 09:16
    assert b.start == T0 + timedelta(days=2, hours=9, minutes=16)
    assert b.peak_burn_rate == pytest.approx(50.0)


runner = CliRunner()


def test_cli_check_lists_the_shipped_slos() -> None:
    r = runner.invoke(app, ["check", "--rules", str(RULES)])
    assert r.exit_code == 0, r.output
    assert "recommend-latency: latency, objective 0.99, window 28d" in r.output
    assert "3 SLO(s) valid" in r.output


def test_cli_check_fails_on_a_bad_spec(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: hopscope/v1\nkind: SLO\nmetadata: {name: x}\nspec: {objective: 99.9, sli: {kind: availability, service: a}}\n"
    )
    r = runner.invoke(app, ["check", "--rules", str(tmp_path / "bad.yaml")])
    assert r.exit_code != 0
    assert "spec.objective: 99.9 is not a ratio in (0, 1); write 0.999" in r.output + str(r.exception)


def test_cli_status_json_shows_budget_and_alert_state(store: Store) -> None:
    now = (T0 + timedelta(days=2, hours=9, minutes=30)).isoformat()
    r = runner.invoke(
        app, ["status", "--store", str(store.path), "--rules", str(RULES), "--json", "--now", now]
    )
    assert r.exit_code == 0, r.output
    rows = {x["slo"]: x for x in json.loads(r.stdout)}
    assert rows["recommend-latency"]["alert_state"] == "page"
    assert 0 < rows["recommend-latency"]["budget_consumed"] < 1
    table = runner.invoke(app, ["status", "--store", str(store.path), "--rules", str(RULES), "--now", now])
    assert "recommend-latency" in table.output and "page" in table.output and "burn 1h" in table.output


def _events(demo_store: Path) -> tuple[list[dict], list[dict]]:
    truth = json.loads((demo_store / "scenario.json").read_text())
    events = [
        {**e, "start": datetime.fromisoformat(e["start"]), "end": datetime.fromisoformat(e["end"])}
        for e in truth["events"]
    ]
    return [e for e in events if e["expect_breach"]], [e for e in events if not e["expect_breach"]]


@pytest.mark.slow
def test_cli_status_on_the_demo_store_lists_the_incidents_that_burned_budget(demo_store: Path) -> None:
    incidents, harmless = _events(demo_store)
    assert incidents and harmless, "the scenario has incidents and events that must not breach"
    args = ["status", "--store", str(demo_store), "--rules", str(RULES)]
    r = runner.invoke(app, [*args, "--json", "--slo", "recommend-latency", "--slo", "recommend-availability"])
    assert r.exit_code == 0, r.output
    by = {x["slo"]: x for x in json.loads(r.stdout)}
    assert all(b["start"].endswith("Z") for b in by["recommend-latency"]["breaches"])  # UTC, said so
    breaches = [
        {**b, "start": _naive_utc(b["start"]), "end": _naive_utc(b["end"])}
        for b in by["recommend-latency"]["breaches"]
    ]
    for e in incidents:
        hits = [b for b in breaches if b["start"] < e["end"] and b["end"] > e["start"]]
        assert hits, f"{e['name']} ({e['start']} - {e['end']}) is not among {breaches}"
        assert all(b["budget_consumed"] > 0 and b["minutes"] > 0 for b in hits)
        assert {b["severity"] for b in hits} <= {"page", "ticket"}
    for e in harmless:
        assert not [b for b in breaches if b["start"] < e["end"] and b["end"] > e["start"]], e["name"]
    # every breach overlaps an incident (no false alarm), and budget was burned
    assert all(any(b["start"] < e["end"] and b["end"] > e["start"] for e in incidents) for b in breaches)
    assert by["recommend-latency"]["budget_consumed"] > 0
    # nothing before the first incident, in particular no 1-minute ticket at the first minute of data
    # (the 3d/6h pair used to fire there on one minute of data): the windows warm up first
    data_start = datetime.fromisoformat(json.loads((demo_store / "scenario.json").read_text())["start"])
    first_incident = min(e["start"] for e in incidents)
    for name in ("recommend-latency", "recommend-availability"):
        starts = [_naive_utc(b["start"]) for b in by[name]["breaches"]]
        assert all(s >= first_incident for s in starts), (name, data_start, starts)
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    lines = [ln for ln in table.output.splitlines() if ln.startswith("recommend-latency ")]
    for e in incidents:
        hit = next(b for b in breaches if b["start"] < e["end"] and b["end"] > e["start"])
        assert any(f"{hit['start']:%Y-%m-%d %H:%M}" in ln for ln in lines), (e["name"], table.output)


def _hour_of_rows(start: datetime, minutes: int, slow_from: int | None = None) -> pd.DataFrame:
    rows = []
    for m in range(minutes):
        d = np.full(20, 50.0)
        if slow_from is not None and m >= slow_from:
            d[:5] = 400.0
        rows.append(_row(start + timedelta(minutes=m), "", "api-gateway", d, 0, [200.0]))
    return pd.DataFrame(rows)


def test_the_minute_cache_reads_only_what_changed_and_follows_every_write(tmp_path: Path, slos: dict) -> None:
    """Its newest minutes come from the rows the process holds (changes.held): a write costs the
    snapshot list and the changed rows, two reads, whatever minutes it touched."""
    slo = slos["recommend-latency"]
    s = Store(tmp_path / "store", file_grace=timedelta(0))
    try:
        s.append("hop_minutes", _hour_of_rows(T0, 60))
        cache = MinuteCache()
        end = T0 + timedelta(hours=2)

        def good_total() -> tuple[float, float]:
            a = minute_arrays_many(s, [slo], T0, end, cache=cache)[slo.name]
            return float(a.good.sum()), float(a.total.sum())

        def scans() -> int:  # scans of hop_minutes: the cache's own, and those of the held rows
            return cache.reads + changes.reads(s)

        assert good_total() == (1200.0, 1200.0)
        first = scans()
        assert good_total() == (1200.0, 1200.0) and scans() == first, "unchanged store: no scan"
        # a new minute: the first write read holds the table's newest rows (two reads) and finds the changed
        # minutes; from then on only the snapshot list and the changed rows are read
        s.append("hop_minutes", _hour_of_rows(T0 + timedelta(minutes=60), 1, slow_from=0))
        assert good_total() == (1215.0, 1220.0)
        held = scans()
        assert held <= first + 6
        s.append("hop_minutes", _hour_of_rows(T0 + timedelta(minutes=61), 1, slow_from=0))
        assert good_total() == (1230.0, 1240.0) and scans() <= held + 3  # (the tables' ids, once)
        after = scans()
        # the oldest minute rewritten (a late rollup): seen too (and the table's oldest minute read again)
        s.replace("hop_minutes", "minute = ?", [T0], _hour_of_rows(T0, 1, slow_from=0))
        assert good_total() == (1225.0, 1240.0) and scans() == after + 3
        # merging files changes no rows: nothing but the snapshot list to read
        s.maintain(retention=False)
        before = scans()
        assert good_total() == (1225.0, 1240.0)
        assert scans() <= before + 3, "after snapshots expired, at most one full read"
        assert good_total() == (1225.0, 1240.0) and scans() <= before + 3
    finally:
        s.close()


def _spans(n_traces: int, seed: int = 11) -> pa.Table:
    """Root SERVER spans of api-gateway (some errors, some slow) over two hours, each with a child
    CLIENT span and the model-server's SERVER span under it (which the raw path must not count)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(T0, "us") + rng.integers(0, 2 * 3600 * 1_000_000, n_traces).astype(
        "timedelta64[us]"
    )
    root_ms = np.where(rng.random(n_traces) < 0.1, 450.0, rng.uniform(10, 190, n_traces))
    status = np.where(rng.random(n_traces) < 0.05, 2, 0).astype(np.int8)
    http = np.where(rng.random(n_traces) < 0.03, 503, 200).astype(np.int32)
    route = np.where(rng.random(n_traces) < 0.8, "/recommend", "/health")
    trace = [int(i).to_bytes(16, "big") for i in range(n_traces)]
    ids = [[int(3 * i + k).to_bytes(8, "big") for i in range(n_traces)] for k in range(3)]
    rows = {
        "trace_id": trace * 3,
        "span_id": ids[0] + ids[1] + ids[2],
        "parent_span_id": [None] * n_traces + ids[0] + ids[1],
        "service": ["api-gateway"] * (2 * n_traces) + ["model-server"] * n_traces,
        "name": ["POST"] * (3 * n_traces),
        "kind": [2] * n_traces + [3] * n_traces + [2] * n_traces,
        "start_time": list(start) * 3,
        "duration_ms": list(root_ms) + list(root_ms * 0.8) + list(root_ms * 0.7),
        "status_code": list(status) + [0] * (2 * n_traces),
        "http_route": list(route) * 3,
        "http_status_code": list(http) + [200] * (2 * n_traces),
    }
    return pa.table(rows)


def test_the_raw_span_path_counts_what_the_rollup_counts(tmp_path: Path, slos: dict) -> None:
    spans = _spans(3000)
    s = Store(tmp_path / "store")
    try:
        s.append("spans", spans)
        s.append("hop_minutes", rollup_spans(s.query("SELECT * FROM spans"), [200.0]))
        entry = [slos["recommend-latency"], slos["recommend-availability"]]
        anyroute = replace(
            slos["recommend-availability"], name="all-routes", sli=SLI("availability", service="api-gateway")
        )
        now = T0 + timedelta(hours=2)
        from_spans = evaluate_many(s, [*entry, anyroute], now=now, source="spans")
        from_rollup = evaluate_many(s, [*entry, anyroute], now=now)
        assert from_spans == from_rollup
        by = {x.slo: x for x in from_spans}
        assert by["all-routes"].total == 3000 and 0.8 * 3000 * 0.9 < by["recommend-latency"].total < 3000
        assert 0 < by["recommend-availability"].sli < 1 and 0 < by["recommend-latency"].sli < 1
        with pytest.raises(SpecError, match="hop SLIs are read from hop_minutes"):
            minute_arrays_from_spans(s, [slos["model-server-latency"]], T0, now)
    finally:
        s.close()


def _bursty(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n minutes of ~1000 events with random bursts of errors (some long enough to page) and gaps."""
    rng = np.random.default_rng(seed)
    total = rng.integers(900, 1100, n).astype(np.float64)
    bad = np.zeros(n)
    for start in rng.integers(0, n - 120, 12):
        bad[start : start + int(rng.integers(3, 90))] = rng.uniform(0.05, 0.6)
    total[rng.integers(0, n, 40)] = 0.0  # minutes without data
    return np.round(total * (1 - bad)), total


@pytest.mark.parametrize(
    ("budgeting", "cuts", "rewrite"),
    [
        ("occurrences", [2000, 2001, 2500, 3100, 4000, 5760], None),
        ("occurrences", [3000, 3500, 5760], 3200),  # a late minute rewritten inside the new part
        ("occurrences", [3000, 4000, 5760], 100),  # ... and long before it: all re-evaluated
        ("timeslices", [2000, 2003, 2995, 4444, 5760], None),
    ],
)
def test_breaches_continued_minute_by_minute_equal_a_full_evaluation(
    budgeting: str, cuts: list[int], rewrite: int | None
) -> None:
    """The live dashboard re-evaluates only the newest minutes (breaches_since); the result must be
    what evaluating the whole history gives, including a breach still firing at a cut."""
    slo = load_slos(RULES)[0][0]
    if budgeting == "timeslices":
        slo = replace(
            slo, budgeting=Budgeting("timeslices", slice=timedelta(minutes=5), slice_objective=0.95)
        )
    good, total = _bursty(4 * 1440, seed=len(cuts) + (rewrite or 0))
    t0 = int(np.datetime64(T0, "m").astype(np.int64))
    memo, seen = None, 0
    for cut in cuts:
        g, t = good[:cut].copy(), total[:cut].copy()
        if rewrite is not None and cut == cuts[-1]:
            g[rewrite] = 0.0  # every event of that minute bad
        arrays = MinuteArrays(t0, g, t)
        memo = breaches_since(slo, arrays, memo)
        full = breaches_from_arrays(slo, arrays)
        assert list(memo.breaches) == full, cut
        seen += len(full)
    assert seen > 0, "the bursts should breach"


def test_find_breaches_follows_new_minutes_as_a_fresh_cache_sees_them(tmp_path: Path, slos: dict) -> None:
    """Through the store: appended minutes (a breach starting, going on, ending) give the same breaches
    as a cache that reads everything afresh, and breach_table evaluates every SLO from one read."""
    slo_list = list(slos.values())
    s = Store(tmp_path / "store", file_grace=timedelta(0))
    try:
        s.append("hop_minutes", _hour_of_rows(T0, 120))
        live = MinuteCache()
        for minutes, slow in ((1, 0), (10, 0), (40, 0), (30, None), (5, None)):
            end = s.query("SELECT max(minute) AS m FROM hop_minutes").to_pylist()[0]["m"]
            s.append("hop_minutes", _hour_of_rows(end + timedelta(minutes=1), minutes, slow_from=slow))
            got = find_breaches_many(s, slo_list, cache=live)
            assert got == find_breaches_many(PlainStore(s), slo_list, cache=MinuteCache())
            assert got == {x.name: find_breaches(s, x) for x in slo_list}
        assert got["recommend-latency"], "the slow minutes should breach"
        table = query_slos.breach_table(s, str(RULES))
        want = sorted((b.start, b.slo, b.id) for v in got.values() for b in v)
        assert list(zip(table["start"], table["slo"], table["id"], strict=True)) == want
    finally:
        s.close()


@pytest.mark.parametrize("first_end_minutes", [30, 120, 180])  # before, at and after the data's end
def test_the_minute_cache_adds_inserted_minutes_as_a_fresh_read_sees_them(
    tmp_path: Path, slos: dict, first_end_minutes: int
) -> None:
    slo = slos["recommend-latency"]
    s = Store(tmp_path / "store", file_grace=timedelta(0))
    try:
        s.append("hop_minutes", _hour_of_rows(T0, 120))
        cache = MinuteCache()
        minute_arrays_many(s, [slo], T0, T0 + timedelta(minutes=first_end_minutes), cache=cache)
        s.append("hop_minutes", _hour_of_rows(T0 + timedelta(minutes=120), 3, slow_from=1))
        s.append("hop_minutes", _hour_of_rows(T0 + timedelta(minutes=10), 1, slow_from=0))  # a late row
        for end in (T0 + timedelta(minutes=first_end_minutes), T0 + timedelta(hours=4)):
            got = minute_arrays_many(s, [slo], T0, end, cache=cache)[slo.name]
            fresh = minute_arrays_many(PlainStore(s), [slo], T0, end, cache=MinuteCache())[slo.name]
            assert (got.t0, list(got.good), list(got.total)) == (
                fresh.t0,
                list(fresh.good),
                list(fresh.total),
            )
    finally:
        s.close()


def _naive_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


def test_the_minute_cache_equals_a_fresh_read_after_rewrites_deletes_and_maintenance(
    tmp_path: Path, slos: dict
) -> None:
    """What `slo status` and the SLO tiles read: the provisional minute rewritten, retention deleting the
    oldest minutes, then maintenance; each time the kept series equals a fresh read."""
    slo = slos["recommend-latency"]
    s = Store(tmp_path / "store", file_grace=timedelta(0))
    try:
        s.append("hop_minutes", _hour_of_rows(T0, 60))
        cache = MinuteCache()
        end = T0 + timedelta(hours=2)

        def same(what: str) -> None:
            got = minute_arrays_many(s, [slo], T0, end, cache=cache)[slo.name]
            fresh = minute_arrays_many(PlainStore(s), [slo], T0, end, cache=MinuteCache())[slo.name]
            assert (got.t0, list(got.good), list(got.total)) == (
                fresh.t0,
                list(fresh.good),
                list(fresh.total),
            ), what

        same("the first read")
        last = T0 + timedelta(minutes=59)
        s.replace("hop_minutes", "minute = ?", [last], _hour_of_rows(last, 1, slow_from=0))
        same("the provisional minute rewritten")
        s.delete("hop_minutes", "minute < ?", [T0 + timedelta(minutes=10)])
        same("retention deleting the oldest minutes")
        s.maintain(retention=False)
        same("maintenance")
    finally:
        s.close()

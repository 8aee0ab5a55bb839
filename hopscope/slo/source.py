"""Fetch the minute series the SLO math takes, from the store (the only SQL of the SLO engine).

Span SLIs read one edge of ``hop_minutes``: the entry edge (``client = ''``,
``server = <service>``) for end-to-end SLIs, or the ``client->server`` edge named
by ``hop``. Latency "good" is the exact ``good_cnt`` where ``good_le_ms`` holds the
threshold, else the histogram's buckets at or below it (``histogram.count_at_most``).

One scan per read gives, per minute and per series (edge x route x good measure), good and
total events; the series land in dense per-minute arrays (:class:`MinuteArrays`)
that a per-process :class:`MinuteCache` keeps per store. The cache is keyed by the store's
DuckLake snapshot: when the snapshot moves it asks DuckLake which minutes of ``hop_minutes``
changed (``ducklake_table_changes``) and re-reads from the earliest of them only, so a
dashboard refreshing every few seconds reads only the new minutes.

:func:`minute_arrays_from_spans` is the raw path: the same series straight from ``spans``
(entry edges only), for stores without rollups and for the benchmark.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hopscope import histogram
from hopscope.errors import SpecError
from hopscope.model import ReadStore
from hopscope.query import changes
from hopscope.slo.burn import (
    Breach,
    BreachMemo,
    MinuteArrays,
    SloStatus,
    _dt_int,
    _to_dt,
    breaches_since,
    combine_arrays,
    status_from_arrays,
    status_grid_start,
    without_excluded,
)
from hopscope.slo.corrections import attach_corrections
from hopscope.slo.model import SLO, SPAN_KINDS, leaf_slos
from hopscope.store import LAKE, current_snapshot, store_identity, utcnow

EMPTY = pd.DataFrame({"minute": pd.Series([], dtype="datetime64[us]"), "good": [], "total": []})


def _floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _ceil_minute(t: datetime) -> datetime:
    """The end of the minute holding t (t itself on a minute boundary)."""
    floor = _floor_minute(t)
    return floor if floor == t else floor + timedelta(minutes=1)


# -- series: what a span SLO reads ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One per-minute good/total series of ``hop_minutes``: an edge, a route (None: every route) and
    what counts as good (``threshold_ms``: latency at or under it; None: requests without error)."""

    client: str
    server: str
    route: str | None
    threshold_ms: float | None


def series_of(slo: SLO) -> Series | None:
    """The series a span SLO reads (None for Prometheus-sourced SLIs)."""
    if slo.sli.kind not in SPAN_KINDS:
        return None
    client, server = slo.sli.edge
    thr = float(slo.sli.threshold_ms) if slo.sli.kind == "latency" and slo.sli.threshold_ms else None
    return Series(client, server, slo.sli.route, thr)


def _leaf_series(slos: Sequence[SLO]) -> dict[str, Series | None]:
    """The series of every SLO the given ones stand on (composites: their components', recursively)."""
    out: dict[str, Series | None] = {}
    for s in slos:
        if s.composite and any(c.slo is None for c in s.sli.components):
            raise SpecError(
                f"{s.source_file or s.name}: spec.sli.components: composite SLO {s.name!r} is not resolved "
                "(load its rules folder with load_slos, which finds its components)"
            )
        for leaf in leaf_slos(s):
            out[leaf.name] = series_of(leaf)
    return out


def _assemble(
    slos: Sequence[SLO], got: dict[Series, MinuteArrays], lo: int, hi: int
) -> dict[str, MinuteArrays]:
    """Each SLO's arrays from its series' (Prometheus SLIs: all zeros; composites: combined)."""
    n = max(hi - lo, 0)

    def of(slo: SLO) -> MinuteArrays:
        if slo.composite:
            parts = [
                (c.weight, of(c.slo), c.slo.corrections) for c in slo.sli.components if c.slo is not None
            ]
            return combine_arrays(parts, lo, n)
        x = series_of(slo)
        return got[x] if x is not None else MinuteArrays(lo, np.zeros(n), np.zeros(n))

    return {s.name: of(s) for s in slos}


def _codes(series: Sequence[Series]) -> tuple[list[tuple[str, str]], list[str], list[float]]:
    edges = sorted({(s.client, s.server) for s in series})
    routes = sorted({s.route for s in series if s.route is not None})
    thresholds = sorted({s.threshold_ms for s in series if s.threshold_ms is not None})
    return edges, routes, thresholds


def _case(columns: tuple[str, ...], values: Sequence[tuple[object, ...]]) -> tuple[str, list[object]]:
    """``CASE WHEN a = ? AND b = ? THEN 0 ... ELSE -1 END``: fixed column names, values bound."""
    if not values:
        return "-1", []
    parts: list[str] = []
    params: list[object] = []
    for i, v in enumerate(values):
        parts.append("WHEN " + " AND ".join(f"{c} = ?" for c in columns) + f" THEN {i}")
        params += list(v)
    return "CASE " + " ".join(parts) + " ELSE -1 END", params


def _read_hop_minutes(
    store: ReadStore,
    series: Sequence[Series],
    lo: int,
    hi: int | None,
    *,
    table: str = "hop_minutes",
    table_params: Sequence[object] = (),
) -> dict[Series, MinuteArrays]:
    """Dense arrays of the series over minutes [lo, hi), from one scan of hop_minutes (``table``: or
    of a table function of it); ``hi`` None: up to the newest minute read.

    Rows are already one per minute x edge x route, so the scan only projects (grouping them in SQL
    cost more than it saved); edges and routes come back as small integer codes, and numpy sums
    the rows of each series per minute. Where the rollup did not count a threshold exactly, the
    histogram's buckets at or below it count instead.
    """
    edges, routes, thresholds = _codes(series)
    edge_sql, edge_params = _case(("client", "server"), edges)
    route_sql, route_params = _case(("route",), [(r,) for r in routes])
    # where the rollup did not count a threshold exactly (not in good_le_ms): its histogram's buckets
    # at or below it, in the same scan (a second one cost ~30 ms even for the newest minute alone)
    goods = "".join(
        f", CASE WHEN list_position(good_le_ms, ?::DOUBLE) IS NULL THEN coalesce(list_sum(list_transform("
        "range(1, len(hist_idx) + 1), k -> CASE WHEN hist_idx[k] <= ? THEN hist_cnt[k] ELSE 0 END)), 0)::BIGINT "
        f"ELSE good_cnt[list_position(good_le_ms, ?::DOUBLE)] END AS g{i}"
        for i in range(len(thresholds))
    )
    good_params = [x for thr in thresholds for x in (thr, int(histogram.bucket_index(thr)), thr)]
    where = (
        "minute >= ?"
        + (" AND minute < ?" if hi is not None else "")
        + " AND ("
        + " OR ".join("(client = ? AND server = ?)" for _ in edges)
        + ")"
    )
    bounds = [_to_dt(lo)] if hi is None else [_to_dt(lo), _to_dt(hi)]
    where_params = [*bounds, *[x for e in edges for x in e]]
    sql = (
        "SELECT CAST(epoch_us(minute) // 60000000 AS BIGINT) AS m, "
        f"{edge_sql} AS e, {route_sql} AS r, count AS total, errors{goods} FROM {table} WHERE {where}"
    )
    rows = store.query(sql, [*edge_params, *route_params, *good_params, *table_params, *where_params])
    if hi is None:
        newest = pc.max(rows.column("m")).as_py() if rows.num_rows else None
        hi = lo if newest is None else int(newest) + 1
    return _to_arrays(rows, series, edges, routes, thresholds, lo, hi)


def _to_arrays(
    table: pa.Table,
    series: Sequence[Series],
    edges: Sequence[tuple[str, str]],
    routes: Sequence[str],
    thresholds: Sequence[float],
    lo: int,
    hi: int,
    extra: dict[float, pa.Table] | None = None,
) -> dict[Series, MinuteArrays]:
    """Per series, sum the rows of a scan (columns m, e, r, total, errors, g<i>) onto a minute grid."""
    n = max(hi - lo, 0)

    columns: dict[tuple[int, str], np.ndarray] = {}

    def col(t: pa.Table, name: str) -> np.ndarray:
        key = (id(t), name)
        if key not in columns:
            c = t.column(name)
            if pa.types.is_decimal(c.type):
                c = c.cast(pa.float64())
            columns[key] = np.asarray(np.nan_to_num(c.to_numpy(zero_copy_only=False).astype(np.float64)))
        return columns[key]

    def codes(t: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (
            t.column("m").to_numpy().astype(np.int64) - lo,
            t.column("e").to_numpy().astype(np.int64),
            t.column("r").to_numpy().astype(np.int64),
        )

    def sums(idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.asarray(np.bincount(idx, weights=weights, minlength=n)[:n]) if len(idx) else np.zeros(n)

    def select(e: np.ndarray, r: np.ndarray, s: Series) -> np.ndarray:
        mask = np.asarray(e == edges.index((s.client, s.server)))
        if s.route is not None:
            mask &= r == routes.index(s.route)
        return mask

    m, e, r = codes(table)
    total = col(table, "total")
    out = {}
    for s in series:
        mask = select(e, r, s)
        if s.threshold_ms is None:
            good_w = total[mask] - col(table, "errors")[mask]
        else:
            good_w = col(table, f"g{thresholds.index(s.threshold_ms)}")[mask]
        good = sums(m[mask], good_w)
        fb = (extra or {}).get(s.threshold_ms) if s.threshold_ms is not None else None
        if fb is not None and fb.num_rows:
            fm, fe, fr = codes(fb)
            fmask = select(fe, fr, s)
            good = good + sums(fm[fmask], col(fb, "g")[fmask])
        out[s] = MinuteArrays(lo, good, sums(m[mask], total[mask]))
    return out


# -- the per-process cache ----------------------------------------------------------------------

# Snapshot changes that leave the rows of a table as they were (file merges, flushing inlined rows).
_NO_ROW_CHANGES = ("merge_adjacent", "flushed_inlined", "compacted")


@dataclass(slots=True)
class _StoreState:
    snapshot: int | None = None
    table_id: int | None = None
    series: dict[Series, MinuteArrays] = field(default_factory=dict)
    # one minute after the newest minute of hop_minutes at `snapshot` (None: not known)
    table_end: int | None = None


class MinuteCache:
    """Per-minute series of each store this process reads, kept until the store's data changes.

    Keyed by the store's folder and catalog file (a store regenerated in place starts afresh) and
    checked against the DuckLake snapshot on every read: unchanged, nothing is read; changed, only
    the minutes from the earliest changed one on (``ducklake_table_changes``); where DuckLake cannot
    say (the snapshot expired), everything is read again. ``max_minutes`` bounds each series,
    ``max_stores`` the stores kept (least recently used dropped first).
    """

    def __init__(self, max_minutes: int = 400 * 1440, max_stores: int = 8) -> None:
        self.max_minutes = max_minutes
        self.max_stores = max_stores
        self._lock = threading.Lock()
        self._stores: dict[tuple[str, int, int], _StoreState] = {}
        # the last breach evaluation per (store, SLO, grid start): a new minute re-evaluates only the end
        self._breaches: dict[tuple[tuple[object, ...], str, int], BreachMemo] = {}
        self.reads = 0  # SQL scans of hop_minutes (for tests and the benchmark)

    def clear(self) -> None:
        with self._lock:
            self._stores.clear()
            self._breaches.clear()

    def breaches(self, store: ReadStore, slo: SLO, arrays: MinuteArrays) -> tuple[Breach, ...]:
        """breaches_from_arrays(slo, arrays), continued from this store's last evaluation of the SLO."""

        ident = store_identity(store)
        if ident is None:
            return breaches_since(slo, arrays).breaches
        key = (ident, slo.name, arrays.t0)
        with self._lock:
            prev = self._breaches.pop(key, None)
        memo = breaches_since(slo, arrays, prev)
        with self._lock:
            self._breaches[key] = memo  # most recently used last
            while len(self._breaches) > 4 * self.max_stores:
                del self._breaches[next(iter(self._breaches))]
        return memo.breaches

    def arrays(
        self, store: ReadStore, series: Sequence[Series], lo: int, hi: int
    ) -> dict[Series, MinuteArrays]:
        """Dense arrays of the series over minutes [lo, hi)."""
        series = list(dict.fromkeys(series))
        if not series or hi <= lo:
            return {s: MinuteArrays(lo, np.zeros(max(hi - lo, 0)), np.zeros(max(hi - lo, 0))) for s in series}

        ident = store_identity(store)
        if ident is None:
            self.reads += 1
            return _read_hop_minutes(store, series, lo, hi)
        with self._lock:
            state = self._stores.pop(ident, None) or _StoreState()
            self._stores[ident] = state  # most recently used last
            while len(self._stores) > self.max_stores:
                del self._stores[next(iter(self._stores))]
            # the rows held for the store, once the cached series must follow a write (a page, the evaluator:
            # not a one-shot CLI run, which would pay their first read for nothing)
            held = changes.held(store, "hop_minutes", create=False)
            if held is None and state.series:
                snap = changes.snapshot(store)
                held = changes.held(store, "hop_minutes", snap) if snap != state.snapshot else None
            self._sync(store, state, held)
            # per series, what it lacks of [lo, hi) while staying one contiguous range: before and after
            # what it holds; series lacking the same segments are read together
            todo: dict[tuple[int, int], list[Series]] = {}
            for s in series:
                have = state.series.get(s)
                if have is None or have.n == 0:
                    todo.setdefault((lo, hi), []).append(s)
                    continue
                ka, kb = have.t0, have.t0 + have.n
                if lo < ka:
                    todo.setdefault((lo, ka), []).append(s)
                if hi > kb:
                    todo.setdefault((kb, hi), []).append(s)
            for (sa, sb), need in sorted(todo.items()):
                # the newest minutes from the rows held in memory, where they hold them
                src = held.tail() if held is not None and held.covers(_to_dt(sa)) else store
                self.reads += src is store
                for s, arr in _read_hop_minutes(src, need, sa, sb).items():
                    state.series[s] = self._merge(state.series.get(s), arr)
            return {s: state.series[s].window(lo, hi) for s in series}

    def _merge(self, old: MinuteArrays | None, new: MinuteArrays) -> MinuteArrays:
        if old is None or old.n == 0:
            merged = new
        else:
            a, b = min(old.t0, new.t0), max(old.t0 + old.n, new.t0 + new.n)
            merged = old.window(a, b)
            merged.good[new.t0 - a : new.t0 - a + new.n] = new.good
            merged.total[new.t0 - a : new.t0 - a + new.n] = new.total
        if merged.n > self.max_minutes:
            merged = merged.window(merged.t0 + merged.n - self.max_minutes, merged.t0 + merged.n)
        return merged

    def _sync(self, store: ReadStore, state: _StoreState, held: changes.Held | None = None) -> None:
        """Bring the cached series in line with the store's current snapshot (`held`'s, when given: its
        changes say which minutes to read again, without a read)."""

        if held is not None:  # the rows changed since are known already (changes.held): no read
            snap: int | None = held.snap
        else:
            snap = current_snapshot(store)
        if snap is None or state.snapshot is None or snap < state.snapshot:
            state.series.clear()
            state.table_end = None
        elif (
            snap != state.snapshot
            and state.series
            and held is not None
            and not isinstance(first := held.first_change(state.snapshot, snap), changes.Unknown)
        ):
            state.table_end = None
            if first is not None:
                cut = _dt_int(first)
                for s, arr in list(state.series.items()):
                    if cut <= arr.t0:
                        del state.series[s]
                    elif cut < arr.t0 + arr.n:
                        state.series[s] = arr.window(arr.t0, cut)
        elif snap != state.snapshot and state.series:
            changed_from = self._changed_from(store, state, snap)
            if isinstance(changed_from, dict):  # rows were only added: add them onto the sums
                self._add(store, state, changed_from)
            elif changed_from is not None:
                state.table_end = None
                for s, arr in list(state.series.items()):
                    if changed_from <= arr.t0:
                        del state.series[s]
                    elif changed_from < arr.t0 + arr.n:
                        state.series[s] = arr.window(arr.t0, changed_from)
        state.snapshot = snap

    def _add(self, store: ReadStore, state: _StoreState, added: dict[Series, MinuteArrays]) -> None:
        """Add inserted rows' sums onto the cached series. A series that held every minute of the table
        (up to its newest) grows by the newer minutes inserted: nothing else can be in them."""
        if state.table_end is None:
            t = store.query(
                "SELECT max(minute) AS m FROM hop_minutes AT (VERSION => ?)", [state.snapshot]
            ).column(0)
            last = t[0].as_py() if len(t) else None
            state.table_end = -(2**62) if last is None else _dt_int(last) + 1
        end = state.table_end
        for s, arr in list(state.series.items()):
            inc = added[s]
            a, b = arr.t0, arr.t0 + arr.n
            if b >= end:
                b = max(b, inc.t0 + inc.n)
            grown = arr.window(a, b) if b > arr.t0 + arr.n else arr
            inc = inc.window(a, b)
            merged = MinuteArrays(a, grown.good + inc.good, grown.total + inc.total)
            if merged.n > self.max_minutes:
                merged = merged.window(b - self.max_minutes, b)
            state.series[s] = merged
        newest = max((x.t0 + x.n for x in added.values()), default=end)
        state.table_end = max(end, newest)

    def _changed_from(
        self, store: ReadStore, state: _StoreState, snap: int
    ) -> int | dict[Series, MinuteArrays] | None:
        """Earliest minute of hop_minutes changed after the cached snapshot (-inf: unknown, read all);
        where rows were only inserted (no delete, no file rewritten), the inserted rows' sums instead."""
        everything = -(2**62)
        try:
            if state.table_id is None:
                t = store.query(
                    "SELECT table_id FROM ducklake_table_info(?) WHERE table_name = 'hop_minutes'", [_lake()]
                ).column(0)
                state.table_id = int(t[0].as_py()) if len(t) else None
            rows = store.query(
                "SELECT snapshot_id, changes FROM ducklake_snapshots(?) WHERE snapshot_id > ? AND snapshot_id <= ?",
                [_lake(), state.snapshot, snap],
            ).to_pylist()
            if sorted(int(r["snapshot_id"]) for r in rows) != list(
                range((state.snapshot or 0) + 1, snap + 1)
            ):
                return everything  # some snapshots expired: what they changed is no longer known
            kinds = _touching(rows, state.table_id)
            if not kinds:
                return None
            if kinds <= _INSERTS and not _rewrites(rows) and state.series:
                # a live store: one scan of the inserted rows (~10 ms) instead of finding the earliest
                # changed minute and reading from there (~50 ms); counts add up exactly
                lo = min(a.t0 for a in state.series.values())
                self.reads += 1
                return _read_hop_minutes(
                    store, list(state.series), lo, None,
                    table="ducklake_table_insertions(?, 'main', 'hop_minutes', ?, ?)",
                    table_params=[_lake(), (state.snapshot or 0) + 1, snap],
                )  # fmt: skip
            # inserts only (a live store): the insertions alone cost a quarter of all the changes
            changes = "ducklake_table_insertions" if kinds <= _INSERTS else "ducklake_table_changes"
            t = store.query(
                f"SELECT min(minute) AS m FROM {changes}(?, 'main', 'hop_minutes', ?, ?)",
                [_lake(), (state.snapshot or 0) + 1, snap],
            ).column(0)
        except Exception:  # an expired snapshot, a catalog without these functions: read everything again
            return everything
        first = t[0].as_py() if len(t) else None
        return None if first is None else _dt_int(first)


# Snapshot changes that only add rows to a table.
_INSERTS = frozenset({"tables_inserted_into", "inlined_insert"})


def _touches(rows: Iterable[dict[str, Any]], table_id: int | None) -> bool:
    """Whether any of these snapshots changed rows of the table (unknown shapes count as yes)."""
    return bool(_touching(rows, table_id))


def _rewrites(rows: Iterable[dict[str, Any]]) -> bool:
    """Whether any of these snapshots rewrote files (merges, flushes): rows may show as inserted again."""
    for row in rows:
        changes = row.get("changes")
        items = changes.items() if isinstance(changes, dict) else (changes or [])
        for item in items:
            key = item[0] if isinstance(item, tuple) else item.get("key")
            if str(key) not in _INSERTS:
                return True
    return False


def _touching(rows: Iterable[dict[str, Any]], table_id: int | None) -> set[str]:
    """The kinds of change (``tables_inserted_into`` ...) of these snapshots that touch the table's rows
    (unknown shapes count as touching it)."""
    kinds: set[str] = set()
    for row in rows:
        changes = row.get("changes")
        items = changes.items() if isinstance(changes, dict) else (changes or [])
        for item in items:
            key, ids = item if isinstance(item, tuple) else (item.get("key"), item.get("value"))
            if str(key) in _NO_ROW_CHANGES:
                continue
            if (
                table_id is None
                or ids is None
                or table_id in [int(x) for x in ids if str(x).isdigit()]
                or not ids
            ):
                kinds.add(str(key))
    return kinds


def _lake() -> str:

    return LAKE


CACHE = MinuteCache()


# -- minute series -------------------------------------------------------------------------------


def minute_arrays_many(
    store: ReadStore,
    slos: Sequence[SLO],
    start: datetime,
    end: datetime,
    *,
    cache: MinuteCache | None = None,
) -> dict[str, MinuteArrays]:
    """Dense minute arrays of many SLOs over [start, end) from hop_minutes (Prometheus SLIs: all zeros)."""
    lo, hi = _dt_int(start), _dt_int(end)
    wanted = _leaf_series(slos)
    got = (cache or CACHE).arrays(store, [x for x in wanted.values() if x is not None], lo, hi)
    return _assemble(slos, got, lo, hi)


def minute_series_many(
    store: ReadStore, slos: Sequence[SLO], start: datetime, end: datetime
) -> dict[str, pd.DataFrame]:
    """Minute frames (minute, good, total) of many span SLOs over [start, end), from one scan of hop_minutes.

    What each SLI counts: the minutes of its corrections (in its file or in the store) have no row;
    a composite's rows are its components' weighted sums. SLOs whose SLI is not read from spans
    (Prometheus kinds) get an empty frame.
    """
    slos = attach_corrections(store, slos)
    arrays = minute_arrays_many(store, slos, _floor_minute(start), _floor_minute(end))
    return {
        s.name: (
            without_excluded(s, arrays[s.name]).to_frame() if series_of(s) or s.composite else EMPTY.copy()
        )
        for s in slos
    }


def minute_series(store: ReadStore, slo: SLO, start: datetime, end: datetime) -> pd.DataFrame:
    """Columns minute, good, total of one SLO over [start, end); minutes without data have no row."""
    return minute_series_many(store, [slo], start, end)[slo.name]


def minute_arrays_from_spans(
    store: ReadStore, slos: Sequence[SLO], start: datetime, end: datetime
) -> dict[str, MinuteArrays]:
    """The raw path: the SLOs' minute arrays over [start, end) from ``spans``, in one grouped scan.

    Entry-edge SLIs only (the trace's root SERVER span of the service, with its route; errors:
    status_code 2 or an HTTP status >= 500), counted as the rollup counts them. A hop SLI needs the
    client/server pairing of the rollup: read it from hop_minutes.

    The query's shape was measured (``benchmarks/slo_eval.py``, 28M spans, 2 CPUs): one scan of five
    columns, an integer epoch minute, conditional counts per threshold. These cost the same or more
    CPU: routes coded in SQL (list_position, CASE, one packed integer key), date_trunc or time_bucket
    minutes, a perfect-hash grouping on day/hour/minute parts, FILTER clauses or one packed sum for
    the counts, and splitting the range into per-day queries. Of ~2.3 CPU-s, the filters take ~0.8
    (mostly decoding ``start_time``), the value columns ~0.7 and grouping 400k minute x route groups
    ~0.8; what is left to gain is in how ``spans`` is written (Parquet v2 encodings), not here.
    """
    lo, hi = _dt_int(start), _dt_int(end)
    wanted = _leaf_series(slos)
    for s in (leaf for x in slos for leaf in leaf_slos(x)):
        x = wanted[s.name]
        if x is not None and x.client != "":
            raise SpecError(
                f"{s.source_file or s.name}: spec.sli.hop: {s.sli.hop!r}: the raw-span path reads entry edges "
                "only; hop SLIs are read from hop_minutes"
            )
    series = [x for x in dict.fromkeys(wanted.values()) if x is not None]
    if not series:
        return _assemble(slos, {}, lo, hi)
    edges, routes, thresholds = _codes(series)
    # Group on the raw columns and code the few result rows in Arrow: a CASE per span costs more.
    goods = "".join(f", count_if(duration_ms <= ?) AS g{i}" for i in range(len(thresholds)))
    one_service = len(edges) == 1  # the usual case: no service column to group on
    sql = (
        "SELECT CAST(epoch_us(start_time) // 60000000 AS BIGINT) AS m, "
        + ("" if one_service else "service, ")
        + "http_route AS route, count(*) AS total, "
        "count_if(status_code = 2 OR http_status_code >= 500) AS errors"
        + goods
        + " FROM spans WHERE start_time >= ? AND start_time < ? AND parent_span_id IS NULL AND kind = 2 "
        "AND service IN (" + ", ".join("?" for _ in edges) + ") GROUP BY ALL"
    )
    table = store.query(sql, [*thresholds, _to_dt(lo), _to_dt(hi), *[e[1] for e in edges]])

    def code(column: pa.ChunkedArray, values: Sequence[str]) -> pa.Array:
        # a trace without a route rolls up under route '' (as the rollup does)
        found = pc.index_in(pc.fill_null(column, ""), value_set=pa.array(list(values), pa.string()))
        return pc.fill_null(found, -1)

    n = table.num_rows
    coded = pa.table(
        {
            "m": table.column("m"),
            "e": pa.array(np.zeros(n, np.int64))
            if one_service
            else code(table.column("service"), [e[1] for e in edges]),
            "r": code(table.column("route"), routes),
            "total": table.column("total"),
            "errors": table.column("errors"),
            **{f"g{i}": table.column(f"g{i}") for i in range(len(thresholds))},
        }
    )
    got = _to_arrays(coded, series, edges, routes, thresholds, lo, hi)
    return _assemble(slos, got, lo, hi)


# -- evaluation ----------------------------------------------------------------------------------


def lookback(slo: SLO, now: datetime | None = None) -> timedelta:
    """How much history before ``now`` its status needs: the longest alert window, and one nominal
    period before the period's start (the breaches of the period and their budget share)."""
    if now is None:
        windows = [t.long for t in slo.alerting.tiers] + [slo.window.nominal + timedelta(days=1)]
        return max(windows)
    return now - status_grid_start(slo, now)


def store_now(store: ReadStore) -> datetime | None:
    """One minute after the last minute of hop_minutes (None for an empty store)."""
    t = store.query("SELECT max(minute) AS m FROM hop_minutes").column(0)
    m = t[0].as_py() if len(t) else None
    if m is None:
        return None
    last: datetime = pd.Timestamp(m).to_pydatetime()
    return last + timedelta(minutes=1)


def _note_unsourced(slo: SLO, status: SloStatus) -> SloStatus:
    if slo.sli.kind in SPAN_KINDS or slo.composite:
        return status
    note = (
        f"{slo.name}: {slo.sli.kind} SLI is evaluated by Prometheus; export its rules (hopscope slo export)"
    )
    return replace(status, notes=(*status.notes, note))


def evaluate_many(
    store: ReadStore,
    slos: Sequence[SLO],
    *,
    now: datetime | None = None,
    breaches: bool = True,
    source: str = "hop_minutes",
) -> list[SloStatus]:
    """Status of every SLO at ``now`` (default: now, UTC), with the breaches of its period.

    The minute holding ``now`` counts: the rollup keeps a live store's open minute (provisionally), so
    a request acknowledged seconds ago is in the status; ``now`` on a minute boundary is that minute.
    ``source``: ``hop_minutes`` (cached, see :class:`MinuteCache`) or ``spans`` (the raw path, uncached).
    Each SLO is evaluated with its corrections, those of its file and those stored
    (:func:`~hopscope.slo.corrections.attach_corrections`).
    """

    now = _ceil_minute(now or utcnow())
    if not slos:
        return []
    slos = attach_corrections(store, slos)
    start = min(status_grid_start(s, now, breaches=breaches) for s in slos)
    if source == "spans":
        arrays = minute_arrays_from_spans(store, slos, start, now)
    elif source == "hop_minutes":
        arrays = minute_arrays_many(store, slos, start, now)
    else:
        raise ValueError(f"source: {source!r} is not one of hop_minutes, spans")
    return [_note_unsourced(s, status_from_arrays(s, arrays[s.name], now, breaches=breaches)) for s in slos]


def evaluate(store: ReadStore, slo: SLO, *, now: datetime | None = None) -> SloStatus:
    return evaluate_many(store, [slo], now=now)[0]


LONG_SPAN = timedelta(days=400)  # the longest rollup retention by default


def find_breaches(
    store: ReadStore, slo: SLO, *, start: datetime | None = None, end: datetime | None = None
) -> list[Breach]:
    """Breaches of one SLO over stored history (default: all of it); windows look back before ``start``."""
    return find_breaches_many(store, [slo], start=start, end=end)[slo.name]


def find_breaches_many(
    store: ReadStore,
    slos: Sequence[SLO],
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    cache: MinuteCache | None = None,
) -> dict[str, list[Breach]]:
    """:func:`find_breaches` of many SLOs from one read; each SLO's evaluation is continued from the
    last one of the same store (``MinuteCache.breaches``): a new minute re-evaluates the newest minutes."""
    if not slos:
        return {}
    slos = attach_corrections(store, slos)
    if start is None or end is None or end - start > LONG_SPAN:
        # (a span longer than any retention is cut to the data: the minute grid would not fit in memory)
        held = changes.held(store, "hop_minutes", create=False)  # the table's ends without a read, where held
        row: dict[str, Any] = (
            {"lo": held.lo, "hi": held.hi}
            if held is not None
            else store.query("SELECT min(minute) AS lo, max(minute) AS hi FROM hop_minutes").to_pylist()[0]
        )
        if row["lo"] is None:
            return {s.name: [] for s in slos}
        start = row["lo"] if start is None else max(start, row["lo"])
        end = end or row["hi"] + timedelta(minutes=1)
        if start >= end:
            return {s.name: [] for s in slos}
    # windows warm up over the longest long window; a breach's budget share needs one period before it
    backs = {s.name: max([t.long for t in s.alerting.tiers] + [s.window.nominal]) for s in slos}
    cache = cache or CACHE
    hi = _floor_minute(end)
    arrays = minute_arrays_many(store, slos, _floor_minute(start - max(backs.values())), hi, cache=cache)
    out = {}
    for s in slos:
        own = arrays[s.name].window(_dt_int(_floor_minute(start - backs[s.name])), _dt_int(hi))
        out[s.name] = [b for b in cache.breaches(store, s, own) if b.end > start and b.start < end]
    return out


def culprit(store: ReadStore, slo: SLO, start: datetime, end: datetime) -> SLO:
    """The SLO a breach of ``slo`` over [start, end) is diagnosed on: itself, or for a composite the
    component (followed down nested composites) whose weighted bad events over the span are the most."""
    while slo.composite:
        parts = [c for c in slo.sli.components if c.slo is not None]
        if not parts:
            return slo
        frames = minute_series_many(store, [c.slo for c in parts if c.slo is not None], start, end)
        bad = {
            c.name: float(c.weight * (f["total"] - f["good"]).sum()) if len(f := frames[c.name]) else 0.0
            for c in parts
        }
        top = max(parts, key=lambda c: bad[c.name])
        assert top.slo is not None
        slo = top.slo
    return slo

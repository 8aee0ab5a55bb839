"""Rollups: raw spans -> ``hop_minutes`` (one row per minute x edge x route).

    table = rollup_spans(spans, thresholds_ms=[100, 200, 300, 500])   # pure: Arrow/pandas in, Arrow out
    rows = run_rollup(store, [100, 200, 300, 500])                      # incremental job on a Store

Rules (what each hop_minutes column means, and what happens to imperfect traces)

* **Edge.** Every SERVER span (kind 2) of service B is one request on one edge ``A -> B``:

  - its parent is a CLIENT span (kind 3) of service A: edge ``A -> B``, *paired* (client timing known);
  - its parent is another kind of span (INTERNAL, SERVER, ...) of service A: edge ``A -> B`` without
    client timing (the caller did not record a client span);
  - it has no parent id (a trace root): the entry edge ``'' -> B`` (:data:`ENTRY_CLIENT`);
  - it names a parent that is not in the data (lost, sampled away, or an untraced caller that sent a
    ``traceparent``): edge ``'?' -> B`` (:data:`UNKNOWN_CLIENT`), never the entry edge, so SLOs on
    the entry edge never count half-seen requests.

  A CLIENT span of service A with no SERVER child (an uninstrumented callee: a database, a cache, an
  external API) is one request on the edge ``A -> peer.service`` (else ``server.address``, else
  ``'?'``); its duration is the client span, with no server, gap or self time.
  Other spans (INTERNAL, PRODUCER, CONSUMER) make no edge of their own.
* **Minute.** Each edge observation lands in the minute of its *own* span's start: the client
  span's for a paired edge, else the server (or client-only) span's. The spans of one request can
  therefore fall into neighbouring minutes; each minute counts each edge call exactly once.
* **Route.** The ``http_route`` of the trace's entry span, given to every edge of the trace: the
  first span with a non-empty route, preferring true roots, then spans whose parent is missing,
  then SERVER spans, then the earliest start. ``''`` when no span of the trace has a route.
* **Timings.** ``duration`` = client span if paired, else the span itself. ``client_ms`` = the
  client span (0 where none); ``server_ms`` = the server span (0 for client-only edges).
  ``gap`` = ``max(0, client - server)`` for paired edges, else 0. A pair whose server span outlasts
  its client span is **clock skew**: gap 0, counted in ``skewed``. ``self`` = the server span minus
  the union of the intervals of its outgoing CLIENT spans (children, or reached through INTERNAL
  spans of the same service), merged and clipped to the server span; never below 0.
* **Errors.** ``status_code == 2`` or ``http_status_code >= 500`` on the server span (on the client
  span for client-only edges).
* **Bad values never crash a rollup.** Negative or missing durations count as 0 ms; spans whose
  (trace, span) id pair repeats are counted once (the first); a missing kind is 0 (unspecified).
* ``exemplars``: hex trace ids (lowercase) of the ``exemplars`` slowest distinct traces of the row,
  ties broken by trace id, so the same spans always give the same rows.

The incremental job (:func:`run_rollup`) rolls the minutes from the ``rollup.watermark`` state up to
the open minute, and rewrites each chunk of minutes with ``Store.replace``: rolling the same minutes
twice gives the same rows. A minute is *final* once it closed at least ``grace`` ago (the watermark
moves past it); until then it is *provisional*: every run rewrites it whole from the spans stored so
far, so a span that arrives late (an exporter retrying) lands in its own minute and no minute is
counted twice. The daemon runs it every few seconds, so ``hop_minutes`` trails the acknowledged spans
by seconds, not by the grace. Spans that arrive after their minute turned final are not counted
(make ``grace`` longer than the exporters' retries). Spans are read with ``context`` minutes
either side of the chunk so that a pair or a trace crossing a chunk edge is whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from hopscope import histogram
from hopscope.durations import parse_utc
from hopscope.errors import ConfigError, StoreError
from hopscope.schema import HOP_MINUTES, SPANS
from hopscope.store import Store, utcnow

ENTRY_CLIENT = ""
UNKNOWN_CLIENT = "?"
WATERMARK_KEY = "rollup.watermark"
SERVER = 2
CLIENT = 3
_US_PER_MIN = 60_000_000
_REQUIRED = ("trace_id", "span_id", "service", "kind", "start_time", "duration_ms")
_OPTIONAL = (
    "parent_span_id",
    "status_code",
    "http_route",
    "http_status_code",
    "peer_service",
    "server_address",
)
_MAX_DEPTH_STEPS = 64  # pointer-jumping rounds: enough for 2**64 nested spans


# ------------------------------------------------------------------------------------- pure


def check_thresholds(thresholds_ms: Sequence[float]) -> list[float]:
    """Thresholds as sorted unique floats; ConfigError names a bad value."""
    out: set[float] = set()
    for t in thresholds_ms:
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise ConfigError(f"rollup thresholds_ms: {t!r} is not a positive number of milliseconds")
        out.add(float(t))
    return sorted(out)


def empty_hop_minutes() -> pa.Table:
    return HOP_MINUTES.arrow_schema.empty_table()


def rollup_spans(
    spans: pa.Table | pd.DataFrame, thresholds_ms: Sequence[float], *, exemplars: int = 3
) -> pa.Table:
    """Roll spans up into hop_minutes rows (exact Arrow types of ``HOP_MINUTES``); see the module doc."""
    thresholds = check_thresholds(thresholds_ms)
    if exemplars < 0:
        raise ConfigError(f"rollup exemplars: {exemplars!r} must be >= 0")
    cols = _columns(spans)
    n = len(cols["kind"])
    if n == 0:
        return empty_hop_minutes()

    # -- ids -> integer keys (Arrow's hash encoding); duplicate (trace, span) pairs count once
    trace_dict = pc.dictionary_encode(cols["trace_id"]).combine_chunks()
    trace_code = _codes(trace_dict)
    trace_uniques = trace_dict.dictionary
    has_parent_id = cols["has_parent_id"]
    ids = pa.chunked_array([*cols["span_id"].chunks, *cols["parent_span_id"].chunks], pa.binary())
    id_dict = pc.dictionary_encode(ids).combine_chunks()
    id_code = _codes(id_dict)
    n_ids = max(len(id_dict.dictionary), 1)
    span_code, parent_code = id_code[:n], id_code[n:]
    parent_code = np.where(has_parent_id, parent_code, -1)
    valid = (trace_code >= 0) & (span_code >= 0)
    key = np.where(valid, trace_code.astype(np.int64) * n_ids + span_code, -1 - np.arange(n, dtype=np.int64))
    keep = valid & ~pd.Index(key).duplicated(keep="first")
    if not keep.all():
        cols = {k: v[keep] for k, v in cols.items() if isinstance(v, np.ndarray)}
        trace_code, key, parent_code, has_parent_id = (
            trace_code[keep],
            key[keep],
            parent_code[keep],
            has_parent_id[keep],
        )
        n = len(key)
        if n == 0:
            return empty_hop_minutes()
    parent_key = np.where(parent_code >= 0, trace_code.astype(np.int64) * n_ids + parent_code, -2)
    parent = pd.Index(key).get_indexer(parent_key)  # -1 where absent
    parent[parent_code < 0] = -1

    kind = cols["kind"]
    service = cols["service"]
    start_us = cols["start_us"]
    dur = cols["duration_ms"]
    is_error = (cols["status_code"] == 2) | (cols["http_status_code"] >= 500)

    route_of_span = _trace_routes(
        trace_code,
        len(trace_uniques),
        parent,
        has_parent_id,
        kind,
        start_us,
        cols["http_route"],
        cols["has_route"],
    )
    self_ms = _self_times(parent, kind, service, start_us, dur)

    # -- edge observations: server spans, then client spans without a server child
    srv = np.flatnonzero(kind == SERVER)
    p = parent[srv]
    has_p = p >= 0
    paired = np.zeros(len(srv), dtype=bool)
    paired[has_p] = kind[p[has_p]] == CLIENT
    client_name = np.full(len(srv), UNKNOWN_CLIENT, dtype=object)
    client_name[has_p] = service[p[has_p]]
    client_name[~has_p & ~has_parent_id[srv]] = ENTRY_CLIENT
    client_dur = np.zeros(len(srv))
    client_dur[paired] = dur[p[paired]]
    edge_start = start_us[srv].copy()
    edge_start[paired] = start_us[p[paired]]
    server_dur = dur[srv]

    has_server_child = np.zeros(n, dtype=bool)
    has_server_child[p[paired]] = True
    lone = np.flatnonzero((kind == CLIENT) & ~has_server_child)
    lone_target = _first_nonempty(cols["peer_service"][lone], cols["server_address"][lone], UNKNOWN_CLIENT)

    obs_client = np.concatenate([client_name, service[lone]])
    obs_server = np.concatenate([service[srv], lone_target])
    obs_route = np.concatenate([route_of_span[srv], route_of_span[lone]])
    obs_minute = np.concatenate([edge_start, start_us[lone]]) // _US_PER_MIN
    obs_dur = np.concatenate([np.where(paired, client_dur, server_dur), dur[lone]])
    obs_client_ms = np.concatenate([client_dur, dur[lone]])
    obs_server_ms = np.concatenate([server_dur, np.zeros(len(lone))])
    obs_gap = np.concatenate(
        [np.where(paired, np.maximum(client_dur - server_dur, 0.0), 0.0), np.zeros(len(lone))]
    )
    obs_self = np.concatenate([self_ms[srv], np.zeros(len(lone))])
    obs_skew = np.concatenate([paired & (server_dur > client_dur), np.zeros(len(lone), dtype=bool)])
    obs_err = np.concatenate([is_error[srv], is_error[lone]])
    obs_trace = np.concatenate([trace_code[srv], trace_code[lone]])
    if len(obs_dur) == 0:
        return empty_hop_minutes()

    frame = pd.DataFrame(
        {"minute": obs_minute, "client": obs_client, "server": obs_server, "route": obs_route}
    )
    gid_raw = frame.groupby(["minute", "client", "server", "route"], sort=True).ngroup().to_numpy()
    _, first_row = np.unique(gid_raw, return_index=True)
    groups = frame.iloc[first_row]
    n_groups = len(groups)

    # Canonical order (group, slowest first, trace id) so sums and exemplars never depend on input order.
    trace_rank = np.empty(len(trace_uniques), dtype=np.int64)
    trace_rank[pc.sort_indices(trace_uniques).to_numpy()] = np.arange(len(trace_uniques))
    obs_trank = trace_rank[obs_trace]
    order = np.lexsort((obs_trank, -obs_dur, gid_raw))
    gid = gid_raw[order]
    d = obs_dur[order]

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(gid, weights=values[order].astype(np.float64), minlength=n_groups)

    count = np.bincount(gid, minlength=n_groups).astype(np.int64)
    dmax = np.full(n_groups, -np.inf)
    np.maximum.at(dmax, gid, d)

    # sparse histogram: (group, bucket) pairs, sorted
    buckets = histogram.bucket_index(d).astype(np.int64)
    b_lo = int(buckets.min())
    pair = gid.astype(np.int64) * (int(buckets.max()) - b_lo + 1) + (buckets - b_lo)
    upair, ucnt = np.unique(pair, return_counts=True)
    width = int(buckets.max()) - b_lo + 1
    h_gid = upair // width
    h_idx = (upair % width + b_lo).astype(np.int32)
    h_off = np.concatenate([[0], np.cumsum(np.bincount(h_gid, minlength=n_groups))]).astype(np.int32)

    good = (
        np.stack(
            [np.bincount(gid, weights=(d <= t).astype(np.float64), minlength=n_groups) for t in thresholds],
            axis=1,
        )
        if thresholds
        else np.zeros((n_groups, 0))
    )
    good_off = (np.arange(n_groups + 1) * len(thresholds)).astype(np.int32)

    # exemplars: slowest distinct traces per group
    tr = obs_trace[order]
    first_of_trace = ~pd.Index(gid.astype(np.int64) * (len(trace_uniques) + 1) + tr).duplicated(keep="first")
    cand = np.flatnonzero(first_of_trace)
    cand_gid = gid[cand]
    group_start = np.searchsorted(cand_gid, cand_gid, side="left")
    rank = np.arange(len(cand)) - group_start
    chosen = cand[rank < exemplars]
    ex_off = np.concatenate([[0], np.cumsum(np.bincount(gid[chosen], minlength=n_groups))]).astype(np.int32)
    ex_ids = [b.hex() for b in trace_uniques.take(pa.array(tr[chosen], pa.int64())).to_pylist()]

    out = {
        "minute": pa.array(groups["minute"].to_numpy(np.int64) * _US_PER_MIN, pa.int64()).cast(
            pa.timestamp("us")
        ),
        "client": pa.array(groups["client"].tolist(), pa.string()),
        "server": pa.array(groups["server"].tolist(), pa.string()),
        "route": pa.array(groups["route"].tolist(), pa.string()),
        "count": pa.array(count, pa.int64()),
        "errors": pa.array(
            np.bincount(gid, weights=obs_err[order].astype(np.float64), minlength=n_groups)
            .round()
            .astype(np.int64)
        ),
        "duration_ms_sum": pa.array(total(obs_dur)),
        "duration_ms_max": pa.array(dmax),
        "client_ms_sum": pa.array(total(obs_client_ms)),
        "server_ms_sum": pa.array(total(obs_server_ms)),
        "gap_ms_sum": pa.array(total(obs_gap)),
        "self_ms_sum": pa.array(total(obs_self)),
        "skewed": pa.array(
            np.bincount(gid, weights=obs_skew[order].astype(np.float64), minlength=n_groups)
            .round()
            .astype(np.int64)
        ),
        "hist_idx": pa.ListArray.from_arrays(pa.array(h_off), pa.array(h_idx, pa.int32())),
        "hist_cnt": pa.ListArray.from_arrays(pa.array(h_off), pa.array(ucnt.astype(np.int64))),
        "good_le_ms": pa.ListArray.from_arrays(
            pa.array(good_off), pa.array(np.tile(np.asarray(thresholds, np.float64), n_groups))
        ),
        "good_cnt": pa.ListArray.from_arrays(
            pa.array(good_off), pa.array(good.round().astype(np.int64).ravel())
        ),
        "exemplars": pa.ListArray.from_arrays(pa.array(ex_off), pa.array(ex_ids, pa.string())),
    }
    return pa.Table.from_arrays([out[c] for c in HOP_MINUTES.column_names], schema=HOP_MINUTES.arrow_schema)


def _codes(encoded: pa.DictionaryArray) -> np.ndarray:
    """Dictionary indices as int64, -1 for nulls."""
    return np.asarray(
        pc.fill_null(encoded.indices.cast(pa.int64()), -1).to_numpy(zero_copy_only=False), dtype=np.int64
    )


_ZERO_IDS = pa.array([bytes(k) for k in range(1, 33)], pa.binary())


def _nonempty(col: pa.ChunkedArray | None, n: int) -> np.ndarray:
    """True where a string/binary value is present and not empty."""
    if col is None:
        return np.zeros(n, dtype=bool)
    mask = pc.fill_null(pc.greater(pc.binary_length(col), 0), False)
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _columns(spans: pa.Table | pd.DataFrame) -> dict[str, Any]:
    """The columns a rollup reads, as numpy arrays with nulls and bad values made harmless."""
    if isinstance(spans, pd.DataFrame):
        try:
            spans = pa.Table.from_pandas(spans, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise StoreError(f"spans: cannot read the DataFrame as a table: {exc}") from exc
    if not isinstance(spans, pa.Table):
        raise StoreError(f"spans: expected an Arrow table or DataFrame, got {type(spans).__name__}")
    for name in _REQUIRED:
        if name not in spans.column_names:
            raise StoreError(
                f"spans.{name}: required column is missing (rollup_spans needs {', '.join(_REQUIRED)})"
            )
    n = spans.num_rows
    types = {c.name: c.arrow for c in SPANS.columns}

    def arr(name: str) -> pa.ChunkedArray | None:
        if name not in spans.column_names:
            return None
        col = spans.column(name)
        want = types[name]
        if col.type != want:
            try:
                col = pc.cast(col, want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise StoreError(f"spans.{name}: has type {col.type}, expected {want}: {exc}") from exc
        return col

    def objects(name: str) -> np.ndarray:
        col = arr(name)
        if col is None:
            return np.full(n, None, dtype=object)
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)

    def ints(name: str, default: int) -> np.ndarray:
        col = arr(name)
        if col is None:
            return np.full(n, default, dtype=np.int64)
        return np.asarray(pc.fill_null(col, default).to_numpy(zero_copy_only=False), dtype=np.int64)

    start = arr("start_time")
    assert start is not None
    start_us = np.asarray(
        pc.fill_null(start.cast(pa.int64()), 0).to_numpy(zero_copy_only=False), dtype=np.int64
    )
    duration = arr("duration_ms")
    assert duration is not None
    dur = np.asarray(pc.fill_null(duration, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)
    dur = np.where(np.isfinite(dur) & (dur > 0), dur, 0.0)
    service = objects("service")
    service[pd.isna(service)] = ""
    parent = arr("parent_span_id")
    if parent is None:
        parent = pa.chunked_array([pa.nulls(n, pa.binary())])
    # OTLP says "no parent" with an empty or all-zero id; both mean a root here.
    has_parent_id = _nonempty(parent, n) & ~np.asarray(
        pc.fill_null(pc.is_in(parent, value_set=_ZERO_IDS), False).to_numpy(zero_copy_only=False), dtype=bool
    )
    trace_id, span_id = arr("trace_id"), arr("span_id")
    assert trace_id is not None and span_id is not None
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "has_parent_id": has_parent_id,
        "has_route": _nonempty(arr("http_route"), n),
        "service": service,
        "kind": ints("kind", 0),
        "start_us": start_us,
        "duration_ms": dur,
        "status_code": ints("status_code", 0),
        "http_status_code": ints("http_status_code", 0),
        "http_route": objects("http_route"),
        "peer_service": objects("peer_service"),
        "server_address": objects("server_address"),
    }


def _first_nonempty(a: np.ndarray, b: np.ndarray, default: str) -> np.ndarray:
    out = np.full(len(a), default, dtype=object)
    for src in (b, a):  # a wins over b
        ok = np.array([isinstance(v, str) and v != "" for v in src], dtype=bool)
        out[ok] = src[ok]
    return out


def _trace_routes(
    trace_code: np.ndarray,
    n_traces: int,
    parent: np.ndarray,
    has_parent_id: np.ndarray,
    kind: np.ndarray,
    start_us: np.ndarray,
    route: np.ndarray,
    has_route: np.ndarray,
) -> np.ndarray:
    """The entry route of each span's trace ('' where the trace has none)."""
    rootness = np.where(~has_parent_id, 0, np.where(parent < 0, 1, 2))
    cand = np.flatnonzero(has_route)
    per_trace = np.full(n_traces + 1, "", dtype=object)
    if len(cand):
        order = cand[np.lexsort((start_us[cand], kind[cand] != SERVER, rootness[cand], trace_code[cand]))]
        tc = trace_code[order]
        first = np.concatenate([[True], tc[1:] != tc[:-1]])
        per_trace[tc[first]] = route[order[first]]
    out: np.ndarray = per_trace[trace_code]
    return out


def _self_times(
    parent: np.ndarray, kind: np.ndarray, service: np.ndarray, start_us: np.ndarray, dur: np.ndarray
) -> np.ndarray:
    """Each SERVER span's duration minus the merged intervals of its outgoing CLIENT spans (0 for others)."""
    n = len(kind)
    idx = np.arange(n)
    up = idx.copy()
    has_p = parent >= 0
    same_service = np.zeros(n, dtype=bool)
    same_service[has_p] = service[parent[has_p]] == service[has_p]
    climb = has_p & same_service & (kind != SERVER)
    up[climb] = parent[climb]
    for _ in range(_MAX_DEPTH_STEPS):  # pointer jumping: each span's nearest SERVER ancestor in its service
        nxt = up[up]
        if np.array_equal(nxt, up):
            break
        up = nxt
    self_ms = np.where(kind == SERVER, dur, 0.0)
    clients = np.flatnonzero((kind == CLIENT) & (kind[up] == SERVER) & (up != idx))
    if len(clients) == 0:
        return self_ms
    owner = up[clients]
    rel = (start_us[clients] - start_us[owner]) / 1000.0  # ms after the owner's start
    lo = np.clip(rel, 0.0, dur[owner])
    hi = np.clip(rel + dur[clients], 0.0, dur[owner])
    ok = hi > lo
    owner, lo, hi = owner[ok], lo[ok], hi[ok]
    if len(owner) == 0:
        return self_ms
    order = np.lexsort((lo, owner))
    owner, lo, hi = owner[order], lo[order], hi[order]
    reach = pd.Series(hi).groupby(owner).cummax().to_numpy()
    prev_reach = np.concatenate([[-np.inf], reach[:-1]])
    new_owner = np.concatenate([[True], owner[1:] != owner[:-1]])
    new_segment = new_owner | (lo > prev_reach)
    seg_lo = lo[new_segment]
    seg_hi = np.maximum.reduceat(hi, np.flatnonzero(new_segment))
    seg_owner = owner[new_segment]
    covered = np.bincount(seg_owner, weights=seg_hi - seg_lo, minlength=n)
    return np.where(kind == SERVER, np.maximum(self_ms - covered, 0.0), 0.0)


# ------------------------------------------------------------------------------ incremental


def floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def _read_watermark(store: Store) -> datetime | None:
    raw = store.get_state(WATERMARK_KEY)
    if raw is None:
        return None
    try:
        return floor_minute(parse_utc(raw))
    except ValueError:
        raise StoreError(
            f"state {WATERMARK_KEY}: {raw!r} is not an ISO timestamp; fix or delete it"
        ) from None


_SPAN_COLUMNS = ", ".join(f'"{c}"' for c in (*_REQUIRED, *_OPTIONAL))


def rollup_range(
    store: Store,
    start: datetime,
    end: datetime,
    thresholds_ms: Sequence[float],
    *,
    exemplars: int = 3,
    context: timedelta = timedelta(minutes=5),
) -> int:
    """Roll up the minutes [start, end) from spans and replace their hop_minutes rows; returns rows written.

    Only the minutes that hold spans are rewritten (in runs of whole minutes), so a range whose spans
    have expired keeps its rollups; and of those, only the minutes the new rows cover: a minute's rows
    never shrink to nothing while its spans stay (spans only accumulate), so a minute the read found
    no edge in keeps the rows it had rather than losing them to a read that came back short.
    """
    thresholds = check_thresholds(thresholds_ms)
    start, end = floor_minute(start), floor_minute(end)
    written = 0
    for lo, hi in _chunks(store, start, end):
        spans = store.query(
            f"SELECT {_SPAN_COLUMNS} FROM spans WHERE start_time >= ? AND start_time < ? AND trace_id IN "
            "(SELECT trace_id FROM spans WHERE start_time >= ? AND start_time < ?)",
            [lo - context, hi + context, lo, hi],
        )
        rows = rollup_spans(spans, thresholds, exemplars=exemplars)
        minute = rows.column("minute")
        mask = pc.and_(
            pc.greater_equal(minute, pa.scalar(lo, pa.timestamp("us"))),
            pc.less(minute, pa.scalar(hi, pa.timestamp("us"))),
        )
        rows = rows.filter(mask)
        if rows.num_rows == 0:
            continue
        minutes = sorted(set(rows.column("minute").to_pylist()))
        marks = ", ".join("?" * len(minutes))
        store.replace("hop_minutes", f"minute IN ({marks})", minutes, rows)
        written += rows.num_rows
    return written


def _chunks(
    store: Store, start: datetime, end: datetime, max_spans: int = 400_000
) -> list[tuple[datetime, datetime]]:
    """Runs of consecutive minutes that hold spans, each run cut to about max_spans spans."""
    if end <= start:
        return []
    per_minute = store.query(
        "SELECT time_bucket(INTERVAL 1 MINUTE, start_time) AS m, count(*) AS n FROM spans "
        "WHERE start_time >= ? AND start_time < ? GROUP BY 1 ORDER BY 1",
        [start, end],
    ).to_pylist()
    out: list[tuple[datetime, datetime]] = []
    lo: datetime | None = None
    last: datetime | None = None
    total = 0
    for row in per_minute:
        m, n = row["m"], int(row["n"])
        if (
            lo is not None
            and last is not None
            and (m != last + timedelta(minutes=1) or total + n > max_spans)
        ):
            out.append((lo, last + timedelta(minutes=1)))
            lo, total = None, 0
        if lo is None:
            lo = m
        last = m
        total += n
    if lo is not None and last is not None:
        out.append((lo, last + timedelta(minutes=1)))
    return out


def run_rollup(
    store: Store,
    thresholds_ms: Sequence[float],
    *,
    now: datetime | None = None,
    grace: timedelta = timedelta(minutes=2),
    provisional: bool = True,
    exemplars: int = 3,
    context: timedelta = timedelta(minutes=5),
) -> int:
    """Roll up the minutes since the watermark; returns the hop_minutes rows written.

    Minutes that closed at least ``grace`` ago are final: the watermark moves past them. With
    ``provisional``, the minutes after it, up to the open one, are rolled too, from the spans stored
    so far: each call rewrites them whole (``Store.replace``), so a late span moves its minute's rows
    and nothing is counted twice, until the minute turns final. Without a watermark it starts at the
    first span. The watermark moves only after the rows are committed, so a crash repeats work
    instead of losing it.
    """
    thresholds = check_thresholds(thresholds_ms)
    now = now or utcnow()
    upto = floor_minute(now - grace)
    stored = watermark = _read_watermark(store)
    if watermark is None:
        first, _ = store.time_range("spans")
        if first is None:
            return 0
        # the minutes within the grace stay open to late spans even before the first span's minute
        watermark = min(floor_minute(first), upto)
        _, rolled = store.time_range("hop_minutes")
        if rolled is not None:  # rows but no watermark (a store rolled by an older version, or a read
            # that came back short): roll on from the newest rows' grace, never all history again
            watermark = max(watermark, min(floor_minute(rolled) - grace, upto))
    end = floor_minute(now) + timedelta(minutes=1) if provisional else upto
    if watermark >= end:
        return 0
    written = rollup_range(store, watermark, end, thresholds, exemplars=exemplars, context=context)
    if max(watermark, upto) != stored:  # the first minute still provisional
        store.set_state(WATERMARK_KEY, max(watermark, upto).isoformat())
    return written


def provisional_from(store: Store) -> datetime | None:
    """The first minute of hop_minutes that is still provisional (rewritten as late spans arrive):
    the rollup watermark; None before the first rollup."""
    return _read_watermark(store)

"""Budget corrections recorded in the store (``hopscope slo correct``), next to those the SLO files declare.

    c = add_correction(store, slo, start, end, "planned DB migration")   # refuses overlaps, bad periods
    slos = attach_corrections(store, slos)     # each SLO (and composite component) with its stored ones
    delete_correction(store, c.id)

A correction excludes its minutes from the SLI, the error budget and the burn-rate alerts: the
engine (:mod:`hopscope.slo.burn`) reads ``SLO.corrections``; this module only fetches and stores them.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

import pyarrow as pa

from hopscope.errors import NotFoundError, SpecError, StoreError
from hopscope.model import ReadStore
from hopscope.query import changes
from hopscope.schema import SLO_CORRECTIONS
from hopscope.slo.model import SLO, Component, Correction, with_corrections
from hopscope.store import Store, store_identity, utcnow

TABLE = SLO_CORRECTIONS.name
MAX_REASON = 500


def correction_id(slo: str, start: datetime, end: datetime, created: datetime) -> str:
    return hashlib.sha1(
        f"{slo}|{start.isoformat()}|{end.isoformat()}|{created.isoformat()}".encode()
    ).hexdigest()[:10]


def _from_rows(rows: Sequence[Mapping[str, object]]) -> dict[str, tuple[Correction, ...]]:
    out: dict[str, list[Correction]] = {}
    for r in rows:
        start, end = r["start_time"], r["end_time"]
        assert isinstance(start, datetime) and isinstance(end, datetime)
        out.setdefault(str(r["slo"]), []).append(
            Correction(start, end, str(r["reason"]), "store", str(r["id"]))
        )
    return {k: tuple(sorted(v, key=lambda c: c.start)) for k, v in out.items()}


_LOCK = threading.Lock()
_CACHE: dict[tuple[object, ...], tuple[int, dict[str, tuple[Correction, ...]]]] = {}
_NEAR: dict[tuple[object, ...], tuple[int, dict[str, tuple[Correction, ...]]]] = {}  # by folder only


def read_corrections(store: ReadStore) -> dict[str, tuple[Correction, ...]]:
    """Every stored correction, by SLO name, oldest first. Kept per store until its snapshot moves
    (the engine asks on every evaluation); a store without the table (older ones opened read-only,
    a stand-in ReadStore) has none."""
    ident, snap = store_identity(store, with_mtime=True), changes.snapshot(store)
    if ident is not None and snap is not None:
        with _LOCK:
            hit = _CACHE.get(ident)
            # every write moves the catalog's mtime: the entry of the same folder, if the snapshots
            # since changed other tables only (changes.touched: the snapshot list a page reads anyway)
            near = _NEAR.get(ident[:-1])
        if hit is not None and hit[0] == snap:
            return hit[1]
        if near is not None and near[0] < snap and changes.touched(store, TABLE, near[0], snap) is False:
            with _LOCK:
                _CACHE[ident] = (snap, near[1])
                _NEAR[ident[:-1]] = (snap, near[1])
            return near[1]
    try:
        rows = store.query(
            f'SELECT id, slo, start_time, end_time, reason FROM "{TABLE}" ORDER BY slo, start_time'
        ).to_pylist()
    except StoreError as e:
        if "does not exist" in str(e) or "not found" in str(e).lower():
            return {}
        raise
    found = _from_rows(rows)
    if ident is not None and snap is not None:
        with _LOCK:
            _CACHE[ident] = (snap, found)
            _NEAR[ident[:-1]] = (snap, found)
            while len(_CACHE) > 16:
                del _CACHE[next(iter(_CACHE))]
            while len(_NEAR) > 16:
                del _NEAR[next(iter(_NEAR))]
    return found


def attach_corrections(store: ReadStore, slos: Sequence[SLO]) -> list[SLO]:
    """The SLOs with their stored corrections added (composite components too)."""
    stored = read_corrections(store)
    if not stored:
        return list(slos)
    return [_attach(s, stored) for s in slos]


def _attach(slo: SLO, stored: Mapping[str, tuple[Correction, ...]]) -> SLO:
    out = with_corrections(slo, stored.get(slo.name, ()))
    if out.composite and out.sli.components:
        parts = tuple(
            c if c.slo is None else Component(c.name, c.weight, _attach(c.slo, stored))
            for c in out.sli.components
        )
        out = replace(out, sli=replace(out.sli, components=parts))
    return out


def add_correction(
    store: Store,
    slo: SLO,
    start: datetime,
    end: datetime,
    reason: str,
    *,
    now: datetime | None = None,
) -> Correction:
    """Record a correction of ``slo`` over [start, end); SpecError when the period is empty, the reason
    is blank or too long, or it overlaps one the SLO already has (in its file or in the store)."""
    reason = reason.strip()
    if end <= start:
        raise SpecError(f"--to: {end:%Y-%m-%dT%H:%M:%S} is not after --from ({start:%Y-%m-%dT%H:%M:%S})")
    if not reason:
        raise SpecError("--reason: is empty; say why the period is excluded")
    if len(reason) > MAX_REASON:
        raise SpecError(f"--reason: {len(reason)} characters is over the {MAX_REASON}-character limit")
    have = with_corrections(slo, read_corrections(store).get(slo.name, ())).corrections
    for c in have:
        if c.overlaps(start, end):
            where = (
                f"correction {c.id}"
                if c.source == "store"
                else f"a correction in {slo.source_file or 'its file'}"
            )
            raise SpecError(
                f"--from/--to: {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} overlaps {where} of {slo.name} "
                f"({c.start:%Y-%m-%d %H:%M} – {c.end:%Y-%m-%d %H:%M}, {c.reason!r}); delete or change that one"
            )
    created = (now or utcnow()).replace(microsecond=0)
    cid = correction_id(slo.name, start, end, created)
    table = pa.table(
        {
            "id": [cid],
            "slo": [slo.name],
            "start_time": pa.array([start], SLO_CORRECTIONS.arrow_schema.field("start_time").type),
            "end_time": pa.array([end], SLO_CORRECTIONS.arrow_schema.field("end_time").type),
            "reason": [reason],
            "created": pa.array([created], SLO_CORRECTIONS.arrow_schema.field("created").type),
        }
    )
    store.append(TABLE, table)
    return Correction(start, end, reason, "store", cid)


def delete_correction(store: Store, cid: str) -> tuple[str, Correction]:
    """Delete one stored correction by id; (its SLO, it). NotFoundError lists the ids there are."""
    for slo, items in read_corrections(store).items():
        for c in items:
            if c.id == cid.strip().lower():
                store.delete(TABLE, "id = ?", [c.id])
                return slo, c
    known = ", ".join(c.id for items in read_corrections(store).values() for c in items) or "none"
    raise NotFoundError(f"--delete: no stored correction {cid[:40]!r} (stored: {known})")

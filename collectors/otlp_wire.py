"""The fast OTLP span reader: a serialized ExportTraceServiceRequest -> the `spans` table, read by numpy.

One pass per field position decodes that field (tag, varint, fixed or length) of every span at once,
and the Arrow columns are built from offsets into the body: a request costs a few hundred array
operations, not a Python object per span or per attribute. It reads the plain layouts OTLP exporters
write. Anything else (a field written twice, a wire type protobuf would not expect, text that is not
UTF-8, a message it cannot read) raises _Slow, and spans_to_table in collectors/otlp.py hands the
request to the protobuf reader, whose rules and 400s decide.

Why: it decodes a span in ~7 us where the protobuf reader takes ~9+ (benchmarks/otlp_ingest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as _RESOURCE

from hopscope.collectors.otlp_common import (
    _ADDRESS,
    _INT_SLOTS,
    _MAP,
    _METHOD,
    _METHOD_OLD,
    _PEER,
    _ROUTE,
    _SHADOW,
    _SPANS_SCHEMA,
    _STATUS,
    _STATUS_OLD,
    _STR_SLOTS,
    Decoded,
    OtlpError,
    Resource,
    _core_columns,
    _keep_valid,
    _reason,
    _statuses,
    _valid_spans,
    any_value_text,
    resource_of,
    truncate_value,
)


class _Slow(Exception):
    """The fast reader met a layout it leaves to protobuf."""


_PAD = 16  # zero bytes after the spans: a varint or fixed read past the end stays in the buffer
_TEN = np.arange(10)
_SHIFTS = (7 * np.arange(10)).astype(np.uint64)
_EIGHT = np.arange(8)
_FOUR = np.arange(4)
_MAX_SLICE = 2**31 - 1
_ANY_WIRE = {1: 2, 2: 0, 3: 0, 4: 1, 5: 2, 6: 2, 7: 2}  # AnyValue field -> wire type
_STRING, _BOOL, _INT, _DOUBLE, _ARRAY, _KVLIST, _BYTES = 1, 2, 3, 4, 5, 6, 7


def _varints(buf: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varint at each position -> (value, size in bytes)."""
    first = buf[pos]
    value = first.astype(np.uint64)
    size = np.ones(len(pos), np.int64)
    long = np.flatnonzero(first >= 0x80)
    if len(long):
        b = buf[pos[long, None] + _TEN]
        more = b >= 0x80
        if more.all(axis=1).any():
            raise _Slow
        n = np.argmin(more, axis=1) + 1
        part = (b & 0x7F).astype(np.uint64) << _SHIFTS
        part[_TEN >= n[:, None]] = 0
        value[long] = np.bitwise_or.reduce(part, axis=1)
        size[long] = n
    return value, size


# Per tag byte (a one-byte tag: fields 1..15): readable by the quick pass, how far the field reaches
# (tag, then a one-byte varint, 8 or 4 bytes, or a one-byte length plus that many bytes), and whether
# the byte after the tag must be under 0x80 (a varint or a length) for that reach to hold.
_T = np.arange(256)
_T_WIRE = _T & 7
_T_QUICK = (_T < 0x80) & (_T >> 3 > 0) & np.isin(_T_WIRE, (0, 1, 2, 5))
_T_REACH = np.select([_T_WIRE == 0, _T_WIRE == 1, _T_WIRE == 2, _T_WIRE == 5], [2, 9, 2, 5], 0)
_T_IS_LEN = (_T_WIRE == 2).astype(np.int64)
_T_VARINT_NEXT = np.isin(_T_WIRE, (0, 2))


@dataclass(frozen=True, slots=True)
class _Fields:
    """Every field of many messages: the first field of each, then the second of each, and so on.
    Values are read when a field is selected."""

    buf: np.ndarray
    msg: np.ndarray
    tag: np.ndarray
    vpos: np.ndarray  # where the value (or its length) starts, after the tag

    def values(self, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(offset, size, value) of the fields sel: size for length-delimited ones, value for the others."""
        wire = self.tag[sel] & 7
        vpos = self.vpos[sel]
        off = vpos.copy()
        size = np.zeros(len(sel), np.int64)
        value = np.zeros(len(sel), np.uint64)
        for w in (0, 1, 2, 5):
            i = np.flatnonzero(wire == w) if len(sel) else sel
            if not len(i):
                continue
            p = vpos[i]
            if w == 0:
                value[i] = _varints(self.buf, p)[0]
            elif w == 1:
                value[i] = np.ascontiguousarray(self.buf[p[:, None] + _EIGHT]).view("<u8").ravel()
            elif w == 5:
                value[i] = np.ascontiguousarray(self.buf[p[:, None] + _FOUR]).view("<u4").ravel()
            else:
                length, len_size = _varints(self.buf, p)
                off[i] = p + len_size
                size[i] = length.astype(np.int64)  # within the message: _scan checked
        return off, size, value

    def select(self, field: int, wire: int, n: int, *, repeated: bool = False) -> tuple[np.ndarray, ...]:
        """(msg, off, size, value) of one field; _Slow if it has another wire type or, unless
        repeated, appears twice in a message (protobuf's merge and last-one-wins rules decide)."""
        sel = np.flatnonzero((self.tag >> 3) == field)
        if len(sel) and ((self.tag[sel] & 7) != wire).any():
            raise _Slow
        msg = self.msg[sel]
        if repeated:  # in message order, then as written
            order = np.argsort(msg, kind="stable")
            sel, msg = sel[order], msg[order]
        elif len(msg) > 1 and np.bincount(msg, minlength=n).max() > 1:
            raise _Slow
        return (msg, *self.values(sel))


def _scan(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> _Fields:
    """Walk the fields of the messages buf[starts[i]:ends[i]] side by side, one field of each per pass.
    A pass where every tag is one byte and every varint or length after it too is a few table
    lookups; any other pass reads the varints in full."""
    limit = len(buf) - _PAD
    msgs: list[np.ndarray] = []
    tags: list[np.ndarray] = []
    vposs: list[np.ndarray] = []
    act = np.flatnonzero(ends > starts)
    cur, end = starts[act], ends[act]
    while len(act):
        t = buf[cur]
        b1 = buf[cur + 1]
        if not (~_T_QUICK[t] | (_T_VARINT_NEXT[t] & (b1 >= 0x80))).any():
            nxt = cur + _T_REACH[t] + _T_IS_LEN[t] * b1
            tag, vpos = t, cur + 1
        else:
            tag, tag_size = _varints(buf, cur)
            field, wire = tag >> np.uint64(3), tag & np.uint64(7)
            if (field == 0).any() or (field >= 2**29).any() or ((wire == 3) | (wire == 4) | (wire > 5)).any():
                raise _Slow  # groups, and what protobuf would refuse
            vpos = cur + tag_size
            if (vpos > end).any():
                raise _Slow
            nxt = vpos + np.where(wire == 1, 8, np.where(wire == 5, 4, 0))
            for w in (0, 2):
                i = np.flatnonzero(wire == w)
                if len(i):
                    value, value_size = _varints(buf, vpos[i])
                    if w == 2:
                        if (value > limit).any():
                            raise _Slow
                        value_size = value_size + value.astype(np.int64)
                    nxt[i] += value_size
        if (nxt > end).any():
            raise _Slow
        msgs.append(act)
        tags.append(tag)
        vposs.append(vpos)
        more = nxt < end
        if more.all():
            cur = nxt
        else:
            act, cur, end = act[more], nxt[more], end[more]
    if not msgs:
        z = np.zeros(0, np.int64)
        return _Fields(buf, z, z.astype(np.uint64), z)
    return _Fields(buf, np.concatenate(msgs), np.concatenate(tags).astype(np.uint64), np.concatenate(vposs))


# The spans of a request, located: (data, where each span starts and ends in it, each span's resource,
# the resources, values cut in them). `data` holds the spans (and what lies between them) followed by
# _PAD zero bytes.
Located = tuple[bytes, np.ndarray, np.ndarray, np.ndarray, list[Resource], int]

# From this size a body's spans are found by walking its framing in Python and copied once, in place;
# below it protobuf splits them (~0.2 us a span against ~1.5), which copies them twice: for a body of
# one 15 MiB span that is 45 MiB at once instead of 30 (tests/test_receiver_limits.py).
_IN_PLACE_BYTES = 1 << 20


def _spans_by_protobuf(body: bytes, max_value_chars: int | None) -> Located:
    """The spans split out by protobuf, then joined into `data`; _Slow where protobuf cannot read it."""
    try:
        req = _SHADOW["SpanBytesRequest"].FromString(body)
    except Exception:  # the protobuf reader names the error
        raise _Slow from None
    resources: list[Resource] = []
    chunks: list[list[bytes]] = []
    res_of_scope: list[int] = []
    truncated = 0
    for rs in req.resource_spans:
        resource, cut = resource_of(rs.resource, max_value_chars)
        resources.append(resource)
        truncated += cut
        for ss in rs.scope_spans:
            batch = list(ss.spans)
            if batch:
                chunks.append(batch)
                res_of_scope.append(len(resources) - 1)
    del req
    res_idx = np.repeat(np.asarray(res_of_scope, np.int64), [len(c) for c in chunks])
    spans = list(chain.from_iterable(chunks))
    del chunks
    lens = np.fromiter(map(len, spans), np.int64, len(spans))
    spans.append(bytes(_PAD))
    data = b"".join(spans)
    del spans
    ends = np.cumsum(lens)
    return data, ends - lens, ends, res_idx, resources, truncated


def _spans_in_place(body: bytes, max_value_chars: int | None) -> Located:
    """The request's framing walked field by field (each resource parsed by protobuf), and the spans'
    bytes copied once; _Slow for any layout protobuf would read with rules of its own (a resource
    written twice, a known field of another wire type) or refuse."""
    resources: list[Resource] = []
    truncated = 0
    regions: list[memoryview] = []
    starts: list[int] = []
    stops: list[int] = []
    res_of_span: list[int] = []
    view = memoryview(body)
    copied = 0  # bytes of `data` before the region being added
    for field, wire, a, z in _fields(body, 0, len(body)):
        if field != 1:
            continue
        if wire != 2:
            raise _Slow
        resource_at: tuple[int, int] | None = None
        scopes: list[tuple[int, int]] = []
        for f2, w2, a2, z2 in _fields(body, a, z):
            if f2 in (1, 2) and w2 != 2:
                raise _Slow
            if f2 == 1:
                if resource_at is not None:
                    raise _Slow  # protobuf merges the two
                resource_at = (a2, z2)
            elif f2 == 2:
                scopes.append((a2, z2))
        try:
            message = _RESOURCE.FromString(view[slice(*resource_at)] if resource_at else b"")
        except Exception:
            raise _Slow from None
        resource, cut = resource_of(message, max_value_chars)
        resources.append(resource)
        truncated += cut
        for a2, z2 in scopes:
            first = len(starts)
            for f3, w3, a3, z3 in _fields(body, a2, z2):
                if f3 == 2:
                    if w3 != 2:
                        raise _Slow
                    starts.append(a3)
                    stops.append(z3)
            if len(starts) > first:
                lo, hi = starts[first], stops[-1]
                shift = copied - lo
                starts[first:] = [x + shift for x in starts[first:]]
                stops[first:] = [x + shift for x in stops[first:]]
                regions.append(view[lo:hi])
                copied += hi - lo
                res_of_span += [len(resources) - 1] * (len(starts) - first)
    data = b"".join([*regions, bytes(_PAD)])
    return (
        data,
        np.asarray(starts, np.int64),
        np.asarray(stops, np.int64),
        np.asarray(res_of_span, np.int64),
        resources,
        truncated,
    )


def _fields(buf: bytes, p: int, end: int) -> list[tuple[int, int, int, int]]:
    """(field, wire type, value start, value end) of each field of the message buf[p:end]."""
    out = []
    while p < end:
        tag, p = _varint(buf, p, end)
        field, wire = tag >> 3, tag & 7
        if wire == 2:
            size, p = _varint(buf, p, end)
            q = p + size
        elif wire == 0:
            q = _varint(buf, p, end)[1]
        elif wire == 1:
            q = p + 8
        elif wire == 5:
            q = p + 4
        else:
            raise _Slow  # groups, and wire types protobuf refuses
        if q > end or field == 0 or field >= 2**29:
            raise _Slow
        out.append((field, wire, p, q))
        p = q
    return out


def _varint(buf: bytes, p: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while p < end and shift < 64:
        byte = buf[p]
        p += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, p
        shift += 7
    raise _Slow


def _slices(src: pa.Buffer, off: np.ndarray, size: np.ndarray, typ: pa.DataType) -> pa.Array:
    """src[off[i]:off[i] + size[i]] for each i, in order and not overlapping, as a binary or string
    array (not validated). Arrow copies them: the spans' bytes seen as alternating gaps and pieces,
    of which every second one is taken."""
    n = len(off)
    if n and ((off[1:] < off[:-1] + size[:-1]).any() or off[0] < 0):
        raise _Slow  # not in order (the fast reader's own layouts always are)
    bounds = np.empty(2 * n + 1, np.int32)
    bounds[0] = 0
    bounds[1::2] = off
    bounds[2::2] = off + size
    both = pa.Array.from_buffers(pa.binary(), 2 * n, [None, pa.py_buffer(bounds), src])
    pieces = both.take(pa.array(np.arange(1, 2 * n, 2)))
    return pieces if typ == pa.binary() else pieces.view(typ)


def _text(arr: pa.Array) -> pa.Array:
    """A string array read from the wire; _Slow unless it is UTF-8 (protobuf names the bad one)."""
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid:
        raise _Slow from None
    return arr


def _per_row(n: int, rows: np.ndarray, vals: np.ndarray, fill: np.ndarray | int = 0) -> np.ndarray:
    """One value per message: vals where a message has the field, fill where it has not."""
    if isinstance(fill, np.ndarray):
        out = fill.astype(vals.dtype if len(vals) else fill.dtype)
    else:
        out = np.full(n, fill, vals.dtype if len(vals) else np.int64)
    out[rows] = vals
    return out


def _int32(v: np.ndarray) -> np.ndarray:
    """An enum varint as protobuf reads it into an int32."""
    return (v & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32).astype(np.int64)


_ZERO_ID = pa.scalar(b"\0" * 8, pa.binary())


def _has_parent(parents: pa.Array, size: np.ndarray) -> np.ndarray:
    """A parent id names a parent unless it is empty or all zeros (the invalid span id): both mean a
    root, as the rollups already read them."""
    zero = np.asarray(pc.equal(parents, _ZERO_ID).to_numpy(zero_copy_only=False), dtype=bool)
    return np.asarray((size > 0) & ~zero, dtype=bool)


def _fast_to_table(body: bytes, max_value_chars: int | None = None) -> Decoded:
    """Serialized ExportTraceServiceRequest -> Decoded, read by numpy; _Slow where protobuf must decide.
    String and bytes attribute values longer than max_value_chars are cut to it (and counted)."""
    if len(body) >= _IN_PLACE_BYTES:
        located = _spans_in_place(body, max_value_chars)
    else:
        located = _spans_by_protobuf(body, max_value_chars)
    data, span_starts, ends, res_idx, resources, truncated = located
    n = len(span_starts)
    if n == 0:
        return Decoded(_SPANS_SCHEMA.empty_table(), 0, "")
    if len(data) > _MAX_SLICE:
        raise _Slow  # Arrow's 32-bit offsets
    buf = np.frombuffer(data, np.uint8)
    src = pa.py_buffer(data)
    f = _scan(buf, span_starts, ends)

    def blob(field: int) -> tuple[np.ndarray, np.ndarray]:
        rows, off, size, _ = f.select(field, 2, n)
        return _per_row(n, rows, off, span_starts), _per_row(n, rows, size)

    def number(field: int, wire: int) -> np.ndarray:
        rows, _, _, value = f.select(field, wire, n)
        return _per_row(n, rows, value).astype(np.uint64)

    trace_ids = _slices(src, *blob(1), pa.binary())
    span_ids = _slices(src, *blob(2), pa.binary())
    parent_off, parent_size = blob(4)
    parents = _slices(src, parent_off, parent_size, pa.binary())
    names = _text(_slices(src, *blob(5), pa.string()))
    kinds = _int32(number(6, 0))
    starts = number(7, 1)
    ends_ns = number(8, 1)
    status_codes, status_msgs = _fast_statuses(data, buf, n, *blob(15))
    valid = _valid_spans(trace_ids, span_ids, parent_size, kinds, starts, ends_ns, status_codes)
    kv_span, kv_off, kv_size, _ = f.select(9, 2, n, repeated=True)

    parent_arr = pa.Array.from_buffers(
        pa.binary(),
        n,
        [
            pa.py_buffer(np.packbits(_has_parent(parents, parent_size), bitorder="little")),
            *parents.buffers()[1:],
        ],
    )
    table, cut = _fast_assemble(
        data, buf, src, n, res_idx, resources, kv_span, kv_off, kv_size, max_value_chars,
        _core_columns(trace_ids, span_ids, parent_arr, names, kinds, starts, ends_ns, status_codes, status_msgs),
    )  # fmt: skip

    def why(i: int) -> tuple[bytes, str]:
        tid, sid = trace_ids[i].as_py(), span_ids[i].as_py()
        return sid, _reason(tid, sid, parents[i].as_py(), int(starts[i]), int(ends_ns[i]))

    return replace(_keep_valid(table, valid, why), truncated=truncated + cut)


def _fast_statuses(
    data: bytes, buf: np.ndarray, n: int, off: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, pa.Array]:
    """Each span's Status -> (codes, messages); a few distinct ones, each parsed once."""
    try:
        return _fast_statuses_or_error(data, buf, n, off, size)
    except OtlpError:  # the protobuf reading names it
        raise _Slow from None


def _fast_statuses_or_error(
    data: bytes, buf: np.ndarray, n: int, off: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, pa.Array]:
    if (size <= 7).all():  # no message, or a short one: the bytes and their length are the key
        raw = np.ascontiguousarray(buf[off[:, None] + _EIGHT]) * (_EIGHT < size[:, None])
        key = raw.view("<u8").ravel() | (size.astype(np.uint64) << np.uint64(56))
        uniq, first, inv = np.unique(key, return_index=True, return_inverse=True)
        blobs = [data[o : o + s] for o, s in zip(off[first].tolist(), size[first].tolist(), strict=True)]
        codes, messages = _statuses(blobs)
        code_arr = np.asarray(codes, np.int64)[inv.ravel()]
        if not any(messages):
            return code_arr, pa.nulls(n, pa.string())
        return code_arr, pa.array(messages, pa.string()).take(pa.array(inv.ravel()))
    blobs = [data[o : o + s] for o, s in zip(off.tolist(), size.tolist(), strict=True)]
    codes, messages = _statuses(blobs)
    msgs = pa.array(messages, pa.string()) if any(messages) else pa.nulls(n, pa.string())
    return np.asarray(codes, np.int64), msgs


KeyValues = tuple[np.ndarray, ...]
# AnyValue tag byte -> its field, for the tags of the wire type each field has (0: not one of them).
_ANY_FIELD_OF_TAG = np.zeros(256, np.int64)
for _field, _wire in _ANY_WIRE.items():
    _ANY_FIELD_OF_TAG[_field << 3 | _wire] = _field


def _plain_key_values(buf: np.ndarray, kv_off: np.ndarray, kv_size: np.ndarray) -> KeyValues | None:
    """KeyValues as exporters write them (key then value, one-byte lengths, a value of one field)
    read in one pass: (key offset, key size, value offset, value size, then for each value that has
    a field: its KeyValue, field, offset, size and varint/fixed value). None for any other layout."""
    limit = len(buf) - _PAD
    m = len(kv_off)
    if not m or (kv_size < 4).any():
        return None
    key_size = buf[kv_off + 1].astype(np.int64)
    p2 = np.minimum(kv_off + 2 + key_size, limit)
    val_size = buf[p2 + 1].astype(np.int64)
    if not (
        (buf[kv_off] == 0x0A) & (key_size < 0x80) & (buf[p2] == 0x12) & (val_size < 0x80)
        & (4 + key_size + val_size == kv_size)
    ).all():  # fmt: skip
        return None
    vo = p2 + 2
    a_msg = np.flatnonzero(val_size)
    p = vo[a_msg]
    a_field = _ANY_FIELD_OF_TAG[buf[p]]
    if not a_field.all():
        return None
    size_left = val_size[a_msg] - 1  # after the tag
    a_off = p + 1
    a_size = np.zeros(len(a_msg), np.int64)
    a_value = np.zeros(len(a_msg), np.uint64)
    wire = buf[p] & 7
    i = np.flatnonzero(wire == 2)
    if len(i):
        length = buf[a_off[i]].astype(np.int64)
        if not ((length < 0x80) & (length + 1 == size_left[i])).all():
            return None
        a_off[i] += 1
        a_size[i] = length
    i = np.flatnonzero(wire == 0)
    if len(i):
        a_value[i], used = _varints(buf, a_off[i])
        if (used != size_left[i]).any():
            return None
    i = np.flatnonzero(wire == 1)
    if len(i):
        if (size_left[i] != 8).any():
            return None
        a_value[i] = np.ascontiguousarray(buf[a_off[i, None] + _EIGHT]).view("<u8").ravel()
    return kv_off + 2, key_size, vo, val_size, a_msg, a_field, a_off, a_size, a_value


def _key_values(buf: np.ndarray, kv_off: np.ndarray, kv_size: np.ndarray) -> KeyValues:
    """_plain_key_values for any layout protobuf reads the same way; _Slow for the others."""
    m = len(kv_off)
    kvf = _scan(buf, kv_off, kv_off + kv_size)
    key_rows, key_off, key_size, _ = kvf.select(1, 2, m)
    val_rows, val_off, val_size, _ = kvf.select(2, 2, m)
    # KeyValue fields other than key and value are unknown to protobuf too: skipped.
    vo, vs = _per_row(m, val_rows, val_off, kv_off), _per_row(m, val_rows, val_size)
    anyf = _scan(buf, vo, vo + vs)
    known = np.flatnonzero(anyf.tag <= (7 << 3 | 7))
    a_msg = anyf.msg[known]
    a_field, a_wire = (anyf.tag[known] >> 3).astype(np.int64), (anyf.tag[known] & 7).astype(np.int64)
    if len(a_msg) > 1 and np.bincount(a_msg, minlength=m).max() > 1:
        raise _Slow  # a value with two of its oneof fields: protobuf keeps the last
    expected = np.zeros(8, np.int64)
    for fld, w in _ANY_WIRE.items():
        expected[fld] = w
    if (expected[a_field] != a_wire).any():
        raise _Slow
    a_off, a_size, a_value = anyf.values(known)
    return (
        _per_row(m, key_rows, key_off, kv_off), _per_row(m, key_rows, key_size),
        vo, vs, a_msg, a_field, a_off, a_size, a_value,
    )  # fmt: skip


def _double_texts(v: np.ndarray) -> pa.Array:
    """repr() of each double, as text. Arrow writes the same shortest digits as Python from 1e-4 up
    to 1e10 (checked on a million values; it differs in when it switches to exponents): integral
    values there are their integer and ".0", the others Arrow's; the rest (tiny, huge, -0.0, inf, nan)
    go through repr()."""
    a = np.abs(v)
    small = a < 1e10  # and not nan
    integral = small & (v == np.floor(v)) & ~((v == 0) & np.signbit(v))
    fraction = small & (a >= 1e-4) & ~integral
    other = ~(integral | fraction)
    if fraction.all():
        return pc.cast(pa.array(v), pa.string())
    parts, where = [], []
    renderers: tuple[tuple[np.ndarray, Callable[[np.ndarray], pa.Array]], ...] = (
        (
            integral,
            lambda x: pc.binary_join_element_wise(
                pc.cast(pa.array(x.astype(np.int64)), pa.string()), ".0", ""
            ),
        ),
        (fraction, lambda x: pc.cast(pa.array(x), pa.string())),
        (other, lambda x: pa.array(list(map(repr, x.tolist())), pa.string())),
    )
    for sel, render in renderers:
        idx = np.flatnonzero(sel)
        if len(idx):
            parts.append(render(v[idx]))
            where.append(idx)
    order = np.empty(len(v), np.int64)
    order[np.concatenate(where)] = np.arange(len(v))
    return pa.concat_arrays(parts).take(pa.array(order))


def _fast_assemble(
    data: bytes,
    buf: np.ndarray,
    src: pa.Buffer,
    n: int,
    res_idx: np.ndarray,
    resources: list[tuple[str, str | None, list[tuple[str, str]]]],
    kv_span: np.ndarray,
    kv_off: np.ndarray,
    kv_size: np.ndarray,
    max_value_chars: int | None,
    core: list[pa.Array],
) -> tuple[pa.Table, int]:
    """The attribute columns and the map from the serialized KeyValues, then the table, and how many
    values were cut to max_value_chars."""
    m = len(kv_off)
    kvs = _plain_key_values(buf, kv_off, kv_size)
    if kvs is None:
        kvs = _key_values(buf, kv_off, kv_size)
    key_off, key_size, vo, vs, a_msg, a_field, a_off, a_size, a_value = kvs
    keys = _text(_slices(src, key_off, key_size, pa.string()))
    kind = _per_row(m, a_msg, a_field)

    # Text of every value: the strings straight from the wire, the other kinds rendered once per
    # distinct value; `text_idx` points each KeyValue at its text in `texts`.
    pieces: list[pa.Array] = []
    base = 0
    text_idx = np.zeros(m, np.int64)
    ints = np.zeros(m, np.int64)

    def add(arr: pa.Array, rows: np.ndarray, local: np.ndarray) -> None:
        nonlocal base
        pieces.append(arr)
        text_idx[rows] = base + local
        base += len(arr)

    pieces.append(pa.array([""], pa.string()))  # values with no field
    base = 1
    truncated = 0
    for fld in np.unique(a_field).tolist():
        sel = np.flatnonzero(a_field == fld)
        rows = a_msg[sel]
        if len(rows) > 1 and (rows[1:] < rows[:-1]).any():  # values with unknown fields first
            sel = sel[np.argsort(rows, kind="stable")]
            rows = a_msg[sel]
        if fld == _STRING:
            size, cut = _cut_strings(data, src, a_off[sel], a_size[sel], max_value_chars)
            truncated += cut
            add(_text(_slices(src, a_off[sel], size, pa.string())), rows, np.arange(len(sel)))
        elif fld == _INT:
            v = a_value[sel].view(np.int64)
            ints[rows] = v
            uniq, inv = np.unique(v, return_inverse=True)
            add(pa.array(list(map(str, uniq.tolist())), pa.string()), rows, inv.ravel())
        elif fld == _DOUBLE:
            uniq, inv = np.unique(a_value[sel], return_inverse=True)
            add(_double_texts(uniq.view(np.float64)), rows, inv.ravel())
        elif fld == _BOOL:
            add(pa.array(["false", "true"], pa.string()), rows, (a_value[sel] != 0).astype(np.int64))
        elif fld == _BYTES:
            size = a_size[sel]
            if max_value_chars is not None:
                truncated += int(np.count_nonzero(size > max_value_chars))
                size = np.minimum(size, max_value_chars)
            texts = [data[o : o + s].hex() for o, s in zip(a_off[sel].tolist(), size.tolist(), strict=True)]
            add(pa.array(texts, pa.string()), rows, np.arange(len(sel)))
        else:  # arrays and key/value lists: rare, rendered as JSON by protobuf's reading
            texts = []
            for o, s in zip(vo[rows].tolist(), vs[rows].tolist(), strict=True):
                try:
                    value = AnyValue.FromString(data[o : o + s])
                except Exception:
                    raise _Slow from None
                truncated += truncate_value(value, max_value_chars)
                texts.append(any_value_text(value))
            add(pa.array(texts, pa.string()), rows, np.arange(len(sel)))
    res_first: list[int] = []
    res_texts: list[str] = []
    for _service, _host, pairs in resources:
        res_first.append(base + len(res_texts))
        res_texts += [t for _, t in pairs]
    pieces.append(pa.array(res_texts, pa.string()))
    texts = pa.concat_arrays(pieces)

    # Keys: one code per distinct key (resource keys included), the slot of each KeyValue.
    enc = keys.dictionary_encode()
    key_code = enc.indices.to_numpy().astype(np.int64)
    key_list: list[str] = enc.dictionary.to_pylist()
    code_of = {k: i for i, k in enumerate(key_list)}
    str_slot = np.fromiter((_STR_SLOTS.get(k, _MAP) for k in key_list), np.int64, len(key_list))
    slot = np.where(kind == _STRING, str_slot[key_code], _MAP) if m else np.zeros(0, np.int64)
    codes = np.full(m, -1, np.int64)
    for k, int_slot in _INT_SLOTS.items():
        c = code_of.get(k)
        if c is None:
            continue
        sel = np.flatnonzero(key_code == c)
        as_int = sel[kind[sel] == _INT]
        ok = as_int[(ints[as_int] >= 0) & (ints[as_int] < 2**31)]
        slot[ok], codes[ok] = int_slot, ints[ok]
        for e in sel[kind[sel] == _STRING].tolist():  # a code sent as text: rare
            text = texts[int(text_idx[e])].as_py()
            try:
                code = int(text) if text.isdecimal() else -1
            except ValueError:  # past Python's digit limit: protobuf's reading decides
                raise _Slow from None
            if 0 <= code < 2**31:
                slot[e], codes[e] = int_slot, code
    res_codes: list[int] = []
    for _service, _host, pairs in resources:
        for k, _ in pairs:
            res_codes.append(code_of.setdefault(k, len(code_of)))
            if len(code_of) > len(key_list):
                key_list.append(k)

    def column(values: pa.Array, index: np.ndarray, *wanted: int) -> pa.Array:
        pos = np.full(n, -1, np.int64)
        for s in wanted:  # later slots win: old names first, then the new ones
            sel = np.flatnonzero(slot == s)
            if s in (_METHOD_OLD, _STATUS_OLD):
                sel = sel[::-1]  # an old name repeated: its first value counts; otherwise the last
            pos[kv_span[sel]] = index[sel]
        return values.take(pa.array(pos, mask=pos < 0))

    route = column(texts, text_idx, _ROUTE)
    method = column(texts, text_idx, _METHOD_OLD, _METHOD)
    status = column(pa.array(np.clip(codes, 0, None).astype(np.int32)), np.arange(m), _STATUS_OLD, _STATUS)
    address = column(texts, text_idx, _ADDRESS)
    peer = column(texts, text_idx, _PEER)

    # The map: each span's resource pairs, then its own attributes that are not columns.
    keep = np.flatnonzero(slot == _MAP)
    entry_text, entry_key, entry_span = text_idx[keep], key_code[keep], kv_span[keep]
    res_sizes = np.asarray([len(r[2]) for r in resources], np.int64)
    per_span_res = res_sizes[res_idx]
    if per_span_res.any():
        res_key_first = np.zeros(len(resources), np.int64)
        np.cumsum(res_sizes[:-1], out=res_key_first[1:])
        res_span = np.repeat(np.arange(n, dtype=np.int64), per_span_res)
        within = np.arange(len(res_span)) - np.repeat(np.cumsum(per_span_res) - per_span_res, per_span_res)
        res_text = np.repeat(np.asarray(res_first, np.int64)[res_idx], per_span_res) + within
        res_key = np.asarray(res_codes, np.int64)[np.repeat(res_key_first[res_idx], per_span_res) + within]
        order = np.argsort(np.concatenate([res_span, entry_span]), kind="stable")
        entry_text = np.concatenate([res_text, entry_text])[order]
        entry_key = np.concatenate([res_key, entry_key])[order]
        entry_span = np.concatenate([res_span, entry_span])[order]
    if len(entry_span) > 1:  # a map holds each key once: the last value of a repeated key wins
        pair = entry_span * len(key_list) + entry_key
        ordered = np.sort(pair)
        if (ordered[1:] == ordered[:-1]).any():
            _, last_rev = np.unique(pair[::-1], return_index=True)
            kept = np.sort(len(pair) - 1 - last_rev)
            entry_text, entry_key, entry_span = entry_text[kept], entry_key[kept], entry_span[kept]
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(np.bincount(entry_span, minlength=n), out=offsets[1:])
    key_arr = pa.array(key_list, pa.string())
    attributes = pa.MapArray.from_arrays(
        pa.array(offsets), key_arr.take(pa.array(entry_key)), texts.take(pa.array(entry_text))
    )
    services = pa.array([r[0] for r in resources], pa.string()).take(pa.array(res_idx))
    hosts = pa.array([r[1] for r in resources], pa.string()).take(pa.array(res_idx))
    trace_ids, span_ids, parents, names, kinds, starts_ts, durations, st_codes, st_msgs = core
    table = pa.Table.from_arrays(
        [trace_ids, span_ids, parents, services, names, kinds, starts_ts, durations, st_codes, st_msgs,
         route, method, status, address, peer, hosts, attributes],
        schema=_SPANS_SCHEMA,
    )  # fmt: skip
    return table, truncated


def _cut_strings(
    data: bytes, src: pa.Buffer, off: np.ndarray, size: np.ndarray, limit: int | None
) -> tuple[np.ndarray, int]:
    """The byte sizes of string values cut to `limit` characters, and how many were cut. Only a value
    of more than `limit` bytes can be longer; it is checked as UTF-8 whole (_Slow if it is not, as
    for any other value) and cut at a character boundary, so the long tail is never copied."""
    if limit is None:
        return size, 0
    over = np.flatnonzero(size > limit)
    if not len(over):
        return size, 0
    size = size.copy()
    cut = 0
    for i in over.tolist():
        o, s = int(off[i]), int(size[i])
        whole = pa.Array.from_buffers(
            pa.string(), 1, [None, pa.py_buffer(np.array([o, o + s], np.int32)), src]
        )
        _text(whole)
        head = data[o : o + min(s, 4 * limit)].decode("utf-8", "ignore")[
            :limit
        ]  # 4 bytes a character at most
        kept = len(head.encode())
        if kept < s:
            size[i] = kept
            cut += 1
    return size, cut

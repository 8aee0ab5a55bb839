"""The time range a chart draws (Window: buckets, replay), resolved from a relative range or an absolute one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Final, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from hopscope.errors import NotFoundError, StoreError
from hopscope.model import SAMPLE_STEPS_S, ReadStore, TimeRange, step_for
from hopscope.query import changes
from hopscope.store import utcnow

# Relative ranges the UI offers (the allow-list for ?range=).
RANGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "28d": timedelta(days=28),
    "90d": timedelta(days=90),
}
# Data whose newest minute is older than this is shown as a replay ("demo data, ends at ...").
LIVE_LAG = timedelta(minutes=5)
# An evidence chart shows at least this much before an incident (to compare with) and after it (to see it end).
EVIDENCE_BEFORE = timedelta(minutes=30)
EVIDENCE_AFTER = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class Window(TimeRange):
    """A time range to draw: [start, end), the bucket width, and whether "now" is the data's end."""

    step_s: int
    replay: bool  # True when the data ends well before the wall clock (demo or stopped collectors)
    data_end: datetime | None
    sample_step: int = 0  # bucket width of sample series; 0: the finest of SAMPLE_STEPS_S for the span

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} – {self.end:%Y-%m-%d %H:%M} UTC"

    @property
    def sample_step_s(self) -> int:
        """The bucket width of series read from samples: finer than step_s on short ranges, never coarser."""
        return self.sample_step or min(self.step_s, step_for(self.start, self.end, steps=SAMPLE_STEPS_S))

    def __post_init__(self) -> None:
        # Unlike a TimeRange it may be empty: part() of a live window whose buckets are all final.
        if self.end < self.start:
            raise StoreError(f"window end {self.end} is before its start {self.start}")

    def part(self, start: datetime) -> Window:
        """The same buckets from `start` on (a bucket boundary): to query only what may have changed."""
        return Window(start, self.end, self.step_s, self.replay, self.data_end, self.sample_step_s)


def data_end(store: ReadStore) -> datetime | None:
    """The end of the newest rolled-up minute (or sample), None for an empty store."""
    ends = [t for t in data_ends(store) if t is not None]
    return max(ends) if ends else None


def data_ends(store: ReadStore) -> tuple[datetime | None, datetime | None]:
    """(end of the newest rolled-up minute, newest sample): rollups move every few seconds, 1 Hz samples
    every second, so what is read from one need not be re-read when only the other moved."""
    row = store.query(
        "SELECT (SELECT max(minute) FROM hop_minutes) AS hm, (SELECT max(ts) FROM samples) AS s"
    ).to_pylist()[0]
    return (row["hm"] + timedelta(minutes=1) if row["hm"] else None, row["s"])


# The rollup rewrites the minutes of its grace (2 minutes) and the open one in place; these and one more.
PROVISIONAL_SPAN = timedelta(minutes=4)


class DataMarks(NamedTuple):
    """What tells a reader of a live store that the data moved, read in one query (data_marks)."""

    hops_start: datetime | None  # the oldest minute of hop_minutes (moves when retention deletes)
    hops_end: datetime | None  # one minute after the newest minute of hop_minutes
    samples_end: datetime | None  # the newest sample
    hops_rev: tuple[float, ...]  # rows, requests and summed latency of the newest PROVISIONAL_SPAN
    samples_start: datetime | None = None  # the oldest sample, where known without a read (held rows)


def data_marks(store: ReadStore) -> DataMarks:
    """data_ends(store), hop_minutes' oldest minute, and a revision of its newest minutes: the rollup
    rewrites its provisional minutes in place as spans arrive, so the end of the newest minute alone
    does not say they changed. From the rows held in memory (changes.held: the snapshot id, and the rows
    changed since), else one read."""
    held = _held_marks(store)
    if held is not None:
        return held
    row = store.query(
        "WITH e AS (SELECT min(minute) AS lo, max(minute) AS hm FROM hop_minutes) "
        "SELECT (SELECT lo FROM e) AS lo, (SELECT hm FROM e) AS hm, (SELECT max(ts) FROM samples) AS s, "
        "count(*) AS n, coalesce(sum(count), 0) AS c, coalesce(sum(duration_ms_sum), 0) AS d "
        "FROM hop_minutes WHERE minute >= (SELECT hm FROM e) - ?",
        [PROVISIONAL_SPAN],
    ).to_pylist()[0]
    hops = row["hm"] + timedelta(minutes=1) if row["hm"] else None
    return DataMarks(row["lo"], hops, row["s"], (float(row["n"]), float(row["c"]), float(row["d"])))


def _held_marks(store: ReadStore) -> DataMarks | None:
    hops = changes.held(store, "hop_minutes")
    if hops is None:
        return None
    samples = changes.held(store, "samples", hops.snap)
    if samples is None or (hops.hi is not None and not hops.covers(hops.hi - PROVISIONAL_SPAN)):
        return None
    if hops.hi is None:
        return DataMarks(hops.lo, None, samples.hi, (0.0, 0.0, 0.0), samples.lo)
    rows = hops.rows
    newest = rows.filter(
        pc.greater_equal(
            rows.column("minute"), pa.scalar(hops.hi - PROVISIONAL_SPAN, rows.schema.field("minute").type)
        )
    )
    total = (pc.sum(newest.column(c)).as_py() or 0 for c in ("count", "duration_ms_sum"))
    rev = (float(newest.num_rows), *(float(x) for x in total))
    return DataMarks(hops.lo, hops.hi + timedelta(minutes=1), samples.hi, rev, samples.lo)


def data_start(store: ReadStore) -> datetime | None:
    lo: datetime | None = store.query("SELECT min(minute) AS lo FROM hop_minutes").to_pylist()[0]["lo"]
    return lo


class _Unknown(Enum):
    """The default of ``last``: not given (None is an answer: the store is empty)."""

    UNKNOWN = 0


_UNKNOWN: Final = _Unknown.UNKNOWN


def effective_now(
    store: ReadStore, now: datetime | None = None, *, last: datetime | None | _Unknown = _UNKNOWN
) -> tuple[datetime, bool, datetime | None]:
    """(now, replay, data_end): the wall clock, or the data's end when the data stopped a while ago.

    `last` is data_end(store) when the caller already has it (the dashboard caches it for a few seconds).
    """
    wall = now or utcnow()
    end = data_end(store) if last is _UNKNOWN else last
    if end is not None and wall - end > LIVE_LAG:
        return end, True, end
    return wall, False, end


def window(
    store: ReadStore,
    range_key: str = "24h",
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
    last: datetime | None | _Unknown = _UNKNOWN,
) -> Window:
    """Resolve a relative range (one of RANGES) or an absolute [start, end) into a Window."""
    current, replay, last = effective_now(store, now, last=last)
    if start is not None and end is not None:
        if end <= start:
            raise NotFoundError(
                f"time range: end {end:%Y-%m-%d %H:%M} is not after start {start:%Y-%m-%d %H:%M}"
            )
        lo, hi = start, end
    else:
        if range_key not in RANGES:
            raise NotFoundError(f"time range {range_key!r} is not one of {', '.join(RANGES)}")
        hi = current.replace(second=0, microsecond=0) + (
            timedelta(minutes=1) if current.second or current.microsecond else timedelta()
        )
        lo = hi - RANGES[range_key]
        # Start on a bucket boundary: the first bucket is whole, and the window's buckets stay the
        # same ones for a whole bucket's time (a live page can re-query only its newest buckets).
        step = step_for(lo, hi)
        lo = datetime.fromtimestamp(lo.replace(tzinfo=UTC).timestamp() // step * step, UTC).replace(
            tzinfo=None
        )
    return Window(lo, hi, step_for(lo, hi), replay, last)


def context_window(start: datetime, end: datetime, *, before: timedelta = timedelta(hours=3)) -> Window:
    """A window around an interval: `before` of context on each side (at least its own length)."""
    pad = max(before, end - start)
    lo, hi = start - pad, end + pad
    return Window(lo, hi, step_for(lo, hi), False, None)


def evidence_window(start: datetime, end: datetime) -> Window:
    """What an evidence chart shows of an incident [start, end): the same length before it (at least
    EVIDENCE_BEFORE) to compare with, and a quarter of it after (at least EVIDENCE_AFTER) to see it end."""
    span = end - start
    lo, hi = start - max(span, EVIDENCE_BEFORE), end + max(span / 4, EVIDENCE_AFTER)
    return Window(lo, hi, step_for(lo, hi), False, None)

"""Records every collector returns, and their one conversion to Arrow at the storage boundary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series at one time (a row of `samples`)."""

    ts: datetime  # naive UTC
    metric: str
    value: float
    source: str
    service: str | None = None
    host: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TargetResult:
    """The outcome of collecting one target: samples on success, the reason on failure."""

    target: str
    ok: bool
    samples: tuple[Sample, ...] = ()
    error: str | None = None
    partial: bool = False  # ok, but the source said some data may be missing (Prometheus `warnings`)
    written: int = (
        0  # rows the collector already wrote itself (Prometheus writes per chunk with its watermark)
    )
    duration_s: float | None = None  # this target's own time; None: the runner times the collector's pass


@dataclass(frozen=True, slots=True)
class Run:
    """One collection attempt as the runner records it in `collector_runs`."""

    ts: datetime
    collector: str
    target: str
    ok: bool
    rows: int
    error: str | None
    duration_ms: float


_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


def _timestamps(values: Iterable[datetime]) -> pa.Array:
    """Naive-UTC datetimes as Arrow timestamp[us], through integers: pa.array() on datetime objects
    costs ~1.5 ms even for a dozen values (it checks each one's tzinfo), 30x the whole conversion."""
    import pyarrow as pa  # noqa: PLC0415  (records stay importable without pyarrow: scripts/gpu_check.py)

    return pa.array([(v - _EPOCH) // _US for v in values], pa.int64()).cast(pa.timestamp("us"))


def samples_table(samples: Sequence[Sample] | Iterable[Sample]) -> pa.Table:
    import pyarrow as pa  # noqa: PLC0415  (records stay importable without pyarrow: scripts/gpu_check.py)

    from hopscope.schema import SAMPLES  # noqa: PLC0415  (the schema needs pyarrow)

    samples = list(samples)
    return pa.Table.from_arrays(
        [
            _timestamps(s.ts for s in samples),
            pa.array([s.metric for s in samples], pa.string()),
            pa.array([float(s.value) for s in samples], pa.float64()),
            pa.array([s.source for s in samples], pa.string()),
            pa.array([s.service for s in samples], pa.string()),
            pa.array([s.host for s in samples], pa.string()),
            pa.array([list(s.labels.items()) for s in samples], pa.map_(pa.string(), pa.string())),
        ],
        schema=SAMPLES.arrow_schema,
    )


def runs_table(runs: Sequence[Run]) -> pa.Table:
    import pyarrow as pa  # noqa: PLC0415  (as above)

    from hopscope.schema import COLLECTOR_RUNS  # noqa: PLC0415  (the schema needs pyarrow)

    return pa.Table.from_arrays(
        [
            _timestamps(r.ts for r in runs),
            pa.array([r.collector for r in runs], pa.string()),
            pa.array([r.target for r in runs], pa.string()),
            pa.array([r.ok for r in runs], pa.bool_()),
            pa.array([r.rows for r in runs], pa.int64()),
            pa.array([r.error for r in runs], pa.string()),
            pa.array([r.duration_ms for r in runs], pa.float64()),
        ],
        schema=COLLECTOR_RUNS.arrow_schema,
    )

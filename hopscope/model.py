"""The ideas every layer shares, one home each: a hop, a time range and its buckets, a series' key.

    Hop.parse("api-gateway->model-server") == Hop("api-gateway", "model-server")
    str(Hop.service("model-server")) == "model-server"
    TimeRange(start, end).seconds
    step_for(start, end) == 60                       # the bucket width of a chart of [start, end)
    str(SeriesKey.of("m", "svc", None, {"gpu": "0"})) == 'm{service="svc",gpu="0"}'
    def diagnose(store: ReadStore, ...)              # what read-only code takes: a Store, or any reader

Times are naive UTC throughout (``hopscope.durations.parse_utc`` reads them from text).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

from hopscope.errors import StoreError

if TYPE_CHECKING:  # only for annotations: the model stays importable without the data stack
    import pandas as pd
    import pyarrow as pa

HopKind = Literal["network", "service"]
# The one place the separator of a hop's name is written: "client->server".
HOP_SEPARATOR = "->"


@dataclass(frozen=True, slots=True)
class Hop:
    """A hop: the wire between two services (kind "network", named ``client->server``) or the time
    inside one service (kind "service", named for the service; its client is "")."""

    client: str
    server: str
    kind: HopKind = "network"

    @classmethod
    def service(cls, name: str) -> Hop:
        return cls("", name, "service")

    @classmethod
    def parse(cls, text: str) -> Hop:
        """``client->server`` is a network hop, any other name the service of that name."""
        client, sep, server = text.partition(HOP_SEPARATOR)
        return cls(client, server) if sep else cls.service(text)

    @staticmethod
    def sql(client: str, server: str) -> str:
        """The SQL naming the network hop between two columns (or expressions), as ``str()`` names it."""
        return f"{client} || '{HOP_SEPARATOR}' || {server}"

    def __str__(self) -> str:
        return self.server if self.kind == "service" else f"{self.client}{HOP_SEPARATOR}{self.server}"


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open time range [start, end), naive UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise StoreError(f"window end {self.end} is not after its start {self.start}")

    @property
    def length(self) -> timedelta:
        return self.end - self.start

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


# Points per series at most: about one per pixel of a half-width chart (as Grafana's max data points).
# The browser's work (Plotly's calc and SVG paths) and the figure's JSON grow with it.
MAX_POINTS = 1000
# Bucket widths a chart may use, in seconds; the smallest that keeps a series <= MAX_POINTS wins.
STEPS_S: tuple[int, ...] = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
# Samples come every few seconds (1 Hz from NVML): on short ranges they get finer buckets. Series
# from hop_minutes keep STEPS_S: they are per-minute rollups, a finer bucket would only show gaps.
SAMPLE_STEPS_S: tuple[int, ...] = (5, 10, 15, 30, *STEPS_S)
# The diagnosis reads whole minutes up to this long a window, then about ANALYSIS_BUCKETS per window.
ANALYSIS_MINUTES_UP_TO = timedelta(hours=6)
ANALYSIS_BUCKETS = 360


def step_for(
    start: datetime, end: datetime, max_points: int = MAX_POINTS, *, steps: Sequence[int] = STEPS_S
) -> int:
    """The smallest bucket width (seconds) among `steps` that keeps [start, end) within max_points buckets."""
    span = max((end - start).total_seconds(), float(steps[0]))
    for step in steps:
        if span / step <= max_points:
            return step
    return int(math.ceil(span / max_points / 86400) * 86400)


def analysis_step(length: timedelta) -> int:
    """The diagnosis's bucket width (seconds): 1 minute up to 6 h windows, then about 360 buckets per
    window in whole minutes (rounded, not the chart's next larger step: its scores were tuned on it)."""
    s = length.total_seconds()
    if s <= ANALYSIS_MINUTES_UP_TO.total_seconds():
        return 60
    return int(max(60, round(s / ANALYSIS_BUCKETS / 60) * 60))


# The labels that tell apart the series of one metric on one host: GPU index, NIC, probe phase and target
# (an allow-list: their values become part of a series' name).
SERIES_LABELS: tuple[str, ...] = ("gpu", "device", "phase", "target")


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """The name of one series: ``metric{service="..",host="..",k="v",...}``, labels sorted by name.

    Build it with ``of``: an empty or missing service or host and a label without a value are left out.
    ``SQL`` builds the same text inside DuckDB from the columns metric, service, host, labels (a map).
    """

    metric: str
    service: str = ""
    host: str = ""
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(
        cls,
        metric: str,
        service: str | None,
        host: str | None,
        labels: Mapping[str, str | None] | Iterable[tuple[str, str | None]],
    ) -> SeriesKey:
        pairs = labels.items() if isinstance(labels, Mapping) else labels
        kept = tuple(sorted(((str(k), str(v)) for k, v in pairs if v is not None), key=lambda kv: kv[0]))
        return cls(metric, service or "", host or "", kept)

    def __str__(self) -> str:
        parts = [f'service="{self.service}"'] if self.service else []
        if self.host:
            parts.append(f'host="{self.host}"')
        parts += [f'{k}="{v}"' for k, v in self.labels]
        return f"{self.metric}{{{','.join(parts)}}}"

    # A map entry with a NULL value gives a NULL string, which array_to_string leaves out.
    SQL = """metric || '{' || concat_ws(',',
    CASE WHEN service <> '' THEN 'service="' || service || '"' END,
    CASE WHEN host <> '' THEN 'host="' || host || '"' END,
    nullif(array_to_string(list_transform(list_sort(map_entries(labels)),
           x -> x.key || '="' || x.value || '"'), ','), '')) || '}'"""


# A query's bound parameters: positional (``?``) or named (``$name``), as DuckDB takes them.
QueryParams: TypeAlias = "Sequence[object] | Mapping[str, object] | None"


class ReadStore(Protocol):
    """The reads that read-only code (diagnosis, query, SLO evaluation, report) makes of a store.

    ``hopscope.store.Store`` is one; so is any wrapper with the same two reads (a benchmark's
    recorder of the SQL it is asked). Code that needs more of a Store (retention, snapshots, writes)
    takes a Store."""

    def query(self, sql: str, params: QueryParams = None) -> pa.Table: ...

    def query_df(self, sql: str, params: QueryParams = None) -> pd.DataFrame: ...

"""Tables of the store: their columns, as Arrow schemas and as DuckDB DDL.

All timestamps are UTC, stored as naive ``TIMESTAMP`` (microseconds).
Durations are milliseconds as DOUBLE. Names follow the ecosystem:
OpenTelemetry semantic conventions for spans, dcgm-exporter / node_exporter /
blackbox_exporter metric names in ``samples``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us")
STR_MAP = pa.map_(pa.string(), pa.string())


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    arrow: pa.DataType
    sql: str
    required: bool = False  # must be present and non-null in every appended row
    doc: str = ""


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    time_column: str
    doc: str = ""

    @property
    def arrow_schema(self) -> pa.Schema:
        return _arrow_schema(self)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = ", ".join(f'"{c.name}" {c.sql}' for c in self.columns)
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" ({cols})'


@functools.cache
def _arrow_schema(table: Table) -> pa.Schema:
    # Built once per table: append() asks for it on every write.
    return pa.schema([pa.field(c.name, c.arrow, nullable=not c.required) for c in table.columns])


SPANS = Table(
    "spans",
    (
        Column("trace_id", pa.binary(), "BLOB", True, "16 bytes"),
        Column("span_id", pa.binary(), "BLOB", True, "8 bytes"),
        Column("parent_span_id", pa.binary(), "BLOB", False, "8 bytes; null for a root span"),
        Column("service", pa.string(), "VARCHAR", True, "resource service.name"),
        Column("name", pa.string(), "VARCHAR", True),
        Column(
            "kind",
            pa.int8(),
            "TINYINT",
            True,
            "OTLP SpanKind: 0 unspecified 1 internal 2 server 3 client 4 producer 5 consumer",
        ),
        Column("start_time", TS, "TIMESTAMP", True),
        Column("duration_ms", pa.float64(), "DOUBLE", True),
        Column("status_code", pa.int8(), "TINYINT", True, "OTLP StatusCode: 0 unset 1 ok 2 error"),
        Column("status_message", pa.string(), "VARCHAR"),
        Column("http_route", pa.string(), "VARCHAR", False, "http.route"),
        Column("http_method", pa.string(), "VARCHAR", False, "http.request.method"),
        Column("http_status_code", pa.int32(), "INTEGER", False, "http.response.status_code"),
        Column("server_address", pa.string(), "VARCHAR", False, "server.address"),
        Column("peer_service", pa.string(), "VARCHAR", False, "peer.service"),
        Column("host_name", pa.string(), "VARCHAR", False, "resource host.name"),
        Column(
            "attributes",
            STR_MAP,
            "MAP(VARCHAR, VARCHAR)",
            False,
            "every other span and resource attribute, as text",
        ),
    ),
    time_column="start_time",
    doc="one row per span",
)

HOP_MINUTES = Table(
    "hop_minutes",
    (
        Column("minute", TS, "TIMESTAMP", True, "start of the minute"),
        Column(
            "client", pa.string(), "VARCHAR", True, "calling service; '' for requests entering the system"
        ),
        Column("server", pa.string(), "VARCHAR", True, "called service"),
        Column("route", pa.string(), "VARCHAR", True, "http.route of the trace's entry span"),
        Column("count", pa.int64(), "BIGINT", True),
        Column("errors", pa.int64(), "BIGINT", True),
        Column(
            "duration_ms_sum",
            pa.float64(),
            "DOUBLE",
            True,
            "edge latency as the client saw it (server span where no client span)",
        ),
        Column("duration_ms_max", pa.float64(), "DOUBLE", True),
        Column("client_ms_sum", pa.float64(), "DOUBLE", True, "client span durations; 0 where none"),
        Column("server_ms_sum", pa.float64(), "DOUBLE", True),
        Column("gap_ms_sum", pa.float64(), "DOUBLE", True, "network + queue time: max(0, client - server)"),
        Column("self_ms_sum", pa.float64(), "DOUBLE", True, "server span minus its outgoing calls"),
        Column("skewed", pa.int64(), "BIGINT", True, "pairs whose server span outlasted its client span"),
        Column(
            "hist_idx", pa.list_(pa.int32()), "INTEGER[]", True, "log bucket indexes (hopscope.histogram)"
        ),
        Column("hist_cnt", pa.list_(pa.int64()), "BIGINT[]", True),
        Column("good_le_ms", pa.list_(pa.float64()), "DOUBLE[]", True, "SLO thresholds counted exactly"),
        Column("good_cnt", pa.list_(pa.int64()), "BIGINT[]", True, "requests with duration <= good_le_ms[i]"),
        Column(
            "exemplars", pa.list_(pa.string()), "VARCHAR[]", True, "hex trace ids of the slowest requests"
        ),
    ),
    time_column="minute",
    doc="one row per minute x edge x route",
)

SAMPLES = Table(
    "samples",
    (
        Column("ts", TS, "TIMESTAMP", True),
        Column("metric", pa.string(), "VARCHAR", True, "dcgm-exporter / node_exporter / blackbox names"),
        Column("value", pa.float64(), "DOUBLE", True, "NaN and +-Inf kept as floats"),
        Column("source", pa.string(), "VARCHAR", True, "nvml, prometheus, network, probe, demo"),
        Column("service", pa.string(), "VARCHAR", False, "service the series belongs to, if known"),
        Column("host", pa.string(), "VARCHAR", False),
        Column(
            "labels",
            STR_MAP,
            "MAP(VARCHAR, VARCHAR)",
            False,
            "the other labels (gpu, UUID, device, phase, target, ...)",
        ),
    ),
    time_column="ts",
    doc="one row per timestamp x series",
)

COLLECTOR_RUNS = Table(
    "collector_runs",
    (
        Column("ts", TS, "TIMESTAMP", True),
        Column("collector", pa.string(), "VARCHAR", True),
        Column("target", pa.string(), "VARCHAR", True),
        Column("ok", pa.bool_(), "BOOLEAN", True),
        Column("rows", pa.int64(), "BIGINT", True),
        Column("error", pa.string(), "VARCHAR"),
        Column("duration_ms", pa.float64(), "DOUBLE", True),
    ),
    time_column="ts",
    doc="one row per collection attempt",
)

STATE = Table(
    "state",
    (
        Column(
            "key", pa.string(), "VARCHAR", True, "e.g. 'rollup.watermark', 'prometheus.<query>.watermark'"
        ),
        Column("value", pa.string(), "VARCHAR", True),
        Column("updated", TS, "TIMESTAMP", True),
    ),
    time_column="updated",
    doc="small key/value state for incremental jobs (watermarks)",
)

SLO_CORRECTIONS = Table(
    "slo_corrections",
    (
        Column("id", pa.string(), "VARCHAR", True, "short hex key (hopscope slo corrections --delete ID)"),
        Column("slo", pa.string(), "VARCHAR", True, "the SLO's metadata.name"),
        Column("start_time", TS, "TIMESTAMP", True, "first excluded instant"),
        Column("end_time", TS, "TIMESTAMP", True, "end of the excluded period (exclusive)"),
        Column("reason", pa.string(), "VARCHAR", True),
        Column("created", TS, "TIMESTAMP", True),
    ),
    time_column="start_time",
    doc="one row per budget correction recorded with `hopscope slo correct` (excluded from SLI, budget, alerts)",
)

TABLES: dict[str, Table] = {
    t.name: t for t in (SPANS, HOP_MINUTES, SAMPLES, COLLECTOR_RUNS, STATE, SLO_CORRECTIONS)
}

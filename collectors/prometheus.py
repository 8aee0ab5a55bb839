"""Pull from a Prometheus-compatible HTTP API with prometheus-api-client.

Per configured query (or preset): on the first run, backfill `backfill` of history
in chunks of at most `max_points` points per series; then pull incrementally from
a watermark kept in the store's `state` table. Points sit on a fixed grid (multiples
of the step since the epoch) and each chunk replaces its own range of this query's
samples, so restarts leave no gaps and no duplicates.

Every call has a timeout and a bounded retry inside an overall deadline;
Retry-After is capped; 400/422 marks the query invalid (the others continue);
NaN and +-Inf stay floats; `warnings` in a response mark the result partial;
secrets never appear in errors or logs.
"""

from __future__ import annotations

import logging
import math
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import pyarrow as pa
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from hopscope.collectors.records import TargetResult
from hopscope.config.collect import PrometheusConfig, PromQuery
from hopscope.model import Hop
from hopscope.redact import redact
from hopscope.schema import SAMPLES

log = logging.getLogger(__name__)

SOURCE = "prometheus"
QUERY_LABEL = "query"  # every pulled sample names the configured query it came from
# Samples one chunk of one query rewrites (bound parameters: query name, first and last point).

# Presets: data, not code. Each is a query whose series keep their own metric names.
PRESET_QUERIES: dict[str, PromQuery] = {
    "node_network": PromQuery(
        name="preset.node_network",
        query='{__name__=~"node_network_(receive|transmit)_(bytes|packets|drop|errs)_total|node_network_speed_bytes'
        '|node_netstat_Tcp_RetransSegs|node_memory_MemAvailable_bytes|node_memory_MemTotal_bytes"}',
        host_label="instance",
    ),
    "blackbox": PromQuery(
        name="preset.blackbox",
        query='{__name__=~"probe_http_duration_seconds|probe_success|probe_http_status_code"}',
        host_label=None,
        rename={"instance": "target"},
    ),
    "dcgm": PromQuery(
        name="preset.dcgm",
        query='{__name__=~"DCGM_FI_.*"}',
        host_label="Hostname",
    ),
    "spanmetrics": PromQuery(
        name="preset.spanmetrics",
        query='{__name__=~"(traces_spanmetrics_(latency|duration_milliseconds|duration_seconds)_(bucket|count|sum))'
        '|traces_spanmetrics_calls_total|duration_milliseconds_(bucket|count|sum)"}',
        service_label="service_name",
        host_label=None,
    ),
    "servicegraph": PromQuery(
        name="preset.servicegraph",
        query='{__name__=~"traces_service_graph_request_(server|client)_seconds_(bucket|count|sum)'
        '|traces_service_graph_request_total|traces_service_graph_request_failed_total"}',
        host_label=None,
        hop_labels=("client", "server"),
    ),
}


class InvalidQuery(Exception):
    """Prometheus refused the query (400/422): retrying cannot help."""


class FetchFailed(Exception):
    """The call failed after its retries or its deadline."""


@dataclass(frozen=True, slots=True)
class Fetched:
    result: list[dict[str, Any]]
    warnings: tuple[str, ...]


# -- parse (pure) ------------------------------------------------------------------------------


def matrix_to_table(result: Sequence[dict[str, Any]], q: PromQuery) -> pa.Table:
    """A query_range `matrix` result -> `samples` rows (NaN/+-Inf kept as floats)."""
    ts: list[int] = []
    values: list[float] = []
    metrics: list[str] = []
    services: list[str | None] = []
    hosts: list[str | None] = []
    offsets = [0]
    keys: list[str] = []
    items: list[str] = []
    for series in result:
        labels = dict(series.get("metric") or {})
        name = q.metric or labels.pop("__name__", None) or q.name
        labels.pop("__name__", None)
        service = q.service
        if q.service_label and q.service_label in labels:
            service = labels.pop(q.service_label)
        host = labels.pop(q.host_label, None) if q.host_label else None
        if q.hop_labels:
            client, server = labels.get(q.hop_labels[0], ""), labels.get(q.hop_labels[1], "")
            labels["hop"] = str(Hop(client, server))
        labels = {q.rename.get(k, k): str(v) for k, v in labels.items()}
        labels[QUERY_LABEL] = q.name
        for point in series.get("values") or ():
            ts.append(int(round(float(point[0]) * 1_000_000)))
            values.append(float(point[1]))  # "NaN", "+Inf", "-Inf" parse to the floats
            metrics.append(name)
            services.append(service)
            hosts.append(host)
            keys.extend(labels.keys())
            items.extend(labels.values())
            offsets.append(len(keys))
    n = len(ts)
    return pa.Table.from_arrays(
        [
            pa.array(ts, pa.int64()).cast(pa.timestamp("us")),
            pa.array(metrics, pa.string()),
            pa.array(values, pa.float64()),
            pa.array([SOURCE] * n, pa.string()),
            pa.array(services, pa.string()),
            pa.array(hosts, pa.string()),
            pa.MapArray.from_arrays(
                pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(items, pa.string())
            ),
        ],
        schema=SAMPLES.arrow_schema,
    )


def grid_floor(t: float, step: float) -> float:
    return math.floor(t / step) * step


def chunks(start: float, end: float, step: float, max_points: int) -> list[tuple[float, float]]:
    """[start, end] on the step grid -> ranges of at most max_points points each."""
    span = (max_points - 1) * step
    out = []
    s = start
    while s <= end:
        e = min(s + span, end)
        out.append((s, e))
        s = e + step
    return out


# -- fetch ---------------------------------------------------------------------------------


class PrometheusCollector:
    """One TargetResult per query; writes each chunk and its watermark itself."""

    name = "prometheus"

    def __init__(
        self,
        cfg: PrometheusConfig,
        store: Any,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        progress: TextIO | None = None,
    ) -> None:
        if not cfg.url:
            raise ValueError("PrometheusCollector needs [collect.prometheus] url")
        self.cfg = cfg
        self.interval_s = cfg.interval_s
        self.store = store
        self._clock = clock
        self._sleep = sleep
        self._progress = progress if progress is not None else (sys.stderr if cfg.progress else None)
        self.queries: list[PromQuery] = [PRESET_QUERIES[p] for p in cfg.presets] + list(cfg.queries)
        self._secrets = [s for s in (_secret(cfg.bearer_token), _secret(cfg.password)) if s]
        self._last = threading.local()
        session = session or requests.Session()
        session.verify = cfg.verify_tls
        session.hooks["response"].append(self._remember)
        headers = {"Authorization": f"Bearer {_secret(cfg.bearer_token)}"} if cfg.bearer_token else None
        auth = (cfg.username, _secret(cfg.password)) if cfg.username else None
        self.client = PrometheusConnect(
            url=cfg.url.rstrip("/"),
            headers=headers,
            disable_ssl=not cfg.verify_tls,
            retry=Retry(total=0, redirect=0, raise_on_status=False),  # our own bounded retry, below
            auth=auth,
            session=session,
            timeout=cfg.timeout_s,
        )
        self.invalid: dict[str, str] = {}

    @property
    def targets_text(self) -> str:
        return f"{self.redact(self.cfg.url or '')}: " + ", ".join(q.name for q in self.queries)

    def _remember(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        self._last.response = response
        return response

    def redact(self, text: str) -> str:
        return redact(text, secrets=self._secrets)

    def fetch(self, query: str, start: float, end: float, step: float) -> Fetched:
        """One query_range call with timeout, bounded retry, capped Retry-After and an overall deadline."""
        deadline = time.monotonic() + self.cfg.deadline_s
        attempt = 0
        while True:
            attempt += 1
            self._last.response = None
            retry_after: float | None = None
            try:
                result = self.client.custom_query_range(
                    query,
                    datetime.fromtimestamp(start, UTC),
                    datetime.fromtimestamp(end, UTC),
                    f"{step:g}",
                    params={"timeout": f"{self.cfg.timeout_s:g}s"},
                )
                return Fetched(result or [], self._warnings())
            except PrometheusApiClientException as exc:
                status = _status(str(exc))
                text = self.redact(_short_error(str(exc)))
                if status in (400, 422):
                    raise InvalidQuery(f"Prometheus refused the query (HTTP {status}): {text}") from None
                if status not in (408, 429) and (status or 0) < 500:
                    raise FetchFailed(f"HTTP {status}: {text}") from None
                retry_after = self._retry_after()
                error = f"HTTP {status}: {text}"
            except (
                requests.RequestException,
                ValueError,
                KeyError,
                TypeError,
            ) as exc:  # connection, timeout, malformed
                error = self.redact(f"{type(exc).__name__}: {_short_error(str(exc))}")
            if attempt > self.cfg.retries:
                raise FetchFailed(f"{error} (after {attempt} attempts)")
            wait = (
                retry_after
                if retry_after is not None
                else min(0.5 * 2 ** (attempt - 1), 8) * (0.5 + random.random() / 2)
            )
            wait = min(wait, self.cfg.max_retry_after_s)
            if time.monotonic() + wait > deadline:
                raise FetchFailed(
                    f"{error} (deadline of {self.cfg.deadline_s:g} s reached after {attempt} attempts)"
                )
            self._sleep(wait)

    def _retry_after(self) -> float | None:
        resp = getattr(self._last, "response", None)
        value = resp.headers.get("Retry-After") if resp is not None else None
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None  # an HTTP date: fall back to our own backoff

    def _warnings(self) -> tuple[str, ...]:
        resp = getattr(self._last, "response", None)
        if resp is None or b'"warnings"' not in resp.content:
            return ()
        try:
            return tuple(str(w) for w in resp.json().get("warnings") or ())
        except ValueError:
            return ()

    # -- pull ------------------------------------------------------------------------------

    def watermark_key(self, q: PromQuery) -> str:
        return f"prometheus.{q.name}.watermark"

    def collect(self) -> Iterable[TargetResult]:
        return [self.pull(q) for q in self.queries]

    def pull(self, q: PromQuery) -> TargetResult:
        if q.name in self.invalid:
            return TargetResult(q.name, False, error=self.invalid[q.name])
        step = q.step_s or self.cfg.step_s
        end = grid_floor(self._clock() - self.cfg.lag_s, step)
        mark = self.store.get_state(self.watermark_key(q))
        start = (
            float(mark) + step
            if mark is not None
            else grid_floor(end - self.cfg.backfill.total_seconds(), step)
        )
        if start > end:
            return TargetResult(q.name, True)
        parts = chunks(start, end, step, self.cfg.max_points)
        written = 0
        warnings: list[str] = []
        for i, (s, e) in enumerate(parts, 1):
            try:
                fetched = self.fetch(q.query, s, e, step)
            except InvalidQuery as exc:
                self.invalid[q.name] = str(exc)
                return TargetResult(q.name, False, written=written, error=str(exc))
            except FetchFailed as exc:
                done = f"; {i - 1} of {len(parts)} chunk(s) done, resumes from the watermark" if i > 1 else ""
                return TargetResult(q.name, False, written=written, error=f"{exc}{done}")
            table = matrix_to_table(fetched.result, q)
            lo, hi = _naive(s), _naive(e)
            self.store.replace_range(
                "samples", lo, hi, table, columns={"source": "prometheus"}, labels={"query": q.name}
            )
            self.store.set_state(self.watermark_key(q), repr(e))
            written += table.num_rows
            warnings.extend(fetched.warnings)
            if self._progress is not None and len(parts) > 1:
                bar = "#" * int(30 * i / len(parts))
                print(
                    f"\rbackfill {q.name} [{bar:<30}] {i}/{len(parts)} chunks, {written} samples",
                    end="",
                    file=self._progress,
                    flush=True,
                )
        if self._progress is not None and len(parts) > 1:
            print(file=self._progress, flush=True)
        if warnings:
            return TargetResult(
                q.name, True, written=written, partial=True, error="; ".join(dict.fromkeys(warnings))[:500]
            )
        return TargetResult(q.name, True, written=written)


def _naive(t: float) -> datetime:
    return datetime(1970, 1, 1) + timedelta(microseconds=int(round(t * 1_000_000)))


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _status(text: str) -> int | None:
    m = re.search(r"HTTP Status Code (\d{3})", text)
    return int(m.group(1)) if m else None


def _short_error(text: str) -> str:
    return text if len(text) <= 300 else text[:300] + "..."

"""The daemon's own metrics, served in Prometheus format on /metrics for SREs to scrape."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SelfMetrics:
    """One registry per daemon (tests make many daemons in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.spans_received = Counter(
            "hopscope_otlp_spans_received",
            "Spans committed to the store after an OTLP export",
            ["transport"],
            registry=r,
        )
        self.spans_refused = Counter(
            "hopscope_otlp_spans_refused",
            "Spans not stored: invalid (rejected) or refused under backpressure/auth/limits",
            ["transport", "reason"],
            registry=r,
        )
        self.requests = Counter(
            "hopscope_otlp_requests", "OTLP export requests by answer", ["transport", "code"], registry=r
        )
        self.queue_spans = Gauge("hopscope_write_queue_spans", "Spans waiting for a group commit", registry=r)
        self.commit_seconds = Histogram(
            "hopscope_commit_seconds",
            "Latency of one group commit of spans to the store",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.commit_spans = Histogram(
            "hopscope_commit_spans",
            "Spans per group commit",
            buckets=(1, 10, 100, 1000, 10_000, 100_000),
            registry=r,
        )
        self.samples_written = Counter(
            "hopscope_samples_written", "Samples written to the store", ["collector"], registry=r
        )
        self.collector_runs = Counter(
            "hopscope_collector_runs", "Collection attempts", ["collector", "ok"], registry=r
        )
        self.collector_errors = Counter(
            "hopscope_collector_errors", "Failed collection attempts", ["collector"], registry=r
        )
        self.store_errors = Counter(
            "hopscope_store_errors", "Writes the store refused", ["table"], registry=r
        )
        self.collector_enabled = Gauge(
            "hopscope_collector_enabled", "1 if the collector runs", ["collector"], registry=r
        )

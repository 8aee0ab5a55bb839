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
        # The receiver's limits (collectors/otlp.py): what is held now, what was refused or cut.
        self.attributes_truncated = Counter(
            "hopscope_otlp_attributes_truncated",
            "Attribute values cut to attribute_value_length_limit",
            ["transport"],
            registry=r,
        )
        self.inflight_requests = Gauge(
            "hopscope_otlp_inflight_requests", "Requests admitted and not yet queued for a commit", registry=r
        )
        self.inflight_bytes = Gauge(
            "hopscope_otlp_inflight_bytes",
            "Body bytes the admitted requests hold (by Content-Length)",
            registry=r,
        )
        self.connections = Gauge("hopscope_otlp_http_connections", "Open OTLP/HTTP connections", registry=r)
        self.connections_refused = Counter(
            "hopscope_otlp_http_connections_refused",
            "OTLP/HTTP connections answered 503 and closed at once: max_connections were open",
            registry=r,
        )
        self.tls_handshakes_failed = Counter(
            "hopscope_otlp_http_tls_handshakes_failed",
            "OTLP/HTTP TLS handshakes that failed: plaintext, no or an untrusted client certificate, too slow",
            registry=r,
        )
        self.reads_cut = Counter(
            "hopscope_otlp_http_reads_cut",
            "OTLP/HTTP connections cut because headers or body did not arrive in time",
            ["phase"],
            registry=r,
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
        # The store's one writer (hopscope/writer.py): is the store taking writes, and how busy is it?
        self.last_commit = Gauge(
            "hopscope_store_last_commit_timestamp_seconds",
            "Unix time of the store's last successful write (any table)",
            registry=r,
        )
        self.failing_seconds = Gauge(
            "hopscope_store_failing_seconds",
            "Seconds the store has been refusing writes (0: it takes them)",
            registry=r,
        )
        self.store_refusing = Gauge(
            "hopscope_store_refusing",
            "1 while the store refuses writes, by the cause recognised (disk full, read-only, locked, other)",
            ["cause"],
            registry=r,
        )
        self.reconnects = Counter(
            "hopscope_store_reconnects",
            "Times the writer reopened its store connection after writes kept failing",
            registry=r,
        )
        self.conflict_retries = Gauge(
            "hopscope_store_conflict_retries",
            "Commits retried after a DuckLake transaction conflict with another writer (a shared store's "
            "other collectors), since start",
            registry=r,
        )
        self.writer_queue = Gauge(
            "hopscope_writer_queue_jobs", "Writes waiting for the store's writer", registry=r
        )
        self.writer_job_seconds = Histogram(
            "hopscope_writer_job_seconds",
            "How long one write held the store's writer, by kind (spans, samples, rollup, maintain:<step>, ...)",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=r,
        )
        self.maintenance_slice_max = Gauge(
            "hopscope_maintenance_slice_max_seconds",
            "The longest a maintenance slice has held the writer since start",
            registry=r,
        )
        self.maintenance_cycles = Counter(
            "hopscope_maintenance_cycles",
            "Maintenance cycles, by whether every slice succeeded",
            ["ok"],
            registry=r,
        )
        self.maintenance_last_cycle = Gauge(
            "hopscope_maintenance_last_cycle_seconds", "Wall time of the last maintenance cycle", registry=r
        )
        self.maintenance_pending = Gauge(
            "hopscope_maintenance_pending",
            "1 if the last cycle ran out of time with work left (it goes on at the next cycle)",
            registry=r,
        )
        self.rollup_last_success = Gauge(
            "hopscope_rollup_last_success_timestamp_seconds",
            "Unix time of the last successful rollup",
            registry=r,
        )
        # A shared store's collectors elect one leader for rollups, maintenance and alerts (hopscope/leader.py).
        self.leader = Gauge(
            "hopscope_leader",
            "1 while this collector leads: it runs rollups, maintenance and alert evaluation (embedded store: always)",
            registry=r,
        )
        self.leader_term = Gauge(
            "hopscope_leader_term",
            "The lease term this collector leads in, or led in last (0: never)",
            registry=r,
        )
        self.samples_buffered = Gauge(
            "hopscope_samples_buffered", "Samples and collector runs waiting to be written", registry=r
        )
        self.samples_dropped = Counter(
            "hopscope_samples_dropped",
            "Samples dropped because the retry buffer was full while the store refused writes",
            registry=r,
        )
        # SLO evaluation and alert delivery (hopscope/alerting): is every Alertmanager told?
        self.slo_evaluations = Counter(
            "hopscope_slo_evaluations", "SLO evaluations of the alert loop, by success", ["ok"], registry=r
        )
        self.slo_evaluation_seconds = Gauge(
            "hopscope_slo_evaluation_last_seconds",
            "Wall time of the last SLO evaluation (diagnoses of firing alerts included)",
            registry=r,
        )
        self.alertmanager_up = Gauge(
            "hopscope_alertmanager_up",
            "1 if the last delivery to this Alertmanager succeeded, 0 while it fails",
            ["alertmanager"],
            registry=r,
        )
        self.alerts_sent = Counter(
            "hopscope_alerts_sent",
            "Alerts an Alertmanager took (each resend of a firing alert and each resolve counts)",
            ["alertmanager"],
            registry=r,
        )
        self.alert_delivery_errors = Counter(
            "hopscope_alert_delivery_errors",
            "Deliveries an Alertmanager did not take, after the retries of one delivery",
            ["alertmanager"],
            registry=r,
        )
        self.alertmanager_last_success = Gauge(
            "hopscope_alertmanager_last_success_timestamp_seconds",
            "Unix time of the last delivery this Alertmanager took",
            ["alertmanager"],
            registry=r,
        )
        self.alerts_undelivered = Gauge(
            "hopscope_alerts_undelivered",
            "Alerts whose latest state (firing, changed or resolved) has not reached this Alertmanager yet",
            ["alertmanager"],
            registry=r,
        )
        self.alerts = Gauge(
            "hopscope_alerts",
            "Alerts held, by severity and state (a resolved one is resent for alerting.resolved_retention)",
            ["severity", "state"],
            registry=r,
        )

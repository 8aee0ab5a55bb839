"""The alert loop of ``hopscope collect``: evaluate the SLOs, keep their alerts, deliver them.

Each ``evaluation_interval`` every span-sourced SLO is evaluated at the end of the last whole minute
(the SLO engine's public evaluation, ``evaluate_many``); its state goes to /metrics
(``hopscope_slo_*``) and its firing tiers become alerts (hopscope.alerting.alerts). Between
evaluations each Alertmanager is sent what it has not got yet: new, changed and resolved alerts at
once, firing ones again every ``resend_interval`` (endsAt moves on, so Alertmanager keeps them
active). A failing Alertmanager is retried with backoff; only the latest state of each alert is
kept, never a queue of stale ones.

The alerts and what each Alertmanager has got are kept in the store's ``state`` table (key
``alerting.alerts``): a restarted daemon resends the firing alerts with their first startsAt (no new
alert) and resolves those that cleared while it was away (no lost resolve). The store, not a file
beside it, so that another collector sharing the catalog that takes over the evaluation (issue 18's
leader) continues from the same state.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hopscope.alerting.alertmanager import AlertmanagerClient, DeliveryError
from hopscope.alerting.alerts import (
    FIRING,
    RESOLVED,
    Alert,
    CauseNote,
    alert_annotations,
    alert_key,
    alert_labels,
    cause_note,
    firing_tiers,
    ongoing_breach,
    resolve,
    to_payload,
)
from hopscope.alerting.fresh import evaluate_fresh
from hopscope.alerting.slo_metrics import SloMetrics
from hopscope.config.alerting import AlertingConfig
from hopscope.slo.burn import Breach, SloStatus
from hopscope.slo.model import SLO, SPAN_KINDS
from hopscope.slo.source import evaluate_many
from hopscope.store import utcnow

if TYPE_CHECKING:
    from hopscope.collectors.selfmetrics import SelfMetrics

log = logging.getLogger(__name__)

STATE_KEY = "alerting.alerts"
_MAX_BACKOFF_S = 30.0


@dataclass
class TargetHealth:
    """How deliveries to one Alertmanager go (the Collectors page and /metrics show it)."""

    name: str
    ok: bool | None = None  # None: nothing sent yet
    last_error: str | None = None
    last_success_unix: float | None = None
    failures: int = 0  # in a row
    next_try: float = 0.0  # monotonic


def _diagnose_breach(store: Any, breach: Breach, slo: SLO) -> Any:
    from hopscope.diagnosis import diagnose_breach  # noqa: PLC0415  (the diagnosis imports hopscope.slo)

    return diagnose_breach(store, breach, slo)


class AlertEvaluator:
    """Evaluates ``slos`` on ``store`` and delivers their alerts to ``cfg.alertmanagers``.

    ``clock`` is where the SLOs are evaluated (naive UTC; a replay passes the store's time),
    ``wall`` the Unix time sent to Alertmanager; both are now by default."""

    def __init__(
        self,
        store: Any,
        slos: Sequence[SLO],
        cfg: AlertingConfig,
        *,
        dashboard_url: str,
        metrics: SelfMetrics | None = None,
        slo_metrics: SloMetrics | None = None,
        clock: Callable[[], datetime] = utcnow,
        wall: Callable[[], float] = time.time,
        diagnose: Callable[[Any, Breach, SLO], Any] = _diagnose_breach,
        clients: Sequence[AlertmanagerClient] | None = None,
    ) -> None:
        self.store = store
        # Prometheus-sourced SLOs alert in Prometheus, through the rules `hopscope slo export` writes.
        self.slos = [s for s in slos if s.sli.kind in SPAN_KINDS]
        self.cfg = cfg
        self.dashboard_url = dashboard_url.rstrip("/")
        self.metrics = metrics
        self.slo_metrics = slo_metrics or SloMetrics()
        self._clock = clock
        self._wall = wall
        self._diagnose = diagnose
        self.clients = (
            list(clients) if clients is not None else [AlertmanagerClient(u, cfg) for u in cfg.alertmanagers]
        )
        self.health = {c.url: TargetHealth(c.name) for c in self.clients}
        self.alerts: dict[str, Alert] = {}
        self._causes: dict[str, CauseNote] = {}
        self._persisted: str | None = None
        self._lock = threading.Lock()
        self.statuses: list[SloStatus] = []
        self.last_error: str | None = None
        self.load()

    @property
    def resend_s(self) -> float:
        return self.cfg.resend_interval.total_seconds()

    @property
    def valid_for_s(self) -> float:
        """How long Alertmanager keeps a firing alert without a resend (Prometheus: 4 x max(eval, resend))."""
        return 4 * max(self.resend_s, self.cfg.evaluation_interval.total_seconds())

    # -- state -----------------------------------------------------------------------------------

    def load(self) -> None:
        """The alerts a previous daemon left in the store (none, or unreadable: start afresh, and say so)."""
        raw = self.store.get_state(STATE_KEY)
        if not raw:
            return
        try:
            alerts = [Alert.from_json(a) for a in json.loads(raw)["alerts"]]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("alert state in the store is unreadable, starting afresh: %s", exc)
            return
        # Resent at once (sent_at forgotten): Alertmanager hears from the new daemon without waiting
        # a resend interval, and takes the same labels and startsAt as the alert it has, not a new one.
        self.alerts = {a.key: replace(a, sent_at={}) for a in alerts}
        self._persisted = self._signature()

    def _signature(self) -> str:
        """What must survive a restart: the alerts and which version each Alertmanager has (not when)."""
        rows = [{**a.to_json(), "sent_at": {}} for a in sorted(self.alerts.values(), key=lambda a: a.key)]
        return json.dumps({"alerts": rows}, sort_keys=True)

    def _persist(self) -> None:
        sig = self._signature()
        if sig == self._persisted:
            return
        state = json.dumps({"alerts": [a.to_json() for a in self.alerts.values()]}, sort_keys=True)
        self.store.set_state(STATE_KEY, state)
        self._persisted = sig

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self) -> list[SloStatus]:
        """One evaluation: SLO states to /metrics, alerts fired, refreshed and resolved, state saved."""
        t0 = time.perf_counter()
        try:
            statuses = self._statuses()
            self.slo_metrics.update(self.slos, statuses)
            self.statuses = statuses
            with self._lock:
                self._step(statuses, self._wall())
            self._persist()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if self.metrics is not None:
                self.metrics.slo_evaluations.labels("false").inc()
            raise
        self.last_error = None
        if self.metrics is not None:
            self.metrics.slo_evaluations.labels("true").inc()
            self.metrics.slo_evaluation_seconds.set(time.perf_counter() - t0)
            self._count_alerts()
        return statuses

    def _statuses(self) -> list[SloStatus]:
        if not self.slos:
            return []
        if self.cfg.fresh_from_spans:
            return evaluate_fresh(self.store, self.slos, self._clock())
        return evaluate_many(self.store, self.slos, now=self._clock())

    def _step(self, statuses: Sequence[SloStatus], wall: float) -> None:
        seen: set[str] = set()
        memo: dict[str, CauseNote] = {}  # one diagnosis per breach and evaluation (page and ticket share it)
        for slo, status in zip(self.slos, statuses, strict=True):
            breach = ongoing_breach(status)
            for severity, tiers in firing_tiers(slo, status).items():
                key = alert_key(slo.name, severity)
                seen.add(key)
                prev = self.alerts.get(key)
                if prev is not None and prev.state == FIRING:
                    due = prev.diagnosed_at is None or wall - prev.diagnosed_at >= self.resend_s
                    if not due:  # the numbers and the cause are refreshed once per resend interval
                        continue
                cause = self._cause(key, slo, breach, memo)
                annotations = alert_annotations(
                    slo, status, severity, tiers, dashboard_url=self.dashboard_url, breach=breach, cause=cause
                )
                if prev is None or prev.state == RESOLVED:
                    # A new alert; a resolved one of the same SLO and severity is replaced (its resolve
                    # was sent; Alertmanager takes the new startsAt as a new alert).
                    self.alerts[key] = Alert(
                        key=key,
                        labels=alert_labels(slo, severity, tiers[0]),
                        annotations=annotations,
                        starts_at=wall,
                        breach_id=breach.id if breach else None,
                        diagnosed_at=wall,
                    )
                    log.warning("alert firing: %s (%s)", key, annotations.get("summary", ""))
                else:
                    changed = annotations != dict(prev.annotations)
                    self.alerts[key] = replace(
                        prev,
                        annotations=annotations,
                        breach_id=breach.id if breach else prev.breach_id,
                        diagnosed_at=wall,
                        version=prev.version + 1 if changed else prev.version,
                    )
        for key, alert in list(self.alerts.items()):
            if key in seen:
                continue
            if alert.state == FIRING:
                self.alerts[key] = resolve(alert, wall)
                self._causes.pop(key, None)
                log.warning("alert resolved: %s", key)
            elif self._expired(alert, wall):
                del self.alerts[key]

    def _expired(self, alert: Alert, wall: float) -> bool:
        """A resolved alert every Alertmanager has, past its retention."""
        assert alert.ends_at is not None
        told = all(alert.delivered.get(c.url) == alert.version for c in self.clients)
        return told and wall - alert.ends_at >= self.cfg.resolved_retention.total_seconds()

    def _cause(
        self, key: str, slo: SLO, breach: Breach | None, memo: dict[str, CauseNote]
    ) -> CauseNote | None:
        if breach is None:
            return self._causes.get(key)
        if breach.id in memo:
            self._causes[key] = memo[breach.id]
            return memo[breach.id]
        try:
            cause = cause_note(self._diagnose(self.store, breach, slo))
        except Exception as exc:  # a diagnosis that fails must not hold the page back
            log.warning("diagnosis of %s failed: %s", breach.id, exc)
            cause = CauseNote(note=f"not diagnosed ({type(exc).__name__}: {str(exc)[:200]})")
        self._causes[key] = memo[breach.id] = cause
        return cause

    def _count_alerts(self) -> None:
        assert self.metrics is not None
        counts = {(sev, state): 0 for sev in ("page", "ticket") for state in (FIRING, RESOLVED)}
        for a in self.alerts.values():
            counts[(a.severity, a.state)] = counts.get((a.severity, a.state), 0) + 1
        for (sev, state), n in counts.items():
            self.metrics.alerts.labels(sev, state).set(n)

    # -- delivery --------------------------------------------------------------------------------

    def deliver(self) -> None:
        """Send each Alertmanager what it has not got (and firing alerts due a resend)."""
        for client in self.clients:
            h = self.health[client.url]
            if time.monotonic() < h.next_try:
                continue
            wall = self._wall()
            with self._lock:
                due = [a for a in self.alerts.values() if self._due(a, client.url, wall)]
                payload = [to_payload(a, now=wall, valid_for_s=self.valid_for_s) for a in due]
            if self.metrics is not None:
                self.metrics.alerts_undelivered.labels(h.name).set(
                    sum(1 for a in self.alerts.values() if a.delivered.get(client.url) != a.version)
                )
            if not due:
                continue
            try:
                client.post(payload)
            except DeliveryError as exc:
                self._failed(client, h, exc)
                continue
            with self._lock:
                for a in due:
                    now_a = self.alerts.get(a.key)
                    if now_a is None or now_a.version != a.version:
                        continue  # changed meanwhile: the new version is still due
                    self.alerts[a.key] = replace(
                        now_a,
                        delivered={**now_a.delivered, client.url: a.version},
                        sent_at={**now_a.sent_at, client.url: wall},
                    )
            self._succeeded(client, h, len(due))
        self._persist()

    def _due(self, alert: Alert, url: str, wall: float) -> bool:
        if alert.delivered.get(url) != alert.version:
            return True
        return wall - alert.sent_at.get(url, 0.0) >= self.resend_s

    def _failed(self, client: AlertmanagerClient, h: TargetHealth, exc: DeliveryError) -> None:
        h.failures += 1
        h.ok = False
        h.last_error = str(exc)[:300]
        backoff = min(2.0 ** (h.failures - 1), _MAX_BACKOFF_S, max(self.resend_s, 1.0))
        h.next_try = time.monotonic() + backoff
        if h.failures == 1 or h.failures % 10 == 0:
            log.warning(
                "Alertmanager %s did not take the alerts (%d failure(s) in a row): %s",
                h.name,
                h.failures,
                exc,
            )
        if self.metrics is not None:
            self.metrics.alertmanager_up.labels(h.name).set(0)
            self.metrics.alert_delivery_errors.labels(h.name).inc()
            self.metrics.alerts_undelivered.labels(h.name).set(
                sum(1 for a in self.alerts.values() if a.delivered.get(client.url) != a.version)
            )

    def _succeeded(self, client: AlertmanagerClient, h: TargetHealth, sent: int) -> None:
        if h.failures:
            log.warning("Alertmanager %s takes alerts again", h.name)
        h.ok, h.failures, h.next_try, h.last_error = True, 0, 0.0, None
        h.last_success_unix = self._wall()
        if self.metrics is not None:
            self.metrics.alertmanager_up.labels(h.name).set(1)
            self.metrics.alerts_sent.labels(h.name).inc(sent)
            self.metrics.alertmanager_last_success.labels(h.name).set(h.last_success_unix)
            self.metrics.alerts_undelivered.labels(h.name).set(0)

    # -- the loop --------------------------------------------------------------------------------

    def run(self, stop: threading.Event, leads: Callable[[], bool] = lambda: True) -> None:
        """Evaluate every evaluation_interval and deliver between evaluations, until ``stop``.

        Only while ``leads()``: where collectors share a store, the leader alone evaluates and sends.
        A collector that (again) becomes leader first reads the alerts its predecessor left in the
        store, so the alerts go on with their labels and startsAt instead of firing anew."""
        interval = self.cfg.evaluation_interval.total_seconds()
        next_eval = time.monotonic()
        leading = True  # __init__ loaded the store's state
        while not stop.is_set():
            if not leads():
                leading = False
                stop.wait(0.5)
                continue
            if not leading:
                leading = True
                self.alerts = {}
                self._persisted = None
                self.load()
                next_eval = time.monotonic()
            if time.monotonic() >= next_eval:
                next_eval = time.monotonic() + interval
                try:
                    self.evaluate()
                except Exception:  # the next evaluation may succeed (a store briefly refusing reads)
                    log.exception("SLO evaluation failed")
            try:
                self.deliver()
            except Exception:
                log.exception("alert delivery failed")
            stop.wait(max(0.05, min(next_eval - time.monotonic(), 0.5)))

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def delivery_status(self) -> dict[str, Any]:
        """For the status file beside the store (the Collectors page): alerts and each Alertmanager's health."""
        with self._lock:
            alerts = list(self.alerts.values())
        return {
            "firing": sum(1 for a in alerts if a.state == FIRING),
            "alertmanagers": [
                {
                    "name": h.name,
                    "ok": h.ok,
                    "last_error": h.last_error,
                    "last_success_unix": h.last_success_unix,
                    "failures": h.failures,
                    "undelivered": sum(1 for a in alerts if a.delivered.get(url) != a.version),
                }
                for url, h in self.health.items()
            ],
            "evaluation_error": self.last_error,
        }

"""Alert delivery against a real Alertmanager (Debian's prometheus-alertmanager) notifying a webhook sink.

The breach is the demo's flash sale (ground truth: the api-gateway -> model-server link saturates,
bandwidth), replayed by evaluating the recommend-latency SLO at times inside and after it; what
Alertmanager is sent carries the wall clock, as a live daemon's alerts do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from support.alertmanager import WebhookSink, alertmanager
from support.demo import RULES, breach_for, truth
from support.exposition import metric_value
from support.servers import ServerProcess
from support.waiting import wait_until

from hopscope.alerting import STATE_KEY, AlertEvaluator, AlertmanagerClient, DeliveryError, alert_labels
from hopscope.collectors.selfmetrics import SelfMetrics
from hopscope.config import load_config
from hopscope.config.alerting import AlertingConfig, load_alerting_config
from hopscope.errors import ConfigError
from hopscope.slo import SLO, load_slos
from hopscope.slo.corrections import add_correction
from hopscope.store import Store

SLO_NAME = "recommend-latency"
RUNBOOK = "https://runbooks.example/recommend-latency"
DASHBOARD = "http://hopscope.example:8501"


class Clock:
    """Where the SLOs are evaluated: a time of the demo's history, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def store(demo_store: Path, tmp_path: Path) -> Iterator[Store]:
    """A copy of the demo store: the alert state the evaluators write stays in this test."""
    path = tmp_path / "store"
    shutil.copytree(demo_store, path)
    s = Store(path, create=False)
    yield s
    s.close()


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink()
    yield s
    s.close()


@pytest.fixture
def am(tmp_path: Path, sink: WebhookSink) -> Iterator[ServerProcess]:
    with alertmanager(tmp_path / "alertmanager", sink.url) as server:
        yield server


@pytest.fixture(scope="module")
def slo() -> SLO:
    """The demo's recommend-latency SLO, with a runbook the alerts must carry."""
    slos, _ = load_slos(RULES)
    s = next(s for s in slos if s.name == SLO_NAME)
    return replace(s, alerting=replace(s.alerting, annotations={"runbook_url": RUNBOOK}))


@pytest.fixture(scope="module")
def flash_sale(demo_store: Path) -> dict[str, Any]:
    """The flash sale's ground truth and the breach the SLO engine finds for it."""
    event = truth(demo_store, "flash-sale")
    return {"event": event, "breach": breach_for(demo_store, event, SLO_NAME)}


def _cfg(am: ServerProcess, **kw: Any) -> AlertingConfig:
    base: dict[str, Any] = {"alertmanagers": [am.url], "evaluation_interval": "1s", "resend_interval": "2s"}
    return AlertingConfig.model_validate({**base, **kw})


def _evaluator(store: Store, slo: SLO, cfg: AlertingConfig, clock: Clock, **kw: Any) -> AlertEvaluator:
    return AlertEvaluator(store, [slo], cfg, dashboard_url=DASHBOARD, clock=clock, **kw)


def _mid(flash_sale: dict[str, Any]) -> datetime:
    return flash_sale["breach"]["start"] + timedelta(minutes=15)


def _after(flash_sale: dict[str, Any]) -> datetime:
    return flash_sale["breach"]["end"] + timedelta(minutes=5)


def test_breach_pages_once_with_the_cause_and_the_incident_link_then_resolves(
    store: Store, am: ServerProcess, sink: WebhookSink, slo: SLO, flash_sale: dict[str, Any]
) -> None:
    clock = Clock(_mid(flash_sale))
    ev = _evaluator(store, slo, _cfg(am), clock)
    ev.evaluate()
    ev.deliver()
    wait_until(lambda: sink.alerts("firing", severity="page"), 20, "the page reaching the webhook")
    pages = sink.alerts("firing", severity="page")
    assert len(pages) == 1
    page = pages[0]
    event, breach = flash_sale["event"], flash_sale["breach"]
    assert page["labels"] | {"team": "recs"} == page["labels"]  # the SLO's own labels ride along
    assert {k: page["labels"][k] for k in ("alertname", "slo", "service", "severity")} == {
        "alertname": "RecommendLatencyBudgetBurn",
        "slo": SLO_NAME,
        "service": "api-gateway",
        "severity": "page",
    }
    assert (page["labels"]["long_window"], page["labels"]["short_window"]) == ("1h", "5m")
    ann = page["annotations"]
    assert ann["cause_hop"] == event["hop"] == "api-gateway->model-server"
    assert ann["cause_dimension"] == event["dimension"] == "bandwidth"
    assert ann["incident_url"] == f"{DASHBOARD}/incident?incident={breach['id']}"
    assert ann["runbook_url"] == RUNBOOK
    assert "api-gateway->model-server" in ann["summary"]
    assert "Top cause: api-gateway->model-server" in ann["description"]
    assert "Evidence: " in ann["description"] and "error budget left" in ann["description"]
    assert float(ann["burn_rate"]) > 13.44
    assert page["generatorURL"] == f"{DASHBOARD}/slo_report?slo={SLO_NAME}"

    clock.at = _after(flash_sale)
    ev.evaluate()
    ev.deliver()
    wait_until(lambda: sink.alerts("resolved", severity="page"), 20, "the resolve reaching the webhook")
    resolved = sink.alerts("resolved", severity="page")
    assert len(resolved) == 1 and resolved[0]["startsAt"] == page["startsAt"]
    assert resolved[0]["endsAt"] >= page["startsAt"]
    assert len(sink.alerts("firing", severity="page")) == 1, "one page for the breach"


def test_a_restart_mid_incident_sends_no_new_alert_and_loses_no_resolve(
    store: Store, am: ServerProcess, sink: WebhookSink, slo: SLO, flash_sale: dict[str, Any]
) -> None:
    clock = Clock(_mid(flash_sale))
    first = _evaluator(store, slo, _cfg(am), clock)
    first.evaluate()
    first.deliver()
    wait_until(lambda: sink.alerts("firing", severity="page"), 20, "the page reaching the webhook")
    starts = sink.alerts("firing", severity="page")[0]["startsAt"]
    first.close()

    # A new daemon while the breach goes on: the same alert, resent, not a new one.
    clock.at = _mid(flash_sale) + timedelta(minutes=20)
    second = _evaluator(store, slo, _cfg(am), clock)
    assert set(second.alerts) == set(first.alerts), "the alerts came back from the store"
    second.evaluate()
    second.deliver()
    assert second.health[am.url].ok, second.health[am.url].last_error
    assert second.alerts[f"{SLO_NAME}|page"].starts_at == first.alerts[f"{SLO_NAME}|page"].starts_at
    time.sleep(3)  # three group intervals: a new alert would have been notified by now
    assert len(sink.alerts("firing", severity="page")) == 1
    second.close()

    # The breach clears while no daemon runs: the next one still sends the resolve.
    clock.at = _after(flash_sale)
    third = _evaluator(store, slo, _cfg(am), clock)
    third.evaluate()
    third.deliver()
    wait_until(lambda: sink.alerts("resolved", severity="page"), 20, "the resolve after the restart")
    assert sink.alerts("resolved", severity="page")[0]["startsAt"] == starts
    assert len(sink.alerts("firing", severity="page")) == 1
    assert store.get_state(STATE_KEY), "the state is kept in the store"


class _Lead:
    """A collector's leadership, switched by the test."""

    def __init__(self, leads: bool) -> None:
        self.leads = leads

    def __call__(self) -> bool:
        return self.leads


def test_only_the_leader_sends_and_a_new_leader_goes_on_with_its_alerts(
    store: Store, am: ServerProcess, sink: WebhookSink, slo: SLO, flash_sale: dict[str, Any]
) -> None:
    clock = Clock(_mid(flash_sale))
    a_leads, b_leads = _Lead(True), _Lead(False)
    a = _evaluator(store, slo, _cfg(am), clock)
    b = _evaluator(Store(store.path, create=False), slo, _cfg(am), clock)
    stop = threading.Event()
    threads = [threading.Thread(target=e.run, args=(stop, lead)) for e, lead in ((a, a_leads), (b, b_leads))]
    for t in threads:
        t.start()
    try:
        wait_until(
            lambda: sink.alerts("firing", severity="page"), 20, "the leader's page reaching the webhook"
        )
        assert not b.alerts and not b.statuses, "the collector standing by evaluated nothing"
        starts = sink.alerts("firing", severity="page")[0]["startsAt"]

        a_leads.leads, b_leads.leads = False, True  # the leader dies; b takes the lease over
        wait_until(
            lambda: f"{SLO_NAME}|page" in b.alerts and b.health[am.url].last_success_unix, 20, "b sending"
        )
        assert b.alerts[f"{SLO_NAME}|page"].starts_at == a.alerts[f"{SLO_NAME}|page"].starts_at
        clock.at = _after(flash_sale)
        wait_until(lambda: sink.alerts("resolved", severity="page"), 20, "the new leader's resolve")
        assert sink.alerts("resolved", severity="page")[0]["startsAt"] == starts
        assert len(sink.alerts("firing", severity="page")) == 1, "the handover paged nobody again"
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        b.store.close()


def test_a_stored_correction_over_the_breach_raises_no_alert(
    store: Store, am: ServerProcess, sink: WebhookSink, slo: SLO, flash_sale: dict[str, Any]
) -> None:
    breach = flash_sale["breach"]
    add_correction(store, slo, breach["start"] - timedelta(hours=6), breach["end"], "load test, announced")
    ev = _evaluator(store, slo, _cfg(am), Clock(_mid(flash_sale)))  # fresh_from_spans: the default path
    statuses = ev.evaluate()
    ev.deliver()
    assert statuses[0].excluded_minutes > 0 and not statuses[0].firing
    assert not ev.alerts
    time.sleep(3)  # three group intervals: an alert would have been notified by now
    assert not sink.alerts("firing")


def test_an_alert_fired_while_alertmanager_is_down_arrives_once_it_is_back(
    store: Store, am: ServerProcess, sink: WebhookSink, slo: SLO, flash_sale: dict[str, Any]
) -> None:
    metrics = SelfMetrics()
    ev = _evaluator(store, slo, _cfg(am), Clock(_mid(flash_sale)), metrics=metrics)
    am.stop()
    stop = threading.Event()
    loop = threading.Thread(target=ev.run, args=(stop,), daemon=True)
    loop.start()
    try:
        wait_until(lambda: ev.health[am.url].failures >= 2, 30, "two failed deliveries")
        name = ev.health[am.url].name
        text = _exposition(metrics)
        assert metric_value(text, f'hopscope_alertmanager_up{{alertmanager="{name}"}}') == 0
        assert metric_value(text, f'hopscope_alerts_undelivered{{alertmanager="{name}"}}') >= 1
        assert metric_value(text, f'hopscope_alert_delivery_errors_total{{alertmanager="{name}"}}') >= 2
        status = ev.delivery_status()
        assert status["firing"] >= 1 and status["alertmanagers"][0]["ok"] is False
        assert status["alertmanagers"][0]["last_error"]
        assert not sink.notifications

        am.start()
        wait_until(lambda: sink.alerts("firing", severity="page"), 30, "the page after Alertmanager returned")
        assert len(sink.alerts("firing", severity="page")) == 1
        wait_until(lambda: ev.health[am.url].ok, 10, "the delivery marked healthy")
        text = _exposition(metrics)
        assert metric_value(text, f'hopscope_alertmanager_up{{alertmanager="{name}"}}') == 1
        assert metric_value(text, f'hopscope_alerts_undelivered{{alertmanager="{name}"}}') == 0
    finally:
        stop.set()
        loop.join(10)
        ev.close()


def _exposition(metrics: SelfMetrics) -> str:
    return generate_latest(metrics.registry).decode()


@pytest.mark.parametrize(
    ("table", "says"),
    [
        (
            {"alertmanagers": ["ftp://am:9093"]},
            "alerting.alertmanagers: ['ftp://am:9093']: 'ftp://am:9093' is not an http",
        ),
        ({"alertmanagers": ["http://bob:hunter2@am:9093"]}, "holds credentials"),
        ({"alertmanagers": ["http://am:9093/api/v2/alerts"]}, "write the base URL"),
        ({"alertmanagers": ["http://am:9093", "http://am:9093/"]}, "listed twice"),
        ({"alertmanagers": ["http://am:99999"]}, "is not a URL"),
        (
            {"evaluation_interval": "0s"},
            "alerting.evaluation_interval: '0s': '0s' is not a positive duration",
        ),
        ({"resend_interval": "soon"}, "alerting.resend_interval"),
        ({"username": "hopscope"}, "basic auth needs both username and password_env"),
        ({"bearer_token_env": "T", "username": "u", "password_env": "P"}, "either bearer_token_env or"),
        ({"ca_file": "ca.pem", "insecure_skip_verify": True}, "either ca_file or insecure_skip_verify"),
        (
            {"external_url": "hopscope:8501"},
            "alerting.external_url: 'hopscope:8501': 'hopscope:8501' is not an http",
        ),
        ({"alertmanager": ["http://am:9093"]}, "alerting.alertmanager: "),
        (
            {"alertmanagers": ["http://am:9093"], "bearer_token_env": "HS_TEST_UNSET_TOKEN"},
            "alerting.bearer_token_env: $HS_TEST_UNSET_TOKEN is not set",
        ),
        ({"ca_file": "/nonexistent/ca.pem"}, "alerting.ca_file: '/nonexistent/ca.pem': no such file"),
    ],
)
def test_bad_alerting_config_is_refused_naming_the_key(table: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_alerting_config(table, source="hopscope.toml", environ={})
    assert says in str(err.value)
    assert str(err.value).startswith("hopscope.toml: alerting")
    assert "hunter2" not in str(err.value)


def test_alerting_config_reads_from_hopscope_toml_with_secrets_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    toml = tmp_path / "hopscope.toml"
    toml.write_text(
        '[alerting]\nalertmanagers = ["https://am-1:9093", "https://am-2:9093/prefix/"]\n'
        'username = "hopscope"\npassword_env = "AM_PASSWORD"\nca_file = "ca.pem"\nresend_interval = "2m"\n'
    )
    cfg, _ = load_config(toml, environ={"AM_PASSWORD": "s3cret"})
    a = cfg.alerting
    assert a.alertmanagers == ["https://am-1:9093", "https://am-2:9093/prefix"]
    assert a.ca_file == tmp_path / "ca.pem", "relative to the config file"
    assert a.evaluation_interval == timedelta(seconds=30) and a.resend_interval == timedelta(minutes=2)
    assert a.dashboard_url("127.0.0.1", 8501) == "http://127.0.0.1:8501"
    with pytest.raises(ConfigError, match=r"alerting.password_env: \$AM_PASSWORD is not set"):
        load_config(toml, environ={})
    toml.write_text('[alerting]\nalertmanagers = "http://am:9093"\n')
    with pytest.raises(
        ConfigError, match="alerting.alertmanagers: 'http://am:9093': Input should be a valid list"
    ):
        load_config(toml, environ={})


def test_basic_auth_reaches_alertmanager_and_a_refusal_names_it_without_the_secret(
    am: ServerProcess,
) -> None:
    """Alertmanager takes basic auth it does not ask for; an unreachable one is reported redacted."""
    cfg = AlertingConfig(alertmanagers=[am.url], username="hopscope", password_env="AM_PW")
    client = AlertmanagerClient(am.url, cfg, environ={"AM_PW": "pa55"})
    client.post([])  # an empty list is a valid POST
    client.close()
    gone = AlertmanagerClient("http://127.0.0.1:9", cfg, environ={"AM_PW": "pa55"}, sleep=lambda _: None)
    with pytest.raises(DeliveryError) as err:
        gone.post([])
    assert "127.0.0.1:9" in str(err.value) and "pa55" not in str(err.value)
    gone.close()


def test_alerts_alertmanager_refuses_are_not_retried_within_the_delivery(am: ServerProcess) -> None:
    """Alertmanager answers 400 to an alert without labels: retrying cannot help, so it is not retried."""
    sleeps: list[float] = []
    client = AlertmanagerClient(am.url, AlertingConfig(alertmanagers=[am.url]), sleep=sleeps.append)
    with pytest.raises(DeliveryError) as err:
        client.post([{"labels": {}, "annotations": {}}])
    client.close()
    assert "HTTP 400" in str(err.value) and not err.value.retryable and sleeps == []


def test_alert_labels_are_valid_names_and_hopscopes_own_win(slo: SLO) -> None:
    odd = replace(slo, labels={"team-name": "recs", "9lives": "x", "slo": "spoofed"})
    tier = slo.alerting.active_tiers[0]
    labels = alert_labels(odd, "page", tier)
    assert labels["team_name"] == "recs" and labels["_9lives"] == "x" and labels["slo"] == SLO_NAME
    assert (labels["long_window"], labels["short_window"]) == ("1h", "5m")


def test_hopscope_collect_refuses_a_bad_alerting_section_in_one_line(tmp_path: Path) -> None:
    toml = tmp_path / "hopscope.toml"
    toml.write_text('[alerting]\nalertmanagers = ["http://bob:hunter2@am:9093"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPSCOPE_")}
    result = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", "collect", "--config", str(toml)],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert (
        "alerting.alertmanagers: ['http://***@am:9093']" in result.stderr
        and "holds credentials" in result.stderr
    )
    assert "hunter2" not in result.stderr

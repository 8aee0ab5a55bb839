"""One Alertmanager's API v2: ``POST /api/v2/alerts`` with a list of alerts, as Prometheus sends them.

Each POST has a timeout; a refused or failed one is retried with backoff within an overall deadline
where a retry can succeed (connection errors, 429, 5xx; Retry-After honoured), never on a 4xx that
says the alerts themselves are wrong. What is still undelivered after that is the evaluator's to
retry later (it keeps the latest state of every alert, not a queue of old ones).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from hopscope.config.alerting import AlertingConfig
from hopscope.errors import HopscopeError
from hopscope.redact import redact

RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


class DeliveryError(HopscopeError):
    """An Alertmanager did not take the alerts. ``retryable``: trying again later may succeed."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class AlertmanagerClient:
    """POSTs alerts to one Alertmanager (its base URL; ``/api/v2/alerts`` is added)."""

    def __init__(
        self,
        url: str,
        cfg: AlertingConfig,
        *,
        transport: httpx.BaseTransport | None = None,
        environ: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retries: int = 2,
        deadline_s: float | None = None,
    ) -> None:
        env = dict(os.environ) if environ is None else environ
        self.url = url
        self.name = redact(url)  # how /metrics, the log and the status file name it
        self._secrets: list[str] = []
        auth: httpx.Auth | None = None
        headers = {"User-Agent": "hopscope-alerting"}
        if cfg.username is not None and cfg.password_env is not None:
            password = env.get(cfg.password_env, "")
            auth = httpx.BasicAuth(cfg.username, password)
            self._secrets.append(password)
        if cfg.bearer_token_env is not None:
            token = env.get(cfg.bearer_token_env, "")
            headers["Authorization"] = f"Bearer {token}"
            self._secrets.append(token)
        verify: Any = True
        if cfg.insecure_skip_verify:
            verify = False
        elif cfg.ca_file is not None:
            verify = str(cfg.ca_file)
        self._timeout = cfg.timeout.total_seconds()
        self._deadline_s = deadline_s if deadline_s is not None else 2 * self._timeout
        self._retries = retries
        self._sleep = sleep
        self._client = httpx.Client(
            auth=auth, headers=headers, verify=verify, timeout=self._timeout, transport=transport
        )

    def post(self, alerts: Sequence[dict[str, Any]]) -> None:
        """Deliver ``alerts`` (Alertmanager API v2 objects); DeliveryError if it did not take them."""
        end = time.monotonic() + self._deadline_s
        delay = 0.5
        for attempt in range(self._retries + 1):
            try:
                r = self._client.post(f"{self.url}/api/v2/alerts", json=list(alerts))
            except httpx.HTTPError as exc:
                error = DeliveryError(f"{self.name}: {self._clean(str(exc)) or type(exc).__name__}")
                wait = delay
            else:
                if r.status_code < 300:
                    return
                retryable = r.status_code in RETRYABLE
                error = DeliveryError(
                    f"{self.name}: HTTP {r.status_code}: {self._clean(r.text[:300].strip())}",
                    retryable=retryable,
                )
                if not retryable:
                    raise error
                wait = _retry_after(r.headers.get("Retry-After"), delay)
            if attempt == self._retries or time.monotonic() + wait >= end:
                raise error
            self._sleep(wait)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self._client.close()

    def _clean(self, text: str) -> str:
        return redact(text, secrets=self._secrets)


def _retry_after(value: str | None, default: float) -> float:
    try:
        return min(max(float(value), 0.0), 30.0) if value else default
    except ValueError:  # an HTTP date: not worth parsing for a retry inside one delivery
        return default

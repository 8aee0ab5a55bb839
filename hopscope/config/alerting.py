"""Configuration of alert delivery: the ``[alerting]`` table of hopscope.toml.

``hopscope collect`` evaluates every span-sourced SLO each ``evaluation_interval`` (its state goes on
/metrics as ``hopscope_slo_*``) and, where ``alertmanagers`` are listed, sends the alert tiers that
fire to each of them (Alertmanager API v2, as Prometheus does). Secrets are never written here:
``password_env`` / ``bearer_token_env`` name the environment variables that hold them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hopscope.durations import parse_duration
from hopscope.errors import ConfigError
from hopscope.redact import redact


class AlertingConfig(BaseModel):
    """The ``[alerting]`` table."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    enabled: bool = Field(True, description="evaluate the SLOs inside `hopscope collect` (metrics, alerts)")
    alertmanagers: list[str] = Field(
        default_factory=list,
        description="Alertmanager base URLs (http[s]://host:9093[/prefix]); empty: metrics only, no delivery",
    )
    evaluation_interval: timedelta = Field(
        timedelta(seconds=30), description="how often the SLOs are evaluated"
    )
    resend_interval: timedelta = Field(
        timedelta(minutes=1),
        description="a firing alert is sent again this often (endsAt moves on; the diagnosis is refreshed)",
    )
    resolved_retention: timedelta = Field(
        timedelta(minutes=15), description="a resolved alert is still resent this long (Prometheus: 15m)"
    )
    external_url: str | None = Field(
        None, description="the dashboard as people reach it; default http://<dashboard address>:<port>"
    )
    timeout: timedelta = Field(timedelta(seconds=10), description="one POST to an Alertmanager")
    fresh_from_spans: bool = Field(
        True,
        description="read the minutes the rollup has not reached yet (its 2 min grace) from the raw spans, "
        "for entry-edge SLIs: pages come that much sooner",
    )
    username: str | None = Field(None, description="basic auth user; the password from password_env")
    password_env: str | None = Field(None, description="environment variable holding the basic auth password")
    bearer_token_env: str | None = Field(None, description="environment variable holding a bearer token")
    ca_file: Path | None = Field(None, description="PEM bundle to verify the Alertmanagers' certificates")
    insecure_skip_verify: bool = Field(False, description="do not verify TLS certificates (testing only)")

    @field_validator("evaluation_interval", "resend_interval", "resolved_retention", "timeout", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if isinstance(v, (str, int, float)) and not (isinstance(v, str) and v.startswith("P")):
            return parse_duration(v, bare_seconds=True)
        return v

    @field_validator("evaluation_interval", "resend_interval", "timeout")
    @classmethod
    def _positive(cls, v: timedelta) -> timedelta:
        if v.total_seconds() <= 0:
            raise ValueError("must be longer than 0 s")
        return v

    @field_validator("alertmanagers")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        out = []
        for raw in urls:
            url = raw.strip().rstrip("/")
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018  (raises on a port that is not a number in 0-65535)
            except ValueError as exc:
                raise ValueError(f"{redact(raw)!r} is not a URL ({exc})") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{redact(raw)!r} is not an http:// or https:// URL with a host")
            if parts.username or parts.password:
                raise ValueError(
                    f"{redact(raw)!r} holds credentials: set username and password_env (or bearer_token_env)"
                )
            if parts.query or parts.fragment:
                raise ValueError(f"{redact(raw)!r}: write the base URL only (no ?query or #fragment)")
            if parts.path.endswith("/api/v2/alerts"):
                raise ValueError(f"{redact(raw)!r}: write the base URL; /api/v2/alerts is added")
            out.append(url)
        if len(set(out)) != len(out):
            raise ValueError("an Alertmanager is listed twice")
        return out

    @field_validator("external_url")
    @classmethod
    def _external(cls, v: str | None) -> str | None:
        if v is None:
            return None
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v.strip().rstrip("/")

    @model_validator(mode="after")
    def _auth(self) -> AlertingConfig:
        if self.bearer_token_env is not None and (self.username is not None or self.password_env is not None):
            raise ValueError("set either bearer_token_env or username/password_env, not both")
        if (self.username is None) != (self.password_env is None):
            raise ValueError("basic auth needs both username and password_env")
        if self.insecure_skip_verify and self.ca_file is not None:
            raise ValueError("set either ca_file or insecure_skip_verify, not both")
        if self.resolved_retention < timedelta(0):
            raise ValueError("resolved_retention must not be negative")
        return self

    def dashboard_url(self, address: str, port: int) -> str:
        """Where the Incident links point: external_url, or the dashboard's own address."""
        return self.external_url or f"http://{address}:{port}"


def load_alerting_config(
    data: Mapping[str, Any] | None,
    *,
    source: str = "hopscope.toml",
    environ: Mapping[str, str] | None = None,
) -> AlertingConfig:
    """Validate an ``[alerting]`` table, and that the secrets and files it names are there.

    ConfigError names the source, the key and the bad value (never a secret)."""
    try:
        cfg = AlertingConfig.model_validate(dict(data or {}))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            key = ".".join(["alerting", *(str(p) for p in err["loc"])])
            value = err.get("input")
            shown = "" if isinstance(value, dict) or err["type"] == "missing" else f": {redact(repr(value))}"
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{source}: {key}{shown}: {msg}")
        raise ConfigError("; ".join(parts)) from None
    environ = os.environ if environ is None else environ
    for key in ("password_env", "bearer_token_env"):
        name = getattr(cfg, key)
        if name is not None and cfg.alertmanagers and not environ.get(name):
            raise ConfigError(f"{source}: alerting.{key}: ${name} is not set (or empty) in the environment")
    if cfg.ca_file is not None and not cfg.ca_file.is_file():
        raise ConfigError(f"{source}: alerting.ca_file: {str(cfg.ca_file)!r}: no such file")
    return cfg

"""hopscope.toml: one file, every key overridable by a HOPSCOPE_* environment variable.

Nested keys join with a double underscore: ``HOPSCOPE_STORE__PATH=/data/hs`` sets
``[store] path``, ``HOPSCOPE_STORE__CATALOG=postgres://hs@db/hs`` sets ``[store] catalog``, ``HOPSCOPE_DASHBOARD__PORT=8502`` sets ``[dashboard] port``.
Values are read as TOML values where they parse (``8502``, ``true``, ``["a"]``)
and as strings otherwise. Unknown keys are errors; every message names the key
and the bad value.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hopscope.catalog import Catalog, extend, load_catalog
from hopscope.config.alerting import AlertingConfig, load_alerting_config
from hopscope.config.collect import CollectConfig, load_collect_config
from hopscope.durations import parse_duration as _parse_duration
from hopscope.errors import ConfigError
from hopscope.store import (
    CATALOG_FILE,
    DEFAULT_MEMORY_LIMIT,
    Backend,
    S3Settings,
    StoreLocation,
    catalog_has_password,
    is_postgres,
    redact,
)

ENV_PREFIX = "HOPSCOPE_"
DEFAULT_CONFIG_FILE = Path("hopscope.toml")
_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def parse_duration(value: str | int | float) -> timedelta:
    """A duration of hopscope.toml: ``90s``, ``500ms``, ``5m``, ``6h``, ``28d``, ``2w``; a TOML number is seconds."""
    return _parse_duration(value, bare_seconds=True)


class _Section(BaseModel):
    # A token or name that looks like a number (HOPSCOPE_COLLECT__OTLP__BEARER_TOKEN=12345 reads as TOML 12345)
    # is still the string it was written as.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class RetentionConfig(_Section):
    spans: str = "2d"
    hop_minutes: str = "400d"
    samples: str = "400d"
    collector_runs: str = "30d"
    exemplars: str = Field("30d", description="slow and error traces kept past the spans window")

    @field_validator("*")
    @classmethod
    def _is_duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class S3Config(_Section):
    """DuckDB's S3 secret for ``[store] data_path = "s3://…"``; credentials only from the environment."""

    endpoint: str | None = Field(
        None, description="host:port of an S3-compatible server (MinIO, Ceph); unset: AWS"
    )
    region: str | None = None
    url_style: Literal["path", "vhost"] | None = Field(
        None, description="path for most S3-compatible servers"
    )
    use_ssl: bool = True
    key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str = "AWS_SESSION_TOKEN"


class StoreConfig(_Section):
    path: Path = Path("var/hopscope")
    catalog: str | None = Field(
        None,
        description="a shared catalog: postgres://user@host:5432/db or a libpq string; unset: catalog.sqlite in path",
    )
    data_path: str | None = Field(
        None, description="s3://bucket/prefix or a folder for the Parquet files; unset: path/data"
    )
    password_env: str = Field(
        "PGPASSWORD", description="the environment variable holding the catalog's password"
    )
    s3: S3Config = S3Config()
    retention: RetentionConfig = RetentionConfig()
    memory_limit: str = Field(
        DEFAULT_MEMORY_LIMIT,
        description="DuckDB memory per store connection, its caches included (e.g. 512MB)",
    )

    @field_validator("memory_limit")
    @classmethod
    def _is_size(cls, value: str) -> str:
        if not _SIZE.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not a size such as 512MB or 2GB")
        return value.strip()

    @field_validator("catalog")
    @classmethod
    def _is_catalog(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not is_postgres(value):
            raise ValueError("is not a postgres:// URL or a libpq string such as 'host=db dbname=hopscope'")
        if catalog_has_password(value):
            raise ValueError(
                "holds a password: put it in the environment ($PGPASSWORD or store.password_env)"
            )
        return value

    @field_validator("data_path")
    @classmethod
    def _is_data_path(cls, value: str | None) -> str | None:
        if value is not None and "://" in value and not value.startswith("s3://"):
            raise ValueError("is neither s3://bucket/prefix nor a folder")
        return value

    def backend(self) -> Backend | None:
        """Where the catalog and data live; None: both in the store folder (the embedded default)."""
        if self.catalog is None and self.data_path is None:
            return None
        s3 = S3Settings(**self.s3.model_dump())
        return Backend(self.catalog, self.data_path, password_env=self.password_env, s3=s3)

    def location(self) -> StoreLocation:
        return StoreLocation(self.path, self.backend())

    def location_of(self, where: str, data_path: str | None = None) -> StoreLocation:
        """A store named on a command line: a folder, or a PostgreSQL catalog (URL or libpq string),
        with this section's password variable and S3 settings; ``data_path`` for its data."""
        if is_postgres(where) and catalog_has_password(where):
            raise ConfigError(
                f"{redact(where)}: holds a password: put it in the environment (${self.password_env})"
            )
        if data_path is not None and "://" in data_path and not data_path.startswith("s3://"):
            raise ConfigError(f"--data-path: {data_path!r} is neither s3://bucket/prefix nor a folder")
        s3 = S3Settings(**self.s3.model_dump())
        if is_postgres(where):
            return StoreLocation(self.path, Backend(where, data_path, password_env=self.password_env, s3=s3))
        backend = Backend(None, data_path, password_env=self.password_env, s3=s3) if data_path else None
        return StoreLocation(Path(where), backend)

    def retention_timedeltas(self) -> dict[str, timedelta]:
        values = self.retention.model_dump()
        values.pop("exemplars")
        return {table: parse_duration(v) for table, v in values.items()}


class SloConfig(_Section):
    rules: Path = Path("slo_rules")


REFRESH_SECONDS = (0, 5, 10, 30, 60, 300)  # the dashboard's Auto-refresh choices; 0 = off


class DashboardConfig(_Section):
    address: str = "127.0.0.1"
    port: int = Field(8501, ge=1, le=65535)
    refresh_seconds: int = Field(
        5, description="the live pages' default auto-refresh (0 = off); 5 s: new spans show within 15 s"
    )
    user_header: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9-]+$",
        description="header an authenticating proxy sets (X-Forwarded-User, X-Auth-Request-User): requests "
        "without it get 403. Bind address to loopback then, so the proxy is the only way in",
    )
    frame_ancestors: list[str] = Field(
        default_factory=list,
        description="origins that may frame the dashboard (CSP frame-ancestors); empty: none may",
    )

    @field_validator("frame_ancestors")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        for source in value:
            quoted_or_split = any(c in source for c in " ;,\"'")  # one source, no policy injected
            if not source or (quoted_or_split and source != "'self'"):
                raise ValueError(
                    f"{source!r} is not one CSP source such as https://grafana.example.com or 'self'"
                )
        return value

    @field_validator("refresh_seconds")
    @classmethod
    def _is_choice(cls, value: int) -> int:
        if value not in REFRESH_SECONDS:
            raise ValueError(f"is not one of the dashboard's choices {', '.join(map(str, REFRESH_SECONDS))}")
        return value


class DiagnosisConfig(_Section):
    """A user's catalog entries and label map (checked by hopscope.catalog.extend, which names the entry)."""

    signals: list[dict[str, Any]] = Field(
        default_factory=list, description="[[diagnosis.signals]]: name plus catalog.yaml's fields"
    )
    map: list[dict[str, Any]] = Field(
        default_factory=list, description="[[diagnosis.map]]: match = {label = value}, service or edge"
    )


class Config(_Section):
    store: StoreConfig = StoreConfig()
    slo: SloConfig = SloConfig()
    dashboard: DashboardConfig = DashboardConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()
    # Validated on its own in load_config, whose messages redact secrets.
    collect: CollectConfig = Field(default_factory=CollectConfig)
    # Validated on its own too: it also checks the environment variables and files it names.
    alerting: AlertingConfig = Field(default_factory=AlertingConfig)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {'.'.join(path)} conflicts with another HOPSCOPE_* variable")
        node[path[-1]] = value
    return tree


# Paths a config file names are relative to the file's folder (as Prometheus reads its own), not to
# wherever the command runs; the same keys from HOPSCOPE_* variables are relative to the working folder.
_PATH_KEYS = (("store", "path"), ("store", "data_path"), ("slo", "rules"), ("alerting", "ca_file"))


def _relative_to(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    out = dict(data)
    for section, key in _PATH_KEYS:
        part = out.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if (
            isinstance(part, dict)
            and isinstance(value, str)
            and "://" not in value
            and not Path(value).is_absolute()
        ):
            out[section] = {**part, key: str(folder / part[key])}
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _describe(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after",))
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "{...}"
    if loc.endswith("catalog") and isinstance(value, str):  # never echo a password written there
        shown = repr(redact(value))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {shown}: {msg}"


def load_config(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> tuple[Config, str]:
    """Read hopscope.toml (if given or present), apply HOPSCOPE_* overrides, validate.

    Returns the config and a description of where it came from.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = "defaults"
    file = Path(path) if path is not None else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
    if file is not None:
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{file}: no such config file") from None
        except OSError as exc:  # a directory, no permission
            raise ConfigError(f"{file}: cannot read the config file: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        source = str(file)
        data = _relative_to(data, file.parent)
    overrides = _env_overrides(environ)
    if overrides:
        data = _merge(data, overrides)
        source += " + HOPSCOPE_* environment"
    collect_raw = data.pop("collect", None) or {}
    alerting_raw = data.pop("alerting", None) or {}
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    collect = load_collect_config(collect_raw, source=source)  # redacts secrets in its messages
    if not isinstance(alerting_raw, dict):
        raise ConfigError(f"{source}: alerting: {alerting_raw!r}: is not a table")
    alerting = load_alerting_config(alerting_raw, source=source, environ=environ)
    diagnosis_catalog(cfg, source)  # a bad signal or map entry is refused here, before any command runs
    return cfg.model_copy(update={"collect": collect, "alerting": alerting}), source


def diagnosis_catalog(cfg: Config, source: str = "hopscope.toml") -> Catalog:
    """The catalog a diagnosis uses: the packaged one, extended by ``[diagnosis]`` of the config (the
    same object for the same entries, so the diagnosis cache recognises it)."""
    d = cfg.diagnosis
    if not d.signals and not d.map:
        return load_catalog()
    return _extended(json.dumps([d.signals, d.map], sort_keys=True, default=str), source)


@lru_cache(maxsize=8)
def _extended(entries: str, source: str) -> Catalog:
    signals, links = json.loads(entries)
    return extend(load_catalog(), signals, links, source)


def configured_catalog(config: str | Path | None = None) -> Catalog:
    """diagnosis_catalog of hopscope.toml (``config``, else the working folder's) and HOPSCOPE_* variables."""
    cfg, source = load_config(config)
    return diagnosis_catalog(cfg, source)


def _first_error(exc: ValidationError) -> str:
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return _describe(exc.errors()[0]) + more


DEMO_STORE = Path("var/demo")
# How `hopscope dashboard` tells the Streamlit process what to show (dashboard/state.py reads them).
DASHBOARD_STORE_ENV = "HOPSCOPE_STORE"
DASHBOARD_RULES_ENV = "HOPSCOPE_SLO_RULES"
DASHBOARD_REFRESH_ENV = "HOPSCOPE_REFRESH_SECONDS"  # the default Auto-refresh, seconds (0 = off)
# A shared store's catalog and data path (Backend.to_json(): no secret; those stay in their variables).
DASHBOARD_BACKEND_ENV = "HOPSCOPE_STORE_BACKEND"


def dashboard_location(path: Path, environ: Mapping[str, str] | None = None) -> StoreLocation:
    """The store the dashboard's process shows: its folder, and the backend `hopscope dashboard` passed."""
    raw = (os.environ if environ is None else environ).get(DASHBOARD_BACKEND_ENV)
    try:
        backend = Backend.from_json(raw) if raw else None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"${DASHBOARD_BACKEND_ENV}: not a store backend: {exc}") from None
    return StoreLocation(path, backend)


def read_store(
    store: Path | None, rules: Path | None, config: str | Path | None = None
) -> tuple[StoreLocation, Path]:
    """read_paths, with where the store's catalog and data live: ``--store`` names an embedded store;
    without it, ``[store]`` of the config (its path, or its shared catalog and data path)."""
    path, rules = read_paths(store, rules, config)
    if store is not None:
        return StoreLocation(path), rules
    cfg, _ = load_config(config)
    return StoreLocation(path, cfg.store.backend()), rules


def read_location(store: Path | None, config: str | Path | None = None) -> StoreLocation:
    """The store a command that needs no SLO rules reads (the dashboard): the same rule as read_store."""
    if store is not None:
        return StoreLocation(store)
    cfg, _ = load_config(config)
    return StoreLocation(_store_path(cfg), cfg.store.backend())


def read_paths(store: Path | None, rules: Path | None, config: str | Path | None = None) -> tuple[Path, Path]:
    """The store and SLO rules a reading command uses.

    ``--store`` / ``--rules`` when given, else ``[store] path`` / ``[slo] rules`` of the config
    (hopscope.toml and HOPSCOPE_* variables). When neither sets the store and the collector's default
    store does not exist, the demo store (what ``make demo`` leaves) if it exists. Rules that do not exist
    are an error: without them every command would answer "no SLOs" and exit 0.
    """
    cfg, _ = load_config(config)
    if store is None:
        store = _store_path(cfg)
    rules = rules if rules is not None else cfg.slo.rules
    if not rules.exists():
        raise ConfigError(f"{rules}: no SLO rules here; pass --rules or set [slo] rules in hopscope.toml")
    return store, rules


def _store_path(cfg: Config) -> Path:
    """``[store] path``; when the config does not set it and the collector's default store does not
    exist, the demo store (what ``make demo`` leaves) if it exists. Every reading command and the
    dashboard use this one rule."""
    store = cfg.store.path
    unset = "path" not in cfg.store.model_fields_set
    shared = cfg.store.catalog is not None
    if unset and not shared and not (store / CATALOG_FILE).exists() and (DEMO_STORE / CATALOG_FILE).exists():
        return DEMO_STORE
    return store

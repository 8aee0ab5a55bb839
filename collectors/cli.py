"""`hopscope collect`: the typer command the main CLI mounts.

    from hopscope.collectors.cli import collect
    app.command("collect")(collect)

Reads the `[collect]` table of the config (the lead's loader when present) and runs the daemon.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from hopscope.collectors.runner import run_collect
from hopscope.config import load_config, parse_duration
from hopscope.config.alerting import AlertingConfig
from hopscope.config.collect import CollectConfig
from hopscope.slo import SLO, load_slos, slo_thresholds_ms
from hopscope.store import Backend

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the daemon takes from hopscope.toml."""

    collect: CollectConfig
    store_path: Path
    thresholds_ms: list[float]  # every SLO latency threshold: the rollup counts each exactly
    retention: dict[str, timedelta]
    exemplar_retention: timedelta
    memory_limit: str
    backend: Backend | None  # a shared catalog and data path; None: both in store_path
    slos: list[SLO]  # evaluated by the alert loop ([alerting])
    alerting: AlertingConfig
    dashboard_url: str  # where alerts link to (the Incident page)


def _load(config: Path | None) -> Settings:

    cfg, _ = load_config(config)
    slos, refused = load_slos(cfg.slo.rules) if Path(cfg.slo.rules).exists() else ([], [])
    for err in refused:  # the others still count; `hopscope slo check` shows the whole story
        log.warning("SLO spec refused, its thresholds are not rolled up: %s", err)
    return Settings(
        collect=cfg.collect,
        store_path=Path(cfg.store.path),
        thresholds_ms=[float(t) for t in slo_thresholds_ms(slos)],
        retention=cfg.store.retention_timedeltas(),
        exemplar_retention=parse_duration(cfg.store.retention.exemplars),
        memory_limit=cfg.store.memory_limit,
        backend=cfg.store.backend(),
        slos=slos,
        alerting=cfg.alerting,
        dashboard_url=cfg.alerting.dashboard_url(cfg.dashboard.address, cfg.dashboard.port),
    )


def collect(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="hopscope.toml (default: ./hopscope.toml if present)"),
    ] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="store directory (overrides the config)")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run every configured collector and the OTLP receiver; write to the store; roll up each minute;
    evaluate the SLOs ([alerting]): hopscope_slo_* on /metrics, alerts to Alertmanager."""

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore", "urllib3"):  # a line per probe or pull would drown the daemon's own
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    settings = _load(config)  # a ConfigError becomes one line and exit 2 in hopscope.cli
    raise typer.Exit(
        run_collect(
            store or settings.store_path,
            settings.collect,
            thresholds_ms=settings.thresholds_ms,
            store_options={
                "retention": settings.retention,
                "exemplar_retention": settings.exemplar_retention,
                "memory_limit": settings.memory_limit,
                # --store names an embedded store; the config's catalog and data path are for its own path
                "backend": None if store is not None else settings.backend,
            },
            slos=settings.slos,
            alerting=settings.alerting,
            dashboard_url=settings.dashboard_url,
        )
    )


if __name__ == "__main__":
    typer.run(collect)

"""`hopscope collect`: the typer command the main CLI mounts.

    from collectors.cli import collect
    app.command("collect")(collect)

Reads the `[collect]` table of the config (the lead's loader when present) and runs the daemon.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from collectors.config import CollectConfig


def _load(config: Path | None) -> tuple[CollectConfig, Path, list[float]]:
    """(collect config, store path, every SLO latency threshold) from hopscope.toml."""
    from hopscope.config import load_config  # noqa: PLC0415
    from hopscope.slo import load_slos, slo_thresholds_ms  # noqa: PLC0415

    cfg, _ = load_config(config)
    slos, _refused = load_slos(cfg.slo.rules) if Path(cfg.slo.rules).exists() else ([], [])
    return cfg.collect, Path(cfg.store.path), [float(t) for t in slo_thresholds_ms(slos)]


def collect(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="hopscope.toml (default: ./hopscope.toml if present)")] = None,
    store: Annotated[
        Path | None, typer.Option("--store", help="store directory (overrides the config)")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "INFO",
) -> None:
    """Run every configured collector and the OTLP receiver; write to the store; roll up each minute."""
    from collectors.runner import run_collect  # noqa: PLC0415

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg, store_path, thresholds = _load(config)  # a ConfigError becomes one line and exit 2 in hopscope.cli
    raise typer.Exit(run_collect(store or store_path, cfg, thresholds_ms=thresholds))


if __name__ == "__main__":
    typer.run(collect)

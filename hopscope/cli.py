"""The `hopscope` command line.

Domain errors (HopscopeError) become one line on stderr and exit code 2, here
and nowhere else.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from hopscope import __version__
from hopscope import dashboard as dashboard_package
from hopscope.cli_options import ConfigOpt
from hopscope.collectors.cli import collect
from hopscope.config import (
    DASHBOARD_BACKEND_ENV,
    DASHBOARD_REFRESH_ENV,
    DASHBOARD_RULES_ENV,
    DASHBOARD_STORE_ENV,
    DEMO_STORE,
    load_config,
    read_location,
)
from hopscope.config.collect import is_loopback
from hopscope.dashboard.access import FRAME_ANCESTORS_ENV, USER_HEADER_ENV
from hopscope.demo import ensure_demo, generate
from hopscope.diagnosis.cli import explain, incidents
from hopscope.errors import HopscopeError
from hopscope.lab import app as lab_app
from hopscope.report import report
from hopscope.slo.cli import app as slo_app
from hopscope.store import Store, StoreLocation, copy_store

app = typer.Typer(
    name="hopscope",
    help="SLO analytics for AI model serving: which hop is slow, and is it compute, bandwidth or memory?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

DEFAULT_SCENARIO = Path("sample_data/scenario.yaml")


@app.command()
def demo(
    store: Annotated[Path, typer.Option(help="where to keep the demo store")] = DEMO_STORE,
    scenario: Annotated[Path, typer.Option(help="scenario file to generate from")] = DEFAULT_SCENARIO,
    regenerate: Annotated[bool, typer.Option(help="generate again even if the store exists")] = False,
    port: Annotated[int, typer.Option(help="dashboard port")] = 8501,
    address: Annotated[str, typer.Option(help="dashboard address")] = "127.0.0.1",
    serve: Annotated[bool, typer.Option(help="serve the dashboard after generating")] = True,
) -> None:
    """Generate the demo store (a month of AI-serving telemetry) if missing or stale (its data ends over a day ago, or
    the scenario changed), then serve the dashboard."""

    if not scenario.exists():
        raise HopscopeError(f"{scenario}: no such scenario file")
    if regenerate:
        result = generate(scenario, store, progress=_progress)
        typer.echo(
            f"generated {store} in {result.seconds:.1f} s ({result.size_bytes / 1e6:.0f} MB)", err=True
        )
    else:
        ensure_demo(store, scenario, progress=_progress)
    if serve:
        _serve_dashboard(StoreLocation(store), port=port, address=address)


@app.command()
def dashboard(
    store: Annotated[
        Path | None, typer.Option(help="store to show (default: \\[store] path of the config)")
    ] = None,
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="port (default: \\[dashboard] port)")] = None,
    address: Annotated[str | None, typer.Option(help="address (default: \\[dashboard] address)")] = None,
) -> None:
    """Serve the dashboard over a store."""
    cfg, _ = load_config(config)
    where = read_location(store, config)  # the rule every reading command uses: var/demo after `make demo`
    if not where.exists():
        raise HopscopeError(f"{where}: no store here; run `hopscope demo` or `hopscope collect` first")
    _serve_dashboard(
        where,
        port=port or cfg.dashboard.port,
        address=address or cfg.dashboard.address,
        rules=cfg.slo.rules,
        refresh_seconds=cfg.dashboard.refresh_seconds,
        user_header=cfg.dashboard.user_header,
        frame_ancestors=cfg.dashboard.frame_ancestors,
    )


app.command(help="Run every configured collector and the OTLP receiver; the store's only writer.")(collect)
app.add_typer(slo_app, name="slo")
app.add_typer(lab_app, name="lab")
app.command()(incidents)
app.command()(explain)
app.command()(report)
store_app = typer.Typer(
    help="The store itself: copy it to another catalog or data path.", no_args_is_help=True
)
app.add_typer(store_app, name="store")


@store_app.command("copy")
def store_copy(
    source: Annotated[
        str, typer.Option("--from", help="the store to copy: a folder, or a postgres:// URL or libpq string")
    ],
    destination: Annotated[
        str, typer.Option("--to", help="a new store: a folder, or a postgres:// URL or libpq string")
    ],
    data_path: Annotated[
        str | None,
        typer.Option(
            "--data-path", help="where the new store's Parquet files go: s3://bucket/prefix or a folder"
        ),
    ] = None,
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Copy a store to a new one (embedded to shared, or back), then verify row counts per table and a
    checksum of hop_minutes; exit 2 if they differ. Passwords and S3 keys come from the environment
    (\\[store] password_env, \\[store.s3] of the config)."""
    cfg, _ = load_config(config)
    src = cfg.store.location_of(source)
    dst = cfg.store.location_of(destination, data_path)
    with Store.open(src, create=False) as a, Store.open(dst) as b:
        result = copy_store(a, b, progress=_progress)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for table, (n_src, n_dst) in result.rows.items():
            typer.echo(f"{'ok ' if n_src == n_dst else 'BAD'} {table:<15} {n_src:>12,} -> {n_dst:>12,} rows")
        same = "equal" if result.checksum[0] == result.checksum[1] else "DIFFERENT"
        typer.echo(
            f"hop_minutes checksum {same}; {result.seconds:.1f} s: {result.source} -> {result.destination}"
        )
    if not result.ok:
        raise HopscopeError(f"{result.destination}: the copy differs from {result.source} (see above)")


@app.command()
def version() -> None:
    """Print hopscope's version."""
    typer.echo(f"hopscope {__version__}")


def _progress(step: str, fraction: float) -> None:
    width = 30
    done = int(width * max(0.0, min(1.0, fraction)))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {fraction * 100:3.0f}% {step:<40}")
    if fraction >= 1.0:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _serve_dashboard(
    store: StoreLocation,
    *,
    port: int,
    address: str,
    rules: Path | None = None,
    refresh_seconds: int | None = None,
    user_header: str | None = None,
    frame_ancestors: Sequence[str] = (),
) -> None:
    """Run Streamlit on the dashboard; the store, rules and default refresh travel as environment variables
    (a shared store's catalog and data path too; its password and keys stay in the variables they are in)."""

    # serve.py: app.py behind dashboard/access.py (security headers; the proxy's user header if configured)
    app_file = Path(dashboard_package.__file__).parent / "serve.py"
    typer.echo(f"hopscope dashboard on http://{address}:{port}  (store: {store}; Ctrl-C to stop)", err=True)
    if not is_loopback(address):
        typer.echo(
            f"hopscope: warning: the dashboard listens on {address}, beyond this machine"
            + (
                f", and trusts the {user_header} header: anyone who reaches the port can set it; bind it to "
                "127.0.0.1 behind the proxy (docs/security.md)"
                if user_header
                else ", with no sign-in unless .streamlit/secrets.toml configures Streamlit's login: put a "
                "proxy that authenticates in front (docs/security.md)"
            ),
            err=True,
        )
    env = {**os.environ, DASHBOARD_STORE_ENV: str(store.path.resolve())}
    env[USER_HEADER_ENV] = user_header or ""
    env[FRAME_ANCESTORS_ENV] = " ".join(frame_ancestors)
    env.pop(DASHBOARD_BACKEND_ENV, None)
    if store.backend is not None:
        env[DASHBOARD_BACKEND_ENV] = store.backend.to_json()
    if rules is not None and rules.exists():  # else the dashboard's own default (the repository's slo_rules)
        env[DASHBOARD_RULES_ENV] = str(rules.resolve())
    if refresh_seconds is not None:
        env[DASHBOARD_REFRESH_ENV] = str(refresh_seconds)
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app_file),
        "--server.port", str(port), "--server.address", address,
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    # Streamlit takes this process's place: a SIGTERM (systemd, docker stop, a test) reaches the server
    # itself, which frees the port; a child under a parent that exits on the signal kept it.
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, cmd, env)


def main() -> None:
    """Console entry point: one line on stderr and exit 2 for domain errors and for bad command lines
    (typer would draw the latter in a box of six lines)."""
    try:
        code = app(standalone_mode=False, prog_name="hopscope")
    except HopscopeError as exc:
        typer.echo(f"hopscope: error: {exc}", err=True)
        raise SystemExit(2) from None
    except typer.Exit as exc:  # --help, no arguments
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C (click's standalone mode would have caught it)
        typer.echo("hopscope: interrupted", err=True)
        raise SystemExit(130) from None
    except typer.TyperException as exc:  # an unknown option, a bad value, a missing argument
        ctx = getattr(exc, "ctx", None)
        if (
            ctx is not None and not exc.format_message()
        ):  # no arguments: the command's help, as typer shows it
            typer.echo(ctx.get_help())
            raise SystemExit(2) from None
        where = f"{ctx.command_path}: " if ctx is not None else ""
        typer.echo(f"hopscope: error: {where}{exc.format_message()} (see --help)", err=True)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

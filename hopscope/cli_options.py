"""Options shared by the reading commands (incidents, explain, report, slo): where the store and rules are.

Brackets in help texts are escaped: typer renders help as Rich markup, which would swallow ``[store]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hopscope.errors import HopscopeError

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store",
        help="Store folder (default: \\[store] path of the config; without one var/hopscope, or the demo "
        "store var/demo when only it exists).",
    ),
]
RulesOpt = Annotated[
    Path | None,
    typer.Option(
        "--rules", help="SLO rules folder or file (default: \\[slo] rules of the config: slo_rules)."
    ),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="hopscope.toml (default: ./hopscope.toml if present).")
]


def write_output(path: Path, text: str) -> None:
    """Write a command's output file; a folder that is missing, a directory or a full disk is one clear line."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise HopscopeError(f"{path}: cannot write: {exc.strerror or exc}") from None

"""What the testbed's harnesses (the soak, the lab) share: where a run works, and its progress lines."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def workdir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """``keep`` (made if missing, left afterwards), or a temporary folder removed at the end."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def say_stderr(line: str) -> None:
    """A progress line on stderr, at once."""
    print(line, file=sys.stderr, flush=True)

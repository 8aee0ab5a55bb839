"""Worker processes for the store's multi-process tests:
`python tests/store_worker.py ROLE STORE OUT [SECONDS [BACKEND]]` (BACKEND: Backend.to_json(), or empty).

Roles: writer (append a batch every 100 ms, log each committed batch), reader (count in a loop),
maintainer (maintain() in a loop), crasher (append as fast as it can until killed).
Every process appends its errors to OUT as JSON lines and exits 0 either way.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa

from hopscope.store import Backend, Store

BATCH = 50
T0 = datetime(2026, 1, 1)


def batch(i: int) -> pa.Table:
    return pa.table(
        {
            "ts": pa.array([T0 + timedelta(seconds=i)] * BATCH, pa.timestamp("us")),
            "metric": [f"batch-{i}"] * BATCH,
            "value": [float(j) for j in range(BATCH)],
            "source": ["test"] * BATCH,
        }
    )


def main() -> None:
    role, store_path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    backend = Backend.from_json(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] else None
    log = out.open("a", buffering=1)

    def record(**kw: object) -> None:
        log.write(json.dumps({"role": role, **kw}) + "\n")

    store = Store(store_path, backend=backend)
    deadline = time.monotonic() + seconds
    i = 0
    while role == "crasher" or time.monotonic() < deadline:
        try:
            if role in ("writer", "crasher"):
                store.append("samples", batch(i))
                record(committed=i)
                i += 1
                if role == "writer":
                    time.sleep(0.1)
            elif role == "reader":
                n = store.query("SELECT count(*) AS n, count(DISTINCT metric) AS b FROM samples").to_pylist()[
                    0
                ]
                record(count=n["n"], batches=n["b"])
            elif role == "maintainer":
                store.maintain(retention=False)
                time.sleep(0.2)
        except Exception as exc:  # noqa: BLE001 - every error is a finding for the test
            record(error=f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)
    if role == "reader":
        # The test creates OUT.writer-done once the writer has exited; count after that.
        done = out.with_suffix(".writer-done")
        wait_until = time.monotonic() + 120
        while not done.exists() and time.monotonic() < wait_until:
            time.sleep(0.05)
        n = store.query("SELECT count(*) AS n FROM samples").to_pylist()[0]
        record(final=n["n"])
    record(done=True)


if __name__ == "__main__":
    main()

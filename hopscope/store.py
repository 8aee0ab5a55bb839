"""The store: DuckLake tables (a catalog, Parquet data) driven by DuckDB.

The catalog is a SQLite file in WAL mode in the store's folder (the embedded default) or a
PostgreSQL database; the data is Parquet under the folder, or in another folder or an S3 bucket
(see Backend). This is the only module that knows the SQL dialect, the catalog and the retries.
Many processes may open the same store at once: one collector writes while dashboards, the CLI
and maintenance read and compact beside it.

    store = Store.open("var/demo")
    shared = Store("var/hopscope", backend=Backend("postgres://hs@db/hopscope", "s3://bucket/hs"))
    store.append("samples", arrow_table)
    df = store.query_df("SELECT metric, avg(value) FROM samples WHERE ts >= ? GROUP BY 1", [since])
    store.maintain()
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import util as importlib_util
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from hopscope.errors import StoreError
from hopscope.schema import TABLES, Table

if TYPE_CHECKING:  # pandas costs ~34 MB; the collector's write path never needs it
    import pandas as pd

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.sqlite"
DATA_DIR = "data"
LAKE = "lake"

# Errors a commit can meet under contention (an aborted transaction is what a lock
# met inside a DuckLake catalog write leaves behind); anything else is a real failure.
_RETRYABLE = (
    "database is locked",
    # DuckLake's "Transaction conflict - attempting to insert into table ... but another transaction has
    # deleted inlined data from it" (or "... delete from ... has inserted into it", "... flushed the
    # inlined data"): two writers of a shared store touched one table. The commit was refused whole, so
    # it is retried, and a retried append is never stored twice. Commits that merely raced for the next
    # snapshot id are retried inside DuckLake itself (ducklake_max_retry_count).
    "conflict",
    # A PostgreSQL catalog's serialization failures (two collectors updating one catalog row at once):
    # the transaction was rolled back whole, and PostgreSQL's own advice is to run it again.
    "could not serialize access",
    "deadlock detected",
    "busy",
    "Could not set lock",
    "SQLITE_BUSY",
    "transaction is aborted",
    # A reader that planned against files a concurrent maintenance slice just removed: planning the
    # query again reads the newest snapshot (seen once in a 15-minute soak, on the `state` table).
    "cannot open file",
)

# Several collectors starting at once on a new shared catalog all create DuckLake's tables, then the
# store's: PostgreSQL refuses all but one (`duplicate key value violates unique constraint
# "pg_type_typname_nsp_index"`), DuckLake all but one CREATE TABLE. Trying again finds the tables made.
_RETRYABLE_SETUP = ("duplicate key value violates unique constraint", "already exists")

DEFAULT_RETENTION: dict[str, timedelta] = {
    "spans": timedelta(days=2),
    "hop_minutes": timedelta(days=400),
    "samples": timedelta(days=400),
    "collector_runs": timedelta(days=30),
}
# Slow and error traces named as exemplars stay this long after the hot window.
DEFAULT_EXEMPLAR_RETENTION = timedelta(days=30)
# Readers in other processes may still scan files a merge replaced: keep them this long.
DEFAULT_FILE_GRACE = timedelta(minutes=10)
# DuckDB's memory for one connection: query work and its caches. DuckLake keeps the footer of every
# data file it ever read (~40 KB for a file of spans) and gives that memory back only at this limit:
# a daemon that reads each new file once grew by ~25 MB/min at 900 spans/s, without end (issue 12).
DEFAULT_MEMORY_LIMIT = "256MB"

_PARTITIONED = ("spans", "hop_minutes", "samples")
_LAYOUT_KEY = "store.layout"
_LAYOUT_VERSION = "3: parquet v2, spans sorted by service, start_time, 8 MB target files"
# One merge operation reads about this much: the slices of a busy day's store stay well under a second.
TARGET_FILE_BYTES = 8 << 20
# Only files under this size are merged. A merge's output compresses better than its inputs (sorted),
# so it lands at 2-4 MB; were it a candidate again, every operation would rewrite the last one's output
# (measured: 102 slices of ~1 s instead of 17 of ~0.35 s on a day of 4.4M spans, benchmarks/maintenance.py).
MERGE_CANDIDATE_BYTES = TARGET_FILE_BYTES // 4


def _extension_path(module: str, name: str) -> str | None:
    """Path of a DuckDB extension binary shipped in a PyPI wheel (duckdb-extension-*)."""
    spec = importlib_util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(root.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension"))
    if not found:
        found = sorted(root.glob(f"extensions/*/{name}.duckdb_extension"))
    return str(found[-1]) if found else None


def _is_retryable(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker.lower() in text.lower() for marker in _RETRYABLE)


# What an operator can act on, recognised in the messages of SQLite, DuckDB and the OS.
_CAUSES = (
    ("disk full", ("no space left on device", "database or disk is full", "disk is full", "sqlite_full")),
    (
        "read-only",
        ("readonly database", "read-only file system", "permission denied", "sqlite_readonly"),
    ),
    ("locked", ("database is locked", "sqlite_busy", "could not set lock")),
)


# A PostgreSQL catalog's own conditions (libpq's messages, as the postgres extension passes them on).
_POSTGRES_CAUSES = (
    (
        "auth failed",
        ("password authentication failed", "no password supplied", "authentication failed", 'role "'),
    ),
    ("no such database", ('database "',)),
    (
        "cannot connect",
        (
            "connection refused",
            "could not translate host name",
            "unable to connect to postgres",
            "timeout expired",
            "server closed the connection",
            "no route to host",
        ),
    ),
)


def failure_cause(
    exc: BaseException, path: str | Path | None = None, *, postgres: bool = False
) -> str | None:
    """'disk full', 'read-only' or 'locked' (a SQLite catalog), 'auth failed' or 'cannot connect'
    (``postgres``: a PostgreSQL catalog) where the error (or one it was raised from) says so.

    SQLite reports a full disk met while growing its WAL index as a plain "disk I/O error", and the
    writes after it find the connection that error closed: with the store's ``path``, either error on a
    filesystem with (almost) no space left is "disk full"."""
    causes = _POSTGRES_CAUSES if postgres else _CAUSES
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        for cause, markers in causes:
            if any(m in text for m in markers):
                return cause
        after_full = "i/o error" in text or "connection already closed" in text
        if not postgres and path is not None and after_full and _nearly_full(path):
            return "disk full"
        seen = seen.__cause__ or seen.__context__
    return None


def _nearly_full(path: str | Path) -> bool:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return False
    return usage.free < max(1 << 20, usage.total // 1000)


def _sql_text(value: str) -> str:
    """A SQL string literal: for the few statements (ATTACH) that take no bound parameters."""
    return "'" + value.replace("'", "''") + "'"


def _check_writable(path: Path, catalog: Path) -> None:
    """A reader needs to write beside the catalog (SQLite's WAL index): say "read-only", not "no store"."""
    if not os.access(path, os.W_OK) or not os.access(catalog, os.W_OK):
        raise StoreError(
            f"{path}: the store is read-only (its folder or {CATALOG_FILE} is not writable); "
            "SQLite's WAL needs write access beside the catalog even to read",
            cause="read-only",
        )


# -- where a store lives -------------------------------------------------------------------------

_POSTGRES_URL = ("postgres://", "postgresql://")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)([^@\s]*)(@)")
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def is_postgres(catalog: str) -> bool:
    """A PostgreSQL catalog: a postgres:// URL or a libpq keyword string (``host=… dbname=…``)."""
    return catalog.startswith(_POSTGRES_URL) or "=" in catalog


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """``text`` with passwords (URL userinfo, ``password=`` keywords) and the given secrets replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(r"\1***\3", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


def catalog_has_password(catalog: str) -> bool:
    return redact(catalog) != catalog


@dataclass(frozen=True, slots=True)
class S3Settings:
    """DuckDB's S3 secret, as the store creates it; credentials are read from the named variables."""

    endpoint: str | None = None  # host:port of an S3-compatible server; None: AWS
    region: str | None = None
    url_style: str | None = None  # "path" (most S3-compatible servers) or "vhost"
    use_ssl: bool = True
    key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str = "AWS_SESSION_TOKEN"


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a store's catalog and data live when not both in its folder.

    No secret is held here (it travels to the dashboard's process and into cache keys): the
    catalog's password and the S3 credentials are read from the named environment variables
    when the store connects."""

    catalog: str | None = None  # postgres://… or a libpq string; None: catalog.sqlite in the store folder
    data_path: str | None = None  # s3://bucket/prefix or a folder; None: data/ beside a SQLite catalog,
    # the path recorded in a PostgreSQL catalog
    password_env: str = "PGPASSWORD"
    s3: S3Settings = S3Settings()

    @property
    def postgres(self) -> bool:
        return self.catalog is not None and is_postgres(self.catalog)

    @property
    def remote_data(self) -> bool:
        return self.data_path is not None and self.data_path.startswith("s3://")

    def describe(self) -> str:
        """The catalog and data path for messages, passwords redacted."""
        catalog = redact(self.catalog) if self.catalog else "catalog.sqlite"
        return f"{catalog}" + (f" + {self.data_path}" if self.data_path else "")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Backend:
        raw = json.loads(text)
        return cls(**{**raw, "s3": S3Settings(**raw.get("s3", {}))})

    def secrets(self, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
        env = os.environ if environ is None else environ
        names = (self.password_env, self.s3.key_id_env, self.s3.secret_env, self.s3.session_token_env)
        return tuple(v for v in (env.get(n, "") for n in names) if len(v) >= 3)

    def conninfo(self, environ: Mapping[str, str] | None = None) -> str:
        """The libpq connection string with the password from ``password_env`` added (libpq itself
        reads only PGPASSWORD)."""
        assert self.catalog is not None
        password = (os.environ if environ is None else environ).get(self.password_env)
        if not password or self.password_env == "PGPASSWORD":
            return self.catalog
        if self.catalog.startswith(_POSTGRES_URL):
            sep = "&" if "?" in self.catalog else "?"
            return f"{self.catalog}{sep}password={quote(password, safe='')}"
        escaped = password.replace("\\", "\\\\").replace("'", "\\'")
        return f"{self.catalog} password='{escaped}'"

    def s3_secret_sql(self, environ: Mapping[str, str] | None = None) -> str:
        """CREATE SECRET for the data path's bucket, or for any bucket where the data path is the one a
        shared catalog recorded (no bound parameters there: literals, quotes doubled)."""
        env = os.environ if environ is None else environ
        parts = ["TYPE s3", f"USE_SSL {'true' if self.s3.use_ssl else 'false'}"]
        if self.remote_data and self.data_path:
            parts.append(
                f"SCOPE {_sql_text('s3://' + self.data_path.removeprefix('s3://').split('/', 1)[0])}"
            )
        for key, value in (
            ("KEY_ID", env.get(self.s3.key_id_env)),
            ("SECRET", env.get(self.s3.secret_env)),
            ("SESSION_TOKEN", env.get(self.s3.session_token_env)),
            ("REGION", self.s3.region),
            ("ENDPOINT", self.s3.endpoint),
            ("URL_STYLE", self.s3.url_style),
        ):
            if value:
                parts.append(f"{key} {_sql_text(value)}")
        return f"CREATE OR REPLACE SECRET hopscope_data ({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A store as the reading commands and the dashboard name it: its folder, and where its catalog
    and data live when elsewhere."""

    path: Path
    backend: Backend | None = None

    @property
    def shared(self) -> bool:
        return self.backend is not None and self.backend.postgres

    def exists(self) -> bool:
        """Whether a store is there: a shared catalog is asked when the store opens."""
        return self.shared or (self.path / CATALOG_FILE).exists()

    def __str__(self) -> str:
        return self.backend.describe() if self.shared and self.backend else str(self.path)


CATALOG_DB = "catalog_db"


def catalog_database(backend: Backend) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with a shared store's PostgreSQL catalog database attached as ``catalog_db``
    (TYPE postgres), for the few statements hopscope runs there itself: ``postgres_execute`` and
    ``postgres_query`` (hopscope/leader.py keeps its lease there)."""
    if not backend.postgres:
        raise StoreError(f"{backend.describe()}: not a PostgreSQL catalog")
    con = duckdb.connect(
        ":memory:", config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
    )
    path = _extension_path("duckdb_extension_postgres_scanner", "postgres_scanner")
    try:
        if path:
            con.execute(f"LOAD '{path}'")
        else:
            con.execute("INSTALL postgres_scanner")
            con.execute("LOAD postgres_scanner")
        con.execute(f"ATTACH {_sql_text(backend.conninfo())} AS {CATALOG_DB} (TYPE postgres)")
    except duckdb.Error as exc:
        con.close()
        cause = failure_cause(exc, postgres=True)
        said = f"{cause}: " if cause else ""
        raise StoreError(
            f"{backend.describe()}: cannot open the catalog database: {said}{redact(str(exc), backend.secrets())}",
            cause=cause,
        ) from None
    return con


def utcnow() -> datetime:
    """Now, as the naive-UTC datetime every table stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def current_snapshot(store: Any) -> int | None:
    """The DuckLake snapshot id of `store` (anything with query()): every write moves it. None where it
    cannot be told (a plain DuckDB connection): callers then neither cache nor skip a re-read."""
    try:
        col = store.query("SELECT id FROM current_snapshot()").column(0)
    except Exception:  # noqa: BLE001 - not a DuckLake catalog
        return None
    return int(col[0].as_py()) if len(col) else None


def store_identity(store: Any, *, with_mtime: bool = False) -> tuple[Any, ...] | None:
    """The store's folder and catalog file (real path, device, inode), for cache keys; None: never cache.

    ``with_mtime`` adds the catalog's mtime, for caches whose entries must not survive a store
    regenerated in place (it may get the same inode and snapshot ids back); every write changes it.
    A shared store (PostgreSQL catalog) is its redacted catalog and data path; it has no mtime to add.
    """
    backend = getattr(store, "backend", None)
    if isinstance(backend, Backend) and backend.postgres:
        return None if with_mtime else ("shared", backend.describe())
    path = getattr(store, "path", None)
    if path is None:
        return None
    try:
        st = os.stat(os.path.join(path, CATALOG_FILE))
    except OSError:
        return None
    ident = (os.path.realpath(path), st.st_dev, st.st_ino)
    return (*ident, st.st_mtime_ns) if with_mtime else ident


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    flushed: int
    merged: bool
    expired_snapshots: int
    cleaned_files: int
    deleted_rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class Store:
    """One DuckLake store on disk; thread-safe; one per process is enough."""

    def __init__(
        self,
        path: str | Path,
        *,
        retention: Mapping[str, timedelta] | None = None,
        exemplar_retention: timedelta = DEFAULT_EXEMPLAR_RETENTION,
        file_grace: timedelta = DEFAULT_FILE_GRACE,
        inlining_rows: int = 200,
        commit_deadline_s: float = 30.0,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int | None = None,
        create: bool = True,
        backend: Backend | None = None,
    ) -> None:
        self.path = Path(path)
        self.backend = backend or Backend()
        self.retention = {**DEFAULT_RETENTION, **(retention or {})}
        self.exemplar_retention = exemplar_retention
        self.file_grace = file_grace
        self.commit_deadline_s = commit_deadline_s
        self.inlining_rows = inlining_rows
        self.memory_limit = memory_limit
        self.threads = threads  # DuckDB's worker threads; None: one per core
        self._create = create
        self._catalog = self.path / CATALOG_FILE
        self.conflicts_retried = 0  # commits refused for a conflict with another writer, then retried
        if self.backend.catalog is not None and not self.backend.postgres:
            raise StoreError(
                f"catalog {redact(self.backend.catalog)!r}: not a postgres:// URL or libpq string "
                "(leave it unset for the SQLite catalog in the store folder)"
            )
        if not self.backend.postgres:
            self._open_sqlite_catalog(create)
        elif create:  # the daemon's own files (status.json) stay in its folder
            self.path.mkdir(parents=True, exist_ok=True)
        if self.backend.data_path is None and not self.backend.postgres:
            (self.path / DATA_DIR).mkdir(parents=True, exist_ok=True)
        elif self.backend.data_path is not None and not self.backend.remote_data:
            Path(self.backend.data_path).mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by reconnect(): every thread's cursor of the old connection is stale
        self._con = self._connect()
        self._ensure_tables()
        if create:
            self._ensure_layout()

    @property
    def where(self) -> str:
        """The store, for messages: its folder, or its catalog and data path (passwords redacted)."""
        return self.backend.describe() if self.backend.postgres else str(self.path)

    @property
    def location(self) -> StoreLocation:
        return StoreLocation(self.path, self.backend if self.backend != Backend() else None)

    def _open_sqlite_catalog(self, create: bool) -> None:
        catalog = self._catalog
        if not catalog.exists() and not create:
            raise StoreError(
                f"{self.path}: no store here (missing {CATALOG_FILE}); run `hopscope demo` or `hopscope collect`"
            )
        if catalog.exists():
            _check_writable(self.path, catalog)
        if not create:
            self._check_catalog(catalog)  # a reader never turns a stray file into a new store
        self.path.mkdir(parents=True, exist_ok=True)
        self._set_wal(catalog)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, where: Any, **kwargs: Any) -> Store:
        """Open a store from a path, a StoreLocation or a loaded config (``config.store``)."""
        store_cfg = getattr(where, "store", None)
        if store_cfg is not None:
            kwargs.setdefault("retention", store_cfg.retention_timedeltas())
            kwargs.setdefault("memory_limit", store_cfg.memory_limit)
            kwargs.setdefault("backend", store_cfg.backend())
            return cls(store_cfg.path, **kwargs)
        if isinstance(where, StoreLocation):
            kwargs.setdefault("backend", where.backend)
            return cls(where.path, **kwargs)
        return cls(where, **kwargs)

    @staticmethod
    def _check_catalog(catalog: Path) -> None:
        """Refuse a catalog file that is not a DuckLake catalog (empty, truncated, another database)."""
        try:
            with sqlite3.connect(catalog.resolve().as_uri() + "?mode=ro", uri=True, timeout=5) as con:
                found = con.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'ducklake_metadata'"
                ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{catalog}: not a hopscope store catalog ({exc}); nothing was changed"
            ) from None
        if not found or not found[0]:
            raise StoreError(
                f"{catalog}: not a hopscope store catalog (no DuckLake tables); nothing was changed"
            )

    @staticmethod
    def _set_wal(catalog: Path) -> None:
        # WAL lets readers in other processes run beside the one writer.
        deadline = time.monotonic() + 10
        while True:
            try:
                with sqlite3.connect(catalog, timeout=5) as con:
                    mode = con.execute("PRAGMA journal_mode=WAL").fetchone()
                if mode and str(mode[0]).lower() == "wal":
                    return
            except sqlite3.OperationalError as exc:
                if time.monotonic() > deadline or not _is_retryable(exc):
                    raise StoreError(f"{catalog}: cannot put the catalog in WAL mode: {exc}") from exc
            except sqlite3.DatabaseError as exc:  # not a database at all (a corrupt or foreign file)
                raise StoreError(f"{catalog}: not a hopscope store catalog ({exc})") from None
            time.sleep(0.05)

    def _extensions(self) -> list[tuple[str, str]]:
        """The DuckDB extensions this store's catalog and data path need (module of the wheel, name)."""
        needed = [("duckdb_extension_postgres_scanner", "postgres_scanner")]
        if not self.backend.postgres:
            needed = [("duckdb_extension_sqlite_scanner", "sqlite_scanner")]
        if self.backend.remote_data or self.backend.postgres:  # a shared catalog may record an s3:// path
            needed.append(("duckdb_extension_httpfs", "httpfs"))
        return [*needed, ("duckdb_extension_ducklake", "ducklake")]

    def _connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(
            ":memory:",
            config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
        )
        for module, name in self._extensions():
            path = _extension_path(module, name)
            try:
                if path:
                    con.execute(f"LOAD '{path}'")
                else:  # no wheel installed: the signed build from DuckDB's repository
                    con.execute(f"INSTALL {name}")
                    con.execute(f"LOAD {name}")
            except duckdb.Error as exc:
                raise StoreError(
                    f"cannot load the DuckDB extension {name!r} ({path or 'INSTALL'}): {exc}"
                ) from exc
        if self.backend.remote_data or self.backend.postgres:
            # An S3 upload buffers one part: 800 GB / 10,000 parts by default, a 76 MiB block per file
            # written, which alone overran a 64 MB memory limit. Data files are ~8 MB: 6.4 MB parts.
            con.execute("SET GLOBAL s3_uploader_max_filesize = '64GB'")  # cursors are sessions of their own
            try:
                con.execute(self.backend.s3_secret_sql())
            except duckdb.Error as exc:
                raise StoreError(f"{self.where}: S3 settings refused: {self._redact(str(exc))}") from None
        # ATTACH takes no bound parameters: the paths go in as SQL string literals, quotes doubled.
        if self.backend.postgres:
            options = self._postgres_options(con)
            target = f"ducklake:postgres:{self.backend.conninfo()}"
        else:
            options = self._sqlite_options()
            target = f"ducklake:sqlite:{self._catalog}"
        self._retry(
            lambda: con.execute(
                f"ATTACH {_sql_text(target)} AS {LAKE} ({options}"
                f"DATA_INLINING_ROW_LIMIT {int(self.inlining_rows)})"
            ),
            what="attach",
            also=_RETRYABLE_SETUP,
        )
        con.execute(f"USE {LAKE}")
        try:
            con.execute(f"SET memory_limit = {_sql_text(self.memory_limit)}")
        except duckdb.Error as exc:
            raise StoreError(f"memory limit {self.memory_limit!r}: {exc}") from None
        if self.threads is not None:
            con.execute(f"SET threads = {int(self.threads)}")
        # Footers of immutable Parquet files are worth keeping: each query re-reads them otherwise.
        con.execute("SET parquet_metadata_cache = true")
        # Local data files are in the OS page cache already: a second copy is only memory. Remote ones are
        # not kept either: a daemon that reads each new file once would grow without end (issue 12).
        con.execute("SET enable_external_file_cache = false")
        return con

    def _sqlite_options(self) -> str:
        # The data lives beside the catalog unless data_path says otherwise; overriding the recorded path
        # makes a store movable (built in a temporary folder and renamed, copied to another machine).
        data = self.backend.data_path or str(self.path.resolve() / DATA_DIR)
        return f"DATA_PATH {_sql_text(data.rstrip('/') + '/')}, OVERRIDE_DATA_PATH true, "

    def _postgres_options(self, con: duckdb.DuckDBPyConnection) -> str:
        """A reader never turns an empty database into a new store; a new one needs a data path."""
        exists = self._retry(lambda: self._postgres_has_lake(con), what="connect to the catalog")
        if not exists and not self._create:
            raise StoreError(f"{self.where}: no store here (no DuckLake tables in the catalog database)")
        if self.backend.data_path is None:
            if not exists:
                raise StoreError(
                    f"{self.where}: a new shared store needs [store] data_path (e.g. s3://bucket/hopscope)"
                )
            return ""  # the data path the catalog recorded
        # No override: every host of a shared store must name the data path the catalog recorded
        # (DuckLake refuses another one), or its readers would look for files where none were written.
        return f"DATA_PATH {_sql_text(self.backend.data_path.rstrip('/') + '/')}, "

    def _postgres_has_lake(self, con: duckdb.DuckDBPyConnection) -> bool:
        attach = (
            f"ATTACH {_sql_text(self.backend.conninfo())} AS _hopscope_catalog (TYPE postgres, READ_ONLY)"
        )
        con.execute(attach)
        try:
            row = con.execute(
                "SELECT * FROM postgres_query('_hopscope_catalog', "
                "'SELECT count(*) FROM information_schema.tables WHERE table_name = ''ducklake_metadata''')"
            ).fetchone()
        finally:
            con.execute("DETACH _hopscope_catalog")
        return bool(row and row[0])

    def _redact(self, text: str) -> str:
        return redact(text, self.backend.secrets())

    def cause_of(self, exc: BaseException) -> str | None:
        """What an operator can act on in ``exc`` (see failure_cause), for this store's catalog."""
        if self.backend.postgres:
            return failure_cause(exc, postgres=True)
        return failure_cause(exc, self.path)

    def _ensure_tables(self) -> None:
        def create() -> None:
            cur = self._cursor()
            existing = {
                r[0]
                for r in cur.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE]
                ).fetchall()
            }
            missing = [t for t in TABLES.values() if t.name not in existing]
            if not missing:
                return
            cur.execute("BEGIN")
            try:
                for table in missing:
                    cur.execute(table.ddl())
                    if table.name in _PARTITIONED:
                        col = table.time_column
                        cur.execute(
                            f'ALTER TABLE "{table.name}" SET PARTITIONED BY (year({col}), month({col}), day({col}))'
                        )
                cur.execute("COMMIT")
            except BaseException:
                self._rollback_quietly()  # a refused COMMIT has ended the transaction already
                raise

        self._retry(create, what="create tables", also=_RETRYABLE_SETUP)

    def _ensure_layout(self) -> None:
        """How new data files are written; files already there change at their next merge.

        Parquet v2 stores timestamps DELTA-encoded: the 30-day raw-span SLO scan needs ~20% less CPU
        (2.5 -> 2.0 s, 1.73 -> 1.13 s cold) and the files are 28% smaller. Spans sorted by (service,
        start_time) let a scan for one service and a short window skip most row groups: BubbleUp's span
        reads took 267 -> 155 ms CPU (24 h) and 185 -> 99 ms (1 h). Measured on copies of the benchmark
        stores (benchmarks/slo_eval.py, benchmarks/diagnose.py)."""
        if self.get_state(_LAYOUT_KEY) == _LAYOUT_VERSION:
            return

        def run() -> None:
            cur = self._cursor()
            cur.execute(f"CALL {LAKE}.set_option('parquet_version', 2)")
            cur.execute(f"CALL {LAKE}.set_option('target_file_size', '{TARGET_FILE_BYTES >> 20}MiB')")
            cur.execute('ALTER TABLE "spans" SET SORTED BY ("service" ASC, "start_time" ASC)')

        self._retry(run, what="set the file layout")
        self.set_state(_LAYOUT_KEY, _LAYOUT_VERSION)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cur = getattr(self._local, "cur", None)
        if cur is None or getattr(self._local, "generation", -1) != self._generation:
            with self._lock:
                cur = self._con.cursor()
                self._local.generation = self._generation
            cur.execute(f"USE {LAKE}")
            self._local.cur = cur
        return cur

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def reconnect(self) -> None:
        """Close the DuckDB connection and open a new one on the same catalog.

        Closing ends every transaction this connection had open in the SQLite catalog, so a catalog
        lock that one of them leaked is released; cursors of the old connection are replaced on the
        next call of each thread."""
        with self._lock:
            old = self._con
        try:
            old.close()  # first: it ends the old transactions (the new connection may need their lock)
        except duckdb.Error as exc:  # closing a connection in a bad state: the new one is what matters
            log.debug("closing the old store connection: %s", exc)
        con = self._connect()
        with self._lock:  # swapped together: no thread tags a cursor of the old one with the new generation
            self._con = con
            self._generation += 1

    def clone(self) -> Store:
        """Another Store on the same files with the same settings and a connection of its own
        (the daemon's writer writes through one, its readers read through the other)."""
        return Store(
            self.path,
            retention=self.retention,
            exemplar_retention=self.exemplar_retention,
            file_grace=self.file_grace,
            inlining_rows=self.inlining_rows,
            commit_deadline_s=self.commit_deadline_s,
            memory_limit=self.memory_limit,
            threads=self.threads,
            create=False,
            backend=self.backend,
        )

    @contextmanager
    def deadline(self, at: float | None) -> Iterator[None]:
        """Bound this thread's retries inside the block by ``at`` (time.monotonic()); None: no new bound.
        Nested blocks keep the earlier deadline.

        The writer gives each job its own deadline: a span commit must end inside the client's patience."""
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = min((d for d in (previous, at) if d is not None), default=None)
        try:
            yield
        finally:
            self._local.deadline = previous

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- retries ---------------------------------------------------------------------------

    def _retry(self, fn: Any, *, what: str, also: Sequence[str] = ()) -> Any:
        """Run fn, retrying contention errors (and errors naming one of ``also``) with jittered backoff
        until the deadline."""
        deadline = time.monotonic() + self.commit_deadline_s
        bound = getattr(self._local, "deadline", None)
        if bound is not None:
            deadline = min(deadline, bound)
        delay = 0.01
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except (duckdb.Error, sqlite3.Error) as exc:
                self._rollback_quietly()
                retryable = _is_retryable(exc) or any(m in str(exc).lower() for m in also)
                if not retryable or time.monotonic() + delay > deadline:
                    cause = self.cause_of(exc)
                    said = f"{cause}: " if cause else ""
                    error = StoreError(
                        f"{self.where}: {what} failed after {attempt} attempt(s): {said}{self._redact(str(exc))}",
                        cause=cause,
                    )
                    error.refused = True  # the database refused, not the caller's data
                    raise error from exc
                if "conflict" in str(exc).lower():
                    self.conflicts_retried += 1
                log.debug("%s: retry %d after %s", what, attempt, self._redact(str(exc)))
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    def _rollback_quietly(self) -> None:
        # A failed statement can leave the cursor in an aborted transaction; clear it before retrying.
        cur = getattr(self._local, "cur", None)
        if cur is not None:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error:
                pass

    def release(self) -> None:
        """End what this thread's cursor left open: a result not read to its end (its autocommit
        transaction commits when the next statement starts), then any transaction left open (rolled
        back). The writer calls it after every job, so no catalog lock outlives the job."""
        cur = getattr(self._local, "cur", None)
        if cur is None or getattr(self._local, "generation", -1) != self._generation:
            return
        try:
            cur.execute("SELECT 1").fetchall()
        except duckdb.Error:
            pass
        self._rollback_quietly()

    def _in_transaction(self, statements: Any, *, what: str) -> Any:
        def run() -> Any:
            cur = self._cursor()
            cur.execute("BEGIN")
            try:
                result = statements(cur)
                cur.execute("COMMIT")
                return result
            except BaseException:
                self._rollback_quietly()
                raise

        return self._retry(run, what=what)

    # -- writing ---------------------------------------------------------------------------

    def conform(self, table: str, data: pa.Table | pd.DataFrame) -> pa.Table:
        """Check data against the table's columns and cast it; StoreError names the column."""
        spec = self._table(table)
        if type(data).__name__ == "DataFrame":
            data = pa.Table.from_pandas(data, preserve_index=False)
        if not isinstance(data, pa.Table):
            raise StoreError(f"{table}: expected an Arrow table or DataFrame, got {type(data).__name__}")
        extra = [n for n in data.column_names if n not in spec.column_names]
        if extra:
            raise StoreError(
                f"{table}: unknown column {extra[0]!r} (columns: {', '.join(spec.column_names)})"
            )
        arrays = []
        for col in spec.columns:
            if col.name not in data.column_names:
                if col.required:
                    raise StoreError(f"{table}.{col.name}: required column is missing")
                arrays.append(pa.nulls(data.num_rows, col.arrow))
                continue
            arr = data.column(col.name)
            if not _castable(arr.type, col.arrow):
                raise StoreError(f"{table}.{col.name}: has type {arr.type}, expected {col.arrow}")
            try:
                arr = pc.cast(arr, col.arrow, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise StoreError(
                    f"{table}.{col.name}: cannot convert {arr.type} to {col.arrow}: {exc}"
                ) from exc
            if col.required and arr.null_count:
                raise StoreError(f"{table}.{col.name}: {arr.null_count} null value(s) in a required column")
            arrays.append(arr)
        return pa.Table.from_arrays(arrays, schema=spec.arrow_schema)

    def append(self, table: str, data: pa.Table | pd.DataFrame, *, deadline: float | None = None) -> int:
        """Append rows atomically: all of them are committed, or none. Returns the row count.

        ``deadline`` (time.monotonic()) ends the retries early: past it, StoreError and nothing written."""
        arrow = self.conform(table, data)
        if arrow.num_rows == 0:
            return 0

        def insert(cur: duckdb.DuckDBPyConnection) -> int:
            cur.register("_hopscope_in", arrow)
            try:
                cur.execute(f'INSERT INTO "{table}" SELECT * FROM _hopscope_in')
            finally:
                cur.unregister("_hopscope_in")
            return int(arrow.num_rows)

        with self.deadline(deadline):
            return int(self._in_transaction(insert, what=f"append to {table}"))

    def replace(self, table: str, where: str, params: Sequence[Any], data: pa.Table | pd.DataFrame) -> int:
        """Delete the rows matching ``where`` and insert ``data`` in one transaction (idempotent rewrites)."""
        arrow = self.conform(table, data)

        def swap(cur: duckdb.DuckDBPyConnection) -> int:
            cur.execute(f'DELETE FROM "{table}" WHERE {where}', list(params))
            if arrow.num_rows:
                cur.register("_hopscope_in", arrow)
                try:
                    cur.execute(f'INSERT INTO "{table}" SELECT * FROM _hopscope_in')
                finally:
                    cur.unregister("_hopscope_in")
            return int(arrow.num_rows)

        return int(self._in_transaction(swap, what=f"replace in {table}"))

    def replace_range(
        self,
        table: str,
        start: datetime,
        end: datetime,
        data: pa.Table | pd.DataFrame,
        *,
        columns: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> int:
        """Rewrite one source's rows in [start, end] (inclusive) of the table's time column.

        ``columns`` and ``labels`` (map keys of a ``labels`` column) select whose rows: a
        re-pulled chunk replaces exactly what the same pull wrote before, nothing else.
        """
        spec = self._table(table)
        clauses = [f'"{spec.time_column}" >= ?', f'"{spec.time_column}" <= ?']
        params: list[Any] = [start, end]
        for name, value in (columns or {}).items():
            if name not in spec.column_names:
                raise StoreError(f"{table}: no column {name!r} to match on")
            clauses.append(f'"{name}" = ?')
            params.append(value)
        if labels:
            if "labels" not in spec.column_names:
                raise StoreError(f"{table}: has no labels to match on")
            for key, value in labels.items():
                clauses.append("labels[?] = ?")
                params.extend([key, value])
        return self.replace(table, " AND ".join(clauses), params, data)

    def delete(self, table: str, where: str, params: Sequence[Any]) -> int:
        self._table(table)

        def run(cur: duckdb.DuckDBPyConnection) -> int:
            row = cur.execute(f'DELETE FROM "{table}" WHERE {where}', list(params)).fetchone()
            return int(row[0]) if row else 0

        return int(self._in_transaction(run, what=f"delete from {table}"))

    # -- small key/value state -----------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        rows = self.query(
            "SELECT value FROM state WHERE key = ? ORDER BY updated DESC LIMIT 1", [key]
        ).to_pylist()
        return rows[0]["value"] if rows else None

    def set_state(self, key: str, value: str) -> None:
        row = pa.table({"key": [key], "value": [value], "updated": pa.array([utcnow()], pa.timestamp("us"))})
        self.replace("state", "key = ?", [key], row)

    # -- reading ---------------------------------------------------------------------------

    @contextmanager
    def read_snapshot(self) -> Iterator[None]:
        """Run this thread's queries inside the block in one read transaction: they all read one DuckLake
        snapshot (whatever a writer commits meanwhile), and each scan after the first skips part of
        the catalog work (~3 ms). Other threads' queries are not affected (one cursor per thread).

        Nested use, or a transaction that cannot start, runs the block's queries as usual."""
        cur = self._cursor()
        if getattr(self._local, "pinned", False):
            yield
            return
        try:
            cur.execute("BEGIN TRANSACTION")
        except duckdb.Error:
            yield
            return
        self._local.pinned = True
        try:
            yield
        finally:
            self._local.pinned = False
            self._rollback_quietly()  # read only: nothing to commit (a failed query ended it already)

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pa.Table:
        """Run one read query with bound parameters; returns Arrow.

        A timezone-aware datetime parameter is bound as the naive UTC time the tables store: DuckDB
        would bind it as TIMESTAMPTZ and convert every row of the column to compare (10M spans:
        1.2 s instead of 10 ms, and no file or row-group pruning)."""
        bound = _naive_params(params)

        def run() -> pa.Table:
            cur = self._cursor()
            return cur.execute(sql, bound).fetch_arrow_table()

        try:
            result = self._retry(run, what="query")
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {exc}") from exc
        return result if isinstance(result, pa.Table) else pa.Table.from_batches(result)

    def query_df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self.query(sql, params).to_pandas()

    def scan(self, table: str, batch_rows: int = 250_000) -> Iterator[pa.Table]:
        """Every row of ``table`` in chunks of at most ``batch_rows``, on a cursor of its own (one
        read snapshot), for copies too large to hold at once."""
        self._table(table)
        with self._lock:
            cur = self._con.cursor()
        try:
            cur.execute(f"USE {LAKE}")
            reader = cur.execute(f'SELECT * FROM "{table}"').fetch_record_batch(batch_rows)
            for batch in reader:
                yield pa.Table.from_batches([batch])
        finally:
            cur.close()

    def count(self, table: str) -> int:
        self._table(table)
        return int(self.query(f'SELECT count(*) AS n FROM "{table}"').column("n")[0].as_py())

    def time_range(self, table: str) -> tuple[datetime | None, datetime | None]:
        spec = self._table(table)
        row = self.query(
            f'SELECT min("{spec.time_column}") AS lo, max("{spec.time_column}") AS hi FROM "{table}"'
        ).to_pylist()[0]
        return row["lo"], row["hi"]

    def size_bytes(self) -> int:
        """Bytes on disk: the folder of an embedded store; the live data files a catalog lists elsewhere."""
        if not self.backend.postgres and not self.backend.remote_data:
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        rows = self._call(
            f"SELECT coalesce(sum(file_size_bytes + coalesce(delete_file_size_bytes, 0)), 0) "
            f"FROM ducklake_table_info('{LAKE}')",
            what="size",
        )
        return int(rows[0][0]) if rows else 0

    # -- maintenance -------------------------------------------------------------------------

    def maintain(self, now: datetime | None = None, *, retention: bool = True) -> MaintenanceReport:
        """Apply retention, flush inlined rows, merge small files, expire snapshots, delete old files.

        Runs every step of maintenance_steps() to the end on this thread. The daemon runs the same
        steps one slice at a time on its writer instead, between ingest writes."""
        t0 = time.monotonic()
        done: dict[str, int] = {}
        deleted: dict[str, int] = {}
        for step in self.maintenance_steps(now or utcnow(), retention=retention):
            for _ in range(_MAX_SLICES):
                result = step.run(self)
                done[step.kind] = done.get(step.kind, 0) + result.rows
                if step.kind == "retention" and step.table:
                    deleted[step.table] = deleted.get(step.table, 0) + result.rows
                if not result.more:
                    break
        return MaintenanceReport(
            flushed=done.get("flush", 0),
            merged=True,
            expired_snapshots=done.get("expire", 0),
            cleaned_files=done.get("cleanup", 0),
            deleted_rows=deleted,
            seconds=time.monotonic() - t0,
        )

    def maintenance_steps(self, now: datetime, *, retention: bool = True) -> list[MaintenanceStep]:
        """Maintenance as bounded slices, in order: retention (a day of one table per slice), flush of
        inlined rows (one table), merge (a few output files of one table), expire (a few hundred
        snapshots), clean up (the files replaced before the grace). Each slice is one short
        transaction that ends before run() returns: no cursor keeps a catalog lock between slices.
        A step whose result says `more` is run again for the rest."""
        steps: list[MaintenanceStep] = []
        if retention:
            for name, keep in self.retention.items():
                steps.append(
                    MaintenanceStep(f"retention {name}", "retention", name, _retention_slice(name, keep, now))
                )
        for name in TABLES:
            steps.append(MaintenanceStep(f"flush {name}", "flush", name, _flush_slice(name)))
        for name in TABLES:
            steps.append(MaintenanceStep(f"merge {name}", "merge", name, _merge_slice(name)))
        steps.append(MaintenanceStep("expire snapshots", "expire", None, _expire_slice))
        steps.append(MaintenanceStep("clean up files", "cleanup", None, _cleanup_slice))
        return steps

    def _call(self, sql: str, params: Sequence[Any] | None = None, *, what: str) -> list[tuple[Any, ...]]:
        """One maintenance statement, its result read to the end: a result left open (fetchone) keeps
        its autocommit transaction, and with it the catalog's write lock, until the cursor's next
        statement (that wedged the daemon at its first maintenance)."""
        cur = self._cursor()
        rows = self._retry(lambda: cur.execute(sql, list(params or [])).fetchall(), what=what)
        return list(rows)

    @staticmethod
    def _table(name: str) -> Table:
        try:
            return TABLES[name]
        except KeyError:
            raise StoreError(f"no table {name!r} (tables: {', '.join(TABLES)})") from None


# Enough for any store: a step that still says `more` after this many slices is left for the next cycle.
_MAX_SLICES = 10_000
# Slice sizes: each slice stays well under a second on this machine (benchmarks/soak.py reports them).
_MERGE_FILES_PER_SLICE = 2  # merge operations (output files) per slice
_EXPIRE_PER_SLICE = 500


@dataclass(frozen=True, slots=True)
class SliceResult:
    rows: int  # rows deleted or flushed, files merged or cleaned, snapshots expired
    more: bool = False  # run the step again: there is more of the same work


@dataclass(frozen=True, slots=True)
class MaintenanceStep:
    """One kind of maintenance on one table; run() does one bounded slice of it."""

    name: str
    kind: str  # retention | flush | merge | expire | cleanup
    table: str | None
    run: Callable[[Store], SliceResult]


def _retention_slice(name: str, keep: timedelta, now: datetime) -> Callable[[Store], SliceResult]:
    """Delete one day of rows older than the table's retention (the oldest day first).

    Each slice starts where the last one ended: rows the delete keeps on purpose (error spans and
    exemplar traces, kept 30 days) stay the oldest, and must not make the next slice the same day."""
    spec = TABLES[name]
    col = spec.time_column
    cutoff = now - keep
    done_upto: list[datetime] = []  # the upper bound of the last slice of this step

    def run(store: Store) -> SliceResult:
        if done_upto:
            oldest: datetime | None = done_upto[-1]
        else:
            oldest = store._call(f'SELECT min("{col}") FROM "{name}"', what=f"retention {name}")[0][0]
        if oldest is None or oldest >= cutoff:
            return SliceResult(0)
        upto = min(cutoff, oldest.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1))
        if name == "spans":
            # Past the hot window, keep the traces that rollups named as exemplars, and errors.
            exemplar_cutoff = now - max(store.exemplar_retention, keep)
            deleted = store.delete(
                name,
                "start_time < ? AND (start_time < ? OR (status_code <> 2 AND lower(hex(trace_id)) NOT IN "
                "(SELECT unnest(exemplars) FROM hop_minutes WHERE minute >= ?)))",
                [upto, exemplar_cutoff, exemplar_cutoff],
            )
        else:
            deleted = store.delete(name, f'"{col}" < ?', [upto])
        done_upto.append(upto)
        return SliceResult(deleted, more=upto < cutoff)

    return run


def _flush_slice(name: str) -> Callable[[Store], SliceResult]:
    def run(store: Store) -> SliceResult:
        rows = store._call(
            f"CALL ducklake_flush_inlined_data('{LAKE}', table_name => ?)", [name], what=f"flush {name}"
        )
        return SliceResult(sum(int(r[-1] or 0) for r in rows))

    return run


def _merge_slice(name: str) -> Callable[[Store], SliceResult]:
    def run(store: Store) -> SliceResult:
        rows = store._call(
            f"CALL ducklake_merge_adjacent_files('{LAKE}', ?, max_compacted_files => {_MERGE_FILES_PER_SLICE}, "
            f"max_file_size => {MERGE_CANDIDATE_BYTES})",
            [name],
            what=f"merge {name}",
        )
        processed = sum(int(r[2] or 0) for r in rows)
        created = sum(int(r[3] or 0) for r in rows)
        return SliceResult(processed, more=created >= _MERGE_FILES_PER_SLICE)

    return run


def _expire_slice(store: Store) -> SliceResult:
    grace = int(store.file_grace.total_seconds())
    ids = [
        int(r[0])
        for r in store._call(
            f"SELECT snapshot_id FROM ducklake_snapshots('{LAKE}') "
            f"WHERE snapshot_time < now() - to_seconds({grace}) "
            f"AND snapshot_id < (SELECT max(snapshot_id) FROM ducklake_snapshots('{LAKE}')) "
            f"ORDER BY snapshot_id LIMIT {_EXPIRE_PER_SLICE}",
            what="find snapshots to expire",
        )
    ]
    if not ids:
        return SliceResult(0)
    # Counted in SQL: the rows carry TIMESTAMP WITH TIME ZONE values, and fetching those into Python
    # needs pytz, which nothing here declares (found on a bare GPU machine).
    rows = store._call(
        f"SELECT count(*) FROM ducklake_expire_snapshots('{LAKE}', versions => ?::UBIGINT[])",
        [ids],
        what="expire snapshots",
    )
    return SliceResult(int(rows[0][0]) if rows else 0, more=len(ids) == _EXPIRE_PER_SLICE)


def _cleanup_slice(store: Store) -> SliceResult:
    grace = int(store.file_grace.total_seconds())
    rows = store._call(
        f"SELECT count(*) FROM ducklake_cleanup_old_files('{LAKE}', older_than => now() - to_seconds({grace}))",
        what="clean up files",
    )
    return SliceResult(int(rows[0][0]) if rows else 0)


# -- copying a store to another backend -----------------------------------------------------------------

COPY_BATCH_ROWS = 250_000  # rows per appended chunk: ~50 MB of spans in memory at once


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What `hopscope store copy` did: rows per table in the source and in the destination, and an
    order-independent checksum of hop_minutes on both sides."""

    source: str
    destination: str
    rows: dict[str, tuple[int, int]]  # table -> (source, destination)
    checksum: tuple[str, str]  # hop_minutes, source and destination
    seconds: float

    @property
    def ok(self) -> bool:
        return all(a == b for a, b in self.rows.values()) and self.checksum[0] == self.checksum[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.destination,
            "ok": self.ok,
            "tables": {t: {"source": a, "destination": b} for t, (a, b) in self.rows.items()},
            "hop_minutes_checksum": {"source": self.checksum[0], "destination": self.checksum[1]},
            "seconds": round(self.seconds, 2),
        }


def table_checksum(store: Store, table: str) -> str:
    """Sum of the hashes of every row: equal for equal contents, whatever the order or the files."""
    store._table(table)
    col = store.query(f'SELECT coalesce(sum(hash(t)::HUGEINT), 0)::VARCHAR AS h FROM "{table}" t').column("h")
    return str(col[0].as_py())


def copy_store(
    source: Store, destination: Store, *, progress: Callable[[str, float], None] | None = None
) -> CopyReport:
    """Copy every table of ``source`` into the empty store ``destination``, then verify the copy.

    Each chunk is one commit: a copy that fails midway leaves part of it, and the destination must be
    emptied (a new catalog database, or a new folder) before copying again."""
    t0 = time.monotonic()
    counts = {name: source.count(name) for name in TABLES}
    held = [n for n in TABLES if n != "state" and destination.count(n)]
    if held:
        raise StoreError(
            f"{destination.where}: not empty ({', '.join(held)} hold rows); copy into a new store"
        )
    total, done = max(1, sum(counts.values())), 0
    for name in TABLES:
        if name == "state":  # the destination wrote its own layout row when it was created: replace it
            destination.replace(name, "true", [], source.query(f'SELECT * FROM "{name}"'))
            done += counts[name]
            continue
        for chunk in source.scan(name, COPY_BATCH_ROWS):
            destination.append(name, chunk)
            done += chunk.num_rows
            if progress:
                progress(f"{name}", done / total)
    if progress:
        progress("verifying", 1.0)
    rows = {name: (counts[name], destination.count(name)) for name in TABLES}
    checksum = (table_checksum(source, "hop_minutes"), table_checksum(destination, "hop_minutes"))
    return CopyReport(source.where, destination.where, rows, checksum, time.monotonic() - t0)


def _naive(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _naive_params(params: Sequence[Any] | Mapping[str, Any] | None) -> Sequence[Any] | Mapping[str, Any]:
    """Bound parameters with aware datetimes as naive UTC (see Store.query)."""
    if params is None:
        return []
    if isinstance(params, Mapping):
        return {k: _naive(v) for k, v in params.items()}
    return [_naive(v) for v in params]


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    """Only lossless, same-family conversions: an int may become a float, a string never a number."""
    if src == dst or pa.types.is_null(src):
        return True
    if pa.types.is_dictionary(src):
        return _castable(src.value_type, dst)
    families = (
        (pa.types.is_integer, lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)),
        (pa.types.is_floating, pa.types.is_floating),
        (
            lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
            lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
        ),
        (
            lambda t: (
                pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            ),
            pa.types.is_binary,
        ),
        (pa.types.is_timestamp, pa.types.is_timestamp),
        (pa.types.is_boolean, pa.types.is_boolean),
    )
    for is_src, accepts in families:
        if is_src(src):
            return bool(accepts(dst))
    if (pa.types.is_list(src) or pa.types.is_large_list(src)) and pa.types.is_list(dst):
        return _castable(src.value_type, dst.value_type)
    if pa.types.is_map(src) and pa.types.is_map(dst):
        return _castable(src.key_type, dst.key_type) and _castable(src.item_type, dst.item_type)
    return False

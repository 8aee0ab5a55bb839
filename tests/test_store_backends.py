"""A shared store by configuration: a PostgreSQL catalog and an S3 data path, read by every command.

Real servers (tests/store_backends.py): a temporary PostgreSQL cluster and moto's S3-compatible server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from store_backends import PASSWORD_ENV, PostgresServer, S3Server, Stores

from hopscope.config import dashboard_location, load_config, read_store
from hopscope.errors import ConfigError, StoreError
from hopscope.store import Backend, Store, StoreLocation

ROOT = Path(__file__).resolve().parents[1]


def _env_for(backend: Backend) -> dict[str, str]:
    """HOPSCOPE_* variables that configure ``backend``, as an operator would set them."""
    assert backend.catalog and backend.data_path and backend.s3.endpoint
    return {
        "HOPSCOPE_STORE__CATALOG": backend.catalog,
        "HOPSCOPE_STORE__DATA_PATH": backend.data_path,
        "HOPSCOPE_STORE__PASSWORD_ENV": backend.password_env,
        "HOPSCOPE_STORE__S3__ENDPOINT": backend.s3.endpoint,
        "HOPSCOPE_STORE__S3__REGION": "us-east-1",
        "HOPSCOPE_STORE__S3__URL_STYLE": "path",
        "HOPSCOPE_STORE__S3__USE_SSL": "false",
    }


def test_environment_variables_configure_a_postgres_catalog_and_an_s3_data_path(tmp_path: Path) -> None:
    env = {
        "HOPSCOPE_STORE__CATALOG": "postgresql://hs@db.internal:5432/hopscope",
        "HOPSCOPE_STORE__DATA_PATH": "s3://telemetry/hopscope",
        "HOPSCOPE_STORE__S3__ENDPOINT": "minio:9000",
        "HOPSCOPE_STORE__S3__URL_STYLE": "path",
    }
    cfg, _ = load_config(None, environ=env)
    backend = cfg.store.backend()
    assert backend is not None and backend.postgres and backend.remote_data
    assert (backend.catalog, backend.data_path) == (env["HOPSCOPE_STORE__CATALOG"], "s3://telemetry/hopscope")
    assert (backend.s3.endpoint, backend.s3.url_style, backend.password_env) == (
        "minio:9000",
        "path",
        "PGPASSWORD",
    )
    assert load_config(None, environ={})[0].store.backend() is None  # the embedded default is unchanged


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        ("postgresql://hs:hunter22@db/hopscope", "holds a password"),
        ("host=db dbname=hopscope password=hunter22", "holds a password"),
        ("mysql:db", "not a postgres:// URL or a libpq string"),
    ],
    ids=["url-password", "keyword-password", "not-postgres"],
)
def test_a_bad_catalog_setting_is_refused_without_echoing_its_password(
    tmp_path: Path, catalog: str, message: str
) -> None:
    config = tmp_path / "hopscope.toml"
    config.write_text(f'[store]\ncatalog = "{catalog}"\n')
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(config, environ={})
    assert "hunter22" not in str(caught.value)
    assert "store.catalog" in str(caught.value)


def test_a_relative_data_folder_is_relative_to_the_config_file_and_other_urls_are_refused(
    tmp_path: Path,
) -> None:
    config = tmp_path / "conf" / "hopscope.toml"
    config.parent.mkdir()
    config.write_text('[store]\ndata_path = "parquet"\n')
    assert load_config(config, environ={})[0].store.data_path == str(tmp_path / "conf" / "parquet")
    config.write_text('[store]\ndata_path = "gs://bucket/x"\n')
    with pytest.raises(ConfigError, match="store.data_path: 'gs://bucket/x': is neither s3"):
        load_config(config, environ={})


def test_a_wrong_password_says_auth_failed_and_never_shows_the_password(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOPSCOPE_WRONG_PW", "not-the-password-42")
    backend = Backend(postgres_server.url("postgres"), "s3://b/x", password_env="HOPSCOPE_WRONG_PW")
    with pytest.raises(StoreError) as caught:
        Store(tmp_path / "s", backend=backend, create=False)
    assert caught.value.cause == "auth failed"
    assert "not-the-password-42" not in str(caught.value)
    assert "password authentication failed" in str(caught.value)


def test_a_catalog_nobody_listens_on_says_cannot_connect(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    from store_backends import free_port

    backend = Backend(f"host=127.0.0.1 port={free_port()} user=hopscope dbname=x", "s3://b/x")
    with pytest.raises(StoreError, match="cannot connect") as caught:
        Store(tmp_path / "s", backend=backend, create=False)
    assert caught.value.cause == "cannot connect"


def test_a_libpq_keyword_catalog_opens_the_same_store_as_its_url(
    postgres_server: PostgresServer, s3_server: S3Server, tmp_path: Path
) -> None:
    stores = Stores("postgres+s3", postgres_server, s3_server)
    with stores(tmp_path / "s", inlining_rows=0) as store:  # a data file in the bucket
        store.set_state("k", "v")
        backend = store.backend
    assert backend is not None and backend.catalog is not None
    database = backend.catalog.rsplit("/", 1)[1]
    keywords = f"host=127.0.0.1 port={postgres_server.port} user=hopscope dbname={database}"
    again = Backend(keywords, backend.data_path, password_env=PASSWORD_ENV, s3=backend.s3)
    with Store(tmp_path / "elsewhere", backend=again, create=False) as store:
        assert store.get_state("k") == "v"
        assert store.size_bytes() > 0  # the catalog's data files, not a local folder
    reader = Backend(backend.catalog, None, password_env=PASSWORD_ENV, s3=backend.s3)
    with Store(tmp_path / "reader", backend=reader, create=False) as store:  # the recorded data path
        assert store.get_state("k") == "v"


def test_reading_commands_and_the_dashboard_open_the_configured_shared_store(
    postgres_server: PostgresServer, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = Stores("postgres+s3", postgres_server, s3_server)
    with stores(tmp_path / "collector") as store:
        store.set_state("k", "shared")
        backend = store.backend
    for name, value in _env_for(backend).items():
        monkeypatch.setenv(name, value)
    rules = ROOT / "slo_rules"
    where, _ = read_store(None, rules)
    assert where.shared and where.backend == backend and where.exists()
    with Store.open(where, create=False) as store:
        assert store.get_state("k") == "shared"
    assert read_store(tmp_path / "local", rules)[0] == StoreLocation(tmp_path / "local")  # --store: embedded

    # The dashboard's process gets the backend from `hopscope dashboard` in one variable, no secret in it.
    shown = dashboard_location(tmp_path / "x", {"HOPSCOPE_STORE_BACKEND": backend.to_json()})
    assert shown.backend == backend and postgres_server.password not in backend.to_json()

    # A reading command, as a user runs it: exit 0 on the shared store, no password anywhere.
    done = subprocess.run(
        [sys.executable, "-m", "hopscope.cli", "slo", "status", "--json", "--rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert isinstance(json.loads(done.stdout), list | dict)
    assert postgres_server.password not in done.stdout + done.stderr


def _small_store(store: Store) -> None:
    """A few rows in every table (seeded), as a collector leaves them."""
    import random
    from datetime import datetime, timedelta

    import pyarrow as pa

    rng = random.Random(42)
    t0 = datetime(2026, 3, 1)
    n = 500
    store.append(
        "spans",
        pa.table(
            {
                "trace_id": [rng.randbytes(16) for _ in range(n)],
                "span_id": [rng.randbytes(8) for _ in range(n)],
                "service": [rng.choice(["api", "features", "model"]) for _ in range(n)],
                "name": ["GET /x"] * n,
                "kind": pa.array([2] * n, pa.int8()),
                "start_time": pa.array([t0 + timedelta(seconds=i) for i in range(n)], pa.timestamp("us")),
                "duration_ms": [rng.uniform(1, 300) for _ in range(n)],
                "status_code": pa.array([rng.choice([0, 0, 2]) for _ in range(n)], pa.int8()),
            }
        ),
    )
    minutes = [t0 + timedelta(minutes=i) for i in range(60)]
    store.append(
        "hop_minutes",
        pa.table(
            {
                "minute": pa.array(minutes, pa.timestamp("us")),
                "client": ["api"] * 60, "server": ["model"] * 60, "route": ["/x"] * 60,
                "count": [rng.randint(1, 100) for _ in minutes], "errors": [rng.randint(0, 3) for _ in minutes],
                "duration_ms_sum": [rng.uniform(100, 900) for _ in minutes], "duration_ms_max": [99.0] * 60,
                "client_ms_sum": [1.0] * 60, "server_ms_sum": [2.0] * 60, "gap_ms_sum": [0.5] * 60,
                "self_ms_sum": [1.5] * 60, "skewed": [0] * 60, "hist_idx": [[40, 70]] * 60,
                "hist_cnt": [[2, 1]] * 60, "good_le_ms": [[200.0]] * 60, "good_cnt": [[2]] * 60,
                "exemplars": [["ab" * 16]] * 60,
            }
        ),
    )  # fmt: skip
    store.append(
        "samples",
        pa.table(
            {
                "ts": pa.array(minutes, pa.timestamp("us")),
                "metric": ["DCGM_FI_DEV_GPU_UTIL"] * 60,
                "value": [rng.uniform(0, 100) for _ in minutes],
                "source": ["nvml"] * 60,
            }
        ),
    )
    store.set_state("rollup.watermark", "2026-03-01T01:00:00")


def _copy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hopscope.cli", "store", "copy", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_store_copy_moves_an_embedded_store_to_postgres_and_s3_and_back_verified(
    postgres_server: PostgresServer, s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store(tmp_path / "embedded", inlining_rows=0) as store:
        _small_store(store)
        counts = {t: store.count(t) for t in ("spans", "hop_minutes", "samples", "state")}
    database = postgres_server.create_database()
    catalog = postgres_server.url(database)
    for name, value in _env_for(Backend(catalog, "s3://x", PASSWORD_ENV, s3_server.settings())).items():
        if "CATALOG" not in name and "DATA_PATH" not in name:  # the S3 settings and password variable only
            monkeypatch.setenv(name, value)

    there = _copy(
        "--from",
        str(tmp_path / "embedded"),
        "--to",
        catalog,
        "--data-path",
        f"s3://hopscope-test/{database}",
        "--json",
    )
    assert there.returncode == 0, there.stderr[-800:]
    summary = json.loads(there.stdout)
    assert summary["ok"] is True
    assert {t: v["destination"] for t, v in summary["tables"].items() if t in counts} == counts
    checksum = summary["hop_minutes_checksum"]
    assert checksum["source"] == checksum["destination"] != "0"
    assert "100%" in there.stderr  # the progress bar, on stderr
    assert postgres_server.password not in there.stdout + there.stderr

    back = _copy("--from", catalog, "--to", str(tmp_path / "back"), "--json")
    assert back.returncode == 0, back.stderr[-800:]
    assert json.loads(back.stdout)["hop_minutes_checksum"]["destination"] == checksum["source"]
    with Store(tmp_path / "back", create=False) as store:
        assert {t: store.count(t) for t in counts} == counts
        assert store.get_state("rollup.watermark") == "2026-03-01T01:00:00"

    again = _copy("--from", str(tmp_path / "embedded"), "--to", catalog)  # into a store that holds data
    assert again.returncode == 2 and "not empty" in again.stderr

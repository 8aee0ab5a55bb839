"""hopscope.toml: defaults, the shipped example, HOPSCOPE_* overrides, and errors that name the key."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from hopscope.config import configured_catalog, load_config, parse_duration, read_paths
from hopscope.durations import parse_duration as one_grammar
from hopscope.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_example_config_loads_with_its_documented_values() -> None:
    cfg, source = load_config(ROOT / "hopscope.example.toml", environ={})
    assert source.endswith("hopscope.example.toml")
    assert cfg.store.path == ROOT / "var/hopscope"  # relative to the file
    assert cfg.store.retention_timedeltas()["spans"] == timedelta(days=2)
    assert cfg.dashboard.port == 8501
    assert cfg.collect.otlp.http_port == 4318
    assert cfg.collect.otlp.host == "127.0.0.1"


def test_the_example_configs_diagnosis_block_uncommented_maps_nics_cpus_containers_and_ports(
    tmp_path: Path,
) -> None:
    lines = (ROOT / "hopscope.example.toml").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("# [[diagnosis."))
    last = next(i for i, line in enumerate(lines) if line.startswith("[collect]"))
    block = [line.removeprefix("#").removeprefix(" ") for line in lines[first:last]]
    (tmp_path / "h.toml").write_text("\n".join(block))
    cat = configured_catalog(tmp_path / "h.toml")
    assert cat["nv_inference_pending_request_count"].role == "saturation"
    assert cat.link_of("", "gpu-node-1", {"device": "eth1"}).service == "model-server"  # type: ignore[union-attr]
    assert cat.link_of("", "gpu-node-1", {"cpu": "9"}).service == "model-server"  # type: ignore[union-attr]
    assert cat.link_of("", "gpu-node-2", {"cpu": "9"}) is None
    assert cat.link_of("", "node-7", {"container": "feast-online"}).service == "feature-store"  # type: ignore[union-attr]
    port = {"instance": "tor-switch-3:9116", "ifName": "Ethernet12"}
    assert cat.link_of("", "", port).edge == "api-gateway->model-server"  # type: ignore[union-attr]


def test_an_empty_file_gives_working_defaults(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text("")
    cfg, _ = load_config(tmp_path / "h.toml", environ={})
    assert cfg.slo.rules == Path("slo_rules")
    assert cfg.collect.otlp.enabled


def test_environment_variables_override_file_values_with_typed_values(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text('[dashboard]\nport = 8501\n[store]\npath = "a"\n')
    env = {
        "HOPSCOPE_DASHBOARD__PORT": "9000",
        "HOPSCOPE_STORE__PATH": "/data/hs",
        "HOPSCOPE_STORE__RETENTION__SPANS": "6h",
        "HOPSCOPE_COLLECT__OTLP__HTTP_PORT": "14318",
        "UNRELATED": "x",
    }
    cfg, source = load_config(tmp_path / "h.toml", environ=env)
    assert cfg.dashboard.port == 9000
    assert cfg.store.path == Path("/data/hs")
    assert cfg.store.retention_timedeltas()["spans"] == timedelta(hours=6)
    assert cfg.collect.otlp.http_port == 14318
    assert "HOPSCOPE_" in source


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[dashboard]\nport = 70000\n", {}, r"dashboard\.port: 70000"),
        ("[dashbord]\nport = 1\n", {}, r"dashbord: unknown key"),
        (
            "[store.retention]\nspans = 'forever'\n",
            {},
            r"store\.retention\.spans: 'forever': 'forever' is not a duration",
        ),
        ("[store]\npath = \n", {}, r"not valid TOML"),
        ("", {"HOPSCOPE_DASHBOARD__REFRESH_SECONDS": "7"}, r"dashboard\.refresh_seconds: 7: is not one of"),
        ("[collect.otlp]\nhttp_port = 'x'\n", {}, r"collect\.otlp\.http_port: 'x'"),
        ("[collect]\nnope = 1\n", {}, r"collect\.nope"),
        ("[store]\nmemory_limit = 'lots'\n", {}, r"store\.memory_limit: 'lots': 'lots' is not a size"),
    ],
    ids=[
        "port-out-of-range",
        "misspelt-section",
        "bad-duration",
        "broken-toml",
        "env-bad-value",
        "collect-bad-type",
        "collect-unknown-key",
        "bad-memory-limit",
    ],
)
def test_bad_config_is_refused_with_the_key_and_the_bad_value(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    (tmp_path / "h.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "h.toml", environ=env)


def test_a_missing_config_file_is_named() -> None:
    with pytest.raises(ConfigError, match="nope.toml: no such config file"):
        load_config("nope.toml", environ={})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("6h", timedelta(hours=6)),
        ("28d", timedelta(days=28)),
        ("2w", timedelta(days=14)),
        (90, timedelta(seconds=90)),
    ],
)
def test_durations_read_like_prometheus_ones(text: str | int, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_a_secret_never_appears_in_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "h.toml").write_text(
        "[collect.prometheus]\nbearer_token = 's3cr3t-token'\nusername = 'u'\npassword = 'p'\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "h.toml", environ={})
    assert "s3cr3t-token" not in str(info.value)


def test_a_number_given_for_a_text_key_stays_the_text_it_was() -> None:
    # Environment values are read as TOML, so 12345 arrives as a number; a token is still text.
    cfg, _ = load_config(None, environ={"HOPSCOPE_COLLECT__OTLP__BEARER_TOKEN": "12345"})
    token = cfg.collect.otlp.bearer_token
    assert token is not None and token.get_secret_value() == "12345"


def _store(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "catalog.sqlite").write_bytes(b"")  # what read_paths looks for; nothing opens it here
    return path


def test_reading_commands_take_the_store_and_rules_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store, rules = _store(tmp_path / "lake"), tmp_path / "rules"
    rules.mkdir()
    (tmp_path / "hopscope.toml").write_text(f'[store]\npath = "{store}"\n[slo]\nrules = "{rules}"\n')
    monkeypatch.delenv("HOPSCOPE_STORE__PATH", raising=False)
    assert read_paths(None, None) == (store, rules)
    assert read_paths(tmp_path / "other", None) == (tmp_path / "other", rules)  # --store wins
    monkeypatch.setenv("HOPSCOPE_STORE__PATH", str(tmp_path / "env"))  # the environment beats the file
    assert read_paths(None, None)[0] == tmp_path / "env"


def test_without_a_config_the_demo_store_is_read_when_it_is_the_only_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("HOPSCOPE_")]:
        monkeypatch.delenv(name)
    (tmp_path / "slo_rules").mkdir()
    demo = _store(tmp_path / "var" / "demo")
    assert read_paths(None, None) == (Path("var/demo"), Path("slo_rules"))
    _store(tmp_path / "var" / "hopscope")  # once the collector has written its store, that one
    assert read_paths(None, None)[0] == Path("var/hopscope")
    assert demo.exists()


def test_missing_rules_are_an_error_not_an_empty_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"nowhere: no SLO rules here; pass --rules or set \[slo\] rules"):
        read_paths(tmp_path, Path("nowhere"))


def test_paths_in_a_config_file_are_relative_to_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "h.toml").write_text('[store]\npath = "data/lake"\n[slo]\nrules = "/abs/rules"\n')
    monkeypatch.chdir(tmp_path)
    cfg, _ = load_config("etc/h.toml", environ={})
    assert (cfg.store.path, cfg.slo.rules) == (Path("etc/data/lake"), Path("/abs/rules"))
    cfg, _ = load_config(
        "etc/h.toml", environ={"HOPSCOPE_STORE__PATH": "here"}
    )  # a variable: the working folder
    assert cfg.store.path == Path("here")


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("store.retention", "spans", "500ms"), ("collect.prometheus", "backfill", "1h30m")],
)
def test_every_section_reads_durations_in_one_grammar(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    # [store] and [collect] used to have two grammars: "500ms" was a duration in one and an error in the other.

    config = tmp_path / "hopscope.toml"
    config.write_text(f"[{section}]\n{key} = '{value}'\n")
    cfg, _ = load_config(config, environ={})
    if section == "store.retention":
        assert cfg.store.retention_timedeltas()["spans"] == one_grammar(value)
    else:
        assert cfg.collect.prometheus.backfill == one_grammar(value)

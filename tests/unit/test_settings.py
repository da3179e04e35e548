"""``core.settings.load_settings``: defaults, ``SYNCWATCH_*`` variables, the YAML file, and bad
configuration refused with a message naming the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SYNCWATCH_* variable from the outside, and a private XDG data home."""
    for name in list(os.environ):
        if name.startswith("SYNCWATCH_"):
            monkeypatch.delenv(name)
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    return xdg


def _yaml(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "syncwatch.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("SYNCWATCH_CONFIG", str(path))
    return path


def test_defaults(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.data_dir == clean_env / "syncwatch"
    assert settings.database_url is None
    assert settings.resolved_database_url == f"sqlite:///{clean_env / 'syncwatch' / 'syncwatch.db'}"
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 8080, "INFO")
    assert settings.key_cache_seconds == 5.0
    # api.md: a batch holds at most 10,000 events and 10 MiB
    assert settings.ingest.max_batch_events == 10_000
    assert settings.ingest.max_body_bytes == 10 * 1024 * 1024


def test_default_data_dir_without_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_settings().data_dir == tmp_path / ".local" / "share" / "syncwatch"


def test_data_dir_moves_the_default_database(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SYNCWATCH_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    assert settings.data_dir == tmp_path / "data"
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'data' / 'syncwatch.db'}"


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg://sw@db.internal:5432/syncwatch"
    monkeypatch.setenv("SYNCWATCH_DATABASE_URL", url)
    monkeypatch.setenv("SYNCWATCH_HOST", "10.1.2.3")
    monkeypatch.setenv("SYNCWATCH_PORT", "9090")
    monkeypatch.setenv("SYNCWATCH_LOG_LEVEL", "debug")
    monkeypatch.setenv("SYNCWATCH_KEY_CACHE_SECONDS", "0")
    settings = load_settings()
    assert settings.resolved_database_url == url
    assert (settings.host, settings.port, settings.log_level) == ("10.1.2.3", 9090, "DEBUG")
    assert settings.key_cache_seconds == 0


def test_nested_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCWATCH_INGEST__MAX_BATCH_EVENTS", "500")
    settings = load_settings()
    assert settings.ingest.max_batch_events == 500
    assert settings.ingest.max_body_bytes == 10 * 1024 * 1024


def test_variables_of_other_tools_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's SYNCWATCH_API_URL/KEY share the prefix; they must not stop the API."""
    monkeypatch.setenv("SYNCWATCH_API_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("SYNCWATCH_API_KEY", "sw_x")
    assert load_settings().port == 8080


def test_yaml_file_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _yaml(
        tmp_path,
        "port: 7000\nhost: 10.0.0.1\nlog_level: warning\n"
        "ingest:\n  max_batch_events: 100\n  max_body_bytes: 2048\n",
        monkeypatch,
    )
    from_file = load_settings()
    assert (from_file.port, from_file.host, from_file.log_level) == (7000, "10.0.0.1", "WARNING")
    assert (from_file.ingest.max_batch_events, from_file.ingest.max_body_bytes) == (100, 2048)

    monkeypatch.setenv("SYNCWATCH_PORT", "7001")
    monkeypatch.setenv("SYNCWATCH_INGEST__MAX_BATCH_EVENTS", "200")
    mixed = load_settings()
    assert (mixed.port, mixed.host) == (7001, "10.0.0.1")
    # env wins key by key inside a nested section, the file keeps the rest
    assert (mixed.ingest.max_batch_events, mixed.ingest.max_body_bytes) == (200, 2048)


def test_explicit_overrides_win_over_everything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _yaml(tmp_path, "port: 7000\n", monkeypatch)
    monkeypatch.setenv("SYNCWATCH_PORT", "7001")
    assert load_settings({"port": 7002}).port == 7002


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_yaml_file_means_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str
) -> None:
    _yaml(tmp_path, text, monkeypatch)
    assert load_settings().port == 8080


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("colour: blue\n", "colour"),
        ("ingest:\n  max_events: 3\n", "ingest.max_events"),
        ("port: 70000\n", "port"),
        ("ingest:\n  max_batch_events: 0\n", "ingest.max_batch_events"),
        ("log_level: loud\n", "log_level"),
        ("database_url: mysql://x/y\n", "database_url"),
        ("config: other.yaml\n", "config"),
    ],
)
def test_bad_yaml_settings_are_refused_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, named: str
) -> None:
    _yaml(tmp_path, text, monkeypatch)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = caught.value.message
    assert message.startswith(f"{named}:") or f" {named} (SYNCWATCH_" in message


def test_an_unknown_yaml_key_is_called_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _yaml(tmp_path, "colour: blue\nport: 8081\n", monkeypatch)
    with pytest.raises(ConfigError, match=r"colour \(SYNCWATCH_COLOUR\): unknown setting"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("SYNCWATCH_PORT", "abc", "SYNCWATCH_PORT"),
        ("SYNCWATCH_PORT", "0", "SYNCWATCH_PORT"),
        ("SYNCWATCH_PORT", "65536", "SYNCWATCH_PORT"),
        ("SYNCWATCH_KEY_CACHE_SECONDS", "-1", "SYNCWATCH_KEY_CACHE_SECONDS"),
        ("SYNCWATCH_LOG_LEVEL", "chatty", "SYNCWATCH_LOG_LEVEL"),
        ("SYNCWATCH_INGEST__MAX_BATCH_EVENTS", "many", "SYNCWATCH_INGEST__MAX_BATCH_EVENTS"),
        ("SYNCWATCH_INGEST__MAX_BODY_BYTES", "10", "SYNCWATCH_INGEST__MAX_BODY_BYTES"),
    ],
)
def test_bad_environment_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert named in caught.value.message
    assert caught.value.message.startswith("bad configuration")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://sw@localhost/syncwatch",
        "postgres://sw@localhost/syncwatch",
        "postgresql+psycopg2://sw@localhost/syncwatch",
    ],
)
def test_postgresql_needs_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SYNCWATCH_DATABASE_URL", url)
    with pytest.raises(ConfigError, match=r"SYNCWATCH_DATABASE_URL.*postgresql\+psycopg://"):
        load_settings()


@pytest.mark.parametrize("url", ["mysql://x/y", "nonsense"])
def test_unsupported_databases_are_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SYNCWATCH_DATABASE_URL", url)
    with pytest.raises(ConfigError, match="SYNCWATCH_DATABASE_URL"):
        load_settings()


@pytest.mark.parametrize("url", ["sqlite:////var/lib/sw.db", "postgresql+psycopg://h/db"])
def test_supported_database_urls(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("SYNCWATCH_DATABASE_URL", url)
    assert load_settings().resolved_database_url == url


def test_a_missing_yaml_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNCWATCH_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"SYNCWATCH_CONFIG: cannot read .*missing\.yaml"):
        load_settings()


def test_a_directory_as_yaml_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SYNCWATCH_CONFIG", str(tmp_path))
    with pytest.raises(ConfigError, match="SYNCWATCH_CONFIG: cannot read"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("port: [8080\n", "not valid YAML"),
        ("port: 1\n  host: x\n", "not valid YAML"),
        ("- port\n- host\n", "mapping at the top level"),
        ("just a string\n", "mapping at the top level"),
    ],
)
def test_invalid_yaml_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, match: str
) -> None:
    path = _yaml(tmp_path, text, monkeypatch)
    with pytest.raises(ConfigError, match=match) as caught:
        load_settings()
    assert caught.value.message.startswith("SYNCWATCH_CONFIG")
    assert str(path) in caught.value.message


def test_yaml_that_is_not_utf8_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("host: caf\xe9\n".encode("latin-1"))
    monkeypatch.setenv("SYNCWATCH_CONFIG", str(path))
    with pytest.raises(ConfigError, match=r"SYNCWATCH_CONFIG: .* is not UTF-8"):
        load_settings()

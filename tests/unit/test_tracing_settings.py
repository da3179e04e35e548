"""The ``tracing`` section of the settings: defaults, environment and YAML, the headers read from
the environment variable that ``headers_env`` names, and bad values refused naming the key without
ever echoing a header value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import load_settings

SECRET = "Bearer s3cret-token"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("SYNCWATCH_", "SW_TEST_OTLP")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def test_defaults_keep_tracing_off() -> None:
    tracing = load_settings().tracing
    assert tracing.enabled is False
    assert tracing.endpoint is None
    assert tracing.headers_env is None
    assert tracing.service_name == "syncwatch"
    assert tracing.requests is True
    assert tracing.export_interval_seconds > 0
    assert tracing.batch_flows >= 1
    assert tracing.headers() == {}


def test_yaml_section_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "syncwatch.yaml"
    path.write_text(
        "tracing:\n  enabled: true\n  endpoint: http://tempo:4318/v1/traces\n"
        "  headers_env: SW_TEST_OTLP_HEADERS\n  batch_flows: 50\n  requests: false\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("SYNCWATCH_CONFIG", str(path))
    monkeypatch.setenv("SW_TEST_OTLP_HEADERS", "Authorization=Bearer%20abc, X-Scope-OrgID=acme")
    monkeypatch.setenv("SYNCWATCH_TRACING__SERVICE_NAME", "syncwatch-eu")
    tracing = load_settings().tracing
    assert tracing.enabled and not tracing.requests
    assert tracing.endpoint == "http://tempo:4318/v1/traces"
    assert tracing.batch_flows == 50
    assert tracing.service_name == "syncwatch-eu"
    assert tracing.headers() == {"Authorization": "Bearer abc", "X-Scope-OrgID": "acme"}


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("SYNCWATCH_TRACING__ENDPOINT", "localhost:4318", "tracing.endpoint"),
        ("SYNCWATCH_TRACING__ENDPOINT", "ftp://collector/v1/traces", "tracing.endpoint"),
        ("SYNCWATCH_TRACING__EXPORT_INTERVAL_SECONDS", "0", "tracing.export_interval_seconds"),
        ("SYNCWATCH_TRACING__BATCH_FLOWS", "0", "tracing.batch_flows"),
        ("SYNCWATCH_TRACING__SERVICE_NAME", "", "tracing.service_name"),
        ("SYNCWATCH_TRACING__COLOUR", "blue", "tracing.colour"),
    ],
)
def test_bad_values_name_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, named: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert f"{named} (SYNCWATCH_{named.replace('.', '__').upper()})" in caught.value.message


def test_headers_written_in_the_setting_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNCWATCH_TRACING__HEADERS_ENV", f"Authorization={SECRET}")
    with pytest.raises(ConfigError, match=r"tracing\.headers_env") as caught:
        load_settings()
    assert "s3cret" not in caught.value.message


def test_an_unset_headers_variable_stops_start_up_only_when_enabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNCWATCH_TRACING__HEADERS_ENV", "SW_TEST_OTLP_HEADERS")
    assert load_settings().tracing.headers_env == "SW_TEST_OTLP_HEADERS"
    monkeypatch.setenv("SYNCWATCH_TRACING__ENABLED", "true")
    with pytest.raises(ConfigError, match=r"tracing\.headers_env.*SW_TEST_OTLP_HEADERS is not set"):
        load_settings()


def test_malformed_headers_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNCWATCH_TRACING__ENABLED", "true")
    monkeypatch.setenv("SYNCWATCH_TRACING__HEADERS_ENV", "SW_TEST_OTLP_HEADERS")
    monkeypatch.setenv("SW_TEST_OTLP_HEADERS", f"X-Tenant=acme,{SECRET}")
    with pytest.raises(ConfigError, match=r"tracing\.headers_env.*entry 2") as caught:
        load_settings()
    assert "s3cret" not in caught.value.message

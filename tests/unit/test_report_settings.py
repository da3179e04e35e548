"""The ``reports:`` settings: defaults, and bad values stopping start-up with the key's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.report_settings import ReportSettings
from core.settings import load_settings


def test_defaults() -> None:
    settings = ReportSettings()
    assert (settings.enabled, settings.timezone, settings.weekday) == (True, "UTC", "mon")
    assert (settings.hour, settings.minute, settings.keep_weeks, settings.top_stuck) == (
        7,
        0,
        26,
        20,
    )
    assert settings.formats == ["html", "pdf", "md"]
    assert settings.email is None
    assert settings.chat is None
    assert (settings.delivery_attempts, settings.delivery_backoff_seconds) == (3, 30)


def test_formats_are_kept_in_one_order_without_repeats() -> None:
    assert ReportSettings(formats=["md", "html", "md"]).formats == ["html", "md"]


@pytest.mark.parametrize(
    ("reports", "key", "words"),
    [
        ({"timezone": "Mars/Olympus"}, "reports.timezone", "IANA time zone"),
        ({"weekday": "monday"}, "reports.weekday", "'mon'"),
        ({"hour": 24}, "reports.hour", "less than or equal to 23"),
        ({"formats": ["docx"]}, "reports.formats.0", "'html'"),
        ({"formats": []}, "reports.formats", "at least 1"),
        ({"keep_weeks": 0}, "reports.keep_weeks", "greater than or equal to 1"),
        ({"colour": "blue"}, "reports.colour", "unknown setting"),
        (
            {"email": {"host": "smtp", "sender": "a@b.c", "to": []}},
            "reports.email.to",
            "at least 1",
        ),
        (
            {"email": {"host": "smtp", "sender": "a@b.c", "to": ["x@y.z"], "ssl": True}},
            "reports.email",
            "not both",
        ),
        (
            {"email": {"host": "smtp", "sender": "a@b.c", "to": ["x@y.z"], "password_env": "pw!"}},
            "reports.email.password_env",
            "NAME of an environment variable",
        ),
        ({"chat": {"url_env": "SW_TEST_UNSET_HOOK"}}, "reports.chat.url_env", "is not set"),
        (
            {"chat": {"url_env": "HOME", "format": "discord"}},
            "reports.chat.format",
            "'slack'",
        ),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, reports: dict[str, object], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"data_dir": tmp_path, "reports": reports})
    assert key in raised.value.message
    assert words in raised.value.message


def test_a_full_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SW_TEST_SMTP_USER", "u")
    monkeypatch.setenv("SW_TEST_SMTP_PASSWORD", "p")
    monkeypatch.setenv("SW_TEST_HOOK", "https://hooks.example.com/services/x")
    settings = load_settings(
        {
            "data_dir": tmp_path,
            "reports": {
                "timezone": "Europe/Berlin",
                "weekday": "tue",
                "hour": 8,
                "minute": 15,
                "email": {
                    "host": "smtp.example.com",
                    "username_env": "SW_TEST_SMTP_USER",
                    "password_env": "SW_TEST_SMTP_PASSWORD",
                    "sender": "syncwatch@example.com",
                    "to": ["leadership@example.com"],
                },
                "chat": {"url_env": "SW_TEST_HOOK", "format": "teams"},
            },
        }
    ).reports
    assert settings.tz.key == "Europe/Berlin"
    assert settings.email is not None
    assert (settings.email.port, settings.email.starttls) == (587, True)
    assert settings.chat is not None
    assert settings.chat.format == "teams"

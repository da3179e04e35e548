"""Delivering the weekly report to a real local SMTP server (aiosmtpd) and a real local HTTP server
standing in for the chat webhook: what arrives, retries with backoff, failures logged (never the
secrets) and never raised."""

from __future__ import annotations

import email
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from core.db import Database
from core.report_settings import ReportSettings
from kpis.reports import schedule
from kpis.reports.deliver import deliver
from probes.flowtypes import configured_flow_types
from tests.support.reports import Counting, Webhook, stand_in
from tests.support.servers import free_port

SLOT = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)  # Monday 07:00 in Berlin
#: what a report maker made for week 48 (small stand-in bytes: these tests are about sending)
CONTENTS = stand_in(None, (), "2026-W48", tz=ZoneInfo("Europe/Berlin"))


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=data.password == b"s3cret-pw")


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box = Inbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        authenticator=box.authenticate,
        auth_require_tls=False,  # a test server on loopback; production uses STARTTLS or SSL
    )
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def _email_settings(port: int, **overrides: Any) -> ReportSettings:
    mail = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "sender": "syncwatch@example.com",
        "to": ["cfo@example.com", "coo@example.com"],
        "subject_prefix": "[KPI]",
        **overrides,
    }
    return ReportSettings(
        timezone="Europe/Berlin", email=mail, delivery_attempts=3, delivery_backoff_seconds=2
    )


def test_the_weekly_job_mails_the_report_with_the_pdf_attached(
    inbox: tuple[Inbox, int], database: Database
) -> None:
    box, port = inbox
    maker = Counting()
    run = schedule.weekly_report_job(
        database,
        _email_settings(port),
        configured_flow_types(None),
        scheduled_for=SLOT,
        clock=lambda: SLOT,
        maker=maker,
    )
    assert run is not None
    assert run.details["delivery"]["email"] == {"outcome": "sent", "attempts": 1, "errors": []}
    ((sender, recipients, message),) = box.messages
    assert sender == "syncwatch@example.com"
    assert recipients == ["cfo@example.com", "coo@example.com"]
    assert message["Subject"] == "[KPI] Weekly KPI report 2026-W48"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    assert "2026-W48" in text.get_content()
    assert "<html" in html.get_content().lower()
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "syncwatch-report-2026-W48.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content().startswith(b"%PDF-")


def test_smtp_credentials_come_from_the_environment(
    inbox: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    box, port = inbox
    monkeypatch.setenv("TEST_SMTP_USER", "reports")
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-pw")
    settings = _email_settings(
        port, username_env="TEST_SMTP_USER", password_env="TEST_SMTP_PASSWORD"
    )
    outcome = deliver("2026-W48", CONTENTS, settings, sleep=lambda _: None)
    assert outcome["email"]["outcome"] == "sent"
    assert box.logins == [("reports", "s3cret-pw")]
    assert len(box.messages) == 1


def test_a_refused_smtp_connection_is_retried_logged_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pauses: list[float] = []
    settings = _email_settings(free_port())  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="syncwatch.reports"):
        outcome = deliver("2026-W48", CONTENTS, settings, sleep=pauses.append)
    assert outcome["email"]["outcome"] == "failed"
    assert outcome["email"]["attempts"] == 3
    assert all("ConnectionRefusedError" in e for e in outcome["email"]["errors"])
    assert pauses == [2, 4]
    failures = [r for r in caplog.records if "e-mail delivery failed" in r.getMessage()]
    assert len(failures) == 3
    assert "gave up after 3 attempts" in caplog.text


def test_starttls_is_required_when_configured(inbox: tuple[Inbox, int]) -> None:
    box, port = inbox
    settings = _email_settings(port, starttls=True)  # the test server offers no STARTTLS
    outcome = deliver("2026-W48", CONTENTS, settings, sleep=lambda _: None)
    assert outcome["email"]["outcome"] == "failed"
    assert box.messages == []


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", {"text": CONTENTS["md"].decode()}),
        ("slack", {"text": CONTENTS["md"].decode(), "mrkdwn": True}),
        (
            "teams",
            {
                "@type": "MessageCard",
                "@context": "http://schema.org/extensions",
                "summary": "Weekly KPI report 2026-W48",
                "title": "Weekly KPI report 2026-W48",
                "text": CONTENTS["md"].decode(),
            },
        ),
    ],
)
def test_the_chat_webhook_gets_the_markdown(
    monkeypatch: pytest.MonkeyPatch, fmt: str, expected: dict[str, Any]
) -> None:
    with Webhook() as hook:
        monkeypatch.setenv("TEST_CHAT_URL", hook.url)
        settings = ReportSettings(chat={"url_env": "TEST_CHAT_URL", "format": fmt})
        outcome = deliver("2026-W48", CONTENTS, settings, sleep=lambda _: None)
    assert outcome == {"chat": {"outcome": "sent", "attempts": 1, "errors": []}}
    assert hook.received == [expected]


def test_a_failing_webhook_is_retried_and_its_url_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pauses: list[float] = []
    with Webhook(statuses=[500, 503]) as hook:
        monkeypatch.setenv("TEST_CHAT_URL", hook.url)
        settings = ReportSettings(
            chat={"url_env": "TEST_CHAT_URL"}, delivery_attempts=3, delivery_backoff_seconds=1
        )
        with caplog.at_level(logging.INFO, logger="syncwatch.reports"):
            outcome = deliver("2026-W48", CONTENTS, settings, sleep=pauses.append)
    assert outcome["chat"]["outcome"] == "sent"
    assert outcome["chat"]["attempts"] == 3
    assert outcome["chat"]["errors"] == [
        "HTTP 500 from the webhook",
        "HTTP 503 from the webhook",
    ]
    assert pauses == [1, 2]
    assert len(hook.received) == 1
    assert "secret-token" not in caplog.text
    assert "secret-token" not in str(outcome)


def test_a_secret_named_but_not_set_stops_the_settings() -> None:
    with pytest.raises(ValueError, match="TEST_NOT_SET_ANYWHERE is not set"):
        ReportSettings(chat={"url_env": "TEST_NOT_SET_ANYWHERE"})
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        ReportSettings(chat={"url_env": "https://hooks.example.com/x"})

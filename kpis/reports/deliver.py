"""Sending the weekly report: by SMTP e-mail (the HTML as the body with the Markdown as its text
alternative, the PDF attached) and to a chat webhook (the Markdown as JSON). Each channel is tried
``reports.delivery_attempts`` times, ``delivery_backoff_seconds`` apart (doubled each time); every
failure is logged (never a password or the webhook's URL) and the outcome of each channel is
returned for ``job_runs.details``. Nothing here raises for a failed delivery."""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from typing import Any

import httpx

from core.report_settings import ChatSettings, EmailSettings, ReportSettings
from kpis.reports.store import file_name

log = logging.getLogger("syncwatch.reports")

Sleep = Callable[[float], None]


def deliver(
    week: str,
    contents: Mapping[str, bytes],
    settings: ReportSettings,
    *,
    sleep: Sleep = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Send ``week``'s report on every configured channel; channel -> outcome."""
    outcomes: dict[str, Any] = {}
    if settings.email is not None:
        email = settings.email
        outcomes["email"] = _attempts(
            "e-mail",
            week,
            lambda: send_email(week, contents, email),
            settings,
            sleep,
        )
    if settings.chat is not None:
        chat = settings.chat
        outcomes["chat"] = _attempts(
            "chat webhook",
            week,
            lambda: post_chat(week, contents, chat, transport=transport),
            settings,
            sleep,
        )
    return outcomes


def _attempts(
    channel: str, week: str, send: Callable[[], None], settings: ReportSettings, sleep: Sleep
) -> dict[str, Any]:
    errors: list[str] = []
    for attempt in range(1, settings.delivery_attempts + 1):
        try:
            send()
        except Exception as error:  # logged and retried; the job goes on with the next channel
            message = _describe(error)
            errors.append(message)
            log.warning(
                "report %s: %s delivery failed (attempt %d of %d): %s",
                week,
                channel,
                attempt,
                settings.delivery_attempts,
                message,
            )
            if attempt < settings.delivery_attempts:
                sleep(settings.delivery_backoff_seconds * 2 ** (attempt - 1))
            continue
        log.info("report %s: sent by %s (attempt %d)", week, channel, attempt)
        return {"outcome": "sent", "attempts": attempt, "errors": errors}
    log.error("report %s: %s delivery gave up after %d attempts", week, channel, len(errors))
    return {"outcome": "failed", "attempts": len(errors), "errors": errors}


def _describe(error: Exception) -> str:
    """The error's kind and message, without URLs (a webhook's URL is its secret)."""
    if isinstance(error, httpx.HTTPStatusError):
        return f"HTTP {error.response.status_code} from the webhook"
    if isinstance(error, httpx.HTTPError):
        return f"{type(error).__name__} (the webhook could not be reached)"
    return f"{type(error).__name__}: {error}"[:500]


def message(week: str, contents: Mapping[str, bytes], email: EmailSettings) -> EmailMessage:
    """The e-mail: Markdown as text/plain, HTML as the preferred alternative, PDF attached."""
    mail = EmailMessage()
    mail["Subject"] = f"{email.subject_prefix} Weekly KPI report {week}".strip()
    mail["From"] = email.sender
    mail["To"] = ", ".join(email.to)
    text = contents.get("md", b"").decode("utf-8") or f"The weekly KPI report {week} is attached."
    mail.set_content(text, subtype="plain")
    if "html" in contents:
        mail.add_alternative(contents["html"].decode("utf-8"), subtype="html")
    if "pdf" in contents:
        mail.add_attachment(
            contents["pdf"],
            maintype="application",
            subtype="pdf",
            filename=file_name(week, "pdf"),
        )
    return mail


def send_email(week: str, contents: Mapping[str, bytes], email: EmailSettings) -> None:
    mail = message(week, contents, email)
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if email.ssl:
        smtp = smtplib.SMTP_SSL(
            email.host, email.port, timeout=email.timeout_seconds, context=context
        )
    else:
        smtp = smtplib.SMTP(email.host, email.port, timeout=email.timeout_seconds)
    with smtp:
        if email.starttls and not email.ssl:
            smtp.starttls(context=context)
        if email.username_env is not None and email.password_env is not None:
            smtp.login(os.environ[email.username_env], os.environ[email.password_env])
        smtp.send_message(mail)


def chat_body(week: str, markdown: str, chat: ChatSettings) -> dict[str, Any]:
    title = f"Weekly KPI report {week}"
    if chat.format == "teams":  # an Office 365 connector MessageCard renders Markdown in text
        return {
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "summary": title,
            "title": title,
            "text": markdown,
        }
    if chat.format == "slack":  # incoming webhooks render mrkdwn in text
        return {"text": markdown, "mrkdwn": True}
    return {"text": markdown}


def post_chat(
    week: str,
    contents: Mapping[str, bytes],
    chat: ChatSettings,
    *,
    transport: httpx.BaseTransport | None = None,
) -> None:
    markdown = contents.get("md", b"").decode("utf-8") or f"Weekly KPI report {week}"
    with httpx.Client(timeout=chat.timeout_seconds, transport=transport) as client:
        response = client.post(os.environ[chat.url_env], json=chat_body(week, markdown, chat))
        response.raise_for_status()

"""The ``reports:`` section of the settings (issue 7; docs/reports.md): when the weekly KPI report
is made (weekday, hour and minute in an IANA time zone), in which formats, how many weeks are
kept, and where it is delivered (SMTP e-mail, a chat webhook).

Secrets never go into the YAML file: the SMTP user and password and the chat webhook's URL (which
is a credential in Slack and Teams) are each named by the environment variable that holds them,
checked when the settings are read, so a missing one stops start-up with the key's name."""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.replay_settings import env_var_name

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
REPORT_FORMATS = ("html", "pdf", "md")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ReportFormat = Literal["html", "pdf", "md"]


def _all_formats() -> list[ReportFormat]:
    return ["html", "pdf", "md"]


class EmailSettings(BaseModel):
    """The report by SMTP: the HTML as the body (with the Markdown as its text alternative) and
    the PDF attached."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=587, ge=1, le=65535)
    #: upgrade a plain connection with STARTTLS (port 587); refused together with ``ssl``
    starttls: bool = True
    #: implicit TLS from the first byte (port 465)
    ssl: bool = False
    #: the NAMES of the environment variables holding the SMTP user and password; none: no login
    username_env: str | None = None
    password_env: str | None = None
    sender: str = Field(min_length=3, max_length=255)
    to: list[str] = Field(min_length=1)
    subject_prefix: str = Field(default="[syncwatch]", max_length=100)
    #: seconds one SMTP connection may wait
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    @field_validator("username_env", "password_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        return env_var_name(value)

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, value: str | list[str]) -> str | list[str]:
        for address in [value] if isinstance(value, str) else value:
            if "@" not in address or any(c in address for c in "\r\n"):
                raise ValueError(f"{address!r} is not an e-mail address")
        return value

    @model_validator(mode="after")
    def _one_tls_mode(self) -> EmailSettings:
        if self.ssl and self.starttls:
            raise ValueError("give ssl (implicit TLS, port 465) or starttls (port 587), not both")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        return self


class ChatSettings(BaseModel):
    """The report's Markdown posted as JSON to a chat webhook."""

    model_config = ConfigDict(extra="forbid")

    #: the NAME of the environment variable holding the webhook URL (the URL is the secret)
    url_env: str
    #: slack: ``{"text": md}`` (mrkdwn); teams: a MessageCard ``{"text": md}`` with a title;
    #: text: ``{"text": md}``
    format: Literal["slack", "teams", "text"] = "text"
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url_env")
    @classmethod
    def _names_a_variable(cls, value: str) -> str:
        checked = env_var_name(value)
        assert checked is not None
        return checked


class ReportSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: make the report in the scheduler of ``serve`` (the API serves and makes reports anyway)
    enabled: bool = True
    #: the IANA time zone of the report's weeks and of its schedule (``Europe/Berlin``)
    timezone: str = "UTC"
    #: when the report of the week just ended is made, in ``timezone``
    weekday: Weekday = "mon"
    hour: int = Field(default=7, ge=0, le=23)
    minute: int = Field(default=0, ge=0, le=59)
    formats: list[ReportFormat] = Field(default_factory=_all_formats, min_length=1)
    #: stored reports older than this many weeks are deleted after each weekly run
    keep_weeks: int = Field(default=26, ge=1, le=1000)
    #: stuck flows listed in the report, the largest value at risk first
    top_stuck: int = Field(default=20, ge=1, le=1000)
    email: EmailSettings | None = None
    chat: ChatSettings | None = None
    #: attempts of one delivery (the first included) ...
    delivery_attempts: int = Field(default=3, ge=1, le=10)
    #: ... seconds before the second attempt, doubled for each further one
    delivery_backoff_seconds: float = Field(default=30.0, ge=0, le=3600)

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone name such as Europe/Berlin or UTC"
            ) from None
        return value

    @field_validator("formats")
    @classmethod
    def _unique(cls, value: list[ReportFormat]) -> list[ReportFormat]:
        return [f for f in REPORT_FORMATS if f in value]

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

"""The ``pull:`` section of the settings (issue 9; docs/pull.md): where a source system cannot push,
syncwatch pulls. ``connectors`` poll a REST API with a cursor (a modified-since instant, or the
source's own page token); ``reconcile`` lists what a source says happened over a lookback window
and raises ``unreported_record`` for what syncwatch never received.

Secrets never go into the YAML file: a bearer token or a basic-auth user and password are named by
the environment variables that hold them, checked when the settings are read."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from core.durations import parse_duration
from core.replay_settings import env_var_name, placeholders

#: What a request parameter's template may name.
PULL_PLACEHOLDERS = frozenset({"since", "until", "token", "page_size"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


def param_placeholders(template: str) -> set[str]:
    """The ``{names}`` of a parameter template; ValueError for an unknown or malformed one."""
    return placeholders(template, PULL_PLACEHOLDERS)


def _dotted(value: str | None, *, empty_ok: bool) -> str | None:
    if value is None or (empty_ok and value == ""):
        return value
    if not _PATH.match(value):
        raise ValueError(f"{value!r} is not a dotted path such as data.items")
    return value


class SourceRequest(BaseModel):
    """How to ask a source for records, page by page (shared by connectors and reconciliation)."""

    model_config = ConfigDict(extra="forbid")

    #: the endpoint listing records (GET)
    url: str
    #: query parameters; templates naming ``{since}`` (RFC 3339, UTC), ``{until}``, ``{token}``
    #: (the next-page token of the previous answer) and ``{page_size}``. A parameter whose
    #: placeholder has no value (no token on the first page) is left out.
    params: dict[str, str] = Field(default_factory=dict)
    #: static, non-secret headers
    headers: dict[str, str] = Field(default_factory=dict)
    #: where the records are in the JSON answer (dotted path); "" when the answer is the list
    records: str = "records"
    #: where the next-page token is in the answer (dotted path); an http(s) URL there is fetched
    #: as the next page. None: the source answers one page per request.
    next: str | None = None
    #: the mapping preset turning one record into canonical events; None: the records ARE
    #: canonical events (as POST /v1/events accepts them)
    preset: str | None = None
    page_size: int = Field(default=100, ge=1, le=10_000)
    #: pages one cycle reads at most (the next cycle goes on from the stored cursor)
    max_pages: int = Field(default=1000, ge=1, le=1_000_000)
    #: credentials, each the NAME of an environment variable: a bearer token, or basic auth
    token_env: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    #: attempts of one request on 429, 5xx, timeouts and connection failures (the first included)
    attempts: int = Field(default=5, ge=1, le=20)
    #: seconds before the second attempt, doubled for each further one, unless the source says
    #: when (``Retry-After``); every wait is capped at ``max_backoff_seconds``
    backoff_seconds: float = Field(default=1.0, ge=0, le=3600)
    max_backoff_seconds: float = Field(default=300.0, ge=0, le=86_400)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("params")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            param_placeholders(template)
        return value

    @field_validator("records")
    @classmethod
    def _records_path(cls, value: str) -> str:
        checked = _dotted(value, empty_ok=True)
        assert checked is not None
        return checked

    @field_validator("next")
    @classmethod
    def _next_path(cls, value: str | None) -> str | None:
        return _dotted(value, empty_ok=False)

    @field_validator("token_env", "username_env", "password_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        return env_var_name(value)

    @model_validator(mode="after")
    def _credentials(self) -> SourceRequest:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together (basic auth)")
        if self.token_env is not None and self.username_env is not None:
            raise ValueError("give token_env (bearer) or username_env/password_env, not both")
        return self


class ConnectorSettings(SourceRequest):
    """One pull connector: polled every ``interval`` from its stored cursor."""

    #: modified_since: the cursor is an instant, sent as ``{since}``, advanced to the latest
    #: ``modified_field`` of the records read (re-read at ``>=``: dedup drops the overlap);
    #: token: the cursor is the source's own token, sent as ``{token}``, advanced to the answer's
    #: ``next`` after each page
    cursor: Literal["modified_since", "token"] = "modified_since"
    #: where a record's last-modified instant is (dotted path in the record as received); by
    #: default ``time`` when the records are canonical events
    modified_field: str | None = None
    #: the ``{since}`` of the very first cycle; None: the parameter is left out (everything)
    initial_since: AwareDatetime | None = None
    interval: timedelta = timedelta(minutes=5)
    enabled: bool = True

    @field_validator("interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("modified_field")
    @classmethod
    def _modified_path(cls, value: str | None) -> str | None:
        return _dotted(value, empty_ok=False)

    @model_validator(mode="after")
    def _cursor_needs(self) -> ConnectorSettings:
        if self.cursor == "modified_since":
            if self.modified_field is None:
                if self.preset is not None:
                    raise ValueError(
                        "cursor modified_since needs modified_field: where a record's "
                        "last-modified instant is (such as updated_at)"
                    )
                self.modified_field = "time"
            if not any("since" in param_placeholders(t) for t in self.params.values()):
                raise ValueError("cursor modified_since needs a parameter naming {since}")
        elif self.next is None:
            raise ValueError("cursor token needs next: where the answer's next token is")
        return self


class ReconcileSettings(SourceRequest):
    """One reconciliation: every ``interval``, the records of the last ``lookback`` (sent as
    ``{since}`` and ``{until}``); those never received as events are stored and raise
    ``unreported_record``."""

    lookback: timedelta = timedelta(hours=24)
    #: records younger than this are not expected yet (their push may be on its way): the
    #: window ends ``grace`` before now; 0 for none
    grace: timedelta = timedelta(minutes=15)
    interval: timedelta = timedelta(hours=1)
    enabled: bool = True

    @field_validator("lookback", "interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("grace", mode="before")
    @classmethod
    def _grace(cls, value: Any) -> timedelta:
        if value in (0, "0", "0s") or value == timedelta(0):
            return timedelta(0)
        return parse_duration(value)

    @model_validator(mode="after")
    def _grace_inside(self) -> ReconcileSettings:
        if self.grace >= self.lookback:
            raise ValueError("grace must be shorter than lookback")
        return self


class PullSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: run the connectors and reconciliations in the scheduler of ``serve``
    enabled: bool = True
    connectors: dict[str, ConnectorSettings] = Field(default_factory=dict)
    reconcile: dict[str, ReconcileSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _names(self) -> PullSettings:
        for name in [*self.connectors, *self.reconcile]:
            if not _NAME.match(name):
                raise ValueError(
                    f"{name!r}: a connector's name is letters, digits, _ . - (at most 40)"
                )
        both = set(self.connectors) & set(self.reconcile)
        if both:
            raise ValueError(
                f"{', '.join(sorted(both))}: a name is either a connector or a reconciliation"
            )
        return self

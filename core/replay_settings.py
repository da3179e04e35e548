"""The ``replay:`` section of the settings (api.md, Replay; docs/replays.md): where a replay of a
stuck flow goes for each middleware source, the guardrails' limits, retries and the follow-up.

Secrets never go into the YAML file: a target names the environment variables that hold its token,
user and password, extra headers or broker URL; they are checked when the settings are read, so a
missing one stops start-up with the key's name."""

from __future__ import annotations

import os
import re
import string
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.durations import parse_duration

#: What a target's URL, headers, body and routing key may name: ``{execution_id}`` and so on.
PLACEHOLDERS = frozenset(
    {"execution_id", "correlation_id", "flow_id", "flow_type", "stage", "replay_id"}
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def placeholders(template: str, known: frozenset[str] = PLACEHOLDERS) -> set[str]:
    """The ``{names}`` in a template; raises ValueError for one not in ``known`` or a malformed
    one (also for the pull connectors' request templates)."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"is not a valid template ({exc}); write a literal brace as {{{{") from exc
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in known or spec or conversion:
            listed = ", ".join("{" + p + "}" for p in sorted(known))
            raise ValueError(f"names an unknown placeholder {{{name}}}; known: {listed}")
        names.add(name)
    return names


def _body_templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _body_templates(item)]
    if isinstance(value, list):
        return [t for item in value for t in _body_templates(item)]
    return []


def env_var_name(value: str | None) -> str | None:
    """A setting that names an environment variable: a valid name, and set."""
    if value is None:
        return None
    if not _ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable that holds the secret, not the secret"
        )
    if value not in os.environ:
        raise ValueError(f"the environment variable {value} is not set")
    return value


class HttpTarget(BaseModel):
    """An HTTP request to the middleware that runs the failed step again (a MuleSoft, Boomi or
    Workato "retry execution" endpoint). Placeholders: ``{execution_id}``, ``{correlation_id}``,
    ``{flow_id}``, ``{flow_type}``, ``{stage}``, ``{replay_id}``."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["POST", "PUT", "PATCH", "GET"] = "POST"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    #: A JSON body whose strings are templates too; None sends no body.
    body: Any = None
    #: Credentials, each the NAME of an environment variable: a bearer token, or basic auth.
    token_env: str | None = None
    username_env: str | None = None
    password_env: str | None = None
    #: An environment variable holding further headers ``k=v,k2=v2`` (api keys, tenants).
    headers_env: str | None = None

    @field_validator("token_env", "username_env", "password_env", "headers_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        return env_var_name(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        placeholders(value)
        parts = urlsplit(value.replace("{", "").replace("}", ""))
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _header_templates(cls, value: dict[str, str]) -> dict[str, str]:
        for template in value.values():
            placeholders(template)
        return value

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        for template in _body_templates(value):
            placeholders(template)
        return value

    @model_validator(mode="after")
    def _one_kind_of_credentials(self) -> HttpTarget:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together (basic auth)")
        if self.token_env is not None and self.username_env is not None:
            raise ValueError("give token_env (bearer) or username_env/password_env, not both")
        return self

    def needs(self) -> set[str]:
        """The placeholders this target fills in."""
        names = placeholders(self.url)
        for template in [*self.headers.values(), *_body_templates(self.body)]:
            names |= placeholders(template)
        return names


class AmqpTarget(BaseModel):
    """Re-publishing the flow's original event (the event that started it) to a RabbitMQ
    exchange that the middleware consumes, as a CloudEvent in JSON."""

    model_config = ConfigDict(extra="forbid")

    #: The NAME of an environment variable holding the broker URL (``amqp://user:pass@host/vhost``).
    url_env: str
    exchange: str = ""
    #: A template; for the default exchange, the queue's name.
    routing_key: str

    @field_validator("url_env")
    @classmethod
    def _names_a_variable(cls, value: str) -> str:
        checked = env_var_name(value)
        assert checked is not None
        return checked

    @field_validator("routing_key")
    @classmethod
    def _template(cls, value: str) -> str:
        placeholders(value)
        return value


class ReplayTarget(BaseModel):
    """One middleware source's replay target: exactly one of ``http`` and ``amqp``."""

    model_config = ConfigDict(extra="forbid")

    http: HttpTarget | None = None
    amqp: AmqpTarget | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReplayTarget:
        if (self.http is None) == (self.amqp is None):
            raise ValueError("give exactly one of http (a request template) and amqp (a broker)")
        return self


class AutoReplaySettings(BaseModel):
    """Automatic replays asked for by Alertmanager (POST /v1/alertmanager)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: flows one alert (fingerprint and start time) may replay
    max_per_alert: int = Field(default=10, ge=0, le=10_000)
    #: automatic replays sent in any hour, over all alerts
    max_per_hour: int = Field(default=50, ge=0, le=100_000)


class ReplaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: middleware source (the ``source`` of its integration events) -> target
    targets: dict[str, ReplayTarget] = Field(default_factory=dict)
    #: the guardrail: at most this many replays of one flow (refused ones do not count) ...
    max_per_flow: int = Field(default=3, ge=1, le=100)
    #: ... within this period
    per_flow_period: timedelta = timedelta(hours=24)
    #: a replay is ``ineffective`` when the flow has not reached the stage this long after it
    #: was sent; ``effective`` as soon as it has
    follow_up_after: timedelta = timedelta(hours=1)
    #: attempts of one send, the first included; only timeouts, connection failures and 5xx
    #: answers are tried again, never 4xx
    attempts: int = Field(default=3, ge=1, le=10)
    #: seconds before the second attempt, doubled for each further one
    backoff_seconds: float = Field(default=1.0, ge=0, le=300)
    #: seconds one attempt may take
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    auto: AutoReplaySettings = Field(default_factory=AutoReplaySettings)

    @field_validator("per_flow_period", "follow_up_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> timedelta:
        return parse_duration(value)

"""The ``brokers:`` section of the settings (docs/brokers.md): the message-broker consumers that
``syncwatch consume`` runs, by name. Each reads a RabbitMQ queue or a NATS JetStream stream whose
messages carry canonical events (one, an array, or CloudEvents), or vendor payloads mapped by a
preset.

Secrets never go into the YAML file: a URL with credentials is given through ``url_env``, the NAME
of an environment variable, checked when the settings are read; ``url`` takes only a URL without a
password."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from core.replay_settings import env_var_name

SCHEMES = {"rabbitmq": ("amqp", "amqps"), "nats": ("nats", "tls")}
DEFAULT_URLS = {"rabbitmq": "amqp://localhost:5672/%2F", "nats": "nats://localhost:4222"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: JetStream stream and consumer names: no whitespace, ``.``, ``*``, ``>``, path separators
_NATS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class BrokerConsumer(BaseModel):
    """One consumer: ``kind`` rabbitmq (a ``queue``) or nats (a ``stream``, a ``subject`` and a
    ``durable`` consumer name)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["rabbitmq", "nats"]
    #: a URL WITHOUT credentials (``amqp://host:5672/vhost``, ``nats://host:4222``) ...
    url: str | None = None
    #: ... or the NAME of an environment variable holding the URL (with credentials)
    url_env: str | None = None
    #: rabbitmq: the queue to consume (declared by the operator; syncwatch does not declare it)
    queue: str | None = None
    #: nats: the JetStream stream (it must exist), the filter subject and the durable consumer,
    #: which syncwatch creates (explicit acks) when it does not exist yet
    stream: str | None = None
    subject: str | None = None
    durable: str | None = None
    #: messages taken and stored in one transaction; also the RabbitMQ prefetch and the JetStream
    #: consumer's max_ack_pending, so at most this many messages are unacknowledged at once
    prefetch: int = Field(default=100, ge=1, le=10_000)
    #: seconds a batch waits for more messages before it is stored as it is
    batch_wait_seconds: float = Field(default=0.2, gt=0, le=60)
    #: nats: seconds after which JetStream redelivers a message that was not acknowledged
    ack_wait_seconds: float = Field(default=30.0, ge=1, le=3600)
    #: a mapping preset (docs/mapping.md) for vendor payloads; None: canonical events
    preset: str | None = None
    #: the ``source`` of the events: fills it in where an event has none, and replaces the
    #: preset's default source for mapped payloads
    source: str | None = Field(default=None, min_length=1, max_length=255)
    #: the first wait after a failure (store or broker unavailable), doubled up to the maximum
    backoff_seconds: float = Field(default=1.0, gt=0, le=300)
    max_backoff_seconds: float = Field(default=60.0, gt=0, le=3600)
    #: events one message may carry (as POST /v1/events); more makes the message a dead letter
    max_events: int = Field(default=10_000, ge=1, le=100_000)

    @field_validator("url_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        return env_var_name(value)

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if not parts.netloc:
            raise ValueError("must be a URL such as amqp://host:5672/%2F or nats://host:4222")
        if parts.password is not None or (parts.username and parts.scheme.startswith("nats")):
            raise ValueError(
                "holds credentials: put the URL in an environment variable and name it in url_env"
            )
        return value

    @field_validator("queue", "stream", "subject", "durable", "preset")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _complete(self) -> BrokerConsumer:
        if self.url is not None and self.url_env is not None:
            raise ValueError("give url (no credentials) or url_env (a variable's name), not both")
        if self.url is not None:
            scheme = urlsplit(self.url).scheme
            if scheme not in SCHEMES[self.kind]:
                allowed = " or ".join(f"{s}://" for s in SCHEMES[self.kind])
                raise ValueError(f"a {self.kind} url starts with {allowed}")
        if self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError("max_backoff_seconds must not be below backoff_seconds")
        if self.kind == "rabbitmq":
            if self.queue is None:
                raise ValueError("a rabbitmq consumer needs its queue")
            if self.stream or self.subject or self.durable:
                raise ValueError("stream, subject and durable are for nats consumers")
        else:
            missing = [k for k in ("stream", "subject", "durable") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a nats consumer needs {', '.join(missing)}")
            for key in ("stream", "durable"):
                if not _NATS_NAME.match(getattr(self, key)):
                    raise ValueError(f"{key} may hold only letters, digits, '-' and '_'")
            if self.queue is not None:
                raise ValueError("queue is for rabbitmq consumers")
        return self

    def resolved_url(self) -> str:
        """The broker URL: from the named variable, the plain URL, or the local default."""
        if self.url_env is not None:
            return os.environ[self.url_env]
        return self.url or DEFAULT_URLS[self.kind]


def check_names(consumers: dict[str, BrokerConsumer]) -> dict[str, BrokerConsumer]:
    for name in consumers:
        if not _NAME.match(name):
            raise ValueError(
                f"the consumer name {name!r} may hold only letters, digits, '.', '-' and '_' "
                "(at most 64)"
            )
    return consumers


#: The type of ``Settings.brokers``: consumer name -> consumer.
Brokers = Annotated[dict[str, BrokerConsumer], AfterValidator(check_names)]

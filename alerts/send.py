"""Sending a replay to the middleware: an HTTP request built from the target's template, or the
flow's original event re-published to a RabbitMQ exchange. Tried again with exponential backoff
on timeouts, connection failures and 5xx answers, never on 4xx (api.md). Credentials come from the
environment when the request is built and are redacted in what is stored."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from alerts.replay import fill
from core.replay_settings import AmqpTarget, HttpTarget, ReplaySettings
from core.settings import headers_from_env

log = logging.getLogger("syncwatch.replay")

REDACTED = "<redacted>"
_EXCERPT = 2000


@dataclass(frozen=True)
class Outbound:
    """One request, ready to send; ``secret_headers`` are sent but never stored."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    secret_headers: dict[str, str] = field(default_factory=dict)

    def stored(self) -> dict[str, Any]:
        headers = dict(self.headers) | {name: REDACTED for name in self.secret_headers}
        body = None if self.body is None else self.body.decode("utf-8", "replace")[:_EXCERPT]
        return {"method": self.method, "url": self.url, "headers": headers, "body": body}


@dataclass(frozen=True)
class Published:
    """An AMQP message, ready to publish."""

    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, str]
    #: the target it goes to (its broker): several sources may share an exchange name
    target: AmqpTarget | None = field(default=None, compare=False, repr=False)

    def stored(self) -> dict[str, Any]:
        return {
            "broker": "amqp",
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "headers": self.headers,
            "body": self.body.decode("utf-8", "replace")[:_EXCERPT],
        }


@dataclass(frozen=True)
class SendResult:
    ok: bool
    attempts: int
    response: dict[str, Any]  # status and an excerpt of the body, or the error
    message: str | None = None  # why it failed


def build_http(
    target: HttpTarget, values: dict[str, str], body: bytes | None, idempotency_key: str
) -> Outbound:
    headers = {name: fill(value, values) for name, value in target.headers.items()}
    headers.setdefault("Idempotency-Key", idempotency_key)
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    secret: dict[str, str] = {}
    if target.token_env is not None:
        secret["Authorization"] = "Bearer " + _env(target.token_env)
    if target.username_env is not None and target.password_env is not None:
        pair = f"{_env(target.username_env)}:{_env(target.password_env)}"
        secret["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    if target.headers_env is not None:
        secret |= headers_from_env(target.headers_env)
    return Outbound(target.method, fill(target.url, values), headers, body, secret)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(f"the environment variable {name} is not set")
    return value


def _retryable(status: int) -> bool:
    return status >= 500


def http_client(
    settings: ReplaySettings, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    return httpx.Client(timeout=settings.timeout_seconds, transport=transport)


def send_http(
    request: Outbound,
    settings: ReplaySettings,
    client: httpx.Client,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> SendResult:
    """Send with retries. ``client`` (from :func:`http_client`) is made once and reused: making
    one costs about 30 ms (its TLS context)."""
    attempts = 0
    response: dict[str, Any] = {}
    message: str | None = None
    while attempts < settings.attempts:
        if attempts:
            sleep(settings.backoff_seconds * 2 ** (attempts - 1))
        attempts += 1
        try:
            answer = client.request(
                request.method,
                request.url,
                headers=request.headers | request.secret_headers,
                content=request.body,
            )
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
            kind = "timeout" if isinstance(error, httpx.TimeoutException) else "network"
            response = {"error": f"{kind}: {type(error).__name__}: {error}"[:_EXCERPT]}
            message = f"the middleware did not answer ({kind}) after {attempts} attempts"
            log.warning("replay to %s: %s (attempt %d)", request.url, kind, attempts)
            continue
        response = {"status": answer.status_code, "body": answer.text[:_EXCERPT]}
        if answer.is_success:
            return SendResult(True, attempts, response)
        message = f"the middleware answered {answer.status_code}"
        if not _retryable(answer.status_code):
            return SendResult(False, attempts, response, message + " (not tried again)")
        log.warning("replay to %s: %d (attempt %d)", request.url, answer.status_code, attempts)
    return SendResult(False, attempts, response, f"{message}; gave up after {attempts} attempts")


def build_amqp(
    target: AmqpTarget, values: dict[str, str], event: bytes, headers: dict[str, str]
) -> Published:
    return Published(target.exchange, fill(target.routing_key, values), event, headers, target)


def publish_amqp(
    message: Published,
    target: AmqpTarget,
    settings: ReplaySettings,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> SendResult:
    """Publish with publisher confirms (the broker took it, or it is an error), mandatory (a
    message no queue receives is an error, not a silent drop)."""
    import pika
    from pika import exceptions as amqp_errors

    parameters = pika.URLParameters(_env(target.url_env))
    parameters.socket_timeout = settings.timeout_seconds
    parameters.blocked_connection_timeout = settings.timeout_seconds
    parameters.connection_attempts = 1
    attempts = 0
    error_text = ""
    while attempts < settings.attempts:
        if attempts:
            sleep(settings.backoff_seconds * 2 ** (attempts - 1))
        attempts += 1
        try:
            connection = pika.BlockingConnection(parameters)
        except amqp_errors.AMQPConnectionError as error:
            error_text = f"cannot connect to the broker: {type(error).__name__}"
            continue
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(
                exchange=message.exchange,
                routing_key=message.routing_key,
                body=message.body,
                properties=pika.BasicProperties(
                    content_type="application/cloudevents+json",
                    delivery_mode=pika.DeliveryMode.Persistent,
                    headers=message.headers,
                ),
                mandatory=True,
            )
            return SendResult(True, attempts, {"published": True})
        except amqp_errors.UnroutableError:
            return SendResult(
                False,
                attempts,
                {"error": "unroutable"},
                f"no queue is bound to exchange {message.exchange!r} with routing key "
                f"{message.routing_key!r} (not tried again)",
            )
        except amqp_errors.ChannelClosedByBroker as error:
            error_text = f"{error.reply_code} {error.reply_text}"[:_EXCERPT]
            if 400 <= error.reply_code < 500:  # refused (no such exchange, access): like a 4xx
                return SendResult(
                    False,
                    attempts,
                    {"error": error_text},
                    f"the broker refused the message: {error_text} (not tried again)",
                )
        except amqp_errors.AMQPError as error:
            error_text = f"{type(error).__name__}: {error}"[:_EXCERPT]
        finally:
            if connection.is_open:
                connection.close()
    return SendResult(
        False,
        attempts,
        {"error": error_text},
        f"the broker did not take the message; gave up after {attempts} attempts",
    )

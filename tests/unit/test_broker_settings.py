"""The ``brokers:`` settings (core.broker_settings): consumers by name, URLs without credentials or
named by environment variable, the keys each kind needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from collector.brokers.runner import choose
from core.errors import ConfigError
from core.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SYNCWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _load(**brokers: Any) -> Any:
    return load_settings({"brokers": brokers}).brokers


RABBIT = {"kind": "rabbitmq", "queue": "events"}
NATS = {"kind": "nats", "stream": "EVENTS", "subject": "events.>", "durable": "syncwatch"}


def test_none_by_default() -> None:
    assert load_settings().brokers == {}


def test_both_kinds_with_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_AMQP_URL", "amqp://app:secret@rabbit:5672/prod")
    brokers = _load(orders={**RABBIT, "url_env": "ORDERS_AMQP_URL", "prefetch": 50}, jet=NATS)
    assert brokers["orders"].resolved_url() == "amqp://app:secret@rabbit:5672/prod"
    assert brokers["orders"].prefetch == 50
    assert brokers["jet"].resolved_url() == "nats://localhost:4222"
    assert brokers["jet"].prefetch == 100
    assert brokers["jet"].preset is None


@pytest.mark.parametrize(
    ("consumer", "message"),
    [
        ({**RABBIT, "url": "amqp://app:s3cr3t-pw@rabbit/prod"}, "url_env"),
        ({**NATS, "url": "nats://token@nats:4222"}, "url_env"),
        ({**RABBIT, "url_env": "NOT_SET_ANYWHERE_42"}, "NOT_SET_ANYWHERE_42 is not set"),
        ({**RABBIT, "url_env": "amqp://x"}, "NAME of an environment variable"),
        ({**RABBIT, "url": "nats://nats:4222"}, "amqp://"),
        ({"kind": "rabbitmq"}, "needs its queue"),
        ({**NATS, "durable": None}, "needs durable"),
        ({**NATS, "stream": "a.b"}, "stream may hold only"),
        ({**RABBIT, "subject": "x"}, "for nats consumers"),
        ({**RABBIT, "prefetch": 0}, "greater than or equal to 1"),
        ({**RABBIT, "kind": "kafka"}, "rabbitmq"),
        ({**RABBIT, "backoff_seconds": 10, "max_backoff_seconds": 5}, "max_backoff_seconds"),
        ({**RABBIT, "exchange": "x"}, "unknown setting"),
    ],
)
def test_bad_consumers_stop_start_up_naming_the_key(consumer: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(orders=consumer)
    assert "brokers.orders" in raised.value.message
    assert message in raised.value.message
    assert "s3cr3t-pw" not in raised.value.message


def test_consumer_names_are_plain() -> None:
    with pytest.raises(ConfigError, match="consumer name"):
        _load(**{"a b": RABBIT})


def test_choosing_consumers_by_name() -> None:
    brokers = _load(orders=RABBIT, jet=NATS)
    assert list(choose(brokers, [])) == ["orders", "jet"]
    assert list(choose(brokers, ["jet"])) == ["jet"]
    with pytest.raises(ConfigError, match="no broker consumer named nope"):
        choose(brokers, ["nope"])
    with pytest.raises(ConfigError, match="no broker consumers are configured"):
        choose({}, [])

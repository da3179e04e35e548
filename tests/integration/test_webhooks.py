"""POST /v1/webhooks/{preset} over HTTP on SQLite and PostgreSQL: signed deliveries (Standard
Webhooks, DocuSign Connect HMAC, Ironclad RSA) are mapped and ingested; a wrong signature, an old
or future timestamp, or a replayed delivery ID is refused (401) and stores nothing; two secrets are
valid during a rotation; an ingest key may post unsigned when allowed; an authenticated payload
that cannot be mapped is kept in the dead-letter store with the reason; a bad preset stops
start-up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fastapi.testclient import TestClient

from core.db import Database
from core.errors import ConfigError
from core.settings import Settings, load_settings
from core.tables import dead_letters, events, webhook_deliveries
from syncwatch.app import create_app
from tests.conftest import bearer

FIXTURES = Path(__file__).parents[1] / "fixtures" / "presets"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
NEW = "whsec_" + base64.b64encode(b"new-secret-0123456789abcdef").decode()
OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()

#: a preset of the operator's own, signed with Standard Webhooks
STANDARD_PRESET = {
    "name": "acme-erp",
    "title": "ACME ERP invoices (Standard Webhooks)",
    "source": "erp/acme",
    "verified": False,
    "docs": [],
    "signature": "standard-webhooks",
    "records": "invoices",
    "events": [
        {
            "type": "invoice.posted",
            "id": "{number}",
            "time": {"path": "postedAt", "format": "odata"},
            "correlationid": {"path": "corr", "optional": True},
            "data": {
                "invoice_id": "number",
                "amount": {"path": "total", "as": "decimal"},
                "currency": {"path": "currency", "default": "EUR"},
            },
        }
    ],
}


def sample(preset: str, name: str) -> bytes:
    return (FIXTURES / preset / f"{name}.json").read_bytes()


def invoices(*numbers: str, total: str = "125000.00") -> bytes:
    return json.dumps(
        {
            "invoices": [
                {"number": n, "postedAt": "/Date(1795428000000+0100)/", "total": total}
                for n in numbers
            ]
        }
    ).encode()


def standard(secret: str, delivery: str, at: datetime, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    stamp = int(at.timestamp())
    digest = hmac.new(key, f"{delivery}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(stamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


def docusign(key: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return {"X-DocuSign-Signature-1": base64.b64encode(digest).decode()}


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("rsa")
    private = folder / "private.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
         "-out", str(private)],
        check=True, capture_output=True,
    )  # fmt: skip
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout"], check=True, capture_output=True
    ).stdout.decode()
    return private, public


def ironclad(private: Path, event_id: str, body: bytes) -> dict[str, str]:
    nonce = "a1b2c3"
    signed = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(private)],
        input=event_id.encode() + body + nonce.encode(), check=True, capture_output=True,
    ).stdout  # fmt: skip
    verification = {"nonce": nonce, "signAlgorithm": "RSA-SHA256", "encoding": "base64",
                    "signature": base64.b64encode(signed).decode()}  # fmt: skip
    return {
        "X-Ironclad-Webhook-Event-Id": event_id,
        "X-Ironclad-Webhook-Verification": json.dumps(verification),
    }


@pytest.fixture
def preset_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "acme-erp.yaml").write_text(yaml.safe_dump(STANDARD_PRESET))
    return folder


@pytest.fixture
def webhook_settings(
    tmp_path: Path,
    database_url: str,
    preset_dir: Path,
    rsa_key: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    monkeypatch.setenv("ACME_SECRET_NEW", NEW)
    monkeypatch.setenv("ACME_SECRET_OLD", OLD)
    monkeypatch.setenv("DOCUSIGN_CONNECT_KEY", "docusign-connect-key-1")
    monkeypatch.setenv("IRONCLAD_PUBLIC_KEY", rsa_key[1])
    return load_settings(
        {
            "data_dir": tmp_path,
            "database_url": database_url,
            "ingest": {"max_body_bytes": 4096},
            "preset_dirs": [str(preset_dir)],
            "webhooks": {
                "presets": {
                    "acme-erp": {"secret_envs": ["ACME_SECRET_NEW", "ACME_SECRET_OLD"]},
                    "docusign": {
                        "secret_envs": ["DOCUSIGN_CONNECT_KEY"],
                        "allow_ingest_key": False,
                    },
                    "ironclad": {"secret_envs": ["IRONCLAD_PUBLIC_KEY"]},
                },
            },
        }
    )


@pytest.fixture
def hooks(webhook_settings: Settings, database: Database) -> Iterator[TestClient]:
    with TestClient(create_app(webhook_settings, database, clock=lambda: NOW)) as client:
        yield client


def stored(database: Database) -> list[Any]:
    with database.read() as connection:
        return list(connection.execute(sa.select(events).order_by(events.c.seq)))


def letters(database: Database) -> list[Any]:
    with database.read() as connection:
        return list(connection.execute(sa.select(dead_letters).order_by(dead_letters.c.id)))


def refused(response: Any, fragment: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "unauthenticated" and fragment in error["message"], error


# --- Standard Webhooks ---------------------------------------------------------------------------


def test_a_signed_standard_webhook_is_mapped_and_ingested(
    hooks: TestClient, database: Database
) -> None:
    body = invoices("INV-1", "INV-2")
    response = hooks.post(
        "/v1/webhooks/acme-erp", content=body, headers=standard(NEW, "m1", NOW, body)
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    rows = stored(database)
    assert [(r.source, r.event_id, r.type) for r in rows] == [
        ("erp/acme", "INV-1", "invoice.posted"),
        ("erp/acme", "INV-2", "invoice.posted"),
    ]
    with database.read() as connection:
        [delivery] = connection.execute(sa.select(webhook_deliveries)).all()
    assert (delivery.preset, delivery.delivery_id) == ("acme-erp", "m1")


def test_rotation_accepts_the_old_and_the_new_secret(hooks: TestClient, database: Database) -> None:
    for secret, delivery, number in ((NEW, "m1", "A"), (OLD, "m2", "B")):
        body = invoices(number)
        response = hooks.post(
            "/v1/webhooks/acme-erp", content=body, headers=standard(secret, delivery, NOW, body)
        )
        assert response.json()["accepted"] == 1, response.text
    assert len(stored(database)) == 2


@pytest.mark.parametrize(
    ("make_headers", "fragment"),
    [
        (
            lambda b: standard("whsec_" + base64.b64encode(b"x" * 24).decode(), "m", NOW, b),
            "does not match",
        ),
        (lambda b: standard(NEW, "m", NOW, b + b" "), "does not match"),
        (lambda b: standard(NEW, "m", NOW - timedelta(minutes=6), b), "older than the tolerance"),
        (lambda b: standard(NEW, "m", NOW + timedelta(minutes=6), b), "in the future"),
        (lambda b: {**standard(NEW, "m", NOW, b), "webhook-timestamp": "x"}, "webhook-timestamp"),
    ],
    ids=["wrong-secret", "tampered-body", "old", "future", "bad-timestamp"],
)
def test_a_bad_signature_or_timestamp_is_refused_and_nothing_is_stored(
    hooks: TestClient, database: Database, keys: dict[str, str], make_headers: Any, fragment: str
) -> None:
    body = invoices("INV-1")
    # a valid ingest key does not rescue a delivery whose signature is bad
    headers = {**make_headers(body), **bearer(keys["ingest"])}
    refused(hooks.post("/v1/webhooks/acme-erp", content=body, headers=headers), fragment)
    assert stored(database) == [] and letters(database) == []


def test_a_replayed_delivery_id_is_refused(hooks: TestClient, database: Database) -> None:
    body = invoices("INV-1")
    first = hooks.post(
        "/v1/webhooks/acme-erp", content=body, headers=standard(NEW, "m1", NOW, body)
    )
    assert first.status_code == 200
    again = hooks.post(
        "/v1/webhooks/acme-erp", content=body, headers=standard(NEW, "m1", NOW, body)
    )
    refused(again, "was received already")
    other = invoices("INV-2")  # the same id with another body, signed again: still a replay
    refused(
        hooks.post("/v1/webhooks/acme-erp", content=other, headers=standard(NEW, "m1", NOW, other)),
        "replay",
    )
    assert [row.event_id for row in stored(database)] == ["INV-1"]


def test_old_delivery_ids_are_pruned_after_twice_the_tolerance(
    webhook_settings: Settings, database: Database
) -> None:
    body = invoices("INV-1")
    with TestClient(create_app(webhook_settings, database, clock=lambda: NOW)) as client:
        client.post("/v1/webhooks/acme-erp", content=body, headers=standard(NEW, "m1", NOW, body))
    later = NOW + timedelta(minutes=11)
    with TestClient(create_app(webhook_settings, database, clock=lambda: later)) as client:
        other = invoices("INV-2")
        response = client.post(
            "/v1/webhooks/acme-erp", content=other, headers=standard(NEW, "m2", later, other)
        )
        assert response.status_code == 200
    with database.read() as connection:
        assert [r.delivery_id for r in connection.execute(sa.select(webhook_deliveries))] == ["m2"]


# --- authentication by key -----------------------------------------------------------------------


def test_unsigned_with_an_ingest_key_is_accepted_when_allowed(
    hooks: TestClient, database: Database, keys: dict[str, str]
) -> None:
    body = invoices("INV-9")
    response = hooks.post("/v1/webhooks/acme-erp", content=body, headers=bearer(keys["ingest"]))
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    again = hooks.post("/v1/webhooks/acme-erp", content=body, headers=bearer(keys["admin"]))
    assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}


def test_unsigned_without_a_key_or_with_a_wrong_role_is_refused(
    hooks: TestClient, database: Database, keys: dict[str, str]
) -> None:
    body = invoices("INV-9")
    refused(
        hooks.post("/v1/webhooks/acme-erp", content=body), "a valid standard-webhooks signature"
    )
    response = hooks.post("/v1/webhooks/acme-erp", content=body, headers=bearer(keys["viewer"]))
    assert response.status_code == 403
    refused(hooks.post("/v1/webhooks/acme-erp", content=body, headers=bearer("sw_nope")), "unknown")
    assert stored(database) == []


def test_a_preset_that_refuses_unsigned_deliveries_refuses_an_ingest_key(
    hooks: TestClient, database: Database, keys: dict[str, str]
) -> None:
    body = sample("docusign", "envelope_completed")
    response = hooks.post("/v1/webhooks/docusign", content=body, headers=bearer(keys["ingest"]))
    refused(response, "accepts only deliveries signed")
    assert stored(database) == []


def test_a_preset_without_secrets_needs_an_ingest_key(
    hooks: TestClient, database: Database, keys: dict[str, str]
) -> None:
    body = sample("workato", "job_succeeded") if (FIXTURES / "workato").is_dir() else b"{}"
    refused(hooks.post("/v1/webhooks/workato", content=body), "needs an ingest key")


# --- the vendor schemes --------------------------------------------------------------------------


def test_docusign_connect_hmac(hooks: TestClient, database: Database) -> None:
    body = sample("docusign", "envelope_completed")
    response = hooks.post(
        "/v1/webhooks/docusign", content=body, headers=docusign("docusign-connect-key-1", body)
    )
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, response.text
    [row] = stored(database)
    assert (row.source, row.type, row.correlation_id) == (
        "clm/docusign",
        "contract.signed",
        "a70a5ef2-12c4-4aaf-84c5-b84134dce420",
    )
    refused(
        hooks.post(
            "/v1/webhooks/docusign", content=body, headers=docusign("docusign-connect-key-1", body)
        ),
        "replay",
    )
    other = sample("docusign", "envelope_sent_with_summary")
    refused(
        hooks.post("/v1/webhooks/docusign", content=other, headers=docusign("wrong-key", other)),
        "no X-DocuSign-Signature header matches",
    )
    assert len(stored(database)) == 1


def test_ironclad_rsa_signature(
    hooks: TestClient, database: Database, rsa_key: tuple[Path, str]
) -> None:
    private, _ = rsa_key
    body = sample("ironclad", "workflow_completed")
    response = hooks.post(
        "/v1/webhooks/ironclad", content=body, headers=ironclad(private, "e1", body)
    )
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}, response.text
    refused(
        hooks.post("/v1/webhooks/ironclad", content=body, headers=ironclad(private, "e1", body)),
        "replay",
    )
    tampered = body.replace(b"611fbd699f4a33b41d9f8295", b"611fbd699f4a33b41d9f8296")
    headers = ironclad(private, "e2", body)
    refused(
        hooks.post("/v1/webhooks/ironclad", content=tampered, headers=headers), "does not verify"
    )
    assert [row.type for row in stored(database)] == ["contract.signed"]


# --- unmappable, malformed, unknown, too large ---------------------------------------------------


def test_an_authenticated_but_unmappable_payload_is_dead_lettered_with_the_reason(
    hooks: TestClient, database: Database
) -> None:
    body = json.dumps({"invoices": [{"number": "INV-1", "postedAt": "yesterday", "total": "1"}]})
    raw = body.encode()
    response = hooks.post(
        "/v1/webhooks/acme-erp", content=raw, headers=standard(NEW, "m1", NOW, raw)
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == 0 and answer["duplicates"] == 0
    [rejection] = answer["rejected"]
    assert "time: postedAt" in rejection["error"] and "OData" in rejection["error"]
    assert stored(database) == []
    [letter] = letters(database)
    assert letter.raw == raw and letter.channel == "webhook:acme-erp"
    assert letter.reason == rejection["error"] and letter.source == "erp/acme"


def test_a_mapped_event_that_is_invalid_is_rejected_like_on_v1_events(
    hooks: TestClient, database: Database, keys: dict[str, str]
) -> None:
    body = invoices("INV-1", total="not money")
    response = hooks.post("/v1/webhooks/acme-erp", content=body, headers=bearer(keys["ingest"]))
    answer = response.json()
    assert answer["accepted"] == 0 and len(answer["rejected"]) == 1
    assert "not a decimal" in answer["rejected"][0]["error"]
    assert len(letters(database)) == 1


def test_a_body_that_is_not_json_is_dead_lettered(
    hooks: TestClient, database: Database, keys: dict[str, str]
) -> None:
    response = hooks.post(
        "/v1/webhooks/acme-erp", content=b"<xml/>", headers=bearer(keys["ingest"])
    )
    assert "not valid JSON" in response.json()["rejected"][0]["error"]
    assert [letter.raw for letter in letters(database)] == [b"<xml/>"]


def test_unknown_preset_is_404_and_too_large_is_413(
    hooks: TestClient, keys: dict[str, str]
) -> None:
    assert (
        hooks.post("/v1/webhooks/nope", content=b"{}", headers=bearer(keys["ingest"])).status_code
        == 404
    )
    big = b'{"invoices": [], "pad": "' + b"x" * 5000 + b'"}'
    response = hooks.post("/v1/webhooks/acme-erp", content=big, headers=bearer(keys["ingest"]))
    assert response.status_code == 413


# --- configuration -------------------------------------------------------------------------------


def test_a_bad_preset_file_stops_start_up(
    webhook_settings: Settings, database: Database, preset_dir: Path
) -> None:
    (preset_dir / "broken.yaml").write_text(
        yaml.safe_dump({**STANDARD_PRESET, "name": "broken", "colour": "red"})
    )
    with pytest.raises(ConfigError, match=r"broken\.yaml: colour: unknown key"):
        create_app(webhook_settings, database)


def test_configuring_an_unknown_preset_or_an_unusable_secret_stops_start_up(
    tmp_path: Path, database_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAD_SECRET", "not-a-whsec-secret!")
    base = {"data_dir": tmp_path, "database_url": database_url}
    unknown = load_settings({**base, "webhooks": {"presets": {"nosuch": {}}}})
    with pytest.raises(ConfigError, match=r"webhooks\.presets\.nosuch: there is no preset"):
        create_app(unknown, database)
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "acme-erp.yaml").write_text(yaml.safe_dump(STANDARD_PRESET))
    bad = load_settings(
        {
            **base,
            "preset_dirs": [str(folder)],
            "webhooks": {
                "presets": {"acme-erp": {"secret_envs": ["BAD_SECRET"]}},
            },
        }
    )
    with pytest.raises(ConfigError, match=r"secret_envs: the value of \$BAD_SECRET") as caught:
        create_app(bad, database)
    assert "not-a-whsec-secret!" not in str(caught.value)
    with pytest.raises(ConfigError, match="secret_envs"):
        load_settings({**base, "webhooks": {"presets": {"x": {"secret_envs": ["UNSET_VAR_XYZ"]}}}})

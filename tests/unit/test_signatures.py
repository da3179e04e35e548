"""Webhook signature schemes (collector/signatures.py): Standard Webhooks, DocuSign Connect HMAC
and Ironclad's RSA-SHA256, checked against independent signers (the stdlib's hmac for the HMAC
schemes, the openssl command line for RSA)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.signatures import (
    SignatureRefused,
    check_secret,
    is_signed,
    rsa_sha256_verify,
    verify,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
TOLERANCE = timedelta(minutes=5)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(b"fedcba9876543210fedcba9876543210").decode()
BODY = b'{"type":"invoice.posted","id":"1"}'


def standard_headers(secret: str, delivery: str, at: datetime, body: bytes) -> dict[str, str]:
    """Signed as the Standard Webhooks spec says, independently of the code under test."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    stamp = int(at.timestamp())
    digest = hmac.new(key, f"{delivery}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": delivery,
        "webhook-timestamp": str(stamp),
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


def test_standard_webhooks_accepts_a_valid_signature_with_its_id_and_time() -> None:
    headers = standard_headers(SECRET, "msg_1", NOW - timedelta(seconds=30), BODY)
    verified = verify("standard-webhooks", BODY, headers, [SECRET], now=NOW, tolerance=TOLERANCE)
    assert verified.delivery_id == "msg_1"
    assert verified.signed_at == NOW - timedelta(seconds=30)


def test_standard_webhooks_rotation_and_several_signatures() -> None:
    old = standard_headers(OTHER, "msg_2", NOW, BODY)
    assert verify("standard-webhooks", BODY, old, [SECRET, OTHER], now=NOW, tolerance=TOLERANCE)
    both = standard_headers(SECRET, "msg_2", NOW, BODY)
    both["webhook-signature"] = f"v1,bm9wZQ== {both['webhook-signature']} v2,x"
    assert verify("standard-webhooks", BODY, both, [OTHER, SECRET], now=NOW, tolerance=TOLERANCE)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (standard_headers(OTHER, "m", NOW, BODY), "does not match"),
        (standard_headers(SECRET, "m", NOW, BODY + b" "), "does not match"),
        (
            standard_headers(SECRET, "m", NOW - timedelta(minutes=6), BODY),
            "older than the tolerance",
        ),
        (standard_headers(SECRET, "m", NOW + timedelta(minutes=6), BODY), "in the future"),
        ({"webhook-id": "m", "webhook-signature": "v1,x"}, "needs webhook-id, webhook-timestamp"),
        ({"webhook-id": "m", "webhook-timestamp": "soon", "webhook-signature": "v1,x"}, "number"),
        (
            {"webhook-id": "m", "webhook-timestamp": "1795428000", "webhook-signature": "v2,x"},
            "no v1",
        ),
    ],
)
def test_standard_webhooks_refusals(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(SignatureRefused, match=reason):
        verify("standard-webhooks", BODY, headers, [SECRET], now=NOW, tolerance=TOLERANCE)


def docusign_header(key: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def test_docusign_connect_hmac_any_header_any_key() -> None:
    headers = {
        "X-DocuSign-Signature-1": docusign_header("new-key", BODY),
        "X-DocuSign-Signature-2": docusign_header("old-key", BODY),
    }
    assert verify("docusign-connect", BODY, headers, ["old-key"], now=NOW, tolerance=TOLERANCE)
    assert verify("docusign-connect", BODY, headers, ["new-key"], now=NOW, tolerance=TOLERANCE)
    assert is_signed("docusign-connect", headers)
    with pytest.raises(SignatureRefused, match="no X-DocuSign-Signature header matches"):
        verify("docusign-connect", BODY + b"x", headers, ["new-key"], now=NOW, tolerance=TOLERANCE)
    with pytest.raises(SignatureRefused, match="needs X-DocuSign-Signature-1"):
        verify("docusign-connect", BODY, {}, ["new-key"], now=NOW, tolerance=TOLERANCE)


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh RSA key made by openssl: (private key file, public key PEM)."""
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


def openssl_sign(private: Path, message: bytes) -> str:
    signed = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(private)],
        input=message, check=True, capture_output=True,
    ).stdout  # fmt: skip
    return base64.b64encode(signed).decode()


def ironclad_headers(
    private: Path, event_id: str, body: bytes, nonce: str = "n0nce"
) -> dict[str, str]:
    signature = openssl_sign(private, event_id.encode() + body + nonce.encode())
    verification = {"nonce": nonce, "signAlgorithm": "RSA-SHA256", "signature": signature,
                    "encoding": "base64"}  # fmt: skip
    return {
        "X-Ironclad-Webhook-Event-Id": event_id,
        "X-Ironclad-Webhook-Verification": json.dumps(verification),
    }


def test_ironclad_rsa_sha256(rsa_key: tuple[Path, str]) -> None:
    private, public = rsa_key
    check_secret("ironclad", public)
    headers = ironclad_headers(private, "evt-1", BODY)
    verified = verify("ironclad", BODY, headers, [public], now=NOW, tolerance=TOLERANCE)
    assert verified.delivery_id == "evt-1"
    with pytest.raises(SignatureRefused, match="does not verify"):
        verify("ironclad", BODY + b" ", headers, [public], now=NOW, tolerance=TOLERANCE)
    tampered = {**headers, "X-Ironclad-Webhook-Event-Id": "evt-2"}
    with pytest.raises(SignatureRefused, match="does not verify"):
        verify("ironclad", BODY, tampered, [public], now=NOW, tolerance=TOLERANCE)
    with pytest.raises(SignatureRefused, match="JSON object"):
        verify("ironclad", BODY, {**headers, "X-Ironclad-Webhook-Verification": "x"}, [public],
               now=NOW, tolerance=TOLERANCE)  # fmt: skip


def test_rsa_verify_refuses_a_signature_of_another_message(rsa_key: tuple[Path, str]) -> None:
    private, public = rsa_key
    signature = base64.b64decode(openssl_sign(private, b"one"))
    assert rsa_sha256_verify(public, b"one", signature)
    assert not rsa_sha256_verify(public, b"two", signature)
    assert not rsa_sha256_verify(public, b"one", signature[:-1])


@pytest.mark.parametrize(
    ("scheme", "secret", "message"),
    [
        ("standard-webhooks", "whsec_not base64!", "not a Standard Webhooks secret"),
        ("standard-webhooks", "whsec_" + base64.b64encode(b"short").decode(), "too short"),
        ("ironclad", "not a key", "not a PEM public key"),
        ("docusign-connect", "", "is empty"),
    ],
)
def test_unusable_secrets_are_refused_without_quoting_them(
    scheme: str, secret: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_secret(scheme, secret)
    assert not secret or secret not in str(caught.value)

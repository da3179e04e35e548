"""Webhook signature schemes (docs/webhooks.md). Pure: the raw body, the headers, the secrets and
``now`` in; the delivery's ID and timestamp out, or :class:`SignatureRefused` with the reason.
Every comparison of a signature is constant-time (:func:`hmac.compare_digest`).

- ``standard-webhooks``: https://www.standardwebhooks.com/ — ``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``
  (several space-separated); secrets ``whsec_<base64>``; a timestamp tolerance.
- ``docusign-connect``: DocuSign Connect HMAC — ``X-DocuSign-Signature-1`` .. ``-N``, each the
  base64 HMAC-SHA256 of the raw body under one Connect key; no timestamp is signed.
- ``ironclad``: Ironclad webhook verification — RSA-SHA256 (PKCS#1 v1.5) with Ironclad's public
  key over the ``X-Ironclad-Webhook-Event-Id``, the body and the nonce of the
  ``X-Ironclad-Webhook-Verification`` header; no timestamp is signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class SignatureRefused(Exception):
    """The delivery is not authentic (or too old, or from the future); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verified:
    delivery_id: str | None
    signed_at: datetime | None


#: the header whose presence says "this delivery is signed", per scheme
_MARKERS = {
    "standard-webhooks": ("webhook-signature",),
    "docusign-connect": ("x-docusign-signature-1",),
    "ironclad": ("x-ironclad-webhook-verification",),
}


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def is_signed(scheme: str | None, headers: Mapping[str, str]) -> bool:
    """Whether the request carries the scheme's signature header."""
    lowered = _lower(headers)
    return scheme in _MARKERS and any(name in lowered for name in _MARKERS[scheme])


def check_secret(scheme: str, secret: str) -> None:
    """ValueError when ``secret`` is not usable by ``scheme`` (the message never quotes it)."""
    if scheme == "standard-webhooks":
        _whsec_key(secret)
    elif scheme == "ironclad":
        _rsa_public_key(secret)
    elif not secret:
        raise ValueError("is empty")


def verify(
    scheme: str,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    now: datetime,
    tolerance: timedelta,
) -> Verified:
    """Verify one delivery against any of ``secrets`` (two during a rotation)."""
    if not secrets:
        raise SignatureRefused("no signing secret is configured for this preset")
    lowered = _lower(headers)
    if scheme == "standard-webhooks":
        return _standard(body, lowered, secrets, now=now, tolerance=tolerance)
    if scheme == "docusign-connect":
        return _docusign(body, lowered, secrets)
    if scheme == "ironclad":
        return _ironclad(body, lowered, secrets)
    raise SignatureRefused(f"unknown signature scheme {scheme!r}")


# --- Standard Webhooks -------------------------------------------------------------------------


def _whsec_key(secret: str) -> bytes:
    text = secret.strip()
    text = text.removeprefix("whsec_")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("is not a Standard Webhooks secret (whsec_<base64>)") from exc
    if len(key) < 16:
        raise ValueError("is too short for a Standard Webhooks secret (at least 16 bytes)")
    return key


def standard_signature(secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: what a Standard Webhooks sender puts in ``webhook-signature``."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(_whsec_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _check_time(signed_at: datetime, now: datetime, tolerance: timedelta) -> None:
    if signed_at < now - tolerance:
        raise SignatureRefused(
            f"the delivery's timestamp {signed_at.isoformat()} is older than the tolerance of "
            f"{int(tolerance.total_seconds())} seconds"
        )
    if signed_at > now + tolerance:
        raise SignatureRefused(
            f"the delivery's timestamp {signed_at.isoformat()} is in the future (beyond the "
            f"tolerance of {int(tolerance.total_seconds())} seconds)"
        )


def _standard(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    *,
    now: datetime,
    tolerance: timedelta,
) -> Verified:
    delivery_id = headers.get("webhook-id", "").strip()
    stamp = headers.get("webhook-timestamp", "").strip()
    given = headers.get("webhook-signature", "").strip()
    if not delivery_id or not stamp or not given:
        raise SignatureRefused(
            "a Standard Webhooks delivery needs webhook-id, webhook-timestamp and "
            "webhook-signature headers"
        )
    if not re.fullmatch(r"\d{1,12}", stamp):
        raise SignatureRefused("webhook-timestamp is not a number of seconds since the epoch")
    signed_at = datetime.fromtimestamp(int(stamp), tz=UTC)
    _check_time(signed_at, now, tolerance)
    candidates = [
        part.split(",", 1)[1].encode("ascii", "replace")
        for part in given.split()
        if part.startswith("v1,")
    ]
    if not candidates:
        raise SignatureRefused("webhook-signature has no v1 signature")
    for secret in secrets:
        expected = standard_signature(secret, delivery_id, int(stamp), body)[3:].encode("ascii")
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return Verified(delivery_id, signed_at)
    raise SignatureRefused("the webhook-signature does not match the body under any secret")


# --- DocuSign Connect --------------------------------------------------------------------------


def docusign_signature(secret: str, body: bytes) -> str:
    """The base64 HMAC-SHA256 of the body: what Connect puts in ``X-DocuSign-Signature-n``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _docusign(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> Verified:
    given = [
        value.strip().encode("ascii", "replace")
        for name, value in headers.items()
        if re.fullmatch(r"x-docusign-signature-\d{1,3}", name)
    ]
    if not given:
        raise SignatureRefused("a DocuSign Connect delivery needs X-DocuSign-Signature-1")
    for secret in secrets:
        expected = docusign_signature(secret, body).encode("ascii")
        if any(hmac.compare_digest(expected, candidate) for candidate in given):
            return Verified(None, None)
    raise SignatureRefused("no X-DocuSign-Signature header matches the body under any key")


# --- Ironclad ----------------------------------------------------------------------------------


def _rsa_public_key(pem: str) -> rsa.RSAPublicKey:
    """A PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo) or ``RSA PUBLIC KEY`` (PKCS#1), read by the
    ``cryptography`` package; at least 1024 bits."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("is not an RSA public key")
    if key.key_size < 1024:
        raise ValueError("is not a usable RSA public key (at least 1024 bits)")
    return key


def rsa_sha256_verify(pem: str, message: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017, 8.2.2)."""
    try:
        _rsa_public_key(pem).verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def _ironclad(body: bytes, headers: Mapping[str, str], keys: Sequence[str]) -> Verified:
    event_id = headers.get("x-ironclad-webhook-event-id", "").strip()
    raw = headers.get("x-ironclad-webhook-verification", "")
    if not event_id or not raw:
        raise SignatureRefused(
            "an Ironclad delivery needs X-Ironclad-Webhook-Event-Id and "
            "X-Ironclad-Webhook-Verification headers"
        )
    try:
        verification = json.loads(raw)
        nonce = str(verification["nonce"])
        algorithm = str(verification.get("signAlgorithm", "RSA-SHA256")).upper()
        encoding = str(verification.get("encoding", "base64")).lower()
        text = str(verification["signature"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureRefused(
            "X-Ironclad-Webhook-Verification is not a JSON object with nonce and signature"
        ) from exc
    if algorithm not in ("RSA-SHA256", "SHA256"):
        raise SignatureRefused(f"unsupported Ironclad signAlgorithm {algorithm!r}")
    try:
        signature = bytes.fromhex(text) if encoding == "hex" else base64.b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise SignatureRefused(f"the Ironclad signature is not valid {encoding}") from exc
    prefix = event_id.encode("utf-8")
    # Ironclad's document names the order event id, body, nonce; an older revision of it named
    # event id, nonce, body. Both are signatures by Ironclad's key over the same body.
    messages = (prefix + body + nonce.encode("utf-8"), prefix + nonce.encode("utf-8") + body)
    for key in keys:
        if any(rsa_sha256_verify(key, message, signature) for message in messages):
            return Verified(event_id, None)
    raise SignatureRefused("the Ironclad signature does not verify under any configured key")

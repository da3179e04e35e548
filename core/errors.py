"""The error hierarchy. Each error knows its HTTP status; the mapping to HTTP happens once, at the
edge (``syncwatch.app``)."""

from __future__ import annotations

from typing import Any


class SyncwatchError(Exception):
    """Base of every error syncwatch raises on purpose."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(SyncwatchError):
    """Bad configuration; the message names the key."""

    code = "config"


class MalformedRequest(SyncwatchError):
    status_code = 400
    code = "malformed"


class Unauthenticated(SyncwatchError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(SyncwatchError):
    status_code = 403
    code = "forbidden"


class NotFound(SyncwatchError):
    status_code = 404
    code = "not_found"


class Conflict(SyncwatchError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(SyncwatchError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(SyncwatchError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidInput(SyncwatchError):
    status_code = 422
    code = "invalid"


class StoreUnavailable(SyncwatchError):
    """The database cannot be reached; the transaction was rolled back, nothing half-written."""

    status_code = 503
    code = "store_unavailable"

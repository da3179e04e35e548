"""The dashboard's HTTP client of the syncwatch API (api.md). Pure Python, no Streamlit: the pages
call it through :mod:`dashboard.loaders`, which adds the cache.

The dashboard talks to the API over HTTP only (ARCHITECTURE.md): nothing here imports core,
probes, kpis or alerts. Reads use the configured read-only key (``SYNCWATCH_API_KEY``); actions
use the operator's own key, passed per call, so the audit trail names a person."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

URL_ENV = "SYNCWATCH_API_URL"
KEY_ENV = "SYNCWATCH_API_KEY"
#: Seconds; the overview against a large store is computed in well under this.
TIMEOUT_SECONDS = 30.0

Params = Mapping[str, str | int | float | bool | None]


class ApiError(Exception):
    """The API answered with an error (``{"error": {"code", "message", "details"}}``), or could not
    be asked. ``status`` is the HTTP status (0 when there was no answer)."""

    def __init__(
        self, message: str, *, status: int = 0, code: str = "", details: Any = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details


class NotConfigured(ApiError):
    """``SYNCWATCH_API_URL`` is not set."""


class Unreachable(ApiError):
    """No answer: connection refused, DNS, timeout."""


class Unauthorized(ApiError):
    """401: no key, or the key is unknown or revoked."""


class Forbidden(ApiError):
    """403: the key lacks the role."""


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409: a guardrail refused (``details.refusal`` names which), or already done."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
}


@dataclass(frozen=True)
class Download:
    """A file the API served."""

    content: bytes
    media_type: str


@dataclass(frozen=True)
class ApiClient:
    """``base_url`` like ``http://127.0.0.1:8000``; ``key`` the read key (may be empty)."""

    base_url: str
    key: str = ""
    timeout: float = TIMEOUT_SECONDS
    transport: httpx.BaseTransport | None = field(default=None, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiClient:
        """From the system environment; :class:`NotConfigured` when the URL is unset."""
        env = os.environ if environ is None else environ
        url = env.get(URL_ENV, "").strip()
        if not url:
            raise NotConfigured(
                f"{URL_ENV} is not set: point it at the syncwatch API, e.g. http://127.0.0.1:8000"
            )
        return cls(base_url=url.rstrip("/"), key=env.get(KEY_ENV, "").strip())

    # --- the calls ---

    def get(self, path: str, params: Params | None = None, *, key: str | None = None) -> Any:
        """The JSON answer of ``GET path``."""
        return self._request("GET", path, params=params, key=key).json()

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        key: str,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The JSON answer of ``POST path`` made with ``key`` (an operator's own key)."""
        return self._request("POST", path, body=body, key=key, headers=headers).json()

    def download(self, path: str) -> Download:
        answer = self._request("GET", path)
        return Download(answer.content, answer.headers.get("content-type", ""))

    # --- the plumbing ---

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Any = None,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or {})
        bearer = self.key if key is None else key
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        query = dict(query_of(params))
        try:
            with httpx.Client(
                base_url=self.base_url, timeout=self.timeout, transport=self.transport
            ) as client:
                answer = client.request(
                    method,
                    path,
                    params=query,
                    json=body if method == "POST" else None,
                    headers=sent,
                )
        except httpx.TransportError as error:
            raise Unreachable(
                f"the syncwatch API at {self.base_url} is unreachable ({type(error).__name__})"
            ) from error
        if answer.status_code >= 400:
            raise error_of(answer)
        return answer


def error_of(answer: httpx.Response) -> ApiError:
    """The typed error of an error answer."""
    status = answer.status_code
    code, message, details = "", "", None
    try:
        error = answer.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        details = error.get("details")
    if not message:
        message = f"HTTP {status} {answer.reason_phrase}".strip()
    kind = _BY_STATUS.get(status, ApiError)
    return kind(message, status=status, code=code, details=details)


def flow_path(flow_id: str, suffix: str = "") -> str:
    """``/v1/flows/<flow_id>[suffix]`` with the flow ID escaped."""
    return f"/v1/flows/{quote(flow_id, safe=':')}{suffix}"


def query_of(params: Params | None) -> tuple[tuple[str, str], ...]:
    """The query string's pairs, sorted (hashable: the loaders' cache key); None values left out,
    booleans as ``true``/``false``."""
    return tuple(
        sorted((name, _text(value)) for name, value in (params or {}).items() if value is not None)
    )


def _text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

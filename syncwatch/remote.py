"""The command line asking a running syncwatch over its API (``SYNCWATCH_API_URL`` with
``SYNCWATCH_API_KEY``), so that an operator acts under their own key."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx

from core.errors import ConfigError


def replay_via_api(
    api_url: str, flow_id: str, reason: str, force: bool, key: str
) -> tuple[int, dict[str, Any]]:
    api_key = os.environ.get("SYNCWATCH_API_KEY")
    if not api_key:
        raise ConfigError("SYNCWATCH_API_KEY: an oncall key is needed with SYNCWATCH_API_URL")
    url = f"{api_url.rstrip('/')}/v1/flows/{quote(flow_id, safe='')}/replay"
    try:
        response = httpx.post(
            url,
            json={"reason": reason, "force": force},
            headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": key},
            timeout=120,
        )
    except (httpx.ConnectError, httpx.ConnectTimeout) as error:
        message = f"cannot reach {api_url}: {error}; nothing was asked"
        return 503, {"error": {"message": message}}
    except httpx.TransportError as error:
        message = (
            f"no answer from {api_url} ({type(error).__name__}: {error}): the replay may have "
            f"been sent; run again with --idempotency-key {key} (a repeat never sends twice)"
        )
        return 503, {"error": {"message": message}}
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": f"HTTP {response.status_code}: {response.text[:300]}"}}
    return response.status_code, body

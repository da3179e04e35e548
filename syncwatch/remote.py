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
    response = httpx.post(
        url,
        json={"reason": reason, "force": force},
        headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": key},
        timeout=120,
    )
    try:
        body = response.json()
    except ValueError:
        body = {"error": {"message": f"HTTP {response.status_code}: {response.text[:300]}"}}
    return response.status_code, body

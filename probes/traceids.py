"""Deterministic OpenTelemetry identifiers of a flow: the same flow always has the same trace ID
and the same span IDs, so a re-export of its trace never duplicates it, and the exemplars of
/metrics point at the trace that the exporter sends."""

from __future__ import annotations

import hashlib


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(("syncwatch", *parts)).encode()).digest()


def trace_id(flow_id: str) -> str:
    """32 lowercase hex digits (16 bytes), never all zero."""
    value = _digest("trace", flow_id)[:16]
    return (value if any(value) else b"\x01" + value[1:]).hex()


def span_id(flow_id: str, name: str) -> str:
    """16 lowercase hex digits (8 bytes), never all zero: one per span ``name`` of the flow."""
    value = _digest("span", flow_id, name)[:8]
    return (value if any(value) else b"\x01" + value[1:]).hex()

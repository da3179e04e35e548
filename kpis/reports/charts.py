"""Small SVG charts of our own, as ``data:`` image URIs: they need no JavaScript and no network,
so the HTML opens offline and WeasyPrint draws them in the PDF as images. Pure."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from decimal import Decimal
from html import escape

_LINE = "#1f5fa8"
_MUTED = "#9aa5b1"
_BAR = "#c2410c"


def data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode("ascii")


def _svg(width: int, height: int, body: str, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{escape(title)}</title>{body}</svg>'
    )


def sparkline(
    values: Sequence[Decimal | None], title: str, width: int = 100, height: int = 24
) -> str:
    """The 8-week trend: a line through the weeks with a value (gaps where null), the last week
    marked with a dot. The vertical scale spans the values' range (a flat line when constant)."""
    known = [v for v in values if v is not None]
    pad = 3
    if not known:
        mid = height // 2
        body = (
            f'<line x1="{pad}" y1="{mid}" x2="{width - pad}" y2="{mid}" stroke="{_MUTED}" '
            'stroke-dasharray="3,3"/>'
        )
        return _svg(width, height, body, title)
    low, high = min(known), max(known)
    span = high - low
    step = (width - 2 * pad) / max(len(values) - 1, 1)

    def point(index: int, value: Decimal) -> tuple[float, float]:
        share = float((value - low) / span) if span else 0.5
        return pad + index * step, height - pad - share * (height - 2 * pad)

    segments: list[list[tuple[float, float]]] = [[]]
    for index, value in enumerate(values):
        if value is None:
            segments.append([])
        else:
            segments[-1].append(point(index, value))
    body = ""
    for segment in segments:
        if len(segment) > 1:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in segment)
            body += f'<polyline points="{coords}" fill="none" stroke="{_LINE}" stroke-width="1.5"/>'
        elif segment:
            x, y = segment[0]
            body += f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.5" fill="{_LINE}"/>'
    if values[-1] is not None:
        x, y = point(len(values) - 1, values[-1])
        body += f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{_LINE}"/>'
    return _svg(width, height, body, title)


def bars(items: Sequence[tuple[str, int]], title: str, width: int = 420) -> str:
    """Horizontal bars with their labels and counts (exceptions by queue, misses by stage)."""
    row, label_width = 20, 170
    height = max(row * len(items), row)
    top = max((count for _, count in items), default=0)
    body = ""
    for index, (label, count) in enumerate(items):
        y = index * row
        length = 0.0 if top == 0 else (width - label_width - 50) * count / top
        body += (
            f'<text x="0" y="{y + 14}" font-size="11" font-family="sans-serif">'
            f"{escape(label)}</text>"
            f'<rect x="{label_width}" y="{y + 4}" width="{length:.1f}" height="12" fill="{_BAR}"/>'
            f'<text x="{label_width + length + 4:.1f}" y="{y + 14}" font-size="11" '
            f'font-family="sans-serif">{count}</text>'
        )
    return _svg(width, height, body, title)

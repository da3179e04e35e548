"""The weekly report as PDF: the same HTML through WeasyPrint, on A4 (the page size is in the
HTML's ``@page`` rule), the charts drawn from their SVG ``data:`` images. WeasyPrint may fetch
``data:`` URLs only, and a failed fetch stops the rendering, so making a PDF never touches the
network and never silently drops a chart."""

from __future__ import annotations

from typing import Any


def _fetcher() -> Any:
    from weasyprint import urls

    if hasattr(urls, "URLFetcher"):  # WeasyPrint >= 68
        return urls.URLFetcher(allowed_protocols=("data",), fail_on_errors=True)

    def fetch(url: str) -> Any:  # pragma: no cover - older WeasyPrint
        if not url.startswith("data:"):
            raise ValueError(f"the report refers to {url!r}; it must be self-contained")
        return urls.default_url_fetcher(url)

    return fetch


def render(html: str) -> bytes:
    import weasyprint  # heavy: imported only when a PDF is asked for

    pdf: bytes = weasyprint.HTML(string=html, url_fetcher=_fetcher()).write_pdf()
    return pdf

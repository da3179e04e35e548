"""Reading the weekly report's files back as a reader would: the PDF as text (``pdftotext``) and
as a picture (``pdftoppm``, Debian's poppler-utils), the HTML parsed for anything it would fetch."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed"):
            self.scripts += 1
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action", "poster") and value:
                self.urls.append(value)


def assert_self_contained(html: str) -> None:
    parser = _References()
    parser.feed(html)
    assert parser.scripts == 0
    assert parser.urls, "the charts are images"
    assert all(url.startswith("data:image/svg+xml;base64,") for url in parser.urls), parser.urls
    assert not re.search(r"@import|url\(", html)


def pdf_text(pdf: bytes, folder: Path) -> str:
    path = folder / "report.pdf"
    path.write_bytes(pdf)
    assert pdf.startswith(b"%PDF-")
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True)
    assert "(A4)" in info.stdout
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def draw_page(pdf: bytes, folder: Path) -> Path:
    path = folder / "report.pdf"
    path.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(path), str(folder / "page")],
        check=True,
    )
    (page,) = folder.glob("page*.png")
    return page

"""The dashboard in a real browser: ``streamlit run`` as a subprocess on a free port, and Debian's
headless Chromium driven by selenium through Debian's chromedriver (shared/PITFALLS.md: a plain
screenshot shows Streamlit's empty shell; wait until the script has run and the elements exist)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.support.servers import free_port, tail

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def streamlit_server(
    app: Path, env: Mapping[str, str], log: Path, *, timeout: float = 60
) -> Iterator[str]:
    """``streamlit run app`` headless on a free loopback port; yields its URL once healthy."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--server.headless",
        "true",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited ({process.returncode}):\n{tail(log)}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not become healthy:\n{tail(log)}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextmanager
def chromium(width: int = 1400, height: int = 1800) -> Iterator[webdriver.Chrome]:
    """Debian's Chromium, headless, with a fresh profile and no background network."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(
    driver: webdriver.Chrome,
    ready: Callable[[webdriver.Chrome], Any],
    *,
    timeout: float = 60,
    what: str = "the page",
) -> Any:
    """Poll ``ready(driver)`` until it returns something truthy; fail with the page's text."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = ready(driver)
        except WebDriverException:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            body = driver.find_element(By.TAG_NAME, "body").text[:3000]
            raise AssertionError(f"{what} did not render within {timeout}s; page text:\n{body}")
        time.sleep(0.25)


def script_finished(driver: webdriver.Chrome) -> bool:
    """Streamlit's script has run to the end (its websocket answered and the page is drawn)."""
    apps = driver.find_elements(By.CSS_SELECTOR, "[data-testid=stApp]")
    return bool(apps) and apps[0].get_attribute("data-test-script-state") == "notRunning"


#: (label, value) of every ``st.metric`` tile, read in one round trip (selenium's element calls
#: cost one each: slow on a loaded machine).
_METRICS_JS = """
return [...document.querySelectorAll('[data-testid=stMetric]')].map(tile => {
  const text = (id) => { const e = tile.querySelector(`[data-testid=${id}]`);
                         return e ? e.innerText.trim() : ''; };
  return [text('stMetricLabel'), text('stMetricValue')];
});
"""


def metric_tiles(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    """(label, value) of every ``st.metric`` tile on the page, in page order, as drawn."""
    found = driver.execute_script(_METRICS_JS) or []
    return [(str(label), str(value)) for label, value in found]


def tiles_ready(driver: webdriver.Chrome) -> list[tuple[str, str]] | None:
    """The tiles once the script has finished and every tile holds a value, else None (the
    state is ``notRunning`` also before the first run starts: the tiles must be there too)."""
    if not script_finished(driver):
        return None
    found = metric_tiles(driver)
    if not found or any(not label or not value for label, value in found):
        return None
    return found

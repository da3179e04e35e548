"""The dashboard in a real browser: a real syncwatch API with known data (the fixed-clock world of
tests/support/dashboard_world.py, served by uvicorn over HTTP), ``streamlit run dashboard/app.py``
as a subprocess pointed at it, and Debian's headless Chromium driven by selenium. The overview's
KPI tiles, as the browser draws them, must equal ``GET /v1/kpis`` (as_of = the API's clock, the
default window 7d), formatted as dashboard/tiles.py says.

The screenshot of the drawn overview is saved in the test's ``tmp_path`` (pytest keeps the last
three runs under ``$TMPDIR/pytest-of-$USER/``), as ``overview-<database>.png``; set
``SYNCWATCH_TEST_OUTPUT`` to a directory to get a copy there too. Skipped only when Chromium or
chromedriver is not installed (scripts/setup.sh installs them)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.db import Database
from dashboard.tables import when
from tests.support.browser import (
    CHROMEDRIVER,
    CHROMIUM,
    chromium,
    streamlit_server,
    tiles_ready,
    wait_until,
)
from tests.support.dashboard_expected import expected_tiles
from tests.support.dashboard_world import AS_OF, TOKEN_ENV, World, running_world, z

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
OUTPUT_ENV = "SYNCWATCH_TEST_OUTPUT"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason=f"Debian's Chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}) is not installed: "
    "apt-get install -y chromium chromium-driver",
)


@pytest.fixture
def world(
    tmp_path: Path, database_url: str, database: Database, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    monkeypatch.setenv(TOKEN_ENV, "mule-token-for-the-browser-test")
    with running_world(tmp_path / "api", database_url, database) as running:
        yield running


def test_the_browser_shows_the_kpis_of_the_api(
    world: World, tmp_path: Path, database_url: str
) -> None:
    env = {
        "SYNCWATCH_API_URL": world.url,
        "SYNCWATCH_API_KEY": world.keys["viewer"],
        "HOME": str(tmp_path),  # no ~/.streamlit of the machine's user
    }
    with (
        streamlit_server(APP, env, tmp_path / "streamlit.log") as url,
        chromium() as driver,
    ):
        driver.get(url)
        pairs = wait_until(driver, tiles_ready, timeout=90, what="the overview's KPI tiles")
        screenshot = tmp_path / f"overview-{dialect(database_url)}.png"
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(screenshot)), "no screenshot"
        body = driver.find_element("tag name", "body").text
    copy_out(screenshot)

    # The tiles hold the API's numbers for the same instant and window.
    now = world.get("/v1/kpis", as_of=z(AS_OF), window="7d")
    assert now["as_of"] == z(AS_OF)
    shown = dict(pairs)
    assert len(shown) == len(pairs), pairs  # every label once
    assert shown == expected_tiles(now)
    # Worked out from the scenario, so that a wrong format cannot agree with itself.
    assert shown["Stuck flows"] == "2"
    assert shown["Revenue at risk (USD)"] == "5,000.00"
    assert shown["Invoice dispute rate"] == "50.00%"
    assert shown["Propagation success"] == "66.67%"
    assert shown["Setup cycle time p50"] == "10.00 h"
    assert shown["Billing lag p50"] == "—"  # null: never shown as 0
    # The caption names the same instant and window the API answered for.
    assert f"As of {when(now['as_of'])}: the last 7d, from {when(now['window']['start'])}" in body
    assert "Error" not in body and "Traceback" not in body, body[:2000]
    assert screenshot.stat().st_size > 20_000  # a drawn page, not Streamlit's empty shell


def dialect(database_url: str) -> str:
    """``sqlite`` or ``postgresql``, from the URL's scheme."""
    return database_url.partition(":")[0].partition("+")[0]


def copy_out(screenshot: Path) -> None:
    target = os.environ.get(OUTPUT_ENV)
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(target) / screenshot.name)

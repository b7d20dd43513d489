"""Console fixtures: one `fleetpki serve` and one headless Chromium per test session (worker).

Playwright drives Debian's chromium (apt; scripts/setup.sh installs it): Playwright cannot
download its own browser here. Tests share the server, each in a project of its own, and get
a fresh browser context (no cookies) each.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from console_testing import CHROMIUM, CHROMIUM_ARGS, Site
from platform_testing import ServeProcess


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("console") / "data"
    server = ServeProcess(data, workers=0, args=("--verbose",))
    try:
        yield Site(server, data)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (apt package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: object) -> Iterator[object]:
    """A fresh browser context (its own cookies) at laptop size."""
    made = browser.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
    made.set_default_timeout(15_000)
    yield made
    made.close()

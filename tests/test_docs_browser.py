"""/docs renders on an air-gapped server (issue 13): headless Chromium, with every host but the
loopback address unresolvable, loads the Swagger UI page of a live server, which must show the
API's operations, and every request the page made went to that server.

Needs Debian's `chromium` and `chromium-driver` and `selenium`; skipped with the reason when
one is missing (the same binaries as tests/test_dashboard_browser.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from lrs.config import Settings
from tests.test_dashboard_browser import LiveServer, _binary

WAIT_SECONDS = 20.0


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    browser = _binary("LRS_TEST_CHROMIUM", "chromium", "chromium-browser")
    driver = _binary("LRS_TEST_CHROMEDRIVER", "chromedriver")
    if browser is None or driver is None:
        pytest.skip(
            "no headless browser: install Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver) to run the docs browser test"
        )
    return browser, driver


@pytest.fixture(scope="module")
def server(chromium: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    live = LiveServer(
        Settings(
            storage="memory",
            data_dir=tmp_path_factory.mktemp("docs-data"),
            database=f"lrs_docs_{uuid.uuid4().hex[:12]}",
            redis_url=None,
            derivation="inprocess",
        )
    )
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def offline_browser(
    chromium: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        # No network: every name but the loopback address fails to resolve, so a CDN asset
        # could not load (and nothing is sent anywhere).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-docs-profile')}",
    ):
        options.add_argument(flag)
    # The performance log holds every request the page made (DevTools Network events).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _requested_urls(driver: Any) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_swagger_ui_renders_the_api_without_network(offline_browser: Any, server: Any) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = offline_browser
    driver.get(f"{server.url}/docs")
    try:
        WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.2).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20
        )
    except TimeoutException:
        logs = "\n".join(str(e.get("message")) for e in driver.get_log("browser")[-20:])
        pytest.fail(f"Swagger UI did not render the operations in {WAIT_SECONDS:.0f} s\n{logs}")
    title = driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    assert title.startswith("LRS")
    summaries = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary"))
    assert "/xapi/statements" in summaries and "/courses/{courseId}" in summaries
    # "Authorize" is there: the HTTP Basic scheme lets "Try it out" authenticate.
    assert driver.find_elements(By.CSS_SELECTOR, ".btn.authorize")
    urls = _requested_urls(driver)
    assert any(url.endswith("/openapi.json") for url in urls)
    assert any("/docs/assets/swagger-ui-bundle.js" in url for url in urls)
    # (chrome:// pages are the browser's own, never fetched from a network.)
    elsewhere = [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:"))]
    elsewhere = [u for u in elsewhere if not u.startswith(server.url + "/")]
    assert not elsewhere, f"the page requested {elsewhere}"

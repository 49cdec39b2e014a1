"""The progress dashboard (issue 6), end to end in a real headless Chromium.

A real uvicorn server of the app runs on a free loopback port in a background thread (in-memory
storage, derivation in-process). The browser signs in with a `progress/read` credential, picks
the course, and must see a grid cell turn `completed` once statements are posted through the
API, without reloading the page.

Needs Debian's `chromium` and `chromium-driver` and the `selenium` package (the `test` extra);
skipped with the reason when any is missing. LRS_TEST_CHROMIUM and LRS_TEST_CHROMEDRIVER
override the binaries; with LRS_DASHBOARD_SCREENSHOT=/path.png the test saves a screenshot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from lrs.api.statements import store_statements
from lrs.app import create_app
from lrs.config import Settings
from lrs.services import Services, build_services
from lrs.storage.credentials import Credential
from tests.conftest import LRS, basic_auth

T = TypeVar("T")

VERBS = "http://adlnet.gov/expapi/verbs/"
ADA = {"objectType": "Agent", "mbox": "mailto:ada@example.com", "name": "Ada Lovelace"}
BOB = {"objectType": "Agent", "mbox": "mailto:bob@example.com", "name": "Bob Bemer"}
CAROL = {"objectType": "Agent", "mbox": "mailto:carol@example.com", "name": "Carol Shaw"}
WAIT_SECONDS = 15.0


# --------------------------------------------------------------------------------------------
# Without a browser: the static files are served and fetch nothing from elsewhere.


async def test_dashboard_is_served_as_static_files(lrs: LRS) -> None:
    redirect = await lrs.client.get("/dashboard")
    assert redirect.status_code in (301, 307, 308)
    assert redirect.headers["location"].endswith("/dashboard/")
    page = await lrs.client.get("/dashboard/", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="dashboard.js"' in page.text and 'href="dashboard.css"' in page.text
    script = await lrs.client.get("/dashboard/dashboard.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    style = await lrs.client.get("/dashboard/dashboard.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    for body in (page.text, script.text, style.text):
        assert "@import" not in body and "cdn" not in body.lower()
    # No innerHTML or similar with API data: text goes in through textContent and attributes.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script.text


# --------------------------------------------------------------------------------------------
# The browser test


def _binary(env: str, *candidates: str) -> str | None:
    configured = os.environ.get(env)
    if configured:
        return configured if Path(configured).exists() else None
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


class RequestLog:
    """ASGI wrapper that remembers each HTTP request's path and headers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            self.requests.append((scope["path"], headers))
        await self.app(scope, receive, send)


class LiveServer:
    """The app under a real uvicorn on a free loopback port, on an event loop in a background
    thread. The services outlive the HTTP server, so that it can be stopped and started again
    on the same port (the browser's stream drops and must resume)."""

    def __init__(self, settings: Settings) -> None:
        self.services: Services = build_services(settings)
        self.log = RequestLog(create_app(settings, self.services))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="dashboard-server", daemon=True
        )
        self.port = 0
        self.server: uvicorn.Server | None = None
        self.serving: concurrent.futures.Future[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's event loop (where its services live)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=15)

    def start(self) -> None:
        self.thread.start()
        self.call(self.services.start())
        self.start_http()

    def start_http(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.log, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        server = uvicorn.Server(config)
        self.server = server
        self.serving = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), self.loop)
        deadline = time.monotonic() + 15
        while not server.started:
            if self.serving.done() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start: {self.serving}")
            time.sleep(0.02)

    def stop_http(self) -> None:
        if self.server is not None and self.serving is not None:
            self.server.should_exit = True
            self.serving.result(timeout=15)
            self.server = self.serving = None

    def stop(self) -> None:
        self.stop_http()
        self.call(self.services.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=15)
        self.loop.close()

    def credential(self, scopes: list[str], name: str) -> tuple[Credential, str]:
        return self.call(self.services.credentials.create("default", scopes, name))

    def store(self, credential: Credential, *statements: dict) -> None:
        """Store statements without HTTP (while the HTTP server is down)."""
        self.call(store_statements(self.services, credential, list(statements), version="1.0.3"))


@pytest.fixture(scope="module")
def chromium_paths() -> tuple[str, str]:
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    chromium = _binary("LRS_TEST_CHROMIUM", "chromium", "chromium-browser")
    driver = _binary("LRS_TEST_CHROMEDRIVER", "chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "no headless browser: install Debian's chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver) to run the dashboard browser test"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def live_server(
    chromium_paths: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    settings = Settings(
        storage="memory",
        data_dir=tmp_path_factory.mktemp("dashboard-data"),
        database=f"lrs_dashboard_{uuid.uuid4().hex[:12]}",
        redis_url=None,
        derivation="inprocess",
    )
    server = LiveServer(settings)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(
    chromium_paths: tuple[str, str],
    live_server: LiveServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
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
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _api(server: LiveServer, key: str, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": basic_auth(key, secret), "X-Experience-API-Version": "1.0.3"},
        timeout=15,
    )


def _stmt(verb: str, obj: str, actor: dict, ts: str) -> dict:
    return {
        "actor": actor,
        "verb": {"id": VERBS + verb, "display": {"en-US": verb}},
        "object": {"objectType": "Activity", "id": obj},
        "timestamp": ts,
    }


def _post(api: httpx.Client, *statements: dict) -> None:
    response = api.post("/xapi/statements", json=list(statements))
    assert response.status_code == 200, response.text


def _wait(driver: Any, what: str, condition: Callable[[Any], Any]) -> Any:
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        TimeoutException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    waiter = WebDriverWait(
        driver,
        WAIT_SECONDS,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )
    try:
        return waiter.until(condition)
    except TimeoutException:
        pytest.fail(f"after {WAIT_SECONDS:.0f} s, still waiting for {what}\n{_page_state(driver)}")


def _page_state(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    parts = []
    for element_id in ("connection", "error", "sign-in-error", "course-meta", "grid"):
        try:
            parts.append(f"#{element_id}: {driver.find_element(By.ID, element_id).text!r}")
        except Exception as exc:  # a diagnostic only
            parts.append(f"#{element_id}: <{exc.__class__.__name__}>")
    try:
        logs = driver.get_log("browser")
        parts += [f"console: {entry.get('message')}" for entry in logs[-20:]]
    except Exception:  # not every driver keeps console logs
        pass
    return "\n".join(parts)


def _cell_selector(learner: dict, module: str) -> str:
    key = "mbox:" + learner["mbox"]
    return f'td[data-learner="{key}"][data-module="{module}"]'


def _cell_text(driver: Any, learner: dict, module: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, _cell_selector(learner, module)).text.strip()


def _signed_out_page(driver: Any, server: LiveServer) -> None:
    """Load the page; if the tab is still signed in from an earlier test, sign out (the page may
    be re-saving its credential while it starts, so clearing the storage would race)."""
    from selenium.webdriver.common.by import By

    driver.get(f"{server.url}/dashboard")
    ready = _wait(
        driver,
        "the page to start",
        lambda d: next(
            (
                e
                for e in (d.find_element(By.ID, "key"), d.find_element(By.ID, "sign-out"))
                if e.is_displayed()
            ),
            None,
        ),
    )
    if ready.get_attribute("id") == "sign-out":
        ready.click()


def _sign_in(driver: Any, key: str, secret: str) -> None:
    from selenium.webdriver.common.by import By

    _wait(driver, "the sign-in form", lambda d: d.find_element(By.ID, "key").is_displayed())
    driver.find_element(By.ID, "key").clear()
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "secret").clear()
    driver.find_element(By.ID, "secret").send_keys(secret)
    driver.find_element(By.ID, "sign-in-button").click()


@dataclass
class Course:
    id: str
    m1: str  # Basics: two pages, rule Completed
    m2: str  # Machine video: one video (profile video)
    m3: str  # Final quiz: an assessment, rule Passed
    page1: str
    page2: str
    video: str
    quiz: str


def _put_course(api: httpx.Client) -> Course:
    suffix = uuid.uuid4().hex[:8]
    course_id = f"http://example.com/courses/dashboard-{suffix}"
    m1, m2, m3 = (f"{course_id}/m{i}" for i in (1, 2, 3))
    page1, page2, video, quiz = (
        f"http://example.com/content/{suffix}/{name}" for name in ("p1", "p2", "video", "quiz")
    )
    definition = {
        "title": f"Workshop safety {suffix}",
        "modules": [
            {
                "id": m1,
                "title": "Basics",
                "content": [page1, page2],
                "completion_rule": "Completed",
            },
            {"id": m2, "title": "Machine video", "content": [video], "profile": "video"},
            {"id": m3, "title": "Final quiz", "assessment": quiz, "completion_rule": "Passed"},
        ],
    }
    response = api.put(f"/courses/{quote(course_id, safe='')}", json=definition)
    assert response.status_code in (200, 201), response.text
    return Course(course_id, m1, m2, m3, page1, page2, video, quiz)


def _open_dashboard(browser: Any, server: LiveServer, key: str, secret: str, course: str) -> None:
    """Load the page afresh, sign in, pick the course and wait for the live stream."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _signed_out_page(browser, server)
    _sign_in(browser, key, secret)
    _wait(
        browser,
        "the course in the picker",
        lambda d: (
            d.find_element(By.ID, "course").is_displayed()
            and d.find_element(By.CSS_SELECTOR, f'#course option[value="{course}"]')
        ),
    )
    Select(browser.find_element(By.ID, "course")).select_by_value(course)
    _wait(
        browser,
        "the live stream",
        lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live",
    )


def test_wrong_secret_is_refused(live_server: LiveServer, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    reader, _ = live_server.credential(["progress/read"], "dashboard reader")
    _signed_out_page(browser, live_server)
    _sign_in(browser, reader.key, "not the secret")
    message = _wait(
        browser,
        "the sign-in error",
        lambda d: d.find_element(By.ID, "sign-in-error").text.strip() or None,
    )
    assert "wrong" in message
    assert not browser.find_element(By.ID, "dashboard").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0


_PARSE = """
const [chunks, done] = arguments;
import(new URL("dashboard.js", document.baseURI).href).then((module) => {
  const events = [], comments = [];
  const parser = new module.EventStreamParser((e) => events.push(e), (c) => comments.push(c));
  for (const chunk of chunks) parser.push(chunk);
  done({ events, comments, retry: parser.retry });
}, (error) => done({ error: String(error) }));
"""


def test_event_stream_parser(live_server: LiveServer, browser: Any) -> None:
    """The page's own text/event-stream parser: chunks split anywhere, CRLF split across
    chunks, comments, multi-line data, ids that persist, retry, an unterminated event."""
    browser.get(f"{live_server.url}/dashboard/")
    chunks = [
        "\ufeff: hello\r",
        '\n\r\nid: 7\nevent: progress\ndata: {"a"',
        ":1}\n\n: keep-alive\n\ndata: line1\ndata:line2\n",
        "\nid\nretry: 2500\nevent: other\ndata\n\nunknown: x\n\n",
        "data: no end",
    ]
    result = browser.execute_async_script(_PARSE, chunks)
    assert "error" not in result, result
    assert result["comments"] == ["hello", "keep-alive"]
    assert result["events"] == [
        {"type": "progress", "data": '{"a":1}', "lastEventId": "7"},
        {"type": "message", "data": "line1\nline2", "lastEventId": "7"},
        {"type": "other", "data": "", "lastEventId": ""},
    ]
    assert result["retry"] == 2500


def test_grid_cell_turns_completed_live(live_server: LiveServer, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    writer, writer_secret = live_server.credential(["all"], "dashboard writer")
    reader, reader_secret = live_server.credential(["progress/read"], "dashboard reader")
    with _api(live_server, writer.key, writer_secret) as api:
        course = _put_course(api)
        # Some progress before the page opens: Ada started Basics, Bob finished the video.
        _post(
            api,
            _stmt("launched", course.m1, ADA, "2026-03-01T09:00:00Z"),
            _stmt("completed", course.video, BOB, "2026-03-01T09:05:00Z"),
            _stmt("experienced", course.page1, BOB, "2026-03-01T09:06:00Z"),
        )
        _open_dashboard(browser, live_server, reader.key, reader_secret, course.id)
        _wait(
            browser,
            "Ada's Basics cell to read 'started'",
            lambda d: _cell_text(d, ADA, course.m1) == "started",
        )
        assert _cell_text(browser, BOB, course.m2) == "completed"
        assert _cell_text(browser, BOB, course.m1) == "in progress 50%"
        header = browser.find_element(By.CSS_SELECTOR, "#grid thead").text
        assert "Basics" in header and "Final quiz" in header
        # A marker that a reload would wipe out.
        browser.execute_script("window.__dashboardMarker = 'no reload'")

        _post(
            api,
            _stmt("experienced", course.page1, ADA, "2026-03-01T09:10:00Z"),
            _stmt("experienced", course.page2, ADA, "2026-03-01T09:20:00Z"),
        )
        _wait(
            browser,
            "Ada's Basics cell to read 'completed'",
            lambda d: _cell_text(d, ADA, course.m1) == "completed",
        )
        cell = browser.find_element(By.CSS_SELECTOR, _cell_selector(ADA, course.m1))
        assert cell.get_attribute("data-status") == "completed"
        assert "status-completed" in (cell.get_attribute("class") or "")

        # A learner the page has never seen gets a row of their own, live.
        passed = _stmt("passed", course.quiz, CAROL, "2026-03-01T09:30:00Z")
        passed["result"] = {"score": {"scaled": 0.9}, "success": True}
        _post(api, passed)
        _wait(
            browser,
            "Carol's new row with the quiz completed",
            lambda d: _cell_text(d, CAROL, course.m3) == "completed",
        )
        assert _cell_text(browser, CAROL, course.m1) == "not started"

    bars = {
        row.get_attribute("data-module"): row.text
        for row in browser.find_elements(By.CSS_SELECTOR, "#chart .bar-row")
    }
    assert "33%" in bars[course.m1] and "1 of 3" in bars[course.m1], bars
    assert "1 of 3" in bars[course.m2] and "1 of 3" in bars[course.m3], bars
    assert browser.execute_script("return window.__dashboardMarker") == "no reload"
    # The secret stays in this tab's session storage: not in localStorage, no cookies.
    assert browser.execute_script("return localStorage.length") == 0
    assert browser.get_cookies() == []
    saved = browser.execute_script("return sessionStorage.getItem('lrs.dashboard.auth')")
    assert json.loads(saved)["key"] == reader.key

    screenshot = os.environ.get("LRS_DASHBOARD_SCREENSHOT")
    if screenshot:
        browser.save_screenshot(screenshot)


def test_stream_resumes_with_last_event_id(live_server: LiveServer, browser: Any) -> None:
    """The HTTP server goes away and comes back: the page reconnects with back-off, sends
    Last-Event-ID, and the changes made meanwhile arrive without a reload or a new snapshot."""
    from selenium.webdriver.common.by import By

    writer, writer_secret = live_server.credential(["all"], "dashboard writer")
    reader, reader_secret = live_server.credential(["progress/read"], "dashboard reader")
    with _api(live_server, writer.key, writer_secret) as api:
        course = _put_course(api)
        _post(api, _stmt("launched", course.m1, ADA, "2026-03-02T09:00:00Z"))
        _open_dashboard(browser, live_server, reader.key, reader_secret, course.id)
        _post(api, _stmt("experienced", course.page1, ADA, "2026-03-02T09:10:00Z"))
        _wait(
            browser,
            "Ada's Basics cell to read 'in progress'",
            lambda d: _cell_text(d, ADA, course.m1).startswith("in progress"),
        )
    browser.execute_script("window.__dashboardMarker = 'still here'")

    live_server.stop_http()
    _wait(
        browser,
        "the indicator to show the stream is down",
        lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") != "live",
    )
    live_server.store(writer, _stmt("experienced", course.page2, ADA, "2026-03-02T09:20:00Z"))
    snapshots_before = sum(1 for path, _ in live_server.log.requests if path == "/progress")
    resumed_from = len(live_server.log.requests)
    live_server.start_http()

    _wait(
        browser,
        "Ada's Basics cell to read 'completed' after the reconnection",
        lambda d: _cell_text(d, ADA, course.m1) == "completed",
    )
    _wait(
        browser,
        "the live stream again",
        lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "live",
    )
    resumed = [
        headers
        for path, headers in live_server.log.requests[resumed_from:]
        if path == "/progress/stream"
    ]
    assert resumed and resumed[0].get("last-event-id", "").isdigit(), resumed
    assert sum(1 for path, _ in live_server.log.requests if path == "/progress") == snapshots_before
    assert browser.execute_script("return window.__dashboardMarker") == "still here"

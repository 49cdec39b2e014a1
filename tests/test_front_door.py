"""What an operator meets first (issue 13): `/` answers an index of links, the API docs are
served from the package (no CDN), OPTIONS names every method of a path, and /metrics labels
every request with its route, including those rejected before routing."""

from __future__ import annotations

import re

from lrs.api.docs import ASSETS
from tests.conftest import LRS


async def test_root_answers_an_index_of_links(lrs: LRS) -> None:
    response = await lrs.client.get("/", headers={"Authorization": ""})
    assert response.status_code == 200
    index = response.json()
    assert index["name"] == "lrs" and index["version"]
    for name in ("docs", "openapi", "dashboard", "xapi", "health", "ready", "metrics"):
        assert name in index["links"]
    # Every link leads somewhere (the xAPI root itself is not a resource).
    for name, link in index["links"].items():
        if name == "xapi":
            continue
        answer = await lrs.client.get(link, headers={"Authorization": ""})
        assert answer.status_code in (200, 503), (name, link, answer.status_code)


async def test_docs_pages_load_their_assets_from_this_server(lrs: LRS) -> None:
    for page in ("/docs",):
        response = await lrs.client.get(page, headers={"Authorization": ""})
        assert response.status_code == 200 and "text/html" in response.headers["content-type"]
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
        urls += re.findall(r"""url: ?["']([^"']+)["']""", response.text)
        assert urls, page
        for url in urls:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            asset = await lrs.client.get(url, headers={"Authorization": ""})
            assert asset.status_code == 200, url
        assert "fonts.googleapis" not in response.text and "cdn" not in response.text.lower()
    assert (ASSETS / "swagger-ui-bundle.js").is_file()


async def test_options_names_every_method_of_the_path(lrs: LRS) -> None:
    response = await lrs.client.options("/admin/destinations", headers={"Authorization": ""})
    assert response.status_code == 204
    assert response.headers["allow"] == "GET, HEAD, POST, OPTIONS"
    one = await lrs.client.options("/admin/destinations/abc")
    assert one.headers["allow"] == "GET, HEAD, PATCH, DELETE, OPTIONS"
    documents = await lrs.client.options("/xapi/activities/state")
    assert documents.headers["allow"] == "GET, HEAD, POST, PUT, DELETE, OPTIONS"
    # A method the path does not have: 405, naming them all too.
    refused = await lrs.client.put("/admin/destinations", json={})
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET, HEAD, POST, OPTIONS"


async def test_metrics_label_every_request_with_its_route(lrs: LRS) -> None:
    no_auth = {"Authorization": ""}
    await lrs.client.get("/docs", headers=no_auth)
    await lrs.client.get("/openapi.json", headers=no_auth)
    await lrs.client.get("/dashboard/", headers=no_auth)
    await lrs.client.get("/xapi/statements", headers=no_auth)  # 401 from the credential check
    # Rejected by the xAPI middleware, before any route ran: no version header, and 413.
    await lrs.client.get("/xapi/statements", headers={"X-Experience-API-Version": ""})
    limit = lrs.services.settings.max_body_bytes
    await lrs.client.post(
        "/xapi/statements",
        content=b"[" + b" " * limit + b"]",
        headers={"Content-Type": "application/json"},
    )
    await lrs.client.head("/xapi/statements")
    await lrs.client.get("/progress/learners/mbox%3Amailto%3Aa%40b.c/courses/x")
    await lrs.client.get("/no/such/thing", headers=no_auth)
    text = (await lrs.client.get("/metrics")).text
    counted = {
        (route, method, status)
        for method, route, status in re.findall(
            r'lrs_http_requests_total\{method="(\w+)",route="([^"]*)",status="(\d+)"\}', text
        )
    }

    def seen(route: str, method: str, status: str) -> bool:
        return (route, method, status) in counted

    assert seen("/docs", "GET", "200")
    assert seen("/openapi.json", "GET", "200")
    assert seen("/dashboard", "GET", "200")
    assert seen("/xapi/statements", "GET", "401")
    assert seen("/xapi/statements", "GET", "400")
    assert seen("/xapi/statements", "POST", "413")
    assert seen("/xapi/statements", "HEAD", "200")
    # A learner's address never becomes a label: the route template does.
    assert seen("/progress/learners/{rest:path}", "GET", "404")
    assert "mailto" not in text
    assert seen("unmatched", "GET", "404")

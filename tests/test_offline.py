"""The app works with no internet: every page it serves loads from the app alone.

Two checks: the HTML and CSS of every page and file the app serves name no other host (fast,
over HTTP), and each page, opened in a real Chromium with every other host unreachable,
requests nothing from anywhere else and renders (GraphiQL leaves "Loading...").
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import urljoin, urlsplit

import httpx
import orjson
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route, expect
from starlette.routing import Route as AppRoute
from starlette.types import ASGIApp

from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.browser import chromium, needs_chromium
from tests.support.events import event, join, record_accepted
from tests.support.graphql import GraphQLClient
from tests.support.outage import eventually
from tests.support.segments import create
from tests.support.servers import Server, running_server

#: References in HTML that make a browser load something.
HTML_REFERENCE = re.compile(
    r"""\b(?:src|href|action|formaction|poster|srcset)\s*=\s*["']([^"']*)["']""", re.I
)
#: References in CSS that make a browser load something.
CSS_REFERENCE = re.compile(r"""url\(\s*["']?([^"')\s]+)|@import\s+["']([^"']+)["']""", re.I)
PAGES = ("/graphql", "/dashboard")


def elsewhere(reference: str) -> bool:
    """Whether loading `reference` would leave the app's own origin (data: URLs stay)."""
    parts = urlsplit(reference)
    return parts.scheme not in ("", "data") or bool(parts.netloc)


async def test_no_page_or_file_the_app_serves_references_another_host(
    app: ASGIApp, client: httpx.AsyncClient
) -> None:
    # every GET route of the app without parameters, and whatever its HTML and CSS reference
    starlette = app.app  # type: ignore[attr-defined]  # inside the Guard
    todo = [r.path for r in starlette.routes if isinstance(r, AppRoute) and "GET" in (r.methods or ())]
    assert set(PAGES) <= set(todo)
    seen: set[str] = set()
    checked: dict[str, str] = {}
    while todo:
        path = todo.pop()
        if path in seen or "{" in path:
            continue
        seen.add(path)
        response = await client.get(path, headers={"accept": "text/html"})
        kind = response.headers.get("content-type", "").split(";")[0]
        if kind == "text/html":
            references = HTML_REFERENCE.findall(response.text)
        elif kind == "text/css":
            references = [a or b for a, b in CSS_REFERENCE.findall(response.text)]
        else:
            continue  # JSON answers; scripts are checked in the browser (their strings name docs)
        checked[path] = kind
        assert "default-src 'none'" in response.headers["content-security-policy"], path
        for reference in references:
            assert not elsewhere(reference), f"{path} references {reference}"
            if not reference.startswith("data:"):
                todo.append(urlsplit(urljoin(f"http://testserver{path}", reference)).path)
    assert checked["/graphql"] == "text/html"
    assert checked["/graphiql/vendor/graphiql.min.css"] == "text/css"


@pytest.fixture(scope="module")
async def server(settings: Settings) -> AsyncIterator[Server]:
    """One server process for the module's tests, each on a program of its own."""
    async with running_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as opened:
        yield opened


@pytest.fixture
async def offline(server: Server, browser: Browser) -> AsyncIterator[tuple[Page, list[str], list[str]]]:
    """A page that can reach the server only, with the URLs it requested and its console errors, in a
    browser context of its own (fresh storage and cookies)."""
    requested: list[str] = []
    errors: list[str] = []

    async def only_the_server(route: Route) -> None:
        if route.request.url.startswith(f"{server.http}/") or route.request.url.startswith("data:"):
            await route.continue_()
        else:
            await route.abort("internetdisconnected")

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.route("**/*", only_the_server)
        page.on("request", lambda request: requested.append(request.url))
        page.on("console", console)
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page, requested, errors
    finally:
        await context.close()


@needs_chromium
@pytest.mark.parametrize("path", PAGES)
async def test_each_page_renders_with_no_internet_and_asks_nothing_of_another_host(
    server: Server, offline: tuple[Page, list[str], list[str]], path: str
) -> None:
    page, requested, errors = offline
    await page.goto(f"{server.http}{path}")
    if path == "/graphql":
        await expect(page.locator(".graphiql-query-editor .CodeMirror")).to_be_visible()
        await expect(page.locator("#graphiql")).not_to_contain_text("Loading...")
    else:
        await expect(page.locator("#login")).to_be_visible()
    await page.wait_for_load_state("networkidle")
    assert [url for url in requested if not url.startswith(f"{server.http}/")] == []
    assert errors == []  # no script failed, nothing was refused by the page's policy


async def run_in_graphiql(page: Page, query: str, headers: dict[str, str]) -> None:
    """Type `query` and the headers into GraphiQL's editors and press run."""
    await page.evaluate(
        "q => document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.setValue(q)", query
    )
    await page.get_by_role("button", name="Headers").click()
    await page.evaluate(
        "h => [...document.querySelectorAll('.graphiql-editor-tool .CodeMirror')].at(-1).CodeMirror.setValue(h)",
        orjson.dumps(headers).decode(),
    )
    await page.locator(".graphiql-execute-button").click()


async def graphiql_result(page: Page) -> str:
    text: str = await page.evaluate(
        "() => document.querySelector('.graphiql-response .CodeMirror').CodeMirror.getValue()"
    )
    return text


@needs_chromium
async def test_graphiql_runs_queries_and_subscriptions_with_the_token_of_its_headers_tab(
    server: Server,
    offline: tuple[Page, list[str], list[str]],
    admin: GraphQLClient,
    integration: GraphQLClient,
    clock: ShiftableClock,
) -> None:
    page, _, errors = offline
    assert admin.token is not None
    await create(admin, "buyers", "count(purchase) >= 1")
    await join(integration, "ana")
    await page.goto(f"{server.http}/graphql")
    await expect(page.locator(".graphiql-query-editor .CodeMirror")).to_be_visible()

    # a query over HTTP
    await run_in_graphiql(page, "{ segments { key } }", {"Authorization": f"Bearer {admin.token}"})
    await expect(page.locator(".graphiql-response")).to_contain_text('"key": "buyers"')

    # a subscription over graphql-transport-ws, authorised by the same header (from the log's
    # start, so that the change counts whether it commits before or after the subscription starts)
    async with page.expect_websocket() as opened:  # not over HTTP (GraphiQL's fetcher offers multipart)
        await run_in_graphiql(
            page,
            'subscription { segmentChanges(since: "0") { segmentKey memberExternalId change } }',
            {"Authorization": f"Bearer {admin.token}"},
        )
    assert (await opened.value).url == server.ws
    await expect(page.locator(".graphiql-execute-button")).to_have_attribute("aria-label", re.compile("Stop"))
    await record_accepted(integration, [event("ana", "purchase", clock.now(), "5")])
    await expect(page.locator(".graphiql-response")).to_contain_text('"memberExternalId": "ana"')
    assert '"change": "ENTERED"' in await graphiql_result(page)
    assert errors == []


@needs_chromium
async def test_a_subscription_that_ends_closes_its_socket_and_a_refused_one_says_why_at_once(
    server: Server, offline: tuple[Page, list[str], list[str]], admin: GraphQLClient
) -> None:
    page, _, _ = offline
    await page.goto(f"{server.http}/graphql")
    await expect(page.locator(".graphiql-query-editor .CodeMirror")).to_be_visible()

    # a subscription the server ends with an error (a bad cursor): the page closes its socket
    async with page.expect_websocket() as opened:
        await run_in_graphiql(
            page,
            'subscription { segmentChanges(since: "nope") { segmentKey } }',
            {"Authorization": f"Bearer {admin.token}"},
        )
    socket = await opened.value
    await expect(page.locator(".graphiql-response")).to_contain_text("is not a change cursor")
    assert await eventually(socket.is_closed, within=5), "the finished subscription's socket is still open"

    # a connection the server refuses (no token): its reason shows at once, not after retries
    await run_in_graphiql(page, "subscription { segmentChanges { segmentKey } }", {})
    await expect(page.locator(".graphiql-response")).to_contain_text(
        "4403 connection_init needs a payload", timeout=5000
    )

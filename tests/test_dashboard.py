"""The live dashboard: its headers over HTTP, and the page itself in a real headless Chromium
against a real server process."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, Locator, Page, WebSocketRoute, expect

from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.browser import chromium, needs_chromium
from tests.support.events import event, join, record_accepted
from tests.support.graphql import GraphQLClient
from tests.support.live import SETTLE_S
from tests.support.segments import create
from tests.support.servers import Server, running_server

TOKEN_KEY = "loyalty.dashboard.token"
ANY_TIME = re.compile(r"\d")


async def test_the_page_and_its_files_are_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="/dashboard/dashboard.js" defer></script>' in page.text
    assert "<script>" not in page.text  # nothing inline for the policy to allow
    assert "style=" not in page.text
    for path, content_type in (
        ("/dashboard", "text/html"),
        ("/dashboard/dashboard.js", "text/javascript"),
        ("/dashboard/dashboard.css", "text/css"),
    ):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(content_type)
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["content-security-policy"] == (
            "default-src 'none'; script-src 'self'; style-src 'self'; "
            "connect-src 'self' ws://testserver wss://testserver; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    script = (await client.get("/dashboard/dashboard.js")).text
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script


async def test_a_host_header_that_is_not_a_host_is_left_out_of_the_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/dashboard", headers={"host": "evil.example; script-src *"})
    assert "connect-src 'self'; " in response.headers["content-security-policy"]


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
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a browser context of its own: fresh storage and cookies, the module's browser."""
    context = await browser.new_context()
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def log_in(page: Page, server: Server, token: str) -> None:
    await page.goto(f"{server.http}/dashboard")
    await page.fill("#token", token)
    await page.click("#login button[type=submit]")


def size_of(page: Page, key: str) -> Locator:
    return page.locator(f'#segments tr[data-key="{key}"] .size')


def change_rows(page: Page) -> Locator:
    return page.locator("#changes tbody tr")


@needs_chromium
async def test_an_admin_sees_sizes_and_a_member_entering_live_then_logs_out(
    server: Server, page: Page, admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given two segments, ana already a buyer
    await create(admin, "buyers", "count(purchase) >= 1")
    await create(admin, "big", "sum(purchase.amount) >= 100")
    await join(integration, "ana", "<b>bo</b>")
    await record_accepted(integration, [event("ana", "purchase", clock.now(), "5")])

    # when the admin logs in with the session token
    assert admin.token is not None
    await log_in(page, server, admin.token)

    # then the page lists the segments with their sizes and goes live
    await expect(page.locator("#segments tbody tr")).to_have_count(2)
    await expect(page.locator("#segments tbody tr").first.locator("td")).to_have_text(
        ["big", "big", "DYNAMIC", "0"]
    )
    await expect(size_of(page, "buyers")).to_have_text("1")
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    await expect(page.locator("#login")).to_be_hidden()
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == admin.token
    assert admin.token not in page.url

    # when a member whose id looks like markup makes a big purchase
    await asyncio.sleep(SETTLE_S)
    await record_accepted(integration, [event("<b>bo</b>", "purchase", clock.now(), "150")])

    # then both changes appear, newest first, as text, and both sizes go up by one
    await expect(change_rows(page)).to_have_count(2)
    rows = [await change_rows(page).nth(i).locator("td").all_inner_texts() for i in range(2)]
    assert sorted(row[1:] for row in rows) == [
        ["big", "<b>bo</b>", "ENTERED"],
        ["buyers", "<b>bo</b>", "ENTERED"],
    ]
    assert all(ANY_TIME.search(row[0]) for row in rows)
    await expect(size_of(page, "buyers")).to_have_text("2")
    await expect(size_of(page, "big")).to_have_text("1")
    assert await page.locator("#changes b").count() == 0

    # when the admin logs out
    await page.click("#logout")

    # then the token is forgotten and the data gone
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#status")).to_have_attribute("data-state", "signed-out")
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    await expect(change_rows(page)).to_have_count(0)


@needs_chromium
@pytest.mark.parametrize(
    ("code", "reason", "notice"),
    [
        (1012, "service restart", ""),
        (
            4008,
            'too slow: over 5 changes queued; resume with since: "{cursor}"',
            "The live stream was interrupted; it resumes where it stopped.",
        ),
        (
            4008,
            'interrupted: changes were missed while Redis was unreachable; resume with since: "{cursor}"',
            "The live stream was interrupted; it resumes where it stopped.",
        ),
    ],
)
async def test_after_a_dropped_connection_the_page_resumes_from_its_last_change(
    server: Server,
    page: Page,
    admin: GraphQLClient,
    integration: GraphQLClient,
    clock: ShiftableClock,
    code: int,
    reason: str,
    notice: str,
) -> None:
    # given the page live on a buyers segment, its WebSocket routed through the test
    await create(admin, "buyers", "count(purchase) >= 1")
    await join(integration, "a", "b", "c")
    sockets: list[WebSocketRoute] = []
    subscriptions: list[dict[str, Any]] = []

    def route(socket: WebSocketRoute) -> None:
        upstream = socket.connect_to_server()

        def from_page(message: str | bytes) -> None:
            parsed = orjson.loads(message)
            if parsed["type"] == "subscribe" and "segmentChanges" in parsed["payload"]["query"]:
                subscriptions.append(parsed["payload"]["variables"])
            upstream.send(message)

        socket.on_message(from_page)
        sockets.append(socket)

    await page.route_web_socket(re.compile(r".*/graphql$"), route)
    assert admin.token is not None
    await log_in(page, server, admin.token)
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    await asyncio.sleep(SETTLE_S)
    await record_accepted(integration, [event("a", "purchase", clock.now(), "1")])
    await expect(change_rows(page)).to_have_count(1)
    cursor = (await admin.data('{ segment(key: "buyers") { changes { cursor } } }'))["segment"]["changes"][0][
        "cursor"
    ]

    # when the connection drops and b and c enter meanwhile
    await sockets[0].close(code=code, reason=reason.format(cursor=cursor))
    await record_accepted(integration, [event(m, "purchase", clock.now(), "1") for m in ("b", "c")])

    # then the page reconnects from its last change: b and c once each, a not again
    await expect(change_rows(page)).to_have_count(3)
    await expect(page.locator("#status")).to_have_attribute("data-state", "live")
    assert subscriptions == [{"since": None}, {"since": cursor}]
    await expect(page.locator("#notice")).to_have_text(notice)
    members = [(await change_rows(page).nth(i).locator("td").all_inner_texts())[2] for i in range(3)]
    assert members == ["c", "b", "a"]
    await expect(size_of(page, "buyers")).to_have_text("3")


@needs_chromium
async def test_a_refused_token_is_sent_back_to_the_login_with_the_reason(
    server: Server, page: Page, integration: GraphQLClient
) -> None:
    # given a member token, which may not read segments
    await join(integration, "mia")
    token = (await integration.data('mutation { issueMemberToken(memberExternalId: "mia") { token } }'))[
        "issueMemberToken"
    ]["token"]

    for pasted, why in (
        (token, "segmentChanges is not open to member tokens; it needs segments:read"),
        ("nonsense", "the bearer token is malformed or its signature is wrong"),
    ):
        # when it is pasted in
        await log_in(page, server, pasted)

        # then the server's reason shows, and the token is not kept
        await expect(page.locator("#notice")).to_have_text(f"The server refused the token: {why}")
        await expect(page.locator("#login")).to_be_visible()
        await expect(page.locator("#board")).to_be_hidden()
        assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None

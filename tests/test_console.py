"""The admin console (/admin): its files over HTTP, and its flows in Debian's headless Chromium
against a real `loyalty serve` process (one browser per module, a fresh context per test)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, Page, Route, WebSocketRoute, expect

from api.runtime import Services
from api.schema import schema_sdl
from domain.enums import AdminRole
from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.audit import hold
from tests.support.browser import chromium, needs_chromium
from tests.support.console import TOKEN_KEY, ConsoleAdmin, age_sessions, console_admin, sign_in
from tests.support.events import event, join, record_accepted
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.live import SETTLE_S
from tests.support.segments import create
from tests.support.servers import Server, running_server

POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self' ws://testserver wss://testserver; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SCRIPTS = sorted(f.name for f in files("api.static").iterdir() if f.name.startswith("admin-"))
URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[a-z]{2,}[^\s\"'`]*")
#: Not fetched: the name createElementNS needs.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
SECTIONS = ["segments", "segments/new", "members", "review", "leaderboards", "experiments", "live"]


async def test_the_console_and_its_modules_are_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    page = await client.get("/admin")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/admin/admin-app.js"></script>' in page.text
    assert "<script>" not in page.text
    assert "style=" not in page.text
    assert "admin-app.js" in SCRIPTS
    for path in ["/admin", "/admin/admin.css", *(f"/admin/{name}" for name in SCRIPTS)]:
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-security-policy"] == POLICY, path
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        if path.endswith(".js"):
            assert response.headers["content-type"] == "text/javascript; charset=utf-8"
            # server text reaches the page as text only, and nothing is fetched from elsewhere
            for unsafe in (
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ):
                assert unsafe not in response.text, (path, unsafe)
            assert set(URL.findall(response.text)) <= {SVG_NAMESPACE}, path
    for missing in ("/admin/admin-nothing.js", "/admin/../api/app.py", "/admin/console.py"):
        assert (await client.get(missing)).status_code == 404, missing


@pytest.fixture(scope="module")
async def server(settings: Settings) -> AsyncIterator[Server]:
    async with running_server(settings) as running:
        yield running


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as opened:
        yield opened


class Watched:
    """A page whose requests are checked: anything not for 127.0.0.1 is recorded and refused."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.outside: list[str] = []
        self.errors: list[str] = []

    async def refuse_outside(self, route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            await route.continue_()
        else:
            self.outside.append(route.request.url)
            await route.abort()


@pytest.fixture
async def watched(browser: Browser) -> AsyncIterator[Watched]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    seen = Watched(page)
    await context.route("**/*", seen.refuse_outside)
    page.on(
        "websocket",
        lambda ws: None if urlsplit(ws.url).hostname == "127.0.0.1" else seen.outside.append(ws.url),
    )
    page.on("pageerror", lambda error: seen.errors.append(str(error)))
    yield seen
    await context.close()
    assert seen.outside == []
    assert seen.errors == []


@pytest.fixture
async def owner(services: Services, program: ProgramFixture) -> ConsoleAdmin:
    return await console_admin(services, program)


def segment_row(page: Page, key: str) -> str:
    return f'#segments tr[data-key="{key}"]'


@needs_chromium
@pytest.mark.slow
async def test_an_admin_signs_in_with_totp_sees_the_program_and_signs_out(
    server: Server, watched: Watched, owner: ConsoleAdmin, services: Services, program: ProgramFixture
) -> None:
    page = watched.page
    # a wrong code is refused with the server's reason, and nothing is kept
    await page.goto(f"{server.http}/admin")
    await page.get_by_role("form", name="Sign in").get_by_label("E-mail").fill(owner.email)
    await page.get_by_role("form", name="Sign in").get_by_label("Password").fill("correct horse battery")
    await (
        page.get_by_role("form", name="Sign in")
        .get_by_label("Authenticator code (TOTP)")
        .fill("000000" if owner.code() != "000000" else "111111")
    )
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#notice")).to_contain_text("Sign-in refused")
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None

    # when the admin signs in with a fresh code
    await sign_in(page, server, owner)

    # then the header names the program, the nav shows, and the token stays in the tab only
    await expect(page.locator("#program-name")).to_have_text(f"Program {program.key}")
    await expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
    await expect(page.locator('#nav a[aria-current="page"]')).to_have_text("Segments")
    token = await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')")
    assert token
    assert token not in page.url

    # a reload keeps the session
    await page.reload()
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    await expect(page.locator("#login")).to_be_hidden()

    # when the admin logs out, the token is revoked and forgotten
    await page.get_by_role("button", name="Log out").click()
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    assert (await server_error(server, token))["extensions"]["code"] == "UNAUTHENTICATED"

    # and a session that expires sends the page back to the sign-in form with the reason
    await sign_in(page, server, owner.ahead(1))
    await age_sessions(services, owner.email, expired=True)
    await page.get_by_role("link", name="Members").click()
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#notice")).to_contain_text("Signed out")
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None


async def server_error(server: Server, token: str) -> dict[str, Any]:
    """The first error the server answers a request with `token` with."""
    async with httpx.AsyncClient(base_url=server.http) as http:
        body = (
            await http.post(
                "/graphql",
                json={"query": "{ program { key } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
        ).json()
    error: dict[str, Any] = body["errors"][0]
    return error


@needs_chromium
@pytest.mark.slow
async def test_a_segment_made_from_a_rule_has_the_size_its_preview_showed(
    server: Server,
    watched: Watched,
    owner: ConsoleAdmin,
    admin: GraphQLClient,
    integration: GraphQLClient,
    clock: ShiftableClock,
) -> None:
    # given three members, two of them buyers, and a segment of the big spender
    await join(integration, "ana", "bo", "cy")
    await record_accepted(
        integration, [event("ana", "purchase", clock.now(), "150"), event("bo", "purchase", clock.now(), "5")]
    )
    await create(admin, "big", "sum(purchase.amount) >= 100")
    page = watched.page
    await sign_in(page, server, owner)

    # when the admin types a broken rule, the error points at its column
    await page.get_by_role("link", name="New segment").click()
    await page.get_by_label("Rule").fill("count(purchase) >= ")
    await expect(page.locator("#rule-error")).to_contain_text("column")
    await expect(page.locator("#rule-error .caret")).to_have_text(re.compile(r"^ *\^$"))
    await expect(page.get_by_label("Rule")).to_have_attribute("aria-invalid", "true")

    # and then a valid one: the preview counts, samples and overlaps as it is typed
    await page.get_by_label("Key").fill("buyers")
    await page.get_by_label("Name").fill("Buyers")
    await page.get_by_label("Rule").fill("count(purchase) >= 1")
    await expect(page.locator("#preview-size")).to_have_text("2")
    await expect(page.locator("#preview-sample tbody tr")).to_have_count(2)
    await expect(page.locator("#preview-overlaps tbody tr td").first).to_have_text("big")
    preview = await page.locator("#preview-size").inner_text()

    # when it is saved, the segment page shows the size the preview promised
    await page.get_by_role("button", name="Create segment").click()
    await expect(page.locator("#segment-size")).to_have_text(preview)
    await expect(page.locator("#segment-rule")).to_have_text("count(purchase) >= 1")
    saved = (await admin.data('{ segment(key: "buyers") { size } }'))["segment"]["size"]
    assert str(saved) == preview
    await expect(page.locator("#segment-members tbody tr")).to_have_count(2)

    # and a segment another one reads cannot be deleted: the page says which reads it
    await create(admin, "loyal_buyers", 'in_segment("buyers") and count(purchase) >= 2')
    await page.get_by_role("button", name="Delete segment").click()
    await page.get_by_role("button", name=re.compile("Confirm: delete buyers")).click()
    await expect(page.get_by_role("alert")).to_contain_text("loyal_buyers")
    assert (await admin.data('{ segment(key: "buyers") { key } }'))["segment"] == {"key": "buyers"}


@needs_chromium
@pytest.mark.slow
async def test_a_member_entering_shows_live_and_the_feed_survives_a_reload(
    server: Server,
    watched: Watched,
    owner: ConsoleAdmin,
    admin: GraphQLClient,
    integration: GraphQLClient,
    clock: ShiftableClock,
) -> None:
    # given a buyers segment, empty, on the console's segment list
    await create(admin, "buyers", "count(purchase) >= 1")
    await join(integration, "ana", "bo")
    page = watched.page
    await sign_in(page, server, owner)
    await expect(page.locator(f"{segment_row(page, 'buyers')} .size")).to_have_text("0")
    await asyncio.sleep(SETTLE_S)

    # when ana buys, her entry shows at once: the size moves and the live page lists it
    await record_accepted(integration, [event("ana", "purchase", clock.now(), "5")])
    await expect(page.locator(f"{segment_row(page, 'buyers')} .size")).to_have_text("1")
    await page.get_by_role("link", name="Live").click()
    rows = page.locator("#feed tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("td")).to_have_text([re.compile(r"\d"), "buyers", "ana", "ENTERED"])

    # when the tab reloads, the feed is still there, once, and the stream resumes after it
    await page.reload()
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    await expect(rows).to_have_count(1)
    await asyncio.sleep(SETTLE_S)
    await record_accepted(integration, [event("bo", "purchase", clock.now(), "5")])
    await expect(rows).to_have_count(2)
    await expect(rows.first.locator("td").nth(2)).to_have_text("bo")

    # and bo's member page shows the entry in its timeline
    await rows.first.get_by_role("link", name="bo").click()
    await expect(page.locator('#timeline tr[data-kind="segment"]')).to_contain_text(["ENTERED buyers"])
    await expect(page.locator('#timeline tr[data-kind="event"]')).to_contain_text(["purchase 5"])
    await expect(page.locator("#member-segments")).to_contain_text("buyers")


@needs_chromium
@pytest.mark.slow
async def test_a_held_accrual_is_approved_after_the_step_up(
    server: Server,
    watched: Watched,
    owner: ConsoleAdmin,
    admin: GraphQLClient,
    integration: GraphQLClient,
    services: Services,
    clock: ShiftableClock,
) -> None:
    # given an accrual of 100 points held for review, and an admin whose sign-in is 11 minutes old
    await admin.data(
        'mutation { setEarningRule(input: {eventType: "purchase", fixedPoints: 100}) { eventType } }'
    )
    await join(integration, "m1")
    await hold(services, integration, clock, "e1")
    page = watched.page
    await sign_in(page, server, owner)
    await age_sessions(services, owner.email, verified_ago=timedelta(minutes=11))

    # when the reviewer approves it on the review page
    await page.get_by_role("link", name="Review").click()
    card = page.locator("article.review")
    await expect(card).to_have_count(1)
    await expect(card).to_contain_text("test_rule (REVIEW): REVIEW on request")
    await card.get_by_role("button", name="Approve").click()

    # then the page asks for a TOTP code; a wrong one is refused in the dialog
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Authenticator code (TOTP)").fill(
        "000000" if owner.ahead(1).code() != "000000" else "111111"
    )
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(dialog.locator("#step-up-error")).to_contain_text("totpCode")
    # and a fresh one approves it
    await dialog.get_by_label("Authenticator code (TOTP)").fill(owner.ahead(1).code())
    await dialog.get_by_role("button", name="Confirm").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#review-status")).to_have_text("Approved: 100 points for m1.")
    await expect(card).to_have_count(0)
    member = (await admin.data('{ member(externalId: "m1") { pointsBalance pendingPoints } }'))["member"]
    assert member == {"pointsBalance": 100, "pendingPoints": 0}


@needs_chromium
@pytest.mark.slow
async def test_an_admin_adjusts_a_members_points(
    server: Server, watched: Watched, owner: ConsoleAdmin, integration: GraphQLClient, admin: GraphQLClient
) -> None:
    await join(integration, "ana")
    page = watched.page
    await sign_in(page, server, owner)
    await page.goto(f"{server.http}/admin#/members")
    await page.get_by_label("Member externalId").fill("ana")
    await page.get_by_role("button", name="Open").click()
    await expect(page.locator("#member-balance")).to_have_text("0")

    await page.get_by_label("Points (+ credit, - correction)").fill("250")
    await page.get_by_label("Reason").fill("sorry for the wait")
    await page.get_by_role("button", name="Adjust").click()

    await expect(page.locator("#adjust-status")).to_have_text("Adjusted by 250.")
    await expect(page.locator("#member-balance")).to_have_text("250")
    await expect(page.locator('#timeline tr[data-kind="points"]')).to_contain_text(["+250 ADJUSTMENT"])
    entry = await admin.data(
        '{ member(externalId: "ana") { ledger(first: 1) { edges { node { points reason actor } } } } }'
    )
    assert entry["member"]["ledger"]["edges"][0]["node"] == {
        "points": 250,
        "reason": "sorry for the wait",
        "actor": owner.email,
    }


ROLES_DELIVERED = "currentAdmin" in schema_sdl()


@needs_chromium
@pytest.mark.slow
@pytest.mark.skipif(
    not ROLES_DELIVERED, reason="needs currentAdmin and role checks (issue 18, wt-roles): enable at merge"
)
async def test_a_viewer_sees_no_edit_controls_and_the_api_refuses_them(
    server: Server,
    watched: Watched,
    services: Services,
    program: ProgramFixture,
    admin: GraphQLClient,
    integration: GraphQLClient,
) -> None:
    # given a segment and a member, and a VIEWER signed in
    await create(admin, "buyers", "count(purchase) >= 1")
    await join(integration, "ana")
    viewer = await console_admin(services, program, AdminRole.VIEWER)
    page = watched.page
    await sign_in(page, server, viewer)
    await expect(page.locator("#admin-role")).to_have_text("VIEWER")

    # then no page offers a control the role may not use

    await expect(page.locator(segment_row(page, "buyers"))).to_be_visible()
    await expect(page.get_by_role("link", name="New segment")).to_have_count(0)
    await page.locator(segment_row(page, "buyers")).get_by_role("link", name="buyers").click()
    await expect(page.locator("#segment-size")).to_be_visible()
    await expect(page.get_by_role("button", name="Delete segment")).to_have_count(0)
    await expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    await page.goto(f"{server.http}/admin#/members/ana")
    await expect(page.locator("#member-balance")).to_be_visible()
    for hidden in ("#adjust-form", "#erase-member", "#export-member"):
        await expect(page.locator(hidden)).to_have_count(0)
    await page.goto(f"{server.http}/admin#/review")
    await expect(page.locator("#view .page > *").first).to_be_visible()
    await expect(page.get_by_role("button", name="Approve")).to_have_count(0)

    # and the API refuses what the page hides
    token = await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')")
    viewer_api = GraphQLClient(admin.http, token)
    for operation in (
        'mutation { createSegment(input: {key: "x", name: "x", kind: DYNAMIC, rule: "count(purchase) >= 1"}) { key } }',
        'mutation { adjustPoints(memberExternalId: "ana", points: 5, reason: "r", idempotencyKey: "k") { id } }',
        'mutation { deleteSegment(key: "buyers") }',
    ):
        assert (await viewer_api.error(operation))["extensions"]["code"] == "FORBIDDEN", operation


@needs_chromium
@pytest.mark.slow
async def test_every_page_fits_a_390_px_phone_and_asks_only_127_0_0_1(
    server: Server,
    watched: Watched,
    owner: ConsoleAdmin,
    admin: GraphQLClient,
    integration: GraphQLClient,
    clock: ShiftableClock,
) -> None:
    # given some data on every page
    await admin.data('mutation { setLeaderboard(input: {key: "points", name: "Points"}) { key } }')
    await create(
        admin, "buyers_with_a_rather_long_key", "count(purchase, 30d) >= 1 and sum(purchase.amount, 30d) >= 1"
    )
    await join(integration, "a-member-with-a-long-external-id-0123456789")
    await record_accepted(
        integration, [event("a-member-with-a-long-external-id-0123456789", "purchase", clock.now(), "12.50")]
    )
    page = watched.page
    await page.set_viewport_size({"width": 390, "height": 844})
    await sign_in(page, server, owner)
    paths = [
        *SECTIONS,
        "segments/buyers_with_a_rather_long_key",
        "members/a-member-with-a-long-external-id-0123456789",
    ]
    for path in paths:
        await page.goto(f"{server.http}/admin#/{path}")
        await expect(page.locator("#view > *").first).to_be_visible()
        await page.wait_for_load_state("networkidle")
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, (path, overflow)
    # the watched fixture checks that no request or WebSocket left 127.0.0.1 and no script failed


@needs_chromium
@pytest.mark.slow
async def test_a_refused_stream_signs_out_an_ended_session_only(
    server: Server, watched: Watched, owner: ConsoleAdmin, services: Services
) -> None:
    # given the console signed in, its WebSockets routed through the test
    page = watched.page
    sockets: list[WebSocketRoute] = []

    def route(socket: WebSocketRoute) -> None:
        socket.connect_to_server()
        sockets.append(socket)

    await page.route_web_socket(re.compile(r".*/graphql$"), route)
    await sign_in(page, server, owner)

    # when the stream is refused while the session is good, the admin stays signed in, not live
    await sockets[-1].close(code=4403, reason="refused for the test")
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "offline")
    await expect(page.locator("#live-status")).to_have_attribute("title", "refused for the test")
    await expect(page.locator("#login")).to_be_hidden()
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is not None

    # when it is refused after the session ended, the console signs out
    await page.reload()
    await expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    await age_sessions(services, owner.email, expired=True)
    await sockets[-1].close(code=4403, reason="the session expired")
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#notice")).to_contain_text("Signed out")
    assert await page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None

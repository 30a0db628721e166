"""Login throttling: growing delays per account that a stranger cannot turn into a lock, a much higher
bar per client IP, atomic counting, and X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from api.client_ip import client_ip
from api.runtime import Services
from domain.auth import secrets as crypto
from domain.auth.throttle import ACCOUNT, CLIENT_IP, Throttle
from domain.errors import RateLimited
from domain.settings import Settings
from tests.support import ShiftableClock
from tests.support.graphql import LOGIN, GraphQLClient, ProgramFixture, admin_token, http_client, new_program
from tests.support.servers import running_server

VERIFY = "mutation($c: String!) { verifyTotp(totpCode: $c) }"


def address(role: int, program: ProgramFixture) -> str:
    """A client IP of its own per role and program, so that throttles never leak between tests."""
    return f"172.{16 + role}.{program.id // 256 % 256}.{program.id % 256}"


def good(program: ProgramFixture, clock: ShiftableClock) -> dict[str, str]:
    code = crypto.code_at(program.totp_secret, clock.now().timestamp())
    return {"e": program.admin_email, "p": program.admin_password, "c": code}


def bad(program: ProgramFixture) -> dict[str, str]:
    return {"e": program.admin_email, "p": "not the password", "c": "000000"}


async def attempt(app: ASGIApp, ip: str, variables: dict[str, str]) -> dict[str, Any]:
    """One login from `ip`: {"ok": True} or the error's code and retryAfter."""
    async with http_client(app, ip) as http:
        body = await GraphQLClient(http, None).execute(LOGIN, variables)
    if "errors" not in body:
        return {"ok": True}
    extensions = body["errors"][0]["extensions"]
    return {k: v for k, v in extensions.items() if k in ("code", "retryAfter")}


async def test_failures_slow_an_account_down_with_growing_delays_and_its_owner_gets_in(
    app: ASGIApp, program: ProgramFixture, clock: ShiftableClock
) -> None:
    ip = address(0, program)
    # five failures cost nothing but the failure
    assert [await attempt(app, ip, bad(program)) for _ in range(5)] == [{"code": "UNAUTHENTICATED"}] * 5
    # then each try waits: 2 s, 4 s, 8 s (refused tries count nothing)
    for wait in (2, 4, 8):
        refused = {"code": "RATE_LIMITED", "retryAfter": wait}
        assert await attempt(app, ip, good(program, clock)) == refused
        assert await attempt(app, ip, bad(program)) == refused
        clock.shift(timedelta(seconds=wait))
        assert await attempt(app, ip, bad(program)) == {"code": "UNAUTHENTICATED"}
    # the owner who waits gets in, and that clears the account's failures
    assert (await attempt(app, ip, good(program, clock)))["retryAfter"] == 16
    clock.shift(timedelta(seconds=16))
    assert await attempt(app, ip, good(program, clock)) == {"ok": True}
    assert await attempt(app, ip, bad(program)) == {"code": "UNAUTHENTICATED"}


async def test_the_delays_are_capped_so_no_account_is_ever_locked(
    services: Services, clock: ShiftableClock
) -> None:
    throttle = Throttle(services.redis, clock, "login-cap-test")
    account = [("account:cap@example.com", ACCOUNT)]
    waits: list[object] = []  # before each of 20 failures in a row, each made once it is accepted
    for _ in range(20):
        try:
            await throttle.reserve(account, "failed logins")
            waits.append(0)
        except RateLimited as refused:
            wait = refused.details["retryAfter"]
            assert isinstance(wait, int)
            waits.append(wait)
            clock.shift(timedelta(seconds=wait))
            await throttle.reserve(account, "failed logins")
    assert waits == [0] * 5 + [2, 4, 8, 16, 32, 64, 128, 256, 512] + [900] * 6


async def test_a_stranger_cannot_keep_the_owner_out(
    app: ASGIApp, program: ProgramFixture, clock: ShiftableClock
) -> None:
    owner, stranger, travelling = address(0, program), address(1, program), address(2, program)
    # given the owner logged in from its office once (a known source)
    assert await attempt(app, owner, good(program, clock)) == {"ok": True}
    # when a stranger who knows the e-mail keeps failing
    for _ in range(8):
        clock.shift(timedelta(seconds=30))  # a patient stranger: every delay has passed
        assert await attempt(app, stranger, bad(program)) == {"code": "UNAUTHENTICATED"}
    assert (await attempt(app, stranger, bad(program)))["code"] == "RATE_LIMITED"
    # then the owner still gets in from the known source at once
    assert await attempt(app, owner, good(program, clock)) == {"ok": True}
    # and from a new place after waiting out the stranger's delay
    for _ in range(6):
        await attempt(app, stranger, bad(program))
    refused = await attempt(app, travelling, good(program, clock))
    assert refused == {"code": "RATE_LIMITED", "retryAfter": 2}
    clock.shift(timedelta(seconds=crypto.TOTP_STEP_S))  # more than the 2 s, and a fresh TOTP code
    assert await attempt(app, travelling, good(program, clock)) == {"ok": True}


async def test_one_persons_typos_do_not_lock_out_the_office(
    app: ASGIApp, services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    colleague = await new_program(services)
    office = address(0, program)
    for _ in range(6):
        await attempt(app, office, bad(program))
    assert (await attempt(app, office, bad(program)))["code"] == "RATE_LIMITED"
    assert await attempt(app, office, good(colleague, clock)) == {"ok": True}


async def test_an_ip_is_throttled_after_a_hundred_failures_across_accounts(
    services: Services, clock: ShiftableClock
) -> None:
    throttle = Throttle(services.redis, clock, "login-test")
    for n in range(100):
        await throttle.reserve(
            [(f"account:{n}@example.com", ACCOUNT), ("ip:192.0.2.1", CLIENT_IP)], "failed logins"
        )
    with pytest.raises(RateLimited) as refused:
        await throttle.reserve(
            [("account:new@example.com", ACCOUNT), ("ip:192.0.2.1", CLIENT_IP)], "failed logins"
        )
    assert (refused.value.message, refused.value.details) == (
        "too many failed logins: try again in 2 s",
        {"retryAfter": 2},
    )
    # a success hands its attempt back but keeps the other failures
    await throttle.refund("ip:192.0.2.1")
    clock.shift(timedelta(seconds=2))
    await throttle.reserve([("ip:192.0.2.1", CLIENT_IP)], "failed logins")
    with pytest.raises(RateLimited):
        await throttle.reserve([("ip:192.0.2.1", CLIENT_IP)], "failed logins")


async def test_parallel_wrong_passwords_cost_at_most_five_password_checks(
    app: ASGIApp, program: ProgramFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = 0
    verify = crypto.verify_password

    def counting(password_hash: str | None, password: str) -> bool:
        nonlocal checks
        checks += 1
        return verify(password_hash, password)

    monkeypatch.setattr(crypto, "verify_password", counting)
    async with http_client(app, address(0, program)) as http:
        anonymous = GraphQLClient(http, None)
        bodies = await asyncio.gather(*(anonymous.execute(LOGIN, bad(program)) for _ in range(40)))
    codes = sorted(body["errors"][0]["extensions"]["code"] for body in bodies)
    assert codes == ["RATE_LIMITED"] * 35 + ["UNAUTHENTICATED"] * 5
    assert checks == 5


async def test_step_up_totp_checks_are_throttled_like_logins(
    app: ASGIApp, program: ProgramFixture, clock: ShiftableClock
) -> None:
    async with http_client(app, address(0, program)) as http:
        session = GraphQLClient(http, await admin_token(http, program, clock))
        codes = [(await session.error(VERIFY, {"c": "000000"}))["extensions"] for _ in range(6)]
        assert [c["code"] for c in codes] == ["FORBIDDEN"] * 5 + ["RATE_LIMITED"]
        assert codes[-1]["retryAfter"] == 2
        clock.shift(timedelta(seconds=crypto.TOTP_STEP_S))
        fresh = crypto.code_at(program.totp_secret, clock.now().timestamp())
        assert (await session.data(VERIFY, {"c": fresh}))["verifyTotp"] is True


# ---- the client address ----

TRUSTED = [ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("198.51.100.7", ["203.0.113.9"], "198.51.100.7"),  # not a proxy: its header is ignored
        ("10.0.0.2", ["203.0.113.9"], "203.0.113.9"),
        ("10.0.0.2", ["1.2.3.4, 203.0.113.9, 10.0.0.3"], "203.0.113.9"),  # right-most not trusted
        ("10.0.0.2", ["1.2.3.4", "203.0.113.9"], "203.0.113.9"),  # several headers read as one list
        ("10.0.0.2", ["garbage, 10.0.0.3"], "10.0.0.3"),
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["[2001:db8::1]"], "2001:db8::1"),
        (None, ["203.0.113.9"], "unknown"),
    ],
)
def test_the_client_address_trusts_forwarded_for_from_trusted_proxies_only(
    peer: str | None, forwarded: list[str], expected: str
) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == expected


def test_trusted_proxies_are_configured_by_address_or_network() -> None:
    settings = Settings.from_env({"LOYALTY_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1 ::1"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "192.0.2.1/32", "::1/128"]
    assert Settings.from_env({}).trusted_proxies == ()


async def test_the_running_server_ignores_forwarded_for_unless_its_peer_is_a_trusted_proxy(
    settings: Settings, services: Services
) -> None:
    """uvicorn used to trust X-Forwarded-For from 127.0.0.1, so anyone on the host (or a local proxy's
    client) chose the address that the per-IP throttle counted."""
    program = await new_program(services)
    throttle = Throttle(services.redis, services.clock, "login")

    async def counted_as(trusted_proxies: str = "") -> list[str]:
        async with (
            running_server(settings, {"LOYALTY_TRUSTED_PROXIES": trusted_proxies}) as server,
            httpx.AsyncClient(base_url=server.http, timeout=30) as http,
        ):
            await http.post(
                "/graphql",
                json={"query": LOGIN, "variables": bad(program)},
                headers={"X-Forwarded-For": "198.51.100.7"},
            )
        found = []
        for ip in ("127.0.0.1", "198.51.100.7"):
            if await services.redis.client.exists(throttle.key(f"ip:{ip}")):
                found.append(ip)
                await services.redis.client.delete(throttle.key(f"ip:{ip}"))
        return found

    assert await counted_as() == ["127.0.0.1"]
    assert await counted_as(trusted_proxies="127.0.0.1") == ["198.51.100.7"]

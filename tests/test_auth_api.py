"""Admin login (password + single-use TOTP), rate limits, sessions, API keys, member tokens, tenancy."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from api.runtime import Services
from domain.auth import secrets as crypto
from domain.auth.scopes import Scope
from tests.support import ShiftableClock
from tests.support.events import UPSERT
from tests.support.graphql import LOGIN, GraphQLClient, ProgramFixture, admin_token, new_program

PROGRAM = "{ program { key kind } }"
ISSUE = "mutation($m: String!) { issueMemberToken(memberExternalId: $m) { token expiresAt } }"


def code(program: ProgramFixture, clock: ShiftableClock) -> str:
    return crypto.code_at(program.totp_secret, clock.now().timestamp())


async def test_login_with_password_and_totp_gives_a_session(
    client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    anonymous = GraphQLClient(client, None)
    data = await anonymous.data(
        LOGIN, {"e": program.admin_email, "p": program.admin_password, "c": code(program, clock)}
    )
    session = GraphQLClient(client, data["login"]["token"])
    assert (await session.data(PROGRAM))["program"] == {"key": program.key, "kind": "B2C"}


async def test_a_totp_code_is_accepted_once(
    client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    anonymous = GraphQLClient(client, None)
    variables = {"e": program.admin_email, "p": program.admin_password, "c": code(program, clock)}
    await anonymous.data(LOGIN, variables)
    replay = await anonymous.error(LOGIN, variables)
    assert (replay["extensions"]["code"], replay["message"]) == (
        "UNAUTHENTICATED",
        "email, password or TOTP code is wrong",
    )


@pytest.mark.parametrize("wrong", ["password", "totp", "email"])
async def test_every_wrong_login_gets_the_same_answer(
    client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock, wrong: str
) -> None:
    """A right password with a wrong code must not say so: the answer never tells which part was right."""
    good = code(program, clock)
    variables = {
        "e": "nobody@example.com" if wrong == "email" else program.admin_email,
        "p": "wrong password!!" if wrong == "password" else program.admin_password,
        "c": f"{(int(good) + 1) % 1_000_000:06d}" if wrong == "totp" else good,
    }
    error = await GraphQLClient(client, None).error(LOGIN, variables)
    assert error == {
        "message": "email, password or TOTP code is wrong",
        "locations": [{"line": 1, "column": 51}],
        "path": ["login"],
        "extensions": {"code": "UNAUTHENTICATED"},
    }


async def test_logout_revokes_the_session(
    client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    session = GraphQLClient(client, await admin_token(client, program, clock))
    assert (await session.data("mutation { logout }"))["logout"] is True
    error = await session.error(PROGRAM)
    assert (error["extensions"]["code"], error["message"]) == (
        "UNAUTHENTICATED",
        "the session has ended; log in again",
    )


async def test_sessions_expire(
    client: httpx.AsyncClient, program: ProgramFixture, clock: ShiftableClock
) -> None:
    session = GraphQLClient(client, await admin_token(client, program, clock))
    clock.shift(timedelta(hours=12, seconds=1))
    error = await session.error(PROGRAM)
    assert (error["extensions"]["code"], error["message"]) == ("UNAUTHENTICATED", "the token has expired")


@pytest.mark.parametrize("token", [None, "garbage", "lk_not-a-key", "e30.AAAA"])
async def test_no_valid_token_is_unauthenticated(client: httpx.AsyncClient, token: str | None) -> None:
    error = await GraphQLClient(client, token).error(PROGRAM)
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_token_signed_with_another_key_is_refused(
    client: httpx.AsyncClient, program: ProgramFixture
) -> None:
    forged = crypto.sign({"typ": "member", "pid": program.id, "mid": 1, "exp": 2**40}, "another-secret" * 4)
    error = await GraphQLClient(client, forged).error("{ me { externalId } }")
    assert error["message"] == "the bearer token is malformed or its signature is wrong"


async def test_api_keys_act_only_within_their_scopes(
    services: Services, client: httpx.AsyncClient, program: ProgramFixture
) -> None:
    reader = await services.auth.create_api_key(program.key, "reporting", frozenset({Scope.MEMBERS_READ}))
    key = GraphQLClient(client, reader.key)
    error = await key.error(UPSERT, {"m": [{"externalId": "x"}]})
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert error["message"] == (
        "upsertMembers needs the members:write scope (roles OWNER, ADMIN); this API key lacks it"
    )
    assert (await key.data("{ members(first: 1) { totalCount } }"))["members"]["totalCount"] == 0


async def test_programs_are_isolated(
    services: Services, client: httpx.AsyncClient, integration: GraphQLClient
) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": "shared-id"}]})
    other = GraphQLClient(client, (await new_program(services)).api_key)
    assert (await other.data('{ member(externalId: "shared-id") { id } }'))["member"] is None
    assert (await other.data("{ members { totalCount } }"))["members"]["totalCount"] == 0


async def test_a_member_token_reads_only_its_member(
    client: httpx.AsyncClient, integration: GraphQLClient
) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}, {"externalId": "ben"}]})
    issued = (await integration.data(ISSUE, {"m": "ana"}))["issueMemberToken"]
    ana = GraphQLClient(client, issued["token"])
    assert (await ana.data("{ me { externalId pointsBalance } }"))["me"] == {
        "externalId": "ana",
        "pointsBalance": 0,
    }
    assert (await ana.data('{ member(externalId: "ana") { externalId } }'))["member"] == {"externalId": "ana"}
    for query in ('{ member(externalId: "ben") { externalId } }', "{ members { totalCount } }"):
        assert (await ana.error(query))["extensions"]["code"] == "FORBIDDEN"
    redeem = 'mutation { redeemPoints(memberExternalId: "ben", points: 1, reason: "x", idempotencyKey: "k") { id } }'
    assert (await ana.error(redeem))["extensions"]["code"] == "FORBIDDEN"
    assert (await ana.error(ISSUE, {"m": "ben"}))["extensions"]["code"] == "FORBIDDEN"


async def test_member_tokens_last_one_hour(
    client: httpx.AsyncClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})
    token = (await integration.data(ISSUE, {"m": "ana"}))["issueMemberToken"]["token"]
    clock.shift(timedelta(minutes=59))
    assert (await GraphQLClient(client, token).data("{ me { externalId } }"))["me"]["externalId"] == "ana"
    clock.shift(timedelta(minutes=2))
    assert (await GraphQLClient(client, token).error("{ me { externalId } }"))[
        "message"
    ] == "the token has expired"


async def test_issuing_a_token_for_an_unknown_member_is_not_found(integration: GraphQLClient) -> None:
    error = await integration.error(ISSUE, {"m": "nobody"})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "memberExternalId: no member 'nobody' in this program",
    )


async def test_me_needs_a_member_token(integration: GraphQLClient) -> None:
    assert (await integration.error("{ me { id } }"))["extensions"]["code"] == "FORBIDDEN"

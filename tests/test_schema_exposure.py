"""What the API reveals about itself: introspection and "Did you mean ...?" suggestions per caller,
the program:read scope of `program`, and documents with several operations."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from api.app import create_app
from api.runtime import Services
from domain.auth.scopes import Scope
from domain.settings import ConfigurationError, Introspection, Settings
from tests.support.graphql import GraphQLClient, ProgramFixture, http_client

INTROSPECT = "{ __schema { queryType { name } } }"
#: Mistakes whose errors suggested real names: a field, an argument, a type, enum values (as a literal
#: and in a variable) and an input field.
MISTAKES: list[tuple[str, dict[str, Any], str]] = [
    ("{ membr { id } }", {}, "member"),
    ('{ member(externalI: "x") { id } }', {}, "'externalId'"),
    ("query($m: MemberInpt) { __typename }", {}, "MemberInput"),
    ("{ deliveries(status: DAED) { id } }", {}, "DEAD"),
    ("query($s: DeliveryStatus) { deliveries(status: $s) { id } }", {"s": "DAED"}, "DEAD"),
    (
        "mutation($m: [MemberInput!]!) { upsertMembers(members: $m) { upserted } }",
        {"m": [{"externalId": "x", "attribute": {}}]},
        "attributes",
    ),
]


def with_introspection(services: Services, mode: Introspection) -> ASGIApp:
    """The app on the same services, with another LOYALTY_INTROSPECTION."""
    settings = dataclasses.replace(services.settings, introspection=mode)
    return create_app(dataclasses.replace(services, settings=settings))


Call = Callable[[Introspection, str | None, str, dict[str, Any]], Awaitable[dict[str, Any]]]


@pytest.fixture
def caller(services: Services) -> Call:
    """call(mode, token, query, variables) -> the response body, from an app with that mode."""
    apps = {mode: with_introspection(services, mode) for mode in Introspection}

    async def call(
        mode: Introspection, token: str | None, query: str, variables: dict[str, Any]
    ) -> dict[str, Any]:
        async with http_client(apps[mode], "192.0.2.10") as http:
            return await GraphQLClient(http, token).execute(query, variables)

    return call


def messages(body: dict[str, Any]) -> str:
    return " | ".join(e["message"] for e in body.get("errors", []))


@pytest.mark.parametrize(("query", "variables", "leaked"), MISTAKES)
async def test_callers_who_may_not_see_the_schema_get_no_suggestions(
    caller: Call, program: ProgramFixture, query: str, variables: dict[str, Any], leaked: str
) -> None:
    for mode, token in [
        (Introspection.OFF, None),
        (Introspection.OFF, program.api_key),
        (Introspection.AUTHENTICATED, None),
    ]:
        body = await caller(mode, token, query, variables)
        assert body["errors"], body
        assert all(e["extensions"]["code"] == "BAD_USER_INPUT" for e in body["errors"])
        assert "Did you mean" not in messages(body), (mode, token)
        assert leaked not in messages(body), (mode, token)
    # an API key may see the schema under `authenticated`, and so gets the suggestion
    assert leaked in messages(await caller(Introspection.AUTHENTICATED, program.api_key, query, variables))


async def test_introspection_follows_the_setting_and_the_caller(
    caller: Call, program: ProgramFixture, integration: GraphQLClient
) -> None:
    await integration.data('mutation { upsertMembers(members: [{externalId: "ann"}]) { upserted } }')
    member = (await integration.data('mutation { issueMemberToken(memberExternalId: "ann") { token } }'))[
        "issueMemberToken"
    ]["token"]
    allowed = {
        (Introspection.ON, None): True,
        (Introspection.AUTHENTICATED, None): False,
        (Introspection.AUTHENTICATED, member): False,  # member tokens ship inside apps
        (Introspection.AUTHENTICATED, program.api_key): True,
        (Introspection.OFF, program.api_key): False,
    }
    for (mode, token), expected in allowed.items():
        body = await caller(mode, token, INTROSPECT, {})
        if expected:
            assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}, (mode, token)
        else:
            assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", (mode, token)
            assert "introspection has been disabled" in body["errors"][0]["message"]


def test_introspection_is_for_token_holders_unless_configured() -> None:
    """`loyalty serve` reads this; `serve --demo` and `loyalty demo` set LOYALTY_INTROSPECTION=on."""
    assert Settings.from_env({}).introspection is Introspection.AUTHENTICATED
    for raw, mode in [("1", Introspection.ON), ("on", Introspection.ON), ("0", Introspection.OFF)]:
        assert Settings.from_env({"LOYALTY_INTROSPECTION": raw}).introspection is mode
    assert (
        Settings.from_env({"LOYALTY_INTROSPECTION": "Authenticated"}).introspection
        is Introspection.AUTHENTICATED
    )
    with pytest.raises(ConfigurationError, match="LOYALTY_INTROSPECTION must be on, authenticated or off"):
        Settings.from_env({"LOYALTY_INTROSPECTION": "sometimes"})


async def test_the_program_needs_program_read(
    services: Services, client: httpx.AsyncClient, program: ProgramFixture, integration: GraphQLClient
) -> None:
    assert (await integration.data("{ program { key } }"))["program"] == {"key": program.key}
    reader = await services.auth.create_api_key(
        program.key, "segments only", frozenset({Scope.SEGMENTS_READ})
    )
    error = await GraphQLClient(client, reader.key).error("{ program { key } }")
    assert (error["extensions"]["code"], error["message"]) == (
        "FORBIDDEN",
        "program needs the program:read scope (roles OWNER, ADMIN, MARKETER, REVIEWER, VIEWER); this API key lacks it",
    )


async def test_a_document_with_several_operations_must_name_one(
    client: httpx.AsyncClient, integration: GraphQLClient, program: ProgramFixture
) -> None:
    document = """
    query Program { program { key } }
    mutation Add { upsertMembers(members: [{externalId: "ann"}]) { upserted } }
    """
    error = await integration.error(document)
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "operationName: the document has 2 operations (Program, Add); name the one to run",
    )
    assert (await integration.data("{ members { totalCount } }"))["members"]["totalCount"] == 0
    # naming one runs that one
    response = await client.post(
        "/graphql",
        json={"query": document, "operationName": "Add"},
        headers={"Authorization": f"Bearer {program.api_key}"},
    )
    assert response.json() == {"data": {"upsertMembers": {"upserted": 1}}}


async def test_a_subscription_sent_over_http_is_told_where_subscriptions_run(admin: GraphQLClient) -> None:
    """It used to run and fail as INTERNAL ("Cannot return null for non-nullable field ...")."""
    error = await admin.error("subscription { segmentChanges { segmentKey } }")
    assert (error["extensions"], error["message"]) == (
        {"code": "BAD_USER_INPUT"},
        "subscriptions run over a WebSocket on /graphql (the graphql-transport-ws protocol), not over HTTP",
    )

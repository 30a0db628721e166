"""Every argument of every operation is checked before it runs (api/inputs.py): a NUL character,
JSON nested too deep, an integer beyond 64 bits or an oversized JSON value is BAD_USER_INPUT naming
the argument path, never INTERNAL (PostgreSQL's text and jsonb refuse NUL; the JSON encoder stops at
255 levels and 64-bit integers; a DateTime must have an offset and a UTC form in a sane year)."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import ValueNode, parse, print_ast, value_from_ast_untyped

from api import inputs
from api.schema import build_schema
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient
from tests.support.inputs import nested

ORGS = "mutation($o: [OrganizationInput!]!) { upsertOrganizations(organizations: $o) { upserted } }"
SEGMENT = "mutation($s: SegmentInput!) { createSegment(input: $s) { key } }"
MEMBER = "query($id: String!) { member(externalId: $id) { externalId } }"
PREVIEW = "query($c: JSON) { previewSegment(condition: $c) { rule } }"


@pytest.mark.parametrize(
    ("query", "variables", "message"),
    [
        (
            UPSERT,
            {"m": [{"externalId": "ok"}, {"externalId": "b", "attributes": {"note": "x\u0000"}}]},
            "members[1].attributes.note: contains a NUL character",
        ),
        (UPSERT, {"m": [{"externalId": "b\u0000"}]}, "members[0].externalId: contains a NUL character"),
        (
            UPSERT,
            {"m": [{"externalId": "deep", "attributes": nested(500)}]},
            "members[0].attributes: nested deeper than 32 levels",
        ),
        (
            'mutation { upsertMembers(members: [{externalId: "big", attributes: {n: 100000000000000000000}}]) '
            "{ upserted } }",
            None,
            "members[0].attributes.n: integers must fit in 64 bits (signed)",
        ),
        (
            ORGS,
            {"o": [{"externalId": "o1", "name": "Acme\u0000"}]},
            "organizations[0].name: contains a NUL character",
        ),
        (
            SEGMENT,
            {"s": {"key": "vip", "name": "V\u0000IP", "kind": "STATIC"}},
            "input.name: contains a NUL character",
        ),
        (MEMBER, {"id": "m\u0000"}, "externalId: contains a NUL character"),
        (
            'query($id: String = "m\\u0000") { member(externalId: $id) { externalId } }',
            None,
            "externalId: contains a NUL character",
        ),
        (
            PREVIEW,
            {"c": {"attr": "city", "op": "eq", "value": "x" * 70_000}},
            "condition: 70036 bytes exceeds the limit of 65536",
        ),
        # the DateTime scalar lets text that does not parse through (for recordEvents' sake)
        (
            UPSERT,
            {"m": [{"externalId": "ok", "joinedAt": "last spring"}]},
            "members[0].joinedAt: 'last spring' is not an ISO 8601 date-time with a UTC offset, "
            "e.g. 2026-11-22T10:00:00+00:00",
        ),
        (
            "{ segments { history(since: 20260101) { size } } }",
            None,
            "since: '20260101' is not an ISO 8601 date-time with a UTC offset, e.g. 2026-11-22T10:00:00+00:00",
        ),
        # year 1 at +14:00 has no UTC form: the column's bind (and segments' astimezone) overflowed
        (
            UPSERT,
            {"m": [{"externalId": "old", "joinedAt": "0001-01-01T00:00:00+14:00"}]},
            "members[0].joinedAt: 0001-01-01T00:00:00+14:00 is outside the years 1900 to 2999 (UTC)",
        ),
        (
            '{ segments { history(since: "0001-01-01T00:00:00+14:00") { size } } }',
            None,
            "since: 0001-01-01T00:00:00+14:00 is outside the years 1900 to 2999 (UTC)",
        ),
        (
            '{ segments { changes(since: "9999-12-31T23:00:00-05:00") { at } } }',
            None,
            "since: 9999-12-31T23:00:00-05:00 is outside the years 1900 to 2999 (UTC)",
        ),
        # history read a date-time without an offset as the server's local time
        (
            '{ segments { history(since: "2026-01-01T00:00:00") { size } } }',
            None,
            "since: needs a UTC offset, e.g. 2026-11-22T10:00:00+00:00",
        ),
    ],
    ids=[
        "nul-in-attributes",
        "nul-in-external-id",
        "attributes-500-deep",
        "integer-literal-beyond-64-bits",
        "nul-in-organization-name",
        "nul-in-segment-name",
        "nul-in-a-query-variable",
        "nul-in-a-variable-default",
        "json-over-64-kib",
        "unparsed-datetime-variable",
        "unparsed-datetime-literal",
        "datetime-without-utc-form",
        "datetime-before-the-years",
        "datetime-after-the-years",
        "datetime-without-offset",
    ],
)
async def test_an_unsafe_argument_is_bad_input_naming_its_path(
    admin: GraphQLClient, query: str, variables: dict[str, Any] | None, message: str
) -> None:
    error = await admin.error(query, variables)
    assert (error["extensions"], error["message"]) == ({"code": "BAD_USER_INPUT"}, message)
    assert (await admin.data("{ members { totalCount } }"))["members"]["totalCount"] == 0


async def test_merged_organization_attributes_are_limited_like_members(integration: GraphQLClient) -> None:
    await integration.data(
        ORGS, {"o": [{"externalId": "o1", "name": "Acme", "attributes": {"a": "x" * 9000}}]}
    )
    error = await integration.error(
        ORGS, {"o": [{"externalId": "o1", "name": "Acme", "attributes": {"b": "y" * 9000}}]}
    )
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "organizations[0].attributes: more than 16384 bytes once merged",
    )


async def test_safe_arguments_pass_the_check(integration: GraphQLClient) -> None:
    attributes = {
        "nested": nested(31),  # 32 levels with attributes itself
        "text": "tab\tnewline\n☕",
        "big": 2**63 - 1,
        "list": [1, [2, [3]]],
    }
    await integration.data(UPSERT, {"m": [{"externalId": "fine", "attributes": attributes}]})
    data = await integration.data(
        "query($id: String!) { member(externalId: $id) { attributes } }", {"id": "fine"}
    )
    assert data["member"]["attributes"] == attributes


def test_an_argument_checked_per_item_is_not_even_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    """recordEvents checks each event itself: the guard leaves its literal batch alone instead of
    converting it to Python for nothing (3-4 ms per 1,000 events, on the ingest path)."""
    converted: list[str] = []

    def spy(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
        converted.append(print_ast(node))
        return value_from_ast_untyped(node, variables)

    monkeypatch.setattr(inputs, "value_from_ast_untyped", spy)
    document = parse(
        'mutation { recordEvents(events: [{externalId: "e1", memberExternalId: "m1", type: "visit", '
        'occurredAt: "2026-01-01T00:00:00+00:00"}]) { results { status } } '
        'upsertMembers(members: [{externalId: "m1"}]) { upserted } }'
    )
    inputs.check_arguments(build_schema()._schema, document, None, None)
    assert converted == ['[{ externalId: "m1" }]']  # upsertMembers' argument only

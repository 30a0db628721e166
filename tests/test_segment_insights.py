"""Beside the language (issue 17): warnings on a valid but suspicious condition, a segment's
breakdown by an attribute, and the average transaction value of segment analytics."""

from __future__ import annotations

from datetime import timedelta

from tests.support import ShiftableClock
from tests.support.events import UPSERT, event, record_accepted
from tests.support.graphql import GraphQLClient
from tests.support.segments import create

PREVIEW = "query($r: String) { previewSegment(rule: $r) { rule size warnings } }"
CREATE = "mutation($i: SegmentInput!) { createSegment(input: $i) { key size warnings } }"
BREAKDOWN = "query($k: String!, $p: String!) { segmentBreakdown(key: $k, path: $p) { value count share } }"
ANALYTICS = """
query($k: String!, $from: Date!, $to: Date!) {
  segmentAnalytics(key: $k, from: $from, to: $to) { size purchaseAmountPerMember averageTransactionValue }
}"""


async def test_unknown_event_types_and_attribute_paths_are_warned_about(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    await integration.data(UPSERT, {"m": [{"externalId": "a", "attributes": {"city": "Izmir"}}]})
    await record_accepted(integration, [event("a", "visit", now - timedelta(hours=1))])

    typo = (await admin.data(PREVIEW, {"r": 'count(vist, 30d) >= 1 or citty = "Izmir"'}))["previewSegment"]
    assert typo["size"] == 0
    assert typo["warnings"] == [
        "event type 'vist' was never recorded in this program (a typo? the condition counts none of it)",
        "attribute 'citty' is held by no member (a typo? comparisons with it are false for everyone)",
    ]
    fine = await admin.data(PREVIEW, {"r": 'count(visit, 30d) >= 1 and city = "Izmir" and age > 3'})
    assert fine["previewSegment"]["warnings"] == []  # built-ins (age) are never warned about
    created = (
        await admin.data(
            CREATE, {"i": {"key": "s", "name": "s", "kind": "DYNAMIC", "rule": "org.count(vist) > 0"}}
        )
    )["createSegment"]
    assert created["warnings"] == [
        "event type 'vist' was never recorded in this program (a typo? the condition counts none of it)"
    ]
    static = (await admin.data(CREATE, {"i": {"key": "t", "name": "t", "kind": "STATIC"}}))["createSegment"]
    assert static["warnings"] == []


async def test_the_share_of_women_among_idea_champions(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    people = {"e1": "F", "e2": "F", "e3": "M", "e4": None, "e5": "F"}
    await integration.data(
        UPSERT,
        {
            "m": [
                {"externalId": e, "kind": "EMPLOYEE", "attributes": {} if g is None else {"gender": g}}
                for e, g in people.items()
            ]
            + [{"externalId": "e6", "kind": "EMPLOYEE", "attributes": {"gender": 1}}]
        },
    )
    champions = ["e1", "e2", "e3", "e4", "e6"]  # e5 submits nothing
    await record_accepted(
        integration,
        [event(e, "suggestion_submitted", now - timedelta(days=d)) for e in champions for d in (1, 2, 3)],
    )
    await create(admin, "idea_champions", "kind = EMPLOYEE and count(suggestion_submitted, 30d) >= 3")
    rows = (await admin.data(BREAKDOWN, {"k": "idea_champions", "p": "gender"}))["segmentBreakdown"]
    assert rows == [
        {"value": "F", "count": 2, "share": 0.4},
        {"value": "M", "count": 1, "share": 0.2},
        {"value": 1, "count": 1, "share": 0.2},  # a number is not the string "1"
        {"value": None, "count": 1, "share": 0.2},  # no gender
    ]
    bad = await admin.error(BREAKDOWN, {"k": "idea_champions", "p": "not a path"})
    assert bad["extensions"]["code"] == "BAD_USER_INPUT"
    assert bad["message"].startswith("path: ")
    missing = await admin.error(BREAKDOWN, {"k": "nobody", "p": "gender"})
    assert missing["extensions"]["code"] == "NOT_FOUND"


async def test_segment_analytics_gain_the_average_transaction_value(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    now = clock.now()
    await integration.data(UPSERT, {"m": [{"externalId": "p1"}, {"externalId": "p2"}, {"externalId": "p3"}]})
    await record_accepted(
        integration,
        [
            event("p1", "purchase", now - timedelta(days=1), "10"),
            event("p1", "purchase", now - timedelta(days=2), "20.50"),
            event("p2", "purchase", now - timedelta(days=1), "30"),
            event("p2", "purchase", now - timedelta(days=1)),  # no amount: not a transaction value
        ],
    )
    await create(admin, "buyers", "count(purchase) >= 1")
    day = now.date()
    report = (
        await admin.data(ANALYTICS, {"k": "buyers", "from": str(day - timedelta(days=5)), "to": str(day)})
    )["segmentAnalytics"]
    assert report == {"size": 2, "purchaseAmountPerMember": "30.25", "averageTransactionValue": "20.17"}
    await create(admin, "nobody", "count(purchase) >= 100")
    empty = (
        await admin.data(ANALYTICS, {"k": "nobody", "from": str(day - timedelta(days=5)), "to": str(day)})
    )["segmentAnalytics"]
    assert empty["averageTransactionValue"] is None

"""Segment analytics and overlap through the GraphQL endpoint (docs/analytics.md)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx

from api.runtime import Services
from domain.campaigns.delivery import OutboxDelivery
from domain.campaigns.messages import LoggingProvider
from tests.support import ShiftableClock
from tests.support.events import RECORD, UPSERT
from tests.support.graphql import GraphQLClient
from tests.support.segments import create, set_triggers

MESSAGES = "query($id: String) { messages(memberExternalId: $id) { id status } }"

ANALYTICS = """
query($k: String!, $from: Date!, $to: Date!, $days: Int) {
  segmentAnalytics(key: $k, from: $from, to: $to, conversionDays: $days) {
    key from to size entered left averagePointsBalance purchasesPerMember purchaseAmountPerMember
    days { day size entered left }
    conversion { goalEventType days entered converted rate }
    messages { template channel created sent suppressed opened clicked converted }
  }
}"""
OVERLAP = "query($a: String!, $b: String!) { segmentOverlap(a: $a, b: $b) { a b sizeA sizeB both jaccard } }"


def purchase(key: str, member: str, at: datetime, amount: str) -> dict[str, Any]:
    return {
        "externalId": key,
        "memberExternalId": member,
        "type": "purchase",
        "occurredAt": at.isoformat(),
        "amount": amount,
    }


async def test_a_segments_days_entries_exits_members_conversion_and_messages(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock, services: Services
) -> None:
    # given two segments, a welcome message to buyers, three members, and today's midnight (UTC)
    today = datetime.combine(clock.now().date(), time.min, tzinfo=UTC)
    await create(admin, "buyers", "count(purchase) >= 1")
    await set_triggers(admin, "buyers", [{"on": "ENTER", "action": "SEND_MESSAGE", "template": "welcome"}])
    await create(admin, "big", "sum(purchase.amount) >= 100")
    # (m1 and m2 accept in-app messages, m3 accepts none)
    in_app = {"channels": ["IN_APP"]}
    await integration.data(
        UPSERT, {"m": [{"externalId": "m1", **in_app}, {"externalId": "m2", **in_app}, {"externalId": "m3"}]}
    )

    async def on(day: int, *events: dict[str, Any]) -> None:
        """Record at 10:00 of `day` (days before today), as the clock says then."""
        clock.reset()
        clock.shift(today + timedelta(days=day, hours=10) - clock.now())
        results = (await integration.data(RECORD, {"e": list(events)}))["recordEvents"]["results"]
        assert {r["status"] for r in results} == {"ACCEPTED"}, results

    at = today + timedelta(days=-3, hours=9)
    # when m1 and m2 buy three days ago, m3 buys (big) and m1 buys again two days ago,
    await on(-3, purchase("p1", "m1", at, "50"), purchase("p2", "m2", at, "50"))
    await on(
        -2,
        purchase("p3", "m3", at + timedelta(days=1), "200"),
        purchase("p4", "m1", at + timedelta(days=1), "30"),
    )
    # and m2's purchase is refunded yesterday (m2 leaves buyers)
    refund = {
        "externalId": "r2",
        "memberExternalId": "m2",
        "type": "refund",
        "occurredAt": (at + timedelta(days=2)).isoformat(),
        "properties": {"refundOf": "p2"},
    }
    await on(-1, refund)
    clock.reset()
    # and the welcome messages delivered, m1 opening and clicking theirs the next morning
    await OutboxDelivery(services.db, services.clock, LoggingProvider()).run_once()
    messages = (await admin.data(MESSAGES, {"id": "m1"}))["messages"]
    opened = at + timedelta(days=1, hours=-1)
    reactions = [
        {
            "externalId": f"{kind}-1",
            "memberExternalId": "m1",
            "type": kind,
            "occurredAt": opened.isoformat(),
            "properties": {"messageId": messages[0]["id"]},
        }
        for kind in ("message_opened", "message_clicked")
    ]
    await integration.data(RECORD, {"e": reactions})

    # then the last four days read as they happened
    start = (today - timedelta(days=3)).date()
    report = (
        await admin.data(
            ANALYTICS, {"k": "buyers", "from": start.isoformat(), "to": today.date().isoformat()}
        )
    )["segmentAnalytics"]
    assert [(d["size"], d["entered"], d["left"]) for d in report["days"]] == [
        (2, 2, 0),
        (3, 1, 0),
        (2, 0, 1),
        (2, 0, 0),
    ]
    assert [d["day"] for d in report["days"]] == [(start + timedelta(days=i)).isoformat() for i in range(4)]
    assert (report["size"], report["entered"], report["left"]) == (2, 3, 1)
    # today's members m1 (80 points, 2 purchases) and m3 (200 points, 1 purchase)
    assert report["averagePointsBalance"] == 140.0
    assert (report["purchasesPerMember"], report["purchaseAmountPerMember"]) == (1.5, "140.00")
    # of the three who entered, only m1 bought again within 7 days of entering
    assert report["conversion"] == {
        "goalEventType": "purchase",
        "days": 7,
        "entered": 3,
        "converted": 1,
        "rate": 1 / 3,
    }
    # and a one-day window still catches m1's purchase, 23 hours after entering
    short = (
        await admin.data(
            ANALYTICS, {"k": "buyers", "from": start.isoformat(), "to": start.isoformat(), "days": 1}
        )
    )["segmentAnalytics"]
    assert short["conversion"]["entered"] == 2
    assert short["conversion"]["converted"] == 1  # p4 occurred 23 h after m1 entered
    assert [d["size"] for d in short["days"]] == [2]

    # and of the three welcome messages, m3's was suppressed (no channel accepted: not sent), the
    # other two were sent in-app, and m1 opened, clicked and bought within 7 days
    assert report["messages"] == [
        {
            "template": "welcome",
            "channel": None,
            "created": 1,
            "sent": 0,
            "suppressed": 1,
            "opened": 0,
            "clicked": 0,
            "converted": 0,
        },
        {
            "template": "welcome",
            "channel": "IN_APP",
            "created": 2,
            "sent": 2,
            "suppressed": 0,
            "opened": 1,
            "clicked": 1,
            "converted": 1,
        },
    ]

    # and the overlap of buyers {m1, m3} and big {m3}
    overlap = (await admin.data(OVERLAP, {"a": "buyers", "b": "big"}))["segmentOverlap"]
    assert overlap == {"a": "buyers", "b": "big", "sizeA": 2, "sizeB": 1, "both": 1, "jaccard": 0.5}


async def test_bad_ranges_and_unknown_segments_are_named(admin: GraphQLClient) -> None:
    await create(admin, "buyers", "count(purchase) >= 1")
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"k": "buyers", "from": "2026-03-02", "to": "2026-03-01"},
            "BAD_USER_INPUT",
            "to: 2026-03-01 is before from",
        ),
        ({"k": "buyers", "from": "2025-01-01", "to": "2026-03-01"}, "BAD_USER_INPUT", "to: at most 366 days"),
        (
            {"k": "buyers", "from": "2026-03-01", "to": "2026-03-02", "days": 0},
            "BAD_USER_INPUT",
            "conversionDays: between 1 and 90",
        ),
        ({"k": "nope", "from": "2026-03-01", "to": "2026-03-02"}, "NOT_FOUND", "key: no segment 'nope'"),
    ]
    for variables, code, message in cases:
        error = await admin.error(ANALYTICS, variables)
        assert error["extensions"]["code"] == code
        assert message in error["message"], error["message"]
    error = await admin.error(OVERLAP, {"a": "buyers", "b": "nope"})
    assert error["extensions"]["code"] == "NOT_FOUND"


async def test_members_cannot_read_analytics(client: httpx.AsyncClient, integration: GraphQLClient) -> None:
    await integration.data(UPSERT, {"m": [{"externalId": "ana"}]})
    issued = await integration.data(
        "mutation($m: String!) { issueMemberToken(memberExternalId: $m) { token } }", {"m": "ana"}
    )
    member = GraphQLClient(client, issued["issueMemberToken"]["token"])
    error = await member.error(OVERLAP, {"a": "x", "b": "y"})
    assert error["extensions"]["code"] == "FORBIDDEN"

"""Segment triggers through the real GraphQL endpoint: bonuses, tags, messages, validation, the cascade guard."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from api.runtime import Services
from domain.campaigns.triggers import TriggerRunner
from domain.changes import LoggedChange, SegmentsChanged
from domain.models import Message, OutboxItem, SegmentChange
from tests.support import ShiftableClock
from tests.support.events import RECORD, UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.segments import SET_TRIGGERS, set_triggers

CREATE = "mutation($i: SegmentInput!) { createSegment(input: $i) { key } }"
CHANGE = """
mutation($k: String!, $add: [String!], $remove: [String!]) {
  changeStaticSegment(key: $k, addMemberExternalIds: $add, removeMemberExternalIds: $remove) { key size }
}"""
MEMBER = """
query($id: String!) {
  member(externalId: $id) {
    pointsBalance tags { key source } segments { key }
    ledger(first: 20) { edges { node { points kind reason } } }
  }
}"""
MESSAGES = """
query($id: String) {
  messages(memberExternalId: $id) { memberExternalId segmentKey channel template status }
}"""


async def static(admin: GraphQLClient, key: str) -> None:
    await admin.data(CREATE, {"i": {"key": key, "name": key, "kind": "STATIC"}})


async def dynamic(admin: GraphQLClient, key: str, rule: str) -> None:
    await admin.data(CREATE, {"i": {"key": key, "name": key, "kind": "DYNAMIC", "rule": rule}})


async def member(admin: GraphQLClient, external_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await admin.data(MEMBER, {"id": external_id}))["member"]
    return found


async def test_enter_awards_the_bonus_once_per_entry_and_a_replay_pays_nothing(
    admin: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # given a static segment whose ENTER trigger awards 50 points and sends a message (ann accepts e-mail)
    await admin.data(UPSERT, {"m": [{"externalId": "ann", "channels": ["EMAIL"]}]})
    await static(admin, "gold")
    await set_triggers(
        admin,
        "gold",
        [
            {"on": "ENTER", "action": "AWARD_POINTS", "points": 50, "reason": "gold welcome"},
            {"on": "ENTER", "action": "SEND_MESSAGE", "template": "gold_welcome"},
        ],
    )
    # when ann enters, leaves and enters again
    await admin.data(CHANGE, {"k": "gold", "add": ["ann"]})
    assert (await member(admin, "ann"))["pointsBalance"] == 50
    await admin.data(CHANGE, {"k": "gold", "remove": ["ann"]})
    assert (await member(admin, "ann"))["pointsBalance"] == 50  # leaving pays nothing
    await admin.data(CHANGE, {"k": "gold", "add": ["ann"]})
    # then each entry paid once
    ann = await member(admin, "ann")
    assert ann["pointsBalance"] == 100
    assert [e["node"] for e in ann["ledger"]["edges"]] == [
        {"points": 50, "kind": "ADJUSTMENT", "reason": "gold welcome (gold)"},
        {"points": 50, "kind": "ADJUSTMENT", "reason": "gold welcome (gold)"},
    ]
    # and replaying the latest ENTERED change (same change-log row) writes nothing more
    runner = TriggerRunner()
    async with services.db.unit_of_work() as uow:
        row = (
            await uow.session.scalars(
                select(SegmentChange)
                .where(SegmentChange.program_id == program.id, SegmentChange.change == "ENTERED")
                .order_by(SegmentChange.id.desc())
            )
        ).first()
        assert row is not None
        change = LoggedChange(row.id, row.segment_id, "gold", row.member_id, True)
        await runner.segments_changed(uow.session, SegmentsChanged(program.id, (change,), row.at, 1, 0))
    assert (await member(admin, "ann"))["pointsBalance"] == 100
    async with services.db.read() as session:
        messages = await session.scalar(select(func.count()).where(Message.program_id == program.id))
        outbox = await session.scalar(select(func.count()).where(OutboxItem.program_id == program.id))
    assert (messages, outbox) == (2, 2)


async def test_leave_triggers_run_on_leaving_only(admin: GraphQLClient) -> None:
    await admin.data(UPSERT, {"m": [{"externalId": "bob", "channels": ["PUSH"]}]})
    await static(admin, "trial")
    await set_triggers(admin, "trial", [{"on": "LEAVE", "action": "SEND_MESSAGE", "template": "trial_ended"}])
    await admin.data(CHANGE, {"k": "trial", "add": ["bob"]})
    assert (await admin.data(MESSAGES, {"id": "bob"}))["messages"] == []
    await admin.data(CHANGE, {"k": "trial", "remove": ["bob"]})
    assert (await admin.data(MESSAGES, {"id": "bob"}))["messages"] == [
        {
            "memberExternalId": "bob",
            "segmentKey": "trial",
            "channel": "PUSH",
            "template": "trial_ended",
            "status": "QUEUED",
        }
    ]


async def test_trigger_tags_are_read_by_segments_and_removed_on_leave(admin: GraphQLClient) -> None:
    # given: entering "gold" adds the tag gold-club, leaving removes it; "club" reads the tag
    await admin.data(UPSERT, {"m": [{"externalId": "cy"}, {"externalId": "di"}]})
    await static(admin, "gold")
    await dynamic(admin, "club", 'has_tag("gold-club")')
    await set_triggers(
        admin,
        "gold",
        [
            {"on": "ENTER", "action": "ADD_TAG", "tag": "gold-club"},
            {"on": "LEAVE", "action": "REMOVE_TAG", "tag": "gold-club"},
        ],
    )
    # when cy enters gold
    await admin.data(CHANGE, {"k": "gold", "add": ["cy"]})
    cy = await member(admin, "cy")
    assert cy["tags"] == [{"key": "gold-club", "source": "trigger:gold"}]
    assert sorted(s["key"] for s in cy["segments"]) == ["club", "gold"]
    assert (await member(admin, "di"))["segments"] == []
    # when cy leaves gold, the tag goes and so does club
    await admin.data(CHANGE, {"k": "gold", "remove": ["cy"]})
    cy = await member(admin, "cy")
    assert cy["tags"] == []
    assert cy["segments"] == []


async def test_lifetime_value_bonus_is_a_clamped_percentage_of_purchases(
    admin: GraphQLClient, integration: GraphQLClient, clock: ShiftableClock
) -> None:
    # given: entering "regulars" (2+ purchases) pays 10 % of lifetime purchases, at least 5, at most 30
    await admin.data(UPSERT, {"m": [{"externalId": e} for e in ("small", "mid", "big")]})
    await dynamic(admin, "regulars", "count(purchase) >= 2")
    triggers = await set_triggers(
        admin,
        "regulars",
        [
            {
                "on": "ENTER",
                "action": "AWARD_POINTS",
                "percentOfLifetimeValue": "10",
                "minPoints": 5,
                "maxPoints": 30,
            }
        ],
    )
    assert triggers[0]["percentOfLifetimeValue"] == "10"
    assert (triggers[0]["minPoints"], triggers[0]["maxPoints"], triggers[0]["points"]) == (5, 30, None)
    at = (clock.now() - timedelta(hours=1)).isoformat()
    amounts = {"small": ["10", "5"], "mid": ["100", "50.99"], "big": ["400", "300"]}
    events = [
        {
            "externalId": f"{who}-{i}",
            "memberExternalId": who,
            "type": "purchase",
            "occurredAt": at,
            "amount": amount,
        }
        for who, pair in amounts.items()
        for i, amount in enumerate(pair)
    ]
    results = (await integration.data(RECORD, {"e": events}))["recordEvents"]["results"]
    assert {r["status"] for r in results} == {"ACCEPTED"}
    # then purchase points (1 per whole unit) plus the sized bonus
    assert (await member(admin, "small"))["pointsBalance"] == 10 + 5 + 5  # 1.5 -> min 5
    assert (await member(admin, "mid"))["pointsBalance"] == 100 + 50 + 15  # floor(15.099)
    assert (await member(admin, "big"))["pointsBalance"] == 400 + 300 + 30  # 70 -> max 30


async def test_triggers_are_listed_on_the_segment_and_replaced_as_a_set(admin: GraphQLClient) -> None:
    await static(admin, "s1")
    await set_triggers(admin, "s1", [{"on": "ENTER", "action": "ADD_TAG", "tag": "a"}])
    await set_triggers(
        admin,
        "s1",
        [
            {"on": "LEAVE", "action": "REMOVE_TAG", "tag": "a"},
            {"on": "ENTER", "action": "AWARD_POINTS", "points": 7},
        ],
    )
    data = await admin.data('{ segment(key: "s1") { triggers { on action tag points reason } } }')
    assert data["segment"]["triggers"] == [
        {"on": "LEAVE", "action": "REMOVE_TAG", "tag": "a", "points": None, "reason": None},
        {"on": "ENTER", "action": "AWARD_POINTS", "tag": None, "points": 7, "reason": "segment bonus"},
    ]


@pytest.mark.parametrize(
    ("triggers", "code", "message"),
    [
        (
            [
                {"on": "ENTER", "action": "ADD_TAG", "tag": "x"},
                {"on": "ENTER", "action": "AWARD_POINTS", "points": 0},
            ],
            "BAD_USER_INPUT",
            "triggers[1].points: must be a positive integer up to 1000000000, got 0",
        ),
        (
            [{"on": "ENTER", "action": "AWARD_POINTS"}],
            "BAD_USER_INPUT",
            "triggers[0]: AWARD_POINTS needs exactly one of points, percentOfLifetimeValue",
        ),
        (
            [{"on": "ENTER", "action": "AWARD_POINTS", "percentOfLifetimeValue": "150"}],
            "BAD_USER_INPUT",
            "triggers[0].percentOfLifetimeValue: must be above 0 and at most 100, with at most 4 decimals",
        ),
        (
            [
                {
                    "on": "ENTER",
                    "action": "AWARD_POINTS",
                    "percentOfLifetimeValue": "5",
                    "minPoints": 9,
                    "maxPoints": 3,
                }
            ],
            "BAD_USER_INPUT",
            "triggers[0].maxPoints: must not be below minPoints (9)",
        ),
        (
            [{"on": "LEAVE", "action": "ADD_TAG", "tag": "x", "points": 5}],
            "BAD_USER_INPUT",
            "triggers[0].points: not used by ADD_TAG",
        ),
        (
            [{"on": "ENTER", "action": "ADD_TAG", "tag": "no spaces"}],
            "BAD_USER_INPUT",
            "triggers[0].tag: 'no spaces' does not match [A-Za-z0-9_-]{1,64}",
        ),
        (
            [{"on": "ENTER", "action": "SEND_MESSAGE"}],
            "BAD_USER_INPUT",
            "triggers[0].template: required by SEND_MESSAGE, a key matching [a-z][a-z0-9_.-]{0,63}",
        ),
        (
            [
                {
                    "on": "ENTER",
                    "action": "SEND_MESSAGE",
                    "template": "t",
                    "preferredChannels": ["PUSH", "PUSH"],
                }
            ],
            "BAD_USER_INPUT",
            "triggers[0].preferredChannels[1]: PUSH is listed twice",
        ),
        (
            [{"on": "ENTER", "action": "ADD_TAG", "tag": "x", "preferredChannels": ["SMS"]}],
            "BAD_USER_INPUT",
            "triggers[0].preferredChannels: not used by ADD_TAG",
        ),
        (  # retired by consent (issue 18): there is no fallback channel
            [{"on": "ENTER", "action": "SEND_MESSAGE", "template": "t", "fallbackChannel": "EMAIL"}],
            "BAD_USER_INPUT",
            "Variable '$t' has invalid value at [0]: Expected value of type 'SegmentTriggerInput' not to "
            "include unknown field 'fallbackChannel', found: {'on': 'ENTER', 'action': 'SEND_MESSAGE', "
            "'template': 't', 'fallbackChannel': 'EMAIL'}.",
        ),
        (
            [{"on": "ENTER", "action": "CALL_WEBHOOK", "webhookKey": "nowhere"}],
            "NOT_FOUND",
            "triggers[0].webhookKey: no webhook endpoint 'nowhere' in this program",
        ),
    ],
)
async def test_bad_triggers_are_refused_naming_the_field(
    admin: GraphQLClient, triggers: list[dict[str, Any]], code: str, message: str
) -> None:
    await static(admin, "s")
    await set_triggers(admin, "s", [{"on": "ENTER", "action": "ADD_TAG", "tag": "kept"}])
    error = await admin.error(SET_TRIGGERS, {"k": "s", "t": triggers})
    assert (error["extensions"]["code"], error["message"]) == (code, message)
    # and nothing was replaced
    data = await admin.data('{ segment(key: "s") { triggers { tag } } }')
    assert data["segment"]["triggers"] == [{"tag": "kept"}]


async def test_unknown_segment_and_missing_scope_are_refused(
    admin: GraphQLClient, integration: GraphQLClient
) -> None:
    error = await admin.error(SET_TRIGGERS, {"k": "nope", "t": []})
    assert (error["extensions"]["code"], error["message"]) == (
        "NOT_FOUND",
        "segmentKey: no segment 'nope' in this program",
    )
    error = await integration.error(SET_TRIGGERS, {"k": "nope", "t": []})
    assert error["extensions"]["code"] == "FORBIDDEN"


async def test_trigger_cascades_stop_at_the_depth_limit(
    admin: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    # given: each bonus lifts the member into the next balance tier, whose trigger pays again
    await admin.data(UPSERT, {"m": [{"externalId": "gus"}]})
    await static(admin, "start")
    bonus = [{"on": "ENTER", "action": "AWARD_POINTS", "points": 10}]
    await set_triggers(admin, "start", bonus)
    for n in range(1, 6):
        await dynamic(admin, f"tier{n}", f"pointsBalance >= {10 * n}")
        await set_triggers(admin, f"tier{n}", bonus)
    # when gus enters start
    with caplog.at_level(logging.WARNING, logger="domain.campaigns.triggers"):
        await admin.data(CHANGE, {"k": "start", "add": ["gus"]})
    # then start, tier1 and tier2 paid; tier3 was entered but its trigger stopped (depth 3)
    gus = await member(admin, "gus")
    assert gus["pointsBalance"] == 30
    assert sorted(s["key"] for s in gus["segments"]) == ["start", "tier1", "tier2", "tier3"]
    assert any("trigger cascade stopped at depth 3" in r.getMessage() for r in caplog.records)

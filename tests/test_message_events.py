"""Messages are events (issue 17): each message sent or failed is an event of its member
(suppressed ones: tests/test_consent.py).

Recorded through the accrual pipeline's storage path (`domain.events.system`): ACCEPTED,
no points whatever the earning rules say, no fraud finding, counted by conditions at once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from api.runtime import Services
from domain.models import Event, FraudFinding, LedgerEntry
from tests.support import ShiftableClock
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.segments import create, members_of
from tests.support.webhooks import ADD, CREATE_STATIC, RETRY, SET_TRIGGERS, deliveries, drain
from tests.test_outbox import RecordingProvider, loop

RULE = "mutation($i: EarningRuleInput!) { setEarningRule(input: $i) { eventType } }"


async def test_sent_and_failed_messages_are_events_conditions_count(
    admin: GraphQLClient, services: Services, clock: ShiftableClock, program: ProgramFixture
) -> None:
    await admin.data(RULE, {"i": {"eventType": "message_sent", "fixedPoints": 50}})  # earns nothing anyway
    await admin.data(
        UPSERT, {"m": [{"externalId": "bo", "channels": ["PUSH"]}, {"externalId": "cy", "channels": ["SMS"]}]}
    )
    await admin.data(CREATE_STATIC, {"k": "vip"})
    await admin.data(
        SET_TRIGGERS, {"k": "vip", "t": [{"on": "ENTER", "action": "SEND_MESSAGE", "template": "spring"}]}
    )
    not_reached = 'count(message_failed, 30d where template = "spring") >= 1'
    await create(admin, "campaign_did_not_reach", not_reached)
    await create(
        admin, "reached", 'count(message_sent, 30d where template = "spring", channel = "PUSH") >= 1'
    )
    await admin.data(ADD, {"k": "vip", "m": ["bo", "cy"]})
    assert await members_of(admin, "campaign_did_not_reach") == []

    failing = RecordingProvider(fail=True)
    for wait in (0, 10, 15):  # three attempts: dead
        clock.shift(timedelta(seconds=wait))
        await drain(loop(services, clock, failing))
    assert await members_of(admin, "campaign_did_not_reach") == ["bo", "cy"]
    assert await members_of(admin, "reached") == []

    dead = await deliveries(admin, "DEAD")
    for delivery in dead:
        await admin.data(RETRY, {"id": delivery["id"]})
    await drain(loop(services, clock, RecordingProvider()))
    assert await members_of(admin, "reached") == ["bo"]  # cy's is an SMS

    async with services.db.read() as session:
        chosen = select(Event).where(
            Event.program_id == program.id, Event.type.in_(["message_sent", "message_failed"])
        )
        events = (await session.execute(chosen)).scalars().all()
        entries = (await session.execute(select(LedgerEntry))).scalars().all()
        findings = (await session.execute(select(FraudFinding))).scalars().all()
    mine = [e for e in events if e.properties.get("template") == "spring"]
    assert sorted((e.type, e.status, e.points_awarded) for e in mine) == [
        ("message_failed", "ACCEPTED", 0),
        ("message_failed", "ACCEPTED", 0),
        ("message_sent", "ACCEPTED", 0),
        ("message_sent", "ACCEPTED", 0),
    ]
    sent = next(e for e in mine if e.type == "message_sent" and e.properties["channel"] == "PUSH")
    assert set(sent.properties) == {"messageId", "template", "channel", "segment"}
    assert sent.properties["segment"] == "vip"
    assert sent.external_id == f"message-{sent.properties['messageId']}-sent"
    assert not [e for e in entries if e.program_id == sent.program_id]
    assert not [f for f in findings if f.program_id == sent.program_id]

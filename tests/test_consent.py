"""Consent (issue 18): messages go only to a channel the member accepted; with none, nothing is sent.

The message is recorded SUPPRESSED and a `message_suppressed` event of the member is
recorded in the same transaction, so conditions count it at once; no outbox row is
written, so no provider or webhook ever sees it. There is no fallback channel.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from api.runtime import Services
from domain.campaigns.messages import NO_ACCEPTED_CHANNEL, choose_channel
from domain.campaigns.triggers import TriggerRunner
from domain.changes import LoggedChange, SegmentsChanged
from domain.enums import Channel
from domain.models import Event, Message, OutboxItem, SegmentChange
from tests.support import ShiftableClock
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.segments import create, members_of
from tests.support.webhooks import ADD, CREATE_STATIC, SET_TRIGGERS, deliveries, drain
from tests.test_experiments import CREATE as CREATE_EXPERIMENT
from tests.test_experiments import EXPOSE_ALL, experiment, given_members
from tests.test_outbox import RecordingProvider, loop

MESSAGES = """
query($m: String) { messages(memberExternalId: $m) { id memberExternalId channel template status error } }"""
SEGMENT_TRIGGERS = '{ segment(key: "vip") { triggers { action template preferredChannels } } }'


async def suppressed_events(services: Services, program: ProgramFixture) -> list[Event]:
    async with services.db.read() as session:
        found = await session.scalars(
            select(Event)
            .where(Event.program_id == program.id, Event.type == "message_suppressed")
            .order_by(Event.id)
        )
        return list(found)


async def test_messages_go_only_to_accepted_channels_and_a_member_with_none_is_suppressed(
    admin: GraphQLClient, services: Services, clock: ShiftableClock, program: ProgramFixture
) -> None:
    # given members with and without accepted channels, and a segment counting suppressed messages
    await admin.data(
        UPSERT,
        {
            "m": [
                {"externalId": "nia"},  # accepted nothing
                {"externalId": "eli", "channels": ["EMAIL"]},
                {"externalId": "max", "channels": ["SMS", "PUSH"]},
                {"externalId": "ora", "channels": ["SMS", "EMAIL"]},
                {"externalId": "ula", "channels": ["SMS", "IN_APP"]},
            ]
        },
    )
    await create(admin, "withheld", "count(message_suppressed, 30d) >= 1")
    assert await members_of(admin, "withheld") == []
    # and a VIP welcome that prefers PUSH, then EMAIL
    await admin.data(CREATE_STATIC, {"k": "vip"})
    trigger = {
        "on": "ENTER",
        "action": "SEND_MESSAGE",
        "template": "spring",
        "preferredChannels": ["PUSH", "EMAIL"],
    }
    await admin.data(SET_TRIGGERS, {"k": "vip", "t": [trigger]})
    assert (await admin.data(SEGMENT_TRIGGERS))["segment"]["triggers"] == [
        {"action": "SEND_MESSAGE", "template": "spring", "preferredChannels": ["PUSH", "EMAIL"]}
    ]

    # when all of them enter
    await admin.data(ADD, {"k": "vip", "m": ["nia", "eli", "max", "ora", "ula"]})

    # then each message is on an accepted channel: the trigger's preference first, else the member's
    # first; nia's is SUPPRESSED with its reason and no channel
    messages = {m["memberExternalId"]: m for m in (await admin.data(MESSAGES, {"m": None}))["messages"]}
    assert {who: (m["channel"], m["status"], m["error"]) for who, m in messages.items()} == {
        "nia": (None, "SUPPRESSED", NO_ACCEPTED_CHANNEL),
        "eli": ("EMAIL", "QUEUED", None),  # only EMAIL accepted, though PUSH is preferred
        "max": ("PUSH", "QUEUED", None),  # the trigger's preference over the member's first (SMS)
        "ora": ("EMAIL", "QUEUED", None),
        "ula": ("SMS", "QUEUED", None),  # no preferred channel accepted: the member's first
    }
    # and nothing is queued for nia: the outbox holds the other four only
    queued = sorted(d["payload"]["member"] for d in await deliveries(admin))
    assert queued == ["eli", "max", "ora", "ula"]
    # and the suppressed message is an event of nia with the specified properties
    [event] = await suppressed_events(services, program)
    assert (event.status, event.points_awarded) == ("ACCEPTED", 0)
    assert event.properties == {
        "messageId": messages["nia"]["id"],
        "template": "spring",
        "channel": None,
        "segment": "vip",
    }
    # which conditions count at once, in both evaluators: in memory for the segment defined before
    # (re-evaluated in the event's transaction), compiled SQL for one created now (batch at creation)
    assert await members_of(admin, "withheld") == ["nia"]
    not_reached = (
        'count(message_failed, 30d where template = "spring") '
        '+ count(message_suppressed, 30d where template = "spring") >= 1'
    )
    await create(admin, "campaign_not_reached", not_reached)
    assert await members_of(admin, "campaign_not_reached") == ["nia"]

    # when the outbox is delivered
    provider = RecordingProvider()
    await drain(loop(services, clock, provider))

    # then the provider got the four accepted channels, never nia, and nia's message stays SUPPRESSED
    assert sorted((m.member_external_id, m.channel) for m in provider.sent) == [
        ("eli", "EMAIL"),
        ("max", "PUSH"),
        ("ora", "EMAIL"),
        ("ula", "SMS"),
    ]
    after = {
        m["memberExternalId"]: m["status"] for m in (await admin.data(MESSAGES, {"m": None}))["messages"]
    }
    assert after == {"nia": "SUPPRESSED", "eli": "SENT", "max": "SENT", "ora": "SENT", "ula": "SENT"}
    assert await members_of(admin, "withheld") == ["nia"]


async def test_a_replayed_change_suppresses_once(
    admin: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # given nia, who accepted no channel, entered a segment with a message trigger
    await admin.data(UPSERT, {"m": [{"externalId": "nia"}]})
    await admin.data(CREATE_STATIC, {"k": "vip"})
    trigger = {"on": "ENTER", "action": "SEND_MESSAGE", "template": "spring"}
    await admin.data(SET_TRIGGERS, {"k": "vip", "t": [trigger]})
    await admin.data(ADD, {"k": "vip", "m": ["nia"]})

    # when the same logged change is handled again
    async with services.db.unit_of_work() as uow:
        row = (
            await uow.session.scalars(select(SegmentChange).where(SegmentChange.program_id == program.id))
        ).one()
        change = LoggedChange(row.id, row.segment_id, "vip", row.member_id, True)
        await TriggerRunner().segments_changed(
            uow.session, SegmentsChanged(program.id, (change,), row.at, 1, 0)
        )

    # then it wrote nothing more: one message, one event, no outbox row
    async with services.db.read() as session:
        statuses = list(await session.scalars(select(Message.status).where(Message.program_id == program.id)))
        outbox = list(await session.scalars(select(OutboxItem.id).where(OutboxItem.program_id == program.id)))
    assert (statuses, outbox) == (["SUPPRESSED"], [])
    assert len(await suppressed_events(services, program)) == 1


async def test_an_experiment_message_to_a_member_with_no_channel_is_suppressed(
    admin: GraphQLClient, integration: GraphQLClient, services: Services, program: ProgramFixture
) -> None:
    # given three members who accepted no channel, and two MESSAGE variants, one preferring EMAIL
    members = await given_members(admin, integration, 3)
    variants = [
        {
            "key": "a",
            "weight": 1,
            "action": {"type": "MESSAGE", "template": "spring_offer", "channel": "EMAIL"},
        },
        {"key": "b", "weight": 1, "action": {"type": "MESSAGE", "template": "spring_offer"}},
    ]
    await admin.data(CREATE_EXPERIMENT, {"i": experiment(variants=variants)})

    # when they are exposed
    await admin.data(EXPOSE_ALL, {"k": "spring"})

    # then each has a SUPPRESSED message and a message_suppressed event, and nothing was queued
    found = (await admin.data(MESSAGES, {"m": None}))["messages"]
    assert sorted((m["memberExternalId"], m["channel"], m["status"]) for m in found) == [
        (m, None, "SUPPRESSED") for m in members
    ]
    assert await deliveries(admin) == []
    events = await suppressed_events(services, program)
    assert (
        sorted((e.properties["template"], e.properties["segment"]) for e in events)
        == [("spring_offer", "everyone")] * 3
    )


channels = st.lists(st.sampled_from(list(Channel)), unique=True)


@given(accepted=channels, preferred=channels)
def test_the_channel_is_accepted_and_the_first_preferred_one_when_any(
    accepted: list[Channel], preferred: list[Channel]
) -> None:
    chosen = choose_channel([c.value for c in accepted], [c.value for c in preferred])
    if not accepted:
        assert chosen is None  # never a fallback
        return
    assert chosen in accepted
    wanted = [c for c in preferred if c in accepted]
    assert chosen == (wanted[0] if wanted else accepted[0])

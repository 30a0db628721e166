"""The outbox: signed webhook deliveries to a real local receiver, retries, dead letters, messages, rollback."""

from __future__ import annotations

import hashlib
import hmac
import random
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from api.runtime import Services
from domain.campaigns.delivery import OutboxDelivery
from domain.campaigns.messages import LoggingProvider, OutgoingMessage
from domain.campaigns.outbox import RetryPolicy
from domain.campaigns.webhooks import WebhookSender
from domain.models import Member, OutboxItem, Segment, SegmentChange
from domain.segments.membership import Flip
from tests.support import ShiftableClock
from tests.support.events import UPSERT
from tests.support.graphql import GraphQLClient, ProgramFixture
from tests.support.webhooks import (
    ADD,
    ALLOWED_HOST,
    CREATE_STATIC,
    ENDPOINT,
    RETRY,
    SET_TRIGGERS,
    Receiver,
    deliveries,
    drain,
    webhook_segment,
)

MESSAGES = "{ messages { memberExternalId template channel status error } }"


class RecordingProvider:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[OutgoingMessage] = []

    async def send(self, message: OutgoingMessage) -> None:
        if self.fail:
            raise RuntimeError("SMS gateway unavailable")
        self.sent.append(message)


POLICY = RetryPolicy(max_attempts=3, base=timedelta(seconds=10), cap=timedelta(seconds=15), jitter=0.2)


def loop(services: Services, clock: ShiftableClock, provider: Any = None) -> OutboxDelivery:
    return OutboxDelivery(
        services.db,
        clock,
        provider or LoggingProvider(),
        WebhookSender(services.campaigns.destinations),
        policy=POLICY,
        batch_size=5,
        rng=random.Random(3),
    )


async def test_webhook_is_delivered_signed_with_its_delivery_id(
    admin: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    async with Receiver() as receiver:
        secret = await webhook_segment(admin, receiver.url)
        # when ann enters: the outbox row commits with the change, PENDING
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        [pending] = await deliveries(admin)
        assert (pending["kind"], pending["status"], pending["attempts"]) == ("WEBHOOK", "PENDING", 0)
        assert receiver.received == []
        # and the delivery loop runs
        await drain(loop(services, clock))
    # then the receiver got one POST, signed over "<timestamp>.<body>" with the endpoint's secret
    [request] = receiver.received
    assert request.headers["request-line"] == "POST /hooks/loyalty HTTP/1.1"
    assert request.headers["host"] == f"{ALLOWED_HOST}:{receiver.port}"
    timestamp = request.headers["x-loyalty-timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-loyalty-signature"] == f"sha256={expected}"
    assert abs(int(timestamp) - clock.now().timestamp()) < 60
    assert request.headers["x-loyalty-delivery"] == pending["deliveryId"]
    assert request.headers["content-type"] == "application/json"
    body = orjson.loads(request.body)
    assert body == {**pending["payload"], "id": pending["deliveryId"]}
    assert (body["type"], body["segment"], body["member"]) == ("segment.entered", "hooked", "ann")
    [delivered] = await deliveries(admin, "DELIVERED")
    assert (delivered["id"], delivered["attempts"], delivered["lastError"]) == (pending["id"], 1, None)


async def test_failed_deliveries_back_off_then_die_and_an_admin_revives_them(
    admin: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    async with Receiver(statuses=[500, 503, 500]) as receiver:
        await webhook_segment(admin, receiver.url)
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        delivery = loop(services, clock)
        # attempt 1 fails: due again within 10 s (8-10 s with jitter), not before
        await drain(delivery)
        [row] = await deliveries(admin)
        assert (row["status"], row["attempts"], row["lastError"]) == ("PENDING", 1, "HTTP 500")
        clock.shift(timedelta(seconds=7))
        await drain(delivery)
        assert len(receiver.received) == 1
        # attempt 2 once the backoff passed, then attempt 3 (the cap, 15 s) is the last
        clock.shift(timedelta(seconds=3))
        await drain(delivery)
        assert len(receiver.received) == 2
        clock.shift(timedelta(seconds=15))
        await drain(delivery)
        assert len(receiver.received) == 3
        # then it is DEAD, listed as a dead letter, and no longer attempted
        [dead] = await deliveries(admin, "DEAD")
        assert (dead["id"], dead["attempts"], dead["lastError"], dead["endpointKey"]) == (
            row["id"],
            3,
            "HTTP 500",
            "crm",
        )
        clock.shift(timedelta(hours=1))
        await drain(delivery)
        assert len(receiver.received) == 3
        # when an admin retries it, it is due at once and delivered (the receiver answers 200 now)
        retried = (await admin.data(RETRY, {"id": dead["id"]}))["retryDelivery"]
        assert retried == {"id": dead["id"], "status": "PENDING", "attempts": 0}
        await drain(delivery)
    assert len(receiver.received) == 4
    assert {r.headers["x-loyalty-delivery"] for r in receiver.received} == {dead["deliveryId"]}
    assert (await deliveries(admin, "DEAD")) == []
    assert [d["id"] for d in await deliveries(admin, "DELIVERED")] == [dead["id"]]


async def test_retry_delivery_refuses_what_is_not_dead(admin: GraphQLClient, services: Services) -> None:
    async with Receiver() as receiver:
        await webhook_segment(admin, receiver.url)
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
    [row] = await deliveries(admin)
    error = await admin.error(RETRY, {"id": row["id"]})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        f"id: delivery {row['id']} is PENDING; only DEAD deliveries are retried",
    )
    error = await admin.error(RETRY, {"id": "999999999"})
    assert error["extensions"]["code"] == "NOT_FOUND"
    error = await admin.error(RETRY, {"id": "abc"})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "id: 'abc' is not a delivery id",
    )


async def test_webhook_endpoints_are_validated_and_listed_without_secret(admin: GraphQLClient) -> None:
    error = await admin.error(ENDPOINT, {"k": "crm", "u": "ftp://example.com/x"})
    assert (error["extensions"]["code"], error["message"]) == (
        "BAD_USER_INPUT",
        "url: 'ftp://example.com/x' is not an absolute http(s) URL",
    )
    created = (await admin.data(ENDPOINT, {"k": "crm", "u": "https://example.com/hook"}))[
        "createWebhookEndpoint"
    ]
    assert created["secret"].startswith("whsec_")
    error = await admin.error(ENDPOINT, {"k": "crm", "u": "https://example.com/other"})
    assert (error["extensions"]["code"], error["message"]) == (
        "CONFLICT",
        "key: a webhook endpoint 'crm' already exists",
    )
    listed = (await admin.data("{ webhookEndpoints { key url active } }"))["webhookEndpoints"]
    assert listed == [{"key": "crm", "url": "https://example.com/hook", "active": True}]


async def test_messages_are_handed_to_the_provider_and_marked(
    admin: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    await admin.data(UPSERT, {"m": [{"externalId": "bo", "channels": ["PUSH", "SMS"]}]})
    await admin.data(CREATE_STATIC, {"k": "vip"})
    await admin.data(
        SET_TRIGGERS, {"k": "vip", "t": [{"on": "ENTER", "action": "SEND_MESSAGE", "template": "vip_hi"}]}
    )
    await admin.data(ADD, {"k": "vip", "m": ["bo"]})
    # a provider that fails: the message stays QUEUED with the error until its row is dead
    failing = RecordingProvider(fail=True)
    await drain(loop(services, clock, failing))
    assert (await admin.data(MESSAGES))["messages"] == [
        {
            "memberExternalId": "bo",
            "template": "vip_hi",
            "channel": "PUSH",
            "status": "QUEUED",
            "error": "SMS gateway unavailable",
        }
    ]
    clock.shift(timedelta(seconds=10))
    await drain(loop(services, clock, failing))
    clock.shift(timedelta(seconds=15))
    await drain(loop(services, clock, failing))
    assert (await admin.data(MESSAGES))["messages"][0]["status"] == "FAILED"
    # revived, a working provider sends it once
    [dead] = await deliveries(admin, "DEAD")
    await admin.data(RETRY, {"id": dead["id"]})
    working = RecordingProvider()
    await drain(loop(services, clock, working))
    assert [(m.channel, m.template, m.member_external_id) for m in working.sent] == [("PUSH", "vip_hi", "bo")]
    assert working.sent[0].delivery_id == dead["deliveryId"]
    assert (await admin.data(MESSAGES))["messages"][0]["status"] == "SENT"


async def test_no_outbox_row_survives_a_rolled_back_transaction(
    admin: GraphQLClient, services: Services, program: ProgramFixture, clock: ShiftableClock
) -> None:
    await webhook_segment(admin, f"http://{ALLOWED_HOST}:9/unused")
    async with services.db.read() as session:
        segment = (await session.scalars(select(Segment).where(Segment.program_id == program.id))).one()
        ann = (await session.scalars(select(Member).where(Member.program_id == program.id))).one()
    engine = services.segments.engine

    class BatchFailed(Exception):
        pass

    async def failing_batch() -> None:
        async with services.db.unit_of_work() as uow:
            await engine.apply(
                uow.session, program.id, [Flip(segment.id, "hooked", ann.id, True, None)], clock.now()
            )
            await uow.dispatch()  # the trigger runs as the bus dispatches the change, before the commit
            written = await uow.session.scalar(
                select(func.count()).where(OutboxItem.program_id == program.id)
            )
            assert written == 1  # it was there, inside the transaction
            raise BatchFailed

    # when a unit of work logs ann's entry (the trigger writes its outbox row) and then fails
    with pytest.raises(BatchFailed):
        await failing_batch()
    # then neither the change nor its outbox row exist
    async with services.db.read() as session:
        outbox = await session.scalar(select(func.count()).where(OutboxItem.program_id == program.id))
        logged = await session.scalar(select(func.count()).where(SegmentChange.program_id == program.id))
    assert (outbox, logged) == (0, 0)


async def test_a_claim_is_a_lease_another_worker_takes_over_when_it_ends(
    admin: GraphQLClient, services: Services, clock: ShiftableClock
) -> None:
    async with Receiver() as receiver:
        await webhook_segment(admin, receiver.url)
        await admin.data(ADD, {"k": "hooked", "m": ["ann"]})
        first, second = loop(services, clock), loop(services, clock)
        # worker 1 claims the row and stalls; worker 2 does not see it
        claimed = [c for c in await first.claim() if c.webhook and c.webhook.url == receiver.url]
        assert len(claimed) == 1
        assert [c for c in await second.claim() if c.webhook and c.webhook.url == receiver.url] == []
        # once the lease ran out worker 2 takes it over and delivers
        clock.shift(POLICY.lease)
        await drain(second)
        assert len(receiver.received) == 1
        # worker 1 finally delivers too (at least once), but its stale outcome is not recorded
        await first.record(await first.deliver(claimed))
    assert len(receiver.received) == 2
    assert (
        receiver.received[0].headers["x-loyalty-delivery"]
        == receiver.received[1].headers["x-loyalty-delivery"]
    )
    [row] = await deliveries(admin)
    assert (row["status"], row["attempts"]) == ("DELIVERED", 2)

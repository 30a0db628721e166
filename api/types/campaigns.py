"""SegmentTrigger, WebhookEndpoint, Delivery and Message: what triggers do, and what came of it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import cast

import strawberry
from strawberry.scalars import JSON

from api.types.enums import Channel
from domain import models
from domain.campaigns.definitions import TriggerAction, TriggerOn, describe
from domain.campaigns.messages import MessageStatus, stored_channel
from domain.campaigns.outbox import OutboxKind, OutboxStatus
from domain.campaigns.service import DeliveryView, MessageView

strawberry.enum(TriggerOn, description="When a trigger fires: on entering or on leaving its segment")
strawberry.enum(TriggerAction)
strawberry.enum(
    OutboxStatus, name="DeliveryStatus", description="PENDING until delivered; DEAD after the last attempt"
)
strawberry.enum(OutboxKind, name="DeliveryKind")
strawberry.enum(
    MessageStatus,
    description="QUEUED until the provider takes it (SENT) or its delivery is dead (FAILED); SUPPRESSED: "
    "never sent, the member accepted no channel",
)


@strawberry.type(description="An action run when a member enters or leaves the segment")
class SegmentTrigger:
    id: strawberry.ID
    on: TriggerOn
    action: TriggerAction
    points: int | None = strawberry.field(default=None, description="AWARD_POINTS: a fixed bonus")
    percent_of_lifetime_value: Decimal | None = strawberry.field(
        default=None, description="AWARD_POINTS: this percentage of the member's lifetime purchase amount"
    )
    min_points: int | None = None
    max_points: int | None = None
    reason: str | None = None
    tag: str | None = strawberry.field(default=None, description="ADD_TAG / REMOVE_TAG")
    template: str | None = strawberry.field(default=None, description="SEND_MESSAGE")
    preferred_channels: list[Channel] | None = strawberry.field(
        default=None,
        description="SEND_MESSAGE: channels preferred, in order, among those the member accepted",
    )
    webhook_key: str | None = strawberry.field(default=None, description="CALL_WEBHOOK")
    coupon_pool_key: str | None = strawberry.field(default=None, description="ISSUE_COUPON")
    created_at: datetime

    @classmethod
    def of(cls, row: models.SegmentTrigger) -> SegmentTrigger:
        fields = describe(row.fires_on, row.action, row.params)
        preferred = fields.get("preferredChannels")
        return cls(
            id=strawberry.ID(str(row.id)),
            on=fields["on"],
            action=fields["action"],
            points=fields.get("points"),
            percent_of_lifetime_value=fields.get("percentOfLifetimeValue"),
            min_points=fields.get("minPoints"),
            max_points=fields.get("maxPoints"),
            reason=fields.get("reason"),
            tag=fields.get("tag"),
            template=fields.get("template"),
            preferred_channels=None if preferred is None else [Channel(c) for c in preferred],
            webhook_key=fields.get("webhookKey"),
            coupon_pool_key=fields.get("couponPoolKey"),
            created_at=row.created_at,
        )


@strawberry.type(description="Where CALL_WEBHOOK triggers POST their signed deliveries")
class WebhookEndpoint:
    key: str
    url: str
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, row: models.WebhookEndpoint) -> WebhookEndpoint:
        return cls(key=row.key, url=row.url, active=row.active, created_at=row.created_at)


@strawberry.type
class CreatedWebhookEndpoint:
    endpoint: WebhookEndpoint
    secret: str = strawberry.field(
        description="Signs every delivery (HMAC-SHA256); shown only here, store it now"
    )


@strawberry.type(description="One outbox row: a webhook call or a message, delivered at least once")
class Delivery:
    id: strawberry.ID
    delivery_id: str = strawberry.field(description="Sent as X-Loyalty-Delivery; stable across retries")
    kind: OutboxKind
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    endpoint_key: str | None
    payload: JSON
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, view: DeliveryView) -> Delivery:
        item = view.item
        return cls(
            id=strawberry.ID(str(item.id)),
            delivery_id=item.delivery_id,
            kind=OutboxKind(item.kind),
            status=OutboxStatus(item.status),
            attempts=item.attempts,
            next_attempt_at=item.next_attempt_at,
            last_error=item.last_error,
            endpoint_key=view.endpoint_key,
            payload=cast(JSON, item.payload),
            created_at=item.created_at,
            delivered_at=item.delivered_at,
        )


@strawberry.type(description="A message a trigger or an experiment sent (or withheld) to a member")
class Message:
    id: strawberry.ID
    member_external_id: str
    segment_key: str
    channel: Channel | None = strawberry.field(
        description="A channel the member accepted; null when SUPPRESSED (the member accepted none)"
    )
    template: str
    status: MessageStatus
    error: str | None = strawberry.field(description="Why FAILED (the last attempt's error) or SUPPRESSED")
    created_at: datetime
    sent_at: datetime | None

    @classmethod
    def of(cls, view: MessageView) -> Message:
        row = view.message
        return cls(
            id=strawberry.ID(str(row.id)),
            member_external_id=view.member_external_id,
            segment_key=row.segment_key,
            channel=stored_channel(row.channel),
            template=row.template,
            status=MessageStatus(row.status),
            error=row.error,
            created_at=row.created_at,
            sent_at=row.sent_at,
        )

"""Queries and mutations on segment triggers, webhook endpoints, deliveries and messages."""

from __future__ import annotations

from decimal import Decimal

import strawberry

from api.context import Info
from api.pagination import page_size
from api.types.campaigns import CreatedWebhookEndpoint, Delivery, Message, SegmentTrigger, WebhookEndpoint
from api.types.enums import Channel
from domain.campaigns.definitions import TriggerAction, TriggerDraft, TriggerOn
from domain.campaigns.outbox import OutboxStatus
from domain.errors import InvalidInput


@strawberry.input(description="One trigger; give only the fields its action reads")
class SegmentTriggerInput:
    on: TriggerOn
    action: TriggerAction
    points: int | None = None
    percent_of_lifetime_value: Decimal | None = None
    min_points: int | None = None
    max_points: int | None = None
    reason: str | None = None
    tag: str | None = None
    template: str | None = None
    preferred_channels: list[Channel] | None = strawberry.field(
        default=None,
        description="SEND_MESSAGE: channels to prefer, in order, among those the member accepted; "
        "else the member's first accepted channel. A member who accepted none gets nothing (SUPPRESSED)",
    )
    webhook_key: str | None = None
    coupon_pool_key: str | None = strawberry.field(
        default=None, description="ISSUE_COUPON: the pool one code is taken from per firing"
    )

    def draft(self) -> TriggerDraft:
        return TriggerDraft(
            on=TriggerOn(self.on).value,
            action=TriggerAction(self.action).value,
            points=self.points,
            percent_of_lifetime_value=self.percent_of_lifetime_value,
            min_points=self.min_points,
            max_points=self.max_points,
            reason=self.reason,
            tag=self.tag,
            template=self.template,
            preferred_channels=None
            if self.preferred_channels is None
            else tuple(Channel(c).value for c in self.preferred_channels),
            webhook_key=self.webhook_key,
            coupon_pool_key=self.coupon_pool_key,
        )


def _delivery_id(raw: strawberry.ID) -> int:
    if not str(raw).isdigit():
        raise InvalidInput(f"id: {str(raw)[:40]!r} is not a delivery id")
    return int(raw)


@strawberry.type
class CampaignQueries:
    @strawberry.field(description="The program's webhook endpoints, by key (secrets are never shown again)")
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        program_id = info.context.principal.program_id
        return [WebhookEndpoint.of(e) for e in await info.context.services.campaigns.endpoints(program_id)]

    @strawberry.field(description="Outbox rows, newest first; status DEAD lists the dead letters")
    async def deliveries(
        self, info: Info, status: OutboxStatus | None = None, first: int | None = 50
    ) -> list[Delivery]:
        program_id = info.context.principal.program_id
        chosen = None if status is None else OutboxStatus(status).value
        views = await info.context.services.campaigns.deliveries(program_id, chosen, page_size(first))
        return [Delivery.of(v) for v in views]

    @strawberry.field(description="Messages triggers sent, newest first: of one member, or of the program")
    async def messages(
        self, info: Info, member_external_id: str | None = None, first: int | None = 50
    ) -> list[Message]:
        program_id = info.context.principal.program_id
        views = await info.context.services.campaigns.messages(
            program_id, member_external_id, page_size(first)
        )
        return [Message.of(v) for v in views]


@strawberry.type
class CampaignMutations:
    @strawberry.mutation(
        description="Replace the segment's triggers; they act on membership changes from now on"
    )
    async def set_segment_triggers(
        self, info: Info, segment_key: str, triggers: list[SegmentTriggerInput]
    ) -> list[SegmentTrigger]:
        program_id = info.context.principal.program_id
        rows = await info.context.services.campaigns.set_triggers(
            program_id, segment_key, [t.draft() for t in triggers], actor=info.context.principal.operator
        )
        return [SegmentTrigger.of(row) for row in rows]

    @strawberry.mutation(description="Register a webhook receiver; the signing secret is returned only here")
    async def create_webhook_endpoint(self, info: Info, key: str, url: str) -> CreatedWebhookEndpoint:
        program_id = info.context.principal.program_id
        created = await info.context.services.campaigns.create_endpoint(
            program_id, key, url, actor=info.context.principal.operator
        )
        return CreatedWebhookEndpoint(endpoint=WebhookEndpoint.of(created.endpoint), secret=created.secret)

    @strawberry.mutation(
        description="Stop calling the endpoint: triggers skip it, its queued deliveries become DEAD unsent"
    )
    async def deactivate_webhook_endpoint(self, info: Info, key: str) -> WebhookEndpoint:
        program_id = info.context.principal.program_id
        return WebhookEndpoint.of(
            await info.context.services.campaigns.deactivate_endpoint(
                program_id, key, actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(
        description="A new signing secret, returned only here; deliveries from now on are signed with it"
    )
    async def rotate_webhook_secret(self, info: Info, key: str) -> CreatedWebhookEndpoint:
        program_id = info.context.principal.program_id
        rotated = await info.context.services.campaigns.rotate_secret(
            program_id, key, actor=info.context.principal.operator
        )
        return CreatedWebhookEndpoint(endpoint=WebhookEndpoint.of(rotated.endpoint), secret=rotated.secret)

    @strawberry.mutation(description="Give a DEAD delivery a fresh set of attempts, due now")
    async def retry_delivery(self, info: Info, id: strawberry.ID) -> Delivery:
        program_id = info.context.principal.program_id
        view = await info.context.services.campaigns.retry_delivery(program_id, _delivery_id(id))
        return Delivery.of(view)

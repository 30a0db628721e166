"""Admin operations on triggers, webhook endpoints, deliveries and messages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.campaigns.definitions import TriggerAction, TriggerDraft, TriggerSpec, describe, validate_triggers
from domain.campaigns.destinations import DestinationPolicy
from domain.campaigns.messages import MessageStatus
from domain.campaigns.outbox import DEACTIVATED, OUTBOX_TOPIC, OutboxStatus
from domain.campaigns.webhooks import new_secret, validate_url
from domain.clock import Clock
from domain.db.engine import Database, UnitOfWork, announce
from domain.errors import Conflict, InvalidInput, NotFound
from domain.governance.audit_log import record_change
from domain.members.service import check_page_size, members_by_external_id
from domain.models import CouponPool, Member, Message, OutboxItem, Segment, SegmentTrigger, WebhookEndpoint
from domain.programs.service import validate_key


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    #: Shown once: store it to verify signatures.
    secret: str


@dataclass(frozen=True)
class DeliveryView:
    item: OutboxItem
    endpoint_key: str | None


@dataclass(frozen=True)
class MessageView:
    message: Message
    member_external_id: str


class CampaignService:
    def __init__(self, db: Database, clock: Clock, destinations: DestinationPolicy | None = None) -> None:
        self.db = db
        self.clock = clock
        #: Where webhooks may go; the delivery loop's sender checks the same policy on every attempt.
        self.destinations = destinations or DestinationPolicy()

    # ---------- triggers ----------

    async def set_triggers(
        self, program_id: int, segment_key: str, drafts: Sequence[TriggerDraft], *, actor: str
    ) -> list[SegmentTrigger]:
        """Replace the segment's triggers; they act on changes from now on (not on current members)."""
        specs = validate_triggers(drafts)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            segment = (
                await session.scalars(
                    select(Segment).where(Segment.program_id == program_id, Segment.key == segment_key)
                )
            ).one_or_none()
            if segment is None:
                raise NotFound(f"segmentKey: no segment {segment_key!r} in this program")
            wanted = {s.params["webhook"] for s in specs if s.action is TriggerAction.CALL_WEBHOOK}
            known = set(
                await session.scalars(
                    select(WebhookEndpoint.key).where(
                        WebhookEndpoint.program_id == program_id, WebhookEndpoint.key.in_(sorted(wanted))
                    )
                )
            )
            for i, spec in enumerate(specs):
                if spec.action is TriggerAction.CALL_WEBHOOK and spec.params["webhook"] not in known:
                    key = spec.params["webhook"]
                    raise NotFound(f"triggers[{i}].webhookKey: no webhook endpoint {key!r} in this program")
            await _check_pools(session, program_id, specs)
            before = await session.scalars(
                select(SegmentTrigger)
                .where(SegmentTrigger.segment_id == segment.id)
                .order_by(SegmentTrigger.position)
            )
            audited_before = [audited_trigger(t) for t in before]
            await session.execute(delete(SegmentTrigger).where(SegmentTrigger.segment_id == segment.id))
            rows = [
                SegmentTrigger(
                    program_id=program_id,
                    segment_id=segment.id,
                    fires_on=spec.fires_on,
                    action=spec.action.value,
                    params=spec.params,
                    position=position,
                    created_at=now,
                )
                for position, spec in enumerate(specs)
            ]
            session.add_all(rows)
            await session.flush()
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="setSegmentTriggers",
                at=now,
                target=segment_key,
                before=audited_before,
                after=[audited_trigger(t) for t in rows],
            )
        return rows

    async def triggers_of(self, segment_ids: Sequence[int]) -> dict[int, list[SegmentTrigger]]:
        async with self.db.read() as session:
            rows = await session.scalars(
                select(SegmentTrigger)
                .where(SegmentTrigger.segment_id.in_(segment_ids))
                .order_by(SegmentTrigger.segment_id, SegmentTrigger.position)
            )
            found: dict[int, list[SegmentTrigger]] = defaultdict(list)
            for row in rows:
                found[row.segment_id].append(row)
        return found

    # ---------- webhook endpoints ----------

    async def create_endpoint(self, program_id: int, key: str, url: str, *, actor: str) -> CreatedEndpoint:
        validate_key(key, "key")
        await validate_url(url, self.destinations)
        secret = new_secret()
        try:
            async with self.db.unit_of_work() as uow:
                endpoint = WebhookEndpoint(
                    program_id=program_id,
                    key=key,
                    url=url,
                    secret=secret,
                    active=True,
                    created_at=self.clock.now(),
                )
                uow.session.add(endpoint)
                await uow.session.flush()
                await self._audit(uow, endpoint, actor, "createWebhookEndpoint", None)
        except IntegrityError:
            raise Conflict(f"key: a webhook endpoint {key!r} already exists") from None
        return CreatedEndpoint(endpoint, secret)

    async def deactivate_endpoint(self, program_id: int, key: str, *, actor: str) -> WebhookEndpoint:
        """No more calls to this endpoint: triggers skip it, and its queued deliveries become DEAD
        ("not sent: the endpoint was deactivated") without a request. Deactivating twice is a no-op."""
        async with self.db.unit_of_work() as uow:
            endpoint = await _endpoint(uow.session, program_id, key)
            before = audited_endpoint(endpoint)
            endpoint.active = False
            await uow.session.execute(
                update(OutboxItem)
                .where(
                    OutboxItem.endpoint_id == endpoint.id,
                    OutboxItem.status == OutboxStatus.PENDING.value,
                )
                .values(status=OutboxStatus.DEAD.value, last_error=DEACTIVATED, locked_until=None)
                .execution_options(synchronize_session=False)
            )
            await uow.session.flush()
            await self._audit(uow, endpoint, actor, "deactivateWebhookEndpoint", before)
        return endpoint

    async def rotate_secret(self, program_id: int, key: str, *, actor: str) -> CreatedEndpoint:
        """A new signing secret, returned once; deliveries claimed from now on are signed with it
        (at most one batch already in flight still carries the old signature)."""
        secret = new_secret()
        async with self.db.unit_of_work() as uow:
            endpoint = await _endpoint(uow.session, program_id, key)
            endpoint.secret = secret
            await uow.session.flush()
            before = audited_endpoint(endpoint)
            await self._audit(uow, endpoint, actor, "rotateWebhookSecret", before, secret_rotated=True)
        return CreatedEndpoint(endpoint, secret)

    async def _audit(
        self,
        uow: UnitOfWork,
        endpoint: WebhookEndpoint,
        actor: str,
        action: str,
        before: dict[str, Any] | None,
        *,
        secret_rotated: bool = False,
    ) -> None:
        """The audit log's record of an endpoint change; secrets are never written there."""
        after = audited_endpoint(endpoint) | ({"secretRotated": True} if secret_rotated else {})
        await record_change(
            uow,
            program_id=endpoint.program_id,
            actor=actor,
            action=action,
            at=self.clock.now(),
            target=endpoint.key,
            before=before,
            after=after,
        )

    async def endpoints(self, program_id: int) -> list[WebhookEndpoint]:
        async with self.db.read() as session:
            return list(
                await session.scalars(
                    select(WebhookEndpoint)
                    .where(WebhookEndpoint.program_id == program_id)
                    .order_by(WebhookEndpoint.key)
                )
            )

    # ---------- deliveries ----------

    async def deliveries(self, program_id: int, status: str | None, first: int) -> list[DeliveryView]:
        """Outbox rows, newest first, optionally of one status (DEAD: the dead letters)."""
        check_page_size(first)
        if status is not None and status not in OutboxStatus.__members__:
            raise InvalidInput(f"status: {status!r} is not one of PENDING, DELIVERED, DEAD")
        async with self.db.read() as session:
            query = (
                select(OutboxItem, WebhookEndpoint.key)
                .outerjoin(WebhookEndpoint, WebhookEndpoint.id == OutboxItem.endpoint_id)
                .where(OutboxItem.program_id == program_id)
            )
            if status is not None:
                query = query.where(OutboxItem.status == status)
            rows = await session.execute(query.order_by(OutboxItem.id.desc()).limit(first))
            return [DeliveryView(item, key) for item, key in rows]

    async def retry_delivery(self, program_id: int, item_id: int) -> DeliveryView:
        """Give a DEAD delivery a fresh set of attempts, due now."""
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            item = await session.get(OutboxItem, item_id, with_for_update=True)
            if item is None or item.program_id != program_id:
                raise NotFound(f"id: no delivery {item_id} in this program")
            if item.status != OutboxStatus.DEAD:
                raise InvalidInput(
                    f"id: delivery {item_id} is {item.status}; only DEAD deliveries are retried"
                )
            endpoint_key = None
            if item.endpoint_id is not None:
                endpoint = await session.get(WebhookEndpoint, item.endpoint_id)
                endpoint_key = endpoint.key if endpoint else None
                if endpoint is not None and not endpoint.active:
                    raise InvalidInput(
                        f"id: delivery {item_id} goes to the deactivated endpoint {endpoint.key!r}"
                    )
            item.status = OutboxStatus.PENDING.value
            item.attempts = 0
            item.next_attempt_at = now
            item.locked_until = None
            if item.message_id is not None:
                await session.execute(
                    update(Message)
                    .where(Message.id == item.message_id)
                    .values(status=MessageStatus.QUEUED.value, error=None)
                )
            await session.flush()
            announce(session, OUTBOX_TOPIC)
        return DeliveryView(item, endpoint_key)

    # ---------- messages ----------

    async def messages(
        self, program_id: int, member_external_id: str | None, first: int
    ) -> list[MessageView]:
        """Messages sent by triggers, newest first: of one member, or of the whole program."""
        check_page_size(first)
        async with self.db.read() as session:
            query = (
                select(Message, Member.external_id)
                .join(Member, Member.id == Message.member_id)
                .where(Message.program_id == program_id)
            )
            if member_external_id is not None:
                member = (await members_by_external_id(session, program_id, [member_external_id])).get(
                    member_external_id
                )
                if member is None:
                    raise NotFound(f"memberExternalId: no member {member_external_id!r} in this program")
                query = query.where(Message.member_id == member.id)
            rows = await session.execute(query.order_by(Message.id.desc()).limit(first))
            return [MessageView(message, external_id) for message, external_id in rows]


def audited_trigger(row: SegmentTrigger) -> dict[str, Any]:
    """A trigger as the API shows it (`on`, `action` and its fields; decimals as strings)."""
    fields = describe(row.fires_on, row.action, row.params)
    return {
        name: value.value if isinstance(value, Enum) else str(value) if isinstance(value, Decimal) else value
        for name, value in fields.items()
    }


def audited_endpoint(row: WebhookEndpoint) -> dict[str, Any]:
    """A webhook endpoint as the audit log keeps it (never its secret)."""
    return {"key": row.key, "url": row.url, "active": row.active}


async def _check_pools(session: AsyncSession, program_id: int, specs: Sequence[TriggerSpec]) -> None:
    """NOT_FOUND naming the first ISSUE_COUPON trigger whose pool the program lacks."""
    wanted = {s.params["pool"] for s in specs if s.action is TriggerAction.ISSUE_COUPON}
    if not wanted:
        return
    known = set(
        await session.scalars(
            select(CouponPool.key).where(
                CouponPool.program_id == program_id, CouponPool.key.in_(sorted(wanted))
            )
        )
    )
    for i, spec in enumerate(specs):
        if spec.action is TriggerAction.ISSUE_COUPON and spec.params["pool"] not in known:
            raise NotFound(
                f"triggers[{i}].couponPoolKey: no coupon pool {spec.params['pool']!r} in this program"
            )


async def _endpoint(session: AsyncSession, program_id: int, key: str) -> WebhookEndpoint:
    validate_key(key, "key")  # a key that cannot exist is named, not looked up and echoed whole
    endpoint = (
        await session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.program_id == program_id, WebhookEndpoint.key == key)
            .with_for_update()
        )
    ).one_or_none()
    if endpoint is None:
        raise NotFound(f"key: no webhook endpoint {key!r} in this program")
    return endpoint

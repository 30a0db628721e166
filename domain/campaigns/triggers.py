"""The trigger runner: the message bus's handler of `SegmentsChanged` that acts on ENTER / LEAVE.

Every action happens in the transaction of the membership change: coupons are
codes taken from their pool (`domain.coupons.issuing`), bonuses are
ledger entries (posted by `domain.ledger.posting`, idempotent per trigger and
change-log row), tags are member_tags rows, webhook calls are outbox rows
delivered after commit, and so are messages, on a channel the member accepted
(a member who accepted none gets a SUPPRESSED message: `outgoing.py`). Points
and tags feed back into the engine (a bonus moves the balance, a tag is read
by `has_tag`) as a `MembersChanged` one level deeper, which may log more
changes: the bus is registered with the runner as a cascading handler and
stops running it past `MAX_DEPTH` rounds (logged), so triggers that feed each
other cannot loop.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.campaigns.definitions import TriggerAction, bonus_points
from domain.campaigns.messages import choose_channel
from domain.campaigns.outbox import OutboxKind, Pending, delivery_id, enqueue, existing_deliveries
from domain.campaigns.outgoing import MessageDraft, record_messages
from domain.changes import LoggedChange, MembersChanged, SegmentsChanged
from domain.coupons.issuing import IssueRequest, issue_codes
from domain.db.dialect import insert_for
from domain.db.engine import collect
from domain.ledger.posting import Bonus, post_bonuses
from domain.models import EventAggregate, Member, MemberTag, SegmentTrigger, WebhookEndpoint
from domain.segments.tags import MANUAL

log = logging.getLogger(__name__)

#: Lifetime value = the accepted amount of this event type (whole history).
LIFETIME_EVENT_TYPE = "purchase"


def tag_source(segment_key: str) -> str:
    """The member_tags source of a tag a trigger of `segment_key` added (never a segment key: ':')."""
    return f"trigger:{segment_key}"


@dataclass(frozen=True)
class Trigger:
    id: int
    segment_id: int
    entered: bool
    action: TriggerAction
    params: dict[str, Any]


@dataclass(frozen=True)
class ProgramTriggers:
    """A program's triggers by (segment id, entered?) in their set's order."""

    by_change: dict[tuple[int, bool], tuple[Trigger, ...]] = field(default_factory=dict)

    @property
    def segment_ids(self) -> frozenset[int]:
        return frozenset(segment_id for segment_id, _ in self.by_change)


@dataclass(frozen=True)
class Fired:
    trigger: Trigger
    change: LoggedChange


class TriggerRunner:
    """Handles `SegmentsChanged` (a cascading handler of the bus) and is a `SegmentWatcher`."""

    def __init__(self) -> None:
        #: program id -> ((count, max id), triggers): reloaded when the stamp moves (ids are never reused)
        self._cache: dict[int, tuple[tuple[int, int | None], ProgramTriggers]] = {}

    async def triggers(self, session: AsyncSession, program_id: int) -> ProgramTriggers:
        """The program's triggers; one small query while none has changed."""
        of_program = SegmentTrigger.program_id == program_id
        count, newest = (
            await session.execute(
                select(func.count(SegmentTrigger.id), func.max(SegmentTrigger.id)).where(of_program)
            )
        ).one()
        stamp = (int(count), newest)
        cached = self._cache.get(program_id)
        if cached is None or cached[0] != stamp:
            cached = (stamp, await _load(session, program_id) if count else ProgramTriggers())
            self._cache[program_id] = cached
        return cached[1]

    async def watched(self, session: AsyncSession, program_id: int) -> frozenset[int]:
        return (await self.triggers(session, program_id)).segment_ids

    async def segments_changed(self, session: AsyncSession, changed: SegmentsChanged) -> None:
        program_id = changed.program_id
        triggers = await self.triggers(session, program_id)
        if not triggers.by_change:
            return
        fired = [
            Fired(trigger, change)
            for change in changed.changes
            for trigger in triggers.by_change.get((change.segment_id, change.entered), ())
        ]
        if fired:
            await self._run(session, program_id, fired, changed.at)

    async def _run(self, session: AsyncSession, program_id: int, fired: list[Fired], now: datetime) -> None:
        by_action: dict[TriggerAction, list[Fired]] = defaultdict(list)
        for f in fired:
            by_action[f.trigger.action].append(f)
        members = await _members(session, {f.change.member_id for f in fired})
        await _send_messages(session, program_id, by_action[TriggerAction.SEND_MESSAGE], members, now)
        await _call_webhooks(session, program_id, by_action[TriggerAction.CALL_WEBHOOK], members, now)
        tagged = await _change_tags(
            session, program_id, by_action[TriggerAction.ADD_TAG], by_action[TriggerAction.REMOVE_TAG], now
        )
        await _award(session, program_id, by_action[TriggerAction.AWARD_POINTS], now)
        await _issue_coupons(session, program_id, by_action[TriggerAction.ISSUE_COUPON], now)
        # the tags may move members between segments (and fire triggers again): one level deeper
        if tagged:
            collect(session, MembersChanged(program_id, tags=tagged, at=now))


async def _load(session: AsyncSession, program_id: int) -> ProgramTriggers:
    rows = await session.execute(
        select(SegmentTrigger)
        .where(SegmentTrigger.program_id == program_id)
        .order_by(SegmentTrigger.segment_id, SegmentTrigger.position, SegmentTrigger.id)
    )
    grouped: dict[tuple[int, bool], list[Trigger]] = defaultdict(list)
    for row in rows.scalars():
        entered = row.fires_on == "ENTERED"
        trigger = Trigger(row.id, row.segment_id, entered, TriggerAction(row.action), dict(row.params))
        grouped[(row.segment_id, entered)].append(trigger)
    return ProgramTriggers({k: tuple(v) for k, v in grouped.items()})


@dataclass(frozen=True)
class _Member:
    external_id: str
    channels: list[str]


async def _members(session: AsyncSession, member_ids: set[int]) -> dict[int, _Member]:
    rows = await session.execute(
        select(Member.id, Member.external_id, Member.channels).where(Member.id.in_(sorted(member_ids)))
    )
    return {i: _Member(external_id, list(channels or [])) for i, external_id, channels in rows}


def _event(change: LoggedChange) -> str:
    return "segment.entered" if change.entered else "segment.left"


async def _award(session: AsyncSession, program_id: int, fired: list[Fired], now: datetime) -> None:
    """Post the bonuses (posting collects the balance change for the segment engine)."""
    if not fired:
        return
    sized = {f.change.member_id for f in fired if "points" not in f.trigger.params}
    lifetime: dict[int, int] = {}
    if sized:
        rows = await session.execute(
            select(EventAggregate.member_id, func.sum(EventAggregate.amount_sum))
            .where(
                EventAggregate.member_id.in_(sorted(sized)), EventAggregate.event_type == LIFETIME_EVENT_TYPE
            )
            .group_by(EventAggregate.member_id)
        )
        lifetime = {member_id: int(total or 0) for member_id, total in rows}
    bonuses = [
        Bonus(
            f.change.member_id,
            bonus_points(f.trigger.params, lifetime.get(f.change.member_id, 0)),
            f"{f.trigger.params['reason']} ({f.change.segment_key})",
            f"trigger:{f.trigger.id}:{f.change.change_id}",
        )
        for f in fired
    ]
    await post_bonuses(session, program_id, bonuses, now)


async def _issue_coupons(session: AsyncSession, program_id: int, fired: list[Fired], now: datetime) -> None:
    """One code per firing (a replay finds the code it issued); an exhausted pool is logged, not fatal:
    the change and the other actions stand."""
    if not fired:
        return
    requests = [
        IssueRequest(
            f"trigger:{f.trigger.id}:{f.change.change_id}", f.trigger.params["pool"], f.change.member_id
        )
        for f in fired
    ]
    issued = await issue_codes(session, program_id, requests, now)
    for request in requests:
        if issued[request.issue_key] is None:
            log.warning(
                "program %d: coupon pool %r has no code left; member %d got none (%s)",
                program_id,
                request.pool_key,
                request.member_id,
                request.issue_key,
            )


async def _change_tags(
    session: AsyncSession, program_id: int, adds: list[Fired], removes: list[Fired], now: datetime
) -> dict[int, frozenset[str]]:
    """Add and remove trigger tags; returns the tags that may have changed, per member."""
    touched: dict[int, set[str]] = defaultdict(set)
    if adds:
        rows = {
            (f.change.member_id, f.trigger.params["tag"], tag_source(f.change.segment_key)): f for f in adds
        }
        await session.execute(
            insert_for(session, MemberTag.__table__).on_conflict_do_nothing(),
            [
                {"member_id": m, "key": tag, "source": source, "program_id": program_id, "since": now}
                for m, tag, source in sorted(rows)
            ],
        )
        for member_id, tag, _ in rows:
            touched[member_id].add(tag)
    for f in removes:  # few per change: one statement each keeps the condition simple
        tag = f.trigger.params["tag"]
        await session.execute(
            delete(MemberTag).where(
                MemberTag.member_id == f.change.member_id,
                MemberTag.key == tag,
                or_(MemberTag.source == MANUAL, MemberTag.source.like("trigger:%")),
            )
        )
        touched[f.change.member_id].add(tag)
    return {member_id: frozenset(tags) for member_id, tags in touched.items()}


async def _send_messages(
    session: AsyncSession, program_id: int, fired: list[Fired], members: dict[int, _Member], now: datetime
) -> None:
    """Each message on a channel the member accepted (the trigger's preferredChannels first), else
    SUPPRESSED: `domain.campaigns.outgoing`."""
    drafts = [
        MessageDraft(
            member_id=f.change.member_id,
            member_external_id=members[f.change.member_id].external_id,
            segment_id=f.change.segment_id,
            segment_key=f.change.segment_key,
            template=f.trigger.params["template"],
            channel=choose_channel(
                members[f.change.member_id].channels, f.trigger.params.get("preferredChannels", ())
            ),
            delivery_id=delivery_id(f.trigger.id, f.change.change_id),
            context={"change": "ENTERED" if f.change.entered else "LEFT", "changeId": f.change.change_id},
        )
        for f in fired
    ]
    await record_messages(session, program_id, drafts, now)


async def _call_webhooks(
    session: AsyncSession, program_id: int, fired: list[Fired], members: dict[int, _Member], now: datetime
) -> None:
    fired = await _not_yet_enqueued(session, fired)
    if not fired:
        return
    keys = sorted({f.trigger.params["webhook"] for f in fired})
    rows = await session.execute(
        select(WebhookEndpoint.key, WebhookEndpoint.id).where(
            WebhookEndpoint.program_id == program_id,
            WebhookEndpoint.key.in_(keys),
            WebhookEndpoint.active.is_(True),
        )
    )
    endpoints: dict[str, int] = {key: endpoint_id for key, endpoint_id in rows}  # noqa: C416 - Row objects
    for key in sorted(set(keys) - set(endpoints)):
        log.warning("program %d: webhook endpoint %r is missing or inactive; calls skipped", program_id, key)
    items = []
    for f in fired:
        endpoint_id = endpoints.get(f.trigger.params["webhook"])
        if endpoint_id is None:
            continue
        delivery = delivery_id(f.trigger.id, f.change.change_id)
        payload = {
            "id": delivery,
            "type": _event(f.change),
            "segment": f.change.segment_key,
            "member": members[f.change.member_id].external_id,
            "changeId": f.change.change_id,
            "triggerId": f.trigger.id,
            "at": now.isoformat(),
        }
        items.append(Pending(OutboxKind.WEBHOOK, delivery, payload, endpoint_id=endpoint_id))
    await enqueue(session, program_id, items, now)


async def _not_yet_enqueued(session: AsyncSession, fired: list[Fired]) -> list[Fired]:
    """Drop what a replay of the same change already wrote (same delivery id)."""
    if not fired:
        return []
    ids = [delivery_id(f.trigger.id, f.change.change_id) for f in fired]
    done = await existing_deliveries(session, ids)
    return [f for f, i in zip(fired, ids, strict=True) if i not in done]

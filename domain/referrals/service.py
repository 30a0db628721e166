"""Referral programs: settings (audited), the referrals of a member, and reviewers' decisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database
from domain.errors import InvalidInput, NotFound
from domain.governance.audit_log import record_change
from domain.ledger.posting import post_bonuses
from domain.members.service import lock_members
from domain.models import Event, Member, Program, Referral, ReferralProgram
from domain.programs.service import record_program_setting
from domain.referrals.program import ReferralSettings, load_referral_settings
from domain.referrals.signup import join_bonus
from domain.referrals.status import ReferralStatus

MAX_PAGE = 500
MAX_NOTE = 500


@dataclass(frozen=True)
class ReferralView:
    id: int
    referrer_id: int
    referred_id: int
    referrer_external_id: str
    referred_external_id: str
    code: str
    status: ReferralStatus
    verdict: str
    findings: list[dict[str, Any]]
    created_at: datetime
    join_points: int
    qualifying_event_external_id: str | None
    due_at: datetime | None
    referrer_points: int
    settled_at: datetime | None
    note: str | None


class ReferralService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def settings(self, program_id: int) -> ReferralSettings | None:
        async with self.db.read() as session:
            return await load_referral_settings(session, program_id)

    async def set_program(
        self, program_id: int, settings: ReferralSettings, *, actor: str
    ) -> ReferralSettings:
        """Create or replace the program's referral settings; audited (`setReferralProgram`).

        Changes apply to what happens from now on: a joining reward already posted stays, and a
        referrer is paid the `referrerPoints` in force when its referral falls due."""
        settings = settings.checked()
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            program = await session.get(Program, program_id, with_for_update=True)
            if program is None:
                raise NotFound(f"program {program_id} does not exist")
            before = await load_referral_settings(session, program_id)
            table = ReferralProgram.__table__
            values = {
                "program_id": program_id,
                "enabled": settings.enabled,
                "join_points": settings.join_points,
                "referrer_points": settings.referrer_points,
                "wait_days": settings.wait_days,
                "event_type": settings.event_type,
                "updated_at": now,
            }
            statement = insert_for(session, table).values(values)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.program_id],
                    set_={k: v for k, v in values.items() if k != "program_id"},
                )
            )
            await record_program_setting(
                uow,
                program,
                actor=actor,
                action="setReferralProgram",
                at=now,
                before=None if before is None else before.audited(),
                after=settings.audited(),
            )
        return settings

    async def decide(
        self, program_id: int, referral_id: int, *, approve: bool, note: str, actor: str
    ) -> ReferralView:
        """A reviewer's decision on a HELD referral: approved, it goes on (the joining reward is
        posted now, the referrer is paid when due); refused, it is BLOCKED. Audited
        (`decideReferral`, target: the referred member)."""
        note = note.strip()
        if len(note) > MAX_NOTE:
            raise InvalidInput(f"note: at most {MAX_NOTE} characters")
        if not approve and not note:
            raise InvalidInput("note: say why the referral is refused")
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            found = await session.get(Referral, referral_id)
            if found is None or found.program_id != program_id:
                raise NotFound(f"id: no referral {referral_id} in this program")
            await lock_members(session, {found.referrer_id, found.referred_id})
            referral = await session.get(Referral, referral_id, with_for_update=True, populate_existing=True)
            assert referral is not None
            if referral.status != ReferralStatus.HELD:
                raise InvalidInput(f"id: referral {referral_id} is {referral.status}, not HELD")
            before = _audited(referral)
            if approve:
                settings = await load_referral_settings(session, program_id)
                points = 0 if settings is None else settings.join_points
                await post_bonuses(session, program_id, [join_bonus(referral.referred_id, points)], now)
                referral.join_points = points
                referral.status = (
                    ReferralStatus.PENDING.value
                    if referral.qualifying_event_id is None
                    else ReferralStatus.WAITING.value
                )
                referral.note = f"approved by {actor}" + (f": {note}" if note else "")
            else:
                referral.status = ReferralStatus.BLOCKED.value
                referral.settled_at = now
                referral.note = f"refused by {actor}: {note}"
            referral.note = referral.note[:MAX_NOTE]
            referred = await session.scalar(
                select(Member.external_id).where(Member.id == referral.referred_id)
            )
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="decideReferral",
                at=now,
                target=referred,
                before=before,
                after=_audited(referral),
            )
            await session.flush()
            return (await _views(session, Referral.id == referral_id))[0]

    async def made_by(self, member_ids: Sequence[int]) -> dict[int, list[ReferralView]]:
        """The referrals each member made (as the referrer), oldest first."""
        async with self.db.read() as session:
            views = await _views(session, Referral.referrer_id.in_(sorted(set(member_ids))))
        made: dict[int, list[ReferralView]] = {m: [] for m in member_ids}
        for view in views:
            made[view.referrer_id].append(view)
        return made

    async def referred(self, member_ids: Sequence[int]) -> dict[int, ReferralView]:
        """The referral each member joined with, if any."""
        async with self.db.read() as session:
            views = await _views(session, Referral.referred_id.in_(sorted(set(member_ids))))
        return {view.referred_id: view for view in views}

    async def listing(
        self, program_id: int, status: ReferralStatus | None, first: int, after_id: int | None
    ) -> tuple[list[ReferralView], bool]:
        """The program's referrals in id order (a status, e.g. HELD: the reviewers' queue)."""
        if not 1 <= first <= MAX_PAGE:
            raise InvalidInput(f"first: must be between 1 and {MAX_PAGE}, got {first}")
        conditions = [Referral.program_id == program_id]
        if status is not None:
            conditions.append(Referral.status == status.value)
        if after_id is not None:
            conditions.append(Referral.id > after_id)
        async with self.db.read() as session:
            views = await _views(session, *conditions, limit=first + 1)
        return views[:first], len(views) > first


def _audited(referral: Referral) -> dict[str, Any]:
    return {"id": str(referral.id), "status": referral.status, "note": referral.note}


async def _views(session: AsyncSession, *conditions: Any, limit: int | None = None) -> list[ReferralView]:
    referrer, referred = aliased(Member), aliased(Member)
    query = (
        select(Referral, referrer.external_id, referred.external_id, Event.external_id)
        .join(referrer, referrer.id == Referral.referrer_id)
        .join(referred, referred.id == Referral.referred_id)
        .outerjoin(Event, Event.id == Referral.qualifying_event_id)
        .where(*conditions)
        .order_by(Referral.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        ReferralView(
            r.id,
            r.referrer_id,
            r.referred_id,
            referrer_id,
            referred_id,
            r.code,
            ReferralStatus(r.status),
            r.verdict,
            list(r.findings or []),
            r.created_at,
            int(r.join_points),
            event_id,
            r.due_at,
            int(r.referrer_points),
            r.settled_at,
            r.note,
        )
        for r, referrer_id, referred_id, event_id in await session.execute(query)
    ]

"""Tags on members: manual ones, and the reads shared with those that segments apply."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import MembersChanged
from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database, collect
from domain.errors import InvalidInput, NotFound
from domain.members.service import members_by_external_id
from domain.models import Member, MemberTag, Segment, SegmentMembership
from domain.programs.service import validate_key

MANUAL = "manual"
#: The source of `non-compliant` (fraud/compliance.py).
FRAUD = "fraud"


@dataclass(frozen=True)
class TagView:
    key: str
    source: str
    since: datetime


class TagService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def add_tag(self, program_id: int, member_external_id: str, tag: str) -> Member:
        """Tag a member by hand; adding a tag it already carries by hand changes nothing."""
        validate_key(tag, "tag")
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            member = await _member(uow.session, program_id, member_external_id)
            table = MemberTag.__table__
            await uow.session.execute(
                insert_for(uow.session, table).on_conflict_do_nothing(),
                [
                    {
                        "member_id": member.id,
                        "key": tag,
                        "source": MANUAL,
                        "program_id": program_id,
                        "since": now,
                    }
                ],
            )
            collect(uow.session, MembersChanged(program_id, tags={member.id: frozenset({tag})}, at=now))
        return member

    async def remove_tag(self, program_id: int, member_external_id: str, tag: str) -> Member:
        """Remove a manual tag; a tag a segment applies stays while the member is in that segment."""
        validate_key(tag, "tag")
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            member = await _member(uow.session, program_id, member_external_id)
            sources = set(
                (
                    await uow.session.execute(
                        select(MemberTag.source).where(MemberTag.member_id == member.id, MemberTag.key == tag)
                    )
                ).scalars()
            )
            if not sources:
                raise NotFound(f"tag: member {member_external_id!r} does not carry {tag!r}")
            if sources == {FRAUD}:
                raise InvalidInput(
                    f"tag: {tag!r} is applied by the fraud audit; it goes when the member's blocked "
                    "accruals fall to the program's threshold"
                )
            if MANUAL not in sources:
                applied_by = ", ".join(sorted(sources))
                raise InvalidInput(
                    f"tag: {tag!r} is applied by segment {applied_by}; it goes when the member leaves it"
                )
            await uow.session.execute(
                delete(MemberTag).where(
                    MemberTag.member_id == member.id, MemberTag.key == tag, MemberTag.source == MANUAL
                )
            )
            collect(uow.session, MembersChanged(program_id, tags={member.id: frozenset({tag})}, at=now))
        return member

    async def tags_of(self, member_ids: Sequence[int]) -> dict[int, list[TagView]]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(MemberTag.member_id, MemberTag.key, MemberTag.source, MemberTag.since)
                .where(MemberTag.member_id.in_(member_ids))
                .order_by(MemberTag.member_id, MemberTag.key, MemberTag.source)
            )
            found: dict[int, list[TagView]] = defaultdict(list)
            for member_id, key, source, since in rows:
                found[member_id].append(TagView(key, source, since))
        return found

    async def segments_of(self, member_ids: Sequence[int]) -> dict[int, list[Segment]]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(SegmentMembership.member_id, Segment)
                .join(Segment, Segment.id == SegmentMembership.segment_id)
                .where(SegmentMembership.member_id.in_(member_ids))
                .order_by(SegmentMembership.member_id, Segment.key)
            )
            found: dict[int, list[Segment]] = defaultdict(list)
            for member_id, segment in rows:
                found[member_id].append(segment)
        return found

    async def sizes(self, segment_ids: Sequence[int]) -> dict[int, int]:
        async with self.db.read() as session:
            rows = await session.execute(
                select(SegmentMembership.segment_id, func.count())
                .where(SegmentMembership.segment_id.in_(segment_ids))
                .group_by(SegmentMembership.segment_id)
            )
            return {segment_id: count for segment_id, count in rows}  # noqa: C416 - rows are Row objects


async def _member(session: AsyncSession, program_id: int, external_id: str) -> Member:
    member = (await members_by_external_id(session, program_id, [external_id])).get(external_id)
    if member is None:
        raise NotFound(f"memberExternalId: no member {external_id!r} in this program")
    return member

"""Members and organizations: upserts from integrations, reads for the API."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from domain.changes import MembersChanged
from domain.clock import Clock
from domain.db.arrays import dialect_of, in_values
from domain.db.dialect import insert_for
from domain.db.engine import Database
from domain.enums import Channel, MemberKind
from domain.errors import InvalidInput, NotFound
from domain.events.validation import Rejection, validate_external_id
from domain.members.attributes import MAX_ATTRIBUTES_BYTES, attributes_size, merge_attributes
from domain.members.organizations import ParentChange, ancestors, check_parents, parent_map, subtree
from domain.models import Member, MemberTag, Organization, Segment, SegmentMembership
from domain.referrals.screening import AllowAllReferrals, ReferralScreen
from domain.referrals.signup import (
    ReferralOutcome,
    SignupItem,
    refuse_erased_referrers,
    resolve_codes,
    store_referrals,
)

MAX_BATCH = 1000
MAX_PAGE = 500


@dataclass(frozen=True)
class MemberUpsert:
    external_id: str
    kind: str = MemberKind.CUSTOMER.value
    organization_external_id: str | None = None
    attributes: dict[str, Any] | None = None
    channels: Sequence[str] | None = None
    joined_at: datetime | None = None
    #: Another member's referral code: only when this upsert creates the member (domain/referrals).
    referral_code: str | None = None


@dataclass(frozen=True)
class MembersUpserted:
    #: Items applied (an item whose referral code is refused on a new member is not).
    upserted: int
    #: One answer per item that carried a referral code, in item order.
    referrals: list[ReferralOutcome]


@dataclass(frozen=True)
class OrganizationUpsert:
    external_id: str
    name: str
    attributes: dict[str, Any] | None = None
    #: The organization above it (None: the top) when `sets_parent`; otherwise the stored one stays.
    parent_external_id: str | None = None
    sets_parent: bool = False


@dataclass(frozen=True)
class Page:
    items: list[Member]
    has_next: bool
    total: int = 0


def _field_error(index: int, message: str) -> InvalidInput:
    return InvalidInput(f"members[{index}].{message}", index=index)


def _check_batch(size: int, what: str) -> None:
    if size > MAX_BATCH:
        raise InvalidInput(f"{what}: at most {MAX_BATCH} per call, got {size}")


def check_page_size(first: int) -> None:
    if not 0 <= first <= MAX_PAGE:
        raise InvalidInput(f"first: must be between 0 and {MAX_PAGE}, got {first}")


class MemberService:
    def __init__(self, db: Database, clock: Clock, referrals: ReferralScreen | None = None) -> None:
        self.db = db
        self.clock = clock
        #: The referral fraud rules (fraud/referrals.py) judging signups with a referral code.
        self.referrals: ReferralScreen = referrals or AllowAllReferrals()

    async def upsert_organizations(self, program_id: int, inputs: Sequence[OrganizationUpsert]) -> int:
        _check_batch(len(inputs), "organizations")
        for i, org in enumerate(inputs):
            try:
                validate_external_id(org.external_id, f"organizations[{i}].externalId")
            except Rejection as rejection:
                raise InvalidInput(str(rejection)) from None
            if not org.name.strip():
                raise InvalidInput(f"organizations[{i}].name: must not be empty")
            if org.attributes is not None and not isinstance(org.attributes, dict):
                raise InvalidInput(f"organizations[{i}].attributes: must be a JSON object")
            if org.sets_parent and org.parent_external_id is not None:
                try:
                    validate_external_id(org.parent_external_id, f"organizations[{i}].parentExternalId")
                except Rejection as rejection:
                    raise InvalidInput(str(rejection)) from None
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            hierarchy = await _OrganizationHierarchy.load(uow.session, program_id, inputs)
            existing = await _organizations_by_external_id(
                uow.session, program_id, [o.external_id for o in inputs]
            )
            for i, org in enumerate(inputs):
                row = existing.get(org.external_id)
                if row is None:
                    row = Organization(
                        program_id=program_id,
                        external_id=org.external_id,
                        name=org.name.strip(),
                        attributes=org.attributes or {},
                        created_at=now,
                    )
                    uow.session.add(row)
                    existing[org.external_id] = row
                else:
                    row.name = org.name.strip()
                    row.attributes = merge_attributes(row.attributes, org.attributes or {})
                if attributes_size(row.attributes) > MAX_ATTRIBUTES_BYTES:
                    raise InvalidInput(
                        f"organizations[{i}].attributes: more than {MAX_ATTRIBUTES_BYTES} bytes once merged",
                        index=i,
                    )
            await hierarchy.write(uow.session, existing, now, uow.collect)
        return len(inputs)

    async def upsert_members(self, program_id: int, inputs: Sequence[MemberUpsert]) -> int:
        return (await self.upsert_members_with_referrals(program_id, inputs)).upserted

    async def upsert_members_with_referrals(
        self, program_id: int, inputs: Sequence[MemberUpsert]
    ) -> MembersUpserted:
        """Upsert the members; the items carrying a referral code are answered one by one
        (domain/referrals/signup.py): a new member with a bad code is left out, the rest apply."""
        _check_batch(len(inputs), "members")
        for i, member in enumerate(inputs):
            _validate_member(i, member)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            org_ids = await ensure_organizations(
                session, program_id, {m.organization_external_id for m in inputs} - {None}, now
            )
            existing = await members_by_external_id(
                session, program_id, [m.external_id for m in inputs], include_erased=True
            )
            for i, data in enumerate(inputs):
                erased = existing.get(data.external_id)
                if erased is not None and erased.erased_at is not None:
                    raise _field_error(i, "externalId: names an erased member")
            signups = [
                SignupItem(i, m.external_id, m.referral_code)
                for i, m in enumerate(inputs)
                if m.referral_code is not None
            ]
            codes = await resolve_codes(session, program_id, signups, existing)
            known = {row.id for row in existing.values()}
            referrers = {referrer for referrer, _ in codes.referrers.values()}
            live = await lock_members(session, known | referrers)  # one lock order: see lock_members
            refuse_erased_referrers(codes, signups, live)
            moved: set[int] = set()  # organizations members left or joined
            created: dict[int, Member] = {}
            for i, data in enumerate(inputs):
                if i in codes.skipped:
                    continue
                row = existing.get(data.external_id)
                org_id = org_ids[data.organization_external_id] if data.organization_external_id else None
                if row is None:
                    row = Member(
                        program_id=program_id,
                        external_id=data.external_id,
                        kind=data.kind,
                        organization_id=org_id,
                        attributes=merge_attributes({}, data.attributes or {}),
                        channels=list(data.channels or []),
                        joined_at=data.joined_at or now,
                        created_at=now,
                        updated_at=now,
                        points_balance=0,
                        pending_points=0,
                    )
                    session.add(row)
                    existing[data.external_id] = row
                    created[i] = row
                else:
                    row.kind = data.kind
                    if data.organization_external_id is not None:
                        if row.organization_id != org_id:
                            moved.update(o for o in (row.organization_id, org_id) if o is not None)
                        row.organization_id = org_id
                    if data.attributes:
                        row.attributes = merge_attributes(row.attributes, data.attributes)
                    if data.channels is not None:
                        row.channels = list(data.channels)
                    if data.joined_at is not None:
                        row.joined_at = data.joined_at
                    row.updated_at = now
                if attributes_size(row.attributes) > MAX_ATTRIBUTES_BYTES:
                    raise _field_error(i, f"attributes: more than {MAX_ATTRIBUTES_BYTES} bytes once merged")
            await session.flush()
            names = {item.index: item.external_id for item in signups}
            await store_referrals(session, program_id, codes, created, names, self.referrals, now)
            ids = {row.id for row in existing.values()}
            rolled_up = await _members_above(session, program_id, moved) if moved else set()
            change = MembersChanged(
                program_id,
                profiles=frozenset((ids & known) | rolled_up),
                created=frozenset(ids - known),
                at=now,
            )
            uow.collect(change)  # the segment engine re-evaluates them before the commit
        answers = [codes.outcomes[item.index] for item in signups if item.index in codes.outcomes]
        return MembersUpserted(len(inputs) - len(codes.skipped), answers)

    async def get(self, program_id: int, external_id: str) -> Member | None:
        async with self.db.read() as session:
            return (await members_by_external_id(session, program_id, [external_id])).get(external_id)

    async def get_by_id(self, program_id: int, member_id: int) -> Member:
        async with self.db.read() as session:
            member = await session.get(Member, member_id)
        if member is None or member.program_id != program_id:
            raise NotFound(f"member {member_id} does not exist")
        return member

    async def list_members(
        self,
        program_id: int,
        first: int,
        after_id: int | None,
        organization_id: int | None = None,
        segment_key: str | None = None,
        tag: str | None = None,
    ) -> Page:
        """Members in id order, keyset-paginated; `total` counts the whole filtered set.

        Filters: an organization, the current members of a segment, the carriers of a tag.
        Erased members are not listed.
        A listing may lag (`Database.lagging_read`: the read replica when there is one): a member
        written within the replication delay can be missing from it, or listed as it was. Reads of
        one member (`get`, `get_by_id`) stay on the primary: writes resolve members through them.
        """
        check_page_size(first)
        conditions = [Member.program_id == program_id, Member.erased_at.is_(None)]
        if organization_id is not None:
            conditions.append(Member.organization_id == organization_id)
        if tag is not None:
            carriers = select(MemberTag.member_id).where(
                MemberTag.program_id == program_id, MemberTag.key == tag
            )
            conditions.append(Member.id.in_(carriers))
        async with self.db.lagging_read() as session:
            if segment_key is not None:
                segment_id = (
                    await session.execute(
                        select(Segment.id).where(Segment.program_id == program_id, Segment.key == segment_key)
                    )
                ).scalar_one_or_none()
                if segment_id is None:
                    raise NotFound(f"segmentKey: no segment {segment_key!r} in this program")
                chosen = select(SegmentMembership.member_id).where(SegmentMembership.segment_id == segment_id)
                conditions.append(Member.id.in_(chosen))
            query = select(Member).where(*conditions)
            if after_id is not None:
                query = query.where(Member.id > after_id)
            rows = list((await session.execute(query.order_by(Member.id).limit(first + 1))).scalars())
            total = (
                await session.execute(select(func.count()).select_from(Member).where(*conditions))
            ).scalar_one()
        return Page(rows[:first], len(rows) > first, total)


def _validate_member(i: int, member: MemberUpsert) -> None:
    try:
        validate_external_id(member.external_id, "externalId")
        if member.organization_external_id is not None:
            validate_external_id(member.organization_external_id, "organizationExternalId")
    except Rejection as rejection:
        raise _field_error(i, str(rejection)) from None
    if member.kind not in MemberKind.__members__:
        raise _field_error(i, f"kind: {member.kind!r} is not one of CUSTOMER, DEALER, EMPLOYEE")
    if member.attributes is not None and not isinstance(member.attributes, dict):
        raise _field_error(i, "attributes: must be a JSON object")
    for channel in member.channels or ():
        if channel not in Channel.__members__:
            raise _field_error(i, f"channels: {channel!r} is not a channel")
    if member.channels is not None and len(set(member.channels)) != len(member.channels):
        raise _field_error(i, "channels: a channel is listed twice")
    if member.joined_at is not None and member.joined_at.tzinfo is None:
        raise _field_error(i, "joinedAt: needs a UTC offset")


async def members_by_external_id(
    session: AsyncSession, program_id: int, external_ids: Sequence[str], *, include_erased: bool = False
) -> dict[str, Member]:
    """The named members; an erased member answers to no externalId, not even its pseudonym, unless
    `include_erased` (a writer that must refuse the pseudonym rather than collide with it)."""
    if not external_ids:
        return {}
    query = select(Member).where(Member.program_id == program_id, Member.external_id.in_(set(external_ids)))
    if not include_erased:
        query = query.where(Member.erased_at.is_(None))
    rows = await session.execute(query)
    return {m.external_id: m for m in rows.scalars()}


async def lock_members(session: AsyncSession, member_ids: Iterable[int]) -> set[int]:
    """Lock member rows in id order: every writer takes them in one order, so none deadlock.

    Balances, upserts and segment evaluation all change member-scoped state; taking
    the locks up front (PostgreSQL; SQLite has one writer) serializes per member.
    Returns the ids that are not erased once locked: an erasure that committed while this
    transaction waited for the lock is seen here (PostgreSQL re-reads a row it waited for).
    """
    ids = sorted(set(member_ids))
    if not ids:
        return set()
    dialect = dialect_of(session)
    query = select(Member.id).where(in_values(Member.id, ids, dialect), Member.erased_at.is_(None))
    if dialect == "postgresql":
        query = query.order_by(Member.id).with_for_update()
    return set((await session.execute(query)).scalars())


async def member_ids_by_external_id(
    session: AsyncSession, program_id: int, external_ids: Sequence[str]
) -> dict[str, int]:
    """Just the ids: the ingest path needs no attributes."""
    if not external_ids:
        return {}
    rows = await session.execute(
        select(Member.external_id, Member.id).where(
            Member.program_id == program_id,
            in_values(Member.external_id, sorted(set(external_ids)), dialect_of(session)),
            Member.erased_at.is_(None),
        )
    )
    return {external_id: member_id for external_id, member_id in rows}  # noqa: C416 - rows are Row objects


async def _organizations_by_external_id(
    session: AsyncSession, program_id: int, external_ids: Sequence[str]
) -> dict[str, Organization]:
    if not external_ids:
        return {}
    rows = await session.execute(
        select(Organization).where(
            Organization.program_id == program_id, Organization.external_id.in_(set(external_ids))
        )
    )
    return {o.external_id: o for o in rows.scalars()}


async def ensure_organizations(
    session: AsyncSession, program_id: int, external_ids: set[str | None], now: datetime
) -> dict[str | None, int]:
    """Ids of the named organizations, creating unknown ones with name = externalId."""
    wanted = [e for e in external_ids if e is not None]
    if not wanted:
        return {}
    stmt = insert_for(session, Organization).on_conflict_do_nothing(
        index_elements=[Organization.program_id, Organization.external_id]
    )
    await session.execute(
        stmt,
        [
            {"program_id": program_id, "external_id": e, "name": e, "attributes": {}, "created_at": now}
            for e in sorted(wanted)
        ],
    )
    found = await _organizations_by_external_id(session, program_id, wanted)
    return {e: o.id for e, o in found.items()}


async def _members_above(session: AsyncSession, program_id: int, org_ids: set[int]) -> set[int]:
    """The members of these organizations and of those above them: a member who joins or leaves
    one moves their organization roll-ups (`org.AGG`)."""
    touched = ancestors(await parent_map(session, program_id), org_ids)
    rows = await session.execute(
        select(Member.id).where(Member.program_id == program_id, Member.organization_id.in_(sorted(touched)))
    )
    return set(rows.scalars())


@dataclass
class _OrganizationHierarchy:
    """The parent changes of an organization batch, checked before anything is written."""

    program_id: int
    #: external id -> parent external id, as stored and as the batch leaves it
    before: dict[str, str | None]
    after: dict[str, str | None]

    @classmethod
    async def load(
        cls, session: AsyncSession, program_id: int, inputs: Sequence[OrganizationUpsert]
    ) -> _OrganizationHierarchy:
        if not any(o.sets_parent for o in inputs):
            return cls(program_id, {}, {})
        parent = aliased(Organization)
        rows = await session.execute(
            select(Organization.external_id, parent.external_id)
            .outerjoin(parent, parent.id == Organization.parent_id)
            .where(Organization.program_id == program_id)
        )
        stored: dict[str, str | None] = {external_id: above for external_id, above in rows}  # noqa: C416
        # organizations of the batch exist from their item on, whether they set a parent or not
        ordered: list[ParentChange] = []
        for i, org in enumerate(inputs):
            if org.sets_parent:
                ordered.append(ParentChange(i, org.external_id, org.parent_external_id))
            elif org.external_id not in stored:
                ordered.append(ParentChange(i, org.external_id, None))
        return cls(program_id, stored, check_parents(ordered, stored))

    async def write(
        self, session: AsyncSession, rows: dict[str, Organization], now: datetime, collect: Any
    ) -> None:
        """Set the changed parents; the members below a moved organization and above its old and
        new places are re-evaluated (their roll-ups and `in_organization` may have moved)."""
        moved = sorted(e for e, p in self.after.items() if e in rows and self.before.get(e) != p)
        if not moved:
            return
        await session.flush()  # new organizations get their ids
        named = {p for e in moved if (p := self.after[e]) is not None and p not in rows}
        rows = {**rows, **await _organizations_by_external_id(session, self.program_id, sorted(named))}
        before = await parent_map(session, self.program_id)
        for external_id in moved:
            above = self.after[external_id]
            rows[external_id].parent_id = None if above is None else rows[above].id
        await session.flush()
        after = await parent_map(session, self.program_id)
        moved_ids = [rows[e].id for e in moved]
        touched = subtree(after, moved_ids) | ancestors(after, moved_ids) | ancestors(before, moved_ids)
        member_ids = (
            await session.execute(
                select(Member.id).where(
                    Member.program_id == self.program_id, Member.organization_id.in_(sorted(touched))
                )
            )
        ).scalars()
        profiles = frozenset(member_ids)
        if profiles:
            collect(MembersChanged(self.program_id, profiles=profiles, at=now))

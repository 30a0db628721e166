"""Batched reads behind the API's DataLoaders: one query per relation per request, not per row."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import LedgerEntry, Member, Organization


async def members_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, Member]:
    rows = await session.scalars(select(Member).where(Member.id.in_(sorted(set(ids)))))
    return {member.id: member for member in rows}


async def organizations_by_id(session: AsyncSession, ids: Sequence[int]) -> dict[int, Organization]:
    rows = await session.execute(select(Organization).where(Organization.id.in_(set(ids))))
    return {o.id: o for o in rows.scalars()}


async def organization_children(session: AsyncSession, ids: Sequence[int]) -> dict[int, list[Organization]]:
    """For each organization, the organizations directly below it, by externalId."""
    rows = await session.execute(
        select(Organization)
        .where(Organization.parent_id.in_(set(ids)))
        .order_by(Organization.parent_id, Organization.external_id)
    )
    found: dict[int, list[Organization]] = {org_id: [] for org_id in ids}
    for org in rows.scalars():
        assert org.parent_id is not None
        found[org.parent_id].append(org)
    return found


async def first_ledger_pages(
    session: AsyncSession, member_ids: Sequence[int], first: int
) -> dict[int, list[LedgerEntry]]:
    """For each member, its newest `first + 1` entries (the extra one tells whether a next page exists)."""
    ranked = (
        select(
            LedgerEntry.id,
            func.row_number()
            .over(partition_by=LedgerEntry.member_id, order_by=LedgerEntry.id.desc())
            .label("rn"),
        )
        .where(LedgerEntry.member_id.in_(set(member_ids)))
        .subquery()
    )
    rows = await session.execute(
        select(LedgerEntry)
        .join(ranked, ranked.c.id == LedgerEntry.id)
        .where(ranked.c.rn <= first + 1)
        .order_by(LedgerEntry.member_id, LedgerEntry.id.desc())
    )
    pages: dict[int, list[LedgerEntry]] = {member_id: [] for member_id in member_ids}
    for entry in rows.scalars():
        pages[entry.member_id].append(entry)
    return pages


async def first_member_pages_by_organization(
    session: AsyncSession, organization_ids: Sequence[int], first: int
) -> tuple[dict[int, list[Member]], dict[int, int]]:
    """For each organization, its first `first + 1` members by id, and its member count."""
    ranked = (
        select(
            Member.id,
            func.row_number().over(partition_by=Member.organization_id, order_by=Member.id).label("rn"),
        )
        .where(Member.organization_id.in_(set(organization_ids)))
        .subquery()
    )
    rows = await session.execute(
        select(Member)
        .join(ranked, ranked.c.id == Member.id)
        .where(ranked.c.rn <= first + 1)
        .order_by(Member.id)
    )
    pages: dict[int, list[Member]] = {org_id: [] for org_id in organization_ids}
    for member in rows.scalars():
        assert member.organization_id is not None
        pages[member.organization_id].append(member)
    counts = await session.execute(
        select(Member.organization_id, func.count())
        .where(Member.organization_id.in_(set(organization_ids)))
        .group_by(Member.organization_id)
    )
    totals = dict.fromkeys(organization_ids, 0)
    for org_id, count in counts:
        assert org_id is not None
        totals[org_id] = count
    return pages, totals

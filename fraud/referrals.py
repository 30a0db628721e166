"""The referral screen (domain.referrals.screening's port): the facts the referral rules need,
loaded inside the signup's transaction, then `ReferralJudge`.

The upsert holds the referrers' rows locked (`lock_members`) before it screens, so two signups
with one referrer's code are counted one after the other: the velocity limit holds under
concurrency. Candidates of one batch are judged in order, each counting the ones before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.audit import ALLOW, AuditOutcome
from domain.models import FraudDevice, Member, Referral
from domain.referrals.screening import ReferralCandidate
from fraud.config import load_config
from fraud.history import Identity, identity_of
from fraud.referral_rules import ReferralFacts, ReferralJudge

DAY = timedelta(days=1)
WEEK = timedelta(days=7)


class ReferralRules:
    async def screen(
        self, session: AsyncSession, program_id: int, candidates: Sequence[ReferralCandidate]
    ) -> list[AuditOutcome]:
        if not candidates:
            return []
        config = await load_config(session, program_id)
        judge = ReferralJudge(config)
        if not judge.rules:
            return [ALLOW for _ in candidates]
        depth = int(config["referral_cycle"]["maxDepth"])
        referrers = sorted({c.referrer_id for c in candidates})
        chains = await _upline(session, referrers, depth)
        people = set(referrers) | {m for chain in chains.values() for m in chain}
        identities = await _identities(session, people)
        new_names = await _names(session, [c.referred_id for c in candidates])
        earliest = min(c.at for c in candidates)
        stored = await _recent(session, referrers, earliest - WEEK)
        outcomes: list[AuditOutcome] = []
        made: list[tuple[int, datetime]] = []
        for candidate in candidates:
            made.append((candidate.referrer_id, candidate.at))
            times = stored.get(candidate.referrer_id, []) + [
                at for r, at in made if r == candidate.referrer_id
            ]
            facts = ReferralFacts(
                identities[candidate.referrer_id],
                identity_of(new_names[candidate.referred_id], candidate.attributes, ()),
                tuple(identities[m] for m in chains.get(candidate.referrer_id, ())),
                sum(1 for at in times if at > candidate.at - DAY),
                sum(1 for at in times if at > candidate.at - WEEK),
            )
            outcomes.append(judge.judge(facts))
        return outcomes


async def _upline(session: AsyncSession, referrers: Sequence[int], depth: int) -> dict[int, list[int]]:
    """Each referrer's chain of referrers, nearest first, at most `depth` - 1 long (one query a step)."""
    above: dict[int, int] = {}
    frontier = set(referrers)
    for _ in range(depth - 1):
        if not frontier:
            break
        rows = await session.execute(
            select(Referral.referred_id, Referral.referrer_id).where(
                Referral.referred_id.in_(sorted(frontier))
            )
        )
        frontier = set()
        for referred, referrer in rows:
            if referred not in above:
                above[referred] = referrer
                frontier.add(referrer)
    chains: dict[int, list[int]] = {}
    for start in referrers:
        chain: list[int] = []
        current = start
        while current in above and len(chain) < depth - 1 and above[current] not in chain:
            current = above[current]
            chain.append(current)
        chains[start] = chain
    return chains


async def _identities(session: AsyncSession, member_ids: set[int]) -> dict[int, Identity]:
    """Members' identities: attributes (email, phone, deviceId) and every device they used."""
    ids = sorted(member_ids)
    found: dict[int, tuple[str, dict[str, Any]]] = {
        member_id: (external_id, attributes or {})
        for member_id, external_id, attributes in await session.execute(
            select(Member.id, Member.external_id, Member.attributes).where(Member.id.in_(ids))
        )
    }
    devices: dict[int, set[str]] = {member_id: set() for member_id in found}
    rows = await session.execute(
        select(FraudDevice.member_id, FraudDevice.device_id)
        .where(FraudDevice.member_id.in_(ids))
        .group_by(FraudDevice.member_id, FraudDevice.device_id)
    )
    for member_id, device in rows:
        devices[member_id].add(device)
    return {m: identity_of(name, attributes, devices[m]) for m, (name, attributes) in found.items()}


async def _names(session: AsyncSession, member_ids: Sequence[int]) -> dict[int, str]:
    rows = await session.execute(
        select(Member.id, Member.external_id).where(Member.id.in_(sorted(member_ids)))
    )
    return {member_id: name for member_id, name in rows}  # noqa: C416 - Rows


async def _recent(
    session: AsyncSession, referrers: Sequence[int], since: datetime
) -> dict[int, list[datetime]]:
    """The stored referrals of each referrer made after `since` (any status: attempts count)."""
    rows = await session.execute(
        select(Referral.referrer_id, Referral.created_at).where(
            Referral.referrer_id.in_(referrers), Referral.created_at > since
        )
    )
    made: dict[int, list[datetime]] = {}
    for referrer, at in rows:
        made.setdefault(referrer, []).append(at)
    return made

"""Signing up with a referral code: `upsertMembers` items that carry `referralCode`.

A code counts only when it creates the member. Each item's answer is its own (one bad item never
sinks the others):
- a new member with an unknown (or voided, or malformed) code: the item is not applied at all,
  `REFERRAL_CODE_UNKNOWN` naming `members[i].referralCode` (the client fixes the code and resends);
- a new member while the program has no referral program on: not applied, `REFERRALS_OFF`;
- an existing member: its profile update applies and the code is ignored,
  `REFERRAL_SIGNUP_ONLY` (resending the batch that created it, with the same code, is no error);
- otherwise the referral is screened by the referral fraud rules and stored PENDING (the joining
  reward posted at once, through the posting path), HELD (REVIEW: nothing paid until a reviewer
  decides) or BLOCKED (no reward, ever); the member is created in every case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.audit import AuditOutcome
from domain.enums import Verdict
from domain.ledger.posting import Bonus, post_bonuses
from domain.models import Member, Referral
from domain.referrals.codes import normal_code
from domain.referrals.program import ReferralSettings, active_settings
from domain.referrals.screening import ReferralCandidate, ReferralScreen
from domain.referrals.status import ReferralStatus

UNKNOWN = "REFERRAL_CODE_UNKNOWN"
OFF = "REFERRALS_OFF"
SIGNUP_ONLY = "REFERRAL_SIGNUP_ONLY"

_STATUS_BY_VERDICT = {
    Verdict.ALLOW: ReferralStatus.PENDING,
    Verdict.REVIEW: ReferralStatus.HELD,
    Verdict.BLOCK: ReferralStatus.BLOCKED,
}


@dataclass(frozen=True)
class ReferralOutcome:
    """The answer to one upsert item that carried a referral code."""

    index: int
    external_id: str
    #: The referral's status when one exists for the member (stored now or by an earlier call).
    status: ReferralStatus | None = None
    #: Why the code was not used: REFERRAL_CODE_UNKNOWN, REFERRALS_OFF, REFERRAL_SIGNUP_ONLY.
    error: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class SignupItem:
    index: int
    external_id: str
    code: str


@dataclass
class ResolvedCodes:
    """What the codes of a batch name, before anything is written."""

    settings: ReferralSettings | None
    #: item index -> (referrer member id, normal code), for members the batch creates
    referrers: dict[int, tuple[int, str]]
    outcomes: dict[int, ReferralOutcome]
    #: items not applied at all (their code is bad and their member would be new)
    skipped: set[int]


def _field(index: int) -> str:
    return f"members[{index}].referralCode"


async def resolve_codes(
    session: AsyncSession, program_id: int, items: Sequence[SignupItem], existing: Mapping[str, Member]
) -> ResolvedCodes:
    """Check each item's code against the stored codes and members (no write)."""
    resolved = ResolvedCodes(None, {}, {}, set())
    if not items:
        return resolved
    resolved.settings = await active_settings(session, program_id)
    wanted = {code for item in items if (code := normal_code(item.code)) is not None}
    holders = await _holders(session, program_id, wanted)
    stored = await _stored_referrals(session, [m.id for m in existing.values()])
    seen: set[str] = set()
    for item in items:
        code = normal_code(item.code)
        member = existing.get(item.external_id)
        if member is not None or item.external_id in seen:
            earlier = stored.get(member.id) if member is not None else None
            if earlier is not None and earlier.code == code:  # a replay of the call that created it
                status = ReferralStatus(earlier.status)
                resolved.outcomes[item.index] = ReferralOutcome(item.index, item.external_id, status)
                continue
            resolved.outcomes[item.index] = ReferralOutcome(
                item.index,
                item.external_id,
                None if earlier is None else ReferralStatus(earlier.status),
                SIGNUP_ONLY,
                f"{_field(item.index)}: {item.external_id!r} is already a member; a referral code "
                "counts only when it creates the member (ignored)",
            )
            continue
        seen.add(item.external_id)
        if resolved.settings is None:
            resolved.skipped.add(item.index)
            resolved.outcomes[item.index] = ReferralOutcome(
                item.index,
                item.external_id,
                error=OFF,
                message=f"{_field(item.index)}: this program has no referral program on "
                "(setReferralProgram); the member was not created",
            )
            continue
        if code is None or code not in holders:
            resolved.skipped.add(item.index)
            resolved.outcomes[item.index] = _unknown(item)
            continue
        resolved.referrers[item.index] = (holders[code], code)
    return resolved


def _unknown(item: SignupItem) -> ReferralOutcome:
    return ReferralOutcome(
        item.index,
        item.external_id,
        error=UNKNOWN,
        message=f"{_field(item.index)}: no member has referral code {item.code[:40]!r}; "
        "the member was not created",
    )


def refuse_erased_referrers(resolved: ResolvedCodes, items: Sequence[SignupItem], live: set[int]) -> None:
    """After the referrers' rows are locked: a referrer erased meanwhile voided its code."""
    by_index = {item.index: item for item in items}
    for index, (referrer_id, _) in list(resolved.referrers.items()):
        if referrer_id not in live:
            del resolved.referrers[index]
            resolved.skipped.add(index)
            resolved.outcomes[index] = _unknown(by_index[index])


async def store_referrals(
    session: AsyncSession,
    program_id: int,
    resolved: ResolvedCodes,
    created: Mapping[int, Member],
    external_ids: Mapping[int, str],
    screen: ReferralScreen,
    now: datetime,
) -> None:
    """Screen and store the referrals of the members the batch created (their ids flushed), and
    post the joining reward of each one allowed. Fills `resolved.outcomes`."""
    settings = resolved.settings
    for i in sorted(set(resolved.referrers) - set(created)):  # an earlier item of the batch created it
        resolved.outcomes[i] = ReferralOutcome(
            i,
            external_ids[i],
            error=SIGNUP_ONLY,
            message=f"{_field(i)}: an earlier item of this call created {external_ids[i]!r}; a referral "
            "code counts only on the item that creates the member (ignored)",
        )
    order = sorted(i for i in resolved.referrers if i in created)
    if settings is None or not order:
        return
    candidates = [
        ReferralCandidate(resolved.referrers[i][0], created[i].id, dict(created[i].attributes or {}), now)
        for i in order
    ]
    verdicts = await screen.screen(session, program_id, candidates)
    bonuses: list[Bonus] = []
    for i, candidate, outcome in zip(order, candidates, verdicts, strict=True):
        status = _STATUS_BY_VERDICT[outcome.verdict]
        allowed = status == ReferralStatus.PENDING
        session.add(
            Referral(
                program_id=program_id,
                referrer_id=candidate.referrer_id,
                referred_id=candidate.referred_id,
                code=resolved.referrers[i][1],
                status=status.value,
                verdict=outcome.verdict.value,
                findings=_findings(outcome),
                created_at=now,
                join_points=settings.join_points if allowed else 0,
                referrer_points=0,
                settled_at=now if status == ReferralStatus.BLOCKED else None,
                note=_note(outcome) if not allowed else None,
            )
        )
        if allowed:
            bonuses.append(join_bonus(candidate.referred_id, settings.join_points))
        resolved.outcomes[i] = ReferralOutcome(
            i, created[i].external_id, status, message=_note(outcome) if outcome.findings else None
        )
    await session.flush()
    await post_bonuses(session, program_id, bonuses, now)


def join_bonus(referred_id: int, points: int) -> Bonus:
    """The new member's joining reward; its key makes it once per member."""
    return Bonus(referred_id, points, "referral: joined with a referral code", f"referral-join:{referred_id}")


def _findings(outcome: AuditOutcome) -> list[dict[str, Any]]:
    return [
        {"rule": f.rule, "verdict": f.verdict.value, "detail": f.detail, "shadow": f.shadow}
        for f in outcome.findings
    ]


def _note(outcome: AuditOutcome) -> str:
    return "; ".join(f"{f.rule}{' (shadow)' if f.shadow else ''}: {f.detail}" for f in outcome.findings)[:500]


async def _holders(session: AsyncSession, program_id: int, codes: set[str]) -> dict[str, int]:
    if not codes:
        return {}
    rows = await session.execute(
        select(Member.referral_code, Member.id).where(
            Member.program_id == program_id,
            Member.referral_code.in_(sorted(codes)),
            Member.erased_at.is_(None),
        )
    )
    return {code: member_id for code, member_id in rows if code is not None}


async def _stored_referrals(session: AsyncSession, member_ids: Sequence[int]) -> dict[int, Referral]:
    if not member_ids:
        return {}
    rows = await session.execute(select(Referral).where(Referral.referred_id.in_(sorted(set(member_ids)))))
    return {r.referred_id: r for r in rows.scalars()}

"""Exposing members: the sticky assignment row and the variant's action, in the caller's transaction.

A member's exposure is inserted `ON CONFLICT DO NOTHING` on (experiment, member):
only the first exposure is recorded and acts, so re-exposing (twice, concurrently,
or after the weights changed) neither moves the member nor acts again. Actions go
through the existing machinery: bonus points are ledger ADJUSTMENTs under the
idempotency key `experiment:<experiment id>:<member id>`, messages go through
`domain.campaigns.outgoing` (delivery id derived from the same pair; SUPPRESSED
when the member accepted no channel), reward offers are
the reward's key on the exposure row, coupons are a code of the pool issued under the
same key (`domain.coupons.issuing`). The holdout gets nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from domain.campaigns.messages import choose_channel
from domain.campaigns.outgoing import MessageDraft, record_messages
from domain.coupons.issuing import IssueRequest, issue_codes
from domain.db.dialect import insert_for
from domain.experiments.assignment import HOLDOUT, assign
from domain.experiments.definitions import ActionType, Variant
from domain.ledger.posting import Bonus, post_bonuses
from domain.models import Experiment, ExperimentExposure

log = logging.getLogger(__name__)
_NAMESPACE = uuid.UUID("0f6e3b0a-52f4-4d39-8a55-6f3c1e7a9b21")


@dataclass(frozen=True)
class Candidate:
    """A member about to be exposed."""

    member_id: int
    external_id: str
    channels: list[str]


def exposure_key(experiment_id: int, member_id: int) -> str:
    """The ledger idempotency key of an exposure's bonus, and the seed of its message's delivery id."""
    return f"experiment:{experiment_id}:{member_id}"


def exposure_delivery_id(experiment_id: int, member_id: int) -> str:
    return str(uuid.uuid5(_NAMESPACE, exposure_key(experiment_id, member_id)))


async def expose(
    session: AsyncSession,
    experiment: Experiment,
    candidates: Sequence[Candidate],
    now: datetime,
) -> dict[int, str]:
    """Record the first exposure of each candidate and run its variant's action.

    Returns the arm of each member newly exposed here (members already exposed are left out).
    """
    if not candidates:
        return {}
    variants = {v.key: v for v in (Variant.of(stored) for stored in experiment.variants)}
    weights = [(v.key, v.weight) for v in variants.values()]
    arms = {
        c.member_id: assign(experiment.key, c.external_id, experiment.holdout_percent, weights)
        for c in candidates
    }
    table = ExperimentExposure.__table__
    rows = [
        {
            "experiment_id": experiment.id,
            "member_id": c.member_id,
            "program_id": experiment.program_id,
            "variant": arms[c.member_id],
            "exposed_at": now,
            "offered_reward_key": _offered(variants, arms[c.member_id]),
        }
        for c in sorted(candidates, key=lambda c: c.member_id)
    ]
    statement = insert_for(session, table).on_conflict_do_nothing().returning(table.c.member_id)
    new = set((await session.scalars(statement, rows)).all())
    fresh = [c for c in candidates if c.member_id in new]
    acting = [(c, variants[arms[c.member_id]]) for c in fresh if arms[c.member_id] != HOLDOUT]
    await _send_messages(
        session, experiment, [(c, v) for c, v in acting if v.action.type == ActionType.MESSAGE], now
    )
    bonuses = [
        Bonus(
            c.member_id,
            v.action.points or 0,
            f"experiment {experiment.key}: variant {v.key}",
            exposure_key(experiment.id, c.member_id),
        )
        for c, v in acting
        if v.action.type == ActionType.BONUS_POINTS
    ]
    await post_bonuses(session, experiment.program_id, bonuses, now)  # the segment engine hears of it
    await _issue_coupons(
        session, experiment, [(c, v) for c, v in acting if v.action.type == ActionType.ISSUE_COUPON], now
    )
    return {c.member_id: arms[c.member_id] for c in fresh}


def _offered(variants: dict[str, Variant], arm: str) -> str | None:
    variant = variants.get(arm)
    if variant is None or variant.action.type != ActionType.REWARD_OFFER:
        return None
    return variant.action.reward_key


async def _issue_coupons(
    session: AsyncSession, experiment: Experiment, issuing: list[tuple[Candidate, Variant]], now: datetime
) -> None:
    """One code each, named by the exposure (a replay finds it); an exhausted pool is logged."""
    requests = [
        IssueRequest(exposure_key(experiment.id, c.member_id), v.action.coupon_pool_key or "", c.member_id)
        for c, v in issuing
    ]
    issued = await issue_codes(session, experiment.program_id, requests, now)
    for request in requests:
        if issued[request.issue_key] is None:
            log.warning(
                "experiment %s: coupon pool %r has no code left; member %d got none",
                experiment.key,
                request.pool_key,
                request.member_id,
            )


async def _send_messages(
    session: AsyncSession, experiment: Experiment, sending: list[tuple[Candidate, Variant]], now: datetime
) -> None:
    """On a channel the member accepted (the action's channel first), else SUPPRESSED."""
    drafts = [
        MessageDraft(
            member_id=c.member_id,
            member_external_id=c.external_id,
            segment_id=None,  # not a trigger's: kept out of the segment's message analytics
            segment_key=experiment.segment_key,
            template=v.action.template or "",
            channel=choose_channel(c.channels, () if v.action.channel is None else (v.action.channel,)),
            delivery_id=exposure_delivery_id(experiment.id, c.member_id),
            context={"change": "EXPOSED", "experiment": experiment.key, "variant": v.key},
        )
        for c, v in sending
    ]
    await record_messages(session, experiment.program_id, drafts, now)

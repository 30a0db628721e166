"""Admin and client operations on experiments: define, expose (a member or a whole segment), read results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.engine import Database, UnitOfWork
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.experiments.definitions import ActionType, ExperimentDraft, validate_experiment
from domain.experiments.exposure import Candidate, expose
from domain.experiments.results import ArmResult, arm_counts, arm_results
from domain.governance.audit_log import record_change
from domain.members.service import members_by_external_id
from domain.models import (
    CouponPool,
    Experiment,
    ExperimentExposure,
    Member,
    Reward,
    Segment,
    SegmentMembership,
)

#: Members exposed per unit of work by `expose_segment`.
EXPOSE_CHUNK = 500


@dataclass(frozen=True)
class Exposure:
    """A member's arm in an experiment; `new` when this call recorded it."""

    experiment_key: str
    member_external_id: str
    variant: str
    exposed_at: datetime
    offered_reward_key: str | None
    new: bool


@dataclass(frozen=True)
class SegmentExposure:
    newly_exposed: int
    total_exposed: int


class ExperimentService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create_experiment(self, program_id: int, draft: ExperimentDraft, *, actor: str) -> Experiment:
        """A new experiment; its key must be new in the program (CONFLICT otherwise)."""
        valid = validate_experiment(draft)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            if await _find(session, program_id, valid.key) is not None:
                raise Conflict(f"key: experiment {valid.key!r} already exists; use updateExperiment")
            segment_id = await _check_references(session, program_id, valid)
            row = Experiment(program_id=program_id, key=valid.key, created_at=now)
            _apply(row, valid, segment_id, now)
            session.add(row)
            await session.flush()
            await _record(uow, row, actor, "createExperiment", None, now)
        return row

    async def update_experiment(self, program_id: int, draft: ExperimentDraft, *, actor: str) -> Experiment:
        """Replace an experiment's definition. Members already exposed keep their arm (sticky);
        a variant that has exposures cannot be removed."""
        valid = validate_experiment(draft)
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            row = await _find(session, program_id, valid.key, for_update=True)
            if row is None:
                raise NotFound(f"key: no experiment {valid.key[:70]!r} in this program")
            segment_id = await _check_references(session, program_id, valid)
            used = set(
                await session.scalars(
                    select(ExperimentExposure.variant)
                    .where(ExperimentExposure.experiment_id == row.id)
                    .distinct()
                )
            )
            kept = {v.key for v in valid.variants}
            for removed in sorted(used - kept - {"holdout"}):
                raise InvalidInput(f"variants: variant {removed!r} has exposures and cannot be removed")
            before = audited_experiment(row)
            _apply(row, valid, segment_id, now)
            await _record(uow, row, actor, "updateExperiment", before, now)
        return row

    async def experiment(self, program_id: int, key: str) -> Experiment | None:
        async with self.db.read() as session:
            return await _find(session, program_id, key)

    async def experiments(self, program_id: int) -> list[Experiment]:
        """The program's experiments by key."""
        async with self.db.read() as session:
            rows = await session.scalars(
                select(Experiment).where(Experiment.program_id == program_id).order_by(Experiment.key)
            )
            return list(rows)

    async def expose_member(
        self, program_id: int, key: str, member_external_id: str, *, as_member: int | None = None
    ) -> Exposure | None:
        """The member's arm, recorded (and acted on) at its first exposure.

        None when the member was never exposed and is not in the target segment now.
        `as_member`: the caller is this member's token and may expose only itself.
        """
        now = self.clock.now()
        async with self.db.unit_of_work() as uow:
            session = uow.session
            experiment = await _get(session, program_id, key)
            member = (await members_by_external_id(session, program_id, [member_external_id])).get(
                member_external_id
            )
            if member is None:
                raise NotFound(f"memberExternalId: no member {member_external_id[:70]!r} in this program")
            if as_member is not None and member.id != as_member:
                raise Forbidden("a member token exposes only its own member")
            recorded = await session.get(ExperimentExposure, (experiment.id, member.id, program_id))
            if recorded is not None:
                return _exposure(experiment, member_external_id, recorded, new=False)
            in_segment = await session.scalar(
                select(
                    exists().where(
                        SegmentMembership.segment_id == experiment.segment_id,
                        SegmentMembership.member_id == member.id,
                    )
                )
            )
            if not in_segment:
                return None
            candidate = Candidate(member.id, member.external_id, list(member.channels or []))
            new = await expose(session, experiment, [candidate], now)
            recorded = await session.get(
                ExperimentExposure, (experiment.id, member.id, program_id), populate_existing=True
            )
            assert recorded is not None
            return _exposure(experiment, member_external_id, recorded, new=member.id in new)

    async def expose_segment(self, program_id: int, key: str) -> SegmentExposure:
        """Expose every current member of the target segment not yet exposed, one unit of work per chunk."""
        newly = 0
        after = 0
        while True:
            async with self.db.unit_of_work() as uow:
                session = uow.session
                experiment = await _get(session, program_id, key)
                if experiment.segment_id is None:
                    raise InvalidInput(
                        f"key: the segment {experiment.segment_key!r} of this experiment was deleted"
                    )
                candidates = await _unexposed(session, experiment, after)
                newly += len(await expose(session, experiment, candidates, self.clock.now()))
            if len(candidates) < EXPOSE_CHUNK:
                break
            after = candidates[-1].member_id
        async with self.db.read() as session:
            counts = await arm_counts(session, experiment)
        return SegmentExposure(newly, sum(exposed for _, exposed in counts.values()))

    async def results(self, program_id: int, key: str) -> list[ArmResult]:
        """Per arm: exposed, converted, rate, and the comparison with the control."""
        async with self.db.read() as session:
            experiment = await _get(session, program_id, key)
            return arm_results(experiment, await arm_counts(session, experiment))


async def _find(
    session: AsyncSession, program_id: int, key: str, *, for_update: bool = False
) -> Experiment | None:
    query = select(Experiment).where(Experiment.program_id == program_id, Experiment.key == key)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def _get(session: AsyncSession, program_id: int, key: str) -> Experiment:
    found = await _find(session, program_id, key)
    if found is None:
        raise NotFound(f"key: no experiment {key[:70]!r} in this program")
    return found


async def _check_references(session: AsyncSession, program_id: int, draft: ExperimentDraft) -> int:
    """The target segment's id; NOT_FOUND for an unknown segment or reward."""
    segment_id = await session.scalar(
        select(Segment.id).where(Segment.program_id == program_id, Segment.key == draft.segment_key)
    )
    if segment_id is None:
        raise NotFound(f"segmentKey: no segment {draft.segment_key!r} in this program")
    offered = {
        i: v.action.reward_key
        for i, v in enumerate(draft.variants)
        if v.action.type == ActionType.REWARD_OFFER and v.action.reward_key
    }
    if offered:
        active = set(
            await session.scalars(
                select(Reward.key).where(
                    Reward.program_id == program_id,
                    Reward.key.in_(set(offered.values())),
                    Reward.active.is_(True),
                )
            )
        )
        for i, reward_key in offered.items():
            if reward_key not in active:
                raise NotFound(
                    f"variants[{i}].action.rewardKey: no active reward {reward_key!r} in this program"
                )
    pooled = {
        i: v.action.coupon_pool_key
        for i, v in enumerate(draft.variants)
        if v.action.type == ActionType.ISSUE_COUPON and v.action.coupon_pool_key
    }
    if pooled:
        pools = set(
            await session.scalars(
                select(CouponPool.key).where(
                    CouponPool.program_id == program_id, CouponPool.key.in_(set(pooled.values()))
                )
            )
        )
        for i, pool_key in pooled.items():
            if pool_key not in pools:
                raise NotFound(
                    f"variants[{i}].action.couponPoolKey: no coupon pool {pool_key!r} in this program"
                )
    return int(segment_id)


def audited_experiment(row: Experiment) -> dict[str, Any]:
    """An experiment's definition as the API shows it: what the audit log keeps before and after."""
    return {
        "key": row.key,
        "name": row.name,
        "segmentKey": row.segment_key,
        "goalEventType": row.goal_event_type,
        "conversionDays": row.conversion_days,
        "holdoutPercent": row.holdout_percent,
        "control": row.control,
        "variants": list(row.variants),
    }


async def _record(
    uow: UnitOfWork, row: Experiment, actor: str, action: str, before: dict[str, Any] | None, now: datetime
) -> None:
    await record_change(
        uow,
        program_id=row.program_id,
        actor=actor,
        action=action,
        at=now,
        target=row.key,
        before=before,
        after=audited_experiment(row),
    )


def _apply(row: Experiment, draft: ExperimentDraft, segment_id: int, now: datetime) -> None:
    assert draft.control is not None  # chosen by validate_experiment
    row.name = draft.name
    row.segment_id = segment_id
    row.segment_key = draft.segment_key
    row.goal_event_type = draft.goal_event_type
    row.conversion_days = draft.conversion_days
    row.holdout_percent = draft.holdout_percent
    row.control = draft.control
    row.variants = [v.stored() for v in draft.variants]
    row.updated_at = now


async def _unexposed(session: AsyncSession, experiment: Experiment, after: int) -> list[Candidate]:
    """The next chunk of the segment's current members not yet exposed, by member id."""
    rows = await session.execute(
        select(Member.id, Member.external_id, Member.channels)
        .join(SegmentMembership, SegmentMembership.member_id == Member.id)
        .where(
            SegmentMembership.segment_id == experiment.segment_id,
            Member.id > after,
            ~exists().where(
                ExperimentExposure.experiment_id == experiment.id, ExperimentExposure.member_id == Member.id
            ),
        )
        .order_by(Member.id)
        .limit(EXPOSE_CHUNK)
    )
    return [
        Candidate(member_id, external_id, list(channels or [])) for member_id, external_id, channels in rows
    ]


def _exposure(experiment: Experiment, external_id: str, row: ExperimentExposure, *, new: bool) -> Exposure:
    return Exposure(experiment.key, external_id, row.variant, row.exposed_at, row.offered_reward_key, new)

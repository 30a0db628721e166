"""Programs and their earning rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import Clock
from domain.db.dialect import insert_for
from domain.db.engine import Database, UnitOfWork
from domain.enums import ProgramKind
from domain.errors import Conflict, InvalidInput, NotFound
from domain.events.validation import EVENT_TYPE, Rejection, parse_amount
from domain.governance.audit_log import record_change
from domain.ledger.earning import (
    DEFAULT_EARNING_RULES,
    MAX_FIXED_POINTS,
    MAX_POINTS_PER_UNIT,
    EarningRuleSpec,
)
from domain.models import EarningRule, Program

KEY = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
#: Events older than this are REJECTED unless the program sets its own limit (about 5 years).
DEFAULT_MAX_EVENT_AGE_DAYS = 1826
MAX_EVENT_AGE_DAYS = 36_500
#: An admin's adjustPoints above this many points (absolute) needs a TOTP step-up, unless the
#: program sets its own threshold (settings.adjustmentStepUpPoints).
DEFAULT_ADJUSTMENT_STEP_UP = 1000
MAX_ADJUSTMENT_STEP_UP = 10**12
#: setPointsExpiry accepts 1 to this many days (about 100 years).
MAX_EXPIRY_DAYS = 36_500


@dataclass(frozen=True)
class ProgramSettings:
    auto_create_members: bool = False
    #: The oldest occurredAt recordEvents accepts, in days before now.
    max_event_age_days: int = DEFAULT_MAX_EVENT_AGE_DAYS
    #: An admin adjustment of more points than this (absolute) needs a TOTP step-up.
    adjustment_step_up_points: int = DEFAULT_ADJUSTMENT_STEP_UP

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProgramSettings:
        return cls(
            auto_create_members=bool(data.get("autoCreateMembers", False)),
            max_event_age_days=int(data.get("maxEventAgeDays", DEFAULT_MAX_EVENT_AGE_DAYS)),
            adjustment_step_up_points=int(data.get("adjustmentStepUpPoints", DEFAULT_ADJUSTMENT_STEP_UP)),
        )

    def to_json(self) -> dict[str, Any]:
        """Stored settings; a default limit is left out, so programs follow the code's default."""
        data: dict[str, Any] = {"autoCreateMembers": self.auto_create_members}
        if self.max_event_age_days != DEFAULT_MAX_EVENT_AGE_DAYS:
            data["maxEventAgeDays"] = self.max_event_age_days
        if self.adjustment_step_up_points != DEFAULT_ADJUSTMENT_STEP_UP:
            data["adjustmentStepUpPoints"] = self.adjustment_step_up_points
        return data

    def apply_to(self, stored: dict[str, Any]) -> dict[str, Any]:
        """A program's stored settings with these in place; the keys other settings keep there stay."""
        kept = dict(stored)
        kept.pop("maxEventAgeDays", None)  # to_json leaves out a limit back at the default
        kept.pop("adjustmentStepUpPoints", None)
        return kept | self.to_json()

    @property
    def max_event_age(self) -> timedelta:
        return timedelta(days=self.max_event_age_days)


def validate_key(value: str, what: str) -> str:
    if not KEY.match(value):
        raise InvalidInput(f"{what}: {value[:70]!r} does not match [A-Za-z0-9_-]{{1,64}}")
    return value


class ProgramService:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create_program(
        self, key: str, name: str, kind: str, settings: ProgramSettings | None = None
    ) -> Program:
        validate_key(key, "key")
        if not name.strip():
            raise InvalidInput("name: must not be empty")
        try:
            program_kind = ProgramKind(kind)
        except ValueError:
            raise InvalidInput(f"kind: {kind!r} is not one of B2C, B2B, B2E") from None
        now = self.clock.now()
        try:
            async with self.db.unit_of_work() as uow:
                program = Program(
                    key=key,
                    name=name.strip(),
                    kind=program_kind.value,
                    settings=(settings or ProgramSettings()).to_json(),
                    created_at=now,
                )
                uow.session.add(program)
                await uow.session.flush()
                for rule in DEFAULT_EARNING_RULES:
                    uow.session.add(_rule_row(program.id, rule, now))
        except IntegrityError:
            raise Conflict(f"a program with key {key!r} already exists") from None
        return program

    async def set_max_event_age(self, program_id: int, days: int, *, actor: str) -> Program:
        """Events whose occurredAt is more than `days` before now are REJECTED from now on."""
        if not 1 <= days <= MAX_EVENT_AGE_DAYS:
            raise InvalidInput(f"days: must be between 1 and {MAX_EVENT_AGE_DAYS}, got {days}")
        async with self.db.unit_of_work() as uow:
            program = await _locked(uow.session, program_id)
            current = ProgramSettings.from_json(program.settings)
            program.settings = replace(current, max_event_age_days=days).apply_to(program.settings)
            await self._audit_setting(
                uow, program, actor, "setMaxEventAge", "maxEventAgeDays", current.max_event_age_days, days
            )
        return program

    async def set_points_expiry(self, program_id: int, after_days: int | None, *, actor: str) -> Program:
        """Points credited from now on expire `after_days` after they were earned (None: never).

        Lots already formed keep their expiry instants, also when expiry is turned off: only
        new credits stop forming lots."""
        if after_days is not None and not 1 <= after_days <= MAX_EXPIRY_DAYS:
            raise InvalidInput(
                f"afterDays: must be between 1 and {MAX_EXPIRY_DAYS} days (or null: never), got {after_days}"
            )
        async with self.db.unit_of_work() as uow:
            program = await _locked(uow.session, program_id)
            before, program.points_expiry_days = program.points_expiry_days, after_days
            await self._audit_setting(
                uow, program, actor, "setPointsExpiry", "pointsExpiryDays", before, after_days
            )
        return program

    async def set_adjustment_step_up(self, program_id: int, points: int, *, actor: str) -> Program:
        """An admin's adjustPoints of more than `points` (absolute) needs a TOTP step-up from now on."""
        if not 0 <= points <= MAX_ADJUSTMENT_STEP_UP:
            raise InvalidInput(f"points: must be between 0 and {MAX_ADJUSTMENT_STEP_UP}, got {points}")
        async with self.db.unit_of_work() as uow:
            program = await _locked(uow.session, program_id)
            current = ProgramSettings.from_json(program.settings)
            program.settings = replace(current, adjustment_step_up_points=points).apply_to(program.settings)
            await self._audit_setting(
                uow,
                program,
                actor,
                "setAdjustmentStepUp",
                "adjustmentStepUpPoints",
                current.adjustment_step_up_points,
                points,
            )
        return program

    async def _audit_setting(
        self, uow: UnitOfWork, program: Program, actor: str, action: str, name: str, before: Any, after: Any
    ) -> None:
        """The audit log's record of one program setting changed: target the program's key."""
        await record_program_setting(
            uow,
            program,
            actor=actor,
            action=action,
            at=self.clock.now(),
            before={name: before},
            after={name: after},
        )

    async def get(self, program_id: int) -> Program:
        async with self.db.read() as session:
            program = await session.get(Program, program_id)
        if program is None:
            raise NotFound(f"program {program_id} does not exist")
        return program

    async def get_by_key(self, key: str) -> Program:
        async with self.db.read() as session:
            program = await program_by_key(session, key)
        if program is None:
            raise NotFound(f"program {key!r} does not exist")
        return program

    async def earning_rules(self, program_id: int) -> list[EarningRuleSpec]:
        async with self.db.read() as session:
            rules = await load_earning_rules(session, program_id)
        return sorted(rules.values(), key=lambda r: r.event_type)

    async def set_earning_rule(
        self,
        program_id: int,
        event_type: str,
        points_per_unit: object,
        fixed_points: int | None,
        *,
        actor: str,
    ) -> EarningRuleSpec:
        rule = parse_earning_rule(event_type, points_per_unit, fixed_points)
        async with self.db.unit_of_work() as uow:
            before = (await load_earning_rules(uow.session, program_id)).get(event_type)
            row = _rule_row(program_id, rule, self.clock.now())
            stmt = insert_for(uow.session, EarningRule).values(
                program_id=row.program_id,
                event_type=row.event_type,
                points_per_unit=row.points_per_unit,
                fixed_points=row.fixed_points,
                updated_at=row.updated_at,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[EarningRule.program_id, EarningRule.event_type],
                set_={
                    "points_per_unit": stmt.excluded.points_per_unit,
                    "fixed_points": stmt.excluded.fixed_points,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            await uow.session.execute(stmt)
            await record_change(
                uow,
                program_id=program_id,
                actor=actor,
                action="setEarningRule",
                at=row.updated_at,
                target=event_type,
                before=None if before is None else audited_rule(before),
                after=audited_rule(rule),
            )
        return rule


def audited_rule(rule: EarningRuleSpec) -> dict[str, Any]:
    """An earning rule as the API shows it (pointsPerUnit a decimal string)."""
    return {
        "eventType": rule.event_type,
        "pointsPerUnit": None if rule.points_per_unit is None else str(rule.points_per_unit),
        "fixedPoints": rule.fixed_points,
    }


async def record_program_setting(
    uow: UnitOfWork, program: Program, *, actor: str, action: str, at: datetime, before: Any, after: Any
) -> None:
    """The audit log's record of a program setting changed (before/after: the setting's value by its
    API name); the target is the program's key."""
    await record_change(
        uow,
        program_id=program.id,
        actor=actor,
        action=action,
        at=at,
        target=program.key,
        before=before,
        after=after,
    )


def parse_earning_rule(event_type: str, points_per_unit: object, fixed_points: int | None) -> EarningRuleSpec:
    if not EVENT_TYPE.match(event_type):
        raise InvalidInput(f"eventType: {event_type[:70]!r} does not match [a-z][a-z0-9_]{{0,63}}")
    try:
        per_unit = parse_amount(points_per_unit, "pointsPerUnit")
    except Rejection as rejection:
        raise InvalidInput(str(rejection)) from None
    if per_unit is not None and per_unit > MAX_POINTS_PER_UNIT:
        raise InvalidInput(f"pointsPerUnit: at most {MAX_POINTS_PER_UNIT}, got {per_unit}")
    if fixed_points is not None and not 0 <= fixed_points <= MAX_FIXED_POINTS:
        raise InvalidInput(f"fixedPoints: must be between 0 and {MAX_FIXED_POINTS}, got {fixed_points}")
    return EarningRuleSpec(event_type, per_unit, fixed_points)


async def program_by_key(session: AsyncSession, key: str) -> Program | None:
    result = await session.execute(select(Program).where(Program.key == key))
    return result.scalar_one_or_none()


async def load_earning_rules(session: AsyncSession, program_id: int) -> dict[str, EarningRuleSpec]:
    rows = await session.execute(  # columns, not ORM rows: the accrual pipeline reads this per batch
        select(EarningRule.event_type, EarningRule.points_per_unit, EarningRule.fixed_points).where(
            EarningRule.program_id == program_id
        )
    )
    return {event_type: EarningRuleSpec(event_type, per_unit, fixed) for event_type, per_unit, fixed in rows}


def _rule_row(program_id: int, rule: EarningRuleSpec, now: Any) -> EarningRule:
    return EarningRule(
        program_id=program_id,
        event_type=rule.event_type,
        points_per_unit=rule.points_per_unit,
        fixed_points=rule.fixed_points,
        updated_at=now,
    )


async def _locked(session: AsyncSession, program_id: int) -> Program:
    """The program's row, locked until the unit of work ends (NOT_FOUND when there is none)."""
    program = await session.get(Program, program_id, with_for_update=True)
    if program is None:
        raise NotFound(f"program {program_id} does not exist")
    return program

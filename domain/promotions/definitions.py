"""Promotion definitions: the draft an admin gives, its checks, and the stored row.

Every fault is BAD_USER_INPUT naming the input field, raised before anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput, NotFound
from domain.events.refunds import REFUND_TYPE
from domain.models import Promotion, Segment
from domain.programs.service import validate_key
from domain.promotions.stacking import CapPeriod, Stacking, Terms
from domain.segments.conditions import EVENT_TYPE, InSegment, Node, condition_to_json, parse_condition, walk
from domain.segments.rules import parse_rule, render_rule

MAX_NAME = 200
MAX_MULTIPLIER = Decimal(100)
MAX_BONUS = 1_000_000
MAX_POINTS = 10**12
MAX_PRIORITY = 1_000_000
MAX_RULE = 10_000
LOCAL_FORMAT = "%Y-%m-%dT%H:%M:%S"
_RULE_PREFIX = re.compile(r"rule: ")


@dataclass(frozen=True)
class PromotionDraft:
    key: str
    name: str
    event_type: str
    #: The condition in the rule language (`event.` allowed); "true" for every event of the type.
    condition: str
    multiplier: Decimal | None = None
    bonus_points: int | None = None
    #: Local wall times in the program's timezone ("2026-12-12T00:00"); None: open-ended.
    starts_at: str | None = None
    ends_at: str | None = None
    cap_points: int | None = None
    cap_period: CapPeriod | None = None
    budget_points: int | None = None
    priority: int = 0
    stacking: Stacking = Stacking.STACK
    active: bool = True


@dataclass(frozen=True)
class CheckedDraft:
    draft: PromotionDraft
    tree: Node
    rule: str
    starts_local: str | None
    ends_local: str | None


def parse_promotion_condition(text: str) -> Node:
    """A promotion's condition; BAD_USER_INPUT "condition: column N: ..." when it does not parse."""
    if len(text) > MAX_RULE:
        raise InvalidInput(f"condition: longer than {MAX_RULE} characters")
    try:
        return parse_rule(text, events=True)
    except InvalidInput as error:
        raise InvalidInput(_RULE_PREFIX.sub("condition: ", str(error), count=1)) from None


def local_time(value: str | None, field: str) -> str | None:
    """A local date-time without offset ("2026-12-12T00:00"), normalised to seconds."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field}: {value[:40]!r} is not a local date-time such as 2026-12-12T00:00"
        ) from None
    if parsed.tzinfo is not None:
        raise InvalidInput(
            f"{field}: a local time in the program's timezone takes no offset, got {value[:40]!r}"
        )
    return parsed.replace(microsecond=0).strftime(LOCAL_FORMAT)


def check_draft(draft: PromotionDraft) -> CheckedDraft:
    """The draft checked field by field; BAD_USER_INPUT naming the first faulty one."""
    validate_key(draft.key, "key")
    name = draft.name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name: must be 1 to {MAX_NAME} characters")
    if not EVENT_TYPE.match(draft.event_type) or draft.event_type == REFUND_TYPE:
        raise InvalidInput(f"eventType: {draft.event_type[:70]!r} is not an event type that earns points")
    tree = parse_promotion_condition(draft.condition)
    multiplier = draft.multiplier
    if multiplier is not None and not (
        1 <= multiplier <= MAX_MULTIPLIER and multiplier == round(multiplier, 4)
    ):
        raise InvalidInput(
            f"multiplier: must be between 1 and {MAX_MULTIPLIER} (4 decimals), got {multiplier}"
        )
    bonus = draft.bonus_points
    if bonus is not None and not 0 <= bonus <= MAX_BONUS:
        raise InvalidInput(f"bonusPoints: must be between 0 and {MAX_BONUS}, got {bonus}")
    if (multiplier is None or multiplier == 1) and not bonus:
        raise InvalidInput("multiplier: a promotion needs a multiplier above 1 or bonusPoints above 0")
    starts = local_time(draft.starts_at, "startsAt")
    ends = local_time(draft.ends_at, "endsAt")
    if starts is not None and ends is not None and ends <= starts:
        raise InvalidInput(f"endsAt: {ends} is not after startsAt {starts}")
    if draft.cap_points is not None:
        if not 1 <= draft.cap_points <= MAX_POINTS:
            raise InvalidInput(f"capPoints: must be between 1 and {MAX_POINTS}, got {draft.cap_points}")
        if draft.cap_period is None:
            raise InvalidInput("capPeriod: required with capPoints (DAY, WEEK, MONTH, YEAR or TOTAL)")
    elif draft.cap_period is not None:
        raise InvalidInput("capPoints: required with capPeriod")
    if draft.budget_points is not None and not 1 <= draft.budget_points <= MAX_POINTS:
        raise InvalidInput(f"budgetPoints: must be between 1 and {MAX_POINTS}, got {draft.budget_points}")
    if not -MAX_PRIORITY <= draft.priority <= MAX_PRIORITY:
        raise InvalidInput(f"priority: must be between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    return CheckedDraft(draft, tree, render_rule(tree), starts, ends)


async def check_segments(session: AsyncSession, program_id: int, tree: Node) -> None:
    """Every in_segment(...) of the condition names a segment of the program."""
    keys = sorted({n.key for n in walk(tree) if isinstance(n, InSegment)})
    if not keys:
        return
    found = set(
        await session.scalars(
            select(Segment.key).where(Segment.program_id == program_id, Segment.key.in_(keys))
        )
    )
    missing = [k for k in keys if k not in found]
    if missing:
        raise InvalidInput(f"condition: no segment {missing[0]!r} in this program")


def write(row: Promotion, checked: CheckedDraft, now: datetime) -> None:
    """The checked definition onto the row (its spent points stay)."""
    draft = checked.draft
    if draft.budget_points is not None and (row.spent_points or 0) > draft.budget_points:
        raise InvalidInput(
            f"budgetPoints: {draft.budget_points} is below the {row.spent_points} points already paid"
        )
    row.name = draft.name.strip()
    row.event_type = draft.event_type
    row.rule = checked.rule
    row.condition = condition_to_json(checked.tree)
    row.multiplier = draft.multiplier
    row.bonus_points = draft.bonus_points or 0
    row.starts_local = checked.starts_local
    row.ends_local = checked.ends_local
    row.cap_points = draft.cap_points
    row.cap_period = None if draft.cap_period is None else draft.cap_period.value
    row.budget_points = draft.budget_points
    row.priority = draft.priority
    row.stacking = draft.stacking.value
    row.active = draft.active
    row.updated_at = now


async def promotion_by_key(
    session: AsyncSession, program_id: int, key: str, *, lock: bool = False
) -> Promotion:
    query = select(Promotion).where(Promotion.program_id == program_id, Promotion.key == key)
    found = await session.scalar(query.with_for_update() if lock else query)
    if found is None:
        raise NotFound(f"key: no promotion {key[:70]!r} in this program")
    return found


def terms_of(row: Promotion) -> Terms:
    return Terms(
        row.id,
        row.key,
        row.multiplier,
        row.bonus_points,
        row.priority,
        Stacking(row.stacking),
        row.cap_points,
        None if row.cap_period is None else CapPeriod(row.cap_period),
        row.budget_points,
    )


def tree_of(row: Promotion) -> Node:
    return parse_condition(row.condition, events=True)


def audited(row: Promotion) -> dict[str, Any]:
    """A promotion as the API shows it: what the audit log keeps."""
    return {
        "key": row.key,
        "name": row.name,
        "eventType": row.event_type,
        "condition": row.rule,
        "multiplier": None if row.multiplier is None else str(row.multiplier),
        "bonusPoints": row.bonus_points,
        "startsAt": row.starts_local,
        "endsAt": row.ends_local,
        "capPoints": row.cap_points,
        "capPeriod": row.cap_period,
        "budgetPoints": row.budget_points,
        "priority": row.priority,
        "stacking": row.stacking,
        "active": row.active,
    }

"""Challenge, ChallengeProgress and Badge: "do X N times within a period" and what completing it earned."""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.authorization import field_scope
from api.context import Info
from domain import models
from domain.auth.principal import PrincipalKind
from domain.auth.scopes import Scope
from domain.errors import Forbidden
from gamification.challenges.definitions import ChallengePeriod
from gamification.challenges.progress import BadgeView, ProgressView

strawberry.enum(
    ChallengePeriod,
    description="The calendar period a challenge's count restarts with, in the program's timezone "
    "(weeks start on Monday)",
)


@strawberry.type(
    description="Do `eventType` `target` times within a period; completing it pays `points` once"
)
class Challenge:
    key: str
    name: str
    event_type: str
    target: int
    period: ChallengePeriod
    points: int = strawberry.field(description="Posted once per member and period on completion")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: models.Challenge) -> Challenge:
        return cls(
            key=row.key,
            name=row.name,
            event_type=row.event_type,
            target=row.target,
            period=ChallengePeriod(row.period),
            points=row.points,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type(description="A member's progress on an active challenge in the current period")
class ChallengeProgress:
    challenge_key: str
    name: str
    event_type: str
    period: ChallengePeriod
    period_start: datetime | None = strawberry.field(description="Null for ALL_TIME")
    period_end: datetime | None = strawberry.field(description="Exclusive; null for ALL_TIME")
    count: int = strawberry.field(description="Accepted events of the type with occurredAt in the period")
    target: int
    points: int
    completed: bool = strawberry.field(description="Completed (and paid) in this period")
    completed_at: datetime | None

    @classmethod
    def of(cls, view: ProgressView) -> ChallengeProgress:
        row = view.challenge
        return cls(
            challenge_key=row.key,
            name=row.name,
            event_type=row.event_type,
            period=ChallengePeriod(row.period),
            period_start=view.window.start,
            period_end=view.window.end,
            count=view.count,
            target=row.target,
            points=row.points,
            completed=view.completed_at is not None,
            completed_at=view.completed_at,
        )


@strawberry.type(description="A challenge completed in one period")
class Badge:
    challenge_key: str
    name: str
    period: ChallengePeriod
    period_start: datetime | None = strawberry.field(description="Null for ALL_TIME")
    points: int = strawberry.field(description="Points paid for the completion")
    completed_at: datetime

    @classmethod
    def of(cls, view: BadgeView) -> Badge:
        return cls(
            challenge_key=view.challenge_key,
            name=view.name,
            period=view.period,
            period_start=view.period_start,
            points=view.points,
            completed_at=view.completed_at,
        )


def authorize_member_read(info: Info, member: models.Member) -> None:
    """A member token reads only its own member; others need members:read in the member's program."""
    principal = info.context.principal
    if principal.kind == PrincipalKind.MEMBER:
        if principal.subject_id != member.id:
            raise Forbidden("a member token reads only its own member")
    elif field_scope(info, Scope.MEMBERS_READ) != member.program_id:
        raise Forbidden("the member belongs to another program")

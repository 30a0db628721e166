"""Queries and mutations on leaderboards (docs/leaderboards.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from api.context import Info
from api.types.leaderboards import Leaderboard, LeaderboardDefinition, LeaderboardPeriod
from api.types.members import Program
from domain.auth.principal import PrincipalKind
from gamification.leaderboards.boards import (
    DEFAULT_KEEP_PERIODS,
    DEFAULT_SNAPSHOT_SIZE,
    BoardDefinition,
    BoardMetric,
    BoardScope,
)
from gamification.periods import PeriodKind


@strawberry.input(description="A board definition; replaces the board with the same key")
class LeaderboardInput:
    key: str
    name: str
    metric: BoardMetric = BoardMetric.POINTS
    event_type: str | None = strawberry.field(default=None, description="For EVENT_COUNT and EVENT_AMOUNT")
    scope: BoardScope = BoardScope.PROGRAM
    segment_key: str | None = strawberry.field(default=None, description="For scope SEGMENT")
    periods: list[LeaderboardPeriod] = strawberry.field(
        default_factory=lambda: list(LeaderboardPeriod), description="Default: all four"
    )
    keep_periods: int = strawberry.field(
        default=DEFAULT_KEEP_PERIODS, description="Closed periods kept, 1..120"
    )
    snapshot_size: int = strawberry.field(
        default=DEFAULT_SNAPSHOT_SIZE, description="Ranks frozen at each period's close, 1..10,000"
    )
    public: bool = strawberry.field(default=True, description="Members (member tokens) may read it")

    def definition(self) -> BoardDefinition:
        return BoardDefinition(
            key=self.key,
            name=self.name,
            metric=BoardMetric(self.metric),
            event_type=self.event_type,
            scope=BoardScope(self.scope),
            segment_key=self.segment_key,
            periods=tuple(PeriodKind(LeaderboardPeriod(p).value) for p in self.periods),
            keep_periods=self.keep_periods,
            snapshot_size=self.snapshot_size,
            public=self.public,
        )


def _reader(info: Info) -> tuple[int, int | None]:
    """The program read from and, for a member token, the member reading (the service decides what
    it may see)."""
    principal = info.context.principal
    return principal.program_id, principal.subject_id if principal.kind == PrincipalKind.MEMBER else None


@strawberry.type
class LeaderboardQueries:
    @strawberry.field(
        description="One board's ranking: the current period unless periodStart names a past one "
        "(periodStart, organizationExternalId and frozen are beyond the contract). A member token "
        "reads public boards, and its own organization's ranking on ORGANIZATION boards."
    )
    async def leaderboard(
        self,
        info: Info,
        key: str,
        period: LeaderboardPeriod | None = LeaderboardPeriod.ALL_TIME,
        period_start: datetime | None = None,
        organization_external_id: str | None = None,
        frozen: Annotated[
            bool | None,
            strawberry.argument(
                description="Read a closed period's snapshot taken at its close (what payouts use), "
                "even while the board still keeps the period live"
            ),
        ] = False,
    ) -> Leaderboard | None:
        program_id, member_id = _reader(info)
        view = await info.context.services.leaderboards.view(
            program_id,
            key,
            PeriodKind(LeaderboardPeriod(period or LeaderboardPeriod.ALL_TIME).value),
            period_start,
            organization_external_id,
            member_id,
            frozen=bool(frozen),
        )
        return Leaderboard(view=view)

    @strawberry.field(
        description="Every board of the program, ALL_TIME period (a board without it: its first period); "
        "a member token sees the public ones, ORGANIZATION boards at its own organization; admins read "
        "ORGANIZATION boards with leaderboard(key, organizationExternalId)"
    )
    async def leaderboards(self, info: Info) -> list[Leaderboard]:
        program_id, member_id = _reader(info)
        return [
            Leaderboard(view=v)
            for v in await info.context.services.leaderboards.listing(program_id, member_id)
        ]

    @strawberry.field(description="Beyond the contract: every board definition, ORGANIZATION boards included")
    async def leaderboard_definitions(self, info: Info) -> list[LeaderboardDefinition]:
        program_id = info.context.principal.program_id
        return [
            LeaderboardDefinition(board=b)
            for b in await info.context.services.leaderboards.boards(program_id)
        ]


@strawberry.type
class LeaderboardMutations:
    @strawberry.mutation(
        description="Create or replace a board; its rankings are built from the ledger at once"
    )
    async def set_leaderboard(self, info: Info, input: LeaderboardInput) -> LeaderboardDefinition:
        program_id = info.context.principal.program_id
        board = await info.context.services.leaderboards.set_board(
            program_id, input.definition(), actor=info.context.principal.operator
        )
        return LeaderboardDefinition(board=board)

    @strawberry.mutation(
        description="Beyond the contract: the IANA timezone whose midnights bound the program's board and "
        "challenge periods (default UTC); boards are rebuilt under the new boundaries"
    )
    async def set_program_timezone(self, info: Info, timezone: str) -> Program:
        program_id = info.context.principal.program_id
        return Program(
            row=await info.context.services.leaderboards.set_timezone(
                program_id, timezone, actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(description="Delete a defined board; deleting `points` restores the built-in one")
    async def delete_leaderboard(self, info: Info, key: str) -> bool:
        program_id = info.context.principal.program_id
        return await info.context.services.leaderboards.delete_board(
            program_id, key, actor=info.context.principal.operator
        )

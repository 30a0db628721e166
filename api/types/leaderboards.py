"""Leaderboard, LeaderboardEntry and the board definition types."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types.nodes import SelectedField, Selection

from api.context import Info
from domain import models
from domain.auth.principal import PrincipalKind
from domain.errors import NotFound
from gamification.leaderboards.boards import BoardDefinition, BoardMetric, BoardScope
from gamification.leaderboards.service import BoardView
from gamification.leaderboards.store import RankedMember
from gamification.periods import PeriodKind

if TYPE_CHECKING:
    from api.types.members import Member

strawberry.enum(BoardMetric, description="What a board ranks")
strawberry.enum(BoardScope, description="Over whom a board ranks")


@strawberry.enum
class LeaderboardPeriod(Enum):
    ALL_TIME = "ALL_TIME"
    MONTHLY = "MONTHLY"
    WEEKLY = "WEEKLY"
    DAILY = "DAILY"

    @property
    def kind(self) -> PeriodKind:
        return PeriodKind(self.value)


@strawberry.type
class LeaderboardEntry:
    rank: int = strawberry.field(
        description="1-based and consecutive; ties go to who reached the score first"
    )
    score: int
    member_id: strawberry.Private[int]
    #: The member's row, loaded for the whole list at once by `entries` when `member` is selected
    #: (a plain field then: no resolver coroutine and DataLoader round per entry).
    row: strawberry.Private[models.Member | None] = None
    #: Read by another member (a member token): only the public fields of the member.
    public_view: strawberry.Private[bool] = False

    @strawberry.field
    def member(self) -> Annotated[Member, strawberry.lazy("api.types.members")]:
        from api.types.members import Member

        if self.row is None:  # deleted since it was ranked
            raise NotFound(f"member {self.member_id} no longer exists")
        return Member(row=self.row, public_view=self.public_view)

    @classmethod
    def of(cls, ranked: RankedMember) -> LeaderboardEntry:
        return cls(rank=ranked.rank, score=ranked.points, member_id=ranked.member_id)


def _selects(selections: Sequence[Selection], name: str) -> bool:
    """Whether a field `name` is among the selections (through fragments)."""
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name == name:
                return True
        elif _selects(selection.selections, name):
            return True
    return False


async def entries(info: Info, ranked: Sequence[RankedMember]) -> list[LeaderboardEntry]:
    """The ranked members as entries; when the query selects `member`, their rows come in one
    DataLoader batch for the whole list."""
    if not ranked or not any(_selects(f.selections, "member") for f in info.selected_fields):
        return [LeaderboardEntry.of(r) for r in ranked]
    rows = await info.context.loaders.member_by_id.load_many([r.member_id for r in ranked])
    principal = info.context.principal
    reader = principal.subject_id if principal.kind == PrincipalKind.MEMBER else None
    return [
        LeaderboardEntry(
            rank=r.rank,
            score=r.points,
            member_id=r.member_id,
            row=row,
            public_view=reader is not None and reader != r.member_id,
        )
        for r, row in zip(ranked, rows, strict=True)
    ]


@strawberry.type(description="What a board ranks, over whom, and which periods it keeps")
class LeaderboardDefinition:
    board: strawberry.Private[BoardDefinition]

    @strawberry.field
    def key(self) -> str:
        return self.board.key

    @strawberry.field
    def name(self) -> str:
        return self.board.name

    @strawberry.field
    def metric(self) -> BoardMetric:
        return self.board.metric

    @strawberry.field(description="The event type an EVENT_COUNT or EVENT_AMOUNT board counts")
    def event_type(self) -> str | None:
        return self.board.event_type

    @strawberry.field
    def scope(self) -> BoardScope:
        return self.board.scope

    @strawberry.field
    def segment_key(self) -> str | None:
        return self.board.segment_key

    @strawberry.field
    def periods(self) -> list[LeaderboardPeriod]:
        return [LeaderboardPeriod(p.value) for p in self.board.periods]

    @strawberry.field(description="Closed periods kept readable from Redis")
    def keep_periods(self) -> int:
        return self.board.keep_periods

    @strawberry.field(description="Ranks frozen in the database at each period's close")
    def snapshot_size(self) -> int:
        return self.board.snapshot_size

    @strawberry.field(description="Members (member tokens) may read it")
    def public(self) -> bool:
        return self.board.public


@strawberry.type
class Leaderboard:
    view: strawberry.Private[BoardView]

    @strawberry.field
    def key(self) -> str:
        return self.view.board.key

    @strawberry.field
    def period(self) -> LeaderboardPeriod:
        return LeaderboardPeriod(self.view.period.value)

    @strawberry.field(
        description="Start of the period shown (UTC instant of local midnight); null for ALL_TIME"
    )
    def period_start(self) -> datetime | None:
        return self.view.start

    @strawberry.field(description="Beyond the contract")
    def definition(self) -> LeaderboardDefinition:
        return LeaderboardDefinition(board=self.view.board)

    @strawberry.field(
        description="Beyond the contract: true when served from the frozen close snapshot "
        "(a period older than the board keeps; only its first snapshotSize ranks)"
    )
    def frozen(self) -> bool:
        return self.view.snapshot_id is not None

    @strawberry.field(description="Members on the board")
    async def size(self, info: Info) -> int:
        return await info.context.services.leaderboards.size(self.view)

    @strawberry.field(description="first 0..500, offset 0..1,000,000")
    async def top(self, info: Info, first: int | None = 10, offset: int | None = 0) -> list[LeaderboardEntry]:
        ranked = await info.context.services.leaderboards.top(
            self.view, 10 if first is None else first, offset or 0
        )
        return await entries(info, ranked)

    @strawberry.field(
        description="The member and up to `radius` (0..50) ranks either side; empty if not on it"
    )
    async def around(
        self, info: Info, member_external_id: str, radius: int | None = 2
    ) -> list[LeaderboardEntry]:
        service = info.context.services.leaderboards
        ranked = await service.around(self.view, member_external_id, 2 if radius is None else radius)
        return await entries(info, ranked)

    @strawberry.field(description="Null when the member is not on the board")
    async def entry(self, info: Info, member_external_id: str) -> LeaderboardEntry | None:
        ranked = await info.context.services.leaderboards.entry(self.view, member_external_id)
        return None if ranked is None else (await entries(info, [ranked]))[0]

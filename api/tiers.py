"""Queries and mutations on the program's tier ladder."""

from __future__ import annotations

import strawberry

from api.context import Info
from api.types.tiers import TierLadder, TierLadderInput


@strawberry.type
class TierQueries:
    @strawberry.field(description="Null when the program has no tier ladder")
    async def tier_ladder(self, info: Info) -> TierLadder | None:
        program_id = info.context.principal.program_id
        ladder = await info.context.services.tiers.ladder(program_id)
        return None if ladder is None else TierLadder.of(ladder)


@strawberry.type
class TierMutations:
    @strawberry.mutation(description="Replaces the ladder and re-evaluates every member's tier at once")
    async def set_tier_ladder(self, info: Info, input: TierLadderInput) -> TierLadder:
        program_id = info.context.principal.program_id
        return TierLadder.of(
            await info.context.services.tiers.set_ladder(
                program_id, input.draft(), actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(description="Removes the ladder, its TIER segments and their history; false: none")
    async def delete_tier_ladder(self, info: Info) -> bool:
        program_id = info.context.principal.program_id
        return await info.context.services.tiers.delete_ladder(
            program_id, actor=info.context.principal.operator
        )

"""Queries and mutations on challenges; a member's progress and badges are fields of Member."""

from __future__ import annotations

import strawberry

from api.context import Info
from api.types.challenges import Challenge
from gamification.challenges.definitions import ChallengeDraft, ChallengePeriod


@strawberry.input(description="Created, or updated (and reactivated) when the key exists")
class ChallengeInput:
    key: str = strawberry.field(description="[A-Za-z0-9_-]{1,64}")
    name: str
    event_type: str = strawberry.field(description='The event type counted, e.g. "training_completed"')
    target: int = strawberry.field(description="Events to complete it: 1..10000")
    period: ChallengePeriod
    points: int = strawberry.field(description="Paid on completion: 0..1000000")

    def draft(self) -> ChallengeDraft:
        return ChallengeDraft(
            self.key, self.name, self.event_type, self.target, ChallengePeriod(self.period).value, self.points
        )


@strawberry.type
class ChallengeQueries:
    @strawberry.field(description="The program's active challenges by key; member tokens may read them")
    async def challenges(self, info: Info) -> list[Challenge]:
        program_id = info.context.principal.program_id
        return [Challenge.of(row) for row in await info.context.services.challenges.challenges(program_id)]


@strawberry.type
class ChallengeMutations:
    @strawberry.mutation(description="Create or update a challenge by key; applies from the next event on")
    async def set_challenge(self, info: Info, input: ChallengeInput) -> Challenge:
        program_id = info.context.principal.program_id
        return Challenge.of(
            await info.context.services.challenges.set_challenge(
                program_id, input.draft(), actor=info.context.principal.operator
            )
        )

    @strawberry.mutation(description="Stop a challenge: no more progress or completions; earned badges stay")
    async def delete_challenge(self, info: Info, key: str) -> bool:
        program_id = info.context.principal.program_id
        return await info.context.services.challenges.delete_challenge(
            program_id, key, actor=info.context.principal.operator
        )

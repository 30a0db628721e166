"""Spending and correcting points."""

from __future__ import annotations

import strawberry

from api.context import Info
from api.types.ledger import LedgerEntry, ledger_entry
from domain.auth.principal import PrincipalKind
from domain.auth.scopes import Scope
from domain.errors import Forbidden, InvalidInput


@strawberry.type
class PointsMutations:
    @strawberry.mutation(
        description="Beyond the balance: BAD_USER_INPUT. A member token may redeem its own points."
    )
    async def redeem_points(
        self, info: Info, member_external_id: str, points: int, reason: str, idempotency_key: str
    ) -> LedgerEntry:
        principal = info.context.principal
        services = info.context.services
        if principal.kind == PrincipalKind.MEMBER:
            member = await services.members.get(principal.program_id, member_external_id)
            if member is None or member.id != principal.subject_id:
                raise Forbidden("a member token redeems only its own points")
            program_id = principal.program_id
        else:
            program_id = principal.require(Scope.POINTS_REDEEM)
        entry = await services.ledger.redeem(program_id, member_external_id, points, reason, idempotency_key)
        return ledger_entry(entry)

    @strawberry.mutation(description="Correct a posted entry with a reversal entry of the opposite points")
    async def reverse_ledger_entry(
        self, info: Info, id: strawberry.ID, reason: str, idempotency_key: str
    ) -> LedgerEntry:
        program_id = info.context.principal.require(Scope.POINTS_ADJUST)
        if not str(id).isdigit():
            raise InvalidInput(f"id: {str(id)[:40]!r} is not a ledger entry id")
        entry = await info.context.services.ledger.reverse(program_id, int(id), reason, idempotency_key)
        return ledger_entry(entry)

"""Spending, adjusting and correcting points."""

from __future__ import annotations

import strawberry

from api.context import Info
from api.types.ledger import LedgerEntry, ledger_entry
from domain.auth.principal import PrincipalKind
from domain.errors import Forbidden, InvalidInput


async def redeeming_program(info: Info, member_external_id: str, what: str) -> int:
    """The program a redemption acts in: a member token spends only `what` (others: domain/auth/policy.py)."""
    principal = info.context.principal
    if principal.kind != PrincipalKind.MEMBER:
        return principal.program_id
    member = await info.context.services.members.get(principal.program_id, member_external_id)
    if member is None or member.id != principal.subject_id:
        raise Forbidden(f"a member token redeems only {what}")
    return principal.program_id


@strawberry.type
class PointsMutations:
    @strawberry.mutation(
        description="Beyond the balance: BAD_USER_INPUT. A member token may redeem its own points."
    )
    async def redeem_points(
        self, info: Info, member_external_id: str, points: int, reason: str, idempotency_key: str
    ) -> LedgerEntry:
        program_id = await redeeming_program(info, member_external_id, "its own points")
        entry = await info.context.services.ledger.redeem(
            program_id, member_external_id, points, reason, idempotency_key, info.context.principal.actor
        )
        return ledger_entry(entry)

    @strawberry.mutation(
        description="Goodwill credit (+, forms an expiry lot) or correction (-); scope points:adjust; "
        "below zero balance: BAD_USER_INPUT. An admin adjusting more than the program's threshold "
        "(adjustmentStepUpPoints, default 1000) needs a TOTP check within 10 minutes (STEP_UP_REQUIRED)"
    )
    async def adjust_points(
        self, info: Info, member_external_id: str, points: int, reason: str, idempotency_key: str
    ) -> LedgerEntry:
        principal = info.context.principal
        program_id = principal.program_id
        entry = await info.context.services.ledger.adjust(
            program_id, member_external_id, points, reason, idempotency_key, principal
        )
        return ledger_entry(entry)

    @strawberry.mutation(description="Correct a posted entry with a reversal entry of the opposite points")
    async def reverse_ledger_entry(
        self, info: Info, id: strawberry.ID, reason: str, idempotency_key: str
    ) -> LedgerEntry:
        program_id = info.context.principal.program_id
        if not str(id).isdigit():
            raise InvalidInput(f"id: {str(id)[:40]!r} is not a ledger entry id")
        entry = await info.context.services.ledger.reverse(
            program_id, int(id), reason, idempotency_key, actor=info.context.principal.operator
        )
        return ledger_entry(entry)

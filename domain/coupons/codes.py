"""Adding codes to a pool, generated or imported, inside the caller's transaction.

Inserts are `ON CONFLICT DO NOTHING` on (program, code): a code that exists already (in
any pool of the program, or inserted meanwhile by a concurrent request) is never taken
twice. Generation draws again for the codes it lost, a few rounds at most.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.coupons.imports import ImportedCode, RejectedLine
from domain.coupons.patterns import draw_distinct
from domain.coupons.status import CouponStatus
from domain.db.dialect import insert_for
from domain.errors import InvalidInput
from domain.models import CouponCode, CouponPool

CHUNK = 1000
ROUNDS = 20


async def _insert(
    session: AsyncSession, pool: CouponPool, codes: Sequence[tuple[str, datetime | None]], now: datetime
) -> set[str]:
    """Insert the codes not taken yet; the codes inserted."""
    table = CouponCode.__table__
    inserted: set[str] = set()
    for start in range(0, len(codes), CHUNK):
        rows = [
            {
                "program_id": pool.program_id,
                "pool_id": pool.id,
                "code": code,
                "status": CouponStatus.AVAILABLE.value,
                "expires_at": expires_at,
                "created_at": now,
            }
            for code, expires_at in codes[start : start + CHUNK]
        ]
        statement = insert_for(session, table).on_conflict_do_nothing().returning(table.c.code)
        inserted.update((await session.scalars(statement, rows)).all())
    return inserted


async def generate_codes(
    session: AsyncSession, pool: CouponPool, pattern: str, count: int, now: datetime
) -> int:
    """`count` new codes of the (checked) pattern; BAD_USER_INPUT when the program's codes crowd it."""
    drawn: set[str] = set()
    missing = count
    for _ in range(ROUNDS):
        fresh = draw_distinct(pattern, missing, drawn)
        missing -= len(await _insert(session, pool, [(code, None) for code in fresh], now))
        if missing == 0:
            return count
    raise InvalidInput(f"pattern: {pattern!r} collides with the program's codes too often; widen it")


async def import_codes(
    session: AsyncSession, pool: CouponPool, codes: Sequence[ImportedCode], now: datetime
) -> tuple[int, list[RejectedLine]]:
    """Store the parsed codes; those the program holds already are rejected lines."""
    taken: set[str] = set()
    for start in range(0, len(codes), CHUNK):
        chunk = [c.code for c in codes[start : start + CHUNK]]
        taken.update(
            await session.scalars(
                select(CouponCode.code).where(
                    CouponCode.program_id == pool.program_id, CouponCode.code.in_(chunk)
                )
            )
        )
    fresh = [c for c in codes if c.code not in taken]
    inserted = await _insert(session, pool, [(c.code, c.expires_at) for c in fresh], now)
    rejected = [
        RejectedLine(c.line, f"code: {c.code} already exists in this program")
        for c in codes
        if c.code not in inserted
    ]
    return len(inserted), rejected

"""The built-in population scores of DESIGN.md (Segments → Built-in definitions): RFM, ABC, lifecycle.

`refresh_scores` recomputes RFM and ABC for a whole program in one set-based
UPDATE and stores them on `members`; `recomputeSegments` runs it first.
Lifecycle is not stored, since time alone moves it: see `domain.segments.lifecycle`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Subquery,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import EventAggregate, Member

PURCHASE = "purchase"
DAY_US = 86_400 * 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The RFM label of every (R, F) pair, as DESIGN.md lists them; all 25 pairs are covered.
RFM_LABELS: dict[tuple[int, int], str] = {
    **{(5, f): "Champions" for f in (4, 5)},
    **{(r, f): "Loyal Customers" for r in (3, 4) for f in (4, 5)},
    **{(r, f): "Potential Loyalists" for r in (4, 5) for f in (2, 3)},
    (5, 1): "New Customers",
    (4, 1): "Promising",
    (3, 3): "Need Attention",
    **{(3, f): "About To Sleep" for f in (1, 2)},
    **{(r, f): "At Risk" for r in (1, 2) for f in (3, 4)},
    **{(r, 5): "Can't Lose Them" for r in (1, 2)},
    **{(r, f): "Hibernating" for r in (1, 2) for f in (1, 2)},
}
if set(RFM_LABELS) != {(r, f) for r in range(1, 6) for f in range(1, 6)}:  # pragma: no cover
    raise RuntimeError("RFM_LABELS must label every (R, F) pair")


def abc_class(before: int, total: int) -> str:
    """The ABC class of a member whose predecessors (monetary descending) spent `before` of `total`."""
    if 100 * before < 80 * total:
        return "A"
    return "B" if 100 * before < 95 * total else "C"


async def refresh_scores(session: AsyncSession, program_id: int, now: datetime) -> int:
    """Recompute and store RFM and ABC for every member of a program; returns how many were scored.

    Members without an accepted purchase get NULLs, so stale scores are cleared.
    Rows whose scores are unchanged are not rewritten. Runs in the caller's transaction.
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    scored = _scored(program_id, now, postgres=postgres)
    target = (
        select(Member.id, scored.c.r, scored.c.f, scored.c.m, scored.c.label, scored.c.abc)
        .select_from(Member.__table__.outerjoin(scored, scored.c.member_id == Member.id))
        .where(Member.program_id == program_id)
        .subquery("target")
    )
    columns: dict[str, Any] = {
        "r": Member.rfm_r,
        "f": Member.rfm_f,
        "m": Member.rfm_m,
        "label": Member.rfm_label,
        "abc": Member.abc_class,
    }
    await session.execute(
        update(Member)
        .where(Member.id == target.c.id)
        .where(or_(*[column.is_distinct_from(target.c[key]) for key, column in columns.items()]))
        .values({column: target.c[key] for key, column in columns.items()})
        .execution_options(synchronize_session=False)
    )
    count = await session.execute(select(func.count()).select_from(_purchasers(program_id)))
    return int(count.scalar_one())


def _purchasers(program_id: int) -> Subquery:
    """The program's members with at least one accepted purchase, with their R, F and M inputs."""
    buckets = EventAggregate.__table__.c
    return (
        select(
            buckets.member_id,
            func.max(buckets.last_at).label("last_at"),
            func.sum(buckets.count).label("frequency"),
            func.sum(buckets.amount_sum).label("monetary"),
        )
        .where(buckets.program_id == program_id, buckets.event_type == PURCHASE)
        .group_by(buckets.member_id)
        .subquery("purchasers")
    )


def _scored(program_id: int, now: datetime, *, postgres: bool) -> Subquery:
    """member_id, r, f, m, label and abc of every purchaser."""
    ranked = _ranked(program_id, now, postgres=postgres)
    label = case(
        {10 * r + f: text for (r, f), text in RFM_LABELS.items()}, value=10 * ranked.c.r + ranked.c.f
    )
    abc = case(
        (100 * ranked.c.before < 80 * ranked.c.total, "A"),
        (100 * ranked.c.before < 95 * ranked.c.total, "B"),
        else_="C",
    )
    return select(
        ranked.c.member_id,
        ranked.c.r,
        ranked.c.f,
        ranked.c.m,
        label.label("label"),
        abc.label("abc"),
    ).subquery("scored")


def _ranked(program_id: int, now: datetime, *, postgres: bool) -> Subquery:
    """The window functions: the three scores, and the monetary sum ahead of each member."""
    purchasers = _purchasers(program_id)
    external_id = Member.external_id.collate("C") if postgres else Member.external_id.expression
    elapsed_us = literal(_epoch_us(now), BigInteger) - _sql_epoch_us(purchasers.c.last_at, postgres=postgres)
    days = _floor_div(elapsed_us, DAY_US)
    monetary = purchasers.c.monetary
    by_monetary = (monetary.desc(), external_id.asc())

    def score(*order_by: ColumnElement[Any]) -> ColumnElement[int]:
        return 6 - func.ntile(5).over(order_by=order_by)

    return (
        select(
            purchasers.c.member_id,
            score(days.asc(), external_id.asc()).label("r"),
            score(purchasers.c.frequency.desc(), external_id.asc()).label("f"),
            score(*by_monetary).label("m"),
            func.coalesce(func.sum(monetary).over(order_by=by_monetary, rows=(None, -1)), 0).label("before"),
            func.sum(monetary).over().label("total"),
        )
        .join_from(purchasers, Member.__table__, Member.id == purchasers.c.member_id)
        .where(Member.program_id == program_id)
        .subquery("ranked")
    )


def _epoch_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch, exactly."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _sql_epoch_us(column: ColumnElement[Any], *, postgres: bool) -> ColumnElement[int]:
    """Microseconds since the Unix epoch of a UtcDateTime column, in exact integer arithmetic.

    SQLite stores these columns as text 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC).
    """
    if postgres:
        return cast(func.extract("epoch", column) * 1_000_000, BigInteger)
    seconds = cast(func.strftime("%s", func.substr(column, 1, 19)), BigInteger)
    return seconds * 1_000_000 + cast(func.substr(column, 21, 6), Integer)


def _floor_div(dividend: ColumnElement[int], divisor: int) -> ColumnElement[int]:
    """Integer division rounding down, also for a negative dividend (SQL's `/` truncates)."""
    return case(
        (dividend >= 0, dividend // divisor),
        else_=-((divisor - 1 - dividend) // divisor),
    )

"""Writes of segment membership: the current table, the append-only change log, applied tags.

Two shapes: a whole segment replaced by a compiled SELECT (set-based, in the
database), and a list of per-member flips from the incremental engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    CursorResult,
    Select,
    Table,
    column,
    delete,
    exists,
    insert,
    literal,
    select,
    table,
    text,
    true,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from domain.changes import LoggedChange
from domain.db.dialect import insert_for
from domain.db.types import UtcDateTime
from domain.models import MemberTag, SegmentChange, SegmentMembership

memberships = cast(Table, SegmentMembership.__table__)
changes = cast(Table, SegmentChange.__table__)
member_tags = cast(Table, MemberTag.__table__)


@dataclass(frozen=True)
class Flip:
    """One member entering (or leaving) one segment."""

    segment_id: int
    segment_key: str
    member_id: int
    entered: bool
    applies_tag: str | None


@dataclass(frozen=True)
class Recomputed:
    entered: int
    left: int
    #: The logged changes, when the caller asked for them (`log_rows=True`).
    changes: tuple[LoggedChange, ...] = ()


async def replace_members(
    session: AsyncSession,
    program_id: int,
    segment_id: int,
    segment_key: str,
    applies_tag: str | None,
    chosen: Select[tuple[int]],
    now: datetime,
    *,
    log_rows: bool = False,
) -> Recomputed:
    """Make the segment's members exactly those `chosen` selects, logging every change.

    With `log_rows` the logged changes come back too (for the handlers of `SegmentsChanged`).
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    await session.execute(text("DROP TABLE IF EXISTS segment_eval"))
    await session.execute(
        text(
            "CREATE TEMPORARY TABLE segment_eval (member_id BIGINT PRIMARY KEY)"
            + (" ON COMMIT DROP" if postgres else "")
        )
    )
    new = table("segment_eval", column("member_id"))
    await session.execute(insert(new).from_select(["member_id"], chosen))
    if postgres:  # without statistics the planner guesses a tiny table and loops over it
        await session.execute(text("ANALYZE segment_eval"))
    is_member = exists().where(
        memberships.c.segment_id == segment_id, memberships.c.member_id == new.c.member_id
    )
    is_chosen = exists().where(new.c.member_id == memberships.c.member_id)
    at = literal(now, UtcDateTime())
    log_columns = ["program_id", "segment_id", "member_id", "change", "at"]
    entering = select(
        literal(program_id), literal(segment_id), new.c.member_id, literal("ENTERED"), at
    ).where(~is_member)
    leaving = select(
        literal(program_id), literal(segment_id), memberships.c.member_id, literal("LEFT"), at
    ).where(memberships.c.segment_id == segment_id, ~is_chosen)
    logged: list[LoggedChange] = []
    counts = []
    for rows, entered in ((entering, True), (leaving, False)):
        statement = insert(changes).from_select(log_columns, rows)
        if log_rows:
            result = await session.execute(statement.returning(changes.c.id, changes.c.member_id))
            found = [LoggedChange(i, segment_id, segment_key, m, entered) for i, m in result]
            logged.extend(found)
            counts.append(len(found))
        else:
            counts.append(cast(CursorResult[Any], await session.execute(statement)).rowcount)
    # anti-joins throughout: NOT IN (subquery) is quadratic once the subquery outgrows work_mem
    await session.execute(delete(memberships).where(memberships.c.segment_id == segment_id, ~is_chosen))
    await session.execute(
        insert_for(session, memberships)
        .from_select(
            ["program_id", "segment_id", "member_id", "since"],
            select(literal(program_id), literal(segment_id), new.c.member_id, at).where(~is_member),
        )
        .on_conflict_do_nothing()
    )
    if applies_tag:
        await _replace_tag(session, program_id, segment_key, applies_tag, new, now)
    await session.execute(text("DROP TABLE segment_eval"))
    return Recomputed(counts[0], counts[1], tuple(logged))


async def _replace_tag(
    session: AsyncSession, program_id: int, source: str, tag: str, new: Any, now: datetime
) -> None:
    await session.execute(
        delete(member_tags).where(
            member_tags.c.program_id == program_id,
            member_tags.c.key == tag,
            member_tags.c.source == source,
            ~exists().where(new.c.member_id == member_tags.c.member_id),
        )
    )
    await session.execute(
        insert_for(session, member_tags)
        .from_select(
            ["member_id", "key", "source", "program_id", "since"],
            select(
                new.c.member_id,
                literal(tag),
                literal(source),
                literal(program_id),
                literal(now, UtcDateTime()),
            ).where(true()),  # SQLite parses ON CONFLICT after INSERT ... SELECT only behind a WHERE
        )
        .on_conflict_do_nothing()
    )


async def apply_flips(
    session: AsyncSession, program_id: int, flips: Sequence[Flip], now: datetime
) -> list[LoggedChange]:
    """Write the incremental engine's flips: membership rows, the change log, applied tags."""
    if not flips:
        return []
    entering = [f for f in flips if f.entered]
    leaving = [f for f in flips if not f.entered]
    if leaving:
        await session.execute(
            delete(memberships).where(
                tuple_(memberships.c.segment_id, memberships.c.member_id).in_(
                    [(f.segment_id, f.member_id) for f in leaving]
                )
            )
        )
        tagged = [f for f in leaving if f.applies_tag]
        if tagged:
            await session.execute(
                delete(member_tags).where(
                    tuple_(member_tags.c.member_id, member_tags.c.key, member_tags.c.source).in_(
                        [(f.member_id, f.applies_tag, f.segment_key) for f in tagged]
                    )
                )
            )
    if entering:
        await session.execute(
            insert_for(session, memberships).on_conflict_do_nothing(),
            [
                {"program_id": program_id, "segment_id": f.segment_id, "member_id": f.member_id, "since": now}
                for f in entering
            ],
        )
        tagged = [f for f in entering if f.applies_tag]
        if tagged:
            await session.execute(
                insert_for(session, member_tags).on_conflict_do_nothing(),
                [
                    {
                        "member_id": f.member_id,
                        "key": f.applies_tag,
                        "source": f.segment_key,
                        "program_id": program_id,
                        "since": now,
                    }
                    for f in tagged
                ],
            )
    ids = await session.scalars(
        insert(changes).returning(changes.c.id, sort_by_parameter_order=True),
        [
            {
                "program_id": program_id,
                "segment_id": f.segment_id,
                "member_id": f.member_id,
                "change": "ENTERED" if f.entered else "LEFT",
                "at": now,
            }
            for f in flips
        ],
    )
    return [
        LoggedChange(i, f.segment_id, f.segment_key, f.member_id, f.entered)
        for i, f in zip(ids, flips, strict=True)
    ]

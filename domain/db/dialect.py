"""The few statements whose spelling differs between PostgreSQL and SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_for(session: AsyncSession, table: Any) -> Any:
    """An INSERT that knows ON CONFLICT for the session's dialect."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def least(current: ColumnElement[Any], incoming: ColumnElement[Any]) -> ColumnElement[Any]:
    """The smaller of two nullable values, ignoring NULLs (SQLite's min() does not)."""
    return case(
        (current.is_(None), incoming),
        (incoming.is_(None), current),
        (incoming < current, incoming),
        else_=current,
    )


def greatest(current: ColumnElement[Any], incoming: ColumnElement[Any]) -> ColumnElement[Any]:
    return case(
        (current.is_(None), incoming),
        (incoming.is_(None), current),
        (incoming > current, incoming),
        else_=current,
    )

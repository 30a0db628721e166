"""The few statements whose spelling differs between PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, case, func, literal
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


def plus_days(session: AsyncSession, moment: Any, days: int) -> ColumnElement[Any]:
    """`moment` + `days` in SQL, exact to the microsecond (SQLite keeps datetimes as text)."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(ColumnElement[Any], moment + literal(timedelta(days=days)))
    return func.datetime(moment, f"+{int(days)} days").concat(func.substr(moment, 20))


def utc_date(session: AsyncSession, moment: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", moment))
    return func.date(moment)

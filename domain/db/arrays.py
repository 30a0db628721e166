"""`column = ANY(:array)` on PostgreSQL, `IN (...)` on SQLite: lists of keys as one bound value.

An expanded `IN (:p1, ..., :pN)` is a new statement text for every list length: SQLAlchemy renders
it on each call, asyncpg prepares it anew, and PostgreSQL plans it from its row estimates, which
go stale when autovacuum lags. `= ANY(:array)` is one statement whatever the length, cached once
and planned as an index probe per element. SQLite has no arrays, so it keeps `IN`.

Limits: integer or string columns only; an empty list matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

_INTEGERS = ARRAY(BigInteger())
_STRINGS = ARRAY(String())


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def in_values(
    column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any], dialect: str
) -> ColumnElement[bool]:
    """`column` is one of `values` (integers or strings), as an array parameter on PostgreSQL."""
    chosen = list(values)
    if dialect != "postgresql":
        return column.in_(chosen)
    kind = _STRINGS if isinstance(column.type, String) else _INTEGERS
    return column == any_(bindparam(None, chosen, type_=kind))


def in_parameter(
    column: ColumnElement[Any] | QueryableAttribute[Any], name: str, dialect: str
) -> ColumnElement[bool]:
    """`column` is one of the list bound later as `name`: for statements built once and reused."""
    if dialect != "postgresql":
        return column.in_(bindparam(name, expanding=True))
    kind = _STRINGS if isinstance(column.type, String) else _INTEGERS
    return column == any_(bindparam(name, type_=kind))

"""Array-bound statements for PostgreSQL's hot path: one bind per list or column, whatever the batch size.

`column = ANY(:array)` on PostgreSQL, `IN (...)` on SQLite: lists of keys as one bound value.

An expanded `IN (:p1, ..., :pN)` is a new statement text for every list length: SQLAlchemy renders
it on each call, asyncpg prepares it anew, and PostgreSQL plans it from its row estimates, which
go stale when autovacuum lags. `= ANY(:array)` is one statement whatever the length, cached once
and planned as an index probe per element. SQLite has no arrays, so it keeps `IN`.

`unnest` turns column arrays into rows, so a batch is one INSERT or UPDATE with a fixed number
of binds (PostgreSQL; callers keep executemany on SQLite).

Limits: `in_values` takes integer or string columns only; an empty list matches nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, any_, bindparam, column, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine

_INTEGERS = ARRAY(BigInteger())
_STRINGS = ARRAY(String())


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def on_postgres(session: AsyncSession) -> bool:
    return dialect_of(session) == "postgresql"


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


def unnest(columns: Sequence[tuple[str, TypeEngine[Any], Sequence[Any]]]) -> TableValuedAlias:
    """Rows from equally long column arrays (PostgreSQL): `unnest(:a, :b, ...) AS u(a, b, ...)`."""
    arrays = [bindparam(None, list(values), type_=ARRAY(kind)) for _, kind, values in columns]
    return (
        func.unnest(*arrays)
        .table_valued(*(column(name, kind) for name, kind, _ in columns))
        .render_derived(with_types=False)
    )

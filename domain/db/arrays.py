"""Array-bound statements for PostgreSQL's hot path: one bind per column, whatever the batch size.

`= ANY(:array)` keeps one statement text (and one plan) for any number of keys, so
plans do not depend on how many keys a batch has or on fresh statistics; `unnest`
turns column arrays into rows, so a batch is one INSERT or UPDATE with a fixed
number of binds. SQLite has no arrays: callers keep `IN` and executemany there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam, column, func
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.types import TypeEngine


def on_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def any_of(
    session: AsyncSession,
    target: ColumnElement[Any] | InstrumentedAttribute[Any],
    values: Iterable[Any],
    element: TypeEngine[Any],
) -> ColumnElement[bool]:
    """`target = ANY(:values)` on PostgreSQL, `target IN (...)` on SQLite."""
    listed = list(values)
    if on_postgres(session):
        return target == any_(bindparam(None, listed, type_=postgresql.ARRAY(element)))
    return target.in_(listed)


def unnest(columns: Sequence[tuple[str, TypeEngine[Any], Sequence[Any]]]) -> TableValuedAlias:
    """Rows from equally long column arrays (PostgreSQL): `unnest(:a, :b, ...) AS u(a, b, ...)`."""
    arrays = [bindparam(None, list(values), type_=postgresql.ARRAY(kind)) for _, kind, values in columns]
    return (
        func.unnest(*arrays)
        .table_valued(*(column(name, kind) for name, kind, _ in columns))
        .render_derived(with_types=False)
    )

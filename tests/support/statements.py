"""Counting the SQL statements a block runs, to pin N+1 behaviour down to an exact number."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import event

if TYPE_CHECKING:
    from api.runtime import Services


@contextmanager
def counting_statements(services: Services) -> Iterator[list[str]]:
    """The statements the services' engines (the primary's and the read replica's, when there is
    one) run inside the block, in order."""
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("BEGIN"):  # SQLite's explicit transaction starts are not queries
            statements.append(statement)

    replica = services.db.replica
    engines = [services.db.engine.sync_engine] + ([replica.engine.sync_engine] if replica else [])
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)

"""Version 2 on SQLite: the Python functions the compiled SQL calls, registered on every connection.

SQLite has no timezone database and no regular expressions, so the compiled SQL
(compile.py) calls back into the very code the in-memory evaluator runs
(evaluate.py): the local date of a stored UTC timestamp, the local date held by
an attribute (`days_since`, `days_to_anniversary`), and the order of two
versions (`version(PATH)`). Exact by construction; PostgreSQL computes the same
in SQL (`timezone(zone, at)`, regular expressions, numeric arrays).
Registered by domain/db/engine.py (`register`) on each new SQLite connection.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from domain.segments.evaluate import date_of, local_date, version_key

LOCAL_DATE = "loyalty_local_date"
VALUE_DATE = "loyalty_value_date"
VERSION_CMP = "loyalty_version_cmp"


@lru_cache(maxsize=64)
def _zone(name: str) -> Any:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _local_date(stored: Any, zone: Any) -> str | None:
    """'YYYY-MM-DD': the local date in `zone` of a stored UTC timestamp ('2026-03-01 10:00:00.000000')."""
    if not isinstance(stored, str) or not isinstance(zone, str):
        return None
    try:
        at = datetime.fromisoformat(stored)
    except ValueError:
        return None
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return local_date(at, _zone(zone)).isoformat()


def _value_date(value: Any, zone: Any) -> str | None:
    """'YYYY-MM-DD': the local date an attribute holds (evaluate.date_of), NULL when it holds none."""
    if not isinstance(zone, str):
        return None
    found = date_of(value, _zone(zone))
    return None if found is None else found.isoformat()


def _version_cmp(value: Any, other: Any) -> int | None:
    """-1, 0 or 1 as version(value) is below, equal to or above version(other); NULL when either is none."""
    left, right = version_key(value), version_key(other)
    if left is None or right is None:
        return None
    return (left > right) - (left < right)


def register(dbapi_connection: Any) -> None:
    """Add the functions to a new SQLite (aiosqlite) connection."""
    dbapi_connection.create_function(LOCAL_DATE, 2, _local_date, deterministic=True)
    dbapi_connection.create_function(VALUE_DATE, 2, _value_date, deterministic=True)
    dbapi_connection.create_function(VERSION_CMP, 2, _version_cmp, deterministic=True)
